//! The cleaner and transactions (`log::cleaner::txn`): aborted batches
//! removed, committed ones compacted, markers kept while their transaction
//! has batches, then stamped with a delete horizon, then removed; each
//! producer's last batch kept; open transactions never cleaned; and the
//! read_committed view of the log the same before and after every pass.

use std::collections::BTreeMap;

use super::{append, batch, check_segments, config, dir_of, open_log, patch, read_all};
use crate::log::producer_state::ProducerStateManager;
use crate::log::txn_index::in_aborted;
use crate::log::{Durability, PartitionLog, ReadCursor};
use ottla_record::batch::{
    marker_batch, parse_marker, Batches, ControlType, DELETE_HORIZON_FLAG, TRANSACTIONAL_FLAG,
};
use ottla_record::decode::records;

/// A transactional batch of `recs` by producer `pid` (epoch 0) from
/// sequence `seq`; returns its base offset.
fn txn_append(
    log: &PartitionLog,
    pid: i64,
    seq: &mut i32,
    recs: &[(Option<&str>, Option<&str>)],
) -> i64 {
    let mut b = patch(
        batch(recs, super::super::now_ms()),
        TRANSACTIONAL_FLAG,
        Some((pid, 0, *seq)),
    );
    *seq += recs.len() as i32;
    log.append(&mut b, Durability::PageCache)
        .expect("append")
        .base_offset
}

fn end_txn(log: &PartitionLog, pid: i64, kind: ControlType) -> i64 {
    end_txn_at(log, pid, 0, kind)
}

fn end_txn_at(log: &PartitionLog, pid: i64, epoch: i16, kind: ControlType) -> i64 {
    let mut m = marker_batch(pid, epoch, kind, 0, super::super::now_ms());
    log.append(&mut m, Durability::PageCache)
        .expect("marker")
        .base_offset
}

/// Every batch of the log, header and bytes, from the log start.
fn batches(log: &PartitionLog) -> Vec<(ottla_record::BatchHeader, Vec<u8>)> {
    let (start, end) = log.offsets().expect("offsets");
    let mut out = Vec::new();
    let mut pos = start;
    let mut cursor: Option<ReadCursor> = None;
    while pos < end {
        let f = log.read(pos, 1 << 16, &mut cursor, true).expect("read");
        assert!(f.error.is_none(), "{:?}", f.error);
        if f.bytes.is_empty() {
            break;
        }
        for (h, b) in Batches::new(&f.bytes) {
            if h.next_offset() > pos {
                out.push((h, b.to_vec()));
                pos = h.next_offset();
            }
        }
    }
    out
}

/// What a read_committed consumer ends up with: key -> latest value
/// (tombstoned keys absent), read below the last stable offset, dropping
/// the batches `state`'s aborted transactions cover and every marker.
fn committed_view(log: &PartitionLog, state: &ProducerStateManager) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let (_, hw) = log.offsets().expect("offsets");
    let lso = state.last_stable_offset(hw);
    let mut view = BTreeMap::new();
    for (h, b) in batches(log) {
        if h.last_offset() >= lso {
            break;
        }
        if h.is_control() || in_aborted(&state.aborted_txns(h.base_offset, h.next_offset()), &h) {
            continue;
        }
        for r in records(&h, &b).expect("codec").iter() {
            let r = r.expect("record");
            if let Some(k) = r.key {
                match r.value {
                    Some(v) => view.insert(k.to_vec(), v.to_vec()),
                    None => view.remove(k),
                };
            }
        }
    }
    view
}

fn rebuilt(log: &PartitionLog) -> ProducerStateManager {
    ProducerStateManager::rebuild_from_log(log).expect("rebuild")
}

fn values_of(log: &PartitionLog, key: &str) -> Vec<Option<Vec<u8>>> {
    read_all(log)
        .into_iter()
        .filter(|r| r.1.as_deref() == Some(key.as_bytes()))
        .map(|r| r.2)
        .collect()
}

fn markers_of(log: &PartitionLog, pid: i64) -> Vec<ottla_record::BatchHeader> {
    batches(log)
        .into_iter()
        .filter(|(h, _)| h.is_control() && h.producer_id == pid)
        .map(|(h, _)| h)
        .collect()
}

#[test]
fn aborted_batches_go_committed_ones_compact_and_markers_follow_their_horizon() {
    let root = tempfile::tempdir().expect("tempdir");
    for (retention, gone) in [("0", true), ("86400000", false)] {
        let dir = root.path().join(retention);
        let cfg = config(&[
            ("min.cleanable.dirty.ratio", "1"),
            ("delete.retention.ms", retention),
        ]);
        let log = open_log(&dir, &cfg);
        let (mut s1, mut s2) = (0, 0);
        // pid 1 commits a and b; pid 2 aborts a new value of a and c.
        txn_append(
            &log,
            1,
            &mut s1,
            &[(Some("a"), Some("c1")), (Some("b"), Some("c1"))],
        );
        txn_append(&log, 2, &mut s2, &[(Some("a"), Some("aborted"))]);
        txn_append(&log, 2, &mut s2, &[(Some("c"), Some("aborted"))]);
        end_txn(&log, 2, ControlType::Abort);
        end_txn(&log, 1, ControlType::Commit);
        // b is superseded by a plain write; filler closes segments.
        append(&log, &[(Some("b"), Some("plain"))]);
        super::workload(&log, 60, 3);
        // pid 2's last batch lies past the cleanable part.
        txn_append(&log, 2, &mut s2, &[(Some("z"), Some("late"))]);
        end_txn(&log, 2, ControlType::Commit);
        let before = committed_view(&log, &rebuilt(&log));
        assert_eq!(before.get(&b"a"[..]), Some(&b"c1".to_vec()));
        let live = rebuilt(&log);

        // Pass 1: the aborted records go, every marker stays (pass 1 read
        // their transactions' batches); a keeps its committed value.
        let s = log.compact().expect("compact").expect("ran");
        assert_eq!(s.aborted_records_removed, 2);
        assert_eq!(values_of(&log, "a"), vec![Some(b"c1".to_vec())]);
        assert!(values_of(&log, "c").is_empty());
        assert_eq!(values_of(&log, "b"), vec![Some(b"plain".to_vec())]);
        assert_eq!(markers_of(&log, 2).len(), 2);
        assert!(markers_of(&log, 2)
            .iter()
            .all(|h| h.attributes & DELETE_HORIZON_FLAG == 0));
        // The committed transactional batch keeps its producer fields.
        let (h, _) = batches(&log)
            .into_iter()
            .find(|(h, _)| h.producer_id == 1 && !h.is_control())
            .expect("pid 1's batch");
        assert!(h.is_transactional());
        assert_eq!(
            (h.producer_epoch, h.base_sequence, h.records_count),
            (0, 0, 1)
        );
        assert_eq!(committed_view(&log, &rebuilt(&log)), before);
        assert_eq!(committed_view(&log, &live), before);

        // Pass 2: pid 2's ABORT marker has nothing left: it gets a horizon.
        log.compact().expect("compact").expect("ran");
        let m = markers_of(&log, 2);
        let abort = m.first().expect("abort marker");
        assert_eq!(abort.attributes & DELETE_HORIZON_FLAG, DELETE_HORIZON_FLAG);
        assert!(abort.delete_horizon().is_some());
        // pid 1's COMMIT marker stays: its batch holds a's latest value.
        assert_eq!(markers_of(&log, 1).len(), 1);
        assert_eq!(markers_of(&log, 1)[0].delete_horizon(), None);

        // Pass 3, past the horizon (or not): the ABORT marker goes.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let s = log.compact().expect("compact").expect("ran");
        let kinds: Vec<ControlType> = batches(&log)
            .into_iter()
            .filter(|(h, _)| h.is_control() && h.producer_id == 2)
            .filter_map(|(h, b)| parse_marker(&h, &b).map(|m| m.kind))
            .collect();
        assert_eq!(kinds.contains(&ControlType::Abort), !gone, "{retention}");
        assert_eq!(s.markers_removed > 0, gone);
        assert_eq!(committed_view(&log, &rebuilt(&log)), before);
        assert_eq!(committed_view(&log, &live), before);
        // A rebuilt state sees no open transaction.
        let (_, hw) = log.offsets().expect("offsets");
        assert_eq!(rebuilt(&log).last_stable_offset(hw), hw);
        check_segments(&dir_of(&dir));
    }
}

#[test]
fn a_producers_last_batch_is_kept_empty_with_its_marker() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[
        ("min.cleanable.dirty.ratio", "1"),
        ("delete.retention.ms", "0"),
    ]);
    let log = open_log(root.path(), &cfg);
    let mut s3 = 0;
    // pid 3's only (last) batch is aborted.
    append(&log, &[(Some("x"), Some("0"))]);
    let base = txn_append(
        &log,
        3,
        &mut s3,
        &[(Some("x"), Some("1")), (Some("y"), Some("1"))],
    );
    end_txn(&log, 3, ControlType::Abort);
    super::workload(&log, 60, 3);
    let before = committed_view(&log, &rebuilt(&log));
    for _ in 0..3 {
        log.compact().expect("compact").expect("ran");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let kept: Vec<_> = batches(&log)
        .into_iter()
        .filter(|(h, _)| h.producer_id == 3)
        .map(|(h, _)| h)
        .collect();
    assert_eq!(kept.len(), 2, "the emptied batch and its marker: {kept:?}");
    let data = kept[0];
    assert_eq!(data.base_offset, base);
    assert_eq!(data.records_count, 0);
    assert_eq!(data.last_offset_delta, 1);
    assert!(data.is_transactional() && !data.is_control());
    assert_eq!((data.producer_epoch, data.base_sequence), (0, 0));
    assert!(kept[1].is_control());
    // A rebuilt state knows pid 3 and its last sequence, and no open
    // transaction.
    let st = rebuilt(&log);
    let p = st
        .snapshot()
        .into_iter()
        .find(|p| p.producer_id == 3)
        .expect("pid 3 known");
    assert_eq!((p.epoch, p.last_sequence), (0, 1));
    let (_, hw) = log.offsets().expect("offsets");
    assert_eq!(st.last_stable_offset(hw), hw);
    assert_eq!(committed_view(&log, &st), before);
    assert_eq!(values_of(&log, "x").len(), 1);
}

/// A fenced producer (its open transaction aborted by a marker of the next
/// epoch, Kafka's fencing) with no batch after it: its aborted data goes,
/// the marker that carries its newest epoch stays, whole, and a rebuilt
/// state still has that epoch (so the zombie stays fenced).
#[test]
fn a_fencing_marker_is_kept_as_its_producers_last_state() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[
        ("min.cleanable.dirty.ratio", "1"),
        ("delete.retention.ms", "0"),
    ]);
    let log = open_log(root.path(), &cfg);
    let mut s5 = 0;
    txn_append(&log, 5, &mut s5, &[(Some("f"), Some("zombie"))]);
    let fence = end_txn_at(&log, 5, 1, ControlType::Abort);
    super::workload(&log, 60, 3);
    for _ in 0..3 {
        log.compact().expect("compact").expect("ran");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let kept: Vec<_> = batches(&log)
        .into_iter()
        .filter(|(h, _)| h.producer_id == 5)
        .collect();
    assert_eq!(kept.len(), 1, "only the fencing marker");
    let (h, b) = &kept[0];
    assert_eq!((h.base_offset, h.producer_epoch), (fence, 1));
    assert_eq!(parse_marker(h, b).map(|m| m.kind), Some(ControlType::Abort));
    assert!(values_of(&log, "f").is_empty());
    let p = rebuilt(&log)
        .snapshot()
        .into_iter()
        .find(|p| p.producer_id == 5)
        .expect("pid 5 known");
    assert_eq!(p.epoch, 1);
}

#[test]
fn an_open_transaction_is_never_cleaned() {
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[("min.cleanable.dirty.ratio", "1")]);
    let log = open_log(root.path(), &cfg);
    super::workload(&log, 40, 3);
    let mut s = 0;
    let open = txn_append(&log, 7, &mut s, &[(Some("key-1"), Some("open"))]);
    let all = super::workload(&log, 60, 3);
    log.compact().expect("compact").expect("ran");
    let clean_end = super::read_checkpoint(&dir_of(root.path())).expect("checkpoint");
    assert!(clean_end <= open, "{clean_end} > {open}");
    let after = read_all(&log);
    assert!(after.iter().any(|r| r.0 == open));
    for r in &all {
        assert!(
            after.contains(r),
            "{r:?} was cleaned past the open transaction"
        );
    }
    // Once it commits, it is cleaned like the rest.
    end_txn(&log, 7, ControlType::Commit);
    super::workload(&log, 60, 3);
    log.compact().expect("compact").expect("ran");
    assert!(super::read_checkpoint(&dir_of(root.path())).expect("checkpoint") > open);
    assert!(!read_all(&log).iter().any(|r| r.0 == open));
}

/// A small deterministic generator (xorshift64*), so a failing seed can be
/// replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Random interleavings of plain writes, tombstones and transactions of
/// three producers that commit or abort (one sometimes left open): the
/// read_committed view (rebuilt state and a state built before cleaning)
/// is the same after each of several passes as before the first, no
/// aborted record is left below the clean end, and no rebuilt state sees a
/// transaction open that was not.
#[test]
fn the_read_committed_view_survives_cleaning_random_transactions() {
    for seed in 1..=12u64 {
        let root = tempfile::tempdir().expect("tempdir");
        let cfg = config(&[
            ("min.cleanable.dirty.ratio", "1"),
            (
                "delete.retention.ms",
                if seed % 2 == 0 { "0" } else { "86400000" },
            ),
            ("segment.bytes", "1024"),
        ]);
        let log = open_log(root.path(), &cfg);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut seq = [0i32; 3];
        let mut open = [false; 3];
        let steps = 100 + rng.below(100);
        for i in 0..steps {
            let key = format!("k{}", rng.below(8));
            let value = format!("v{seed}-{i}");
            let tomb = rng.below(10) == 0;
            let v = (!tomb).then_some(value.as_str());
            let pick = rng.below(6) as usize;
            if pick >= 3 {
                append(&log, &[(Some(&key), v)]);
                continue;
            }
            let pid = 10 + pick as i64;
            if open[pick] && rng.below(3) == 0 {
                let kind = if rng.below(3) == 0 {
                    ControlType::Abort
                } else {
                    ControlType::Commit
                };
                end_txn(&log, pid, kind);
                open[pick] = false;
                continue;
            }
            txn_append(&log, pid, &mut seq[pick], &[(Some(&key), v)]);
            open[pick] = true;
        }
        // Close all but (sometimes) one.
        let leave_open = rng.below(3) as usize;
        for (p, is_open) in open.iter().enumerate() {
            if *is_open && (p != leave_open || seed % 3 != 0) {
                let kind = if rng.below(2) == 0 {
                    ControlType::Abort
                } else {
                    ControlType::Commit
                };
                end_txn(&log, 10 + p as i64, kind);
            }
        }
        super::workload(&log, 30, 40);
        let live = rebuilt(&log);
        let before = committed_view(&log, &live);
        let (_, hw) = log.offsets().expect("offsets");
        let lso_before = live.last_stable_offset(hw);
        for pass in 0..3 {
            log.compact().expect("compact");
            std::thread::sleep(std::time::Duration::from_millis(2));
            let now = rebuilt(&log);
            assert_eq!(
                committed_view(&log, &now),
                before,
                "seed {seed} pass {pass}"
            );
            assert_eq!(
                committed_view(&log, &live),
                before,
                "seed {seed} pass {pass}"
            );
            assert_eq!(
                now.last_stable_offset(hw),
                lso_before,
                "seed {seed} pass {pass}"
            );
            // No aborted batch left below the clean end.
            let clean_end = super::read_checkpoint(&dir_of(root.path())).unwrap_or(0);
            for (h, _) in batches(&log) {
                if h.next_offset() <= clean_end
                    && in_aborted(&live.aborted_txns(h.base_offset, h.next_offset()), &h)
                {
                    assert_eq!(h.records_count, 0, "seed {seed}: aborted records left");
                }
            }
            check_segments(&dir_of(root.path()));
        }
    }
}

/// Numbers for docs/PERFORMANCE.md, not a test of behaviour: a compacted
/// topic where one transaction in three aborts.
/// `cargo test --release -p ottla-storage -- --ignored --nocapture cleaner_txn_measure`.
#[test]
#[ignore]
fn cleaner_txn_measure() {
    use std::time::Instant;
    let root = tempfile::tempdir().expect("tempdir");
    let cfg = config(&[
        ("segment.bytes", "1048576"),
        ("min.cleanable.dirty.ratio", "1"),
        ("delete.retention.ms", "0"),
    ]);
    let log = open_log(root.path(), &cfg);
    let value = "v".repeat(100);
    let mut seq = 0;
    // 3,000 transactions of 10 records over 10,000 keys, every third
    // aborted: about 3.9 MB.
    for t in 0..3000i64 {
        let recs: Vec<(String, String)> = (0..10)
            .map(|i| (format!("key-{}", (t * 10 + i) % 10_000), value.clone()))
            .collect();
        let view: Vec<(Option<&str>, Option<&str>)> = recs
            .iter()
            .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
            .collect();
        txn_append(&log, 1, &mut seq, &view);
        let kind = if t % 3 == 2 {
            ControlType::Abort
        } else {
            ControlType::Commit
        };
        end_txn(&log, 1, kind);
    }
    append(&log, &[(Some("x"), Some("y"))]);
    let before = log.size_bytes().expect("size");
    let t = Instant::now();
    let s = log.compact().expect("compact").expect("ran");
    eprintln!(
        "1/3 aborted: {before} -> {} bytes ({} -> {} records, {} aborted records removed) in {:?}",
        log.size_bytes().expect("size"),
        s.records_before,
        s.records_after,
        s.aborted_records_removed,
        t.elapsed()
    );
    let t = Instant::now();
    let s = log.compact().expect("compact").expect("ran");
    eprintln!(
        "second pass (markers stamped): {} bytes, {} markers removed, in {:?}",
        log.size_bytes().expect("size"),
        s.markers_removed,
        t.elapsed()
    );
    std::thread::sleep(std::time::Duration::from_millis(2));
    let t = Instant::now();
    let s = log.compact().expect("compact").expect("ran");
    eprintln!(
        "third pass (past the horizon): {} bytes, {} markers removed, in {:?}",
        log.size_bytes().expect("size"),
        s.markers_removed,
        t.elapsed()
    );
}
