//! The producers of one partition (Kafka's `ProducerStateManager`): for
//! every producer id that wrote to it, its epoch, the sequence numbers of
//! its last few batches (so a retried batch gets its original offset), and
//! the first offset of its open transaction; the partition's open
//! transactions by first offset (the last stable offset is the first of
//! them); and its aborted transactions ([`TxnIndex`]).
//!
//! The state is rebuilt from the log when the partition is first used
//! ([`ProducerStateManager::rebuild`] reads every batch from the log start,
//! as Kafka does when it has no snapshot; there are no snapshots yet), then
//! kept up to date by the appender, who calls [`ProducerStateManager::record`]
//! for each data batch and [`ProducerStateManager::complete_txn`] for each
//! marker it appends. The caller serialises check, append and record (the
//! broker holds the partition's producer lock across them).
//!
//! Several processes may append to one partition (embedded producers, a
//! broker, on one directory), so the state remembers how far into the log it
//! has seen (`next_offset`) and [`ProducerStateManager::catch_up`] replays
//! what others appended since. The appender's own `record`/`complete_txn`
//! move that mark only when the batch directly follows it; otherwise the
//! next catch-up reads the batch again, which changes nothing (replay is
//! idempotent: a batch's sequence is remembered once, a second marker ends
//! nothing).

mod snapshot;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::txn_index::{AbortedTxn, TxnIndex};
use super::{PartitionLog, ReadCursor};
use crate::error::{Error, Result};
use ottla_record::batch::{parse_marker, Batches, ControlType};

/// How many recent batches per producer are remembered (Kafka keeps five,
/// the most a client has in flight).
const RECENT: usize = 5;

/// How much of the log one step of [`ProducerStateManager::rebuild`] reads.
const SCAN_CHUNK: usize = 4 << 20;

/// The producer fields of one batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchSeq {
    pub producer_id: i64,
    pub epoch: i16,
    pub first: i32,
    pub count: i32,
    /// The batch belongs to a transaction (its transactional bit is set).
    pub transactional: bool,
}

impl BatchSeq {
    fn last(&self) -> i32 {
        ((self.first as i64 + self.count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
    }
}

/// Why a batch is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqError {
    /// An epoch below the producer's: a fenced (zombie) producer.
    StaleEpoch,
    /// A gap in the producer's numbering.
    OutOfOrder,
}

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already in the log at this base offset.
    Duplicate(i64),
    Reject(SeqError),
}

#[derive(Clone, Debug)]
struct Entry {
    epoch: i16,
    last_seq: i32,
    last_timestamp: i64,
    /// (first sequence, last sequence, base offset) of recent batches.
    recent: VecDeque<(i32, i32, i64)>,
    /// The first offset of the open transaction, if any.
    txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker (-1: none yet).
    coordinator_epoch: i32,
    /// The offset of its last batch or marker (a producer's batches are in
    /// offset order, so a replay skips what lies at or below it).
    last_offset: i64,
}

/// One producer as DescribeProducers shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// When its last batch was appended (ms).
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction, -1 when none.
    pub current_txn_start_offset: i64,
}

/// A transaction ended by a marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    pub producer_id: i64,
    pub first_offset: Option<i64>,
    pub marker_offset: i64,
    pub kind: ControlType,
}

/// The producers of one partition.
#[derive(Clone, Debug)]
pub struct ProducerStateManager {
    by_id: HashMap<i64, Entry>,
    /// Open transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Shared, so the appender's trial copy of the state costs nothing for it.
    aborted: Arc<TxnIndex>,
    /// The offset after the last batch this state has seen (0: none yet).
    next_offset: i64,
    /// The offset of the newest snapshot written or loaded (-1: none).
    snapshot_offset: i64,
}

impl Default for ProducerStateManager {
    fn default() -> Self {
        ProducerStateManager {
            by_id: HashMap::new(),
            ongoing: BTreeMap::new(),
            aborted: Arc::default(),
            next_offset: 0,
            snapshot_offset: -1,
        }
    }
}

impl ProducerStateManager {
    /// The state of `log`: from its newest snapshot and transaction
    /// indexes, then the batches after it (Kafka's load); from every batch
    /// when there is no usable snapshot. Batches appended by others
    /// meanwhile are read too: the scan ends at the log end it finds last.
    pub fn rebuild(log: &PartitionLog) -> Result<ProducerStateManager> {
        let mut st = snapshot::load(log)?.unwrap_or_default();
        st.catch_up(log)?;
        Ok(st)
    }

    /// [`ProducerStateManager::rebuild`] ignoring snapshots (a full scan).
    pub fn rebuild_from_log(log: &PartitionLog) -> Result<ProducerStateManager> {
        let mut st = ProducerStateManager::default();
        st.catch_up(log)?;
        Ok(st)
    }

    /// The offset after the last batch this state has seen.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Replay every batch appended to `log` since this state last saw it
    /// (by this process or any other), up to the log end it finds last.
    /// Cheap when nothing was appended: one read of the head.
    pub fn catch_up(&mut self, log: &PartitionLog) -> Result<()> {
        let (start, _) = log.offsets()?;
        let mut next = self.next_offset.max(start);
        let mut cursor: Option<ReadCursor> = None;
        loop {
            let fetched = match log.read_to_log_end(next, SCAN_CHUNK, &mut cursor, false) {
                Ok(f) => f,
                Err(Error::OffsetOutOfRange { start, .. }) if next < start => {
                    next = start;
                    cursor = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if fetched.bytes.is_empty() {
                self.next_offset = self.next_offset.max(next);
                return match fetched.error {
                    Some(e) => Err(e),
                    None => {
                        snapshot::maybe_write(self, log);
                        Ok(())
                    }
                };
            }
            for (h, batch) in Batches::new(&fetched.bytes) {
                if h.next_offset() <= next {
                    continue;
                }
                self.replay(&h, batch);
                next = h.next_offset();
                self.next_offset = self.next_offset.max(next);
            }
            if let Some(e) = fetched.error {
                return Err(e);
            }
        }
    }

    /// Apply one batch read from the log (a rebuild, or a follower's copy
    /// of its leader's batches).
    pub fn replay(&mut self, h: &ottla_record::BatchHeader, batch: &[u8]) {
        if h.base_offset == self.next_offset {
            self.next_offset = h.next_offset();
        }
        if h.producer_id < 0 || self.seen(h.producer_id, h.base_offset) {
            return;
        }
        if h.is_control() {
            if let Some(m) = parse_marker(h, batch) {
                self.complete_txn(
                    h.producer_id,
                    h.producer_epoch,
                    m.kind,
                    m.coordinator_epoch,
                    h.base_offset,
                    h.max_timestamp,
                );
            }
            return;
        }
        let seq = BatchSeq {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            first: h.base_sequence,
            count: h.last_offset_delta.saturating_add(1),
            transactional: h.is_transactional(),
        };
        self.record(&seq, h.base_offset, h.max_timestamp);
    }

    /// Whether `b` is new, a retry of a batch in the log, or refused.
    pub fn check(&self, b: &BatchSeq) -> Verdict {
        if b.producer_id < 0 {
            return Verdict::Append;
        }
        let Some(e) = self.by_id.get(&b.producer_id) else {
            return Verdict::Append;
        };
        if b.epoch < e.epoch {
            return Verdict::Reject(SeqError::StaleEpoch);
        }
        if b.epoch > e.epoch {
            return if b.first == 0 {
                Verdict::Append
            } else {
                Verdict::Reject(SeqError::OutOfOrder)
            };
        }
        if let Some((_, _, off)) = e
            .recent
            .iter()
            .find(|(f, l, _)| *f == b.first && *l == b.last())
        {
            return Verdict::Duplicate(*off);
        }
        let next = ((e.last_seq as i64 + 1) % (i32::MAX as i64 + 1)) as i32;
        if b.first == next {
            Verdict::Append
        } else {
            Verdict::Reject(SeqError::OutOfOrder)
        }
    }

    /// Remember a data batch appended at `base_offset`; a transactional one
    /// opens its producer's transaction if none is open.
    pub fn record(&mut self, b: &BatchSeq, base_offset: i64, timestamp: i64) {
        if base_offset == self.next_offset {
            self.next_offset = base_offset + i64::from(b.count.max(1));
        }
        if b.producer_id < 0 {
            return;
        }
        let e = self.entry(b.producer_id, b.epoch);
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.recent.clear();
        }
        e.last_seq = b.last();
        e.last_timestamp = timestamp;
        e.last_offset = e.last_offset.max(base_offset);
        e.recent.push_back((b.first, b.last(), base_offset));
        while e.recent.len() > RECENT {
            e.recent.pop_front();
        }
        if b.transactional && e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(base_offset);
            self.ongoing.insert(base_offset, b.producer_id);
        }
    }

    /// Whether the batch of `producer_id` at `base_offset` was recorded
    /// already (a catch-up reading again what this process appended).
    fn seen(&self, producer_id: i64, base_offset: i64) -> bool {
        self.by_id
            .get(&producer_id)
            .is_some_and(|e| base_offset <= e.last_offset)
    }

    fn entry(&mut self, producer_id: i64, epoch: i16) -> &mut Entry {
        self.by_id.entry(producer_id).or_insert(Entry {
            epoch,
            last_seq: -1,
            last_timestamp: -1,
            recent: VecDeque::new(),
            txn_first_offset: None,
            coordinator_epoch: -1,
            last_offset: -1,
        })
    }

    /// A marker ending `producer_id`'s transaction was appended at
    /// `marker_offset`. A marker of a newer epoch (the coordinator fencing
    /// the producer) moves the producer to it, so batches of the older
    /// epoch are refused from now on; its sequence numbers start over.
    pub fn complete_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        kind: ControlType,
        coordinator_epoch: i32,
        marker_offset: i64,
        timestamp: i64,
    ) -> Completed {
        if marker_offset == self.next_offset {
            self.next_offset = marker_offset + 1;
        }
        let e = self.entry(producer_id, epoch);
        e.last_offset = e.last_offset.max(marker_offset);
        if epoch > e.epoch {
            e.epoch = epoch;
            e.last_seq = -1;
            e.recent.clear();
        }
        e.coordinator_epoch = coordinator_epoch;
        e.last_timestamp = timestamp;
        let first = e.txn_first_offset.take();
        if let Some(first) = first {
            self.ongoing.remove(&first);
            if kind == ControlType::Abort {
                let lso = self.first_unstable_offset().unwrap_or(marker_offset + 1);
                Arc::make_mut(&mut self.aborted).push(AbortedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: marker_offset,
                    last_stable_offset: lso,
                });
            }
        }
        Completed {
            producer_id,
            first_offset: first,
            marker_offset,
            kind,
        }
    }

    /// The first offset of the earliest open transaction: the last stable
    /// offset is this, or the high watermark when there is none.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The last stable offset for a partition whose high watermark is `hw`.
    pub fn last_stable_offset(&self, hw: i64) -> i64 {
        self.first_unstable_offset().map_or(hw, |f| f.min(hw))
    }

    /// The aborted transactions overlapping `[fetch_offset, upper)`.
    pub fn aborted_txns(&self, fetch_offset: i64, upper: i64) -> Vec<AbortedTxn> {
        self.aborted.collect(fetch_offset, upper)
    }

    /// The first offset of `producer_id`'s open transaction.
    pub fn txn_first_offset(&self, producer_id: i64) -> Option<i64> {
        self.by_id.get(&producer_id)?.txn_first_offset
    }

    /// The offset of `producer_id`'s last batch or marker in the partition
    /// (`None`: none is known). A marker ending its transaction moves it,
    /// which is how a broker tells that a transaction ended while it was
    /// verifying the producer's next one (KIP-890).
    pub fn last_offset_of(&self, producer_id: i64) -> Option<i64> {
        self.by_id.get(&producer_id).map(|e| e.last_offset)
    }

    /// Forget what lies wholly below the log start.
    pub fn truncate_below(&mut self, log_start: i64) {
        if self
            .aborted
            .collect(i64::MIN, log_start)
            .iter()
            .any(|a| a.last_offset < log_start)
        {
            Arc::make_mut(&mut self.aborted).truncate_below(log_start);
        }
    }

    /// Each producer's last data batch (its base offset; `None` once a
    /// marker of a newer epoch started its sequences over) and its epoch:
    /// the batches the log cleaner keeps, emptied if need be, so that a
    /// state rebuilt from the cleaned log still knows every producer
    /// (Kafka's `lastRecordsOfActiveProducers`).
    pub(crate) fn last_records(&self) -> HashMap<i64, (Option<i64>, i16)> {
        self.by_id
            .iter()
            .map(|(id, e)| (*id, (e.recent.back().map(|r| r.2), e.epoch)))
            .collect()
    }

    /// Every producer, by id.
    pub fn snapshot(&self) -> Vec<ProducerSnapshot> {
        let mut out: Vec<ProducerSnapshot> = self
            .by_id
            .iter()
            .map(|(id, e)| ProducerSnapshot {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_seq,
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, count: i32) -> BatchSeq {
        BatchSeq {
            producer_id: 7,
            epoch: 0,
            first,
            count,
            transactional: false,
        }
    }

    fn t(pid: i64, epoch: i16, first: i32, count: i32) -> BatchSeq {
        BatchSeq {
            producer_id: pid,
            epoch,
            first,
            count,
            transactional: true,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut p = ProducerStateManager::default();
        assert_eq!(p.check(&b(0, 3)), Verdict::Append);
        p.record(&b(0, 3), 100, 1);
        assert_eq!(p.check(&b(0, 3)), Verdict::Duplicate(100));
        assert_eq!(p.check(&b(3, 2)), Verdict::Append);
        assert_eq!(p.check(&b(4, 2)), Verdict::Reject(SeqError::OutOfOrder));
        let old = BatchSeq {
            epoch: -1,
            ..b(3, 1)
        };
        p.record(
            &BatchSeq {
                epoch: 1,
                ..b(0, 1)
            },
            103,
            2,
        );
        assert_eq!(p.check(&old), Verdict::Reject(SeqError::StaleEpoch));
    }

    #[test]
    fn open_transactions_hold_the_last_stable_offset_and_aborts_are_indexed() {
        let mut p = ProducerStateManager::default();
        assert_eq!(p.last_stable_offset(10), 10);
        p.record(&t(1, 0, 0, 5), 10, 1);
        p.record(&t(2, 0, 0, 5), 15, 1);
        p.record(&t(1, 0, 5, 5), 20, 1);
        assert_eq!(p.txn_first_offset(1), Some(10));
        assert_eq!(p.last_stable_offset(25), 10);
        let c = p.complete_txn(1, 0, ControlType::Commit, 0, 25, 2);
        assert_eq!(c.first_offset, Some(10));
        assert_eq!(p.last_stable_offset(26), 15);
        assert!(p.aborted_txns(0, 100).is_empty());
        p.complete_txn(2, 0, ControlType::Abort, 0, 26, 2);
        assert_eq!(p.last_stable_offset(27), 27);
        let ab = p.aborted_txns(0, 27);
        assert_eq!(ab.len(), 1);
        assert_eq!(
            (ab[0].producer_id, ab[0].first_offset, ab[0].last_offset),
            (2, 15, 26)
        );
        // A marker for a producer with nothing open ends nothing.
        let again = p.complete_txn(2, 0, ControlType::Abort, 0, 27, 3);
        assert_eq!(again.first_offset, None);
        assert_eq!(p.aborted_txns(0, 100).len(), 1);
    }

    #[test]
    fn rebuild_from_the_log_finds_producers_open_and_aborted_transactions() {
        use crate::log::Durability;
        use ottla_record::batch::*;
        let dir = tempfile::tempdir().expect("tmp");
        let store = crate::store::Store::open(dir.path()).expect("store");
        let topic = store.create_topic("t", 1, &[]).expect("topic");
        let log = store.partition(&topic, 0).expect("log");
        let append = |pid: i64, seq: i32, txn: bool| {
            let mut b = BatchBuilder::with_capacity(128);
            b.append(1, None, Some(b"v"), &[]);
            b.append(1, None, Some(b"w"), &[]);
            let mut v = b.finish().to_vec();
            let attrs = if txn { TRANSACTIONAL_FLAG } else { 0 };
            v[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
            v[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
            v[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&0i16.to_be_bytes());
            v[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
            seal_crc(&mut v);
            log.append(&mut v, Durability::PageCache)
                .expect("append")
                .base_offset
        };
        let marker = |pid: i64, kind| {
            let mut m = marker_batch(pid, 0, kind, 3, 1);
            log.append(&mut m, Durability::PageCache).expect("marker");
        };
        assert_eq!(append(1, 0, false), 0); // idempotent, 0-1
        assert_eq!(append(2, 0, true), 2); // aborted below, 2-3
        assert_eq!(append(3, 0, true), 4); // left open, 4-5
        marker(2, ControlType::Abort); // 6
        assert_eq!(append(1, 2, false), 7); // 7-8
        let st = ProducerStateManager::rebuild(&log).expect("rebuild");
        assert_eq!(st.check(&b(0, 2)), Verdict::Append, "another producer id");
        let retry = BatchSeq {
            producer_id: 1,
            ..b(2, 2)
        };
        assert_eq!(st.check(&retry), Verdict::Duplicate(7));
        assert_eq!(st.last_stable_offset(9), 4);
        assert_eq!(st.txn_first_offset(3), Some(4));
        let ab = st.aborted_txns(0, 9);
        assert_eq!(ab.len(), 1);
        assert_eq!(
            (ab[0].producer_id, ab[0].first_offset, ab[0].last_offset),
            (2, 2, 6)
        );
        let snap = st.snapshot();
        assert_eq!(
            snap.iter().map(|p| p.producer_id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(snap[1].coordinator_epoch, 3);
        assert_eq!(snap[2].current_txn_start_offset, 4);
    }

    #[test]
    fn catch_up_replays_what_others_appended_and_skips_what_it_recorded() {
        use crate::log::Durability;
        use ottla_record::batch::*;
        let dir = tempfile::tempdir().expect("tmp");
        let store = crate::store::Store::open(dir.path()).expect("store");
        let topic = store.create_topic("t", 1, &[]).expect("topic");
        let log = store.partition(&topic, 0).expect("log");
        let batch = |pid: i64, seq: i32| {
            let mut b = BatchBuilder::with_capacity(128);
            b.append(1, None, Some(b"v"), &[]);
            let mut v = b.finish().to_vec();
            v[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&TRANSACTIONAL_FLAG.to_be_bytes());
            v[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
            v[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&0i16.to_be_bytes());
            v[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
            seal_crc(&mut v);
            v
        };
        let mut mine = ProducerStateManager::rebuild(&log).expect("empty");
        // This process appends and records pid 1's batch at 0.
        let off = log
            .append(&mut batch(1, 0), Durability::PageCache)
            .expect("append")
            .base_offset;
        mine.record(&t(1, 0, 0, 1), off, 1);
        assert_eq!(mine.next_offset(), 1);
        // Another process appends pid 2's batch, then this one appends
        // pid 1's next batch (recorded, but not next to what it saw).
        log.append(&mut batch(2, 0), Durability::PageCache)
            .expect("append");
        let off = log
            .append(&mut batch(1, 1), Durability::PageCache)
            .expect("append")
            .base_offset;
        mine.record(&t(1, 0, 1, 1), off, 1);
        assert_eq!(
            mine.next_offset(),
            1,
            "a gap: the next catch-up reads on from 1"
        );
        // The other process ends pid 2's transaction with an abort.
        let mut m = marker_batch(2, 0, ControlType::Abort, 0, 1);
        log.append(&mut m, Durability::PageCache).expect("marker");
        mine.catch_up(&log).expect("catch up");
        assert_eq!(mine.next_offset(), 4);
        assert_eq!(mine.txn_first_offset(1), Some(0));
        assert_eq!(mine.txn_first_offset(2), None);
        assert_eq!(mine.last_stable_offset(4), 0);
        assert_eq!(mine.aborted_txns(0, 4).len(), 1);
        assert_eq!(mine.check(&t(1, 0, 2, 1)), Verdict::Append);
        assert_eq!(mine.check(&t(1, 0, 1, 1)), Verdict::Duplicate(2));
        // Catching up again changes nothing.
        let before = mine.snapshot();
        mine.catch_up(&log).expect("again");
        assert_eq!(mine.snapshot(), before);
    }

    #[test]
    fn a_marker_of_a_newer_epoch_fences_the_older_one() {
        let mut p = ProducerStateManager::default();
        p.record(&t(1, 0, 0, 5), 0, 1);
        p.complete_txn(1, 1, ControlType::Abort, 0, 5, 2);
        assert_eq!(
            p.check(&t(1, 0, 5, 1)),
            Verdict::Reject(SeqError::StaleEpoch)
        );
        assert_eq!(p.check(&t(1, 1, 0, 1)), Verdict::Append);
        assert_eq!(p.snapshot()[0].epoch, 1);
    }
}
