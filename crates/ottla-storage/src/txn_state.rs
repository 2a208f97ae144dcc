//! Transactions' state (KIP-98): Kafka's `TransactionState` machine and
//! `TransactionMetadata`, and their log, the internal compacted topic
//! `__transaction_state`, with Kafka's key (version 0: transactional id)
//! and value (version 0: producer id and epoch, timeout, state, partitions,
//! timestamps) encodings (docs/FORMAT.md).
//!
//! The state machine is pure: [`TxnMetadata`]'s methods say what a request
//! does to a transaction (or why it is refused) and return the new
//! metadata, which the coordinator writes to the log before it acts on it.
//! So a coordinator restarted after a crash finds every transaction where
//! it last promised it would be: a PrepareCommit or PrepareAbort whose
//! markers may not all be written is completed again (markers are
//! idempotent: a second marker for a transaction already ended ends
//! nothing), and an Ongoing one past its timeout is aborted.
//!
//! The broker's transaction coordinator drives this, and so does the
//! embedded producer (`ottla_client::producer::txn`): several coordinators,
//! in several processes, may serve one directory. [`TxnLocks`] serialises
//! them per transactional id (an OFD byte lock in
//! `.ottla/transactions.lock`, dropped by the kernel when a process dies),
//! and [`TxnView`] keeps each one's copy of the log up to date: under the
//! id's lock a coordinator catches up with the log, acts, and writes, so
//! it never acts on a state another process has moved on from.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::{now_ms, Durability, PartitionLog, ReadCursor};
use crate::ofd::{ByteGuard, ByteLocks};
use crate::store::Store;
use ottla_record::batch::{BatchBuilder, Batches};
use ottla_record::decode::records;

pub const TXN_TOPIC: &str = "__transaction_state";

/// Kafka's `transaction.max.timeout.ms` default.
pub const DEFAULT_MAX_TIMEOUT_MS: i32 = 900_000;

/// Kafka's `TransactionState`, with its ids in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, ListTransactions' filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// The states a transaction may move to this one from (Kafka's
    /// `TransactionState.validPreviousStates`).
    fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteCommit, CompleteAbort],
            PrepareEpochFence => &[Ongoing],
        }
    }
}

/// Why a request is refused (the coordinator answers with Kafka's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnError {
    /// INVALID_PRODUCER_ID_MAPPING: not this transactional id's producer.
    ProducerIdMapping,
    /// PRODUCER_FENCED (INVALID_PRODUCER_EPOCH to older clients).
    Fenced,
    /// CONCURRENT_TRANSACTIONS: the previous transaction is completing.
    Concurrent,
    /// INVALID_TXN_STATE.
    InvalidState,
}

/// One transactional id's transaction (Kafka's `TransactionMetadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions written in the open transaction, markers' targets.
    pub partitions: BTreeSet<(String, u32)>,
    pub last_update_ms: i64,
    /// When the open transaction started (its first AddPartitions); -1 when none.
    pub start_ms: i64,
}

/// What EndTxn does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndStep {
    /// A retry of an end already completed: answer success.
    Done,
    /// Write this PrepareCommit/PrepareAbort, then the markers, then complete.
    Prepare(TxnMetadata),
}

impl TxnMetadata {
    /// A transactional id seen for the first time: its producer id, epoch
    /// -1 until the first bump.
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now,
            start_ms: -1,
        }
    }

    fn to(&self, state: TxnState, now: i64) -> Result<TxnMetadata, TxnError> {
        if !state.valid_previous().contains(&self.state) {
            return Err(TxnError::InvalidState);
        }
        let mut m = self.clone();
        m.state = state;
        m.last_update_ms = now;
        Ok(m)
    }

    /// The producer id and epoch of a request, checked as Kafka's
    /// coordinator checks them.
    pub fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::ProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::Fenced);
        }
        Ok(())
    }

    /// InitProducerId on an id with no transaction open (Empty or
    /// Complete*): the next epoch, in Empty. `None` when the epoch is
    /// exhausted (the caller allocates a new producer id and starts at 0).
    pub fn bump_epoch(&self, timeout_ms: i32, now: i64) -> Result<Option<TxnMetadata>, TxnError> {
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(TxnError::Concurrent),
            TxnState::Ongoing | TxnState::PrepareEpochFence | TxnState::Dead => {
                return Err(TxnError::InvalidState)
            }
            _ => {}
        }
        if self.producer_epoch >= i16::MAX - 1 {
            return Ok(None);
        }
        let mut m = self.to(TxnState::Empty, now)?;
        m.producer_epoch += 1;
        m.timeout_ms = timeout_ms;
        m.partitions.clear();
        m.start_ms = -1;
        Ok(Some(m))
    }

    /// InitProducerId finding a transaction open: the epoch bumped and the
    /// transaction fenced (PrepareEpochFence), then aborted with the new
    /// epoch ([`TxnMetadata::prepare_end`] from this), so the older
    /// producer's writes and ends are refused.
    pub fn fence(&self, now: i64) -> Result<TxnMetadata, TxnError> {
        let mut m = self.to(TxnState::PrepareEpochFence, now)?;
        m.producer_epoch = m.producer_epoch.saturating_add(1);
        Ok(m)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: `None` when every partition
    /// is already in the open transaction (nothing to write).
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
        now: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, epoch)?;
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(TxnError::Concurrent),
            TxnState::Ongoing if partitions.iter().all(|p| self.partitions.contains(p)) => {
                return Ok(None)
            }
            _ => {}
        }
        let mut m = self.to(TxnState::Ongoing, now)?;
        if self.state != TxnState::Ongoing {
            m.start_ms = now;
            m.partitions.clear();
        }
        m.partitions.extend(partitions.iter().cloned());
        Ok(Some(m))
    }

    /// Whether `partition` is in the open transaction of this producer
    /// (a transactional Produce must be, KIP-890's verification).
    pub fn verify_partition(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &(String, u32),
    ) -> Result<(), TxnError> {
        self.check_producer(producer_id, epoch)?;
        if self.state == TxnState::Ongoing && self.partitions.contains(partition) {
            Ok(())
        } else {
            Err(TxnError::InvalidState)
        }
    }

    /// EndTxn (`from_client`), or the coordinator aborting on its own (a
    /// timeout, a fence: the epoch may then be newer than the client's).
    pub fn prepare_end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        from_client: bool,
        now: i64,
    ) -> Result<EndStep, TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::ProducerIdMapping);
        }
        if (from_client && epoch != self.producer_epoch) || epoch < self.producer_epoch {
            return Err(TxnError::Fenced);
        }
        use TxnState::*;
        match (self.state, commit) {
            (Ongoing, _) => {}
            (PrepareEpochFence, false) if !from_client => {}
            (CompleteCommit, true) | (CompleteAbort, false) => return Ok(EndStep::Done),
            (PrepareCommit, true) | (PrepareAbort, false) => return Err(TxnError::Concurrent),
            _ => return Err(TxnError::InvalidState),
        }
        let next = if commit { PrepareCommit } else { PrepareAbort };
        Ok(EndStep::Prepare(self.to(next, now)?))
    }

    /// After every marker is written: CompleteCommit/CompleteAbort, no
    /// partitions.
    pub fn complete(&self, now: i64) -> Result<TxnMetadata, TxnError> {
        let next = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Err(TxnError::InvalidState),
        };
        let mut m = self.to(next, now)?;
        m.partitions.clear();
        Ok(m)
    }

    /// Open past its timeout (the coordinator aborts it).
    pub fn expired(&self, now: i64) -> bool {
        self.state == TxnState::Ongoing
            && self.start_ms >= 0
            && now.saturating_sub(self.start_ms) > i64::from(self.timeout_ms)
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    buf.extend_from_slice(&(b.len() as i16).to_be_bytes());
    buf.extend_from_slice(b);
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.buf.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        b.try_into().ok()
    }
    fn i8(&mut self) -> Option<i8> {
        Some(i8::from_be_bytes(self.take()?))
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        let b = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        String::from_utf8(b.to_vec()).ok()
    }
}

/// Kafka's `TransactionLogKey` version 0: the transactional id.
pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + transactional_id.len());
    k.extend_from_slice(&0i16.to_be_bytes());
    put_str(&mut k, transactional_id);
    k
}

pub fn decode_key(k: &[u8]) -> Option<String> {
    let mut c = Cursor { buf: k, pos: 0 };
    if c.i16()? != 0 {
        return None;
    }
    c.str()
}

/// Kafka's `TransactionLogValue` version 0.
pub fn encode_value(m: &TxnMetadata) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&0i16.to_be_bytes());
    v.extend_from_slice(&m.producer_id.to_be_bytes());
    v.extend_from_slice(&m.producer_epoch.to_be_bytes());
    v.extend_from_slice(&m.timeout_ms.to_be_bytes());
    v.extend_from_slice(&m.state.id().to_be_bytes());
    let mut by_topic: Vec<(&str, Vec<u32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match by_topic.last_mut() {
            Some((last, ps)) if *last == t.as_str() => ps.push(*p),
            _ => by_topic.push((t.as_str(), vec![*p])),
        }
    }
    v.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (t, ps) in by_topic {
        put_str(&mut v, t);
        v.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            v.extend_from_slice(&(p as i32).to_be_bytes());
        }
    }
    v.extend_from_slice(&m.last_update_ms.to_be_bytes());
    v.extend_from_slice(&m.start_ms.to_be_bytes());
    v
}

pub fn decode_value(transactional_id: &str, v: &[u8]) -> Option<TxnMetadata> {
    let mut c = Cursor { buf: v, pos: 0 };
    if c.i16()? != 0 {
        return None;
    }
    let producer_id = c.i64()?;
    let producer_epoch = c.i16()?;
    let timeout_ms = c.i32()?;
    let state = TxnState::from_id(c.i8()?)?;
    let mut partitions = BTreeSet::new();
    let topics = c.i32()?;
    for _ in 0..topics.max(0) {
        let t = c.str()?;
        let n = c.i32()?;
        for _ in 0..n.max(0) {
            partitions.insert((t.clone(), u32::try_from(c.i32()?).ok()?));
        }
    }
    Some(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: c.i64()?,
        start_ms: c.i64()?,
    })
}

/// Kafka's partition of `__transaction_state` for a transactional id:
/// `abs(hashCode(id)) % partitions`, with Java's `String.hashCode` (UTF-16
/// units), so a cluster would agree with Kafka's placement.
pub fn partition_for(transactional_id: &str, partitions: u32) -> u32 {
    let mut h: i32 = 0;
    for u in transactional_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(u));
    }
    // Kafka's `Utils.abs`: MIN_VALUE maps to 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs as u32 % partitions.max(1)
}

/// The transaction log: `__transaction_state`, one compacted partition (a
/// broker here leads every partition; the count is read from the topic,
/// so a cluster could spread them).
pub struct TxnStateLog {
    logs: Vec<Arc<PartitionLog>>,
}

impl TxnStateLog {
    /// The log, created (compacted, as Kafka's) if `create`; `None` when
    /// it does not exist and `create` is false.
    pub fn open(store: &Arc<Store>, create: bool) -> Result<Option<TxnStateLog>> {
        let topic = match store.topic(TXN_TOPIC)? {
            Some(t) => t,
            None if !create => return Ok(None),
            None => match store.create_topic(
                TXN_TOPIC,
                1,
                &[
                    ("cleanup.policy".into(), "compact".into()),
                    ("segment.bytes".into(), "104857600".into()),
                ],
            ) {
                Ok(t) => t,
                Err(Error::TopicAlreadyExists(_)) => store
                    .topic(TXN_TOPIC)?
                    .ok_or_else(|| Error::IllegalState("transaction log vanished".into()))?,
                Err(e) => return Err(e),
            },
        };
        let logs = (0..topic.partitions)
            .map(|p| store.partition(&topic, p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(TxnStateLog { logs }))
    }

    fn log_for(&self, transactional_id: &str) -> Result<&Arc<PartitionLog>> {
        let p = partition_for(transactional_id, self.logs.len() as u32);
        self.logs
            .get(p as usize)
            .ok_or_else(|| Error::IllegalState("transaction log has no partitions".into()))
    }

    /// The coordinator epoch of a transactional id: the leader epoch of its
    /// partition of the log (stamped into the markers it writes).
    pub fn coordinator_epoch(&self, transactional_id: &str) -> i32 {
        self.log_for(transactional_id)
            .map_or(-1, |l| l.leader_epoch().max(0))
    }

    /// Every transactional id's latest metadata.
    pub fn load(&self) -> Result<HashMap<String, TxnMetadata>> {
        let mut view = TxnView::default();
        self.catch_up(&mut view)?;
        Ok(view.txns)
    }

    /// Read what was appended to the log since `view` last saw it (by any
    /// process) into `view`.
    pub fn catch_up(&self, view: &mut TxnView) -> Result<()> {
        view.next.resize(self.logs.len(), 0);
        for (log, next) in self.logs.iter().zip(view.next.iter_mut()) {
            let (start, _) = log.offsets()?;
            *next = (*next).max(start);
            let mut cursor: Option<ReadCursor> = None;
            loop {
                let f = match log.read(*next, 1 << 20, &mut cursor, true) {
                    Ok(f) => f,
                    Err(Error::OffsetOutOfRange { start, .. }) if *next < start => {
                        *next = start;
                        cursor = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if f.bytes.is_empty() {
                    if let Some(e) = f.error {
                        return Err(e);
                    }
                    break;
                }
                for (h, batch) in Batches::new(&f.bytes) {
                    if h.next_offset() <= *next {
                        continue;
                    }
                    *next = h.next_offset();
                    if h.is_control() {
                        continue;
                    }
                    for rec in records(&h, batch)?.iter() {
                        let rec =
                            rec.map_err(|r| Error::InvalidRecord(format!("{TXN_TOPIC}: {r}")))?;
                        let Some(id) = rec.key.and_then(decode_key) else {
                            continue;
                        };
                        match rec.value.and_then(|v| decode_value(&id, v)) {
                            Some(m) => {
                                view.txns.insert(id, m);
                            }
                            None => {
                                view.txns.remove(&id);
                            }
                        }
                    }
                }
                if let Some(e) = f.error {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Append `m` (the coordinator acts on it only once this returns).
    pub fn write(&self, m: &TxnMetadata, durability: Durability) -> Result<()> {
        let log = self.log_for(&m.transactional_id)?;
        let mut b = BatchBuilder::with_capacity(256);
        b.append(
            now_ms(),
            Some(&encode_key(&m.transactional_id)),
            Some(&encode_value(m)),
            &[],
        );
        log.append(b.finish_mut(), durability)?;
        Ok(())
    }
}

/// One coordinator's copy of the transaction log: every transactional
/// id's latest metadata, and how far into each partition it has read.
#[derive(Clone, Debug, Default)]
pub struct TxnView {
    next: Vec<i64>,
    pub txns: HashMap<String, TxnMetadata>,
}

/// The lock that makes one coordinator at a time act for a transactional
/// id, whichever process it is in: an exclusive OFD lock on one byte of
/// `.ottla/transactions.lock` per id (ids hashing alike share a byte, which
/// only serialises them). Each `TxnLocks` is its own open file description,
/// so two coordinators in one process exclude each other as two processes
/// do; a dead process's locks go with it.
pub struct TxnLocks {
    locks: ByteLocks,
}

impl TxnLocks {
    pub fn open(store: &Store) -> Result<TxnLocks> {
        let path = store.root().join(".ottla").join("transactions.lock");
        Ok(TxnLocks {
            locks: ByteLocks::open(&path)?,
        })
    }

    fn byte(transactional_id: &str) -> u64 {
        u64::from(partition_for(transactional_id, u32::MAX))
    }

    /// Wait for `transactional_id`'s lock.
    pub fn lock(&self, transactional_id: &str) -> Result<ByteGuard<'_>> {
        ByteGuard::lock(&self.locks, Self::byte(transactional_id))
    }

    /// `transactional_id`'s lock if no other coordinator holds it.
    pub fn try_lock(&self, transactional_id: &str) -> Result<Option<ByteGuard<'_>>> {
        let byte = Self::byte(transactional_id);
        Ok(self
            .locks
            .try_lock(byte, true)?
            .then(|| ByteGuard::held(&self.locks, byte)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_catches_up_with_what_another_writer_appended() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let a = TxnStateLog::open(&store, true).expect("open").expect("log");
        let mut view = TxnView::default();
        a.catch_up(&mut view).expect("empty");
        assert!(view.txns.is_empty());
        let m = TxnMetadata::new("t", 9, 60_000, 1);
        a.write(&m, Durability::PageCache).expect("write");
        a.catch_up(&mut view).expect("catch up");
        assert_eq!(view.txns.get("t"), Some(&m));
        let m2 = m.bump_epoch(60_000, 2).expect("ok").expect("bumped");
        a.write(&m2, Durability::PageCache).expect("write");
        a.catch_up(&mut view).expect("catch up");
        assert_eq!(view.txns.get("t"), Some(&m2));
        assert_eq!(a.load().expect("load").get("t"), Some(&m2));
    }

    #[test]
    fn two_lock_holders_exclude_each_other() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("store");
        let one = TxnLocks::open(&store).expect("locks");
        let two = TxnLocks::open(&store).expect("locks");
        let g = one.lock("t").expect("lock");
        assert!(two.try_lock("t").expect("try").is_none());
        drop(g);
        assert!(two.try_lock("t").expect("try").is_some());
    }

    fn ongoing() -> TxnMetadata {
        let m = TxnMetadata::new("t", 9, 60_000, 1);
        let m = m.bump_epoch(60_000, 2).expect("ok").expect("bumped");
        assert_eq!((m.producer_epoch, m.state), (0, TxnState::Empty));
        let parts = [("a".to_string(), 0), ("b".to_string(), 1)];
        m.add_partitions(9, 0, &parts, 3)
            .expect("added")
            .expect("written")
    }

    #[test]
    fn commit_goes_through_prepare_to_complete() {
        let m = ongoing();
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 3));
        // Adding what is there already writes nothing.
        assert_eq!(m.add_partitions(9, 0, &[("a".into(), 0)], 4), Ok(None));
        let EndStep::Prepare(p) = m.prepare_end(9, 0, true, true, 5).expect("ok") else {
            panic!("should prepare");
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        // While completing: the same end again, or a new partition, must wait.
        assert_eq!(
            p.prepare_end(9, 0, true, true, 6),
            Err(TxnError::Concurrent)
        );
        assert_eq!(
            p.prepare_end(9, 0, false, true, 6),
            Err(TxnError::InvalidState)
        );
        assert_eq!(
            p.add_partitions(9, 0, &[("c".into(), 0)], 6),
            Err(TxnError::Concurrent)
        );
        assert_eq!(p.bump_epoch(1, 6), Err(TxnError::Concurrent));
        let c = p.complete(7).expect("complete");
        assert_eq!(c.state, TxnState::CompleteCommit);
        assert!(c.partitions.is_empty());
        // A retried commit succeeds; an abort now is refused.
        assert_eq!(c.prepare_end(9, 0, true, true, 8), Ok(EndStep::Done));
        assert_eq!(
            c.prepare_end(9, 0, false, true, 8),
            Err(TxnError::InvalidState)
        );
        // The next transaction starts from Complete*.
        let n = c
            .add_partitions(9, 0, &[("z".into(), 0)], 9)
            .expect("ok")
            .expect("w");
        assert_eq!(n.partitions.len(), 1);
        assert_eq!(n.start_ms, 9);
    }

    #[test]
    fn wrong_producers_and_epochs_are_refused() {
        let m = ongoing();
        assert_eq!(
            m.add_partitions(8, 0, &[], 4),
            Err(TxnError::ProducerIdMapping)
        );
        assert_eq!(m.add_partitions(9, 1, &[], 4), Err(TxnError::Fenced));
        assert_eq!(m.prepare_end(9, 1, true, true, 4), Err(TxnError::Fenced));
        let e = TxnMetadata::new("t", 9, 1, 1);
        assert_eq!(
            e.prepare_end(9, -1, true, true, 2),
            Err(TxnError::InvalidState)
        );
        assert_eq!(m.verify_partition(9, 0, &("a".into(), 0)), Ok(()));
        assert_eq!(
            m.verify_partition(9, 0, &("c".into(), 0)),
            Err(TxnError::InvalidState)
        );
    }

    #[test]
    fn fencing_an_open_transaction_aborts_it_with_the_new_epoch() {
        let m = ongoing();
        let f = m.fence(4).expect("fence");
        assert_eq!(
            (f.state, f.producer_epoch),
            (TxnState::PrepareEpochFence, 1)
        );
        // The old producer is fenced from ending it.
        assert_eq!(f.prepare_end(9, 0, true, true, 5), Err(TxnError::Fenced));
        let EndStep::Prepare(a) = f.prepare_end(9, 1, false, false, 5).expect("abort") else {
            panic!("should prepare");
        };
        assert_eq!(a.state, TxnState::PrepareAbort);
        assert_eq!(a.partitions, m.partitions);
        let done = a.complete(6).expect("complete");
        let next = done.bump_epoch(1000, 7).expect("ok").expect("bumped");
        assert_eq!((next.producer_epoch, next.state), (2, TxnState::Empty));
    }

    #[test]
    fn timeouts_expire_only_open_transactions() {
        let m = ongoing();
        assert!(!m.expired(3 + 60_000));
        assert!(m.expired(3 + 60_001));
        assert!(!m.complete(4).is_ok_and(|c| c.expired(i64::MAX)));
    }

    #[test]
    fn values_round_trip_and_ids_hash_as_java_does() {
        let m = ongoing();
        let k = encode_key(&m.transactional_id);
        assert_eq!(decode_key(&k).as_deref(), Some("t"));
        assert_eq!(decode_value("t", &encode_value(&m)), Some(m.clone()));
        assert_eq!(decode_value("t", &encode_value(&m)[..10]), None);
        // "abc".hashCode() == 96354; 96354 % 50 == 4.
        assert_eq!(partition_for("abc", 50), 4);
        assert_eq!(partition_for("anything", 1), 0);
        // A hash of i32::MIN ("polygenelubricants") maps to 0, as Utils.abs.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }
}
