//! Behaviour tests for `PartitionLog`: appends and reads, segment rolls and
//! indexes, retention, crash recovery and several instances on one directory.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use super::{now_ms, Durability, Fetched, PartitionLog, ReadCursor};
use crate::beacon::Beacon;
use crate::config::TopicConfig;
use crate::error::Error;
use ottla_record::batch::{BatchHeader, Batches, BATCH_LENGTH};
use ottla_record::decode::records;
use ottla_record::BatchBuilder;

// ---------------------------------------------------------------- helpers

/// One decoded record: (offset, timestamp, key, value).
type Rec = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// A topic config with `overrides`; time retention is off unless given,
/// so tests may use small, fixed timestamps.
pub(super) fn config(overrides: &[(&str, &str)]) -> Arc<TopicConfig> {
    let mut all = vec![("retention.ms", "-1")];
    all.extend_from_slice(overrides);
    Arc::new(TopicConfig::from_overrides(all).expect("valid test config"))
}

fn beacon(root: &Path) -> Arc<Beacon> {
    Arc::new(Beacon::open(&root.join("beacon")).expect("open beacon"))
}

pub(super) fn part_dir(root: &Path) -> PathBuf {
    root.join("t-0")
}

pub(super) fn open_log(root: &Path, cfg: &Arc<TopicConfig>) -> PartitionLog {
    PartitionLog::open(
        &part_dir(root),
        Arc::from("t"),
        0,
        cfg.clone(),
        beacon(root),
    )
    .expect("open partition log")
}

/// A batch of `n` records with timestamps `ts, ts+1, ...` and values
/// `"{tag}-{i}"`, keys `"k{i}"`.
fn batch(n: usize, ts: i64, tag: &str) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(64 * n);
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("{tag}-{i}");
        b.append(
            ts + i as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    b.finish().to_vec()
}

/// A batch of records with the given timestamps.
fn batch_ts(timestamps: &[i64], tag: &str) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(64 * timestamps.len());
    for (i, ts) in timestamps.iter().enumerate() {
        let value = format!("{tag}-{i}");
        b.append(*ts, None, Some(value.as_bytes()), &[]);
    }
    b.finish().to_vec()
}

fn decode(bytes: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    for (h, b) in Batches::new(bytes) {
        for r in records(&h, b).expect("uncompressed batch").iter() {
            let r = r.expect("record decodes");
            out.push((
                r.offset,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    Batches::new(bytes).map(|(h, _)| h).collect()
}

/// Every record from `from` to the high watermark, read sequentially with a cursor.
fn read_all_from(log: &PartitionLog, from: i64) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    let mut next = from;
    let mut cursor = None;
    loop {
        let f = log
            .read(next, 4096, &mut cursor, true)
            .expect("sequential read");
        assert!(f.error.is_none(), "unexpected error {:?}", f.error);
        if f.bytes.is_empty() {
            assert_eq!(
                next, f.high_watermark,
                "empty read below the high watermark"
            );
            break;
        }
        for r in decode(&f.bytes) {
            if r.0 >= next {
                out.push(r);
            }
        }
        next = headers(&f.bytes)
            .last()
            .expect("at least one batch")
            .next_offset();
    }
    out
}

fn read_all(log: &PartitionLog) -> Vec<Rec> {
    let (start, _) = log.offsets().expect("offsets");
    read_all_from(log, start)
}

fn value_of(r: &Rec) -> String {
    String::from_utf8(r.3.clone().expect("record has a value")).expect("utf-8 value")
}

/// Segment files in `dir` by base offset.
fn segment_files(dir: &Path) -> BTreeMap<i64, PathBuf> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("list partition dir") {
        let p = e.expect("dir entry").path();
        if p.extension().and_then(|x| x.to_str()) == Some("log") {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("segment file stem");
            out.insert(stem.parse::<i64>().expect("numeric segment name"), p);
        }
    }
    out
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat file").len()
}

/// Deterministic xorshift so the tests need no `rand` crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

fn expect_out_of_range(r: crate::Result<Fetched>, offset: i64, start: i64, end: i64) {
    match r {
        Err(Error::OffsetOutOfRange {
            offset: o,
            start: s,
            end: e,
            ..
        }) => {
            assert_eq!((o, s, e), (offset, start, end));
        }
        other => panic!("expected OffsetOutOfRange for {offset}, got {other:?}"),
    }
}

/// Append `count` batches of 1..=5 records; returns (base, last) per batch.
fn fill(log: &PartitionLog, count: usize, ts0: i64, rng: &mut Rng) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for i in 0..count {
        let n = 1 + rng.below(5) as usize;
        let mut b = batch(n, ts0 + i as i64 * 10, &format!("b{i}"));
        let info = log.append(&mut b, Durability::PageCache).expect("append");
        assert_eq!(info.last_offset - info.base_offset + 1, n as i64);
        out.push((info.base_offset, info.last_offset));
    }
    out
}

// ------------------------------------------------------ append and read

#[test]
fn append_read_round_trip_with_mid_batch_reads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_log(tmp.path(), &config(&[]));
    assert_eq!(log.offsets().expect("offsets"), (0, 0));

    let mut expected: Vec<(i64, String)> = Vec::new();
    let mut batches = Vec::new();
    let mut next = 0;
    for i in 0..30usize {
        let n = 1 + i % 7;
        let mut b = batch(n, 1_000 + i as i64, &format!("b{i}"));
        let info = log.append(&mut b, Durability::PageCache).expect("append");
        assert_eq!(info.base_offset, next, "offsets must be gap-free");
        assert_eq!(info.last_offset, next + n as i64 - 1);
        assert_eq!(info.log_start_offset, 0);
        for j in 0..n {
            expected.push((next + j as i64, format!("b{i}-{j}")));
        }
        batches.push((info.base_offset, info.last_offset));
        next = info.last_offset + 1;
        assert_eq!(log.offsets().expect("offsets"), (0, next));
    }
    let hw = next;

    // Every offset, including those in the middle of a batch, returns the
    // batch holding it first, and records decode to what was appended.
    for o in 0..hw {
        let f = log.read(o, 1, &mut None, true).expect("read");
        assert!(f.error.is_none());
        assert_eq!(f.high_watermark, hw);
        assert_eq!(f.log_start_offset, 0);
        let hs = headers(&f.bytes);
        assert_eq!(
            hs.len(),
            1,
            "max_bytes=1 still returns exactly one whole batch"
        );
        let (base, last) = batches
            .iter()
            .copied()
            .find(|(b, l)| *b <= o && o <= *l)
            .expect("offset belongs to a batch");
        assert_eq!((hs[0].base_offset, hs[0].last_offset()), (base, last));
        let recs = decode(&f.bytes);
        assert_eq!(recs.len() as i64, last - base + 1);
        for r in &recs {
            assert_eq!(value_of(r), expected[r.0 as usize].1);
        }
    }

    // One big read returns everything, back to back.
    let f = log.read(0, 1 << 20, &mut None, true).expect("read all");
    let all = decode(&f.bytes);
    assert_eq!(all.len() as i64, hw);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.0, i as i64);
        assert_eq!(value_of(r), expected[i].1);
    }
    assert_eq!(read_all(&log).len() as i64, hw);

    // At the high watermark: nothing, no error. Past it or below 0: out of range.
    let f = log.read(hw, 1 << 20, &mut None, true).expect("read at hw");
    assert!(f.bytes.is_empty() && f.error.is_none());
    assert_eq!(f.high_watermark, hw);
    expect_out_of_range(log.read(hw + 1, 100, &mut None, true), hw + 1, 0, hw);
    expect_out_of_range(log.read(-1, 100, &mut None, true), -1, 0, hw);
}

#[test]
fn max_bytes_limits_whole_batches_and_cursor_continues() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_log(tmp.path(), &config(&[]));
    let mut sizes = Vec::new();
    for i in 0..10 {
        let mut b = batch(3, 5_000, &format!("b{i}"));
        sizes.push(b.len());
        log.append(&mut b, Durability::PageCache).expect("append");
    }
    // Room for two and a half batches: exactly two come back.
    let max = sizes[0] + sizes[1] + sizes[2] / 2;
    let mut cursor: Option<ReadCursor> = None;
    let f = log.read(0, max, &mut cursor, true).expect("read");
    let hs = headers(&f.bytes);
    assert_eq!(hs.len(), 2);
    assert_eq!(f.bytes.len(), sizes[0] + sizes[1]);
    // The cursor continues exactly where the read stopped.
    let f = log.read(6, max, &mut cursor, true).expect("read on");
    assert_eq!(headers(&f.bytes)[0].base_offset, 6);
    // A cursor for another offset is ignored rather than trusted.
    let f = log.read(13, 1, &mut cursor, true).expect("read elsewhere");
    assert_eq!(headers(&f.bytes)[0].base_offset, 12);
}

#[test]
fn appending_several_batches_at_once_stamps_each() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_log(tmp.path(), &config(&[]));
    let mut one = batch(2, 10, "x");
    log.append(&mut one, Durability::Fsync).expect("append");
    let mut many = Vec::new();
    many.extend_from_slice(&batch(3, 20, "a"));
    many.extend_from_slice(&batch(1, 30, "b"));
    many.extend_from_slice(&batch(4, 40, "c"));
    let info = log
        .append(&mut many, Durability::Fsync)
        .expect("append many");
    assert_eq!((info.base_offset, info.last_offset), (2, 9));
    let f = log.read(0, 1 << 20, &mut None, true).expect("read");
    let bases: Vec<i64> = headers(&f.bytes).iter().map(|h| h.base_offset).collect();
    assert_eq!(bases, vec![0, 2, 5, 6]);
    let vals: Vec<String> = decode(&f.bytes).iter().map(value_of).collect();
    assert_eq!(vals[5], "b-0");
    assert_eq!(vals[9], "c-3");

    // Bad input is refused without moving the log.
    assert!(matches!(
        log.append(&mut [], Durability::PageCache),
        Err(Error::InvalidRecord(_))
    ));
    let mut cut = batch(2, 50, "cut");
    let len = cut.len();
    assert!(matches!(
        log.append(&mut cut[..len - 3], Durability::PageCache),
        Err(Error::InvalidRecord(_))
    ));
    assert_eq!(log.offsets().expect("offsets"), (0, 10));
    assert_eq!(read_all(&log).len(), 10);
}

// ------------------------------------------------- segments and indexes

#[test]
fn segments_roll_by_size_and_every_offset_is_found() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("index.interval.bytes", "100")]);
    let log = open_log(tmp.path(), &cfg);
    let mut rng = Rng(0x1234_5678);
    let batches = fill(&log, 300, 1_000_000, &mut rng);
    let hw = batches.last().expect("batches").1 + 1;
    assert_eq!(log.offsets().expect("offsets"), (0, hw));

    let files = segment_files(&part_dir(tmp.path()));
    let count = log.segment_count().expect("segment count");
    assert_eq!(files.len(), count);
    assert!(count >= 10, "expected many segments, got {count}");
    // Segment bases are batch bases, segments respect segment.bytes, and
    // the sizes add up.
    let bases: HashSet<i64> = batches.iter().map(|b| b.0).collect();
    let mut total = 0;
    for (base, path) in &files {
        assert!(
            bases.contains(base),
            "segment base {base} is not a batch base"
        );
        let len = file_len(path);
        assert!(len <= 1024, "segment {base} is {len} bytes");
        total += len;
    }
    assert_eq!(log.size_bytes().expect("size"), total);

    // Closed segments have trimmed, non-empty indexes whose entries point at
    // batch starts, ascending.
    let closed: Vec<(i64, PathBuf)> = files
        .iter()
        .take(files.len() - 1)
        .map(|(b, p)| (*b, p.clone()))
        .collect();
    for (base, path) in &closed {
        let idx_path = path.with_extension("index");
        let time_path = path.with_extension("timeindex");
        let idx_len = file_len(&idx_path);
        let time_len = file_len(&time_path);
        assert!(idx_len > 0, "segment {base} has no offset index entries");
        assert!(time_len > 0, "segment {base} has no time index entries");
        assert_eq!(idx_len % 8, 0);
        assert_eq!(time_len % 12, 0);
        let idx = OffsetIndex::open_readonly(&idx_path, *base).expect("open index");
        let data = std::fs::read(path).expect("read segment");
        let mut prev = *base - 1;
        for i in 0..idx.closed_entries() {
            let (off, pos) = idx.entry(i).expect("index entry");
            assert!(off > prev, "offset index not ascending");
            prev = off;
            let h = BatchHeader::parse(&data[pos as usize..]).expect("batch at indexed position");
            assert_eq!(
                h.last_offset(),
                off,
                "index entry must name its batch's last offset"
            );
        }
        let time = TimeIndex::open_readonly(&time_path, *base).expect("open time index");
        let mut prev_ts = i64::MIN;
        for i in 0..time.closed_entries() {
            let (ts, off) = time.entry(i).expect("time entry");
            assert!(ts > prev_ts, "time index not ascending");
            prev_ts = ts;
            assert!(off >= *base && off < hw);
        }
        // The last time entry holds the segment's largest timestamp.
        let max_ts = Batches::new(&data)
            .map(|(h, _)| h.max_timestamp)
            .max()
            .expect("segment has batches");
        assert_eq!(time.last(time.closed_entries()).map(|e| e.0), Some(max_ts));
    }

    // Read every offset in random order, without a cursor.
    let mut order: Vec<i64> = (0..hw).collect();
    rng.shuffle(&mut order);
    for o in order {
        let f = log.read(o, 1, &mut None, true).expect("random read");
        let h = headers(&f.bytes)[0];
        assert!(
            h.base_offset <= o && o <= h.last_offset(),
            "read({o}) gave {h:?}"
        );
        let want = batches
            .iter()
            .find(|(b, l)| *b <= o && o <= *l)
            .expect("batch for offset");
        assert_eq!((h.base_offset, h.last_offset()), *want);
    }
    // And sequentially with a cursor.
    let all = read_all(&log);
    assert_eq!(all.len() as i64, hw);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as i64));
}

#[test]
fn offset_for_time_across_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("index.interval.bytes", "64")]);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offset_for_time(0).expect("empty log"), None);
    // Offset o has timestamp T0 + 10*o, except a few that go back in time.
    let t0 = 1_700_000_000_000i64;
    let mut all_ts: Vec<i64> = Vec::new();
    let mut o = 0i64;
    for i in 0..120 {
        let n = 1 + i % 4;
        let mut ts: Vec<i64> = (0..n).map(|j| t0 + 10 * (o + j as i64)).collect();
        if i % 17 == 5 {
            ts[0] -= 500; // out of order: older than what came before
        }
        let mut b = batch_ts(&ts, &format!("b{i}"));
        let info = log.append(&mut b, Durability::PageCache).expect("append");
        assert_eq!(info.base_offset, o);
        all_ts.extend_from_slice(&ts);
        o += n as i64;
    }
    assert!(log.segment_count().expect("count") > 5);
    let brute = |target: i64| {
        all_ts
            .iter()
            .enumerate()
            .find(|(_, ts)| **ts >= target)
            .map(|(i, ts)| (i as i64, *ts))
    };
    let max = *all_ts.iter().max().expect("timestamps");
    let mut targets = vec![i64::MIN, 0, t0 - 1, t0, t0 + 1, max, max + 1, i64::MAX];
    for off in (0..o).step_by(7) {
        targets.push(t0 + 10 * off);
        targets.push(t0 + 10 * off + 3);
        targets.push(t0 + 10 * off - 450);
    }
    for t in targets {
        assert_eq!(
            log.offset_for_time(t).expect("offset_for_time"),
            brute(t),
            "offset_for_time({t})"
        );
    }
}

/// KIP-734's max-timestamp query: the first record carrying the largest
/// timestamp, wherever it is (a closed segment or the active one, inside a
/// batch), ties going to the earliest offset, as Kafka answers.
#[test]
fn max_timestamp_is_the_first_record_with_the_largest_timestamp() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("index.interval.bytes", "64")]);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.max_timestamp().expect("empty log"), None);
    let t0 = 1_700_000_000_000i64;
    let mut all_ts: Vec<i64> = Vec::new();
    let mut rng = Rng(11);
    let brute = |all: &[i64]| {
        let max = *all.iter().max()?;
        all.iter().position(|t| *t == max).map(|i| (i as i64, max))
    };
    for i in 0..150 {
        let n = 1 + (rng.next() % 4) as usize;
        // Timestamps jump around; a new largest one now and then, in the
        // middle of a batch, and repeated later (the earliest must win).
        let ts: Vec<i64> = (0..n)
            .map(|_| t0 + (rng.next() % (100 + 20 * i as u64)) as i64)
            .collect();
        let mut b = batch_ts(&ts, &format!("b{i}"));
        log.append(&mut b, Durability::PageCache).expect("append");
        all_ts.extend_from_slice(&ts);
        assert_eq!(
            log.max_timestamp().expect("max_timestamp"),
            brute(&all_ts),
            "after batch {i}"
        );
    }
    assert!(log.segment_count().expect("count") > 5);
    // The largest timestamp early on, in a segment long closed.
    let mut b = batch_ts(&[t0 - 5, t0 + 1_000_000, t0 + 1_000_000], "peak");
    log.append(&mut b, Durability::PageCache).expect("append");
    all_ts.extend_from_slice(&[t0 - 5, t0 + 1_000_000, t0 + 1_000_000]);
    let peak = brute(&all_ts);
    assert_eq!(peak.map(|p| p.0), Some(all_ts.len() as i64 - 2));
    for i in 0..60 {
        let mut b = batch_ts(&[t0 + i, t0 + 1_000_000], &format!("c{i}"));
        log.append(&mut b, Durability::PageCache).expect("append");
        all_ts.extend_from_slice(&[t0 + i, t0 + 1_000_000]);
    }
    assert_eq!(log.max_timestamp().expect("max_timestamp"), peak);
    drop(log);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.max_timestamp().expect("after reopen"), peak);
}

#[test]
fn index_full_rolls_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // 64-byte indexes hold 8 offset entries and 5 time entries.
    let cfg = config(&[("segment.index.bytes", "64"), ("index.interval.bytes", "1")]);
    let log = open_log(tmp.path(), &cfg);
    let mut rng = Rng(99);
    let batches = fill(&log, 40, 10_000, &mut rng);
    assert!(log.segment_count().expect("count") > 3);
    let all = read_all(&log);
    assert_eq!(all.len() as i64, batches.last().expect("batches").1 + 1);
}

// -------------------------------------------------------------- retention

#[test]
fn retention_bytes_deletes_oldest_segments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "3000")]);
    let log = open_log(tmp.path(), &cfg);
    let mut rng = Rng(7);
    let batches = fill(&log, 200, now_ms(), &mut rng);
    let hw = batches.last().expect("batches").1 + 1;
    let (start, end) = log.offsets().expect("offsets");
    assert_eq!(end, hw);
    assert!(start > 0, "retention never advanced the log start");

    let files = segment_files(&part_dir(tmp.path()));
    let first = *files.keys().next().expect("a segment remains");
    assert_eq!(
        start, first,
        "log start is the first remaining segment's base"
    );
    // Kafka's rule: a segment goes while the rest still holds retention.bytes.
    let size = log.size_bytes().expect("size");
    assert!(size <= 3000 + 2 * 1024, "kept {size} bytes");
    // Retention runs on every roll; run it once more now the appends are done.
    log.enforce_retention().expect("retention");
    let files = segment_files(&part_dir(tmp.path()));
    let first = *files.keys().next().expect("a segment remains");
    let (start, _) = log.offsets().expect("offsets");
    assert_eq!(start, first);
    let size = log.size_bytes().expect("size");
    let first_len = file_len(&files[&first]);
    assert!(
        files.len() == 1 || size - first_len < 3000,
        "kept more than needed: {size}"
    );
    // Deleted segments left no files behind.
    for e in std::fs::read_dir(part_dir(tmp.path())).expect("list") {
        let p = e.expect("entry").path();
        if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
            if let Ok(base) = stem.parse::<i64>() {
                assert!(base >= first, "stale file {p:?}");
            }
        }
    }

    expect_out_of_range(
        log.read(start - 1, 100, &mut None, true),
        start - 1,
        start,
        hw,
    );
    expect_out_of_range(log.read(0, 100, &mut None, true), 0, start, hw);
    let f = log
        .read(start, 100, &mut None, true)
        .expect("read at start");
    assert_eq!(f.log_start_offset, start);
    assert_eq!(headers(&f.bytes)[0].base_offset, start);
    let recs = read_all(&log);
    assert_eq!(recs.len() as i64, hw - start);
    assert_eq!(recs[0].0, start);
}

#[test]
fn retention_ms_deletes_expired_segments_and_active_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.ms", "60000")]);
    let log = open_log(tmp.path(), &cfg);
    let mut rng = Rng(11);
    // Old records (two hours ago) in several segments.
    let old = fill(&log, 60, now_ms() - 2 * 3600 * 1000, &mut rng);
    let old_end = old.last().expect("old").1 + 1;
    // enforce_retention runs on every roll: the old closed segments are gone.
    let (start, _) = log.offsets().expect("offsets");
    assert!(start > 0);
    // Now make the active segment expire too: everything goes.
    let deleted = log.enforce_retention().expect("retention");
    assert!(deleted >= 1);
    assert_eq!(log.offsets().expect("offsets"), (old_end, old_end));
    expect_out_of_range(
        log.read(old_end - 1, 100, &mut None, true),
        old_end - 1,
        old_end,
        old_end,
    );
    let f = log
        .read(old_end, 100, &mut None, true)
        .expect("read at end");
    assert!(f.bytes.is_empty());

    // New records go on at the same offsets and stay.
    let fresh = fill(&log, 30, now_ms(), &mut rng);
    assert_eq!(fresh[0].0, old_end);
    assert_eq!(log.enforce_retention().expect("retention"), 0);
    let recs = read_all(&log);
    assert_eq!(
        recs.len() as i64,
        fresh.last().expect("fresh").1 + 1 - old_end
    );
    assert_eq!(recs[0].0, old_end);

    // Retention survives reopening: the start stays where it was.
    drop(log);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets").0, old_end);
}

#[test]
fn retention_ms_keeps_segments_with_recent_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "512"), ("retention.ms", "60000")]);
    let log = open_log(tmp.path(), &cfg);
    let now = now_ms();
    // Old batches, then recent ones.
    for i in 0..20 {
        let mut b = batch(3, now - 3_600_000 + i, "old");
        log.append(&mut b, Durability::PageCache)
            .expect("append old");
    }
    for i in 0..20 {
        let mut b = batch(3, now + i, "new");
        log.append(&mut b, Durability::PageCache)
            .expect("append new");
    }
    log.enforce_retention().expect("retention");
    let (start, end) = log.offsets().expect("offsets");
    assert_eq!(end, 120);
    let recs = read_all(&log);
    // Every recent record survived; old ones may linger only in a segment
    // that also holds recent ones.
    let new_count = recs
        .iter()
        .filter(|r| value_of(r).starts_with("new"))
        .count();
    assert_eq!(new_count, 60);
    assert!(start <= 60);
    assert!(start > 0);
}

// --------------------------------------------------------------- recovery

const F_SEQ: u64 = 8;
const F_CLEAN: u64 = 12 * 8;
const F_BOOT_ID: u64 = 15 * 8;

fn poke_head(root: &Path, at: u64, value: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(part_dir(root).join("partition.head"))
        .expect("open head file");
    f.write_all_at(&value.to_ne_bytes(), at)
        .expect("write head field");
}

fn peek_head(root: &Path, at: u64) -> u64 {
    let f = std::fs::File::open(part_dir(root).join("partition.head")).expect("open head file");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).expect("read head field");
    u64::from_ne_bytes(b)
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open segment for append");
    f.write_all(bytes).expect("append bytes");
}

fn last_segment(root: &Path) -> PathBuf {
    segment_files(&part_dir(root))
        .into_values()
        .next_back()
        .expect("a segment")
}

/// How a test makes the next open distrust the head.
#[derive(Clone, Copy, Debug)]
enum Unclean {
    /// The head is clean: only the unpublished tail is cut.
    CleanHead,
    /// No head at all: full recovery from the files.
    HeadDeleted,
    /// Written in an earlier boot, not closed cleanly.
    EarlierBoot,
    /// A writer died in the middle of a head update.
    TornHeadUpdate,
    /// A process crashed in this boot (head intact, not clean).
    CrashedThisBoot,
}

fn make_unclean(root: &Path, how: Unclean) {
    match how {
        Unclean::CleanHead => {}
        Unclean::HeadDeleted => {
            std::fs::remove_file(part_dir(root).join("partition.head")).expect("delete head")
        }
        Unclean::EarlierBoot => {
            poke_head(root, F_CLEAN, 0);
            poke_head(root, F_BOOT_ID, 0);
        }
        Unclean::TornHeadUpdate => {
            let seq = peek_head(root, F_SEQ);
            poke_head(root, F_SEQ, seq | 1);
        }
        Unclean::CrashedThisBoot => {
            poke_head(root, F_CLEAN, 0);
        }
    }
}

#[test]
fn torn_tail_is_cut_and_appends_continue_gap_free() {
    for how in [
        Unclean::CleanHead,
        Unclean::HeadDeleted,
        Unclean::EarlierBoot,
        Unclean::TornHeadUpdate,
        Unclean::CrashedThisBoot,
    ] {
        for tail in ["half batch", "garbage", "length past end"] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let cfg = config(&[("segment.bytes", "2048"), ("index.interval.bytes", "128")]);
            let mut rng = Rng(3);
            let hw = {
                let log = open_log(tmp.path(), &cfg);
                let batches = fill(&log, 40, 50_000, &mut rng);
                batches.last().expect("batches").1 + 1
            };
            let seg = last_segment(tmp.path());
            let good_len = file_len(&seg);
            let junk = match tail {
                "half batch" => {
                    let b = batch(5, 60_000, "torn");
                    b[..b.len() / 2].to_vec()
                }
                "garbage" => vec![0xA5; 300],
                _ => {
                    let mut b = batch(2, 60_000, "long");
                    b[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&100_000i32.to_be_bytes());
                    b
                }
            };
            append_to_file(&seg, &junk);
            make_unclean(tmp.path(), how);

            let log = open_log(tmp.path(), &cfg);
            assert_eq!(log.offsets().expect("offsets"), (0, hw), "{how:?}/{tail}");
            assert_eq!(file_len(&seg), good_len, "{how:?}/{tail}: tail not cut");
            let mut b = batch(3, 70_000, "after");
            let info = log.append(&mut b, Durability::PageCache).expect("append");
            assert_eq!(info.base_offset, hw, "{how:?}/{tail}");
            let recs = read_all(&log);
            assert_eq!(recs.len() as i64, hw + 3);
            assert!(recs.iter().enumerate().all(|(i, r)| r.0 == i as i64));
            assert_eq!(value_of(&recs[hw as usize]), "after-0");
        }
    }
}

#[test]
fn recovery_truncates_at_a_torn_batch_in_the_active_segment() {
    // A head whose active_size promises less than the file holds is not the
    // only torn case: cut a batch in the middle and lose the head.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    let sizes: Vec<usize> = {
        let log = open_log(tmp.path(), &cfg);
        (0..10)
            .map(|i| {
                let mut b = batch(2, 1_000 + i, "x");
                log.append(&mut b, Durability::PageCache).expect("append");
                b.len()
            })
            .collect()
    };
    let seg = last_segment(tmp.path());
    let keep: usize = sizes[..6].iter().sum::<usize>() + sizes[6] / 3;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment")
        .set_len(keep as u64)
        .expect("cut segment");
    make_unclean(tmp.path(), Unclean::HeadDeleted);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (0, 12));
    assert_eq!(file_len(&seg), sizes[..6].iter().sum::<usize>() as u64);
    let mut b = batch(1, 5_000, "y");
    assert_eq!(
        log.append(&mut b, Durability::PageCache)
            .expect("append")
            .base_offset,
        12
    );
}

/// Byte ranges of each batch in a segment file.
fn batch_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for (h, _) in Batches::new(data) {
        out.push((pos, pos + h.total_size()));
        pos += h.total_size();
    }
    assert_eq!(pos, data.len(), "segment holds whole batches");
    out
}

#[test]
fn corruption_in_a_closed_segment_is_reported_with_path_and_position() {
    let cfg = config(&[("segment.bytes", "2048"), ("index.interval.bytes", "256")]);
    let mut rng = Rng(0xC0FFEE);
    for round in 0..24 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let hw = {
            let log = open_log(tmp.path(), &cfg);
            let b = fill(&log, 80, 1_000, &mut Rng(5));
            b.last().expect("batches").1 + 1
        };
        let files = segment_files(&part_dir(tmp.path()));
        assert!(files.len() >= 3);
        // Corrupt one byte in the second segment (closed, not the first).
        let (seg_base, seg_path) = files
            .iter()
            .nth(1)
            .map(|(b, p)| (*b, p.clone()))
            .expect("2nd");
        let data = std::fs::read(&seg_path).expect("read segment");
        let spans = batch_spans(&data);
        // Pick a batch after the first, and a byte in it that the format
        // protects: the length, or anything the CRC covers. (The base offset
        // and leader epoch are outside the CRC by design.)
        let k = 1 + rng.below(spans.len() as u64 - 1) as usize;
        let (bstart, bend) = spans[k];
        let at = if round % 4 == 0 {
            bstart + 8 + rng.below(4) as usize // batch length
        } else {
            bstart + 17 + rng.below((bend - bstart - 17) as u64) as usize
        };
        let mut bad = data.clone();
        bad[at] ^= 1 << rng.below(8);
        std::fs::write(&seg_path, &bad).expect("write corrupted segment");

        let log = open_log(tmp.path(), &cfg);
        let first_bad_offset = BatchHeader::parse(&data[bstart..])
            .expect("header")
            .base_offset;

        // Reading from the segment's start returns the valid batches first,
        // then the error naming the file and the batch position.
        let mut got = Vec::new();
        let mut next = seg_base;
        let mut cursor = None;
        let err = loop {
            match log.read(next, 1 << 20, &mut cursor, true) {
                Ok(f) => {
                    for h in headers(&f.bytes) {
                        got.push(h.base_offset);
                        next = h.next_offset();
                    }
                    if let Some(e) = f.error {
                        break e;
                    }
                    assert!(
                        !f.bytes.is_empty(),
                        "round {round}: read stopped without error"
                    );
                }
                Err(e) => break e,
            }
        };
        let want: Vec<i64> = spans[..k]
            .iter()
            .map(|(s, _)| BatchHeader::parse(&data[*s..]).expect("header").base_offset)
            .collect();
        assert_eq!(
            got, want,
            "round {round}: valid batches before the corrupt one"
        );
        assert_eq!(next, first_bad_offset);
        match err {
            Error::CorruptRecord { path, position, .. } => {
                assert_eq!(path, seg_path, "round {round}");
                assert_eq!(position, bstart as u64, "round {round}: byte {at}");
            }
            other => panic!("round {round}: expected CorruptRecord, got {other:?}"),
        }

        // Later segments still read fine; reading every offset never panics.
        let later = *files.keys().nth(2).expect("3rd segment");
        let recs = read_all_from(&log, later);
        assert_eq!(recs.len() as i64, hw - later);
        for o in 0..hw {
            let _ = log.read(o, 1 << 16, &mut None, true);
            let _ = log.read(o, 1, &mut None, false);
        }
        let _ = log.offset_for_time(1_000 + 10 * first_bad_offset);
    }
}

#[test]
fn head_deleted_full_recovery_rebuilds_identical_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1500"), ("index.interval.bytes", "100")]);
    let mut rng = Rng(42);
    let snapshot = |root: &Path| {
        let mut m = BTreeMap::new();
        for (base, p) in segment_files(&part_dir(root)) {
            m.insert(
                base,
                (
                    std::fs::read(&p).expect("log"),
                    std::fs::read(p.with_extension("index")).expect("index"),
                    std::fs::read(p.with_extension("timeindex")).expect("timeindex"),
                ),
            );
        }
        m
    };
    let (before, state, hw) = {
        let log = open_log(tmp.path(), &cfg);
        let b = fill(&log, 120, 7_000, &mut rng);
        let st = log.head().read().expect("head state");
        (snapshot(tmp.path()), st, b.last().expect("batches").1 + 1)
    };
    assert!(before.len() > 4);
    make_unclean(tmp.path(), Unclean::HeadDeleted);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (0, hw));
    let st = log.head().read().expect("recovered head");
    assert_eq!(st.next_offset, state.next_offset);
    assert_eq!(st.active_base, state.active_base);
    assert_eq!(st.active_size, state.active_size);
    assert_eq!(st.index_entries, state.index_entries);
    assert_eq!(st.time_entries, state.time_entries);
    assert_eq!(st.max_timestamp, state.max_timestamp);
    assert_eq!(st.offset_of_max_timestamp, state.offset_of_max_timestamp);
    let after = snapshot(tmp.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (base, (log_b, idx_b, time_b)) in &before {
        let (log_a, idx_a, time_a) = &after[base];
        assert!(log_a == log_b, "segment {base} bytes changed");
        if *base == st.active_base {
            // The active index is preallocated; its valid entries must match.
            let n = st.index_entries as usize * 8;
            assert_eq!(idx_a[..n], idx_b[..n], "active offset index");
            let n = st.time_entries as usize * 12;
            assert_eq!(time_a[..n], time_b[..n], "active time index");
        } else {
            assert_eq!(idx_a, idx_b, "offset index of segment {base}");
            assert_eq!(time_a, time_b, "time index of segment {base}");
        }
    }
    let recs = read_all(&log);
    assert_eq!(recs.len() as i64, hw);
    let mut b = batch(2, 9_000, "more");
    assert_eq!(
        log.append(&mut b, Durability::PageCache)
            .expect("append")
            .base_offset,
        hw
    );
}

#[test]
fn head_deleted_after_retention_recovers_from_first_remaining_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "2500")]);
    let mut rng = Rng(8);
    let (start, hw) = {
        let log = open_log(tmp.path(), &cfg);
        let b = fill(&log, 100, now_ms(), &mut rng);
        (
            log.offsets().expect("offsets").0,
            b.last().expect("batches").1 + 1,
        )
    };
    assert!(start > 0);
    make_unclean(tmp.path(), Unclean::HeadDeleted);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (start, hw));
    assert_eq!(read_all(&log).len() as i64, hw - start);
}

#[test]
fn clean_reopen_keeps_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    let mut rng = Rng(1);
    let hw = {
        let log = open_log(tmp.path(), &cfg);
        fill(&log, 50, 1, &mut rng).last().expect("batches").1 + 1
    };
    for _ in 0..3 {
        let log = open_log(tmp.path(), &cfg);
        assert_eq!(log.offsets().expect("offsets"), (0, hw));
        assert_eq!(read_all(&log).len() as i64, hw);
    }
}

// ------------------------------------------- several instances, threads

#[test]
fn two_instances_share_one_partition_like_two_processes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "4096"), ("index.interval.bytes", "256")]);
    let a = Arc::new(open_log(tmp.path(), &cfg));
    let b = Arc::new(open_log(tmp.path(), &cfg));
    const PER_THREAD: usize = 150;

    let mut threads = Vec::new();
    for t in 0..4usize {
        let (mine, other) = if t % 2 == 0 {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        threads.push(std::thread::spawn(move || {
            let mut infos = Vec::new();
            for i in 0..PER_THREAD {
                let n = 1 + (i + t) % 3;
                let mut bytes = batch(n, 1_000 + i as i64, &format!("t{t}-{i}"));
                let info = mine
                    .append(&mut bytes, Durability::PageCache)
                    .expect("concurrent append");
                // The other instance sees it at once, without reopening.
                let (_, hw) = other.offsets().expect("offsets from other instance");
                assert!(hw > info.last_offset);
                let f = other
                    .read(info.base_offset, 1, &mut None, true)
                    .expect("read own append through the other instance");
                let h = headers(&f.bytes)[0];
                assert_eq!(h.base_offset, info.base_offset);
                assert_eq!(value_of(&decode(&f.bytes)[0]), format!("t{t}-{i}-0"));
                infos.push(info);
            }
            infos
        }));
    }
    let mut ranges = Vec::new();
    for th in threads {
        ranges.extend(th.join().expect("appender thread"));
    }
    ranges.sort_by_key(|i| i.base_offset);
    let mut next = 0;
    for r in &ranges {
        assert_eq!(r.base_offset, next, "gap or overlap in assigned offsets");
        next = r.last_offset + 1;
    }
    let total: i64 = next;
    assert_eq!(a.offsets().expect("a offsets"), (0, total));
    assert_eq!(b.offsets().expect("b offsets"), (0, total));
    assert!(a.segment_count().expect("segments") > 3);
    assert_eq!(a.segment_count().expect("a"), b.segment_count().expect("b"));

    // Both instances read the same, gap-free, duplicate-free sequence, and
    // each thread's batches are in the order it appended them.
    let ra = read_all(&a);
    let rb = read_all(&b);
    assert_eq!(ra, rb);
    assert_eq!(ra.len() as i64, total);
    let mut seen = HashSet::new();
    let mut last_i = [-1i64; 4];
    for (i, r) in ra.iter().enumerate() {
        assert_eq!(r.0, i as i64);
        let v = value_of(r);
        assert!(seen.insert(v.clone()), "duplicate record {v}");
        let mut parts = v.trim_start_matches('t').split('-');
        let t: usize = parts.next().and_then(|x| x.parse().ok()).expect("thread");
        let bi: i64 = parts.next().and_then(|x| x.parse().ok()).expect("batch");
        assert!(bi >= last_i[t]);
        last_i[t] = bi;
    }
    drop(a);
    assert_eq!(
        peek_head(tmp.path(), F_CLEAN),
        0,
        "closed clean while b is open"
    );
    drop(b);
    assert_eq!(
        peek_head(tmp.path(), F_CLEAN),
        1,
        "last one out closes clean"
    );
    // The last one out closed cleanly: the reopen trusts the head.
    let c = open_log(tmp.path(), &cfg);
    assert_eq!(c.offsets().expect("offsets"), (0, total));
    assert_closed_indexes_are_trimmed(&part_dir(tmp.path()));
}

/// Every closed segment's indexes hold exactly their valid entries, and the
/// last time entry is the segment's largest timestamp.
fn assert_closed_indexes_are_trimmed(dir: &Path) {
    let files = segment_files(dir);
    for (base, path) in files.iter().take(files.len().saturating_sub(1)) {
        let data = std::fs::read(path).expect("read segment");
        let idx_len = file_len(&path.with_extension("index"));
        let time_len = file_len(&path.with_extension("timeindex"));
        assert!(
            idx_len < 64 * 1024,
            "segment {base} offset index is {idx_len} bytes"
        );
        assert!(
            time_len < 64 * 1024,
            "segment {base} time index is {time_len} bytes"
        );
        let time = TimeIndex::open_readonly(&path.with_extension("timeindex"), *base)
            .expect("open time index");
        let max_ts = Batches::new(&data).map(|(h, _)| h.max_timestamp).max();
        assert_eq!(time.last(time.closed_entries()).map(|e| e.0), max_ts);
    }
}

#[test]
fn readers_racing_rolls_leave_closed_indexes_intact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "512"), ("index.interval.bytes", "64")]);
    let log = Arc::new(open_log(tmp.path(), &cfg));
    let other = Arc::new(open_log(tmp.path(), &cfg));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in [log.clone(), other.clone(), log.clone()] {
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (start, end) = r.offsets().expect("offsets");
                if end > start {
                    let f = r.read(end - 1, 1, &mut None, true).expect("read tail");
                    assert!(f.error.is_none());
                }
                let _ = r.size_bytes().expect("size");
                n += 1;
            }
            n
        }));
    }
    let mut rng = Rng(77);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_millis(1500) {
        fill(&log, 20, now_ms(), &mut rng);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader thread");
    }
    assert_closed_indexes_are_trimmed(&part_dir(tmp.path()));
    // Nothing was lost to a bogus timestamp in a closed index.
    assert_eq!(log.enforce_retention().expect("retention"), 0);
    assert_eq!(log.offsets().expect("offsets").0, 0);
}

#[test]
fn single_instance_concurrent_appends_and_reads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "2048")]);
    let log = Arc::new(open_log(tmp.path(), &cfg));
    let mut threads = Vec::new();
    for t in 0..4 {
        let log = log.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..100 {
                let mut b = batch(2, i, &format!("t{t}-{i}"));
                log.append(&mut b, Durability::PageCache).expect("append");
            }
        }));
    }
    for th in threads {
        th.join().expect("thread");
    }
    let recs = read_all(&log);
    assert_eq!(recs.len(), 800);
    let vals: HashSet<String> = recs.iter().map(value_of).collect();
    assert_eq!(vals.len(), 800);
}

#[test]
fn deleted_partition_refuses_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_log(tmp.path(), &config(&[]));
    let mut b = batch(1, 1, "x");
    log.append(&mut b, Durability::PageCache).expect("append");
    log.mark_deleted();
    assert!(log.is_deleted());
    let mut b = batch(1, 1, "y");
    assert!(matches!(
        log.append(&mut b, Durability::PageCache),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
}

#[test]
fn segment_ms_rolls_by_age() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open_log(tmp.path(), &config(&[("segment.ms", "20")]));
    let mut b = batch(2, 1, "a");
    log.append(&mut b, Durability::PageCache).expect("append");
    let mut b = batch(2, 2, "b");
    log.append(&mut b, Durability::PageCache).expect("append");
    assert_eq!(log.segment_count().expect("count"), 1);
    std::thread::sleep(std::time::Duration::from_millis(40));
    let mut b = batch(2, 3, "c");
    let info = log.append(&mut b, Durability::PageCache).expect("append");
    assert_eq!(info.base_offset, 4);
    assert_eq!(log.segment_count().expect("count"), 2);
    assert!(segment_files(&part_dir(tmp.path())).contains_key(&4));
    assert_eq!(read_all(&log).len(), 6);
}

#[test]
fn batch_larger_than_segment_bytes_gets_its_own_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "256")]);
    let log = open_log(tmp.path(), &cfg);
    let mut big = BatchBuilder::with_capacity(2048);
    big.append(1, None, Some(&[9u8; 1000]), &[]);
    let mut big = big.finish().to_vec();
    let mut copy = big.clone();
    log.append(&mut big, Durability::PageCache)
        .expect("append big");
    log.append(&mut copy, Durability::PageCache)
        .expect("append big again");
    let mut small = batch(1, 2, "s");
    log.append(&mut small, Durability::PageCache)
        .expect("append small");
    assert_eq!(log.segment_count().expect("count"), 3);
    let recs = read_all(&log);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].3.as_deref().map(<[u8]>::len), Some(1000));
}

#[test]
fn flush_advances_recovery_point_and_last_close_marks_clean() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    {
        let log = open_log(tmp.path(), &cfg);
        let other = open_log(tmp.path(), &cfg);
        fill(&log, 30, 1, &mut Rng(4));
        let st = log.head().read().expect("head");
        assert!(st.recovery_point < st.next_offset);
        other.flush().expect("flush");
        let st = log.head().read().expect("head");
        assert_eq!(st.recovery_point, st.next_offset);
        assert_eq!(st.flushed_size, st.active_size);
        drop(other);
        // One instance still has it open: not clean yet.
        assert_eq!(peek_head(tmp.path(), F_CLEAN), 0);
    }
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1);
    // Opening and reading change nothing, so the head stays clean (a crash
    // now has nothing to recover); the first append takes the mark back
    // before it writes.
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1);
    assert_eq!(
        read_all(&log).len() as i64,
        log.offsets().expect("offsets").1
    );
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1);
    fill(&log, 1, 5_000, &mut Rng(5));
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 0);
}

/// What `kill -9` leaves: the files as they are right now (the page cache
/// holds every byte written), copied to `to`.
fn snapshot_partition(root: &Path, to: &Path) {
    let dst = part_dir(to);
    std::fs::create_dir_all(&dst).expect("create snapshot dir");
    for e in std::fs::read_dir(part_dir(root)).expect("list partition dir") {
        let p = e.expect("dir entry").path();
        let name = p.file_name().expect("file name");
        std::fs::copy(&p, dst.join(name)).expect("copy partition file");
    }
}

#[test]
fn crash_after_the_first_append_to_a_clean_log_is_recovered() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "4096"), ("index.interval.bytes", "128")]);
    let hw = {
        let log = open_log(tmp.path(), &cfg);
        fill(&log, 20, 1, &mut Rng(7)).last().expect("batches").1 + 1
    };
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1);
    let log = open_log(tmp.path(), &cfg);
    let mut b = batch(3, 9_000, "acked");
    let info = log.append(&mut b, Durability::PageCache).expect("append");
    assert_eq!(info.base_offset, hw);
    // The process dies here, with an append after it that wrote its bytes
    // but never published the head.
    let crashed = tempfile::tempdir().expect("tempdir");
    snapshot_partition(tmp.path(), crashed.path());
    let seg = last_segment(crashed.path());
    let published_len = file_len(&seg);
    append_to_file(&seg, &batch(4, 9_100, "unpublished"));
    assert_eq!(
        peek_head(crashed.path(), F_CLEAN),
        0,
        "append left it clean"
    );

    let after = open_log(crashed.path(), &cfg);
    assert_eq!(after.offsets().expect("offsets"), (0, hw + 3));
    assert_eq!(file_len(&seg), published_len, "unpublished tail not cut");
    let recs = read_all(&after);
    assert_eq!(recs.len() as i64, hw + 3);
    assert!(recs.iter().enumerate().all(|(i, r)| r.0 == i as i64));
    assert_eq!(value_of(&recs[hw as usize + 2]), "acked-2");
    let mut b = batch(1, 9_200, "next");
    assert_eq!(
        after
            .append(&mut b, Durability::PageCache)
            .expect("append")
            .base_offset,
        hw + 3
    );
}

#[test]
fn crash_of_a_reader_leaves_a_clean_log_that_is_trusted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    let hw = {
        let log = open_log(tmp.path(), &cfg);
        fill(&log, 30, 1, &mut Rng(8)).last().expect("batches").1 + 1
    };
    let reader = open_log(tmp.path(), &cfg);
    assert_eq!(read_all(&reader).len() as i64, hw);
    let crashed = tempfile::tempdir().expect("tempdir");
    snapshot_partition(tmp.path(), crashed.path());
    assert_eq!(peek_head(crashed.path(), F_CLEAN), 1);
    let log = open_log(crashed.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (0, hw));
    assert_eq!(read_all(&log).len() as i64, hw);
}

#[test]
fn a_durable_append_puts_the_in_use_mark_on_disk_once() {
    const F_IN_USE_SYNCED: u64 = 17 * 8;
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    drop(open_log(tmp.path(), &cfg));
    let log = open_log(tmp.path(), &cfg);
    fill(&log, 1, 1, &mut Rng(9));
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 0);
    assert_eq!(peek_head(tmp.path(), F_IN_USE_SYNCED), 0);
    log.append(&mut batch(1, 2, "durable"), Durability::Fsync)
        .expect("append");
    assert_eq!(peek_head(tmp.path(), F_IN_USE_SYNCED), 1);
    drop(log);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1);
    assert_eq!(peek_head(tmp.path(), F_IN_USE_SYNCED), 0);
}

#[test]
fn stray_segment_from_an_unpublished_roll_is_discarded() {
    for how in [
        Unclean::CleanHead,
        Unclean::CrashedThisBoot,
        Unclean::HeadDeleted,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(&[("segment.bytes", "1024")]);
        let hw = {
            let log = open_log(tmp.path(), &cfg);
            fill(&log, 30, 1, &mut Rng(6)).last().expect("batches").1 + 1
        };
        // A roll that created its file (with a torn write in it) but died
        // before publishing the head.
        let stray = part_dir(tmp.path()).join(super::segment::log_file_name(hw));
        std::fs::write(&stray, [0x5Au8; 100]).expect("write stray segment");
        make_unclean(tmp.path(), how);
        let log = open_log(tmp.path(), &cfg);
        assert_eq!(log.offsets().expect("offsets"), (0, hw), "{how:?}");
        let mut b = batch(2, 5, "next");
        assert_eq!(
            log.append(&mut b, Durability::PageCache)
                .expect("append")
                .base_offset,
            hw,
            "{how:?}"
        );
        let recs = read_all(&log);
        assert_eq!(recs.len() as i64, hw + 2, "{how:?}");
        assert!(recs.iter().enumerate().all(|(i, r)| r.0 == i as i64));
    }
}

#[test]
fn segments_left_below_the_log_start_are_removed_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "2048")]);
    let dir = part_dir(tmp.path());
    let saved = tmp.path().join("saved");
    std::fs::create_dir_all(&saved).expect("mkdir");
    let (start, hw) = {
        let log = open_log(tmp.path(), &cfg);
        // Before retention removes segment 0, keep a copy of its files.
        fill(&log, 8, now_ms(), &mut Rng(2));
        for e in std::fs::read_dir(&dir).expect("list") {
            let p = e.expect("entry").path();
            if p.file_stem().and_then(|s| s.to_str()) == Some(&format!("{:020}", 0)) {
                std::fs::copy(&p, saved.join(p.file_name().expect("name"))).expect("copy");
            }
        }
        let b = fill(&log, 100, now_ms(), &mut Rng(3));
        let (start, _) = log.offsets().expect("offsets");
        (start, b.last().expect("batches").1 + 1)
    };
    assert!(start > 0);
    // A retention pass that died after publishing the new start but before
    // unlinking: the old files are back.
    for e in std::fs::read_dir(&saved).expect("list saved") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, dir.join(p.file_name().expect("name"))).expect("restore");
    }
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (start, hw));
    assert!(!segment_files(&dir).contains_key(&0), "stale segment kept");
    assert_eq!(read_all(&log).len() as i64, hw - start);
    // offset_for_time never answers below the log start.
    let (o, _) = log
        .offset_for_time(i64::MIN)
        .expect("offset_for_time")
        .expect("some record");
    assert_eq!(o, start);
}

#[test]
fn full_recovery_truncates_at_corruption_in_an_older_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    {
        let log = open_log(tmp.path(), &cfg);
        fill(&log, 60, 1, &mut Rng(12));
    }
    let files = segment_files(&part_dir(tmp.path()));
    let (_, second) = files.iter().nth(1).expect("second segment");
    let mut data = std::fs::read(second).expect("read");
    let spans = batch_spans(&data);
    let (bstart, bend) = spans[spans.len() / 2];
    let bad_base = BatchHeader::parse(&data[bstart..])
        .expect("header")
        .base_offset;
    data[(bstart + bend) / 2] ^= 0xFF;
    std::fs::write(second, &data).expect("write");
    make_unclean(tmp.path(), Unclean::HeadDeleted);

    let log = open_log(tmp.path(), &cfg);
    // Everything from the corrupt batch on is gone, later segments too.
    assert_eq!(log.offsets().expect("offsets"), (0, bad_base));
    assert_eq!(file_len(second), bstart as u64);
    assert_eq!(segment_files(&part_dir(tmp.path())).len(), 2);
    let recs = read_all(&log);
    assert_eq!(recs.len() as i64, bad_base);
    let mut b = batch(2, 5, "after");
    assert_eq!(
        log.append(&mut b, Durability::PageCache)
            .expect("append")
            .base_offset,
        bad_base
    );
    assert_eq!(read_all(&log).len() as i64, bad_base + 2);
}

#[test]
fn clean_open_maps_indexes_lazily_and_recreates_missing_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[
        ("index.interval.bytes", "64"),
        ("segment.index.bytes", "4096"),
    ]);
    let mut expect = Vec::new();
    {
        let log = open_log(tmp.path(), &cfg);
        for i in 0..40 {
            log.append(
                &mut batch(3, 1000 + i, &format!("a{i}")),
                Durability::PageCache,
            )
            .expect("append");
        }
        expect.extend(read_all(&log));
    }
    // The clean reopen trusts the head: with the active segment's indexes
    // gone, reads still find every offset (scanning from the segment start)
    // and opening or reading from the start maps no index at all.
    let active = last_segment(tmp.path());
    std::fs::remove_file(active.with_extension("index")).expect("rm index");
    std::fs::remove_file(active.with_extension("timeindex")).expect("rm timeindex");
    let log = open_log(tmp.path(), &cfg);
    let f = log.read(0, 1, &mut None, true).expect("read head");
    assert_eq!(decode(&f.bytes)[0], expect[0]);
    assert!(
        !active.with_extension("index").exists(),
        "mapped without need"
    );
    for from in [0, 1, 50, 77, 119] {
        assert_eq!(read_all_from(&log, from), expect[from as usize..].to_vec());
    }
    // The first append maps them for writing, recreating them at full size,
    // and lookups through the new entries land on the right batches.
    for i in 0..40 {
        log.append(
            &mut batch(3, 2000 + i, &format!("b{i}")),
            Durability::PageCache,
        )
        .expect("append");
    }
    assert_eq!(file_len(&active.with_extension("index")), 4096);
    let all = read_all(&log);
    assert_eq!(all.len(), 240);
    assert_eq!(&all[..120], &expect[..]);
    for from in [121, 150, 200, 239] {
        assert_eq!(read_all_from(&log, from), all[from as usize..].to_vec());
    }
    assert_eq!(log.offset_for_time(2030).expect("time"), Some((206, 2030)));
}

#[test]
fn clean_reopen_of_a_missing_active_segment_recovers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    {
        let log = open_log(tmp.path(), &cfg);
        log.append(&mut batch(5, 1000, "a"), Durability::PageCache)
            .expect("append");
    }
    // The clean head trusts a one-segment log without listing the
    // directory; the segment it names is gone, which must not be an error.
    let active = last_segment(tmp.path());
    std::fs::remove_file(&active).expect("rm log");
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (5, 5));
    log.append(&mut batch(2, 2000, "b"), Durability::PageCache)
        .expect("append");
    let got = read_all(&log);
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(value_of(&got[1]), "b-1");
}

#[test]
fn append_parts_writes_the_bytes_append_writes() {
    use ottla_record::single::SingleRecordBatch;
    let cfg = config(&[]);
    let value: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let headers: [ottla_record::batch::HeaderRef<'_>; 1] = [(b"h", Some(b"v"))];
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let copied = open_log(a.path(), &cfg);
    let direct = open_log(b.path(), &cfg);
    for (i, durability) in [Durability::PageCache, Durability::Fsync]
        .into_iter()
        .enumerate()
    {
        let mut small = batch(2, 10, "small");
        copied
            .append(&mut small.clone(), durability)
            .expect("append");
        direct.append(&mut small, durability).expect("append");
        let mut builder = BatchBuilder::with_capacity(value.len() + 100);
        builder.append(20 + i as i64, Some(b"key"), Some(&value), &headers);
        let info = copied
            .append(builder.finish_mut(), durability)
            .expect("append");
        // Sealed up front (one pwritev), and sealed late (value first, CRC
        // while it is written back, header last): the same bytes.
        let (mut single, seal) = if durability == Durability::Fsync {
            let seal: crate::log::partition::SealFn = SingleRecordBatch::seal_first_part;
            (
                SingleRecordBatch::new_unsealed(20 + i as i64, Some(b"key"), &value, &headers),
                Some(seal),
            )
        } else {
            (
                SingleRecordBatch::new(20 + i as i64, Some(b"key"), &value, &headers),
                None,
            )
        };
        let (first, rest) = single.parts_mut();
        let got = direct
            .append_parts(first, &rest, durability, seal)
            .expect("append parts");
        assert_eq!(got, info);
    }
    let (fa, fb) = (last_segment(a.path()), last_segment(b.path()));
    assert!(std::fs::read(&fa).expect("read") == std::fs::read(&fb).expect("read"));
    let recs = read_all(&direct);
    assert_eq!(recs.len(), 6);
    assert_eq!(recs[2].3.as_deref(), Some(&value[..]));

    // Parts that do not add up to whole batches are refused, and nothing
    // is published.
    let mut single = SingleRecordBatch::new(30, None, &value, &[]);
    let (first, rest) = single.parts_mut();
    let err = direct
        .append_parts(first, &rest[..1], Durability::PageCache, None)
        .expect_err("short parts");
    assert!(matches!(err, Error::InvalidRecord(_)), "{err:?}");
    assert_eq!(direct.offsets().expect("offsets"), (0, 6));
}

// ------------------------------------------------- open path (header walk)

/// A clean head over a segment with no index entry and far more batch
/// headers than one read chunk of the open's header walk: the head is
/// trusted as is, and one that names a size inside a batch, or a wrong
/// next offset, is caught and the log re-validated with nothing lost.
#[test]
fn clean_head_checked_over_many_chunks_of_headers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // No index entry for the whole segment: the walk covers every batch.
    let cfg = config(&[("index.interval.bytes", "100000000")]);
    let mut sizes = Vec::new();
    {
        let log = open_log(root, &cfg);
        for i in 0..300 {
            let mut b = batch(1 + i % 3, 1000 + i as i64, &format!("b{i}"));
            log.append(&mut b, Durability::PageCache).expect("append");
            sizes.push(file_len(&last_segment(root)));
        }
        assert!(file_len(&last_segment(root)) > 3 * 8 * 1024);
    }
    let expect = read_all(&open_log(root, &cfg));
    assert_eq!(expect.len(), (0..300).map(|i| 1 + i % 3).sum::<usize>());
    assert_eq!(
        peek_head(root, F_CLEAN),
        1,
        "a reader leaves the head clean"
    );

    const F_NEXT: u64 = 2 * 8;
    const F_SIZE: u64 = 4 * 8;
    let next = peek_head(root, F_NEXT);
    let size = peek_head(root, F_SIZE);
    for (field, bad) in [
        (F_NEXT, next + 1),
        (F_SIZE, size - 7),
        (F_SIZE, sizes[150] + 3),
    ] {
        poke_head(root, field, bad);
        let log = open_log(root, &cfg);
        assert_eq!(read_all(&log), expect, "field {field} = {bad}");
        assert_eq!(log.offsets().expect("offsets").1, next as i64);
        drop(log);
        assert_eq!(
            peek_head(root, field),
            if field == F_NEXT { next } else { size }
        );
    }
}

/// Appends that stay within `index.interval.bytes` of a segment with no
/// index entry write none (so the indexes are not even mapped), and every
/// offset is still found; the first entry comes once the interval is
/// passed, and a crash in between recovers exactly.
#[test]
fn appends_below_the_first_index_interval_need_no_index() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let cfg = config(&[("index.interval.bytes", "4096")]);
    let mut n = 0usize;
    {
        let log = open_log(root, &cfg);
        while file_len(&last_segment(root)) < 3000 {
            let mut b = batch(2, 10 + n as i64, &format!("v{n}"));
            log.append(&mut b, Durability::PageCache).expect("append");
            n += 2;
        }
        assert_eq!(peek_head(root, 5 * 8), 0, "no index entry yet");
        for off in 0..n as i64 {
            let got = read_all_from(&log, off);
            assert_eq!(got.first().map(|r| r.0), Some(off));
        }
        while file_len(&last_segment(root)) < 12_000 {
            let mut b = batch(2, 10 + n as i64, &format!("v{n}"));
            log.append(&mut b, Durability::PageCache).expect("append");
            n += 2;
        }
        assert!(
            peek_head(root, 5 * 8) >= 2,
            "entries once past the interval"
        );
    }
    make_unclean(root, Unclean::EarlierBoot);
    let log = open_log(root, &cfg);
    let got = read_all(&log);
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, r)| r.0 == i as i64));
}

/// The open reads the offset index's last counted entry instead of mapping
/// the indexes; whatever the index files hold, a clean head over them
/// still opens to exactly the records written: an entry naming the wrong
/// batch, an index file too short for the head's count, and missing files.
#[test]
fn clean_open_checks_the_last_index_entry_whatever_the_files_hold() {
    let cfg = config(&[("index.interval.bytes", "256")]);
    type Damage = fn(&Path, u64);
    let damages: [(&str, Damage); 5] = [
        ("intact", |_, _| {}),
        ("last entry names another batch", |seg, entries| {
            let idx = seg.with_extension("index");
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&idx)
                .expect("index");
            // Offset 5 at position 0, where the batch of offsets 0-2 is.
            let e = [0, 0, 0, 5, 0, 0, 0, 0];
            f.write_all_at(&e, (entries - 1) * 8).expect("poke index");
        }),
        ("index shorter than the head's count", |seg, _| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(seg.with_extension("index"))
                .expect("index");
            f.set_len(8).expect("truncate index");
        }),
        ("time index missing", |seg, _| {
            std::fs::remove_file(seg.with_extension("timeindex")).expect("rm timeindex")
        }),
        ("offset index missing", |seg, _| {
            std::fs::remove_file(seg.with_extension("index")).expect("rm index")
        }),
    ];
    for (what, damage) in damages {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let n = {
            let log = open_log(root, &cfg);
            for i in 0..40 {
                let mut b = batch(3, 100 + i, &format!("x{i}"));
                log.append(&mut b, Durability::PageCache).expect("append");
            }
            120
        };
        let entries = peek_head(root, 5 * 8);
        assert!(entries >= 2, "{what}: index entries");
        damage(&last_segment(root), entries);
        let log = open_log(root, &cfg);
        let got = read_all(&log);
        assert_eq!(got.len(), n, "{what}");
        assert!(
            got.iter().enumerate().all(|(i, r)| r.0 == i as i64),
            "{what}"
        );
        let mut b = batch(1, 999, "after");
        let info = log
            .append(&mut b, Durability::PageCache)
            .expect("append after");
        assert_eq!(info.base_offset, n as i64, "{what}");
        for off in [0, 7, 60, 119, 120] {
            assert_eq!(
                read_all_from(&log, off).first().map(|r| r.0),
                Some(off),
                "{what}"
            );
        }
    }
}

// ------------------------------------------------- periodic retention

/// A topic `t` (one partition) whose fresh records expire after
/// `retention.ms`=1000, written into several small segments.
fn expiring_topic(root: &Path) -> (Arc<crate::store::Store>, Arc<PartitionLog>) {
    let store = crate::store::Store::open(root).expect("store");
    let topic = store
        .create_topic(
            "t",
            1,
            &[
                ("segment.bytes".to_string(), "1024".to_string()),
                ("retention.ms".to_string(), "1000".to_string()),
            ],
        )
        .expect("create topic");
    let log = store.partition(&topic, 0).expect("partition");
    let mut rng = Rng(5);
    fill(&log, 60, now_ms(), &mut rng);
    assert!(log.segment_count().expect("count") >= 3);
    (store, log)
}

/// Waits up to ten seconds for the log's start offset to pass zero.
fn start_advances(log: &PartitionLog) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if log.offsets().expect("offsets").0 > 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn retention_checker_deletes_expired_segments_without_a_roll() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, log) = expiring_topic(tmp.path());
    let segments = log.segment_count().expect("count");
    let (_, end) = log.offsets().expect("offsets");
    let checker = crate::retention_checker::RetentionChecker::start(&store, 100).expect("checker");
    // No append, roll, open or explicit call from here on.
    assert!(start_advances(&log), "expired segments never deleted");
    assert!(log.segment_count().expect("count") < segments);
    assert!(log.offsets().expect("offsets").0 <= end);
    drop(checker);
}

#[test]
fn retention_checker_skips_rounds_while_another_holds_the_lock() {
    use crate::ofd::ByteLocks;
    use crate::retention_checker::{check_once, lock_path, RetentionChecker, CHECK_BYTE};
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, log) = expiring_topic(tmp.path());
    // Another checker's round under way: this one's rounds are skipped.
    let other = ByteLocks::open(&lock_path(&store)).expect("open lock");
    assert!(other.try_lock(CHECK_BYTE, true).expect("take lock"));
    let mine = ByteLocks::open(&lock_path(&store)).expect("open lock");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(check_once(&store, &mine).expect("round"), None);
    let mut checker = RetentionChecker::start(&store, 50).expect("checker");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(log.offsets().expect("offsets").0, 0, "a round ran unlocked");
    // Released: the next round does the work, and holds the byte while it
    // does (a second round in parallel is skipped, never doubled).
    other.unlock(CHECK_BYTE).expect("unlock");
    assert!(start_advances(&log), "expired segments never deleted");
    checker.stop();
    assert_eq!(check_once(&store, &mine).expect("round"), Some(0));
}

#[test]
fn writers_in_one_process_share_one_retention_checker_per_interval() {
    use crate::retention_checker::RetentionChecker;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(tmp.path()).expect("store");
    let a = RetentionChecker::shared(&store, 60_000).expect("first");
    let b = RetentionChecker::shared(&store, 60_000).expect("second");
    assert!(Arc::ptr_eq(&a, &b), "one thread for one interval");
    let c = RetentionChecker::shared(&store, 30_000).expect("other interval");
    assert!(!Arc::ptr_eq(&a, &c));
    let weak = Arc::downgrade(&a);
    drop((a, b));
    assert!(weak.upgrade().is_none(), "stopped with its last holder");
    let d = RetentionChecker::shared(&store, 60_000).expect("again");
    assert!(!Arc::ptr_eq(&d, &c));
    assert_eq!(store.retention_checkers.lock().len(), 2);
}

// ------------------------------------------------- the open-file budget

/// Descriptors the open-file budget closed (the lock file, every `.log`)
/// are opened again by the next append or read, with nothing lost.
#[test]
fn descriptors_closed_by_the_budget_reopen_on_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("index.interval.bytes", "128")]);
    let mut rng = Rng(21);
    let log = open_log(tmp.path(), &cfg);
    let hw = fill(&log, 60, 1, &mut rng).last().expect("batches").1 + 1;
    let before = read_all(&log);
    assert_eq!(before.len() as i64, hw);
    assert!(
        log.open_descriptors() > 3,
        "segments read keep a descriptor"
    );
    log.close_descriptors();
    assert_eq!(log.open_descriptors(), 0);
    // Reads of closed and active segments, by index lookup and from the start.
    assert_eq!(read_all(&log), before);
    let mid = log.read(hw / 2, 1, &mut None, true).expect("lookup");
    assert!(headers(&mid.bytes)[0].last_offset() >= hw / 2);
    log.close_descriptors();
    let info = log
        .append(&mut batch(3, 5_000, "after"), Durability::Fsync)
        .expect("append after close");
    assert_eq!(info.base_offset, hw);
    log.close_descriptors();
    log.flush().expect("flush after close");
    let all = read_all(&log);
    assert_eq!(all.len() as i64, hw + 3);
    assert_eq!(value_of(&all[hw as usize]), "after-0");
    drop(log);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1, "closed clean");
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(read_all(&log), all);
}

/// A closed lock file is a process gone from the partition (the presence
/// lock goes with it): the other instance closes clean when it leaves,
/// and the first takes its presence again with the next append.
#[test]
fn a_closed_lock_file_gives_presence_up_until_the_next_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "2048")]);
    let a = open_log(tmp.path(), &cfg);
    let b = open_log(tmp.path(), &cfg);
    a.append(&mut batch(2, 1, "a"), Durability::PageCache)
        .expect("a");
    a.close_descriptors();
    let info = b
        .append(&mut batch(2, 2, "b"), Durability::PageCache)
        .expect("b");
    assert_eq!(info.base_offset, 2);
    drop(b);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1, "b was the only one left");
    let info = a
        .append(&mut batch(2, 3, "a2"), Durability::PageCache)
        .expect("a again");
    assert_eq!(info.base_offset, 4);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 0, "in use again");
    // Open again: a holds its presence, so c does not load the log alone.
    let c = open_log(tmp.path(), &cfg);
    drop(c);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 0, "a is still there");
    drop(a);
    assert_eq!(peek_head(tmp.path(), F_CLEAN), 1);
    let d = open_log(tmp.path(), &cfg);
    let vals: Vec<String> = read_all(&d).iter().map(value_of).collect();
    assert_eq!(vals, ["a-0", "a-1", "b-0", "b-1", "a2-0", "a2-1"]);
}

/// A reader whose segments' descriptors were closed, and then deleted by
/// another instance's retention, gets Kafka's out-of-range answer (and the
/// new log start reads), never an I/O error for a file that is gone.
#[test]
fn a_segment_deleted_while_its_descriptor_was_closed_reads_as_out_of_range() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("retention.bytes", "2500")]);
    let mut rng = Rng(22);
    let reader = open_log(tmp.path(), &cfg);
    let writer = open_log(tmp.path(), &cfg);
    fill(&writer, 8, now_ms(), &mut rng);
    let first = reader.read(0, 1, &mut None, true).expect("read first");
    assert!(!first.bytes.is_empty());
    reader.close_descriptors();
    fill(&writer, 100, now_ms(), &mut rng);
    let (start, _) = writer.offsets().expect("offsets");
    assert!(start > 0, "retention deleted nothing");
    match reader.read(0, 1, &mut None, true) {
        Err(Error::OffsetOutOfRange { start: s, .. }) => assert_eq!(s, start),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(read_all(&reader), read_all(&writer));
}

/// A deleted topic read or appended to through a log whose descriptors
/// were closed answers `UnknownTopicOrPartition`, as with them open.
#[test]
fn a_deleted_partition_with_closed_descriptors_is_unknown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(tmp.path()).expect("store");
    let t = store.create_topic("gone", 1, &[]).expect("create");
    let log = store.partition(&t, 0).expect("partition");
    log.append(&mut batch(2, 1, "x"), Durability::PageCache)
        .expect("append");
    log.close_descriptors();
    store.delete_topic("gone").expect("delete");
    let unknown = |r: Result<(), Error>| matches!(r, Err(Error::UnknownTopicOrPartition { .. }));
    assert!(unknown(log.read(0, 1024, &mut None, true).map(|_| ())));
    assert!(unknown(
        log.append(&mut batch(1, 2, "y"), Durability::PageCache)
            .map(|_| ())
    ));
}

// ------------------------------------------------- delete_records (log start)

#[test]
fn delete_records_moves_the_log_start_inside_a_segment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024")]);
    let log = open_log(tmp.path(), &cfg);
    let mut rng = Rng(11);
    let batches = fill(&log, 120, 1_000, &mut rng);
    let hw = batches.last().expect("batches").1 + 1;
    let files = segment_files(&part_dir(tmp.path()));
    assert!(
        files.len() > 4,
        "want several segments, got {}",
        files.len()
    );
    let bases: Vec<i64> = files.keys().copied().collect();
    // An offset strictly inside the third segment.
    let target = bases[2] + 1;
    assert!(target < bases[3]);

    assert_eq!(log.delete_records(target).expect("delete records"), target);
    assert_eq!(log.offsets().expect("offsets"), (target, hw));
    expect_out_of_range(
        log.read(target - 1, 100, &mut None, true),
        target - 1,
        target,
        hw,
    );
    let recs = read_all(&log);
    assert_eq!(recs.first().expect("records").0, target);
    assert_eq!(recs.len() as i64, hw - target);
    // Segments wholly below the start are gone; the one holding it stays.
    let left = segment_files(&part_dir(tmp.path()));
    assert_eq!(*left.keys().next().expect("a segment"), bases[2]);
    // Lower or equal: nothing changes. Above the high watermark: refused.
    assert_eq!(log.delete_records(1).expect("lower"), target);
    assert_eq!(log.delete_records(target).expect("same"), target);
    match log.delete_records(hw + 1) {
        Err(Error::OffsetOutOfRange { offset, .. }) => assert_eq!(offset, hw + 1),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        log.delete_records(-2),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // -1: the high watermark; every closed segment goes.
    assert_eq!(log.delete_records(-1).expect("to the end"), hw);
    assert_eq!(log.offsets().expect("offsets"), (hw, hw));
    assert_eq!(segment_files(&part_dir(tmp.path())).len(), 1);
    // Appends go on at the end.
    let mut b = batch(2, 9_000, "after");
    let info = log.append(&mut b, Durability::PageCache).expect("append");
    assert_eq!(info.base_offset, hw);
    assert_eq!(info.log_start_offset, hw);
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn delete_records_start_survives_every_kind_of_reopen() {
    for how in [
        Unclean::CleanHead,
        Unclean::HeadDeleted,
        Unclean::EarlierBoot,
        Unclean::TornHeadUpdate,
        Unclean::CrashedThisBoot,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = config(&[("segment.bytes", "1024")]);
        let mut rng = Rng(5);
        let (target, hw) = {
            let log = open_log(tmp.path(), &cfg);
            let batches = fill(&log, 60, 1_000, &mut rng);
            let hw = batches.last().expect("batches").1 + 1;
            let bases: Vec<i64> = segment_files(&part_dir(tmp.path()))
                .keys()
                .copied()
                .collect();
            let target = bases[1] + 2;
            log.delete_records(target).expect("delete records");
            (target, hw)
        };
        make_unclean(tmp.path(), how);
        let log = open_log(tmp.path(), &cfg);
        assert_eq!(log.offsets().expect("offsets"), (target, hw), "{how:?}");
        assert_eq!(read_all(&log).first().expect("records").0, target);
    }
}

#[test]
fn a_checkpoint_ahead_of_the_head_wins_after_a_crash() {
    // `delete_records` killed between writing its checkpoint and the head.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    {
        let log = open_log(tmp.path(), &cfg);
        let mut b = batch(10, 1_000, "a");
        log.append(&mut b, Durability::PageCache).expect("append");
    }
    std::fs::write(
        part_dir(tmp.path()).join(super::partition::LOG_START_FILE),
        "0\n1\nt 0 4\n",
    )
    .expect("write checkpoint");
    make_unclean(tmp.path(), Unclean::CrashedThisBoot);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (4, 10));
    // A checkpoint past the end (records lost) is cut back to the end.
    drop(log);
    std::fs::write(
        part_dir(tmp.path()).join(super::partition::LOG_START_FILE),
        "0\n1\nt 0 50\n",
    )
    .expect("write checkpoint");
    make_unclean(tmp.path(), Unclean::HeadDeleted);
    let log = open_log(tmp.path(), &cfg);
    assert_eq!(log.offsets().expect("offsets"), (10, 10));
}

#[test]
fn an_unreadable_checkpoint_leaves_the_start_to_the_head() {
    // A torn or foreign `log-start-offset-checkpoint` is not trusted: the
    // start the head holds stands, and the log opens.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[]);
    {
        let log = open_log(tmp.path(), &cfg);
        let mut b = batch(10, 1_000, "a");
        log.append(&mut b, Durability::PageCache).expect("append");
        assert_eq!(log.delete_records(4).expect("delete records"), 4);
    }
    for garbage in [
        "",
        "0\n1\n",
        "1\n1\nt 0 7\n",
        "0\n1\nt 0 seven\n",
        "0\n1\nt 0 -3\n",
    ] {
        std::fs::write(
            part_dir(tmp.path()).join(super::partition::LOG_START_FILE),
            garbage,
        )
        .expect("write checkpoint");
        make_unclean(tmp.path(), Unclean::CrashedThisBoot);
        let log = open_log(tmp.path(), &cfg);
        assert_eq!(log.offsets().expect("offsets"), (4, 10), "{garbage:?}");
        assert_eq!(read_all(&log).first().expect("records").0, 4);
    }
}

#[test]
fn segments_below_the_start_go_whatever_the_cleanup_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("segment.bytes", "1024"), ("cleanup.policy", "compact")]);
    let log = open_log(tmp.path(), &cfg);
    let mut rng = Rng(9);
    let batches = fill(&log, 80, 1_000, &mut rng);
    let hw = batches.last().expect("batches").1 + 1;
    let bases: Vec<i64> = segment_files(&part_dir(tmp.path()))
        .keys()
        .copied()
        .collect();
    let target = bases[bases.len() - 2] + 1;
    assert_eq!(log.delete_records(target).expect("delete"), target);
    let left: Vec<i64> = segment_files(&part_dir(tmp.path()))
        .keys()
        .copied()
        .collect();
    assert!(left[0] <= target && left.len() <= 2, "left {left:?}");
    assert_eq!(log.offsets().expect("offsets"), (target, hw));
    // The cleaner keeps to the start: nothing below it comes back.
    log.compact().expect("compact");
    assert!(read_all(&log).iter().all(|r| r.0 >= target));
    assert_eq!(log.offsets().expect("offsets").0, target);
}
