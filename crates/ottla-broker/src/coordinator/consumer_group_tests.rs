//! The consumer-protocol coordinator: joins, reconciliation (revocation
//! first), epochs, fencing, assignors, and Kafka's error codes, driven
//! without a network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::consumer_group::{
    error, range, range_with_racks, uniform, uniform_with_racks, Assignment,
    ConsumerGroupCoordinator, Heartbeat, Outcome, Settings, LEAVE_EPOCH,
};
use crate::errors::code;
use ottla_storage::store::Store;

fn coordinator(session_ms: u64, max_size: usize) -> (tempfile::TempDir, ConsumerGroupCoordinator) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store.create_topic("t", 4, &[]).expect("create");
    store.create_topic("u", 2, &[]).expect("create");
    let c = ConsumerGroupCoordinator::new(
        store,
        Settings {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(session_ms),
            max_size,
            broker_rack: None,
            migration: Default::default(),
        },
    );
    (dir, c)
}

fn join(c: &ConsumerGroupCoordinator, member: &str) -> Outcome {
    c.heartbeat(Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 60_000,
        topics: Some(vec!["t".into()]),
        owned: Some(Assignment::new()),
        ..Default::default()
    })
}

fn beat(c: &ConsumerGroupCoordinator, member: &str, epoch: i32, owned: &Assignment) -> Outcome {
    c.heartbeat(Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: 60_000,
        owned: Some(owned.clone()),
        ..Default::default()
    })
}

fn parts(a: &Option<Assignment>) -> Vec<i32> {
    a.as_ref()
        .and_then(|a| a.get("t"))
        .map(|ps| ps.iter().copied().collect())
        .unwrap_or_default()
}

fn owned(ps: &[i32]) -> Assignment {
    let mut a = Assignment::new();
    if !ps.is_empty() {
        a.insert("t".into(), ps.iter().copied().collect());
    }
    a
}

#[test]
fn a_lone_member_gets_every_partition_at_epoch_one() {
    let (_d, c) = coordinator(45_000, 10);
    let o = join(&c, "a");
    assert_eq!(o.error, code::NONE);
    assert_eq!(o.member_id.as_deref(), Some("a"));
    assert_eq!(o.member_epoch, 1);
    assert_eq!(o.heartbeat_interval_ms, 100);
    assert_eq!(parts(&o.assignment), vec![0, 1, 2, 3]);
    // A heartbeat with nothing changed carries no assignment.
    let again = c.heartbeat(Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: "a".into(),
        member_epoch: 1,
        rebalance_timeout_ms: -1,
        ..Default::default()
    });
    assert_eq!((again.error, again.member_epoch), (code::NONE, 1));
    assert_eq!(again.assignment, None);
}

#[test]
fn partitions_move_only_after_their_owner_revoked_them() {
    let (_d, c) = coordinator(45_000, 10);
    assert_eq!(join(&c, "a").member_epoch, 1);
    // b joins: the target splits the partitions, but a still owns them all.
    let b = join(&c, "b");
    assert_eq!(b.error, code::NONE);
    assert_eq!(b.member_epoch, 2);
    assert_eq!(parts(&b.assignment), Vec::<i32>::new(), "unreleased yet");
    // a is told to keep half: it revokes the others, at its old epoch.
    let a = beat(&c, "a", 1, &owned(&[0, 1, 2, 3]));
    assert_eq!(a.member_epoch, 1, "a revokes before its epoch advances");
    let kept = parts(&a.assignment);
    assert_eq!(kept.len(), 2);
    // b heartbeats while a has not revoked yet: still nothing.
    assert_eq!(
        parts(&beat(&c, "b", 2, &owned(&[])).assignment),
        Vec::<i32>::new()
    );
    // a reports it revoked: its epoch advances.
    let a = beat(&c, "a", 1, &owned(&kept));
    assert_eq!(a.member_epoch, 2);
    // Now b gets the rest.
    let b = beat(&c, "b", 2, &owned(&[]));
    let got = parts(&b.assignment);
    assert_eq!(got.len(), 2);
    let all: BTreeSet<i32> = kept.iter().chain(got.iter()).copied().collect();
    assert_eq!(all.len(), 4, "no partition twice: {kept:?} {got:?}");
    let d = c.describe("g").expect("described");
    assert_eq!(d.state, "Stable");
    assert_eq!((d.epoch, d.assignment_epoch), (2, 2));
    assert_eq!(d.assignor, "uniform");
}

#[test]
fn a_member_that_leaves_frees_its_partitions() {
    let (_d, c) = coordinator(45_000, 10);
    join(&c, "a");
    join(&c, "b");
    let a = beat(&c, "a", 1, &owned(&[0, 1, 2, 3]));
    let kept = parts(&a.assignment);
    beat(&c, "a", 1, &owned(&kept));
    let b = beat(&c, "b", 2, &owned(&[]));
    assert_eq!(parts(&b.assignment).len(), 2);
    let left = beat(&c, "b", -1, &owned(&[]));
    assert_eq!((left.error, left.member_epoch), (code::NONE, -1));
    let a = beat(&c, "a", 2, &owned(&kept));
    assert_eq!(a.member_epoch, 3);
    assert_eq!(parts(&a.assignment), vec![0, 1, 2, 3]);
    assert_eq!(beat(&c, "b", 2, &owned(&[])).error, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_silent_member_is_fenced_after_its_session() {
    let (_d, c) = coordinator(200, 10);
    join(&c, "a");
    std::thread::sleep(Duration::from_millis(300));
    c.tick();
    assert!(!c.is_active("g"));
    assert_eq!(beat(&c, "a", 1, &owned(&[])).error, code::UNKNOWN_MEMBER_ID);
    // It may join again, afresh.
    assert_eq!(join(&c, "a").error, code::NONE);
}

#[test]
fn epochs_are_checked_as_kafka_does() {
    let (_d, c) = coordinator(45_000, 10);
    join(&c, "a");
    assert_eq!(
        beat(&c, "a", 5, &owned(&[])).error,
        error::FENCED_MEMBER_EPOCH
    );
    assert_eq!(beat(&c, "x", 1, &owned(&[])).error, code::UNKNOWN_MEMBER_ID);
    // The previous epoch is accepted while what it owns is assigned (a
    // lost response).
    join(&c, "b");
    let a = beat(&c, "a", 1, &owned(&[0, 1, 2, 3]));
    let kept = parts(&a.assignment);
    assert_eq!(beat(&c, "a", 1, &owned(&kept)).member_epoch, 2);
    assert_eq!(beat(&c, "a", 1, &owned(&kept)).error, code::NONE);
    assert_eq!(
        beat(&c, "a", 1, &owned(&[0, 1, 2, 3])).error,
        error::FENCED_MEMBER_EPOCH
    );
    // Offsets: the member's epoch, else STALE_MEMBER_EPOCH; non-members UNKNOWN_MEMBER_ID.
    assert_eq!(c.check_commit("g", "a", 2), Some(code::NONE));
    assert_eq!(c.check_commit("g", "a", 1), Some(error::STALE_MEMBER_EPOCH));
    assert_eq!(c.check_commit("g", "zz", 2), Some(code::UNKNOWN_MEMBER_ID));
    assert_eq!(c.check_commit("g", "", -1), Some(code::UNKNOWN_MEMBER_ID));
    assert_eq!(
        c.check_commit("other", "a", 2),
        None,
        "not a consumer group here"
    );
}

#[test]
fn malformed_heartbeats_get_kafkas_errors() {
    let (_d, c) = coordinator(45_000, 1);
    let first = Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: "a".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 60_000,
        topics: Some(vec!["t".into()]),
        owned: Some(Assignment::new()),
        ..Default::default()
    };
    let bad = |f: &dyn Fn(&mut Heartbeat)| {
        let mut h = first.clone();
        f(&mut h);
        c.heartbeat(h)
    };
    assert_eq!(bad(&|h| h.group.clear()).error, code::INVALID_REQUEST);
    assert_eq!(bad(&|h| h.member_id.clear()).error, code::INVALID_REQUEST);
    assert_eq!(
        bad(&|h| h.rebalance_timeout_ms = -1).error,
        code::INVALID_REQUEST
    );
    assert_eq!(bad(&|h| h.owned = None).error, code::INVALID_REQUEST);
    assert_eq!(
        bad(&|h| h.owned = Some(owned(&[1]))).error,
        code::INVALID_REQUEST
    );
    assert_eq!(bad(&|h| h.topics = None).error, code::INVALID_REQUEST);
    assert_eq!(bad(&|h| h.member_epoch = -3).error, code::INVALID_REQUEST);
    assert_eq!(
        bad(&|h| h.instance_id = Some(String::new())).error,
        code::INVALID_REQUEST
    );
    let o = bad(&|h| h.assignor = Some("sticky".into()));
    assert_eq!(o.error, error::UNSUPPORTED_ASSIGNOR);
    assert!(o.message.is_some_and(|m| m.contains("sticky")));
    assert_eq!(
        bad(&|h| h.regex = Some("(".into())).error,
        error::INVALID_REGULAR_EXPRESSION
    );
    // v0 members may leave the member id to the coordinator.
    let v0 = bad(&|h| {
        h.version = 0;
        h.member_id.clear();
    });
    assert_eq!(v0.error, code::NONE);
    assert!(v0.member_id.is_some_and(|m| !m.is_empty()));
    // The group is full (max size 1).
    assert_eq!(join(&c, "b").error, error::GROUP_MAX_SIZE_REACHED);
    // Heartbeats and leaves of a group never seen.
    let mut h = first.clone();
    h.group = "nope".into();
    h.member_epoch = 3;
    assert_eq!(c.heartbeat(h.clone()).error, code::UNKNOWN_MEMBER_ID);
    h.member_epoch = -1;
    assert_eq!(c.heartbeat(h).error, code::UNKNOWN_MEMBER_ID);
}

#[test]
fn a_regex_subscribes_to_every_matching_topic() {
    let (_d, c) = coordinator(45_000, 10);
    let o = c.heartbeat(Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: "a".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 60_000,
        regex: Some("t|u".into()),
        owned: Some(Assignment::new()),
        ..Default::default()
    });
    let a = o.assignment.expect("assignment");
    assert_eq!(a.get("t").map(BTreeSet::len), Some(4));
    assert_eq!(a.get("u").map(BTreeSet::len), Some(2));
}

fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    members
        .iter()
        .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
        .collect()
}

fn sizes(a: &HashMap<String, Assignment>, m: &str) -> usize {
    a.get(m).map_or(0, |a| a.values().map(BTreeSet::len).sum())
}

#[test]
fn uniform_balances_and_keeps_what_members_had() {
    let meta: BTreeMap<String, u32> = [("t".to_string(), 5), ("u".to_string(), 2)].into();
    let s = subs(&[("a", &["t", "u"]), ("b", &["t", "u"]), ("c", &["t", "u"])]);
    let first = uniform(&s, &meta, &HashMap::new());
    let counts: Vec<usize> = ["a", "b", "c"].iter().map(|m| sizes(&first, m)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 7);
    assert!(counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1);
    // c leaves: a and b keep everything they had.
    let s2 = subs(&[("a", &["t", "u"]), ("b", &["t", "u"])]);
    let second = uniform(&s2, &meta, &first);
    for m in ["a", "b"] {
        for (t, ps) in first.get(m).into_iter().flatten() {
            for p in ps {
                assert!(second[m][t].contains(p), "{m} lost {t}-{p}");
            }
        }
    }
    assert_eq!(sizes(&second, "a") + sizes(&second, "b"), 7);
    // Heterogeneous: only b subscribes to u.
    let s3 = subs(&[("a", &["t"]), ("b", &["t", "u"])]);
    let third = uniform(&s3, &meta, &HashMap::new());
    assert!(!third["a"].contains_key("u"));
    assert_eq!(sizes(&third, "a") + sizes(&third, "b"), 7);
    assert!(sizes(&third, "a").abs_diff(sizes(&third, "b")) <= 1);
}

#[test]
fn range_gives_contiguous_ranges_per_topic() {
    let meta: BTreeMap<String, u32> = [("t".to_string(), 5)].into();
    let a = range(&subs(&[("a", &["t"]), ("b", &["t"])]), &meta);
    assert_eq!(
        a["a"]["t"].iter().copied().collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(a["b"]["t"].iter().copied().collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn the_range_assignor_is_used_when_members_ask_for_it() {
    let (_d, c) = coordinator(45_000, 10);
    let o = c.heartbeat(Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: "a".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 60_000,
        topics: Some(vec!["t".into()]),
        assignor: Some("range".into()),
        owned: Some(Assignment::new()),
        ..Default::default()
    });
    assert_eq!(o.error, code::NONE);
    assert_eq!(
        c.describe("g").map(|d| d.assignor),
        Some("range".to_string())
    );
}

#[test]
fn a_consumer_group_holds_the_groups_claim() {
    let (d, c) = coordinator(45_000, 10);
    join(&c, "a");
    let store = Store::open(d.path()).expect("store");
    assert!(
        super::claim::try_claim(&store, "g")
            .expect("claim")
            .is_none(),
        "classic members and embedded ones are kept out"
    );
    beat(&c, "a", -1, &owned(&[]));
    assert!(super::claim::try_claim(&store, "g")
        .expect("claim")
        .is_some());
}

fn join_static(c: &ConsumerGroupCoordinator, member: &str, instance: &str) -> Outcome {
    c.heartbeat(Heartbeat {
        version: 1,
        group: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        instance_id: Some(instance.into()),
        rebalance_timeout_ms: 60_000,
        topics: Some(vec!["t".into()]),
        owned: Some(Assignment::new()),
        ..Default::default()
    })
}

#[test]
fn a_static_member_back_takes_its_old_place_without_a_new_epoch() {
    let (_d, c) = coordinator(45_000, 1);
    let first = join_static(&c, "a", "i1");
    assert_eq!(first.member_epoch, 1);
    // Its instance id is taken while the member is there.
    assert_eq!(
        join_static(&c, "b", "i1").error,
        error::UNRELEASED_INSTANCE_ID
    );
    // It leaves for a while (epoch -2): its place waits.
    let left = beat(&c, "a", -2, &owned(&[]));
    assert_eq!((left.error, left.member_epoch), (code::NONE, -2));
    assert!(c.is_active("g"));
    // Back with a new member id (a restart), even in a full group: same
    // epoch, same partitions.
    let back = join_static(&c, "b", "i1");
    assert_eq!(back.error, code::NONE);
    assert_eq!(back.member_epoch, 1);
    assert_eq!(parts(&back.assignment), vec![0, 1, 2, 3]);
    let d = c.describe("g").expect("described");
    assert_eq!(d.epoch, 1);
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, "b");
    assert_eq!(beat(&c, "a", 1, &owned(&[])).error, code::UNKNOWN_MEMBER_ID);
}

/// A restarted broker resumes a consumer group from `__consumer_offsets`
/// (Kafka's consumer-group records): members keep their ids, epochs and
/// partitions, so their next heartbeats go on without a rebalance; a
/// member that left before the restart stays gone.
#[test]
fn a_restarted_coordinator_resumes_its_groups() {
    let (dir, c) = coordinator(45_000, 10);
    let a = join(&c, "a");
    let b = join(&c, "b");
    // a gives up the partitions b's target needs, b then gets them.
    let a_target = beat(&c, "a", a.member_epoch, &owned(&parts(&a.assignment)));
    let a2 = beat(
        &c,
        "a",
        a_target.member_epoch,
        &owned(&parts(&a_target.assignment)),
    );
    let b2 = beat(&c, "b", b.member_epoch, &owned(&[]));
    let (a_parts, b_parts) = (parts(&a_target.assignment), parts(&b2.assignment));
    assert_eq!(a_parts.len() + b_parts.len(), 4, "{a_parts:?} {b_parts:?}");
    let x = join(&c, "x");
    assert_eq!(beat(&c, "x", -1, &owned(&[])).error, code::NONE);
    let before = c.describe("g").expect("group");
    drop(c);
    let store = Store::open(dir.path()).expect("store");
    let c = ConsumerGroupCoordinator::new(
        store,
        Settings {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(45_000),
            max_size: 10,
            broker_rack: None,
            migration: Default::default(),
        },
    );
    let after = c.describe("g").expect("group resumed");
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.assignment_epoch, before.assignment_epoch);
    let ids: Vec<&str> = after.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["a", "b"],
        "x left before the restart: {}",
        x.member_epoch
    );
    for (m, was) in after.members.iter().zip(&before.members) {
        assert_eq!(
            (m.member_epoch, &m.assignment, &m.target),
            (was.member_epoch, &was.assignment, &was.target)
        );
    }
    // Their heartbeats go on at their epochs (no FENCED_MEMBER_EPOCH, no
    // new group epoch): the restart is no rebalance.
    let a3 = beat(&c, "a", a2.member_epoch, &owned(&a_parts));
    let b3 = beat(&c, "b", b2.member_epoch, &owned(&b_parts));
    assert_eq!((a3.error, b3.error), (code::NONE, code::NONE));
    assert_eq!(c.describe("g").expect("group").epoch, before.epoch);
    assert_eq!(a3.member_epoch, before.assignment_epoch);
}

fn ps(a: &HashMap<String, Assignment>, m: &str) -> Vec<i32> {
    a.get(m)
        .and_then(|a| a.get("t"))
        .map(|ps| ps.iter().copied().collect())
        .unwrap_or_default()
}

/// KIP-848's rack-aware assignment on one node: every replica is on the
/// broker's rack, so members with that `rack_id` get partitions first, and
/// every member still gets the share it would without racks.
#[test]
fn members_on_the_replicas_rack_come_first_and_balance_holds() {
    let meta: BTreeMap<String, u32> = [("t".to_string(), 3)].into();
    let s = subs(&[("a", &["t"]), ("b", &["t"])]);
    let b_on_rack: BTreeSet<String> = ["b".to_string()].into();
    // range: a's share is 2, b's 1 (id order), but b takes its range first.
    assert_eq!(
        (ps(&range(&s, &meta), "a"), ps(&range(&s, &meta), "b")),
        (vec![0, 1], vec![2])
    );
    let r = range_with_racks(&s, &meta, &b_on_rack);
    assert_eq!((ps(&r, "a"), ps(&r, "b")), (vec![1, 2], vec![0]));
    // uniform: ties between members with as few go to the one on the rack.
    let plain = uniform(&s, &meta, &HashMap::new());
    assert_eq!((ps(&plain, "a"), ps(&plain, "b")), (vec![0, 2], vec![1]));
    let u = uniform_with_racks(&s, &meta, &HashMap::new(), &b_on_rack);
    assert_eq!((ps(&u, "a"), ps(&u, "b")), (vec![1], vec![0, 2]));
    // Everyone (or no one) on the rack: as without racks.
    let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    assert_eq!(range_with_racks(&s, &meta, &both), range(&s, &meta));
    assert_eq!(uniform_with_racks(&s, &meta, &HashMap::new(), &both), plain);
}

/// The plumbing: `broker_rack` and the members' `rack_id` reach the assignor.
#[test]
fn the_broker_rack_and_member_racks_reach_the_assignor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store.create_topic("t", 3, &[]).expect("create");
    let c = ConsumerGroupCoordinator::new(
        store,
        Settings {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(45_000),
            max_size: 10,
            broker_rack: Some("r1".into()),
            migration: Default::default(),
        },
    );
    let join_on = |member: &str, rack: Option<&str>| {
        c.heartbeat(Heartbeat {
            version: 1,
            group: "g".into(),
            member_id: member.into(),
            member_epoch: 0,
            rack_id: rack.map(str::to_string),
            rebalance_timeout_ms: 60_000,
            topics: Some(vec!["t".into()]),
            assignor: Some("range".into()),
            owned: Some(Assignment::new()),
            ..Default::default()
        })
    };
    assert_eq!(join_on("a", Some("r2")).error, code::NONE);
    assert_eq!(join_on("b", Some("r1")).error, code::NONE);
    let g = c.describe("g").expect("group");
    let target = |m: &str| -> Vec<i32> {
        g.members
            .iter()
            .find(|x| x.member_id == m)
            .and_then(|x| x.target.get("t"))
            .map(|ps| ps.iter().copied().collect())
            .unwrap_or_default()
    };
    assert_eq!((target("a"), target("b")), (vec![1, 2], vec![0]));
}

/// DeleteGroups of an empty consumer group forgets it, records included:
/// a restarted coordinator does not bring it back.
#[test]
fn a_forgotten_group_stays_gone_after_a_restart() {
    let (dir, c) = coordinator(45_000, 10);
    let a = join(&c, "a");
    assert!(!c.forget("g"), "a group with members is kept");
    assert_eq!(beat(&c, "a", LEAVE_EPOCH, &owned(&[])).error, code::NONE);
    assert!(
        c.describe("g").is_some(),
        "an empty group is kept until deleted"
    );
    assert!(c.forget("g"));
    assert!(c.describe("g").is_none());
    assert!(!c.forget("g"));
    drop(c);
    let store = Store::open(dir.path()).expect("store");
    let c = ConsumerGroupCoordinator::new(
        store,
        Settings {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_millis(45_000),
            max_size: 10,
            broker_rack: None,
            migration: Default::default(),
        },
    );
    assert!(c.describe("g").is_none(), "epoch {}", a.member_epoch);
}
