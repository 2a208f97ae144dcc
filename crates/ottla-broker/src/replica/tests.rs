//! The long poll's wakes: a parked Fetch runs again only when one of its
//! partitions grows (in this process or another), and what an append costs
//! the parked fetches does not grow with their number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::task::JoinHandle;

use crate::dispatch::Session;
use crate::{Broker, BrokerConfig, Shared};
use ottla_client::producer::{Producer, ProducerConfig};
use ottla_storage::store::Store;

fn start() -> (tempfile::TempDir, Broker, Arc<Shared>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store.create_topic("idle", 2, &[]).expect("create idle");
    store.create_topic("busy", 1, &[]).expect("create busy");
    let broker = Broker::start(store, BrokerConfig::default()).expect("start");
    let shared = broker.shared.clone().expect("running");
    (dir, broker, shared)
}

/// A Fetch of `partitions` of `topic` from offset 0 that waits up to a minute
/// for one byte, run on the broker's runtime.
fn park(broker: &Broker, topic: &str, partitions: &[i32]) -> JoinHandle<FetchResponse> {
    let mut t = FetchTopic::default();
    t.topic = TopicName(topic.to_string().into());
    for &p in partitions {
        let mut fp = FetchPartition::default();
        fp.partition = p;
        fp.partition_max_bytes = 1 << 20;
        t.partitions.push(fp);
    }
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = 60_000;
    req.min_bytes = 1;
    req.max_bytes = 1 << 20;
    req.topics.push(t);
    let shared = broker.shared.clone().expect("running");
    let rt = broker.runtime.as_ref().expect("runtime");
    rt.spawn(async move {
        let mut session = Session::new(([127, 0, 0, 1], 0).into());
        crate::api::fetch::handle(&shared, &mut session, req, 4).await
    })
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn producer(store: &Arc<Store>) -> Arc<Producer> {
    Producer::new(store.clone(), ProducerConfig::default()).expect("producer")
}

/// One record to `partition` of `topic`, appended when this returns.
fn append(p: &Producer, topic: &str, partition: u32) {
    p.send(topic, None, Some(b"v"), &[], Some(partition), None)
        .expect("send");
    for c in p.flush() {
        assert!(c.error().is_none(), "{:?}", c.error());
        c.run();
    }
}

/// `n` appends to busy/0, each seen by the wake thread before the next
/// (its head looks move); returns the counters' growth (gather passes, head
/// looks, wakes).
fn appends_elsewhere(shared: &Shared, p: &Producer, n: usize) -> (u64, u64, u64) {
    let (passes0, looks0, wakes0) = shared.replicas.fetch_counters();
    for _ in 0..n {
        let (_, looks, _) = shared.replicas.fetch_counters();
        append(p, "busy", 0);
        wait_for("the wake thread to look", || {
            shared.replicas.fetch_counters().1 > looks
        });
    }
    let (passes, looks, wakes) = shared.replicas.fetch_counters();
    (passes - passes0, looks - looks0, wakes - wakes0)
}

fn records(r: &FetchResponse) -> usize {
    r.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
        .sum()
}

fn answer(broker: &Broker, h: JoinHandle<FetchResponse>) -> FetchResponse {
    let rt = broker.runtime.as_ref().expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .expect("the fetch was not woken")
            .expect("fetch task")
    })
}

#[test]
fn a_parked_fetch_is_not_run_again_by_appends_to_other_partitions() {
    let (_dir, broker, shared) = start();
    let fetch = park(&broker, "idle", &[0]);
    wait_for("the fetch to park", || {
        shared.replicas.waiting_fetches() == 1
    });
    let p = producer(&shared.store);
    let (passes, looks, wakes) = appends_elsewhere(&shared, &p, 30);
    assert_eq!(passes, 0, "appends to busy/0 re-ran a fetch of idle/0");
    assert_eq!(wakes, 0);
    assert!(looks >= 30, "{looks}");
    // An append to its partition wakes it: one more pass, with the record.
    append(&p, "idle", 0);
    let r = answer(&broker, fetch);
    assert!(records(&r) > 0);
    assert_eq!(shared.replicas.fetch_counters().0, 2);
    wait_for("the registration to go", || {
        shared.replicas.waiting_fetches() == 0
            && shared.replicas.watches().watched_partitions() == 0
    });
}

#[test]
fn an_append_by_another_store_wakes_a_parked_fetch() {
    let (dir, broker, shared) = start();
    let fetch = park(&broker, "idle", &[1]);
    wait_for("the fetch to park", || {
        shared.replicas.waiting_fetches() == 1
    });
    // Another Store on the directory: its own logs and mappings, as
    // another process (an embedded producer) has.
    let other = Store::open(dir.path()).expect("other store");
    let p = producer(&other);
    append(&p, "idle", 0);
    append(&p, "busy", 0);
    append(&p, "idle", 1);
    let r = answer(&broker, fetch);
    assert!(records(&r) > 0);
    assert_eq!(shared.replicas.waiting_fetches(), 0);
}

#[test]
fn what_an_append_costs_parked_fetches_does_not_grow_with_their_number() {
    let (_dir, broker, shared) = start();
    let p = producer(&shared.store);
    let mut costs = Vec::new();
    let mut fetches = Vec::new();
    for n in [1usize, 50] {
        while fetches.len() < n {
            fetches.push(park(&broker, "idle", &[0, 1]));
        }
        wait_for("the fetches to park", || {
            shared.replicas.waiting_fetches() == n
        });
        costs.push(appends_elsewhere(&shared, &p, 20));
    }
    for &(passes, looks, wakes) in &costs {
        assert_eq!((passes, wakes), (0, 0), "{costs:?}");
        // Each pass of the wake thread looks at the 2 watched partitions
        // once, however many fetches watch them (20 appends, a pass or
        // two more when it starts watching).
        assert!((40..=48).contains(&looks), "{costs:?}");
    }
    // Both partitions grow: every fetch is answered.
    append(&p, "idle", 0);
    for f in fetches {
        assert!(records(&answer(&broker, f)) > 0);
    }
    assert_eq!(shared.replicas.waiting_fetches(), 0);
}

#[test]
fn an_append_between_the_look_and_the_registration_wakes_the_fetch() {
    let (_dir, broker, shared) = start();
    let log = shared.store.partition_by_name("idle", 0).expect("log");
    let end = log.high_watermark().expect("end");
    let p = producer(&shared.store);
    // The look saw `end`; an append lands before the fetch registers (the
    // wake thread is not watching: nothing is parked).
    append(&p, "idle", 0);
    let mut looked = super::Looked::default();
    looked.saw(log.clone(), end);
    let parked = shared.replicas.watches().park(looked);
    let rt = broker.runtime.as_ref().expect("runtime");
    let woke =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), parked.woken()).await });
    assert!(woke.is_ok(), "the fetch was not woken");
    drop(parked);
    // Registered with what it saw, while the thread watches: an append wakes it.
    let mut looked = super::Looked::default();
    looked.saw(log.clone(), log.high_watermark().expect("end"));
    let parked = shared.replicas.watches().park(looked);
    std::thread::sleep(Duration::from_millis(20));
    append(&p, "idle", 0);
    let woke =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), parked.woken()).await });
    assert!(woke.is_ok(), "the fetch was not woken");
}

#[test]
fn deleting_a_watched_topic_wakes_its_fetches() {
    let (_dir, broker, shared) = start();
    let fetch = park(&broker, "idle", &[0, 1]);
    wait_for("the fetch to park", || {
        shared.replicas.waiting_fetches() == 1
    });
    shared.store.delete_topic("idle").expect("delete");
    let r = answer(&broker, fetch);
    assert!(r.responses[0]
        .partitions
        .iter()
        .all(|p| p.error_code == crate::errors::code::UNKNOWN_TOPIC_OR_PARTITION));
    assert_eq!(shared.replicas.watches().watched_partitions(), 0);
}

#[test]
fn a_leader_wakes_the_fetches_parked_on_its_partition_without_the_wake_thread() {
    let (_dir, broker, shared) = start();
    let log = shared.store.partition_by_name("idle", 0).expect("log");
    let other = shared.store.partition_by_name("idle", 1).expect("log");
    // Watches no wake thread serves: only `wake_partition` can wake them.
    let watches = Arc::new(super::wake::Watches::default());
    let park = |log: &Arc<ottla_storage::log::PartitionLog>, log_end: bool| {
        let mut looked = super::Looked::default();
        if log_end {
            looked.saw_log_end(log.clone(), log.log_end_offset().expect("end"));
        } else {
            looked.saw(log.clone(), log.high_watermark().expect("hw"));
        }
        watches.park(looked)
    };
    let follower = park(&log, true);
    let consumer = park(&log, false);
    let elsewhere = park(&other, true);
    let p = producer(&shared.store);
    append(&p, "idle", 0);
    // Nothing looked at the partitions yet: nobody woken.
    let rt = broker.runtime.as_ref().expect("runtime");
    let soon = |parked: &super::wake::Parked| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), parked.woken())
                .await
                .is_ok()
        })
    };
    assert!(!soon(&follower), "woken with no one to wake it");
    watches.wake_partition(&log);
    assert!(soon(&follower), "the follower's fetch was not woken");
    assert!(soon(&consumer), "the consumer's fetch was not woken");
    watches.wake_partition(&other);
    assert!(
        !soon(&elsewhere),
        "a fetch of a partition that did not grow woke"
    );
    drop((follower, consumer, elsewhere));
    assert_eq!(watches.waiting(), 0);
}
