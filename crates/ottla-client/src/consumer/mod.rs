//! The consumer: positions per assigned partition, fetching whole batches
//! from the logs, handing out records one at a time without copying them,
//! and committing positions to the offset store.
//!
//! Records are handed to a caller-supplied function as borrowed
//! [`RecordView`](ottla_record::batch::RecordView)s, valid only during the
//! call: the caller builds whatever object it hands on from them, so the
//! engine never builds a per-record object of its own.
//!
//! With a `group_id`, `subscribe` makes the consumer a member of the group
//! (`crate::group`): the partitions it reads are the ones it owns, taken and
//! given up inside `drain` (so rebalance callbacks run on the polling
//! thread), and a watchdog thread gives everything up if the application
//! stops polling for `session_timeout_ms`.
//!
//! The parts, along Kafka's seams; each is an `impl Consumer` block over the
//! one `Inner` below:
//! * `config`: [`ConsumerConfig`] and [`OffsetReset`].
//! * `subscription`: what is subscribed to and assigned, and each assigned
//!   partition's position and pause (Kafka's `SubscriptionState`).
//! * `fetcher`: reading whole batches from the logs and handing out their
//!   records, including the per-record fast path (Kafka's `Fetcher`).
//! * `coordinator`: group membership: joining, leaving, the rebalance steps
//!   and the order of the listener's callbacks (Kafka's
//!   `ConsumerCoordinator`).
//! * `commits`: committing positions to the offset store, by hand and
//!   automatically.
//! * `watchdog`: the thread that enforces the session timeout.
//!
//! This module holds the [`Consumer`] itself: construction, `wait` and
//! `close`. Its invariants: all of a consumer's mutable state is in `Inner`,
//! behind one lock, which is never held while a [`RebalanceListener`] runs
//! (the listener may call back into the consumer); `polls` moves on every
//! drain and wait, as the watchdog's sign of life; `closed` is set only by
//! `close`, and calls that read or move state check it first
//! (`check_open`).

mod commits;
mod config;
mod coordinator;
mod fetcher;
mod subscription;
mod watchdog;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::group::member::MemberSession;
use crate::group::GroupDir;
use ottla_storage::beacon::{BusyPoll, MAX_BUSY_POLL};
use ottla_storage::error::{Error, Result};
use ottla_storage::log::producer_state::ProducerStateManager;
use ottla_storage::log::PartitionLog;
use ottla_storage::store::Store;

use commits::coarse_ms;
use coordinator::Membership;
use subscription::Assigned;

pub use config::{ConsumerConfig, OffsetReset, DEFAULT_BUSY_POLL, MIN_SESSION_TIMEOUT_MS};
pub use coordinator::RebalanceListener;
pub use ottla_storage::topic::TopicPartition;
pub use subscription::Subscription;

struct Inner {
    subscription: Option<Subscription>,
    /// Set while subscribed with a group: then `assignment` holds exactly the
    /// partitions whose ownership byte this member has locked.
    group: Option<Membership>,
    assignment: Vec<Assigned>,
    next_rr: usize,
    meta_gen: u64,
    /// The metadata generation a manual assignment was last checked at for
    /// deleted topics (`Consumer::check_assigned_live`).
    live_gen: u64,
    /// When positions were last committed, in [`coarse_ms`].
    last_commit: u64,
    /// read_committed: the producer state of partitions asked about
    /// (`watermarks`, `offset_for_time`) but not assigned, for their last
    /// stable offset; each with the log it was built from.
    stable: HashMap<TopicPartition, (Arc<PartitionLog>, Option<ProducerStateManager>)>,
    closed: bool,
}

pub struct Consumer {
    store: Arc<Store>,
    config: ConsumerConfig,
    /// Shared with the group watchdog thread (which holds it weakly).
    inner: Arc<Mutex<Inner>>,
    /// Moves on every drain and wait: the watchdog's sign of life.
    polls: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    group_dir: Mutex<Option<Arc<GroupDir>>>,
    watchdog: Mutex<bool>,
    /// The adaptive spin of `wait`, bounded by `config.busy_poll`.
    busy_poll: BusyPoll,
}

impl Consumer {
    pub fn new(store: Arc<Store>, config: ConsumerConfig) -> Result<Consumer> {
        if config.num_partitions == 0 {
            return Err(Error::InvalidConfig(
                "num_partitions must be positive".into(),
            ));
        }
        if let Some(g) = &config.group_id {
            if g.is_empty() {
                return Err(Error::InvalidConfig("group_id must not be empty".into()));
            }
        }
        if config.session_timeout_ms < MIN_SESSION_TIMEOUT_MS {
            return Err(Error::InvalidConfig(format!(
                "session_timeout_ms must be at least {MIN_SESSION_TIMEOUT_MS}, got {}",
                config.session_timeout_ms
            )));
        }
        if config.busy_poll > MAX_BUSY_POLL {
            return Err(Error::InvalidConfig(format!(
                "busy_poll_us must be at most {}, got {}",
                MAX_BUSY_POLL.as_micros(),
                config.busy_poll.as_micros()
            )));
        }
        Ok(Consumer {
            busy_poll: BusyPoll::new(config.busy_poll),
            inner: Arc::new(Mutex::new(Inner {
                subscription: None,
                group: None,
                assignment: Vec::new(),
                next_rr: 0,
                meta_gen: u64::MAX,
                live_gen: u64::MAX,
                last_commit: coarse_ms(),
                stable: HashMap::new(),
                closed: false,
            })),
            polls: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicBool::new(false)),
            group_dir: Mutex::new(None),
            watchdog: Mutex::new(false),
            store,
            config,
        })
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn check_open(inner: &Inner) -> Result<()> {
        if inner.closed {
            return Err(Error::Closed("consumer"));
        }
        Ok(())
    }

    /// Block until records may be available or `timeout` passes. Returns
    /// whether data may be there.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        // Waiting is polling: keep the watchdog's sign of life moving well
        // within the session timeout.
        let slice = Duration::from_millis(100)
            .min(Duration::from_millis(self.config.session_timeout_ms / 4));
        loop {
            let seq = self.store.beacon().append_seq();
            let mut nap = slice;
            {
                let mut inner = self.inner.lock();
                Self::check_open(&inner)?;
                self.polls.fetch_add(1, Ordering::Relaxed);
                // Group work (a rebalance, a partition let go) is done by
                // the caller's next drain, on its own thread.
                // So is reporting a deleted topic of a manual assignment.
                if self.group_needs_attention(&inner) || !self.assignment_checked(&inner) {
                    return Ok(true);
                }
                if let Some(m) = inner.group.as_ref().filter(|m| m.pending) {
                    nap = nap.min(m.retry_at.saturating_duration_since(Instant::now()));
                }
                self.refresh_subscription(&mut inner)?;
                if self.has_data(&mut inner)? {
                    return Ok(true);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // Bounded so a closed consumer or a missed wake costs at most this.
            self.store.beacon().wait_polling(
                seq,
                (deadline - now).min(nap).max(Duration::from_millis(1)),
                &self.busy_poll,
            );
        }
    }

    /// (log start, end) of any partition in the directory. The end is the
    /// log end, or for a read_committed consumer the last stable offset:
    /// what Kafka's ListOffsets answers for "latest" at each isolation
    /// level, and where such a consumer's reads stop.
    pub fn watermarks(&self, topic: &str, partition: u32) -> Result<(i64, i64)> {
        let log = self.store.partition_by_name(topic, partition)?;
        let (start, end) = log.offsets()?;
        if !self.config.read_committed {
            return Ok((start, end));
        }
        Ok((start, self.stable_end(topic, partition, &log)?))
    }

    /// The first record at or after `ts` (ms): its (offset, timestamp). A
    /// read_committed consumer finds only records below the last stable
    /// offset (as Kafka's ListOffsets at that isolation level).
    pub fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        let log = self.store.partition_by_name(topic, partition)?;
        let found = log.offset_for_time(ts)?;
        match found {
            Some((offset, _)) if self.config.read_committed => {
                let lso = self.stable_end(topic, partition, &log)?;
                Ok(found.filter(|_| offset < lso))
            }
            _ => Ok(found),
        }
    }

    /// The last stable offset of `log` (`topic`-`partition`): from the
    /// producer state of the assigned partition when it is this log, else
    /// from one kept for the partition in `Inner::stable`.
    fn stable_end(&self, topic: &str, partition: u32, log: &Arc<PartitionLog>) -> Result<i64> {
        let mut inner = self.inner.lock();
        if let Some(a) = inner.assignment.iter_mut().find(|a| {
            &*a.tp.topic == topic && a.tp.partition == partition && Arc::ptr_eq(&a.log, log)
        }) {
            return Self::last_stable_offset(a);
        }
        let key = TopicPartition::new(Arc::from(topic), partition);
        let entry = inner
            .stable
            .entry(key)
            .or_insert_with(|| (Arc::clone(log), None));
        if !Arc::ptr_eq(&entry.0, log) {
            // The topic was deleted and created again: another log.
            *entry = (Arc::clone(log), None);
        }
        fetcher::lso_of(&mut entry.1, log)
    }

    /// Commit (if auto-commit is on) and leave the group, handing the
    /// partitions over at once (the listener hears of the revocation first).
    pub fn close(&self, autocommit: bool) -> Result<()> {
        let revoked = self.give_up_all(autocommit);
        let mut inner = self.inner.lock();
        if inner.closed {
            return Ok(());
        }
        let r = if autocommit && self.config.enable_auto_commit && self.config.group_id.is_some() {
            self.commit_locked(&mut inner, None)
        } else {
            Ok(())
        };
        inner.closed = true;
        self.closed.store(true, Ordering::Release);
        inner.assignment.clear();
        inner.stable.clear();
        inner.subscription = None;
        let session = inner.group.take().and_then(|m| m.session);
        drop(inner);
        let left = session.map_or(Ok(()), MemberSession::leave);
        revoked.and(r).and(left)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }
}
