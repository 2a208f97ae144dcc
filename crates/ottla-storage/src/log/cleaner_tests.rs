//! Behaviour tests for the log cleaner (`log::cleaner`): what survives a
//! pass, offsets and indexes afterwards, tombstones, several instances of a
//! partition (as several processes would have) across a clean.

mod txn;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cleaner::read_checkpoint;
use super::offset_index::OffsetIndex;
use super::{Durability, PartitionLog, ReadCursor};
use crate::beacon::Beacon;
use crate::config::TopicConfig;
use ottla_record::batch::DELETE_HORIZON_FLAG;
use ottla_record::batch::{check_batch, BatchHeader, Batches};
use ottla_record::decode::records;
use ottla_record::BatchBuilder;

/// (offset, key, value)
type Rec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

fn config(overrides: &[(&str, &str)]) -> Arc<TopicConfig> {
    let mut all = vec![
        ("retention.ms", "-1"),
        ("cleanup.policy", "compact"),
        ("segment.bytes", "2048"),
    ];
    all.extend_from_slice(overrides);
    Arc::new(TopicConfig::from_overrides(all).expect("valid test config"))
}

fn dir_of(root: &Path) -> PathBuf {
    root.join("t-0")
}

fn open_log(root: &Path, cfg: &Arc<TopicConfig>) -> PartitionLog {
    std::fs::create_dir_all(root).expect("mkdir");
    let beacon = Arc::new(Beacon::open(&root.join("beacon")).expect("beacon"));
    PartitionLog::open(&dir_of(root), Arc::from("t"), 0, cfg.clone(), beacon).expect("open")
}

/// A batch of (key, value) records, timestamps `ts`.
fn batch(recs: &[(Option<&str>, Option<&str>)], ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(256);
    for (k, v) in recs {
        b.append(ts, k.map(str::as_bytes), v.map(str::as_bytes), &[]);
    }
    b.finish().to_vec()
}

fn append(log: &PartitionLog, recs: &[(Option<&str>, Option<&str>)]) -> i64 {
    let mut b = batch(recs, super::now_ms());
    log.append(&mut b, Durability::PageCache)
        .expect("append")
        .base_offset
}

/// Append the records of `bytes` at or after `*pos` to `out`, moving `*pos`
/// past each batch (a read that starts in a compaction gap moves on).
fn collect(bytes: &[u8], pos: &mut i64, out: &mut Vec<Rec>) {
    for (h, b) in Batches::new(bytes) {
        let rs = records(&h, b).expect("codec");
        for r in rs.iter() {
            let r = r.expect("record");
            if r.offset >= *pos {
                out.push((
                    r.offset,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                ));
            }
        }
        *pos = (*pos).max(h.next_offset());
    }
}

/// Every record from the log start to the end, as a consumer reads them.
fn read_all(log: &PartitionLog) -> Vec<Rec> {
    let (start, end) = log.offsets().expect("offsets");
    let mut out = Vec::new();
    let mut pos = start;
    let mut cursor: Option<ReadCursor> = None;
    while pos < end {
        let f = log.read(pos, 700, &mut cursor, true).expect("read");
        assert!(f.error.is_none(), "read error: {:?}", f.error);
        if f.bytes.is_empty() {
            break;
        }
        collect(&f.bytes, &mut pos, &mut out);
    }
    out
}

/// The records a compacted log must keep: below `clean_end` the latest per
/// key there (a record superseded only from the active segment on is not
/// yet compacted), everything from it on.
fn expected_after(all: &[Rec], clean_end: i64) -> Vec<Rec> {
    let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
    for (o, k, _) in all {
        if let Some(k) = k {
            if *o < clean_end {
                latest.insert(k.clone(), *o);
            }
        }
    }
    all.iter()
        .filter(|(o, k, _)| {
            *o >= clean_end || k.as_ref().map_or(true, |k| latest.get(k) == Some(o))
        })
        .cloned()
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Every batch in every segment file checks out (CRC, offsets increasing,
/// the file's name at or below its first batch), and every offset index
/// entry points at the start of the batch holding its offset.
fn check_segments(dir: &Path) {
    let mut prev_next = i64::MIN;
    for path in segment_files(dir) {
        let base: i64 = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("base");
        let data = std::fs::read(&path).expect("read segment");
        let mut at = 0usize;
        let mut starts = BTreeMap::new();
        while at < data.len() {
            let h = BatchHeader::parse(&data[at..]).expect("header");
            let b = &data[at..at + h.total_size()];
            check_batch(b).expect("valid batch");
            assert!(h.base_offset >= base && h.base_offset >= prev_next);
            prev_next = h.next_offset();
            starts.insert(at as u32, h);
            at += h.total_size();
        }
        let idx = OffsetIndex::open_readonly(&path.with_extension("index"), base).expect("index");
        for i in 0..idx.closed_entries() {
            let (off, pos) = idx.entry(i).expect("entry");
            let h = starts.get(&pos).expect("index entry at a batch start");
            assert_eq!(h.last_offset(), off, "index entry {i} of {path:?}");
        }
    }
}

fn workload(log: &PartitionLog, n: usize, keys: usize) -> Vec<Rec> {
    let mut all = Vec::new();
    for i in 0..n {
        let k = format!("key-{}", (i * 7) % keys);
        let v = format!("value-{i}");
        let o = append(log, &[(Some(&k), Some(&v))]);
        all.push((o, Some(k.into_bytes()), Some(v.into_bytes())));
    }
    all
}

#[test]
fn latest_value_per_key_survives_and_offsets_are_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    // A ratio of 1 keeps rolls from cleaning: the test runs the pass.
    let cfg = config(&[("min.cleanable.dirty.ratio", "1")]);
    let log = open_log(root.path(), &cfg);
    let mut all = workload(&log, 400, 10);
    // Unkeyed records are never superseded.
    let o = append(&log, &[(None, Some("no key"))]);
    all.push((o, None, Some(b"no key".to_vec())));
    all.extend(workload(&log, 50, 10));
    let before = log.size_bytes().expect("size");
    let segments_before = log.segment_count().expect("count");
    assert_eq!(read_all(&log), all);

    let stats = log.compact().expect("compact").expect("ran");
    let clean_end = read_checkpoint(&dir_of(root.path())).expect("checkpoint");
    assert_eq!(stats.clean_end, clean_end);
    assert!(clean_end > 400, "dirty section reaches the active segment");
    let after = read_all(&log);
    assert_eq!(after, expected_after(&all, clean_end));
    assert!(after.iter().any(|(_, k, _)| k.is_none()));
    assert!(log.size_bytes().expect("size") < before / 4);
    assert!(stats.records_after < stats.records_before);
    check_segments(&dir_of(root.path()));

    // A read from an offset compaction removed continues at the next
    // surviving one.
    let kept: Vec<i64> = after.iter().map(|r| r.0).collect();
    let gap = (1..clean_end)
        .find(|o| !kept.contains(o))
        .expect("a removed offset");
    let mut pos = gap;
    let first = 'found: loop {
        let f = log.read(pos, 1, &mut None, true).expect("read in a gap");
        for (h, b) in Batches::new(&f.bytes) {
            assert!(h.next_offset() > pos);
            let rs = records(&h, b).expect("codec");
            if let Some(r) = rs.iter().next() {
                break 'found r.expect("record").offset;
            }
            pos = h.next_offset();
        }
    };
    assert_eq!(first, *kept.iter().find(|o| **o > gap).expect("next"));

    // Offsets by time still work on the cleaned segments.
    assert!(log.offset_for_time(0).expect("by time").is_some());

    // A second pass with nothing new keeps the same records, in fewer
    // segments: the small cleaned segments are grouped into one.
    log.compact().expect("compact again");
    assert_eq!(read_all(&log), after);
    assert!(log.segment_count().expect("count") < segments_before / 4);
    check_segments(&dir_of(root.path()));

    // Appends continue at the same offset, and the reopened log (trusted
    // head and full recovery) reads the same.
    let (_, end) = log.offsets().expect("offsets");
    assert_eq!(append(&log, &[(Some("key-1"), Some("late"))]), end);
    let expect = read_all(&log);
    drop(log);
    let log = open_log(root.path(), &cfg);
    assert_eq!(read_all(&log), expect);
    drop(log);
    std::fs::remove_file(dir_of(root.path()).join("partition.head")).expect("rm head");
    let log = open_log(root.path(), &cfg);
    assert_eq!(read_all(&log), expect);
}

#[test]
fn a_roll_past_the_dirty_ratio_cleans() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    let log = open_log(root.path(), &cfg);
    let all = workload(&log, 600, 5);
    let clean_end = read_checkpoint(&dir_of(root.path())).expect("cleaned on roll");
    assert_eq!(read_all(&log), expected_after(&all, clean_end));
    // With ratio 0.5, the cleaned share stays large: far fewer bytes than
    // the 600 records written.
    assert!(log.size_bytes().expect("size") < 2048 * 4);
    check_segments(&dir_of(root.path()));
}

#[test]
fn tombstones_go_after_delete_retention() {
    let root = tempfile::tempdir().expect("tempdir");
    for (retention, gone) in [("0", true), ("86400000", false)] {
        let dir = root.path().join(retention);
        let cfg = config(&[
            ("min.cleanable.dirty.ratio", "1"),
            ("delete.retention.ms", retention),
        ]);
        let log = open_log(&dir, &cfg);
        append(&log, &[(Some("a"), Some("1")), (Some("b"), Some("1"))]);
        append(&log, &[(Some("a"), None)]);
        workload(&log, 60, 3);
        log.compact().expect("compact");
        // First pass: the tombstone stays, its batch carries the horizon.
        let after = read_all(&log);
        let tomb: Vec<_> = after
            .iter()
            .filter(|r| r.1.as_deref() == Some(b"a"))
            .collect();
        assert_eq!(tomb.len(), 1);
        assert_eq!(tomb[0].2, None);
        let f = log.read(tomb[0].0, 1, &mut None, true).expect("read");
        let (h, _) = Batches::new(&f.bytes).next().expect("batch");
        assert_ne!(h.attributes & DELETE_HORIZON_FLAG, 0);
        assert!(after.iter().any(|r| r.1.as_deref() == Some(b"b")));
        // Second pass: gone once the horizon has passed.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let stats = log.compact().expect("compact").expect("ran");
        let after = read_all(&log);
        let has_a = after.iter().any(|r| r.1.as_deref() == Some(b"a"));
        assert_eq!(has_a, !gone, "delete.retention.ms={retention}");
        assert_eq!(stats.tombstones_removed > 0, gone);
        assert!(after.iter().any(|r| r.1.as_deref() == Some(b"b")));
        check_segments(&dir.join("t-0"));
    }
}

#[test]
fn min_compaction_lag_keeps_young_records() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[
        ("min.cleanable.dirty.ratio", "0"),
        ("min.compaction.lag.ms", "3600000"),
    ]);
    let log = open_log(root.path(), &cfg);
    let all = workload(&log, 200, 4);
    log.compact().expect("compact");
    assert_eq!(read_all(&log), all, "nothing is older than the lag");
    assert_eq!(read_checkpoint(&dir_of(root.path())), None);
}

#[test]
fn max_compaction_lag_cleans_below_the_dirty_ratio() {
    let root = tempfile::tempdir().expect("tempdir");
    // A ratio of 1 is never exceeded: only the lag can make a roll clean.
    for (lag, cleans) in [("1000", true), ("9223372036854775807", false)] {
        let dir = root.path().join(lag);
        let cfg = config(&[
            ("min.cleanable.dirty.ratio", "1"),
            ("max.compaction.lag.ms", lag),
        ]);
        let log = open_log(&dir, &cfg);
        let old = super::now_ms() - 60_000;
        let mut all = Vec::new();
        for i in 0..120 {
            let v = format!("value-{i:04}");
            let mut b = batch(&[(Some(["a", "b", "c"][i % 3]), Some(&v))], old);
            let base = log
                .append(&mut b, Durability::PageCache)
                .expect("append")
                .base_offset;
            all.push((
                base,
                Some(["a", "b", "c"][i % 3].as_bytes().to_vec()),
                Some(v.into_bytes()),
            ));
        }
        let checkpoint = read_checkpoint(&dir_of(&dir));
        assert_eq!(checkpoint.is_some(), cleans, "max.compaction.lag.ms={lag}");
        match checkpoint {
            Some(clean_end) => {
                assert_eq!(read_all(&log), expected_after(&all, clean_end));
                assert!(read_all(&log).len() < all.len());
            }
            None => assert_eq!(read_all(&log), all),
        }
        check_segments(&dir_of(&dir));
    }
}

#[test]
fn the_retention_checker_cleans_an_idle_partition_once_overdue() {
    use crate::ofd::ByteLocks;
    use crate::retention_checker::{check_once, lock_path};
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(tmp.path()).expect("store");
    let overrides: Vec<(String, String)> = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "2048"),
        ("min.cleanable.dirty.ratio", "1"),
        ("max.compaction.lag.ms", "1000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let topic = store.create_topic("idle", 1, &overrides).expect("create");
    let log = store.partition(&topic, 0).expect("partition");
    for i in 0..60 {
        let v = format!("value-{i:04}");
        append(&log, &[(Some(["a", "b"][i % 2]), Some(&v))]);
    }
    let dir = tmp.path().join("idle-0");
    assert_eq!(read_checkpoint(&dir), None, "nothing is overdue yet");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Nobody writes; a checker round finds the dirty section overdue.
    let locks = ByteLocks::open(&lock_path(&store)).expect("lock file");
    check_once(&store, &locks).expect("round");
    assert!(read_checkpoint(&dir).is_some(), "cleaned by the round");
    assert!(read_all(&log).len() < 60);
}

#[test]
fn max_compaction_lag_bounds_how_long_the_active_segment_stays_open() {
    let c = config(&[("segment.ms", "600000"), ("max.compaction.lag.ms", "1000")]);
    assert_eq!(c.max_segment_ms(), 1000);
    let d =
        TopicConfig::from_overrides([("segment.ms", "600000"), ("max.compaction.lag.ms", "1000")])
            .expect("valid");
    assert_eq!(d.max_segment_ms(), 600_000, "not on a delete-only topic");
}

#[test]
fn another_instance_reads_on_across_a_clean() {
    // Two instances of one partition, as two processes have.
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("min.cleanable.dirty.ratio", "1")]);
    let writer = open_log(root.path(), &cfg);
    let all = workload(&writer, 300, 6);
    let reader = open_log(root.path(), &cfg);
    // The reader is halfway through, with a cursor and indexes mapped.
    let mut cursor: Option<ReadCursor> = None;
    let mut pos = 0;
    let mut seen: Vec<Rec> = Vec::new();
    while pos < 150 {
        let f = reader.read(pos, 300, &mut cursor, true).expect("read");
        collect(&f.bytes, &mut pos, &mut seen);
    }
    writer.compact().expect("compact").expect("ran");
    let clean_end = read_checkpoint(&dir_of(root.path())).expect("checkpoint");
    let (_, end) = reader.offsets().expect("offsets");
    while pos < end {
        let f = reader
            .read(pos, 300, &mut cursor, true)
            .expect("read across clean");
        assert!(f.error.is_none(), "{:?}", f.error);
        collect(&f.bytes, &mut pos, &mut seen);
    }
    // Nothing read twice, nothing out of order, every survivor seen, and
    // whatever was read is what was written at that offset.
    let offsets: Vec<i64> = seen.iter().map(|r| r.0).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    let by_offset: HashMap<i64, &Rec> = all.iter().map(|r| (r.0, r)).collect();
    for r in &seen {
        assert_eq!(by_offset[&r.0], r);
    }
    for r in expected_after(&all, clean_end) {
        if r.0 >= 150 {
            assert!(seen.contains(&r), "missed {r:?}");
        }
    }
    // A fresh read by the other instance sees the compacted log.
    assert_eq!(read_all(&reader), expected_after(&all, clean_end));
}

/// The gap end a process caches can be older than the segments it lists:
/// a reader thread that read the gap-end file before a cleaner in another
/// process moved it may store that value after another thread re-listed
/// (which resets the cache) and saw the cleaned segments. Reading the
/// cleaned segments' gaps against it reported a healthy log as corrupt;
/// the file is read again before a gap is refused.
#[test]
fn a_stale_cached_gap_end_does_not_make_cleaned_gaps_corrupt() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("min.cleanable.dirty.ratio", "1")]);
    let writer = open_log(root.path(), &cfg);
    let all = workload(&writer, 300, 6);
    let reader = open_log(root.path(), &cfg);
    writer.compact().expect("compact").expect("ran");
    let clean_end = read_checkpoint(&dir_of(root.path())).expect("checkpoint");
    // The reader re-lists (seeing the cleaned segments), then the stale
    // store of a thread that read the gap end before the pass lands.
    reader.segment_count().expect("re-list");
    reader.set_clean_end(-1);
    assert_eq!(read_all(&reader), expected_after(&all, clean_end));
}

#[test]
fn a_gap_above_the_clean_end_is_damage() {
    // A compacted topic that was never cleaned must still be gap-free: a
    // damaged base offset is reported, not taken for compaction.
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[
        ("min.cleanable.dirty.ratio", "1"),
        ("segment.bytes", "1048576"),
    ]);
    let log = open_log(root.path(), &cfg);
    append(&log, &[(Some("a"), Some("1"))]);
    let second = append(&log, &[(Some("b"), Some("2"))]);
    append(&log, &[(Some("c"), Some("3"))]);
    drop(log);
    let path = dir_of(root.path()).join("00000000000000000000.log");
    let mut data = std::fs::read(&path).expect("read");
    let first_len = BatchHeader::parse(&data).expect("h").total_size();
    data[first_len..first_len + 8].copy_from_slice(&(second + 5).to_be_bytes());
    std::fs::write(&path, &data).expect("write");
    let log = open_log(root.path(), &cfg);
    let f = log.read(0, 1 << 20, &mut None, true).expect("read");
    assert!(
        f.error.is_some(),
        "a gap above the clean end must be an error"
    );
}

/// Numbers for docs/design/compaction.md, not a test of behaviour:
/// `cargo test --release -p ottla-storage -- --ignored --nocapture cleaner_measure`.
#[test]
#[ignore]
fn cleaner_measure() {
    use std::time::Instant;
    let root = tempfile::tempdir().expect("tempdir");
    // One closed 100 MB segment of 100-byte values over 10,000 keys.
    let cfg = config(&[
        ("segment.bytes", "110000000"),
        ("min.cleanable.dirty.ratio", "1"),
    ]);
    let log = open_log(root.path(), &cfg);
    let value = [7u8; 100];
    let mut n = 0u64;
    let t = Instant::now();
    while log.size_bytes().expect("size") < 100_000_000 {
        let mut b = BatchBuilder::with_capacity(1 << 20);
        for _ in 0..5000 {
            let k = format!("key-{}", n % 10_000);
            b.append(super::now_ms(), Some(k.as_bytes()), Some(&value), &[]);
            n += 1;
        }
        let mut bytes = b.finish().to_vec();
        log.append(&mut bytes, Durability::PageCache)
            .expect("append");
    }
    eprintln!(
        "wrote {n} records, {} bytes in {:?}",
        log.size_bytes().expect("size"),
        t.elapsed()
    );
    // Close it with a small append after a forced roll.
    drop(log);
    let cfg2 = config(&[
        ("segment.bytes", "1000"),
        ("min.cleanable.dirty.ratio", "1"),
    ]);
    let log = open_log(root.path(), &cfg2);
    append(&log, &[(Some("x"), Some("y"))]);
    let t = Instant::now();
    let s = log.compact().expect("compact").expect("ran");
    eprintln!(
        "cleaned {} -> {} bytes, {} -> {} records in {:?}",
        s.bytes_before,
        s.bytes_after,
        s.records_before,
        s.records_after,
        t.elapsed()
    );
    drop(log);

    // __consumer_offsets: 100,000 commits over 100 (group, topic,
    // partition) keys, one commit per call, 1 MiB segments.
    let root = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(root.path()).expect("store");
    let offsets = store.offsets().expect("offsets");
    store
        .alter_topic_config(
            crate::offsets::OFFSETS_TOPIC,
            &[("segment.bytes".into(), Some("1048576".into()))],
        )
        .expect("alter");
    let t = Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    for i in 0..100_000i64 {
        let p = (i % 100) as u32;
        let c = Instant::now();
        offsets
            .commit(
                "g",
                &[("t".into(), p, i, String::new())],
                Durability::PageCache,
            )
            .expect("commit");
        slowest = slowest.max(c.elapsed());
        if i == 0 {
            let log = store
                .partition_by_name(crate::offsets::OFFSETS_TOPIC, 0)
                .expect("log");
            eprintln!("one commit: {} bytes", log.size_bytes().expect("size"));
        }
    }
    eprintln!("slowest commit (one that rolled and cleaned): {slowest:?}");
    let log = store
        .partition_by_name(crate::offsets::OFFSETS_TOPIC, 0)
        .expect("log");
    eprintln!(
        "100k commits in {:?}: {} bytes in {} segments (cleaned on roll)",
        t.elapsed(),
        log.size_bytes().expect("size"),
        log.segment_count().expect("count")
    );
    let t = Instant::now();
    let s = store
        .compact_topic(crate::offsets::OFFSETS_TOPIC)
        .expect("compact");
    eprintln!(
        "explicit compact in {:?}: {} -> {} bytes; now {} bytes in {} segments",
        t.elapsed(),
        s.bytes_before,
        s.bytes_after,
        log.size_bytes().expect("size"),
        log.segment_count().expect("count")
    );
    for p in 0..100u32 {
        let c = offsets
            .committed("g", "t", p)
            .expect("committed")
            .expect("some");
        assert_eq!(c.offset, 99_900 + p as i64);
    }
}

/// Patch a finished batch's header fields and recompute its CRC.
fn patch(mut b: Vec<u8>, attributes: i16, producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    use ottla_record::batch::{seal_crc, ATTRIBUTES, BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID};
    b[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    if let Some((id, epoch, seq)) = producer {
        b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&id.to_be_bytes());
        b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
        b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    }
    seal_crc(&mut b);
    b
}

#[test]
fn batch_fields_survive_and_unreadable_codecs_are_kept_whole() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("min.cleanable.dirty.ratio", "1")]);
    let log = open_log(root.path(), &cfg);
    let ts = super::now_ms();
    // An idempotent producer's batch of three, two of them superseded later.
    let mut b = patch(
        batch(
            &[
                (Some("a"), Some("1")),
                (Some("b"), Some("1")),
                (Some("c"), Some("1")),
            ],
            ts,
        ),
        0,
        Some((42, 3, 100)),
    );
    let idem = log.append(&mut b, Durability::PageCache).expect("append");
    // A batch whose codec bits name no codec (7): the cleaner cannot read
    // its records, so it keeps it whole, whatever it supersedes.
    let mut z = patch(batch(&[(Some("a"), Some("z"))], ts), 7, None);
    let zstd = log.append(&mut z, Durability::PageCache).expect("append");
    append(&log, &[(Some("a"), Some("2")), (Some("b"), Some("2"))]);
    workload(&log, 80, 3);
    log.compact().expect("compact").expect("ran");
    let f = log
        .read(idem.base_offset, 1, &mut None, true)
        .expect("read");
    let (h, bytes) = Batches::new(&f.bytes).next().expect("batch");
    assert_eq!(h.base_offset, idem.base_offset);
    assert_eq!(h.last_offset(), idem.last_offset, "last offset delta kept");
    assert_eq!(
        (h.producer_id, h.producer_epoch, h.base_sequence),
        (42, 3, 100)
    );
    let rs = records(&h, bytes).expect("codec");
    let recs: Vec<_> = rs.iter().map(|r| r.expect("record")).collect();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0].offset, recs[0].key),
        (idem.base_offset + 2, Some(&b"c"[..]))
    );
    let f = log
        .read(zstd.base_offset, 1, &mut None, false)
        .expect("read");
    let (h, bytes) = Batches::new(&f.bytes).next().expect("batch");
    assert_eq!(h.base_offset, zstd.base_offset);
    assert_eq!(bytes, &z[..], "kept byte for byte");
}
