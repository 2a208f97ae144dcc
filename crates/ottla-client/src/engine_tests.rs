//! Behaviour tests for the engine above the partition log: `Store` (topics
//! and their metadata), `Producer`, `Consumer` and `OffsetStore`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consumer::{Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use crate::partitioner::partition_for_key;
use crate::producer::{Completions, Producer, ProducerConfig, SendReceipt};
use ottla_record::BatchBuilder;
use ottla_storage::error::Error;
use ottla_storage::log::{now_ms, Durability};
use ottla_storage::offsets::{OffsetStore, OFFSETS_TOPIC};
use ottla_storage::store::{Store, Topic};

// ---------------------------------------------------------------- helpers

fn open_store() -> (tempfile::TempDir, Arc<Store>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path()).expect("open store");
    (tmp, store)
}

fn cfg(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn producer(store: &Arc<Store>, linger_ms: u64, batch_size: usize) -> Arc<Producer> {
    Producer::new(
        store.clone(),
        ProducerConfig {
            linger_ms,
            batch_size,
            auto_create_topics: false,
            ..Default::default()
        },
    )
    .expect("producer")
}

/// Flush and wait for every completion; panics on a failed batch.
fn flush(p: &Producer) {
    for c in p.flush() {
        assert!(c.error().is_none(), "batch failed: {:?}", c.error());
        c.run();
    }
}

/// The offset a sent record got (its batch must be done).
fn offset_of(r: &SendReceipt) -> i64 {
    match r.batch.result() {
        Some(Ok(base)) => base + r.index as i64,
        other => panic!("record not acknowledged: {other:?}"),
    }
}

fn consumer(store: &Arc<Store>, group: Option<&str>, reset: OffsetReset) -> Consumer {
    Consumer::new(
        store.clone(),
        ConsumerConfig {
            group_id: group.map(str::to_string),
            auto_offset_reset: reset,
            enable_auto_commit: false,
            auto_create_topics: false,
            ..Default::default()
        },
    )
    .expect("consumer")
}

/// (topic, partition, offset, key, value) of one consumed record.
type Got = (String, u32, i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn drain(c: &Consumer, max: usize) -> Vec<Got> {
    let mut out = Vec::new();
    c.drain(max, &mut |tp, r| {
        out.push((
            tp.topic.to_string(),
            tp.partition,
            r.offset,
            r.key.map(<[u8]>::to_vec),
            r.value.map(<[u8]>::to_vec),
        ))
    })
    .expect("drain");
    out
}

fn drain_all(c: &Consumer) -> Vec<Got> {
    let mut out = Vec::new();
    loop {
        let got = drain(c, 1000);
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

fn text(b: &Option<Vec<u8>>) -> String {
    String::from_utf8(b.clone().expect("present")).expect("utf-8")
}

/// Append `n` single-record batches straight to a partition log.
fn append_direct(store: &Store, topic: &str, partition: u32, n: usize, tag: &str) {
    let log = store
        .partition_by_name(topic, partition)
        .expect("partition log");
    for i in 0..n {
        let mut b = BatchBuilder::with_capacity(128);
        let v = format!("{tag}-{i}");
        b.append(now_ms(), None, Some(v.as_bytes()), &[]);
        log.append(b.finish_mut(), Durability::PageCache)
            .expect("append");
    }
}

fn meta_file(root: &Path, topic: &str) -> String {
    std::fs::read_to_string(root.join(".ottla").join("topics").join(topic))
        .expect("read topic metadata file")
}

// ------------------------------------------------------------------ store

#[test]
fn store_is_shared_per_directory() {
    let (tmp, store) = open_store();
    let again = Store::open(&tmp.path().join(".")).expect("open again");
    assert!(Arc::ptr_eq(&store, &again));
    let other = tempfile::tempdir().expect("tempdir");
    let different = Store::open(other.path()).expect("open other");
    assert!(!Arc::ptr_eq(&store, &different));
}

#[test]
fn create_list_and_delete_topics() {
    let (tmp, store) = open_store();
    assert!(store.list_topics(false).expect("list").is_empty());
    let t = store
        .create_topic("orders", 3, &cfg(&[("retention_ms", "60000")]))
        .expect("create");
    assert_eq!(t.partitions, 3);
    assert_eq!(t.config.retention_ms, 60_000);
    store
        .create_topic("audit.log_v2-x", 1, &[])
        .expect("create");
    assert_eq!(
        store.list_topics(false).expect("list"),
        vec!["audit.log_v2-x".to_string(), "orders".to_string()]
    );
    for p in 0..3 {
        assert!(tmp.path().join(format!("orders-{p}")).is_dir());
    }
    assert!(matches!(
        store.create_topic("orders", 1, &[]),
        Err(Error::TopicAlreadyExists(_))
    ));
    assert!(matches!(
        store.create_topic("zero", 0, &[]),
        Err(Error::InvalidPartitions(_))
    ));
    assert!(matches!(
        store.create_topic("badcfg", 1, &cfg(&[("no.such.key", "1")])),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        store.create_topic("badval", 1, &cfg(&[("retention.ms", "soon")])),
        Err(Error::InvalidConfig(_))
    ));
    // Failed creates leave nothing behind.
    assert_eq!(store.list_topics(false).expect("list").len(), 2);
    assert!(!tmp.path().join("zero-0").exists());
    assert!(!tmp.path().join("badcfg-0").exists());

    // Internal topics are hidden unless asked for.
    store.offsets().expect("offsets store");
    assert!(!store
        .list_topics(false)
        .expect("list")
        .contains(&OFFSETS_TOPIC.to_string()));
    assert!(store
        .list_topics(true)
        .expect("list")
        .contains(&OFFSETS_TOPIC.to_string()));

    // Delete: the log refuses appends, the files and metadata go.
    append_direct(&store, "orders", 1, 5, "x");
    let log = store.partition_by_name("orders", 1).expect("log");
    store.delete_topic("orders").expect("delete");
    assert!(store.topic("orders").expect("lookup").is_none());
    assert!(!tmp.path().join("orders-1").exists());
    assert!(!tmp.path().join(".ottla/topics/orders").exists());
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, None, Some(b"late"), &[]);
    assert!(matches!(
        log.append(b.finish_mut(), Durability::PageCache),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(matches!(
        store.delete_topic("orders"),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(matches!(
        store.partition_by_name("orders", 0),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    // Re-created under the same name, it starts empty.
    let t = store.create_topic("orders", 2, &[]).expect("re-create");
    let log = store.partition(&t, 1).expect("new log");
    assert_eq!(log.offsets().expect("offsets"), (0, 0));
    assert_eq!(t.config.retention_ms, 7 * 24 * 3600 * 1000);
    // Nothing left in the data directory but topics, partitions and metadata.
    for e in std::fs::read_dir(tmp.path()).expect("list root") {
        let name = e.expect("entry").file_name().to_string_lossy().to_string();
        assert!(!name.ends_with("-delete"), "leftover grave {name}");
    }
}

#[test]
fn invalid_topic_names_are_rejected_everywhere() {
    let (tmp, store) = open_store();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let store_in = Store::open(&outside.join("data")).expect("nested store");
    let bad = [
        "../x",
        "a/b",
        ".",
        "..",
        "",
        "a b",
        "/abs",
        "x\0y",
        "ü",
        &"x".repeat(250),
    ];
    for name in bad {
        let invalid = |r: Result<_, Error>, what: &str| match r {
            Err(Error::InvalidTopic { .. }) => {}
            Err(e) => panic!("{what}({name:?}): wrong error {e:?}"),
            Ok(_) => panic!("{what}({name:?}) was accepted"),
        };
        invalid(
            store_in.create_topic(name, 1, &[]).map(|_| ()),
            "create_topic",
        );
        invalid(store_in.topic(name).map(|_| ()), "topic");
        invalid(
            store_in.topic_or_create(name, true, 1).map(|_| ()),
            "topic_or_create",
        );
        invalid(store_in.delete_topic(name), "delete_topic");
        invalid(
            store_in.create_partitions(name, 2).map(|_| ()),
            "create_partitions",
        );
        invalid(
            store_in
                .alter_topic_config(name, &[("retention.ms".into(), Some("1".into()))])
                .map(|_| ()),
            "alter_topic_config",
        );
        invalid(store_in.partition_by_name(name, 0).map(|_| ()), "partition");
    }
    // Nothing was created outside (or inside) the data directory.
    let names: Vec<String> = std::fs::read_dir(&outside)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["data".to_string()]);
    assert!(store_in.list_topics(true).expect("list").is_empty());
    // A consumer refuses them too.
    let c = consumer(&store, None, OffsetReset::Earliest);
    assert!(matches!(
        c.subscribe(&["../x".to_string()]),
        Err(Error::InvalidTopic { .. })
    ));
}

#[test]
fn create_partitions_grows_a_topic() {
    let (tmp, store) = open_store();
    let t = store.create_topic("grow", 1, &[]).expect("create");
    append_direct(&store, "grow", 0, 3, "p0");
    assert!(matches!(
        store.create_partitions("grow", 1),
        Err(Error::InvalidPartitions(_))
    ));
    assert!(matches!(
        store.create_partitions("nope", 3),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(matches!(
        store.partition(&t, 1),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    let t = store.create_partitions("grow", 4).expect("grow");
    assert_eq!(t.partitions, 4);
    assert_eq!(
        store
            .topic("grow")
            .expect("topic")
            .expect("exists")
            .partitions,
        4
    );
    assert!(meta_file(tmp.path(), "grow").contains("partitions=4"));
    for p in 1..4 {
        assert!(tmp.path().join(format!("grow-{p}")).is_dir());
        let log = store.partition(&t, p).expect("new partition");
        assert_eq!(log.offsets().expect("offsets"), (0, 0));
    }
    // The existing partition kept its data.
    let log = store.partition(&t, 0).expect("p0");
    assert_eq!(log.offsets().expect("offsets"), (0, 3));

    // A producer with the old partition count sees the new partitions.
    let p = producer(&store, 1000, 1 << 16);
    let (r, _) = p
        .send("grow", Some(b"k"), Some(b"v"), &[], Some(3), None)
        .expect("send to new partition");
    flush(&p);
    assert_eq!(r.batch.partition, 3);
    assert!(matches!(
        p.send("grow", None, Some(b"v"), &[], Some(4), None),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
}

#[test]
fn alter_topic_config_persists_and_applies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(tmp.path()).expect("store");
        store
            .create_topic("cfg", 1, &cfg(&[("segment.bytes", "1024")]))
            .expect("create");
        append_direct(&store, "cfg", 0, 100, "rec");
        let log = store.partition_by_name("cfg", 0).expect("log");
        let segments = log.segment_count().expect("segments");
        assert!(segments > 4);
        assert_eq!(log.offsets().expect("offsets"), (0, 100));

        // Applying: the open log gets the new config, and retention runs now.
        let t = store
            .alter_topic_config("cfg", &[("retention_bytes".into(), Some("2048".into()))])
            .expect("alter");
        assert_eq!(t.config.retention_bytes, 2048);
        assert_eq!(t.config.segment_bytes, 1024);
        assert_eq!(log.config().retention_bytes, 2048);
        assert!(log.segment_count().expect("segments") < segments);
        let (start, end) = log.offsets().expect("offsets");
        assert!(start > 0);
        assert_eq!(end, 100);

        // Persisting: the metadata file holds every override.
        let meta = meta_file(tmp.path(), "cfg");
        assert!(meta.contains("config.retention.bytes=2048"), "{meta}");
        assert!(meta.contains("config.segment.bytes=1024"), "{meta}");

        // Bad changes are refused and change nothing.
        assert!(matches!(
            store.alter_topic_config("cfg", &[("retention.bytes".into(), Some("lots".into()))]),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            store.alter_topic_config("cfg", &[("no.such".into(), Some("1".into()))]),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            store.alter_topic_config("missing", &[("retention.ms".into(), Some("1".into()))]),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        assert_eq!(meta_file(tmp.path(), "cfg"), meta);
        assert_eq!(log.config().retention_bytes, 2048);
    }
    // Reopened (a new Store: the old one is gone), the config is still there.
    let store = Store::open(tmp.path()).expect("reopen store");
    let t = store.topic("cfg").expect("topic").expect("exists");
    assert_eq!(t.config.retention_bytes, 2048);
    assert_eq!(t.config.segment_bytes, 1024);
    // Removing an override brings back the default.
    let t = store
        .alter_topic_config("cfg", &[("retention.bytes".into(), None)])
        .expect("remove override");
    assert_eq!(t.config.retention_bytes, -1);
    assert!(!meta_file(tmp.path(), "cfg").contains("retention.bytes"));
    let log = store.partition(&t, 0).expect("log");
    assert_eq!(log.config().retention_bytes, -1);
}

#[test]
fn topic_or_create_auto_creates() {
    let (_tmp, store) = open_store();
    assert!(matches!(
        store.topic_or_create("auto", false, 3),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(store.topic("auto").expect("lookup").is_none());
    let t = store.topic_or_create("auto", true, 3).expect("auto-create");
    assert_eq!(t.partitions, 3);
    // A second call finds it, whatever partition count it asks for.
    let t = store.topic_or_create("auto", true, 7).expect("exists");
    assert_eq!(t.partitions, 3);

    // Producers auto-create with their num_partitions, consumers with theirs.
    let p = Producer::new(
        store.clone(),
        ProducerConfig {
            num_partitions: 2,
            ..Default::default()
        },
    )
    .expect("producer");
    assert_eq!(p.partitions_for("made-by-producer").expect("partitions"), 2);
    let strict = producer(&store, 5, 1024);
    assert!(matches!(
        strict.send("not-there", None, Some(b"v"), &[], None, None),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    // A consumer creates nothing unless asked (`allow.auto.create.topics`):
    // a subscription waits, an assignment fails.
    let c = Consumer::new(store.clone(), ConsumerConfig::default()).expect("consumer");
    c.subscribe(&["not-made".to_string()]).expect("subscribe");
    assert!(c.assignment().is_empty());
    assert!(matches!(
        c.assign(&[("not-made".to_string(), 0)]),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(store.topic("not-made").expect("read metadata").is_none());
    let c = Consumer::new(
        store.clone(),
        ConsumerConfig {
            num_partitions: 4,
            auto_create_topics: true,
            ..Default::default()
        },
    )
    .expect("consumer");
    c.subscribe(&["made-by-consumer".to_string()])
        .expect("subscribe");
    assert_eq!(c.assignment().len(), 4);
    assert_eq!(
        store
            .topic("made-by-consumer")
            .expect("topic")
            .expect("exists")
            .partitions,
        4
    );
}

// --------------------------------------------------------------- producer

#[test]
fn keyed_records_land_on_murmur2_partitions() {
    let (_tmp, store) = open_store();
    store.create_topic("keyed", 5, &[]).expect("create");
    let p = producer(&store, 1000, 1 << 20);
    let mut sent = Vec::new();
    for i in 0..200 {
        let key = format!("key-{i}");
        let value = format!("value-{i}");
        let (r, _) = p
            .send(
                "keyed",
                Some(key.as_bytes()),
                Some(value.as_bytes()),
                &[],
                None,
                None,
            )
            .expect("send");
        assert_eq!(r.batch.partition, partition_for_key(key.as_bytes(), 5));
        sent.push((key, r));
    }
    flush(&p);
    let used: HashSet<u32> = sent.iter().map(|(_, r)| r.batch.partition).collect();
    assert_eq!(used.len(), 5, "200 keys should reach every partition");

    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&(0..5).map(|p| ("keyed".to_string(), p)).collect::<Vec<_>>())
        .expect("assign");
    let got = drain_all(&c);
    assert_eq!(got.len(), 200);
    let by_key: HashMap<String, (u32, i64)> =
        got.iter().map(|g| (text(&g.3), (g.1, g.2))).collect();
    for (key, r) in &sent {
        let (part, off) = by_key[key];
        assert_eq!(part, partition_for_key(key.as_bytes(), 5));
        assert_eq!(off, offset_of(r));
    }
    // The same key always goes to the same partition, in send order.
    let (r1, _) = p
        .send("keyed", Some(b"same"), Some(b"1"), &[], None, None)
        .expect("send");
    let (r2, _) = p
        .send("keyed", Some(b"same"), Some(b"2"), &[], None, None)
        .expect("send");
    flush(&p);
    assert_eq!(r1.batch.partition, r2.batch.partition);
    assert_eq!(offset_of(&r2), offset_of(&r1) + 1);
}

#[test]
fn unkeyed_records_are_sticky_per_batch() {
    let (_tmp, store) = open_store();
    store.create_topic("sticky", 4, &[]).expect("create");
    // A large batch: everything sticks to one partition.
    let p = producer(&store, 10_000, 1 << 20);
    let receipts: Vec<SendReceipt> = (0..50)
        .map(|i| {
            p.send(
                "sticky",
                None,
                Some(format!("v{i}").as_bytes()),
                &[],
                None,
                None,
            )
            .expect("send")
            .0
        })
        .collect();
    let first = receipts[0].batch.partition;
    assert!(receipts.iter().all(|r| r.batch.partition == first));
    assert!(receipts
        .iter()
        .all(|r| Arc::ptr_eq(&r.batch, &receipts[0].batch)));
    flush(&p);
    let offsets: Vec<i64> = receipts.iter().map(offset_of).collect();
    assert_eq!(offsets, (0..50).collect::<Vec<_>>());

    // Small batches: each full batch moves the sticky partition on.
    let p = producer(&store, 10_000, 300);
    let mut receipts = Vec::new();
    let mut ready = false;
    for i in 0..60 {
        let (r, r_ready) = p
            .send(
                "sticky",
                None,
                Some(format!("value-{i:04}-xxxxxxxxxxxxxxxxxxxx").as_bytes()),
                &[],
                None,
                None,
            )
            .expect("send");
        ready |= r_ready;
        receipts.push(r);
    }
    assert!(ready, "full batches are reported ready");
    for c in p.flush_ready() {
        c.run();
    }
    flush(&p);
    let mut batches: Vec<Arc<crate::producer::BatchHandle>> = Vec::new();
    for r in &receipts {
        if !batches.iter().any(|b| Arc::ptr_eq(b, &r.batch)) {
            batches.push(r.batch.clone());
        }
    }
    assert!(
        batches.len() > 3,
        "expected several batches, got {}",
        batches.len()
    );
    for w in batches.windows(2) {
        assert_eq!(
            w[1].partition,
            (w[0].partition + 1) % 4,
            "sticky partition moves to the next one per batch"
        );
    }
    // Records of one batch are consecutive and on one partition.
    for b in &batches {
        let mine: Vec<i64> = receipts
            .iter()
            .filter(|r| Arc::ptr_eq(&r.batch, b))
            .map(offset_of)
            .collect();
        assert!(mine.windows(2).all(|w| w[1] == w[0] + 1));
    }
}

#[test]
fn linger_flushes_without_explicit_flush() {
    let (_tmp, store) = open_store();
    store.create_topic("linger", 1, &[]).expect("create");
    let p = producer(&store, 20, 1 << 20);
    let (r, ready) = p
        .send("linger", Some(b"k"), Some(b"v"), &[], None, None)
        .expect("send");
    assert!(!ready);
    let (r2, _) = p
        .send("linger", Some(b"k"), Some(b"v2"), &[], None, Some(1234))
        .expect("send");
    let t = Instant::now();
    while !r.batch.is_done() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(r.batch.is_done(), "linger did not flush within 2 s");
    assert_eq!(offset_of(&r), 0);
    assert_eq!(offset_of(&r2), 1);
    assert_eq!(r2.timestamp, 1234);
    let log = store.partition_by_name("linger", 0).expect("log");
    assert_eq!(log.offsets().expect("offsets"), (0, 2));

    // Callbacks run once the batch is done, and at once after.
    let (r3, _) = p
        .send("linger", None, Some(b"v3"), &[], None, None)
        .expect("send");
    let (tx, rx) = std::sync::mpsc::channel();
    r3.batch.on_complete(Box::new(move |res| {
        tx.send(res.as_ref().map(|b| *b).map_err(|e| e.to_string()))
            .expect("send result");
    }));
    let res = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("callback ran after linger");
    assert_eq!(res, Ok(2));
    assert!(r3.batch.wait(Some(Duration::from_millis(1))));

    // Closing flushes what is pending and refuses further sends.
    let slow = producer(&store, 60_000, 1 << 20);
    let (r4, _) = slow
        .send("linger", None, Some(b"v4"), &[], None, None)
        .expect("send");
    assert!(!r4.batch.is_done());
    for c in slow.close() {
        c.run();
    }
    assert_eq!(offset_of(&r4), 3);
    assert!(matches!(
        slow.send("linger", None, Some(b"v5"), &[], None, None),
        Err(Error::Closed(_))
    ));
}

#[test]
fn record_too_large_is_refused() {
    let (_tmp, store) = open_store();
    store
        .create_topic("small", 1, &cfg(&[("max.message.bytes", "1000")]))
        .expect("create");
    let p = producer(&store, 5, 1 << 20);
    match p.send("small", None, Some(&[7u8; 2000]), &[], None, None) {
        Err(Error::RecordTooLarge { size, max }) => {
            assert!(size > 2000);
            assert_eq!(max, 1000);
        }
        other => panic!("expected RecordTooLarge, got {:?}", other.map(|_| ())),
    }
    // A record that fits is fine, and batches stay under the limit.
    let mut receipts = Vec::new();
    for _ in 0..10 {
        receipts.push(
            p.send("small", None, Some(&[1u8; 600]), &[], None, None)
                .expect("send")
                .0,
        );
    }
    flush(&p);
    let log = store.partition_by_name("small", 0).expect("log");
    assert_eq!(log.offsets().expect("offsets"), (0, 10));
    let f = log.read(0, 1 << 20, &mut None, true).expect("read");
    for (h, _) in ottla_record::batch::Batches::new(&f.bytes) {
        assert!(h.total_size() <= 1000, "batch of {} bytes", h.total_size());
    }
}

// --------------------------------------------------------------- consumer

#[test]
fn drain_is_round_robin_across_partitions() {
    let (_tmp, store) = open_store();
    store.create_topic("rr", 3, &[]).expect("create");
    let p = producer(&store, 60_000, 1 << 20);
    // Three batches of ten records on each partition.
    for round in 0..3 {
        for part in 0..3u32 {
            for i in 0..10 {
                p.send(
                    "rr",
                    None,
                    Some(format!("p{part}-{}", round * 10 + i).as_bytes()),
                    &[],
                    Some(part),
                    None,
                )
                .expect("send");
            }
        }
        flush(&p);
    }
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&(0..3).map(|p| ("rr".to_string(), p)).collect::<Vec<_>>())
        .expect("assign");
    let mut order = Vec::new();
    let mut all = Vec::new();
    for _ in 0..100 {
        let got = drain(&c, 4);
        if got.is_empty() {
            break;
        }
        assert!(got.len() <= 4);
        order.extend(got.iter().map(|g| g.1));
        all.extend(got);
    }
    assert_eq!(all.len(), 90);
    // No partition waits for another to be drained: all three are served
    // within the first batch's worth from each.
    let early: HashSet<u32> = order[..12].iter().copied().collect();
    assert_eq!(early.len(), 3, "partitions served unfairly: {order:?}");
    let mut run = 1;
    for w in order.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 1 };
        assert!(
            run <= 8,
            "one partition served {run} times in a row: {order:?}"
        );
    }
    // Per partition, every record once and in order.
    let mut per: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for g in &all {
        per.entry(g.1).or_default().push(g.2);
        assert_eq!(text(&g.4), format!("p{}-{}", g.1, g.2));
    }
    for offs in per.values() {
        assert_eq!(offs, &(0..30).collect::<Vec<_>>());
    }
    // Paused partitions are skipped; positions still tracked.
    c.seek_to(&[], true).expect("seek to beginning");
    c.set_paused(&[("rr".to_string(), 1)], true).expect("pause");
    let got = drain_all(&c);
    assert_eq!(got.len(), 60);
    assert!(got.iter().all(|g| g.1 != 1));
    assert_eq!(c.paused(), vec![TopicPartition::new(Arc::from("rr"), 1)]);
    c.set_paused(&[("rr".to_string(), 1)], false)
        .expect("resume");
    assert_eq!(drain_all(&c).len(), 30);
}

#[test]
fn seek_position_commit_and_committed() {
    let (_tmp, store) = open_store();
    store.create_topic("t", 2, &[]).expect("create");
    append_direct(&store, "t", 0, 20, "r");
    let c = consumer(&store, Some("g"), OffsetReset::Earliest);
    c.assign(&[("t".to_string(), 0)]).expect("assign");
    assert_eq!(c.committed("t", 0).expect("committed"), None);
    assert_eq!(c.position("t", 0).expect("position"), 0);
    let got = drain(&c, 5);
    assert_eq!(
        got.iter().map(|g| g.2).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(c.position("t", 0).expect("position"), 5);
    c.commit(None).expect("commit");
    assert_eq!(c.committed("t", 0).expect("committed"), Some(5));
    let offsets = store.offsets().expect("offset store");
    let cm = offsets
        .committed("g", "t", 0)
        .expect("committed")
        .expect("present");
    assert_eq!(cm.offset, 5);
    assert!(cm.timestamp > 0);

    c.seek("t", 0, 12).expect("seek");
    assert_eq!(c.position("t", 0).expect("position"), 12);
    let got = drain(&c, 3);
    assert_eq!(
        got.iter().map(|g| g.2).collect::<Vec<_>>(),
        vec![12, 13, 14]
    );
    assert_eq!(text(&got[0].4), "r-12");
    c.commit(Some(&[("t".to_string(), 0, 17, "meta".to_string())]))
        .expect("explicit commit");
    assert_eq!(c.committed("t", 0).expect("committed"), Some(17));
    let cm = offsets
        .committed("g", "t", 0)
        .expect("committed")
        .expect("present");
    assert_eq!(cm.metadata, "meta");

    // Errors: unassigned partitions, negative offsets, commits without a group.
    assert!(matches!(c.position("t", 1), Err(Error::IllegalState(_))));
    assert!(matches!(c.seek("t", 1, 0), Err(Error::IllegalState(_))));
    assert!(c.seek("t", 0, -1).is_err());
    let anon = consumer(&store, None, OffsetReset::Earliest);
    assert!(matches!(anon.commit(None), Err(Error::IllegalState(_))));
    assert_eq!(anon.committed("t", 0).expect("no group"), None);

    // A later member of the group starts from the committed offset.
    c.close(false).expect("close");
    assert!(matches!(c.position("t", 0), Err(Error::Closed(_))));
    let c2 = consumer(&store, Some("g"), OffsetReset::Earliest);
    c2.assign(&[("t".to_string(), 0)]).expect("assign");
    assert_eq!(c2.position("t", 0).expect("position"), 17);
    assert_eq!(drain_all(&c2).first().map(|g| g.2), Some(17));

    // Seeking past the end resets by auto_offset_reset.
    c2.seek("t", 0, 1000).expect("seek past end");
    let got = drain(&c2, 1);
    assert_eq!(got.first().map(|g| g.2), Some(0));
}

#[test]
fn auto_offset_reset_earliest_latest_none() {
    let (_tmp, store) = open_store();
    store.create_topic("reset", 1, &[]).expect("create");
    append_direct(&store, "reset", 0, 10, "old");
    let tp = [("reset".to_string(), 0)];

    let earliest = consumer(&store, Some("ge"), OffsetReset::Earliest);
    earliest.assign(&tp).expect("assign");
    assert_eq!(earliest.position("reset", 0).expect("position"), 0);

    let latest = consumer(&store, Some("gl"), OffsetReset::Latest);
    latest.assign(&tp).expect("assign");
    assert_eq!(latest.position("reset", 0).expect("position"), 10);
    assert!(drain(&latest, 100).is_empty());

    let none = consumer(&store, Some("gn"), OffsetReset::None);
    none.assign(&tp).expect("assign");
    assert!(matches!(
        none.position("reset", 0),
        Err(Error::NoOffsetForPartition { .. })
    ));
    let mut called = false;
    assert!(matches!(
        none.drain(10, &mut |_, _| called = true),
        Err(Error::NoOffsetForPartition { .. })
    ));
    assert!(!called);
    // With a committed offset, 'none' is fine; past the end it is an error.
    none.commit(Some(&[("reset".to_string(), 0, 4, String::new())]))
        .expect("commit");
    assert_eq!(none.position("reset", 0).expect("position"), 4);
    assert_eq!(drain(&none, 100).len(), 6);
    none.seek("reset", 0, 50).expect("seek");
    let mut count = 0;
    assert!(matches!(
        none.drain(10, &mut |_, _| count += 1),
        Err(Error::OffsetOutOfRange { .. })
    ));

    append_direct(&store, "reset", 0, 5, "new");
    let got = drain_all(&latest);
    assert_eq!(
        got.iter().map(|g| g.2).collect::<Vec<_>>(),
        (10..15).collect::<Vec<_>>()
    );
    assert_eq!(text(&got[0].4), "new-0");
    assert_eq!(drain_all(&earliest).len(), 15);

    // wait() reports data as soon as there is some.
    assert!(!latest.wait(Duration::from_millis(20)).expect("wait"));
    append_direct(&store, "reset", 0, 1, "more");
    assert!(latest.wait(Duration::from_secs(2)).expect("wait"));
}

#[test]
fn consumer_resets_when_retention_passes_its_position() {
    let (_tmp, store) = open_store();
    store
        .create_topic(
            "ret",
            1,
            &cfg(&[("segment.bytes", "1024"), ("retention.bytes", "2048")]),
        )
        .expect("create");
    let early = consumer(&store, None, OffsetReset::Earliest);
    let strict = consumer(&store, None, OffsetReset::None);
    for c in [&early, &strict] {
        c.assign(&[("ret".to_string(), 0)]).expect("assign");
        c.seek("ret", 0, 0).expect("seek");
    }
    append_direct(&store, "ret", 0, 200, "r");
    let (start, end) = early.watermarks("ret", 0).expect("watermarks");
    assert!(start > 0);
    let got = drain_all(&early);
    assert_eq!(got.first().map(|g| g.2), Some(start));
    assert_eq!(got.len() as i64, end - start);
    let mut called = false;
    match strict.drain(10, &mut |_, _| called = true) {
        Err(Error::OffsetOutOfRange {
            offset, start: s, ..
        }) => {
            assert_eq!(offset, 0);
            assert_eq!(s, start);
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(!called);
}

#[test]
fn second_member_of_a_group_joins_and_the_partitions_are_split() {
    let (_tmp, store) = open_store();
    store.create_topic("grp", 4, &[]).expect("create");
    let a = consumer(&store, Some("workers"), OffsetReset::Earliest);
    a.subscribe(&["grp".to_string()]).expect("first member");
    assert_eq!(a.assignment().len(), 4);
    let b = consumer(&store, Some("workers"), OffsetReset::Earliest);
    b.subscribe(&["grp".to_string()])
        .expect("second member joins");
    // b is assigned two partitions but may only take them once a has let
    // go, which a does in its next drain (its polling thread).
    assert!(b.assignment().is_empty());
    drain(&a, 10);
    drain(&b, 10);
    let mut sa = a.assignment();
    let mut sb = b.assignment();
    assert_eq!((sa.len(), sb.len()), (2, 2));
    sa.append(&mut sb);
    sa.sort();
    sa.dedup();
    assert_eq!(sa.len(), 4, "every partition has exactly one owner");
    // Another group, or no group, is independent.
    let other = consumer(&store, Some("others"), OffsetReset::Earliest);
    other.subscribe(&["grp".to_string()]).expect("other group");
    assert_eq!(other.assignment().len(), 4);
    let anon = consumer(&store, None, OffsetReset::Earliest);
    anon.subscribe(&["grp".to_string()]).expect("no group");
    assert_eq!(anon.assignment().len(), 4);
    // Group ids that are not file-name safe do not collide or escape.
    let odd = consumer(&store, Some("../workers"), OffsetReset::Earliest);
    odd.subscribe(&["grp".to_string()]).expect("odd group id");
    assert_eq!(odd.assignment().len(), 4);
    // When a leaves, b takes everything at once.
    a.close(false).expect("close");
    drain(&b, 10);
    assert_eq!(b.assignment().len(), 4);
    b.unsubscribe().expect("unsubscribe");
    assert!(b.assignment().is_empty());
    let c = consumer(&store, Some("workers"), OffsetReset::Earliest);
    c.subscribe(&["grp".to_string()])
        .expect("join after unsubscribe");
    assert_eq!(c.assignment().len(), 4);
}

#[test]
fn subscription_follows_new_partitions() {
    let (_tmp, store) = open_store();
    store.create_topic("sub", 1, &[]).expect("create");
    let c = consumer(&store, Some("g"), OffsetReset::Earliest);
    c.subscribe(&["sub".to_string()]).expect("subscribe");
    assert_eq!(c.assignment().len(), 1);
    store.create_partitions("sub", 3).expect("grow");
    append_direct(&store, "sub", 2, 3, "x");
    let got = drain_all(&c);
    assert_eq!(c.assignment().len(), 3);
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.1 == 2));
}

// ------------------------------------------------------------ offset store

#[test]
fn offset_store_commits_are_shared_and_durable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(tmp.path()).expect("store");
        let offsets = store.offsets().expect("offsets");
        assert!(Arc::ptr_eq(&offsets, &store.offsets().expect("again")));
        offsets
            .commit(
                "g1",
                &[
                    ("b".into(), 1, 10, "m1".into()),
                    ("a".into(), 0, 5, String::new()),
                ],
                Durability::Fsync,
            )
            .expect("commit");
        offsets
            .commit(
                "g2",
                &[("a".into(), 0, 99, String::new())],
                Durability::PageCache,
            )
            .expect("commit");
        offsets
            .commit(
                "g1",
                &[("a".into(), 0, 6, String::new())],
                Durability::PageCache,
            )
            .expect("commit again");
        offsets
            .commit("g3", &[], Durability::PageCache)
            .expect("empty commit");
        assert_eq!(
            offsets
                .committed("g1", "a", 0)
                .expect("committed")
                .map(|c| c.offset),
            Some(6)
        );
        let g1 = offsets.group_offsets("g1").expect("group offsets");
        assert_eq!(
            g1.iter()
                .map(|(t, p, c)| (t.as_str(), *p, c.offset))
                .collect::<Vec<_>>(),
            vec![("a", 0, 6), ("b", 1, 10)]
        );
        assert_eq!(g1[1].2.metadata, "m1");
        assert_eq!(offsets.groups().expect("groups"), vec!["g1", "g2"]);

        // A second OffsetStore on the same directory (as another process
        // would have) reads the same commits from the topic.
        let other = OffsetStore::open(&store).expect("second offset store");
        assert_eq!(
            other
                .committed("g2", "a", 0)
                .expect("committed")
                .map(|c| c.offset),
            Some(99)
        );
        other
            .commit(
                "g2",
                &[("a".into(), 0, 100, String::new())],
                Durability::PageCache,
            )
            .expect("commit from other");
        assert_eq!(
            offsets
                .committed("g2", "a", 0)
                .expect("committed")
                .map(|c| c.offset),
            Some(100)
        );

        assert_eq!(offsets.delete_group("g2").expect("delete group"), 1);
        assert_eq!(offsets.delete_group("nobody").expect("delete none"), 0);
        assert_eq!(offsets.committed("g2", "a", 0).expect("committed"), None);
        assert_eq!(other.committed("g2", "a", 0).expect("committed"), None);
        assert_eq!(offsets.groups().expect("groups"), vec!["g1"]);
    }
    // Everything dropped: a fresh Store reads the commits back.
    let store = Store::open(tmp.path()).expect("reopen");
    let offsets = store.offsets().expect("offsets");
    assert_eq!(offsets.groups().expect("groups"), vec!["g1"]);
    assert_eq!(
        offsets
            .committed("g1", "b", 1)
            .expect("committed")
            .map(|c| (c.offset, c.metadata)),
        Some((10, "m1".to_string()))
    );
}

#[test]
fn idle_consumer_commit_does_not_grow_offsets_topic() {
    let (_tmp, store) = open_store();
    store.create_topic("idle", 1, &[]).expect("create");
    append_direct(&store, "idle", 0, 3, "x");
    let c = consumer(&store, Some("g"), OffsetReset::Earliest);
    c.assign(&[("idle".to_string(), 0)]).expect("assign");
    drain_all(&c);
    c.commit(None).expect("commit");
    let log = store
        .partition_by_name(OFFSETS_TOPIC, 0)
        .expect("offsets log");
    let (_, end) = log.offsets().expect("offsets");
    for _ in 0..5 {
        c.commit(None).expect("commit again");
    }
    assert_eq!(log.offsets().expect("offsets").1, end);
    assert_eq!(c.committed("idle", 0).expect("committed"), Some(3));
}

#[test]
fn producer_to_consumer_end_to_end_with_headers_and_nulls() {
    let (_tmp, store) = open_store();
    store.create_topic("e2e", 2, &[]).expect("create");
    let p = producer(&store, 5, 1 << 20);
    let hs: [ottla_record::HeaderRef<'_>; 2] = [(b"h1", Some(b"v1")), (b"h2", None)];
    let (r1, _) = p
        .send("e2e", Some(b"k"), None, &hs, Some(0), Some(42))
        .expect("send tombstone");
    let (r2, _) = p
        .send("e2e", None, Some(b""), &[], Some(0), None)
        .expect("send empty");
    flush(&p);
    assert_eq!((offset_of(&r1), offset_of(&r2)), (0, 1));
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("e2e".to_string(), 0)]).expect("assign");
    let mut seen = Vec::new();
    c.drain(10, &mut |_, r| {
        let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
            .headers()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        seen.push((
            r.offset,
            r.timestamp,
            r.key.map(<[u8]>::to_vec),
            r.value.map(<[u8]>::to_vec),
            headers,
        ));
    })
    .expect("drain");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].1, 42);
    assert_eq!(seen[0].2.as_deref(), Some(&b"k"[..]));
    assert_eq!(seen[0].3, None);
    assert_eq!(
        seen[0].4,
        vec![
            (b"h1".to_vec(), Some(b"v1".to_vec())),
            (b"h2".to_vec(), None)
        ]
    );
    assert_eq!(seen[1].2, None);
    assert_eq!(seen[1].3.as_deref(), Some(&b""[..]));
    // offset_for_time through the consumer.
    assert_eq!(
        c.offset_for_time("e2e", 0, 0).expect("offset_for_time"),
        Some((0, 42))
    );
    assert_eq!(
        c.offset_for_time("e2e", 0, i64::MAX)
            .expect("offset_for_time"),
        None
    );
}

#[test]
fn sticky_switch_never_overfills_another_partitions_batch() {
    let (_tmp, store) = open_store();
    store
        .create_topic("cap", 2, &cfg(&[("max.message.bytes", "1000")]))
        .expect("create");
    let p = producer(&store, 60_000, 1 << 20);
    let value = [3u8; 100];
    let (first, _) = p
        .send("cap", None, Some(&value), &[], None, None)
        .expect("send unkeyed");
    let sticky = first.batch.partition;
    let other = 1 - sticky;
    // Fill the other partition's open batch close to the limit.
    for _ in 0..8 {
        p.send("cap", None, Some(&value), &[], Some(other), None)
            .expect("send explicit");
    }
    // Overflow the sticky partition: the sticky partition moves to `other`,
    // whose open batch has no room for the record either.
    for _ in 0..12 {
        p.send("cap", None, Some(&value), &[], None, None)
            .expect("send unkeyed");
    }
    flush(&p);
    for part in 0..2 {
        let log = store.partition_by_name("cap", part).expect("log");
        let f = log.read(0, 1 << 20, &mut None, true).expect("read");
        for (h, _) in ottla_record::batch::Batches::new(&f.bytes) {
            assert!(
                h.total_size() <= 1000,
                "partition {part}: batch of {} bytes exceeds max.message.bytes",
                h.total_size()
            );
        }
    }
}

#[test]
fn consumers_on_a_busy_partition_do_not_starve_others() {
    let (_tmp, store) = open_store();
    store.create_topic("busy", 2, &[]).expect("create");
    append_direct(&store, "busy", 0, 50, "busy");
    append_direct(&store, "busy", 1, 1, "quiet");
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("busy".to_string(), 0), ("busy".to_string(), 1)])
        .expect("assign");
    let mut quiet_seen = false;
    for _ in 0..5 {
        // Partition 0 keeps growing while we drain it.
        append_direct(&store, "busy", 0, 5, "more");
        quiet_seen |= drain(&c, 3).iter().any(|g| g.1 == 1);
    }
    assert!(quiet_seen, "partition 1 starved by partition 0");
}

#[test]
fn consumer_hands_out_valid_records_then_reports_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (seg_path, bad_pos, bad_base, bad_next, hw) = {
        let store = Store::open(tmp.path()).expect("store");
        store
            .create_topic("bad", 1, &cfg(&[("segment.bytes", "1024")]))
            .expect("create");
        append_direct(&store, "bad", 0, 60, "r");
        let log = store.partition_by_name("bad", 0).expect("log");
        let hw = log.offsets().expect("offsets").1;
        drop(log);
        // Corrupt the 4th batch of the first (closed) segment.
        let seg = tmp
            .path()
            .join("bad-0")
            .join(ottla_storage::log::segment::log_file_name(0));
        let mut data = std::fs::read(&seg).expect("read segment");
        let mut pos = 0usize;
        let mut spans = Vec::new();
        for (h, _) in ottla_record::batch::Batches::new(&data) {
            spans.push((pos, h));
            pos += h.total_size();
        }
        let (bpos, h) = spans[3];
        data[bpos + h.total_size() - 2] ^= 0x10;
        std::fs::write(&seg, &data).expect("write corrupted");
        (seg, bpos as u64, h.base_offset, h.next_offset(), hw)
    };
    let store = Store::open(tmp.path()).expect("store");
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("bad".to_string(), 0)]).expect("assign");
    let mut got = Vec::new();
    let err = loop {
        let mut batch = Vec::new();
        match c.drain(1000, &mut |_, r| batch.push(r.offset)) {
            Ok(0) => panic!("drain stopped without reporting the corruption"),
            Ok(_) => got.extend(batch),
            Err(e) => {
                got.extend(batch);
                break e;
            }
        }
    };
    assert_eq!(got, (0..bad_base).collect::<Vec<_>>());
    match &err {
        Error::CorruptRecord { path, position, .. } => {
            assert_eq!(path, &seg_path);
            assert_eq!(*position, bad_pos);
        }
        other => panic!("expected CorruptRecord, got {other:?}"),
    }
    // It stays an error (no panic, no skipping) until the caller seeks past.
    assert!(matches!(
        c.drain(1000, &mut |_, _| {}),
        Err(Error::CorruptRecord { .. })
    ));
    c.seek("bad", 0, bad_next).expect("seek past");
    let rest: Vec<i64> = drain_all(&c).iter().map(|g| g.2).collect();
    assert_eq!(rest, (bad_next..hw).collect::<Vec<_>>());
}

/// Every record in one partition's log, as (offset, timestamp, value).
fn log_records(store: &Store, topic: &str, partition: u32) -> Vec<(i64, i64, Option<Vec<u8>>)> {
    let log = store.partition_by_name(topic, partition).expect("log");
    let f = log.read(0, 64 << 20, &mut None, true).expect("read");
    let mut out = Vec::new();
    for (h, batch) in ottla_record::batch::Batches::new(&f.bytes) {
        for r in ottla_record::batch::RecordIter::new(h, &batch[ottla_record::batch::HEADER_LEN..])
        {
            let r = r.expect("record decodes");
            assert_eq!(r.key, None);
            out.push((r.offset, r.timestamp, r.value.map(<[u8]>::to_vec)));
        }
    }
    out
}

#[test]
fn send_values_writes_the_log_send_many_writes() {
    let (_tmp, store) = open_store();
    store.create_topic("bulk", 1, &[]).expect("create");
    store.create_topic("each", 1, &[]).expect("create");
    let owned: Vec<Option<Vec<u8>>> = (0..5000usize)
        .map(|i| (i % 17 != 3).then(|| vec![i as u8; i % 300]))
        .collect();
    let values: Vec<Option<&[u8]>> = owned.iter().map(|v| v.as_deref()).collect();
    let p = producer(&store, 10_000, 16 * 1024);
    let ts = 1_700_000_000_000;
    let (runs, sealed) = p
        .send_values("bulk", &values, None, ts)
        .expect("send_values");
    assert!(sealed, "16 KiB batches fill up");
    assert_eq!(
        runs.iter().map(|r| r.count as usize).sum::<usize>(),
        values.len()
    );
    let (_, _, _) = p
        .send_many("each", values.iter().map(|v| (None, *v)), None, Some(ts))
        .expect("send_many");
    flush(&p);
    for r in &runs {
        assert!(matches!(r.batch.result(), Some(Ok(_))));
    }
    let bulk = store.partition_by_name("bulk", 0).expect("log");
    let each = store.partition_by_name("each", 0).expect("log");
    let a = bulk.read(0, 64 << 20, &mut None, true).expect("read");
    let b = each.read(0, 64 << 20, &mut None, true).expect("read");
    assert!(a.bytes.len() > 16 * 1024 * 10);
    let first_diff = a.bytes.iter().zip(&b.bytes).position(|(x, y)| x != y);
    assert!(
        a.bytes.len() == b.bytes.len() && first_diff.is_none(),
        "same batches, byte for byte: {} vs {} bytes, first difference at {first_diff:?}",
        a.bytes.len(),
        b.bytes.len()
    );
    let got = log_records(&store, "bulk", 0);
    assert_eq!(got.len(), values.len());
    for (i, (off, t, v)) in got.iter().enumerate() {
        assert_eq!((*off, *t, v.as_deref()), (i as i64, ts, values[i]));
    }
}

#[test]
fn send_values_partitions_like_send_many_and_reports_errors() {
    let (_tmp, store) = open_store();
    store
        .create_topic("four", 4, &cfg(&[("max.message.bytes", "2000")]))
        .expect("create");
    let p = producer(&store, 10_000, 1000);
    let v = [9u8; 90];
    let values: Vec<Option<&[u8]>> = vec![Some(&v[..]); 100];
    // Sticky: each full batch moves to the next partition.
    let (runs, _) = p.send_values("four", &values, None, 5).expect("send");
    assert!(runs.len() > 4);
    for w in runs.windows(2) {
        assert_eq!(w[1].batch.partition, (w[0].batch.partition + 1) % 4);
        assert_eq!(w[1].first_index, 0);
    }
    // An explicit partition keeps every record there.
    let (runs, _) = p.send_values("four", &values, Some(2), 5).expect("send");
    assert!(runs.iter().all(|r| r.batch.partition == 2));
    match p.send_values("four", &values, Some(4), 5) {
        Err(Error::UnknownTopicOrPartition { partition: 4, .. }) => {}
        other => panic!(
            "expected UnknownTopicOrPartition, got {:?}",
            other.map(|_| ())
        ),
    }
    // A record over max.message.bytes fails the call; the ones before it
    // are queued and written.
    let big = [1u8; 3000];
    let mixed: Vec<Option<&[u8]>> = vec![Some(&v[..]), Some(&v[..]), Some(&big[..]), Some(&v[..])];
    match p.send_values("four", &mixed, Some(1), 5) {
        Err(Error::RecordTooLarge { size, max: 2000 }) => assert!(size > 3000),
        other => panic!("expected RecordTooLarge, got {:?}", other.map(|_| ())),
    }
    flush(&p);
    let total: usize = (0..4).map(|q| log_records(&store, "four", q).len()).sum();
    assert_eq!(total, 100 + 100 + 2);
    for c in p.close() {
        c.run();
    }
    assert!(matches!(
        p.send_values("four", &values, None, 5),
        Err(Error::Closed(_))
    ));
}

#[test]
fn batches_stay_within_max_message_bytes_with_wide_deltas() {
    let (_tmp, store) = open_store();
    store
        .create_topic("edge", 1, &cfg(&[("max.message.bytes", "1000")]))
        .expect("create");
    let p = producer(&store, 10_000, 1 << 20);
    let hl = ottla_record::batch::HEADER_LEN;
    let first = [1u8; 400];
    let s1 = BatchBuilder::record_size(0, 0, None, Some(&first), &[]);
    // A second record that fits exactly if its deltas were zero, but whose
    // timestamp delta takes several varint bytes.
    let len = (0..1000)
        .find(|l| {
            hl + s1 + BatchBuilder::record_size(0, 0, None, Some(&vec![0u8; *l]), &[]) == 1000
        })
        .expect("a length that fills the batch exactly");
    let second = vec![2u8; len];
    p.send("edge", None, Some(&first), &[], None, Some(1_000))
        .expect("send");
    p.send(
        "edge",
        None,
        Some(&second),
        &[],
        None,
        Some(1_000 + (1 << 40)),
    )
    .expect("send");
    flush(&p);
    let log = store.partition_by_name("edge", 0).expect("log");
    let f = log.read(0, 1 << 20, &mut None, true).expect("read");
    let sizes: Vec<usize> = ottla_record::batch::Batches::new(&f.bytes)
        .map(|(h, _)| h.total_size())
        .collect();
    assert_eq!(sizes.len(), 2, "the second record needs a batch of its own");
    assert!(sizes.iter().all(|s| *s <= 1000), "batch sizes {sizes:?}");
}

// ---------------------------------------------------------------- compression

#[test]
fn consumer_reads_batches_compressed_by_every_codec() {
    use ottla_record::compression::{compress_batch, GZIP, LZ4, NONE, SNAPPY, ZSTD};
    let (_tmp, store) = open_store();
    store.create_topic("z", 1, &[]).expect("create");
    let log = store.partition_by_name("z", 0).expect("log");
    let codecs = [NONE, GZIP, SNAPPY, LZ4, ZSTD];
    for (c, codec) in codecs.iter().enumerate() {
        let mut b = BatchBuilder::with_capacity(1024);
        for i in 0..10 {
            let v = format!("codec{codec}-value{i}-{}", "x".repeat(50));
            let k = format!("k{i}");
            b.append(now_ms(), Some(k.as_bytes()), Some(v.as_bytes()), &[]);
        }
        let mut packed = compress_batch(b.finish(), *codec).expect("compress");
        if *codec != NONE {
            assert!(
                packed.len() < b.finish().len(),
                "codec {codec} did not shrink"
            );
        }
        let info = log
            .append(&mut packed, Durability::PageCache)
            .expect("append");
        assert_eq!(info.base_offset, c as i64 * 10);
    }
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("z".to_string(), 0)]).expect("assign");
    let got = drain_all(&c);
    assert_eq!(got.len(), 50);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.2, i as i64);
        let codec = codecs[i / 10];
        assert_eq!(
            text(&g.4),
            format!("codec{codec}-value{}-{}", i % 10, "x".repeat(50))
        );
        assert_eq!(text(&g.3), format!("k{}", i % 10));
    }
    // Offsets by time look inside compressed batches too.
    assert!(log.offset_for_time(0).expect("by time").is_some());
}

#[test]
fn a_compressed_batch_that_does_not_inflate_is_a_typed_error() {
    use ottla_record::batch::{compute_crc, CRC, HEADER_LEN};
    use ottla_record::compression::{compress_batch, ZSTD};
    let (_tmp, store) = open_store();
    store.create_topic("bad", 1, &[]).expect("create");
    let log = store.partition_by_name("bad", 0).expect("log");
    let mut b = BatchBuilder::with_capacity(256);
    b.append(now_ms(), None, Some(b"hello world hello world"), &[]);
    let mut packed = compress_batch(b.finish(), ZSTD).expect("compress");
    // Damage the compressed bytes but keep the CRC valid, as a buggy client would.
    let n = packed.len();
    for byte in &mut packed[HEADER_LEN..n] {
        *byte ^= 0x5a;
    }
    let crc = compute_crc(&packed);
    packed[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    log.append(&mut packed, Durability::PageCache)
        .expect("append");
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("bad".to_string(), 0)]).expect("assign");
    let err = c.drain(10, &mut |_, _| {}).expect_err("must fail");
    assert!(matches!(err, Error::InvalidRecord(_)), "{err:?}");
}

#[test]
fn records_handed_out_before_an_error_reach_the_caller_and_the_error_comes_next() {
    use ottla_record::batch::{compute_crc, CRC, HEADER_LEN};
    use ottla_record::compression::{compress_batch, ZSTD};
    let (_tmp, store) = open_store();
    store.create_topic("mixed", 2, &[]).expect("create");
    // Partition 0: three good records, then a batch that will not inflate,
    // then a good record that stays unreachable until the caller seeks.
    // Partition 1: two good records.
    let bad_batch = || {
        let mut b = BatchBuilder::with_capacity(256);
        b.append(now_ms(), None, Some(b"hello world hello world"), &[]);
        let mut packed = compress_batch(b.finish(), ZSTD).expect("compress");
        let n = packed.len();
        for byte in &mut packed[HEADER_LEN..n] {
            *byte ^= 0x5a;
        }
        let crc = compute_crc(&packed);
        packed[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        packed
    };
    let good = |v: &[u8]| {
        let mut b = BatchBuilder::with_capacity(256);
        b.append(now_ms(), None, Some(v), &[]);
        b.finish().to_vec()
    };
    let p0 = store.partition_by_name("mixed", 0).expect("log");
    let p1 = store.partition_by_name("mixed", 1).expect("log");
    for v in [&b"a"[..], b"b", b"c"] {
        p0.append(&mut good(v), Durability::PageCache)
            .expect("append");
    }
    p0.append(&mut bad_batch(), Durability::PageCache)
        .expect("append");
    p0.append(&mut good(b"after"), Durability::PageCache)
        .expect("append");
    for v in [&b"x"[..], b"y"] {
        p1.append(&mut good(v), Durability::PageCache)
            .expect("append");
    }
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("mixed".to_string(), 0), ("mixed".to_string(), 1)])
        .expect("assign");
    let mut seen: Vec<(u32, i64)> = Vec::new();
    let mut errors = 0;
    for _ in 0..10 {
        match c.drain(100, &mut |tp, r| seen.push((tp.partition, r.offset))) {
            Ok(_) => {}
            Err(Error::InvalidRecord(_)) => errors += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    seen.sort_unstable();
    // Every good record before the bad batch was delivered exactly once,
    // and the bad batch keeps raising (it is never skipped silently).
    assert_eq!(seen, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]);
    assert!(errors >= 5, "the bad batch raised {errors} times");
    assert_eq!(c.position("mixed", 0).expect("position"), 3);
    c.seek("mixed", 0, 4).expect("seek");
    let got = drain_all(&c);
    assert_eq!(got.iter().map(|g| g.2).collect::<Vec<_>>(), vec![4]);
}

/// Makes the partition's next segment roll fail: a directory stands where
/// the roll would create segment `base`'s log file. An append that needs a
/// new segment then fails while a smaller one that fits the active segment
/// would still be appended.
fn block_roll(root: &Path, topic: &str, partition: u32, base: i64) -> std::path::PathBuf {
    let dir = root
        .join(format!("{topic}-{partition}"))
        .join(ottla_storage::log::segment::log_file_name(base));
    std::fs::create_dir(&dir).expect("blocker");
    dir
}

fn failed_with(r: &SendReceipt) -> Arc<Error> {
    match r.batch.result() {
        Some(Err(e)) => e.clone(),
        other => panic!("record did not fail: {other:?}"),
    }
}

fn send_to_0(p: &Producer, topic: &str, value: &[u8]) -> (SendReceipt, bool) {
    p.send(topic, None, Some(value), &[], Some(0), None)
        .expect("send")
}

#[test]
fn failed_append_fails_the_batches_behind_it_and_fences_the_partition() {
    let (tmp, store) = open_store();
    store
        .create_topic("fence", 1, &cfg(&[("segment.bytes", "4096")]))
        .expect("create");
    // linger_ms far away: only flush() appends, so the interleaving is ours.
    let p = producer(&store, 600_000, 2048);
    let (r0, _) = send_to_0(&p, "fence", &[b'0'; 2600]);
    flush(&p);
    assert_eq!(offset_of(&r0), 0);
    let blocker = block_roll(tmp.path(), "fence", 0, 1);
    // Batch A needs a new segment (and fails); batch B, sealed behind it,
    // would fit the active segment.
    let (ra, _) = send_to_0(&p, "fence", &[b'A'; 1500]);
    let (rb, sealed) = send_to_0(&p, "fence", &[b'B'; 600]);
    assert!(sealed, "B's record did not seal A's batch");
    assert!(!Arc::ptr_eq(&ra.batch, &rb.batch));
    // The linger thread may append A (a sealed batch) before flush() does:
    // either way both are complete once flush() returns.
    p.flush().into_iter().for_each(Completions::run);
    let e = failed_with(&ra);
    assert!(
        Arc::ptr_eq(&e, &failed_with(&rb)),
        "B failed with another error"
    );
    let log = store.partition_by_name("fence", 0).expect("log");
    assert_eq!(
        log.offsets().expect("offsets"),
        (0, 1),
        "B took A's offsets"
    );

    // Fenced: a record sent before the caller is told fails with the same
    // error, even though the partition could take it now.
    std::fs::remove_dir(&blocker).expect("unblock");
    let (rc, _) = send_to_0(&p, "fence", b"C");
    assert!(Arc::ptr_eq(&e, &failed_with(&rc)));
    flush(&p);
    assert_eq!(log.offsets().expect("offsets"), (0, 1));

    // Once a future hands the error over, records append again, gap-free.
    rc.batch.error_delivered();
    let (rd, _) = send_to_0(&p, "fence", b"D");
    flush(&p);
    assert_eq!(offset_of(&rd), 1);
    // An old failure's handle cannot lift a later fence.
    rb.batch.error_delivered();
    let c = consumer(&store, None, OffsetReset::Earliest);
    c.assign(&[("fence".to_string(), 0)]).expect("assign");
    let got = drain_all(&c);
    let values: Vec<Vec<u8>> = got.into_iter().filter_map(|g| g.4).collect();
    assert_eq!(values, vec![vec![b'0'; 2600], b"D".to_vec()]);
}

#[test]
fn fenced_partition_fails_send_many_and_direct_sends_until_flush_reports_it() {
    let (tmp, store) = open_store();
    store
        .create_topic("fence", 2, &cfg(&[("segment.bytes", "4096")]))
        .expect("create");
    let p = producer(&store, 600_000, 2048);
    send_to_0(&p, "fence", &[b'0'; 2600]);
    flush(&p);
    let blocker = block_roll(tmp.path(), "fence", 0, 1);
    let (ra, _) = send_to_0(&p, "fence", &[b'A'; 1500]);
    // The other partition is not fenced.
    let (other, _) = p
        .send("fence", None, Some(b"other"), &[], Some(1), None)
        .expect("send");
    let done = p.flush();
    done.into_iter().for_each(Completions::run);
    let e = failed_with(&ra);
    assert_eq!(offset_of(&other), 0);
    std::fs::remove_dir(&blocker).expect("unblock");

    // send_many and send_values: every record fails with the fence's error.
    let (runs, _, _) = p
        .send_many(
            "fence",
            [(None, Some(&b"m1"[..])), (None, Some(&b"m2"[..]))].into_iter(),
            Some(0),
            None,
        )
        .expect("send_many");
    assert_eq!(runs.iter().map(|r| r.count).sum::<u32>(), 2);
    for r in &runs {
        assert!(matches!(r.batch.result(), Some(Err(x)) if Arc::ptr_eq(x, &e)));
    }
    let (runs, _) = p
        .send_values(
            "fence",
            &[Some(b"v1"), Some(b"v2"), None],
            Some(0),
            now_ms(),
        )
        .expect("send_values");
    assert_eq!(runs.iter().map(|r| r.count).sum::<u32>(), 3);
    assert!(runs
        .iter()
        .all(|r| matches!(r.batch.result(), Some(Err(x)) if Arc::ptr_eq(x, &e))));
    // The direct path (a value that fills a batch by itself) too.
    let big = vec![b'X'; crate::producer::DIRECT_VALUE_MIN];
    let (rx, done) = p
        .send_direct("fence", None, &big, &[], Some(0), None)
        .expect("send_direct");
    done.into_iter().for_each(Completions::run);
    assert!(Arc::ptr_eq(&e, &failed_with(&rx)));
    let log = store.partition_by_name("fence", 0).expect("log");
    assert_eq!(log.offsets().expect("offsets"), (0, 1));

    // A flush that reports the failure lifts the fence (once).
    let told = p.take_failure().expect("undelivered failure");
    assert!(Arc::ptr_eq(&told, &e));
    assert!(p.take_failure().is_none());
    let (ry, done) = p
        .send_direct("fence", None, &big, &[], Some(0), None)
        .expect("send_direct");
    done.into_iter().for_each(Completions::run);
    assert_eq!(offset_of(&ry), 1);
    let (rz, _) = send_to_0(&p, "fence", b"Z");
    flush(&p);
    assert_eq!(offset_of(&rz), 2);
}

#[test]
fn failed_direct_append_fails_the_batches_behind_it() {
    let (tmp, store) = open_store();
    store
        .create_topic("fence", 1, &cfg(&[("segment.bytes", "4096")]))
        .expect("create");
    let p = producer(&store, 600_000, 2048);
    send_to_0(&p, "fence", b"first");
    flush(&p);
    let blocker = block_roll(tmp.path(), "fence", 0, 1);
    let big = vec![b'X'; crate::producer::DIRECT_VALUE_MIN];
    let (rx, done) = p
        .send_direct("fence", None, &big, &[], Some(0), None)
        .expect("send_direct");
    done.into_iter().for_each(Completions::run);
    let e = failed_with(&rx);
    let (rs, _) = send_to_0(&p, "fence", b"small");
    assert!(Arc::ptr_eq(&e, &failed_with(&rs)));
    std::fs::remove_dir(&blocker).expect("unblock");
    flush(&p);
    assert_eq!(
        store
            .partition_by_name("fence", 0)
            .expect("log")
            .offsets()
            .expect("offsets"),
        (0, 1)
    );
    rx.batch.error_delivered();
    let (rt, _) = send_to_0(&p, "fence", b"then");
    flush(&p);
    assert_eq!(offset_of(&rt), 1);
}

#[test]
fn open_many_opens_an_assignment_on_several_threads_into_the_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(tmp.path()).expect("store");
        store.create_topic("wide", 200, &[]).expect("create");
        for p in 0..200 {
            append_direct(&store, "wide", p, 2, &format!("p{p}"));
        }
    }
    let store = Store::open(tmp.path()).expect("reopen");
    assert_eq!(store.open_partitions(), 0, "a fresh store opens lazily");
    let topic = store.topic("wide").expect("topic").expect("exists");
    let mut wanted: Vec<(&Topic, u32)> = (0..200).map(|p| (&topic, p)).collect();
    // Asked twice in one call: still one log for it.
    wanted.push((&topic, 7));
    store.open_many(&wanted);
    assert_eq!(store.open_partitions(), 200);
    for p in 0..200 {
        let log = store.partition(&topic, p).expect("partition");
        assert_eq!(log.offsets().expect("offsets").1, 2, "partition {p}");
    }
    assert_eq!(store.open_partitions(), 200);
    // A partition the topic does not have is left to the caller's own
    // call, which reports it.
    let missing: Vec<(&Topic, u32)> = (0..130).map(|_| (&topic, 999)).collect();
    store.open_many(&missing);
    assert!(matches!(
        store.partition(&topic, 999),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
}
