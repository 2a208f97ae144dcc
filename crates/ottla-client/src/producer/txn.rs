//! The embedded producer's transactions (Kafka's `TransactionManager`, with
//! the coordinator's part done in-process): `init_transactions`,
//! `begin_transaction`, data appended as transactional batches,
//! `send_offsets_to_transaction`, `commit_transaction` /
//! `abort_transaction`.
//!
//! There is no server: the coordinator's work is done here, on the same
//! state machine and log the broker's coordinator uses
//! (`ottla_storage::txn_state`: `TxnMetadata` over `__transaction_state`),
//! and the markers are the same control batches, appended to each
//! partition of the transaction. What serialises coordinators (this one,
//! another process's, a broker's on the same directory) is the id's lock
//! (`TxnLocks`): every step takes it, catches up with the log (so it acts
//! on the latest state, whoever wrote it), checks the producer's epoch,
//! writes, and acts. A data batch is appended under the lock too, after
//! checking that the transaction is still this producer's: once a newer
//! producer has fenced it (bumped the epoch and aborted its transaction
//! with markers), an older one can append nothing more.
//!
//! Kafka's order holds: PrepareCommit is written before any marker and
//! CompleteCommit after the last, so a process killed in between leaves a
//! Prepare state that the next coordinator to look completes (a marker
//! written twice ends nothing the second time).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use ottla_record::batch::{
    marker_batch, ControlType, ATTRIBUTES, BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID,
    RECORDS_COUNT, TRANSACTIONAL_FLAG,
};
use ottla_storage::error::{Error, Result};
use ottla_storage::log::{now_ms, Durability, PartitionLog};
use ottla_storage::offsets::{OffsetEntry, OFFSETS_TOPIC};
use ottla_storage::store::Store;
use ottla_storage::txn_state::{
    EndStep, TxnError, TxnLocks, TxnMetadata, TxnState, TxnStateLog, TxnView,
    DEFAULT_MAX_TIMEOUT_MS,
};

/// Kafka's `transaction.timeout.ms` default.
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: i32 = 60_000;

/// Turns a stamped batch into the one stored (the topic's compression).
pub type Compress<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>>;

/// This producer's side of its transactions.
#[derive(Default)]
struct Local {
    /// (producer id, epoch) once `init_transactions` returned.
    producer: Option<(i64, i16)>,
    in_txn: bool,
    /// The next sequence number per partition (per epoch: reset by init).
    seqs: HashMap<(String, u32), i32>,
    /// Set once fenced: every later call fails with it.
    fenced: Option<String>,
    /// Why a batch of the open transaction failed to append: it may not
    /// commit then.
    failed: Option<String>,
}

/// The transactions of one embedded producer.
pub struct Transactions {
    store: Arc<Store>,
    transactional_id: String,
    timeout_ms: i32,
    durability: Durability,
    locks: TxnLocks,
    log: Arc<TxnStateLog>,
    view: Mutex<TxnView>,
    local: Mutex<Local>,
}

fn fenced(id: &str) -> Error {
    Error::ProducerFenced(format!(
        "there is a newer producer with transactional_id {id:?}, or the transaction timed out \
         and was aborted; close this producer"
    ))
}

fn refused(id: &str, e: TxnError) -> Error {
    match e {
        TxnError::Fenced | TxnError::ProducerIdMapping => fenced(id),
        TxnError::Concurrent => Error::IllegalState(format!(
            "the previous transaction of {id:?} is still completing; retry"
        )),
        TxnError::InvalidState => {
            Error::InvalidTxnState(format!("transactional_id {id:?}: not in that state"))
        }
    }
}

/// A producer id for a transactional id seen for the first time: the time
/// and random bits, as unlikely to meet another process's as the broker's.
fn new_producer_id() -> i64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let random = (h.finish() & ((1 << 22) - 1)) as i64;
    ((now_ms() & ((1 << 40) - 1)) << 22) | random
}

impl Transactions {
    /// The transactions of `transactional_id` (nothing is written before
    /// [`Transactions::init`]).
    pub fn new(
        store: Arc<Store>,
        transactional_id: &str,
        timeout_ms: i32,
        durability: Durability,
    ) -> Result<Transactions> {
        if transactional_id.is_empty() {
            return Err(Error::InvalidConfig(
                "transactional_id must not be empty".into(),
            ));
        }
        if timeout_ms <= 0 || timeout_ms > DEFAULT_MAX_TIMEOUT_MS {
            return Err(Error::InvalidConfig(format!(
                "transaction_timeout_ms must be in 1..={DEFAULT_MAX_TIMEOUT_MS} \
                 (transaction.max.timeout.ms), not {timeout_ms}"
            )));
        }
        let log = TxnStateLog::open(&store, true)?
            .map(Arc::new)
            .ok_or_else(|| Error::IllegalState("cannot open __transaction_state".into()))?;
        Ok(Transactions {
            locks: TxnLocks::open(&store)?,
            store,
            transactional_id: transactional_id.to_string(),
            timeout_ms,
            durability,
            log,
            view: Mutex::new(TxnView::default()),
            local: Mutex::new(Local::default()),
        })
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// The latest state of `id` in the log (the caller holds its lock).
    fn current(&self, id: &str) -> Result<Option<TxnMetadata>> {
        let mut view = self.view.lock();
        self.log.catch_up(&mut view)?;
        Ok(view.txns.get(id).cloned())
    }

    fn persist(&self, m: &TxnMetadata) -> Result<()> {
        self.log.write(m, self.durability)
    }

    /// Write `m`'s markers (it is PrepareCommit/PrepareAbort, persisted),
    /// then complete it.
    fn finish(&self, m: &TxnMetadata) -> Result<TxnMetadata> {
        let kind = match m.state {
            TxnState::PrepareCommit => ControlType::Commit,
            TxnState::PrepareAbort => ControlType::Abort,
            _ => return Err(refused(&m.transactional_id, TxnError::InvalidState)),
        };
        let coordinator_epoch = self.log.coordinator_epoch(&m.transactional_id);
        for (topic, partition) in &m.partitions {
            let log = match self.store.partition_by_name(topic, *partition) {
                Ok(l) => l,
                // Gone meanwhile: Kafka drops markers for deleted partitions.
                Err(Error::UnknownTopicOrPartition { .. }) => continue,
                Err(e) => return Err(e),
            };
            let mut b = marker_batch(
                m.producer_id,
                m.producer_epoch,
                kind,
                coordinator_epoch,
                now_ms(),
            );
            log.append(&mut b, self.durability)?;
        }
        let done = m
            .complete(now_ms())
            .map_err(|e| refused(&m.transactional_id, e))?;
        self.persist(&done)?;
        Ok(done)
    }

    /// Abort `m`'s open transaction on the coordinator's own account (a
    /// newer producer fencing it, or its timeout): the epoch bumped first,
    /// so the producer it belonged to is fenced.
    fn abort_for_coordinator(&self, m: &TxnMetadata) -> Result<TxnMetadata> {
        let id = &m.transactional_id;
        let now = now_ms();
        let mut m = m.clone();
        if m.state == TxnState::Ongoing {
            m = m.fence(now).map_err(|e| refused(id, e))?;
            self.persist(&m)?;
        }
        match m
            .prepare_end(m.producer_id, m.producer_epoch, false, false, now)
            .map_err(|e| refused(id, e))?
        {
            EndStep::Done => Ok(m),
            EndStep::Prepare(p) => {
                self.persist(&p)?;
                self.finish(&p)
            }
        }
    }

    /// Complete or abort what a dead or hung coordinator left of `m` (the
    /// caller holds its lock); `m` as it is then.
    fn settle(&self, m: TxnMetadata, now: i64) -> Result<TxnMetadata> {
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => self.finish(&m),
            TxnState::PrepareEpochFence => self.abort_for_coordinator(&m),
            TxnState::Ongoing if m.expired(now) => self.abort_for_coordinator(&m),
            _ => Ok(m),
        }
    }

    /// Kafka's timer, done by whoever looks: abort every transaction of
    /// the directory open past its timeout and complete any left in
    /// Prepare, skipping ids another coordinator is busy with. Returns how
    /// many it settled.
    pub fn reap(&self) -> Result<usize> {
        let now = now_ms();
        let candidates: Vec<String> = {
            let mut view = self.view.lock();
            self.log.catch_up(&mut view)?;
            view.txns
                .values()
                .filter(|m| {
                    matches!(
                        m.state,
                        TxnState::PrepareCommit
                            | TxnState::PrepareAbort
                            | TxnState::PrepareEpochFence
                    ) || m.expired(now)
                })
                .map(|m| m.transactional_id.clone())
                .collect()
        };
        let mut n = 0;
        for id in candidates {
            let Some(_g) = self.locks.try_lock(&id)? else {
                continue;
            };
            if let Some(m) = self.current(&id)? {
                let state = m.state;
                if self.settle(m, now)?.state != state {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// `init_transactions`: this producer's id and a new epoch; an open
    /// transaction of an older producer with this id is aborted first,
    /// which fences it.
    pub fn init(&self) -> Result<(i64, i16)> {
        let id = self.transactional_id.as_str();
        let mut local = self.local.lock();
        if let Some(why) = &local.fenced {
            return Err(Error::ProducerFenced(why.clone()));
        }
        if local.in_txn {
            return Err(Error::InvalidTxnState(
                "init_transactions() while a transaction is open".into(),
            ));
        }
        // Kafka's coordinator timer, done here: hung transactions of any id
        // (their producers dead or stuck) are aborted by whoever looks.
        self.reap()?;
        let _g = self.locks.lock(id)?;
        let now = now_ms();
        let m = match self.current(id)? {
            Some(m) => m,
            None => TxnMetadata::new(id, new_producer_id(), self.timeout_ms, now),
        };
        let m = match m.state {
            TxnState::Ongoing | TxnState::PrepareEpochFence => self.abort_for_coordinator(&m)?,
            _ => self.settle(m, now)?,
        };
        let next = match m
            .bump_epoch(self.timeout_ms, now)
            .map_err(|e| refused(id, e))?
        {
            Some(n) => n,
            None => {
                let mut n = TxnMetadata::new(id, new_producer_id(), self.timeout_ms, now);
                n.producer_epoch = 0;
                n
            }
        };
        self.persist(&next)?;
        local.producer = Some((next.producer_id, next.producer_epoch));
        local.seqs.clear();
        Ok((next.producer_id, next.producer_epoch))
    }

    fn producer(&self, local: &Local) -> Result<(i64, i16)> {
        if let Some(why) = &local.fenced {
            return Err(Error::ProducerFenced(why.clone()));
        }
        local
            .producer
            .ok_or_else(|| Error::InvalidTxnState("call init_transactions() first".into()))
    }

    /// `begin_transaction` (nothing is written until the first record).
    pub fn begin(&self) -> Result<()> {
        let mut local = self.local.lock();
        self.producer(&local)?;
        if local.in_txn {
            return Err(Error::InvalidTxnState(
                "a transaction is already open".into(),
            ));
        }
        local.in_txn = true;
        Ok(())
    }

    /// Whether a transaction is open (records may be sent).
    pub fn check_open(&self) -> Result<()> {
        let local = self.local.lock();
        self.producer(&local)?;
        if !local.in_txn {
            return Err(Error::InvalidTxnState(
                "send outside a transaction: call begin_transaction() first".into(),
            ));
        }
        Ok(())
    }

    /// Under the id's lock: the open transaction of this producer, with
    /// `partitions` added (written to the log if they were not in it).
    fn add_locked(&self, local: &mut Local, partitions: &[(String, u32)]) -> Result<(i64, i16)> {
        let (pid, epoch) = self.producer(local)?;
        if !local.in_txn {
            return Err(Error::InvalidTxnState(
                "no transaction open: call begin_transaction() first".into(),
            ));
        }
        let id = self.transactional_id.as_str();
        let m = self.current(id)?.ok_or_else(|| fenced(id))?;
        match m.add_partitions(pid, epoch, partitions, now_ms()) {
            Ok(Some(n)) => self.persist(&n)?,
            Ok(None) => {}
            Err(e @ (TxnError::Fenced | TxnError::ProducerIdMapping)) => {
                let err = refused(id, e);
                local.fenced = Some(err.to_string());
                return Err(err);
            }
            Err(e) => return Err(refused(id, e)),
        }
        Ok((pid, epoch))
    }

    /// Append one sealed batch of the open transaction to `log`: stamped
    /// with the producer id, epoch, sequence and transactional bit, under
    /// the id's lock after checking the transaction is still this
    /// producer's (a fenced producer appends nothing). `compress` turns
    /// the stamped batch into the one stored.
    pub fn append(
        &self,
        log: &PartitionLog,
        batch: &mut [u8],
        compress: Option<Compress<'_>>,
    ) -> Result<i64> {
        let mut local = self.local.lock();
        let r = self.append_locked(&mut local, log, batch, compress);
        if let Err(e) = &r {
            local.failed.get_or_insert_with(|| e.to_string());
        }
        r
    }

    fn append_locked(
        &self,
        local: &mut Local,
        log: &PartitionLog,
        batch: &mut [u8],
        compress: Option<Compress<'_>>,
    ) -> Result<i64> {
        let _g = self.locks.lock(&self.transactional_id)?;
        let tp = (log.topic().to_string(), log.partition());
        let (pid, epoch) = self.add_locked(local, std::slice::from_ref(&tp))?;
        let seq = local.seqs.get(&tp).copied().unwrap_or(0);
        let count = batch
            .get(RECORDS_COUNT..RECORDS_COUNT + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| Error::InvalidRecord("batch too short".into()))?;
        stamp(batch, pid, epoch, seq);
        let info = match compress {
            Some(c) => log.append(&mut c(batch)?, self.durability)?,
            None => log.append(batch, self.durability)?,
        };
        local.seqs.insert(tp, seq.wrapping_add(count) & i32::MAX);
        Ok(info.base_offset)
    }

    /// `send_offsets_to_transaction`: `offsets` of `group` committed with
    /// the transaction (they count once it commits, never if it aborts).
    pub fn send_offsets(&self, group: &str, offsets: &[OffsetEntry]) -> Result<()> {
        let mut local = self.local.lock();
        let _g = self.locks.lock(&self.transactional_id)?;
        let store = self.store.offsets()?;
        let tp = (OFFSETS_TOPIC.to_string(), store.log().partition());
        let (pid, epoch) = self.add_locked(&mut local, std::slice::from_ref(&tp))?;
        store.commit_transactional(group, offsets, pid, epoch, self.durability)
    }

    /// `commit_transaction` / `abort_transaction` (the caller has appended
    /// every record of the transaction first).
    pub fn end(&self, commit: bool) -> Result<()> {
        let id = self.transactional_id.as_str();
        let mut local = self.local.lock();
        let (pid, epoch) = self.producer(&local)?;
        if !local.in_txn {
            return Err(Error::InvalidTxnState(format!(
                "{}_transaction() with no transaction open",
                if commit { "commit" } else { "abort" }
            )));
        }
        if commit {
            if let Some(why) = &local.failed {
                return Err(Error::InvalidTxnState(format!(
                    "a record of the transaction failed ({why}): abort_transaction()"
                )));
            }
        }
        let _g = self.locks.lock(id)?;
        let m = self.current(id)?.ok_or_else(|| fenced(id))?;
        if m.producer_id != pid || m.producer_epoch != epoch {
            let err = fenced(id);
            local.fenced = Some(err.to_string());
            return Err(err);
        }
        if m.state == TxnState::Empty
            || matches!(m.state, TxnState::CompleteCommit | TxnState::CompleteAbort)
        {
            // Nothing was written in this transaction.
            local.in_txn = false;
            local.failed = None;
            return Ok(());
        }
        match m
            .prepare_end(pid, epoch, commit, true, now_ms())
            .map_err(|e| refused(id, e))?
        {
            EndStep::Done => {}
            EndStep::Prepare(p) => {
                self.persist(&p)?;
                self.finish(&p)?;
            }
        }
        local.in_txn = false;
        local.failed = None;
        Ok(())
    }

    /// Whether a transaction is open.
    pub fn is_in_transaction(&self) -> bool {
        self.local.lock().in_txn
    }
}

/// Stamp a finished, uncompressed batch as transactional data of `pid` at
/// `epoch`, from sequence `seq`, and reseal its checksum.
fn stamp(batch: &mut [u8], pid: i64, epoch: i16, seq: i32) {
    if batch.len() < ottla_record::batch::HEADER_LEN {
        return;
    }
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    batch[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    batch[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    let attrs = i16::from_be_bytes([batch[ATTRIBUTES], batch[ATTRIBUTES + 1]]) | TRANSACTIONAL_FLAG;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    ottla_record::batch::seal_crc(batch);
}
