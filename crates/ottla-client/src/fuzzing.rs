//! Fuzz oracles: one function per decoder that reads bytes from disk (or,
//! later, the network), shared by the cargo-fuzz targets in `fuzz/` and the
//! deterministic property tests in `cargo test` (`src/fuzz_tests.rs`).
//!
//! Each oracle takes arbitrary bytes and panics only when the decoder breaks
//! a promise: it panicked itself, returned data that is not what was written
//! (a record outside its batch, a batch that fails its own checksum, a log
//! that differs from the valid prefix of its file), or lost a round trip.
//! Errors are fine; they are what bad bytes should produce.
//!
//! Adding a decoder is one oracle here plus one two-line file in
//! `fuzz/fuzz_targets/` (and its `[[bin]]` entry in `fuzz/Cargo.toml`).
//!
//! Compiled for tests and under the `fuzzing` feature only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::group::state::GroupState;
use ottla_record::batch::{
    check_batch, peek_total_size, seal_crc, set_base_offset, BatchBuilder, BatchHeader, Batches,
    BASE_OFFSET, BATCH_LENGTH, CURRENT_MAGIC, LEADER_EPOCH, LOG_OVERHEAD, MAGIC,
};
use ottla_record::decode::records;
use ottla_record::varint::{get_varint, get_varlong, put_varlong, varlong_len};
use ottla_record::HEADER_LEN;
use ottla_storage::beacon::Beacon;
use ottla_storage::config::TopicConfig;
use ottla_storage::error::Error;
use ottla_storage::log::{PartitionLog, ReadCursor};
use ottla_storage::offsets::{decode_key, decode_value, encode_key, encode_value};
use ottla_storage::topic::TopicMeta;

// ------------------------------------------------------------- records

/// Walk every record of a batch that passed `check_batch`, checking that
/// what the iterator hands out lies inside the batch and inside its offsets.
fn walk_records(h: &BatchHeader, batch: &[u8]) {
    // The codecs are fuzzed on their own; here the slices handed out must
    // point into the stored batch, which holds only for uncompressed ones.
    if h.compression() != 0 {
        return;
    }
    let Ok(records) = records(h, batch) else {
        return;
    };
    let iter = records.iter();
    let range = batch.as_ptr_range();
    let inside = |s: &[u8]| {
        let r = s.as_ptr_range();
        r.start >= range.start && r.end <= range.end
    };
    let mut n = 0i64;
    for rec in iter {
        let Ok(rec) = rec else { break };
        n += 1;
        assert!(n <= i64::from(h.records_count), "more records than counted");
        assert!(
            rec.offset >= h.base_offset && rec.offset <= h.last_offset(),
            "record offset {} outside batch {}..={}",
            rec.offset,
            h.base_offset,
            h.last_offset()
        );
        if h.log_append_time() {
            assert_eq!(rec.timestamp, h.max_timestamp);
        }
        assert!(rec.key.map_or(true, inside) && rec.value.map_or(true, inside));
        let mut headers = 0u32;
        for (k, v) in rec.headers() {
            assert!(inside(k) && v.map_or(true, inside));
            headers += 1;
        }
        assert_eq!(
            headers, rec.header_count,
            "header walk disagrees with count"
        );
    }
}

/// Give `buf` a length field matching its size, magic 2 and a correct
/// CRC, so the record decoder behind the checksum gets fuzzed too.
pub fn seal_batch(buf: &mut [u8]) {
    if buf.len() < HEADER_LEN || buf.len() - LOG_OVERHEAD > i32::MAX as usize {
        return;
    }
    let len = (buf.len() - LOG_OVERHEAD) as i32;
    buf[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    buf[MAGIC] = CURRENT_MAGIC as u8;
    seal_crc(buf);
}

/// Record batch v2: `check_batch`, `RecordIter` (headers included) and
/// `Batches`, on the bytes as given and on the bytes with a sealed header.
pub fn record_batch(data: &[u8]) {
    if let Ok(h) = check_batch(data) {
        walk_records(&h, data);
        // A transaction marker is read from any checked batch.
        let _ = ottla_record::batch::parse_marker(&h, data);
    }
    let mut seen = 0usize;
    for (h, b) in Batches::new(data) {
        assert_eq!(
            b.len(),
            h.total_size(),
            "Batches split disagrees with length"
        );
        seen += b.len();
        assert!(seen <= data.len());
        if let Ok(h) = check_batch(b) {
            walk_records(&h, b);
        }
    }
    let mut sealed = data.to_vec();
    seal_batch(&mut sealed);
    if let Ok(h) = check_batch(&sealed) {
        walk_records(&h, &sealed);
    }
}

/// Varints: whatever decodes re-encodes to the same value, in at most the
/// bytes it was read from; `get_varint` agrees with `get_varlong`.
pub fn varint(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        let start = pos;
        let Some(v) = get_varlong(data, &mut pos) else {
            break;
        };
        assert!(pos > start && pos - start <= 10);
        let mut buf = Vec::new();
        put_varlong(&mut buf, v);
        assert_eq!(buf.len(), varlong_len(v));
        assert!(buf.len() <= pos - start, "canonical form longer than input");
        let mut p = 0;
        assert_eq!(get_varlong(&buf, &mut p), Some(v));
        let mut p = start;
        assert_eq!(get_varint(data, &mut p), i32::try_from(v).ok());
    }
}

// ------------------------------------------------------------- small files

/// Committed offsets: `decode_key`/`decode_value` never panic, and what
/// they decode survives an encode/decode round trip.
pub fn offsets_kv(data: &[u8]) {
    if let Some((g, t, p)) = decode_key(data) {
        assert_eq!(decode_key(&encode_key(&g, &t, p)), Some((g, t, p)));
    }
    if let Some(c) = decode_value(data) {
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
    }
}

/// The transaction log (`__transaction_state`): `decode_key`/`decode_value`
/// never panic, and what they decode survives an encode/decode round trip.
pub fn txn_state_kv(data: &[u8]) {
    use ottla_storage::txn_state as ts;
    if let Some(id) = ts::decode_key(data) {
        assert_eq!(ts::decode_key(&ts::encode_key(&id)), Some(id));
    }
    if let Some(m) = ts::decode_value("t", data) {
        assert_eq!(ts::decode_value("t", &ts::encode_value(&m)), Some(m));
    }
}

/// Topic metadata files: decode, and the decoded meta round-trips; its
/// config either applies or is a typed error.
pub fn topic_meta(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = TopicMeta::decode(text) {
        assert!((1..=ottla_storage::topic::MAX_PARTITIONS).contains(&m.partitions));
        let again = TopicMeta::decode(&m.encode());
        assert!(matches!(&again, Ok(a) if *a == m), "{m:?} -> {again:?}");
        let _ = m.config();
    }
}

/// Consumer-group state files: decode, and the decoded state round-trips.
pub fn group_state(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(st) = GroupState::decode(text) {
        // What later code loops over or increments stays in range.
        assert!(st.generation >= 0 && st.generation < i64::MAX);
        assert!(st
            .topics
            .values()
            .all(|n| *n <= ottla_storage::topic::MAX_PARTITIONS));
        let again = GroupState::decode(&st.encode());
        assert_eq!(again.as_ref(), Some(&st));
    }
}

// ------------------------------------------------------------- the log

/// A directory in memory (`/dev/shm`) when there is one, else under the
/// system temp dir; removed on drop. Every partition closed in an oracle is
/// fsync'd, which on a real disk would cost more than the fuzzing.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let p = root.join(format!(
            "ottla-fuzz-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        ScratchDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The config the log oracles open partitions with: small indexes and a
/// dense index interval so that corrupt index files get used.
pub fn small_config() -> Arc<TopicConfig> {
    Arc::new(
        TopicConfig::from_overrides([
            ("retention.ms", "-1"),
            ("segment.index.bytes", "1024"),
            ("index.interval.bytes", "64"),
        ])
        .expect("valid config"),
    )
}

pub fn open_partition(
    root: &Path,
    cfg: &Arc<TopicConfig>,
) -> ottla_storage::error::Result<PartitionLog> {
    let beacon = Arc::new(Beacon::open(&root.join("beacon"))?);
    PartitionLog::open(&root.join("t-0"), Arc::from("t"), 0, cfg.clone(), beacon)
}

/// Everything a partition hands out from its start, verified: the bytes
/// before the first error, and that error.
pub fn read_all(log: &PartitionLog) -> (Vec<u8>, Option<Error>) {
    let mut out = Vec::new();
    let (start, end) = match log.offsets() {
        Ok(o) => o,
        Err(e) => return (out, Some(e)),
    };
    let mut next = start;
    let mut cursor: Option<ReadCursor> = None;
    // Each read returns at least one whole batch or stops, so this is bounded
    // by the number of batches; the cap turns a livelock into a failure.
    for _ in 0..100_000 {
        if next >= end {
            return (out, None);
        }
        let f = match log.read(next, 4096, &mut cursor, true) {
            Ok(f) => f,
            Err(e) => return (out, Some(e)),
        };
        let mut advanced = false;
        for (h, b) in Batches::new(&f.bytes) {
            assert!(
                h.next_offset() > next,
                "read at {next} went backwards to {}",
                h.base_offset
            );
            next = h.next_offset();
            out.extend_from_slice(b);
            advanced = true;
        }
        if f.error.is_some() || !advanced {
            return (out, f.error);
        }
    }
    panic!("read loop did not finish");
}

/// The reference answer for a `.log` file with no head to trust: its
/// whole, checksummed batches from position 0 whose offsets run on from
/// `base` without a gap, up to the first one that does not.
pub fn valid_prefix(log: &[u8], base: i64) -> Vec<u8> {
    let mut pos = 0usize;
    let mut next = base;
    while let Some(total) = peek_total_size(&log[pos..]) {
        if total < HEADER_LEN as i64 || total as usize > log.len() - pos {
            break;
        }
        let b = &log[pos..pos + total as usize];
        match check_batch(b) {
            Ok(h) if h.base_offset == next => next = h.next_offset(),
            _ => break,
        }
        pos += b.len();
    }
    log[..pos].to_vec()
}

/// Seal every batch-shaped chunk of `log` (length, magic, CRC) and
/// renumber its base offsets to run on, so that the fuzzer's mutations
/// reach past the checksum into offsets and record framing.
pub fn seal_log(log: &mut [u8]) {
    let mut pos = 0usize;
    let mut next = 0i64;
    while let Some(total) = peek_total_size(&log[pos..]) {
        if total < HEADER_LEN as i64 || total as usize > log.len() - pos {
            break;
        }
        let b = &mut log[pos..pos + total as usize];
        set_base_offset(b, next);
        seal_batch(b);
        match BatchHeader::parse(b) {
            Some(h) if h.last_offset_delta >= 0 && h.last_offset_delta < i32::MAX => {
                next += i64::from(h.last_offset_delta) + 1;
            }
            _ => break,
        }
        pos += total as usize;
    }
}

/// Files to lay out as one partition directory.
#[derive(Default)]
pub struct PartitionFiles {
    pub log: Vec<u8>,
    pub index: Option<Vec<u8>>,
    pub timeindex: Option<Vec<u8>>,
    pub head: Option<Vec<u8>>,
}

impl PartitionFiles {
    /// Split fuzzer bytes into files: byte 0 chooses which files exist and
    /// whether batches get sealed; then the index, time index and head take
    /// a length-prefixed slice each; the rest is the `.log`.
    pub fn from_fuzz(data: &[u8]) -> PartitionFiles {
        let Some((&flags, mut rest)) = data.split_first() else {
            return PartitionFiles::default();
        };
        let mut take = |on: bool| -> Option<Vec<u8>> {
            if !on || rest.len() < 2 {
                return None;
            }
            let n = (usize::from(rest[0]) << 8 | usize::from(rest[1])).min(rest.len() - 2);
            let (a, b) = rest[2..].split_at(n);
            rest = b;
            Some(a.to_vec())
        };
        let index = take(flags & 2 != 0);
        let timeindex = take(flags & 4 != 0);
        let head = take(flags & 8 != 0).map(|h| {
            // A head with the magic stamped is trusted as far as its fields
            // look plausible; without the magic it is ignored.
            let mut page = vec![0u8; 4096];
            let n = h.len().min(4096);
            page[..n].copy_from_slice(&h[..n]);
            if flags & 16 != 0 {
                page[..8].copy_from_slice(&u64::from_be_bytes(*b"OTTLAHD1").to_ne_bytes());
            }
            page
        });
        let mut log = rest.to_vec();
        if flags & 1 != 0 {
            seal_log(&mut log);
        }
        PartitionFiles {
            log,
            index,
            timeindex,
            head,
        }
    }

    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("create partition dir");
        let name = "00000000000000000000";
        std::fs::write(dir.join(format!("{name}.log")), &self.log).expect("write log");
        let files = [
            (format!("{name}.index"), &self.index),
            (format!("{name}.timeindex"), &self.timeindex),
            ("partition.head".to_string(), &self.head),
        ];
        for (f, bytes) in files {
            if let Some(b) = bytes {
                std::fs::write(dir.join(f), b).expect("write file");
            }
        }
    }
}

/// The log loader and read path on a partition directory built from fuzzer
/// bytes. Without a head, the engine must return exactly the valid prefix
/// of the `.log`; with any head, every batch it returns must be one of the
/// file's valid batches, and nothing may panic.
pub fn log_dir(data: &[u8]) {
    let files = PartitionFiles::from_fuzz(data);
    let scratch = ScratchDir::new("log");
    files.write(&scratch.path().join("t-0"));
    let expected = valid_prefix(&files.log, 0);
    let cfg = small_config();
    let log = match open_partition(scratch.path(), &cfg) {
        Ok(l) => l,
        Err(e) => {
            // Only I/O on the files themselves may fail an open.
            assert!(matches!(e, Error::Io { .. }), "open failed: {e}");
            return;
        }
    };
    let (got, err) = read_all(&log);
    let magic = u64::from_be_bytes(*b"OTTLAHD1").to_ne_bytes();
    let trusted = files.head.as_ref().is_some_and(|h| h[..8] == magic);
    if !trusted {
        assert!(err.is_none(), "recovered log still fails: {err:?}");
        assert!(
            got == expected,
            "recovered log differs from the valid prefix"
        );
    } else {
        // A trusted head may start the log later (its log start offset) and
        // end it earlier (its size): what is read is a run of the valid
        // prefix's batches, from a batch boundary.
        let from = Batches::new(&got).next().map_or(0, |(first, _)| {
            Batches::new(&expected)
                .take_while(|(h, _)| h.base_offset < first.base_offset)
                .map(|(_, b)| b.len())
                .sum()
        });
        assert!(
            expected[from..].starts_with(&got),
            "a head made the log return bytes outside its valid prefix"
        );
        if let Some(e) = err {
            assert!(
                matches!(e, Error::CorruptRecord { .. } | Error::Io { .. }),
                "untyped read error {e}"
            );
        }
    }
    // The log still takes appends, and returns them. Under a trusted head
    // nothing below was re-validated (a clean open reads nothing), so a
    // lookup that must walk from the segment start (the index being damaged
    // too) may stop at a corrupt batch below the append: then it must say
    // so, never hand out other bytes.
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, Some(b"k"), Some(b"v"), &[]);
    let mut bytes = b.finish().to_vec();
    if let Ok(info) = log.append(&mut bytes, ottla_storage::log::Durability::PageCache) {
        match log.read(info.base_offset, 4096, &mut None, true) {
            Ok(f) => match Batches::new(&f.bytes).next() {
                Some((h, _)) => assert_eq!(h.base_offset, info.base_offset),
                None => assert!(
                    trusted && matches!(f.error, Some(Error::CorruptRecord { .. })),
                    "append not read back: {:?}",
                    f.error
                ),
            },
            Err(Error::CorruptRecord { .. }) if trusted => {}
            Err(e) => panic!("read back the append: {e}"),
        }
    }
}

/// `PartitionLog::append` of batches from outside (as the broker will hand
/// it a client's bytes after checking their CRCs): byte 0 chooses whether
/// the batches are sealed first. An append is refused, or it is read back
/// verbatim with its offsets and leader epoch stamped; the log takes a
/// valid batch after it.
pub fn append(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if flags & 1 != 0 {
        seal_log(&mut bytes);
    }
    let scratch = ScratchDir::new("append");
    let log = open_partition(scratch.path(), &small_config()).expect("open fresh partition");
    let mut stamped = bytes.clone();
    if let Ok(info) = log.append(&mut stamped, ottla_storage::log::Durability::PageCache) {
        let all_valid = Batches::new(&stamped).map(|(_, b)| b.len()).sum::<usize>()
            == stamped.len()
            && Batches::new(&stamped).all(|(_, b)| check_batch(b).is_ok());
        let (got, err) = read_all(&log);
        if all_valid {
            assert!(err.is_none(), "valid append reads back with {err:?}");
            assert!(got == stamped, "append did not read back verbatim");
        }
        assert!(info.last_offset >= info.base_offset);
        // Outside the base offsets and the leader epoch (both outside the
        // CRC), the stored bytes are the caller's. (An accepted append is
        // whole batches back to back.)
        let mut unstamped = stamped.clone();
        let mut at = 0;
        for (h, b) in Batches::new(&stamped) {
            assert_eq!(h.leader_epoch, log.leader_epoch(), "epoch not stamped");
            let base = at + BASE_OFFSET..at + BASE_OFFSET + 8;
            unstamped[base.clone()].copy_from_slice(&bytes[base]);
            let epoch = at + LEADER_EPOCH..at + LEADER_EPOCH + 4;
            unstamped[epoch.clone()].copy_from_slice(&bytes[epoch]);
            at += b.len();
        }
        assert_eq!(
            at,
            stamped.len(),
            "accepted bytes that are not whole batches"
        );
        assert!(
            unstamped == bytes,
            "append changed more than base offsets and epochs"
        );
    }
    let mut b = BatchBuilder::with_capacity(64);
    b.append(1, Some(b"k"), Some(b"after"), &[]);
    let mut after = b.finish().to_vec();
    let info = log
        .append(&mut after, ottla_storage::log::Durability::PageCache)
        .expect("a valid append after any other");
    let f = log
        .read(info.base_offset, 4096, &mut None, true)
        .expect("read back the valid append");
    assert!(f.bytes.starts_with(&after), "valid append not read back");
}

/// Offset and time index files of a closed segment: any bytes, any lookup.
pub fn index_files(data: &[u8]) {
    use ottla_storage::log::offset_index::OffsetIndex;
    use ottla_storage::log::time_index::TimeIndex;
    let scratch = ScratchDir::new("idx");
    let (p, t) = (
        scratch.path().join("0.index"),
        scratch.path().join("0.timeindex"),
    );
    std::fs::write(&p, data).expect("write index");
    std::fs::write(&t, data).expect("write time index");
    let base = data
        .get(..8)
        .map_or(0, |b| i64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
    let (Ok(oi), Ok(ti)) = (
        OffsetIndex::open_readonly(&p, base),
        TimeIndex::open_readonly(&t, base),
    ) else {
        return;
    };
    for target in [i64::MIN, -1, 0, base, base.wrapping_add(7), i64::MAX] {
        for entries in [0, 1, oi.closed_entries(), u64::MAX] {
            let _ = oi.lookup(target, entries);
            let _ = ti.offset_before(target, entries);
            let _ = ti.last(entries);
        }
    }
    for i in [0, 1, u64::MAX / 8, u64::MAX / 12, u64::MAX] {
        let _ = oi.entry(i);
        let _ = ti.entry(i);
    }
}

// ------------------------------------------------------------- seeds

/// A real partition written by the engine: (`.log`, `.index`, `.timeindex`,
/// `partition.head`) of its one segment, `batches` batches of 1 to 4
/// records each with keys, values and headers.
pub fn real_partition(batches: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let scratch = ScratchDir::new("seed");
    let cfg = small_config();
    {
        let log = open_partition(scratch.path(), &cfg).expect("open seed partition");
        for i in 0..batches {
            let mut b = BatchBuilder::with_capacity(256);
            for j in 0..(i % 4 + 1) {
                let key = format!("key-{i}-{j}");
                let value = format!("value {i}/{j} {}", "x".repeat(i * 7 % 50));
                let headers: &[ottla_record::HeaderRef<'_>] = if j % 2 == 0 {
                    &[(b"h", Some(b"hv")), (b"n", None)]
                } else {
                    &[]
                };
                let key = (i % 3 != 0).then_some(key.as_bytes());
                b.append(
                    1_700_000_000_000 + (i * 10 + j) as i64,
                    key,
                    Some(value.as_bytes()),
                    headers,
                );
            }
            let mut bytes = b.finish().to_vec();
            log.append(&mut bytes, ottla_storage::log::Durability::PageCache)
                .expect("append seed batch");
        }
    }
    let dir = scratch.path().join("t-0");
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read seed file");
    let name = "00000000000000000000";
    (
        read(&format!("{name}.log")),
        read(&format!("{name}.index")),
        read(&format!("{name}.timeindex")),
        read("partition.head"),
    )
}

fn framed(flags: u8, parts: &[&[u8]], log: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    for p in parts {
        let n = p.len().min(u16::MAX as usize);
        v.extend_from_slice(&(n as u16).to_be_bytes());
        v.extend_from_slice(&p[..n]);
    }
    v.extend_from_slice(log);
    v
}

/// Valid inputs for every oracle, produced by the engine's own encoders:
/// (target, seed name, bytes).
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let (log, index, timeindex, head) = real_partition(24);
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    for (i, (_, b)) in Batches::new(&log).enumerate().take(6) {
        out.push(("record_batch", format!("batch-{i}"), b.to_vec()));
    }
    out.push(("record_batch", "log".into(), log.clone()));
    out.push(("log_dir", "log-only".into(), framed(0, &[], &log)));
    out.push(("append", "log".into(), framed(0, &[], &log)));
    out.push(("append", "log-sealed".into(), framed(1, &[], &log)));
    out.push(("log_dir", "log-sealed".into(), framed(1, &[], &log)));
    out.push((
        "log_dir",
        "log-indexes".into(),
        framed(6, &[&index, &timeindex], &log),
    ));
    out.push((
        "log_dir",
        "log-indexes-head".into(),
        framed(14, &[&index, &timeindex, &head[..256]], &log),
    ));
    out.push(("index_files", "offset-index".into(), index));
    out.push(("index_files", "time-index".into(), timeindex));
    let mut v = Vec::new();
    for x in [0i64, -1, 1, 150, -300, i32::MAX as i64, i64::MIN, i64::MAX] {
        put_varlong(&mut v, x);
    }
    out.push(("varint", "edges".into(), v));
    out.push((
        "offsets_kv",
        "key".into(),
        encode_key("group-1", "orders", 3),
    ));
    let c = ottla_storage::offsets::Committed {
        offset: 42,
        leader_epoch: 3,
        metadata: "meta".into(),
        timestamp: 1_700_000_000_000,
        topic_id: None,
    };
    out.push(("offsets_kv", "value".into(), encode_value(&c)));
    let c4 = ottla_storage::offsets::Committed {
        topic_id: Some(ottla_storage::topic::TopicId([9; 16])),
        ..c
    };
    out.push(("offsets_kv", "value-v4".into(), encode_value(&c4)));
    out.push((
        "txn_state_kv",
        "key".into(),
        ottla_storage::txn_state::encode_key("tx-1"),
    ));
    let mut m = ottla_storage::txn_state::TxnMetadata::new("tx-1", 7, 60_000, 1);
    m.state = ottla_storage::txn_state::TxnState::Ongoing;
    m.partitions.insert(("orders".into(), 0));
    m.partitions.insert(("orders".into(), 2));
    m.partitions.insert(("__consumer_offsets".into(), 0));
    out.push((
        "txn_state_kv",
        "value".into(),
        ottla_storage::txn_state::encode_value(&m),
    ));
    out.push((
        "record_batch",
        "marker".into(),
        ottla_record::batch::marker_batch(7, 1, ottla_record::batch::ControlType::Commit, 3, 5),
    ));
    let mut overrides = std::collections::BTreeMap::new();
    overrides.insert("retention.ms".to_string(), "60000".to_string());
    overrides.insert("cleanup.policy".to_string(), "compact,delete".to_string());
    let meta = TopicMeta {
        id: Some(ottla_storage::topic::TopicId([5; 16])),
        partitions: 3,
        overrides,
    };
    out.push(("topic_meta", "meta".into(), meta.encode().into_bytes()));
    let mut st = GroupState {
        generation: 7,
        protocol: "cooperative-sticky".into(),
        ..Default::default()
    };
    st.members.push(crate::group::state::MemberEntry {
        member_id: "m 1%".into(),
        token: "1-2".into(),
        client_id: "client".into(),
        host: "host".into(),
        pid: 42,
        topics: vec!["a".into(), "b".into()],
    });
    st.topics.insert("a".into(), 2);
    st.assignment
        .insert("m 1%".into(), vec![("a".into(), 0), ("a".into(), 1)]);
    out.push(("group_state", "state".into(), st.encode().into_bytes()));
    out
}

/// xorshift64*, the generator of the deterministic fuzz replays in
/// `cargo test` (here and in the broker's): a fixed seed gives the same
/// inputs on every run.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}
