//! Group behaviour through the engine consumer: ownership never overlaps,
//! dead members are pruned, cooperative rebalances move only what they
//! must, session timeouts, the broker's coordinator claim, admin operations, patterns.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::admin::{self, ResetTarget};
use super::assignor::Assignor;
use super::member::MemberSession;
use super::state::GroupState;
use super::GroupDir;
use crate::consumer::{
    Consumer, ConsumerConfig, OffsetReset, RebalanceListener, Subscription, TopicPartition,
};
use ottla_record::BatchBuilder;
use ottla_storage::error::Error;
use ottla_storage::log::Durability;
use ottla_storage::ofd::ByteLocks;
use ottla_storage::store::Store;

fn open_store() -> (tempfile::TempDir, Arc<Store>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open store");
    (tmp, store)
}

fn member(store: &Arc<Store>, group: &str, assignor: Assignor, session_ms: u64) -> Arc<Consumer> {
    Arc::new(
        Consumer::new(
            store.clone(),
            ConsumerConfig {
                group_id: Some(group.into()),
                auto_offset_reset: OffsetReset::Earliest,
                enable_auto_commit: true,
                auto_create_topics: false,
                assignor,
                session_timeout_ms: session_ms,
                client_id: "test".into(),
                ..Default::default()
            },
        )
        .expect("consumer"),
    )
}

fn append(store: &Arc<Store>, topic: &str, partition: u32, n: usize) {
    let log = store.partition_by_name(topic, partition).expect("log");
    let mut b = BatchBuilder::with_capacity(64 * n);
    for i in 0..n {
        b.append(0, None, Some(format!("v{i}").as_bytes()), &[]);
    }
    let mut bytes = b.finish().to_vec();
    log.append(&mut bytes, Durability::PageCache)
        .expect("append");
}

fn owned(c: &Consumer) -> BTreeSet<(String, u32)> {
    c.assignment()
        .into_iter()
        .map(|tp| (tp.topic.to_string(), tp.partition))
        .collect()
}

fn count(c: &Consumer) -> usize {
    c.drain(100_000, &mut |_, _| {}).expect("drain")
}

/// Drain every member until `done` holds, or panic after a few seconds.
fn settle(members: &[&Consumer], done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "group did not settle");
        for m in members {
            count(m);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// (what happened, to which partitions)
type Event = (&'static str, Vec<(String, u32)>);

#[derive(Default)]
struct Log {
    events: Mutex<Vec<Event>>,
}

impl Log {
    fn push(&self, what: &'static str, tps: &[TopicPartition]) {
        let mut v: Vec<(String, u32)> = tps
            .iter()
            .map(|tp| (tp.topic.to_string(), tp.partition))
            .collect();
        v.sort();
        self.events.lock().push((what, v));
    }
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl RebalanceListener for Log {
    fn on_partitions_revoked(&self, p: &[TopicPartition]) {
        self.push("revoked", p);
    }
    fn on_partitions_assigned(&self, p: &[TopicPartition]) {
        self.push("assigned", p);
    }
    fn on_partitions_lost(&self, p: &[TopicPartition]) {
        self.push("lost", p);
    }
}

#[test]
fn ownership_is_an_exclusive_lock_per_partition() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    let dir = Arc::new(GroupDir::open(&store, "g").expect("dir"));
    let mut a =
        MemberSession::join(dir.clone(), "a", vec!["t".into()], Assignor::Range).expect("join a");
    let mut b =
        MemberSession::join(dir.clone(), "b", vec!["t".into()], Assignor::Range).expect("join b");
    assert!(a.try_acquire("t", 0).expect("a takes 0"));
    assert!(!b.try_acquire("t", 0).expect("b refused 0"));
    assert!(dir.partition_held("t", 0).expect("probe"));
    a.release("t", 0).expect("release");
    assert!(b.try_acquire("t", 0).expect("b takes 0 once released"));
    // Leaving releases everything at once.
    b.leave().expect("leave");
    assert!(a.try_acquire("t", 0).expect("a takes 0 after b left"));
    let st = dir.read_state().expect("state");
    assert_eq!(st.members.len(), 1);
    assert_eq!(st.protocol, "range");
}

#[test]
fn members_must_agree_on_the_assignor() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    let a = member(&store, "g", Assignor::Range, 10_000);
    a.subscribe(&["t".into()]).expect("a");
    let b = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    match b.subscribe(&["t".into()]) {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("range"), "{msg}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    // The refused member left nothing behind.
    let dir = GroupDir::open(&store, "g").expect("dir");
    assert_eq!(dir.read_state().expect("state").members.len(), 1);
    a.close(false).expect("close");
    b.subscribe(&["t".into()])
        .expect("b once the group is empty");
}

#[test]
fn dead_members_are_pruned_and_their_partitions_reassigned() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 3, &[]).expect("create");
    let dir = GroupDir::open(&store, "g").expect("dir");
    // A member that died without leaving: listed, its file still there,
    // but nobody holds its lock (a killed process's locks are gone).
    std::fs::write(dir.member_file("1-0-0"), b"").expect("member file");
    let unlocked = GroupState::decode(
        "ottla-group 1\ngeneration 5\nprotocol cooperative-sticky\n\
         member ghost-1 1-0-0 ghost h 1 t\ntopic t 3\nassign ghost-1 t 0,1,2\n",
    )
    .expect("decode");
    ottla_storage::fsutil::write_replace(&dir.dir.join("state"), unlocked.encode().as_bytes())
        .expect("write");
    let c = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    c.subscribe(&["t".into()]).expect("join");
    // Joining pruned the ghost, so everything is ours at once.
    assert_eq!(owned(&c).len(), 3);
    let st = dir.read_state().expect("state");
    assert_eq!(st.members.len(), 1);
    assert!(st.generation > 5);
    assert!(!dir.member_file("1-0-0").exists());
}

#[test]
fn cooperative_sticky_moves_only_what_it_must() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 6, &[]).expect("create");
    let la = Arc::new(Log::default());
    let lb = Arc::new(Log::default());
    let a = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    a.subscribe_with(Subscription::Topics(vec!["t".into()]), Some(la.clone()))
        .expect("a");
    assert_eq!(owned(&a).len(), 6);
    let b = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    b.subscribe_with(Subscription::Topics(vec!["t".into()]), Some(lb.clone()))
        .expect("b");
    settle(&[&a, &b], || owned(&a).len() == 3 && owned(&b).len() == 3);
    let before_a = owned(&a);
    la.take();
    lb.take();
    let lc = Arc::new(Log::default());
    let c = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    c.subscribe_with(Subscription::Topics(vec!["t".into()]), Some(lc.clone()))
        .expect("c");
    settle(&[&a, &b, &c], || {
        owned(&a).len() == 2 && owned(&b).len() == 2 && owned(&c).len() == 2
    });
    lb.take();
    // a gave up exactly one partition and kept the other two; nothing was
    // assigned to it; c received exactly the two that moved.
    let ea = la.take();
    assert_eq!(ea.len(), 1, "{ea:?}");
    assert_eq!(ea[0].0, "revoked");
    assert_eq!(ea[0].1.len(), 1);
    assert!(owned(&a).is_subset(&before_a));
    let moved: BTreeSet<_> = lc
        .take()
        .into_iter()
        .flat_map(|(w, v)| {
            assert_eq!(w, "assigned");
            v
        })
        .collect();
    assert_eq!(moved.len(), 2);
    assert_eq!(moved, owned(&c));
    // c leaves: its partitions go back; a and b revoke nothing.
    let before_b = owned(&b);
    c.close(true).expect("close c");
    settle(&[&a, &b], || owned(&a).len() == 3 && owned(&b).len() == 3);
    assert!(la.take().iter().all(|(w, _)| *w == "assigned"));
    assert!(lb.take().iter().all(|(w, _)| *w == "assigned"));
    assert!(before_b.is_subset(&owned(&b)));
}

#[test]
fn eager_assignors_revoke_everything_each_generation() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 4, &[]).expect("create");
    let la = Arc::new(Log::default());
    let a = member(&store, "g", Assignor::Range, 10_000);
    a.subscribe_with(Subscription::Topics(vec!["t".into()]), Some(la.clone()))
        .expect("a");
    assert_eq!(
        la.take(),
        vec![("assigned", (0..4).map(|p| ("t".to_string(), p)).collect())]
    );
    let b = member(&store, "g", Assignor::Range, 10_000);
    b.subscribe(&["t".into()]).expect("b");
    settle(&[&a, &b], || owned(&a).len() == 2 && owned(&b).len() == 2);
    let ev = la.take();
    assert_eq!(ev[0].0, "revoked");
    assert_eq!(ev[0].1.len(), 4, "eager revokes all: {ev:?}");
    assert_eq!(
        owned(&a),
        [("t".to_string(), 0), ("t".to_string(), 1)].into()
    );
    assert_eq!(
        owned(&b),
        [("t".to_string(), 2), ("t".to_string(), 3)].into()
    );
}

#[test]
fn a_handover_resumes_from_the_commit_made_on_revoke() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    append(&store, "t", 0, 10);
    append(&store, "t", 1, 10);
    let a = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    a.subscribe(&["t".into()]).expect("a");
    assert_eq!(count(&a), 20);
    let b = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    b.subscribe(&["t".into()]).expect("b");
    settle(&[&a, &b], || owned(&b).len() == 1);
    // a auto-committed the moved partition before releasing it: b has
    // nothing to re-read.
    assert_eq!(count(&b), 0);
    append(&store, "t", 0, 3);
    append(&store, "t", 1, 3);
    assert_eq!(count(&a) + count(&b), 6);
}

#[test]
fn a_member_that_stops_polling_loses_its_partitions() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    let ls = Arc::new(Log::default());
    let stuck = member(&store, "g", Assignor::CooperativeSticky, 150);
    stuck
        .subscribe_with(Subscription::Topics(vec!["t".into()]), Some(ls.clone()))
        .expect("stuck");
    let live = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    live.subscribe(&["t".into()]).expect("live");
    settle(&[&stuck, &live], || {
        owned(&stuck).len() == 1 && owned(&live).len() == 1
    });
    ls.take();
    // `stuck` stops polling; `live` keeps polling and gets everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    while owned(&live).len() < 2 {
        assert!(Instant::now() < deadline, "session timeout never fired");
        count(&live);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(owned(&stuck).is_empty(), "a lost partition is not kept");
    // A commit for what it lost is refused: the new owner may be past it.
    match stuck.commit(Some(&[("t".into(), 0, 1, String::new())])) {
        Err(Error::IllegalState(msg)) => assert!(msg.contains("not owned"), "{msg}"),
        other => panic!("expected the commit to be fenced, got {other:?}"),
    }
    // Polling again reports the loss and rejoins.
    settle(&[&stuck, &live], || {
        owned(&stuck).len() == 1 && owned(&live).len() == 1
    });
    let ev = ls.take();
    assert_eq!(ev[0].0, "lost", "{ev:?}");
    assert_eq!(ev[0].1.len(), 1);
}

#[test]
fn the_broker_claim_excludes_embedded_members() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 1, &[]).expect("create");
    let claim = ByteLocks::open(&super::claim_path(&store, "g")).expect("claim");
    // The broker holds the claim exclusively while its coordinator has members.
    assert!(claim.try_lock(0, true).expect("broker takes the claim"));
    let c = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    match c.subscribe(&["t".into()]) {
        Err(e @ Error::GroupCoordinatedByBroker { .. }) => {
            assert_eq!(
                e.to_string(),
                "group g is coordinated by a broker on this directory"
            );
        }
        other => panic!("expected GroupCoordinatedByBroker, got {other:?}"),
    }
    claim.unlock(0).expect("broker lets go");
    c.subscribe(&["t".into()]).expect("embedded member");
    assert!(!claim
        .try_lock(0, true)
        .expect("broker refused while embedded members exist"));
    c.close(false).expect("close");
    assert!(claim.try_lock(0, true).expect("free once the member left"));
}

#[test]
fn reset_and_delete_need_an_empty_group() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    append(&store, "t", 0, 5);
    append(&store, "t", 1, 7);
    let c = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    c.subscribe(&["t".into()]).expect("join");
    assert_eq!(count(&c), 12);
    c.commit(None).expect("commit");
    let d = admin::describe_group(&store, "g").expect("describe");
    assert_eq!(d.state, "Stable");
    assert_eq!(d.protocol, "cooperative-sticky");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].assignment.len(), 2);
    assert_eq!(d.offsets.iter().map(|o| o.lag).sum::<i64>(), 0);
    assert!(matches!(
        admin::reset_offsets(&store, "g", None, &ResetTarget::Earliest),
        Err(Error::GroupNotEmpty(_))
    ));
    assert!(matches!(
        admin::delete_group(&store, "g"),
        Err(Error::GroupNotEmpty(_))
    ));
    assert_eq!(
        admin::list_groups(&store).expect("list"),
        vec!["g".to_string()]
    );
    c.close(false).expect("close");
    assert_eq!(
        admin::describe_group(&store, "g").expect("describe").state,
        "Empty"
    );
    let done = admin::reset_offsets(&store, "g", None, &ResetTarget::Earliest).expect("reset");
    assert_eq!(done, vec![("t".into(), 0, 0), ("t".into(), 1, 0)]);
    let d = admin::describe_group(&store, "g").expect("describe");
    assert_eq!(d.offsets.iter().map(|o| o.lag).sum::<i64>(), 12);
    let done = admin::reset_offsets(
        &store,
        "g",
        None,
        &ResetTarget::Offsets(vec![("t".into(), 1, 3), ("t".into(), 0, 99)]),
    )
    .expect("explicit");
    assert_eq!(done, vec![("t".into(), 1, 3), ("t".into(), 0, 5)]);
    admin::delete_group(&store, "g").expect("delete");
    assert_eq!(
        admin::describe_group(&store, "g").expect("describe").state,
        "Dead"
    );
    assert!(admin::list_groups(&store).expect("list").is_empty());
}

#[test]
fn pattern_subscription_picks_up_topics_created_later() {
    let (_tmp, store) = open_store();
    store.create_topic("orders-eu", 1, &[]).expect("create");
    store.create_topic("payments", 1, &[]).expect("create");
    let c = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    c.subscribe_with(Subscription::pattern("orders-.*").expect("pattern"), None)
        .expect("subscribe");
    assert_eq!(owned(&c), [("orders-eu".to_string(), 0)].into());
    store
        .create_topic("orders-us", 2, &[])
        .expect("create later");
    append(&store, "orders-us", 1, 4);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < 4 {
        assert!(Instant::now() < deadline, "new topic not picked up");
        got += count(&c);
    }
    assert_eq!(owned(&c).len(), 3);
    assert!(matches!(
        Subscription::pattern("("),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn joining_drops_a_manual_assignment() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    let a = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    a.subscribe(&["t".into()]).expect("a owns both");
    let b = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    b.assign(&[("t".into(), 0), ("t".into(), 1)])
        .expect("manual");
    assert_eq!(owned(&b).len(), 2);
    b.subscribe(&["t".into()]).expect("b joins");
    // b owns nothing until a lets go, whatever it was reading before.
    assert!(owned(&b).is_empty());
    settle(&[&a, &b], || owned(&a).len() == 1 && owned(&b).len() == 1);
    assert!(owned(&a).is_disjoint(&owned(&b)));
}

#[test]
fn an_update_that_changes_nothing_keeps_the_generation() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 1, &[]).expect("create");
    let a = member(&store, "g", Assignor::Range, 10_000);
    a.subscribe(&["t".into()]).expect("a");
    let b = member(&store, "g", Assignor::Range, 10_000);
    b.subscribe(&["t".into()])
        .expect("b (gets nothing: one partition)");
    let dir = GroupDir::open(&store, "g").expect("dir");
    let before = dir.read_state().expect("state");
    let word = store.beacon().groups_gen();
    let after = dir.update(|_| Ok(())).expect("no-op update");
    assert_eq!(after.generation, before.generation);
    assert_eq!(
        store.beacon().groups_gen(),
        word,
        "nobody woken for nothing"
    );
}

/// Kafka refuses a commit from outside an active group (UNKNOWN_MEMBER_ID);
/// a consumer with a hand-made assignment is such an outsider, whether the
/// members are embedded or the broker's.
#[test]
fn a_non_member_cannot_commit_for_an_active_group() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 1, &[]).expect("create");
    append(&store, "t", 0, 5);
    let outsider = Consumer::new(
        store.clone(),
        ConsumerConfig {
            group_id: Some("g".into()),
            enable_auto_commit: false,
            auto_create_topics: false,
            ..Default::default()
        },
    )
    .expect("consumer");
    outsider.assign(&[("t".into(), 0)]).expect("assign");
    let commit = |o: i64| outsider.commit(Some(&[("t".into(), 0, o, String::new())]));
    let committed = || {
        store
            .offsets()
            .and_then(|s| s.committed("g", "t", 0))
            .expect("committed")
            .map(|c| c.offset)
    };
    let c = member(&store, "g", Assignor::CooperativeSticky, 10_000);
    c.subscribe(&["t".into()]).expect("join");
    assert_eq!(count(&c), 5);
    c.commit(None).expect("member commits");
    assert!(matches!(commit(1), Err(Error::GroupNotEmpty(_))));
    assert_eq!(committed(), Some(5));
    c.close(false).expect("close");
    commit(1).expect("an empty group takes a simple commit");
    assert_eq!(committed(), Some(1));
    // The broker coordinating the group holds the claim exclusively.
    let claim = ByteLocks::open(&super::claim_path(&store, "g")).expect("claim");
    assert!(claim.try_lock(0, true).expect("broker takes the claim"));
    assert!(matches!(
        commit(2),
        Err(Error::GroupCoordinatedByBroker { .. })
    ));
    assert_eq!(committed(), Some(1));
}
