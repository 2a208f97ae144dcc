//! The group coordinator's static membership (KIP-345) and initial
//! rebalance delay, driven without a network.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::group::{GroupCoordinator, JoinOutcome, JoinRequest, MemberRef, Pending};
use crate::errors::code;
use ottla_storage::store::Store;

fn coordinator(delay_ms: u64) -> (tempfile::TempDir, GroupCoordinator) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let c = GroupCoordinator::with_initial_delay(store, Duration::from_millis(delay_ms));
    (dir, c)
}

fn join(c: &GroupCoordinator, member: &str, instance: Option<&str>) -> Pending<JoinOutcome> {
    join_with(c, member, instance, b"meta")
}

fn join_with(
    c: &GroupCoordinator,
    member: &str,
    instance: Option<&str>,
    metadata: &'static [u8],
) -> Pending<JoinOutcome> {
    c.join(JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        client_id: "test".into(),
        host: "/127.0.0.1".into(),
        session_timeout_ms: 300,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(metadata))],
        require_known_member_id: false,
    })
}

/// The outcome, ticking the coordinator (timers) while waiting.
fn outcome(c: &GroupCoordinator, p: Pending<JoinOutcome>) -> JoinOutcome {
    match p {
        Pending::Ready(o) => o,
        Pending::Wait(mut rx) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match rx.try_recv() {
                    Ok(o) => return o,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                        if Instant::now() < deadline =>
                    {
                        c.tick();
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("join never completed: {e:?}"),
                }
            }
        }
    }
}

fn who<'a>(o: &'a JoinOutcome, instance: Option<&'a str>) -> MemberRef<'a> {
    MemberRef {
        member_id: &o.member_id,
        instance_id: instance,
    }
}

/// Two members, `a` dynamic and `s` static ("s-1"), Stable with assignments A and S.
fn stable_pair(c: &GroupCoordinator) -> (JoinOutcome, JoinOutcome) {
    let a = outcome(c, join(c, "", None));
    let pending_s = join(c, "", Some("s-1"));
    let a = outcome(c, join(c, &a.member_id, None));
    let s = outcome(c, pending_s);
    assert_eq!(a.generation, s.generation);
    assert_eq!(a.leader, a.member_id);
    let Pending::Wait(mut follower) = c.sync("g", s.generation, who(&s, Some("s-1")), vec![])
    else {
        panic!("the follower waits for the leader");
    };
    let assignments = vec![
        (a.member_id.clone(), Bytes::from_static(b"A")),
        (s.member_id.clone(), Bytes::from_static(b"S")),
    ];
    let _ = c.sync("g", a.generation, who(&a, None), assignments);
    assert_eq!(
        follower.try_recv().expect("assigned"),
        (code::NONE, Bytes::from_static(b"S"))
    );
    (a, s)
}

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance() {
    let (_d, c) = coordinator(0);
    let (a, s) = stable_pair(&c);
    // The static member comes back with no member id (a new process).
    let s2 = match join(&c, "", Some("s-1")) {
        Pending::Ready(o) => o,
        Pending::Wait(_) => panic!("a known static member joins at once"),
    };
    assert_eq!(s2.error, code::NONE);
    assert_eq!(s2.generation, s.generation, "no new generation");
    assert_ne!(s2.member_id, s.member_id);
    assert_eq!(s2.leader, a.member_id, "the leader keeps its role");
    assert!(s2.members.is_empty(), "a follower gets no member list");
    // The other member sees no rebalance.
    assert_eq!(c.heartbeat("g", a.generation, who(&a, None)), code::NONE);
    // The new member id gets the old assignment.
    match c.sync("g", s2.generation, who(&s2, Some("s-1")), vec![]) {
        Pending::Ready(r) => assert_eq!(r, (code::NONE, Bytes::from_static(b"S"))),
        Pending::Wait(_) => panic!("a Stable group answers SyncGroup at once"),
    }
    // The old member id is fenced.
    let old = who(&s, Some("s-1"));
    assert_eq!(
        c.heartbeat("g", s.generation, old),
        code::FENCED_INSTANCE_ID
    );
    assert_eq!(
        c.check_commit("g", s.generation, old),
        code::FENCED_INSTANCE_ID
    );
    match c.sync("g", s.generation, old, vec![]) {
        Pending::Ready((e, _)) => assert_eq!(e, code::FENCED_INSTANCE_ID),
        Pending::Wait(_) => panic!("fenced at once"),
    }
    let rejoin = outcome(&c, join(&c, &s.member_id, Some("s-1")));
    assert_eq!(rejoin.error, code::FENCED_INSTANCE_ID);
    // Without its instance id, the old member id is just unknown.
    assert_eq!(
        c.heartbeat("g", s.generation, MemberRef::dynamic(&s.member_id)),
        code::UNKNOWN_MEMBER_ID
    );
    let described = c.describe("g").expect("live");
    assert_eq!(described.state, "Stable");
    let ids: Vec<(String, Option<String>)> = described
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.instance_id.clone()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (a.member_id.clone(), None),
            (s2.member_id.clone(), Some("s-1".to_string()))
        ]
    );
}

#[test]
fn a_restarted_static_leader_stays_leader() {
    let (_d, c) = coordinator(0);
    let l = outcome(&c, join(&c, "", Some("lead")));
    let pending_f = join(&c, "", None);
    let l = outcome(&c, join(&c, &l.member_id, Some("lead")));
    let f = outcome(&c, pending_f);
    assert_eq!(l.leader, l.member_id);
    let _ = c.sync("g", f.generation, who(&f, None), vec![]);
    let _ = c.sync("g", l.generation, who(&l, Some("lead")), vec![]);
    let l2 = outcome(&c, join(&c, "", Some("lead")));
    assert_eq!(l2.generation, l.generation);
    assert_eq!(l2.leader, l2.member_id, "the new member id leads");
    assert_eq!(l2.members.len(), 2, "the leader gets the member list");
    assert!(l2
        .members
        .iter()
        .any(|m| m.instance_id.as_deref() == Some("lead")));
    assert_eq!(c.heartbeat("g", f.generation, who(&f, None)), code::NONE);
}

#[test]
fn a_static_member_replaced_while_waiting_for_its_join_is_fenced() {
    let (_d, c) = coordinator(0);
    let (a, s) = stable_pair(&c);
    // s's old process rejoins with a new subscription (a rebalance
    // starts), then its new process takes the instance over before the
    // round ends.
    let pending_old = join_with(&c, &s.member_id, Some("s-1"), b"changed");
    let pending_new = join(&c, "", Some("s-1"));
    let old = outcome(&c, pending_old);
    assert_eq!(old.error, code::FENCED_INSTANCE_ID);
    let pending_a = join(&c, &a.member_id, None);
    let new = outcome(&c, pending_new);
    let a2 = outcome(&c, pending_a);
    assert_eq!(new.error, code::NONE);
    assert_eq!(new.generation, a2.generation);
    assert_eq!(a2.generation, a.generation + 1);
    assert_eq!(a2.members.len(), 2);
}

#[test]
fn static_members_leave_by_instance_id_and_expire() {
    let (_d, c) = coordinator(0);
    let (a, s) = stable_pair(&c);
    let codes = c.leave(
        "g",
        &[
            MemberRef {
                member_id: "",
                instance_id: Some("nobody"),
            },
            MemberRef {
                member_id: "other",
                instance_id: Some("s-1"),
            },
            MemberRef::dynamic("ghost"),
            MemberRef {
                member_id: "",
                instance_id: Some("s-1"),
            },
        ],
    );
    assert_eq!(
        codes,
        vec![
            code::UNKNOWN_MEMBER_ID,
            code::FENCED_INSTANCE_ID,
            code::UNKNOWN_MEMBER_ID,
            code::NONE
        ]
    );
    assert_eq!(
        c.heartbeat("g", s.generation, who(&s, Some("s-1"))),
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.heartbeat("g", a.generation, who(&a, None)),
        code::REBALANCE_IN_PROGRESS,
        "leaving starts a rebalance"
    );
    // A static member that stops heartbeating is removed at its session timeout.
    let (_d2, c2) = coordinator(0);
    let (a, _s) = stable_pair(&c2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c2.tick();
        if c2.heartbeat("g", a.generation, who(&a, None)) == code::REBALANCE_IN_PROGRESS {
            break;
        }
        assert!(Instant::now() < deadline, "the static member never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a2 = outcome(&c2, join(&c2, &a.member_id, None));
    assert_eq!(a2.members.len(), 1);
}

#[test]
fn the_initial_delay_gathers_members_started_together() {
    let (_d, c) = coordinator(300);
    let pa = join(&c, "", None);
    let pb = join(&c, "", None);
    assert_eq!(
        c.describe("g").map(|g| g.state),
        Some("PreparingRebalance"),
        "every member joined, but the delay holds the first rebalance"
    );
    let pc = join(&c, "", None);
    let a = outcome(&c, pa);
    let b = outcome(&c, pb);
    let cc = outcome(&c, pc);
    assert_eq!((a.generation, b.generation, cc.generation), (1, 1, 1));
    assert_eq!(a.members.len(), 3, "one rebalance with all three members");
    // A later rebalance of the same (non-empty) group is not delayed.
    let pd = join(&c, "", None);
    let pa = join(&c, &a.member_id, None);
    let pb = join(&c, &b.member_id, None);
    let last = join(&c, &cc.member_id, None);
    assert_eq!(
        c.describe("g").map(|g| g.state),
        Some("CompletingRebalance")
    );
    for p in [pd, pa, pb, last] {
        assert_eq!(outcome(&c, p).generation, 2);
    }
}

#[test]
fn without_a_delay_the_first_member_is_alone_in_generation_one() {
    let (_d, c) = coordinator(0);
    let a = outcome(&c, join(&c, "", None));
    assert_eq!((a.generation, a.members.len()), (1, 1));
}

#[test]
fn a_follower_joining_again_with_the_same_metadata_gets_the_current_generation() {
    let (_d, c) = coordinator(0);
    let (a, s) = stable_pair(&c);
    // s (a follower, static here) lost its connection and joins again with
    // its member id: no rebalance, as in Kafka.
    let again = match join(&c, &s.member_id, Some("s-1")) {
        Pending::Ready(o) => o,
        Pending::Wait(_) => panic!("answered at once"),
    };
    assert_eq!((again.error, again.generation), (code::NONE, s.generation));
    assert_eq!(again.member_id, s.member_id);
    assert_eq!(c.heartbeat("g", a.generation, who(&a, None)), code::NONE);
    // The leader joining again starts a rebalance (it may want to reassign).
    let pending = join(&c, &a.member_id, None);
    assert_eq!(
        c.heartbeat("g", s.generation, who(&s, Some("s-1"))),
        code::REBALANCE_IN_PROGRESS
    );
    let s2 = outcome(&c, join(&c, &s.member_id, Some("s-1")));
    assert_eq!(outcome(&c, pending).generation, s2.generation);
    assert_eq!(s2.generation, s.generation + 1);
}

/// JoinGroup v4+ (KIP-394): a new dynamic member gets MEMBER_ID_REQUIRED and
/// an id, joins with it; an id never joined with is forgotten after a
/// session timeout (300 ms here), and the group with it.
#[test]
fn member_id_required_ids_join_once_and_expire() {
    let (_d, c) = coordinator(0);
    let required = |c: &GroupCoordinator| {
        c.join(JoinRequest {
            group: "g".into(),
            member_id: String::new(),
            instance_id: None,
            client_id: "test".into(),
            host: "/127.0.0.1".into(),
            session_timeout_ms: 300,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            require_known_member_id: true,
        })
    };
    let first = outcome(&c, required(&c));
    assert_eq!(first.error, code::MEMBER_ID_REQUIRED);
    assert!(!first.member_id.is_empty());
    assert!(!c.is_active("g"), "a pending member is no member");
    let joined = outcome(&c, join(&c, &first.member_id, None));
    assert_eq!((joined.error, joined.generation), (code::NONE, 1));
    assert_eq!(joined.member_id, first.member_id);
    // Another pending id, never used: forgotten once its session is over.
    let second = outcome(&c, required(&c));
    assert_eq!(second.error, code::MEMBER_ID_REQUIRED);
    std::thread::sleep(Duration::from_millis(400));
    c.tick();
    let late = outcome(&c, join(&c, &second.member_id, None));
    assert_eq!(late.error, code::UNKNOWN_MEMBER_ID);
}

fn join_required(c: &GroupCoordinator, member: &str) -> Pending<JoinOutcome> {
    c.join(JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "test".into(),
        host: "/127.0.0.1".into(),
        session_timeout_ms: 300,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: true,
    })
}

/// Kafka's `hasAllMembersJoined`: the join phase waits for members sent
/// back for their id (MEMBER_ID_REQUIRED), so two consumers started
/// together get one generation with both, not a lone leader first.
#[test]
fn the_join_phase_waits_for_members_sent_back_for_their_id() {
    let (_d, c) = coordinator(0);
    let a = outcome(&c, join_required(&c, ""));
    let b = outcome(&c, join_required(&c, ""));
    assert_eq!(
        (a.error, b.error),
        (code::MEMBER_ID_REQUIRED, code::MEMBER_ID_REQUIRED)
    );
    let Pending::Wait(mut a_join) = join_required(&c, &a.member_id) else {
        panic!("the first member back must wait for the second");
    };
    c.tick();
    assert!(
        a_join.try_recv().is_err(),
        "completed without the pending member"
    );
    let b_joined = outcome(&c, join_required(&c, &b.member_id));
    let a_joined = outcome(&c, Pending::Wait(a_join));
    assert_eq!((a_joined.generation, b_joined.generation), (1, 1));
    assert_eq!(a_joined.leader, a.member_id);
    assert_eq!(a_joined.members.len(), 2, "the leader sees both members");
}

/// A member id handed out but never joined with holds the join phase up
/// only until its session timeout (300 ms here), as in Kafka.
#[test]
fn a_pending_member_that_never_comes_back_stops_holding_the_join() {
    let (_d, c) = coordinator(0);
    let a = outcome(&c, join_required(&c, ""));
    let _gone = outcome(&c, join_required(&c, ""));
    let joined = outcome(&c, join_required(&c, &a.member_id));
    assert_eq!((joined.error, joined.generation), (code::NONE, 1));
    assert_eq!(joined.members.len(), 1);
}
