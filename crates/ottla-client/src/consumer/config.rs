//! A consumer's configuration, with Kafka's names and defaults where Kafka
//! has them. Checked once, by `Consumer::new`; nothing here changes after.

use std::time::Duration;

use crate::group::assignor::Assignor;
#[cfg(doc)]
use ottla_storage::beacon::{BusyPoll, MAX_BUSY_POLL};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    None,
}

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval_ms: u64,
    pub max_partition_fetch_bytes: usize,
    /// Create a subscribed or assigned topic that does not exist (Kafka's
    /// `allow.auto.create.topics`). Off by default: a mistyped name must not
    /// make a topic; a subscription waits for it, an assignment fails.
    pub auto_create_topics: bool,
    pub num_partitions: u32,
    pub check_crcs: bool,
    /// Names this consumer in its group's member id (Kafka's `client.id`).
    pub client_id: String,
    /// Kafka's `partition.assignment.strategy`; every member of a group must agree.
    pub assignor: Assignor,
    /// A member that does not poll for this long gives up its partitions.
    pub session_timeout_ms: u64,
    /// The most a wait spins for new records before it sleeps (adaptive,
    /// see [`BusyPoll`]); zero never spins. At most [`MAX_BUSY_POLL`].
    pub busy_poll: Duration,
    /// Kafka's `isolation.level=read_committed`: records of open
    /// transactions are held back (the last stable offset) and those of
    /// aborted ones never handed out.
    pub read_committed: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5000,
            max_partition_fetch_bytes: 1024 * 1024,
            auto_create_topics: false,
            num_partitions: 1,
            check_crcs: true,
            client_id: String::new(),
            assignor: Assignor::CooperativeSticky,
            session_timeout_ms: 10_000,
            busy_poll: DEFAULT_BUSY_POLL,
            read_committed: false,
        }
    }
}

/// Off, as Linux's `SO_BUSY_POLL` is: on the shared 2-core VM a spinning
/// consumer did not lower the p50 and raised it under load (it takes the
/// core the producer's threads need; docs/PERFORMANCE.md, "Latency").
/// 50 µs (Linux's suggested `net.core.busy_poll`) is the value
/// to try where a core is free.
pub const DEFAULT_BUSY_POLL: Duration = Duration::ZERO;

/// The shortest `session_timeout_ms` accepted.
pub const MIN_SESSION_TIMEOUT_MS: u64 = 100;
