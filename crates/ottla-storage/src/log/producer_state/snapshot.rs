//! Producer state on disk, so a restart replays only the log's tail:
//!
//! - `<offset>.snapshot` (Kafka's `ProducerStateManager` snapshot, version
//!   1 layout): the state of every producer after reading every batch below
//!   `offset`: version (i16), CRC-32C of what follows (u32), count (i32),
//!   then per producer: producer id (i64), epoch (i16), last sequence (i32),
//!   last offset (i64), offset delta (i32), timestamp (i64), coordinator
//!   epoch (i32), open transaction's first offset (i64, -1: none); then a
//!   count (i32) and `.txnindex` entries for the segment the offset is in.
//!   As in Kafka, only each producer's last batch is kept for duplicate
//!   checks.
//! - `<base>.txnindex` per segment (Kafka's `TransactionIndex`): the aborted
//!   transactions whose ABORT marker is in the segment, 34-byte entries
//!   (version i16 = 0, producer id, first offset, last offset, last stable
//!   offset, each i64). Removed with its segment.
//!
//! Written (by whoever has caught up, broker or embedded) once a roll put
//! a segment base behind the state: the `.txnindex` of every closed segment
//! below the snapshot offset first (their content is fixed, so whoever
//! writes one writes the same bytes), then the snapshot, each by rename, so
//! a snapshot is never there without its indexes. The aborted transactions
//! of the segment the snapshot's offset falls in follow the producers in
//! the snapshot itself (an ottla addition after Kafka's entries). The two newest snapshots
//! are kept. A restart loads the newest snapshot inside the log and the
//! indexes below it, then replays from the snapshot offset; a corrupt or
//! missing file makes it rebuild from the log instead, saying so on stderr.
//! Compacted partitions keep no such files (the cleaner merges segments):
//! their state is rebuilt by a scan, as before.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::{Entry, ProducerStateManager};
use crate::config::CleanupPolicy;
use crate::error::Result;
use crate::fsutil::write_replace;
use crate::log::txn_index::{AbortedTxn, TxnIndex};
use crate::log::PartitionLog;

const SNAPSHOT_VERSION: i16 = 1;
const SNAPSHOT_ENTRY: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;
const TXN_ENTRY: usize = 34;
/// Snapshots kept (Kafka keeps the ones of live segments; two is enough to
/// survive a torn newest one).
const KEEP: usize = 2;

pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.snapshot"))
}

pub(crate) fn txn_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.txnindex"))
}

/// The offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Vec<i64> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<i64> = rd
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".snapshot")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    out
}

fn put_i16(b: &mut Vec<u8>, v: i16) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put_i32(b: &mut Vec<u8>, v: i32) {
    b.extend_from_slice(&v.to_be_bytes());
}
fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(&v.to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// The snapshot of `st`'s producers, with `tail`: the aborted
/// transactions of the segment the snapshot's offset is in (whose
/// `.txnindex` is not written until the segment is closed).
pub(crate) fn encode_snapshot(st: &ProducerStateManager, tail: &[AbortedTxn]) -> Vec<u8> {
    let mut ids: Vec<&i64> = st.by_id.keys().collect();
    ids.sort_unstable();
    let mut body = Vec::with_capacity(4 + ids.len() * SNAPSHOT_ENTRY);
    put_i32(&mut body, ids.len() as i32);
    for id in ids {
        let e = &st.by_id[id];
        let (last_offset, delta) = e.recent.back().map_or((-1, 0), |(f, l, base)| {
            let delta = (*l as i64 - *f as i64).rem_euclid(i32::MAX as i64 + 1) as i32;
            (base + i64::from(delta), delta)
        });
        put_i64(&mut body, *id);
        put_i16(&mut body, e.epoch);
        put_i32(&mut body, e.last_seq);
        put_i64(&mut body, last_offset);
        put_i32(&mut body, delta);
        put_i64(&mut body, e.last_timestamp);
        put_i32(&mut body, e.coordinator_epoch);
        put_i64(&mut body, e.txn_first_offset.unwrap_or(-1));
    }
    put_i32(&mut body, tail.len() as i32);
    body.extend_from_slice(&encode_txn_index(tail));
    let mut out = Vec::with_capacity(6 + body.len());
    put_i16(&mut out, SNAPSHOT_VERSION);
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A snapshot's producers and tail of aborted transactions.
type Decoded = (Vec<(i64, Entry)>, Vec<AbortedTxn>);

/// The producers of a snapshot and its tail; `None` when it is not one
/// (torn, corrupt).
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Option<Decoded> {
    let mut r = Reader(bytes);
    if r.i16()? != SNAPSHOT_VERSION {
        return None;
    }
    let crc = r.u32()?;
    if crc32c::crc32c(r.0) != crc {
        return None;
    }
    let n = usize::try_from(r.i32()?).ok()?;
    let producers = n.checked_mul(SNAPSHOT_ENTRY)?;
    let tail_count =
        r.0.get(producers..producers.checked_add(4)?)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
            .and_then(|c| usize::try_from(c).ok())?;
    if r.0.len() != producers + 4 + tail_count.checked_mul(TXN_ENTRY)? {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let pid = r.i64()?;
        let epoch = r.i16()?;
        let last_seq = r.i32()?;
        let last_offset = r.i64()?;
        let delta = r.i32()?;
        let last_timestamp = r.i64()?;
        let coordinator_epoch = r.i32()?;
        let first = r.i64()?;
        let mut recent = VecDeque::new();
        if last_offset >= 0 && last_seq >= 0 {
            let first_seq = (last_seq as i64 - delta as i64).rem_euclid(i32::MAX as i64 + 1) as i32;
            recent.push_back((first_seq, last_seq, last_offset - i64::from(delta)));
        }
        out.push((
            pid,
            Entry {
                epoch,
                last_seq,
                last_timestamp,
                recent,
                txn_first_offset: (first >= 0).then_some(first),
                coordinator_epoch,
                last_offset: last_offset - i64::from(delta),
            },
        ));
    }
    r.i32()?;
    Some((out, decode_txn_index(r.0)?))
}

pub(crate) fn encode_txn_index(entries: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * TXN_ENTRY);
    for a in entries {
        put_i16(&mut out, 0);
        put_i64(&mut out, a.producer_id);
        put_i64(&mut out, a.first_offset);
        put_i64(&mut out, a.last_offset);
        put_i64(&mut out, a.last_stable_offset);
    }
    out
}

pub(crate) fn decode_txn_index(bytes: &[u8]) -> Option<Vec<AbortedTxn>> {
    if bytes.len() % TXN_ENTRY != 0 {
        return None;
    }
    let mut r = Reader(bytes);
    let mut out = Vec::with_capacity(bytes.len() / TXN_ENTRY);
    while !r.0.is_empty() {
        if r.i16()? != 0 {
            return None;
        }
        out.push(AbortedTxn {
            producer_id: r.i64()?,
            first_offset: r.i64()?,
            last_offset: r.i64()?,
            last_stable_offset: r.i64()?,
        });
    }
    Some(out)
}

/// Whether `log` keeps producer state on disk: not a compacted one, whose
/// cleaner merges segments (their `.txnindex` files would then describe
/// segments that no longer exist); its state is rebuilt by a scan.
fn kept(log: &PartitionLog) -> bool {
    log.config().cleanup_policy == CleanupPolicy::Delete
}

fn warn(log: &PartitionLog, what: &str) {
    eprintln!(
        "ottla: {}-{}: {what}; rebuilding its producer state from the log (nothing is lost)",
        log.topic(),
        log.partition()
    );
}

/// The state as of the newest usable snapshot of `log` (with the aborted
/// transactions of the `.txnindex` files below it), or `None` when there
/// is none (a full replay then).
pub(crate) fn load(log: &PartitionLog) -> Result<Option<ProducerStateManager>> {
    if !kept(log) {
        return Ok(None);
    }
    let dir = log.dir();
    let snaps = list_snapshots(dir);
    if snaps.is_empty() {
        return Ok(None);
    }
    let (start, _) = log.offsets()?;
    let end = log.log_end_offset()?;
    let bases = log.segment_bases()?;
    for &off in snaps.iter().rev() {
        if off > end || off < start {
            // Past a truncated end, or below the log start: useless.
            continue;
        }
        let path = snapshot_path(dir, off);
        let Some((entries, tail)) = std::fs::read(&path).ok().and_then(|b| decode_snapshot(&b))
        else {
            warn(log, &format!("{} is corrupt", path.display()));
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let mut aborted = TxnIndex::default();
        let mut aborted_list: Vec<AbortedTxn> = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            if next > off {
                // The segment the snapshot is in: its entries are the
                // snapshot's tail.
                break;
            }
            let path = txn_index_path(dir, *base);
            let Some(list) = std::fs::read(&path).ok().and_then(|b| decode_txn_index(&b)) else {
                warn(log, &format!("{} is missing or corrupt", path.display()));
                return Ok(None);
            };
            aborted_list.extend(list.into_iter().filter(|a| a.last_offset < next));
        }
        aborted_list.extend(tail.into_iter().filter(|a| a.last_offset < off));
        for a in aborted_list {
            aborted.push(a);
        }
        let mut st = ProducerStateManager {
            next_offset: off,
            ..Default::default()
        };
        for (pid, e) in entries {
            if let Some(f) = e.txn_first_offset {
                st.ongoing.insert(f, pid);
            }
            st.by_id.insert(pid, e);
        }
        st.aborted = std::sync::Arc::new(aborted);
        st.snapshot_offset = off;
        return Ok(Some(st));
    }
    Ok(None)
}

/// Write the `.txnindex` of every segment below `st`'s offset and a
/// snapshot at it, if a roll put a segment base behind the state since
/// the newest snapshot. Failures are not errors: the state stays right in
/// memory, and a restart replays more.
pub(crate) fn maybe_write(st: &mut ProducerStateManager, log: &PartitionLog) {
    let Ok(active) = log.active_base() else {
        return;
    };
    if !kept(log) {
        st.snapshot_offset = i64::MAX;
        return;
    }
    let off = st.next_offset;
    if active <= st.snapshot_offset || off < active {
        return;
    }
    let dir = log.dir();
    let newest = list_snapshots(dir).last().copied().unwrap_or(-1);
    if newest >= active {
        st.snapshot_offset = newest;
        return;
    }
    let Ok(bases) = log.segment_bases() else {
        return;
    };
    let all = st.aborted.collect(i64::MIN, i64::MAX);
    let in_range = |from: i64, to: i64| -> Vec<AbortedTxn> {
        all.iter()
            .filter(|a| a.last_offset >= from && a.last_offset < to)
            .copied()
            .collect()
    };
    let mut tail_from = bases.first().copied().unwrap_or(0);
    for (i, base) in bases.iter().enumerate() {
        let next = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        if next > off {
            break;
        }
        // A closed segment: the same content whoever writes it.
        let path = txn_index_path(dir, *base);
        if !path.exists()
            && write_replace(&path, &encode_txn_index(&in_range(*base, next))).is_err()
        {
            return;
        }
        tail_from = next;
    }
    let snap = encode_snapshot(st, &in_range(tail_from, off));
    if write_replace(&snapshot_path(dir, off), &snap).is_err() {
        return;
    }
    st.snapshot_offset = off;
    let snaps = list_snapshots(dir);
    if snaps.len() > KEEP {
        for old in &snaps[..snaps.len() - KEEP] {
            let _ = std::fs::remove_file(snapshot_path(dir, *old));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::producer_state::{BatchSeq, Verdict};
    use crate::log::Durability;
    use ottla_record::batch::*;

    fn txn_batch(pid: i64, seq: i32) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(256);
        b.append(crate::log::now_ms(), None, Some(&[b'v'; 100][..]), &[]);
        let mut v = b.finish().to_vec();
        v[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&TRANSACTIONAL_FLAG.to_be_bytes());
        v[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
        v[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&0i16.to_be_bytes());
        v[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
        seal_crc(&mut v);
        v
    }

    /// A partition of small segments: pid 1 commits, pid 2 aborts, pid 3
    /// stays open, over several rolls.
    fn written(dir: &Path) -> std::sync::Arc<PartitionLog> {
        let store = crate::store::Store::open(dir).expect("store");
        let topic = store
            .create_topic("t", 1, &[("segment.bytes".into(), "512".into())])
            .expect("topic");
        let log = store.partition(&topic, 0).expect("log");
        let mut st = ProducerStateManager::default();
        for round in 0..6 {
            for pid in [1i64, 2] {
                log.append(&mut txn_batch(pid, round), Durability::PageCache)
                    .expect("append");
            }
            for (pid, kind) in [(1, ControlType::Commit), (2, ControlType::Abort)] {
                let mut m = marker_batch(pid, 0, kind, 0, crate::log::now_ms());
                log.append(&mut m, Durability::PageCache).expect("marker");
            }
            st.catch_up(&log).expect("catch up");
        }
        log.append(&mut txn_batch(3, 0), Durability::PageCache)
            .expect("open");
        st.catch_up(&log).expect("catch up");
        log
    }

    fn same(a: &ProducerStateManager, b: &ProducerStateManager, end: i64) {
        assert_eq!(a.last_stable_offset(end), b.last_stable_offset(end));
        assert_eq!(a.aborted_txns(0, end), b.aborted_txns(0, end));
        let key = |p: &ProducerStateManager| {
            p.snapshot()
                .iter()
                .map(|s| {
                    (
                        s.producer_id,
                        s.epoch,
                        s.last_sequence,
                        s.current_txn_start_offset,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(key(a), key(b));
        let next = BatchSeq {
            producer_id: 1,
            epoch: 0,
            first: 6,
            count: 1,
            transactional: true,
        };
        assert_eq!(a.check(&next), Verdict::Append);
        assert_eq!(b.check(&next), Verdict::Append);
    }

    #[test]
    fn a_restart_loads_the_snapshot_and_indexes_and_replays_only_the_tail() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = written(dir.path());
        let pdir = log.dir().to_path_buf();
        let snaps = list_snapshots(&pdir);
        assert!(!snaps.is_empty(), "a snapshot at a roll");
        assert!(snaps.len() <= KEEP);
        let bases = log.segment_bases().expect("bases");
        assert!(bases.len() > 2, "bases {bases:?} snaps {snaps:?}");
        let newest = *snaps.last().expect("one");
        // Every closed segment below the snapshot has its index.
        for w in bases.windows(2).filter(|w| w[1] <= newest) {
            assert!(txn_index_path(&pdir, w[0]).exists(), "index of {}", w[0]);
        }
        let end = log.log_end_offset().expect("end");
        let full = ProducerStateManager::rebuild_from_log(&log).expect("full");
        let loaded = load(&log).expect("load").expect("a snapshot");
        assert_eq!(loaded.next_offset(), newest);
        let fast = ProducerStateManager::rebuild(&log).expect("fast");
        same(&full, &fast, end);
        assert_eq!(full.aborted_txns(0, end).len(), 6);
    }

    #[test]
    fn a_corrupt_snapshot_or_a_missing_index_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = written(dir.path());
        let pdir = log.dir().to_path_buf();
        let end = log.log_end_offset().expect("end");
        let full = ProducerStateManager::rebuild_from_log(&log).expect("full");
        // Flip a byte of every snapshot: each is refused (and removed).
        for off in list_snapshots(&pdir) {
            let p = snapshot_path(&pdir, off);
            let mut b = std::fs::read(&p).expect("read");
            let last = b.len() - 1;
            b[last] ^= 0xff;
            std::fs::write(&p, b).expect("write");
        }
        assert!(load(&log).expect("load").is_none());
        let st = ProducerStateManager::rebuild(&log).expect("rebuilt");
        same(&full, &st, end);
        // A new snapshot comes with the next roll's catch-up; remove an index.
        let dir2 = tempfile::tempdir().expect("tmp");
        let log2 = written(dir2.path());
        let pdir2 = log2.dir().to_path_buf();
        let base = log2.segment_bases().expect("bases")[0];
        std::fs::remove_file(txn_index_path(&pdir2, base)).expect("rm");
        assert!(load(&log2).expect("load").is_none());
        let st = ProducerStateManager::rebuild(&log2).expect("rebuilt");
        same(
            &ProducerStateManager::rebuild_from_log(&log2).expect("full"),
            &st,
            log2.log_end_offset().expect("end"),
        );
    }

    #[test]
    fn entries_round_trip_in_kafkas_layouts() {
        let a = AbortedTxn {
            producer_id: 7,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let b = encode_txn_index(&[a, a]);
        assert_eq!(b.len(), 2 * TXN_ENTRY);
        assert_eq!(decode_txn_index(&b), Some(vec![a, a]));
        assert_eq!(decode_txn_index(&b[..33]), None);
    }
}
