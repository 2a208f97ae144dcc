//! One partition's replication state on this broker (Kafka's `Partition`):
//! its role (leader or follower) in which leader epoch, the replica set and
//! the in-sync replicas (ISR) as the controller last said, and on a leader
//! the followers' fetch positions and the high watermark they make.
//!
//! Also the boundary with the cluster's control plane (`cl-control`): the
//! assignment it hands over ([`PartitionAssignment`]), where peers listen
//! ([`PeerDirectory`]) and how a leader asks to change the ISR
//! ([`IsrChannel`], Kafka's AlterPartition), gathered in [`ClusterLink`].
//!
//! Invariants kept here (the decisions are `isr`'s pure functions):
//! * the leader's high watermark only moves up, and never above the lowest
//!   log end offset of the ISR, counted with a member being added (an ISR
//!   change in flight counts the larger set: Kafka's "maximal ISR");
//! * a follower's log end is what its last fetch asked for (its fetch
//!   offset), so a record counts as replicated only once the follower
//!   asked for what follows it;
//! * a follower is in sync while it has caught up with the leader's log
//!   end within `replica.lag.time.max.ms`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ottla_storage::log::PartitionLog;
use tokio::sync::watch;

use super::isr::{self, FollowerPosition};

pub type BrokerId = i32;

/// The cluster's view of one partition this broker is a replica of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    /// None: leaderless (every ISR member fenced).
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// Where a broker's Kafka listener is (for followers to fetch from the leader).
pub trait PeerDirectory: Send + Sync + 'static {
    fn address(&self, broker: BrokerId) -> Option<SocketAddr>;
}

/// What [`IsrChannel::alter_partition`] returns.
pub type AlterPartitionFuture = Pin<Box<dyn Future<Output = Result<i32, i16>> + Send>>;

/// The leader asks the controller to change the ISR (Kafka's
/// AlterPartition). Returns the new partition epoch, or a Kafka error code
/// (e.g. FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION); the controller's own
/// change arrives later through `apply_assignments` as well.
pub trait IsrChannel: Send + Sync + 'static {
    fn alter_partition(
        &self,
        topic_id: uuid::Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> AlterPartitionFuture;
}

/// What turns a broker into a member of a cluster.
pub struct ClusterLink {
    pub local: BrokerId,
    pub peers: Arc<dyn PeerDirectory>,
    pub isr: Arc<dyn IsrChannel>,
    /// Kafka's `replica.lag.time.max.ms` (ottla's default: 10000).
    pub replica_lag_time_max_ms: u64,
    /// Outgoing connections (the fetchers') bind to this source address
    /// before connecting, when set (the test harness isolates a broker by
    /// its loopback source address, e.g. 127.0.0.12).
    pub source_ip: Option<IpAddr>,
}

/// ottla's default `replica.lag.time.max.ms` (Kafka's is 30000).
pub const DEFAULT_REPLICA_LAG_TIME_MAX_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// One partition's state. Guarded by [`Partition::state`].
pub struct PartitionState {
    pub assignment: PartitionAssignment,
    pub role: Role,
    /// Leader only: each other replica's fetch position.
    pub followers: HashMap<BrokerId, FollowerPosition>,
    /// Leader only: the log end when this broker became leader in this
    /// epoch (a follower joins the ISR only once past it, as in Kafka).
    pub epoch_start_offset: i64,
    /// Leader only: the high watermark (also set on the log, which caps
    /// consumers' reads with it).
    pub high_watermark: i64,
    /// Leader only: an ISR change sent to the controller and not answered
    /// yet (the ISR it asked for).
    pub pending_isr: Option<Vec<BrokerId>>,
    /// The high watermark last written to the checkpoint file.
    pub checkpointed: i64,
}

impl PartitionState {
    /// The replicas the high watermark waits for: the ISR with any member
    /// an in-flight change adds (Kafka's maximal ISR).
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut all = self.assignment.isr.clone();
        for b in self.pending_isr.iter().flatten() {
            if !all.contains(b) {
                all.push(*b);
            }
        }
        all
    }

    /// Leader: the high watermark the ISR's log ends allow now, if it is
    /// above the current one (`leader_leo` is this broker's log end).
    pub fn advance_high_watermark(&mut self, local: BrokerId, leader_leo: i64) -> Option<i64> {
        let candidate = isr::high_watermark(local, leader_leo, &self.maximal_isr(), |b| {
            self.followers.get(&b).and_then(|f| f.log_end_offset)
        });
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

/// One partition served by this broker in cluster mode, in one role and
/// leader epoch: a new role or epoch is a new `Partition`, and the old one
/// is retired.
pub struct Partition {
    pub log: Arc<PartitionLog>,
    pub state: parking_lot::Mutex<PartitionState>,
    /// Bumped on every change of role, ISR or high watermark: acks=all
    /// waiters look again.
    pub changed: watch::Sender<u64>,
    /// Held (read) by each leader append from its leadership check to the
    /// end of the append; taken (write) to retire the partition, so no
    /// append of an old leadership lands after the new role began
    /// (Kafka's `leaderIsrUpdateLock`).
    pub leadership: parking_lot::RwLock<()>,
    retired: AtomicBool,
}

impl Partition {
    pub fn new(log: Arc<PartitionLog>, state: PartitionState) -> Partition {
        Partition {
            log,
            state: parking_lot::Mutex::new(state),
            changed: watch::channel(0).0,
            leadership: parking_lot::RwLock::new(()),
            retired: AtomicBool::new(false),
        }
    }

    /// No longer this broker's role for the partition: waits for appends
    /// in flight under it, then refuses new ones.
    pub fn retire(&self) {
        let _w = self.leadership.write();
        self.retired.store(true, Ordering::Release);
        drop(_w);
        self.notify();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A follower position as first known: nothing fetched yet, caught up as
/// of now (Kafka starts a new leader's followers so: a follower gets the
/// whole lag time to fetch before it leaves the ISR).
pub fn fresh_follower(now: Instant) -> FollowerPosition {
    FollowerPosition {
        log_end_offset: None,
        last_caught_up: now,
        last_fetch: now,
        last_fetch_leader_leo: -1,
    }
}
