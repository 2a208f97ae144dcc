//! The replica manager (Kafka's `ReplicaManager`): the one place request
//! handlers reach partition logs. Handlers decode a request, call in here,
//! and encode what comes back; everything between them and `PartitionLog`
//! is this module's.
//!
//! ```text
//! (here)       ReplicaManager: its state, ListOffsets' lookups, leader epochs
//!              (OffsetForLeaderEpoch), DeleteRecords, partition sizes and
//!              producers for the Describe APIs
//! append       Produce: validate, de-duplicate, append (inline when the log is open)
//! validate     every produced batch whole and readable (Kafka's LogValidator)
//! read         Fetch: one partition's batches up to the high watermark; the long poll
//! idempotence  per-partition producer state for retried batches and transactions
//! markers      transaction markers appended for the coordinator
//! lso          the last stable offset and read_committed reads
//! wake         parked fetches woken per partition, from the directory beacon
//! cluster      cluster mode (issue 14): assignments from the control plane,
//!              leadership checks, followers' fetches on the leader, acks=all
//! partition_state  one partition's role, ISR, follower positions, high
//!              watermark; the interface types the control plane uses
//! isr          the ISR's shrink, expand and high-watermark rules (pure)
//! fetcher      the follower's fetcher: one task per leader, truncation first
//! ```
//!
//! Without cluster mode (`enable_cluster`) this broker is its partitions'
//! only replica, so the high watermark is the log end, as before. In
//! cluster mode each partition is led or followed as the controller's
//! assignments say (`cluster`): Produce, Fetch, ListOffsets,
//! OffsetForLeaderEpoch and DeleteRecords for a partition this broker does
//! not lead answer NOT_LEADER_OR_FOLLOWER.

mod append;
pub mod cluster;
pub mod fetcher;
pub mod idempotence;
pub mod isr;
pub mod lso;
pub mod markers;
pub mod partition_state;
mod read;
pub mod validate;
pub mod wake;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod replication_tests;

pub use append::{Appended, Written};
pub use partition_state::{
    AlterPartitionFuture, BrokerId, ClusterLink, IsrChannel, PartitionAssignment, PeerDirectory,
    Role, DEFAULT_REPLICA_LAG_TIME_MAX_MS,
};
pub use read::{Cursors, ReadResult};
pub use wake::Looked;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio::sync::watch;

use crate::errors::{code, kafka_code};
use idempotence::ProducerTable;
use ottla_storage::log::{Durability, LeaderEpochs, PartitionLog};
use ottla_storage::store::Store;

/// A request's current leader epoch against the partition's (Kafka's
/// `Partition.checkCurrentLeaderEpoch`): none given passes; one below ours
/// is a client behind a leader change (FENCED_LEADER_EPOCH), one above is a
/// client ahead of this broker (UNKNOWN_LEADER_EPOCH); both refresh their
/// metadata and retry.
pub fn check_leader_epoch(ours: i32, theirs: Option<i32>) -> i16 {
    match theirs {
        Some(e) if e < ours => code::FENCED_LEADER_EPOCH,
        Some(e) if e > ours => code::UNKNOWN_LEADER_EPOCH,
        _ => code::NONE,
    }
}

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub struct ReplicaManager {
    store: Arc<Store>,
    durability: Durability,
    /// Shared with the fetchers: a follower keeps the producer state of
    /// what it copies, so a new leader de-duplicates retries.
    producers: Arc<ProducerTable>,
    /// Parked fetches by the partitions they wait on; the waker watches the
    /// beacon only while there are some.
    watches: Arc<wake::Watches>,
    /// Passes over a Fetch's partitions (`gather` runs), since the start.
    fetch_passes: AtomicU64,
    /// Turns true when the broker stops: long polls answer at once.
    stopping: watch::Receiver<bool>,
    /// The broker's runtime: fetchers and the ISR timer run on it.
    runtime: tokio::runtime::Handle,
    /// Cluster mode's state (`enable_cluster`); None: a single node.
    cluster: parking_lot::RwLock<Option<Arc<cluster::Cluster>>>,
}

impl ReplicaManager {
    /// The replica manager over `store`, and the thread that wakes its long
    /// polls (stopped by the broker on close); `stopping` turns true when
    /// the broker stops.
    pub fn start(
        store: Arc<Store>,
        durability: Durability,
        stopping: watch::Receiver<bool>,
        runtime: tokio::runtime::Handle,
    ) -> (ReplicaManager, wake::Waker) {
        let watches = Arc::new(wake::Watches::default());
        let waker = wake::Waker::start(store.beacon().clone(), watches.clone());
        let replicas = ReplicaManager {
            store,
            durability,
            producers: Arc::new(ProducerTable::default()),
            watches,
            fetch_passes: AtomicU64::new(0),
            stopping,
            runtime,
            cluster: parking_lot::RwLock::new(None),
        };
        (replicas, waker)
    }

    /// The log of a partition, once the caller's `current_leader_epoch`
    /// (None: unchecked) passed Kafka's fencing check. Blocking.
    fn epoch_checked_log(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: Option<i32>,
    ) -> Result<Arc<PartitionLog>, i16> {
        if partition < 0 {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        }
        if let Some(p) = self.leader_partition(topic, partition)? {
            let fenced = check_leader_epoch(p.log.leader_epoch(), current_leader_epoch);
            if fenced != code::NONE {
                return Err(fenced);
            }
            return Ok(p.log.clone());
        }
        let log = self
            .store
            .partition_by_name(topic, partition as u32)
            .map_err(|e| kafka_code(&e))?;
        let fenced = check_leader_epoch(log.leader_epoch(), current_leader_epoch);
        if fenced != code::NONE {
            return Err(fenced);
        }
        Ok(log)
    }

    /// ListOffsets for one partition: (timestamp, offset, leader epoch) for
    /// earliest (-2), latest (-1), the record with the largest timestamp
    /// (-3), or the first offset at or after a time. `current_leader_epoch`
    /// is the client's, checked first as Kafka checks it. The epoch is the
    /// one the answered offset was written in (Kafka's
    /// `fetchOffsetByTimestamp`): the first cached epoch for the earliest
    /// offset if it covers the log start, the current one for the latest,
    /// the record's for a timestamp; -1 when unknown.
    pub fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        current_leader_epoch: Option<i32>,
    ) -> Result<(i64, i64, i32), i16> {
        crate::blocking(|| -> Result<(i64, i64, i32), i16> {
            let log = self.epoch_checked_log(topic, partition, current_leader_epoch)?;
            let epochs = log.leader_epochs().map_err(|e| kafka_code(&e))?;
            let epoch_of = |offset: i64| epochs.epoch_for_offset(offset).unwrap_or(-1);
            match timestamp {
                EARLIEST => Ok((
                    -1,
                    epochs.log_start_offset,
                    epochs.epoch_at_log_start().unwrap_or(-1),
                )),
                LATEST => Ok((-1, epochs.high_watermark, epochs.current)),
                // KIP-734: the record with the largest timestamp; an empty
                // partition answers -1/-1, as Kafka's does.
                MAX_TIMESTAMP => match log.max_timestamp().map_err(|e| kafka_code(&e))? {
                    Some((offset, at)) => Ok((at, offset, epoch_of(offset))),
                    None => Ok((-1, -1, -1)),
                },
                ts => match log.offset_for_time(ts).map_err(|e| kafka_code(&e))? {
                    Some((offset, at)) => Ok((at, offset, epoch_of(offset))),
                    None => Ok((-1, -1, -1)),
                },
            }
        })
    }

    /// One partition's leader epochs (OffsetForLeaderEpoch, and Fetch's
    /// check of the epoch a follower last fetched in), after checking the
    /// client's `current_leader_epoch` as Kafka's `Partition` does.
    pub fn leader_epochs(
        &self,
        topic: &str,
        partition: i32,
        current_leader_epoch: Option<i32>,
    ) -> Result<LeaderEpochs, i16> {
        crate::blocking(|| -> Result<LeaderEpochs, i16> {
            let log = self.epoch_checked_log(topic, partition, current_leader_epoch)?;
            log.leader_epochs().map_err(|e| kafka_code(&e))
        })
    }

    /// DeleteRecords for one partition: move its log start offset up to
    /// `offset` (-1: the high watermark); the log start offset after the
    /// call (Kafka's low watermark).
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, i16> {
        crate::blocking(|| -> Result<i64, i16> {
            let log = self.epoch_checked_log(topic, partition, None)?;
            log.delete_records(offset).map_err(|e| kafka_code(&e))
        })
    }

    /// DescribeLogDirs for one partition: its bytes on disk.
    pub fn partition_size(&self, topic: &str, partition: u32) -> Result<i64, i16> {
        crate::blocking(|| -> Result<i64, i16> {
            let log = self
                .store
                .partition_by_name(topic, partition)
                .map_err(|e| kafka_code(&e))?;
            let bytes = log.size_bytes().map_err(|e| kafka_code(&e))?;
            Ok(i64::try_from(bytes).unwrap_or(i64::MAX))
        })
    }

    /// DescribeProducers for one partition: the idempotent producers this
    /// broker has seen append to it since it started.
    pub fn producers(&self, topic: &str, partition: u32) -> Vec<idempotence::ProducerSnapshot> {
        self.producers.snapshot(topic, partition)
    }

    /// How many Fetch requests are waiting for an append now.
    pub fn waiting_fetches(&self) -> usize {
        self.watches.waiting()
    }

    /// What long polls have cost since the start: (passes over a Fetch's
    /// partitions, partition heads the wake thread looked at, parked
    /// fetches woken).
    pub fn fetch_counters(&self) -> (u64, u64, u64) {
        let (looks, wakes) = self.watches.counters();
        (
            self.fetch_passes.load(std::sync::atomic::Ordering::Relaxed),
            looks,
            wakes,
        )
    }

    #[cfg(test)]
    pub(crate) fn watches(&self) -> &Arc<wake::Watches> {
        &self.watches
    }

    /// Forget a deleted topic's producers.
    pub fn forget_topic(&self, topic: &str) {
        self.producers.forget_topic(topic);
    }
}
