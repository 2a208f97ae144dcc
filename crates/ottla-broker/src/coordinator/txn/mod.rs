//! The transaction coordinator (Kafka's `TransactionCoordinator`, KIP-98):
//! one transaction per transactional id, its state machine in the engine
//! (`ottla_storage::txn_state`), its state in `__transaction_state`, its
//! markers written to every partition of the transaction through the
//! replica manager (the path a cluster would replicate).
//!
//! Every change follows Kafka's order: the new state is written to the
//! transaction log first, then acted on. EndTxn writes PrepareCommit (or
//! PrepareAbort), then a COMMIT (ABORT) marker into each partition, then
//! CompleteCommit (CompleteAbort). A broker that dies in between finds the
//! Prepare state on restart and writes the markers again; a marker for a
//! transaction a partition already ended ends nothing, so writing twice is
//! harmless. Requests for one transactional id are serialised on its lock,
//! held while its markers are written; what finds a transaction still
//! completing (a restart's recovery not done, a marker that failed) gets
//! CONCURRENT_TRANSACTIONS, as from Kafka, and retries.
//!
//! Placement: Kafka's coordinator for an id is the leader of partition
//! `abs(hashCode(id)) % partitions` of `__transaction_state`
//! (`txn_state::partition_for`); this broker leads every partition, so
//! FindCoordinator names it, and a cluster would ask the partition's leader.
//!
//! The timer (`reaper`) aborts transactions open past their
//! `transaction.timeout.ms`, and completes any Prepare state left behind.
//!
//! Embedded producers in other processes may coordinate transactions of the
//! same directory (`ottla_client::producer::txn`): every request and the
//! timer take the id's cross-process lock (`txn_state::TxnLocks`) and
//! catch up with `__transaction_state` before acting (`sync`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::coordinator::producer_id::ProducerIdManager;
use crate::errors::{code, kafka_code, warn};
use crate::replica::ReplicaManager;
use crate::Shared;
use ottla_record::batch::ControlType;
use ottla_storage::error::Result as EngineResult;
use ottla_storage::log::{now_ms, Durability};
use ottla_storage::ofd::ByteGuard;
use ottla_storage::offsets::OFFSETS_TOPIC;
use ottla_storage::store::Store;
use ottla_storage::txn_state::{
    EndStep, TxnError, TxnLocks, TxnMetadata, TxnState, TxnStateLog, TxnView,
};

#[cfg(test)]
mod tests;

/// How often the timer looks for expired transactions (Kafka's
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` is 10 s;
/// a second here, so a timed-out transaction stops holding consumers back
/// sooner).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Kafka's codes for the state machine's refusals (PRODUCER_FENCED as the
/// current versions answer; `api::txn` turns it into INVALID_PRODUCER_EPOCH
/// for older ones).
pub fn txn_code(e: TxnError) -> i16 {
    match e {
        TxnError::ProducerIdMapping => code::INVALID_PRODUCER_ID_MAPPING,
        TxnError::Fenced => code::PRODUCER_FENCED,
        TxnError::Concurrent => code::CONCURRENT_TRANSACTIONS,
        TxnError::InvalidState => code::INVALID_TXN_STATE,
    }
}

type Shared1 = Arc<Mutex<TxnMetadata>>;

pub struct TxnCoordinator {
    store: Arc<Store>,
    durability: Durability,
    /// Kafka's `transaction.max.timeout.ms`.
    max_timeout_ms: i32,
    /// `__transaction_state`, opened (created) on the first transactional
    /// InitProducerId when it did not exist at start.
    log: Mutex<Option<Arc<TxnStateLog>>>,
    txns: Mutex<HashMap<String, Shared1>>,
    /// Producer id -> transactional id, for Produce's verification.
    by_producer: Mutex<HashMap<i64, String>>,
    /// Per-id locks shared with coordinators in other processes.
    locks: TxnLocks,
    /// This coordinator's copy of `__transaction_state`.
    view: Mutex<TxnView>,
}

impl TxnCoordinator {
    /// The coordinator, with every transaction `__transaction_state` holds
    /// (if it exists): loaded before the broker answers anything.
    pub fn start(
        store: Arc<Store>,
        durability: Durability,
        max_timeout_ms: i32,
    ) -> EngineResult<TxnCoordinator> {
        let log = TxnStateLog::open(&store, false)?.map(Arc::new);
        let mut txns = HashMap::new();
        let mut by_producer = HashMap::new();
        let mut view = TxnView::default();
        if let Some(log) = &log {
            log.catch_up(&mut view)?;
            for (id, m) in view.txns.iter() {
                by_producer.insert(m.producer_id, id.clone());
                txns.insert(id.clone(), Arc::new(Mutex::new(m.clone())));
            }
        }
        let locks = TxnLocks::open(&store)?;
        Ok(TxnCoordinator {
            store,
            durability,
            max_timeout_ms,
            log: Mutex::new(log),
            txns: Mutex::new(txns),
            by_producer: Mutex::new(by_producer),
            locks,
            view: Mutex::new(view),
        })
    }

    fn log(&self) -> Result<Arc<TxnStateLog>, i16> {
        let mut g = self.log.lock();
        if let Some(l) = g.as_ref() {
            return Ok(l.clone());
        }
        let l = TxnStateLog::open(&self.store, true)
            .map_err(|e| kafka_code(&e))?
            .map(Arc::new)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
        *g = Some(l.clone());
        Ok(l)
    }

    /// Write `m`, then make it the state (Kafka's order: the log first).
    fn persist(&self, slot: &mut TxnMetadata, m: TxnMetadata) -> Result<(), i16> {
        let log = self.log()?;
        log.write(&m, self.durability).map_err(|e| {
            warn(&format!(
                "cannot write transaction state of {:?}: {e}",
                m.transactional_id
            ));
            kafka_code(&e)
        })?;
        *slot = m;
        Ok(())
    }

    fn get(&self, transactional_id: &str) -> Option<Shared1> {
        self.txns.lock().get(transactional_id).cloned()
    }

    /// Take `transactional_id`'s cross-process lock.
    fn lock_id(&self, transactional_id: &str) -> Result<ByteGuard<'_>, i16> {
        self.locks
            .lock(transactional_id)
            .map_err(|_| code::COORDINATOR_NOT_AVAILABLE)
    }

    /// Catch up with `__transaction_state` (another process's coordinator
    /// may have written it) and make the log's latest state of each id that
    /// changed there the one this coordinator acts on. The caller holds
    /// the id's lock for `transactional_id` if it names one.
    fn sync(&self) -> Result<(), i16> {
        let log = {
            let mut g = self.log.lock();
            if g.is_none() {
                *g = TxnStateLog::open(&self.store, false)
                    .map_err(|e| kafka_code(&e))?
                    .map(Arc::new);
            }
            g.clone()
        };
        let Some(log) = log else { return Ok(()) };
        let mut view = self.view.lock();
        log.catch_up(&mut view).map_err(|e| kafka_code(&e))?;
        let mut txns = self.txns.lock();
        for (id, m) in view.txns.iter() {
            let shared = txns
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Mutex::new(m.clone())))
                .clone();
            let Some(mut slot) = shared.try_lock() else {
                // Busy with a request of this process, which synced first.
                continue;
            };
            // Written by another coordinator: a new epoch, state or time.
            // (Only the partitions differing is this coordinator's own
            // progress through a completion's markers: kept.)
            let key =
                |t: &TxnMetadata| (t.producer_id, t.producer_epoch, t.state, t.last_update_ms);
            if key(&slot) != key(m) && m.last_update_ms >= slot.last_update_ms {
                if slot.producer_id != m.producer_id {
                    let mut by = self.by_producer.lock();
                    by.remove(&slot.producer_id);
                    by.insert(m.producer_id, id.clone());
                }
                *slot = m.clone();
            }
        }
        self.by_producer
            .lock()
            .extend(view.txns.iter().map(|(id, m)| (m.producer_id, id.clone())));
        Ok(())
    }

    /// Write the markers of `m` (PrepareCommit/PrepareAbort, persisted),
    /// then complete it. On a failed marker it stays in Prepare (the
    /// timer tries again) and the caller gets the error.
    fn finish(&self, replicas: &ReplicaManager, slot: &mut TxnMetadata) -> Result<(), i16> {
        let kind = match slot.state {
            TxnState::PrepareCommit => ControlType::Commit,
            TxnState::PrepareAbort => ControlType::Abort,
            _ => return Err(code::INVALID_TXN_STATE),
        };
        let coordinator_epoch = self.log()?.coordinator_epoch(&slot.transactional_id);
        // A partition whose marker is written leaves the in-memory set, so
        // a retry after a failed marker writes only the missing ones (the
        // log keeps the whole set: a restart writes them all again, which
        // ends nothing twice).
        while let Some((topic, partition)) = slot.partitions.first().cloned() {
            replicas.write_marker(
                &topic,
                partition,
                slot.producer_id,
                slot.producer_epoch,
                kind,
                coordinator_epoch,
            )?;
            slot.partitions.remove(&(topic, partition));
        }
        let done = slot.complete(now_ms()).map_err(txn_code)?;
        self.persist(slot, done)
    }

    /// Abort `slot`'s open transaction on the coordinator's own account:
    /// fenced (`fence`: by a new InitProducerId, with a bumped epoch) or
    /// timed out.
    fn abort(
        &self,
        replicas: &ReplicaManager,
        slot: &mut TxnMetadata,
        fence: bool,
    ) -> Result<(), i16> {
        let now = now_ms();
        if fence && slot.state == TxnState::Ongoing {
            let fenced = slot.fence(now).map_err(txn_code)?;
            self.persist(slot, fenced)?;
        }
        match slot
            .prepare_end(slot.producer_id, slot.producer_epoch, false, false, now)
            .map_err(txn_code)?
        {
            EndStep::Done => Ok(()),
            EndStep::Prepare(p) => {
                self.persist(slot, p)?;
                self.finish(replicas, slot)
            }
        }
    }

    /// InitProducerId with a transactional id: the id's producer id
    /// (allocated once) and its next epoch; an open transaction of the
    /// older epoch is aborted first (markers written), which fences its
    /// producer. `expected` is KIP-360's (producer id, epoch) of a client
    /// that had one: it must be the current one.
    pub fn init_producer_id(
        &self,
        replicas: &ReplicaManager,
        ids: &ProducerIdManager,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), i16> {
        if timeout_ms <= 0 || timeout_ms > self.max_timeout_ms {
            return Err(code::INVALID_TRANSACTION_TIMEOUT);
        }
        self.log()?;
        let _id_lock = self.lock_id(transactional_id)?;
        self.sync()?;
        let now = now_ms();
        let shared = {
            let mut txns = self.txns.lock();
            txns.entry(transactional_id.to_string())
                .or_insert_with(|| {
                    let pid = ids.new_producer_id();
                    Arc::new(Mutex::new(TxnMetadata::new(
                        transactional_id,
                        pid,
                        timeout_ms,
                        now,
                    )))
                })
                .clone()
        };
        let mut slot = shared.lock();
        if let Some((pid, epoch)) = expected {
            if pid != slot.producer_id || epoch != slot.producer_epoch {
                return Err(code::PRODUCER_FENCED);
            }
        }
        match slot.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                // Left by a crash or a failed marker: completed now, or
                // the client retries.
                self.finish(replicas, &mut slot)
                    .map_err(|_| code::CONCURRENT_TRANSACTIONS)?;
            }
            TxnState::Ongoing | TxnState::PrepareEpochFence => {
                self.abort(replicas, &mut slot, true)
                    .map_err(|_| code::CONCURRENT_TRANSACTIONS)?;
            }
            _ => {}
        }
        let next = match slot.bump_epoch(timeout_ms, now).map_err(txn_code)? {
            Some(m) => m,
            None => {
                // The epoch is exhausted: a new producer id, from epoch 0.
                let mut m =
                    TxnMetadata::new(transactional_id, ids.new_producer_id(), timeout_ms, now);
                m.producer_epoch = 0;
                m
            }
        };
        let old_pid = slot.producer_id;
        self.persist(&mut slot, next)?;
        let mut by = self.by_producer.lock();
        by.remove(&old_pid);
        by.insert(slot.producer_id, transactional_id.to_string());
        Ok((slot.producer_id, slot.producer_epoch))
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn's offsets partition).
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
    ) -> Result<(), i16> {
        let _id_lock = self.lock_id(transactional_id)?;
        self.sync()?;
        let shared = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let mut slot = shared.lock();
        match slot
            .add_partitions(producer_id, epoch, partitions, now_ms())
            .map_err(txn_code)?
        {
            Some(m) => self.persist(&mut slot, m),
            None => Ok(()),
        }
    }

    /// AddPartitionsToTxn v4's `verify_only`: are these partitions in the
    /// open transaction (per partition)?
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, u32),
    ) -> Result<(), i16> {
        let shared = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let slot = shared.lock();
        slot.verify_partition(producer_id, epoch, partition)
            .map_err(txn_code)
    }

    /// The partition of `__consumer_offsets` a group's offsets go to
    /// (Kafka's `partitionFor(groupId)`; one partition here).
    pub fn offsets_partition(&self, _group: &str) -> Result<(String, u32), i16> {
        self.store.offsets().map_err(|e| kafka_code(&e))?;
        Ok((OFFSETS_TOPIC.to_string(), 0))
    }

    /// Produce of a transactional batch (KIP-890's verification, done
    /// here against the local coordinator): its producer's transaction is
    /// open, of this epoch, with this partition added.
    pub fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: u32,
    ) -> Result<(), i16> {
        let id = self
            .by_producer
            .lock()
            .get(&producer_id)
            .cloned()
            .ok_or(code::INVALID_TXN_STATE)?;
        let shared = self.get(&id).ok_or(code::INVALID_TXN_STATE)?;
        let slot = shared.lock();
        match slot.verify_partition(producer_id, epoch, &(topic.to_string(), partition)) {
            Ok(()) => Ok(()),
            Err(TxnError::Fenced) => Err(code::INVALID_PRODUCER_EPOCH),
            Err(_) => Err(code::INVALID_TXN_STATE),
        }
    }

    /// TxnOffsetCommit's check: the producer's transaction is open and has
    /// the group's offsets partition.
    pub fn check_offset_commit(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), i16> {
        let part = self.offsets_partition(group)?;
        let shared = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let slot = shared.lock();
        match slot.verify_partition(producer_id, epoch, &part) {
            Ok(()) => Ok(()),
            Err(TxnError::Fenced) => Err(code::INVALID_PRODUCER_EPOCH),
            Err(e) => Err(txn_code(e)),
        }
    }

    /// EndTxn: commit or abort the open transaction; answered once its
    /// markers are written and it is complete.
    pub fn end_txn(
        &self,
        replicas: &ReplicaManager,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), i16> {
        let _id_lock = self.lock_id(transactional_id)?;
        self.sync()?;
        let shared = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let mut slot = shared.lock();
        match slot
            .prepare_end(producer_id, epoch, commit, true, now_ms())
            .map_err(txn_code)?
        {
            EndStep::Done => Ok(()),
            EndStep::Prepare(p) => {
                self.persist(&mut slot, p)?;
                self.finish(replicas, &mut slot)
            }
        }
    }

    /// One transactional id's transaction (DescribeTransactions).
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.get(transactional_id).map(|s| s.lock().clone())
    }

    /// Every transaction (ListTransactions).
    pub fn list(&self) -> Vec<TxnMetadata> {
        let all: Vec<Shared1> = self.txns.lock().values().cloned().collect();
        all.iter().map(|s| s.lock().clone()).collect()
    }

    /// The timer's pass: complete transactions left in Prepare, abort the
    /// ones open past their timeout. Ids busy with a request are skipped
    /// (the next pass sees them).
    pub fn tick(&self, replicas: &ReplicaManager) {
        if let Err(c) = self.sync() {
            warn(&format!("cannot read the transaction log (error {c})"));
        }
        let all: Vec<(String, Shared1)> = self
            .txns
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let now = now_ms();
        for (id, shared) in all {
            // Skipped when a coordinator of another process is busy with it.
            let Ok(Some(_id_lock)) = self.locks.try_lock(&id) else {
                continue;
            };
            if self.sync().is_err() {
                continue;
            }
            let Some(mut slot) = shared.try_lock() else {
                continue;
            };
            let r = match slot.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    self.finish(replicas, &mut slot)
                }
                TxnState::PrepareEpochFence => self.abort(replicas, &mut slot, false),
                TxnState::Ongoing if slot.expired(now) => {
                    // Kafka bumps the epoch of a timed-out transaction's
                    // producer, so it cannot go on writing into it.
                    self.abort(replicas, &mut slot, true)
                }
                _ => Ok(()),
            };
            if let Err(c) = r {
                warn(&format!(
                    "transaction {:?} not completed yet (error {c}); retrying",
                    slot.transactional_id
                ));
            }
        }
    }
}

/// Runs the coordinator's timer until shutdown; the first pass at once, so
/// a restarted broker completes what a crash left half done.
pub async fn reaper(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    loop {
        crate::blocking(|| shared.txns.tick(&shared.replicas));
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}
