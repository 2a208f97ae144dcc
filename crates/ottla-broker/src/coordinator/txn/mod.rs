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
//! CONCURRENT_TRANSACTIONS, as from Kafka, and retries. That lock is taken
//! on blocking threads only: what merely reads a transaction on a runtime
//! worker (Produce's verification, DescribeTransactions...) reads its
//! published copy and never waits for an action in progress (`slot`:
//! waiting there parked a worker and stalled the whole broker).
//!
//! Placement: Kafka's coordinator for an id is the leader of partition
//! `abs(hashCode(id)) % partitions` of `__transaction_state`
//! (`txn_state::partition_for`). A broker alone leads every partition, so
//! FindCoordinator names it. In a cluster the coordinator is the leader of
//! the (replicated) log's partition and moves with it
//! (`coordinator::txn_placement`): it loads the transactions when it gains
//! the leadership and forgets them when it loses it, its state writes wait
//! for the in-sync replicas, and markers for partitions other brokers lead
//! go to them as WriteTxnMarkers. A transaction completes only once every
//! marker is written.
//!
//! The timer (`reaper`) aborts transactions open past their
//! `transaction.timeout.ms`, and completes any Prepare state left behind.
//!
//! Embedded producers in other processes may coordinate transactions of the
//! same directory (`ottla_client::producer::txn`): every request and the
//! timer take the id's cross-process lock (`txn_state::TxnLocks`) and
//! catch up with `__transaction_state` before acting (`sync`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::cluster::ClusterNode;
use crate::coordinator::placement::{check, commit_error, Phase};
use crate::coordinator::producer_id::ProducerIdManager;
use crate::coordinator::txn_placement::{
    marker_backoff, marker_target, MarkerTarget, TXN_PARTITION,
};
use crate::errors::{code, kafka_code, warn};
use crate::replica::markers::{marker_results, markers_request, send_markers, TxnMarker};
use crate::replica::ReplicaManager;
use crate::Shared;
use ottla_record::batch::ControlType;
use ottla_storage::error::Result as EngineResult;
use ottla_storage::log::{now_ms, Durability};
use ottla_storage::ofd::ByteGuard;
use ottla_storage::offsets::OFFSETS_TOPIC;
use ottla_storage::store::Store;
use ottla_storage::txn_state::{
    encode_key, encode_value, EndStep, TxnError, TxnLocks, TxnMetadata, TxnState, TxnStateLog,
    TxnView, TXN_TOPIC,
};

mod slot;
#[cfg(test)]
mod tests;

use slot::{Slot, SlotGuard};

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

type Shared1 = Arc<Slot>;

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
    /// In a cluster: the node (for the metadata image), set once before
    /// any request.
    cluster: OnceLock<Arc<ClusterNode>>,
    /// In a cluster: whether this broker coordinates now (it leads the
    /// transaction log); see `coordinator::txn_placement`.
    phase: Mutex<Phase>,
    /// Serialises loads and unloads.
    changing: Mutex<()>,
}

/// How long one completion tries to write its markers before it gives up
/// for now (the transaction stays in Prepare; the timer goes on).
const MARKERS_DEADLINE: Duration = Duration::from_secs(10);

/// What a client is told when a state write to `__transaction_state`
/// failed with `append` (Kafka's `TransactionStateManager`): a storage
/// error or a lost leadership is NOT_COORDINATOR and too few replicas or a
/// timeout COORDINATOR_NOT_AVAILABLE, both of which the client retries
/// after finding the coordinator again (a full disk refuses a commit
/// until there is room, it does not abort the transaction); a record too
/// large is UNKNOWN_SERVER_ERROR.
fn state_write_error(append: i16) -> i16 {
    match append {
        code::MESSAGE_TOO_LARGE | code::RECORD_LIST_TOO_LARGE => code::UNKNOWN_SERVER_ERROR,
        other => commit_error(other),
    }
}

/// A transactional id for a log line: at most 100 characters of it.
fn shown_id(id: &str) -> String {
    match id.char_indices().nth(100) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &id[..cut], id.len()),
        None => format!("{id:?}"),
    }
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
                txns.insert(id.clone(), Slot::new(m.clone()));
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
            cluster: OnceLock::new(),
            phase: Mutex::new(Phase::NotCoordinator),
            changing: Mutex::new(()),
        })
    }

    /// Make this a cluster node's coordinator: nothing is coordinated until
    /// this broker leads the transaction log (`load`).
    pub fn enter_cluster(&self, node: Arc<ClusterNode>) {
        let _ = self.cluster.set(node);
        self.forget();
    }

    fn clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// This broker's part in coordinating transactions (a cluster's).
    pub fn phase(&self) -> Phase {
        *self.phase.lock()
    }

    /// Held while a leadership change loads or forgets the transactions.
    pub fn changing(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.changing.lock()
    }

    fn forget(&self) {
        *self.log.lock() = None;
        self.txns.lock().clear();
        self.by_producer.lock().clear();
        *self.view.lock() = TxnView::default();
    }

    /// Leadership of the transaction log gained in `epoch`: every
    /// transaction read back from this broker's replica (Prepare states
    /// are completed by the next timer pass). Returns how many ids.
    pub fn load(&self, epoch: i32) -> EngineResult<usize> {
        *self.phase.lock() = Phase::Loading(epoch);
        self.forget();
        let loaded = (|| {
            let Some(log) = TxnStateLog::open(&self.store, false)?.map(Arc::new) else {
                return Ok(0);
            };
            let mut view = TxnView::default();
            let partition = self.store.partition_by_name(TXN_TOPIC, 0)?;
            view.txns = read_to_log_end(&partition)?;
            let mut txns = self.txns.lock();
            let mut by_producer = self.by_producer.lock();
            for (id, m) in view.txns.iter() {
                by_producer.insert(m.producer_id, id.clone());
                txns.insert(id.clone(), Slot::new(m.clone()));
            }
            for m in view.txns.values() {
                crate::errors::debug(&format!(
                    "loaded transaction {:?}: {} with {} partitions",
                    m.transactional_id,
                    m.state.name(),
                    m.partitions.len()
                ));
            }
            let n = view.txns.len();
            *self.view.lock() = view;
            *self.log.lock() = Some(log);
            Ok(n)
        })();
        match &loaded {
            Ok(_) => *self.phase.lock() = Phase::Active(epoch),
            Err(_) => {
                // Not the coordinator; the next metadata change tries again.
                *self.phase.lock() = Phase::NotCoordinator;
                self.forget();
            }
        }
        loaded
    }

    /// Leadership of the transaction log lost: forget every transaction.
    pub fn unload(&self) {
        *self.phase.lock() = Phase::NotCoordinator;
        self.forget();
    }

    /// NONE when this broker coordinates transactions now (always, alone);
    /// else NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS.
    pub fn check(&self) -> i16 {
        if !self.clustered() {
            return code::NONE;
        }
        check(self.phase())
    }

    fn gate(&self) -> Result<(), i16> {
        match self.check() {
            code::NONE => Ok(()),
            c => Err(c),
        }
    }

    fn log(&self) -> Result<Arc<TxnStateLog>, i16> {
        let mut g = self.log.lock();
        if let Some(l) = g.as_ref() {
            return Ok(l.clone());
        }
        // In a cluster the topic is the controller's to create.
        let l = TxnStateLog::open(&self.store, !self.clustered())
            .map_err(|e| kafka_code(&e))?
            .map(Arc::new)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
        *g = Some(l.clone());
        Ok(l)
    }

    /// Write `m`, then make it the state (Kafka's order: the log first).
    /// A state that ends or fences the open transaction is announced
    /// before it is written, so no batch of the transaction is verified
    /// meanwhile (see `slot`); the others are published once written.
    fn persist(
        &self,
        replicas: &ReplicaManager,
        slot: &mut SlotGuard<'_>,
        m: TxnMetadata,
    ) -> Result<(), i16> {
        if m.state != TxnState::Ongoing {
            slot.announce(&m);
        }
        if self.clustered() {
            self.persist_replicated(replicas, &m)
                .map_err(state_write_error)?;
            **slot = m;
            slot.publish();
            return Ok(());
        }
        let log = self.log()?;
        log.write(&m, self.durability).map_err(|e| {
            warn(&format!(
                "cannot write transaction state of {}: {e}",
                shown_id(&m.transactional_id)
            ));
            state_write_error(kafka_code(&e))
        })?;
        **slot = m;
        slot.publish();
        Ok(())
    }

    /// A cluster's state write: appended by the leader of the transaction
    /// log under its leadership in the epoch this coordinator loaded, and
    /// done once the high watermark passed it (errors as the group
    /// coordinator maps them: NOT_COORDINATOR when the leadership moved,
    /// COORDINATOR_NOT_AVAILABLE on a timeout or too few replicas).
    fn persist_replicated(&self, replicas: &ReplicaManager, m: &TxnMetadata) -> Result<(), i16> {
        let p = match replicas.leader_partition(TXN_TOPIC, TXN_PARTITION) {
            Ok(Some(p)) => p,
            _ => return Err(code::NOT_COORDINATOR),
        };
        let end = {
            let _lead = p.leadership.read();
            let epoch = p.state.lock().assignment.leader_epoch;
            if p.is_retired() || self.phase() != Phase::Active(epoch) {
                return Err(code::NOT_COORDINATOR);
            }
            let mut b = ottla_record::BatchBuilder::with_capacity(256);
            b.append(
                now_ms(),
                Some(&encode_key(&m.transactional_id)),
                Some(&encode_value(m)),
                &[],
            );
            let info = p.log.append(b.finish_mut(), self.durability).map_err(|e| {
                warn(&format!(
                    "cannot write transaction state of {}: {e}",
                    shown_id(&m.transactional_id)
                ));
                kafka_code(&e)
            })?;
            info.base_offset + 1
        };
        replicas.after_leader_append(&p);
        let handle = tokio::runtime::Handle::try_current().map_err(|_| code::NOT_COORDINATOR)?;
        let waited = handle.block_on(replicas.wait_for_replication(
            vec![(TXN_TOPIC.to_string(), TXN_PARTITION, end)],
            crate::coordinator::placement::OFFSETS_COMMIT_TIMEOUT,
        ));
        match commit_error(waited.first().copied().unwrap_or(code::NOT_COORDINATOR)) {
            code::NONE => Ok(()),
            c => Err(c),
        }
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
        if self.clustered() {
            // The leader of the log is its only writer: nothing to catch up.
            return Ok(());
        }
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
                .or_insert_with(|| Slot::new(m.clone()))
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
    fn finish(&self, replicas: &ReplicaManager, slot: &mut SlotGuard<'_>) -> Result<(), i16> {
        let kind = match slot.state {
            TxnState::PrepareCommit => ControlType::Commit,
            TxnState::PrepareAbort => ControlType::Abort,
            _ => return Err(code::INVALID_TXN_STATE),
        };
        if let Some(node) = self.cluster.get().cloned() {
            let coordinator_epoch = match self.phase() {
                Phase::Active(e) => e,
                _ => return Err(code::NOT_COORDINATOR),
            };
            self.cluster_markers(replicas, &node, slot, kind, coordinator_epoch)?;
        } else {
            let coordinator_epoch = self.log()?.coordinator_epoch(&slot.transactional_id);
            // A partition whose marker is written leaves the in-memory set, so
            // a retry after a failed marker writes only the missing ones (the
            // log keeps the whole set: a restart writes them all again, which
            // ends nothing twice).
            while let Some((topic, partition)) = slot.partitions.first().cloned() {
                let marker = TxnMarker {
                    producer_id: slot.producer_id,
                    epoch: slot.producer_epoch,
                    kind,
                    coordinator_epoch,
                };
                replicas.write_marker(&topic, partition, marker, None)?;
                slot.partitions.remove(&(topic, partition));
            }
        }
        let done = slot.complete(now_ms()).map_err(txn_code)?;
        self.persist(replicas, slot, done)
    }

    /// A cluster's markers (Kafka's `TransactionMarkerChannelManager`):
    /// each partition's marker written by its leader, here for those this
    /// broker leads (in the leader epoch of the image, then replicated),
    /// sent as WriteTxnMarkers to the others' leaders; a partition whose
    /// leader refused (moved) or could not be reached is tried again with
    /// its leader looked up afresh, with a bounded backoff, until every
    /// marker is written or `MARKERS_DEADLINE` passes (then the error, and
    /// the transaction stays in Prepare with the written partitions out of
    /// its in-memory set). A partition that is gone is skipped.
    fn cluster_markers(
        &self,
        replicas: &ReplicaManager,
        node: &ClusterNode,
        slot: &mut TxnMetadata,
        kind: ControlType,
        coordinator_epoch: i32,
    ) -> Result<(), i16> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| code::NOT_COORDINATOR)?;
        let commit = kind == ControlType::Commit;
        let (pid, epoch) = (slot.producer_id, slot.producer_epoch);
        let deadline = Instant::now() + MARKERS_DEADLINE;
        let mut round = 0;
        let mut last = code::NONE;
        while !slot.partitions.is_empty() {
            if self.phase() != Phase::Active(coordinator_epoch) {
                return Err(code::NOT_COORDINATOR);
            }
            let image = node.image();
            let mut remote: HashMap<i32, Vec<(String, u32)>> = HashMap::new();
            let mut local = Vec::new();
            let parts: Vec<(String, u32)> = slot.partitions.iter().cloned().collect();
            for (topic, p) in parts {
                match marker_target(&image, node.node_id(), &topic, p) {
                    MarkerTarget::Gone => {
                        slot.partitions.remove(&(topic, p));
                    }
                    MarkerTarget::NoLeader => last = code::NOT_LEADER_OR_FOLLOWER,
                    MarkerTarget::Local(e) => local.push((topic, p, e)),
                    MarkerTarget::Remote(b) => remote.entry(b).or_default().push((topic, p)),
                }
            }
            let mut waits = Vec::new();
            for (topic, p, e) in local {
                let marker = TxnMarker {
                    producer_id: pid,
                    epoch,
                    kind,
                    coordinator_epoch,
                };
                match replicas.write_marker(&topic, p, marker, Some(e)) {
                    Ok(Some(end)) => waits.push((topic, p, end)),
                    Ok(None) => {
                        slot.partitions.remove(&(topic, p));
                    }
                    Err(c) => last = c,
                }
            }
            for (topic, p, end) in waits {
                let index = i32::try_from(p).unwrap_or(i32::MAX);
                let waited = handle.block_on(replicas.wait_for_replication(
                    vec![(topic.clone(), index, end)],
                    crate::replica::markers::MARKER_REPLICATION_TIMEOUT,
                ));
                match waited
                    .first()
                    .copied()
                    .unwrap_or(code::NOT_LEADER_OR_FOLLOWER)
                {
                    // Written on every in-sync replica (too few of them
                    // after the append still holds the marker).
                    code::NONE | code::NOT_ENOUGH_REPLICAS_AFTER_APPEND => {
                        slot.partitions.remove(&(topic, p));
                    }
                    c => last = c,
                }
            }
            for (broker, parts) in remote {
                let Some((addr, source)) = replicas.peer(broker) else {
                    last = code::NOT_LEADER_OR_FOLLOWER;
                    continue;
                };
                let req = markers_request(pid, epoch, commit, coordinator_epoch, &parts);
                match handle.block_on(send_markers(addr, source, &req)) {
                    Ok(resp) => {
                        for (topic, p, c) in marker_results(&resp, pid) {
                            if c == code::NONE {
                                slot.partitions.remove(&(topic, p));
                            } else {
                                last = c;
                            }
                        }
                    }
                    Err(e) => {
                        crate::errors::debug(&format!("markers to broker {broker} at {addr}: {e}"));
                        last = code::NOT_LEADER_OR_FOLLOWER;
                    }
                }
            }
            if slot.partitions.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                warn(&format!(
                    "transaction {:?}: {} markers not written yet (error {last})",
                    slot.transactional_id,
                    slot.partitions.len()
                ));
                return Err(last);
            }
            std::thread::sleep(marker_backoff(round));
            round += 1;
        }
        Ok(())
    }

    /// Abort `slot`'s open transaction on the coordinator's own account:
    /// fenced (`fence`: by a new InitProducerId, with a bumped epoch) or
    /// timed out.
    fn abort(
        &self,
        replicas: &ReplicaManager,
        slot: &mut SlotGuard<'_>,
        fence: bool,
    ) -> Result<(), i16> {
        let now = now_ms();
        if fence && slot.state == TxnState::Ongoing {
            let fenced = slot.fence(now).map_err(txn_code)?;
            self.persist(replicas, slot, fenced)?;
        }
        match slot
            .prepare_end(slot.producer_id, slot.producer_epoch, false, false, now)
            .map_err(txn_code)?
        {
            EndStep::Done => Ok(()),
            EndStep::Prepare(p) => {
                self.persist(replicas, slot, p)?;
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
        self.gate()?;
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
                    Slot::new(TxnMetadata::new(transactional_id, pid, timeout_ms, now))
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
        self.persist(replicas, &mut slot, next)?;
        let mut by = self.by_producer.lock();
        by.remove(&old_pid);
        by.insert(slot.producer_id, transactional_id.to_string());
        Ok((slot.producer_id, slot.producer_epoch))
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn's offsets partition).
    pub fn add_partitions(
        &self,
        replicas: &ReplicaManager,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, u32)],
    ) -> Result<(), i16> {
        self.gate()?;
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
            Some(m) => self.persist(replicas, &mut slot, m),
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
        self.gate()?;
        let shared = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let slot = shared.snapshot();
        slot.verify_partition(producer_id, epoch, partition)
            .map_err(txn_code)
    }

    /// The partition of `__consumer_offsets` a group's offsets go to
    /// (Kafka's `partitionFor(groupId)`; one partition here).
    pub fn offsets_partition(&self, _group: &str) -> Result<(String, u32), i16> {
        if self.clustered() {
            // The group coordinator's (another broker's, maybe) partition.
            return Ok((OFFSETS_TOPIC.to_string(), 0));
        }
        self.store.offsets().map_err(|e| kafka_code(&e))?;
        Ok((OFFSETS_TOPIC.to_string(), 0))
    }

    /// Produce of a transactional batch (KIP-890's verification against
    /// the local coordinator): its producer's transaction is open, of this
    /// epoch, with this partition added. NOT_COORDINATOR: a cluster's
    /// producer this broker does not coordinate.
    pub fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: u32,
    ) -> Result<(), i16> {
        let known = self.by_producer.lock().get(&producer_id).cloned();
        let id = match known {
            Some(id) => id,
            // In a cluster the coordinator may be another broker: asked
            // by `coordinator::txn_verify`.
            None if self.clustered() => return Err(code::NOT_COORDINATOR),
            None => return Err(code::INVALID_TXN_STATE),
        };
        let shared = self.get(&id).ok_or(code::INVALID_TXN_STATE)?;
        let slot = shared.snapshot();
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
        if self.clustered() && self.get(transactional_id).is_none() {
            // In a cluster the group coordinator is not the transaction
            // coordinator: the commit is checked by the producer's epoch
            // in the offsets partition, as in Kafka.
            return Ok(());
        }
        let part = self.offsets_partition(group)?;
        let shared = self
            .get(transactional_id)
            .ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        let slot = shared.snapshot();
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
        self.gate()?;
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
                self.persist(replicas, &mut slot, p)?;
                self.finish(replicas, &mut slot)
            }
        }
    }

    /// One transactional id's transaction (DescribeTransactions).
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.get(transactional_id).map(|s| (*s.snapshot()).clone())
    }

    /// Every transaction (ListTransactions).
    pub fn list(&self) -> Vec<TxnMetadata> {
        let all: Vec<Shared1> = self.txns.lock().values().cloned().collect();
        all.iter().map(|s| (*s.snapshot()).clone()).collect()
    }

    /// The timer's pass: complete transactions left in Prepare, abort the
    /// ones open past their timeout. Ids busy with a request are skipped
    /// (the next pass sees them).
    pub fn tick(&self, replicas: &ReplicaManager) {
        if self.gate().is_err() {
            return;
        }
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

/// Every transactional id's latest metadata in `log`, read to its log end
/// (Kafka's coordinator loads so: a new leader's high watermark may still
/// be below records the previous coordinator had replicated and acted on).
fn read_to_log_end(
    log: &ottla_storage::log::PartitionLog,
) -> EngineResult<HashMap<String, TxnMetadata>> {
    use ottla_record::batch::Batches;
    use ottla_storage::error::Error;
    use ottla_storage::txn_state::{decode_key, decode_value};
    let mut out = HashMap::new();
    let (mut next, _) = log.offsets()?;
    let mut cursor = None;
    loop {
        let f = log.read_to_log_end(next, 1 << 20, &mut cursor, true)?;
        if f.bytes.is_empty() {
            if let Some(e) = f.error {
                return Err(e);
            }
            return Ok(out);
        }
        for (h, batch) in Batches::new(&f.bytes) {
            if h.next_offset() <= next {
                continue;
            }
            next = h.next_offset();
            if h.is_control() {
                continue;
            }
            for rec in ottla_record::decode::records(&h, batch)?.iter() {
                let rec = rec.map_err(|r| Error::InvalidRecord(format!("{TXN_TOPIC}: {r}")))?;
                let Some(id) = rec.key.and_then(decode_key) else {
                    continue;
                };
                match rec.value.and_then(|v| decode_value(&id, v)) {
                    Some(m) => out.insert(id, m),
                    None => out.remove(&id),
                };
            }
        }
        if let Some(e) = f.error {
            return Err(e);
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
