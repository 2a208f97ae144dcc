//! The consumer: positions per assigned partition, fetching whole batches
//! from the logs, handing out records one at a time without copying them,
//! and committing positions to the offset store.
//!
//! Records are handed to a caller-supplied function as borrowed
//! [`RecordView`]s, valid only during the call: the caller builds whatever
//! object it hands on from them, so the engine never builds a per-record
//! object of its own.
//!
//! With a `group_id`, `subscribe` makes the consumer a member of the group
//! (`crate::group`): the partitions it reads are the ones it owns, taken and
//! given up inside `drain` (so rebalance callbacks run on the polling
//! thread), and a watchdog thread gives everything up if the application
//! stops polling for `session_timeout_ms`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::group::assignor::Assignor;
use crate::group::member::MemberSession;
use crate::group::GroupDir;
use ottla_record::batch::{BatchHeader, RecordIter, RecordView, HEADER_LEN};
use ottla_record::decode::inflate;
use ottla_storage::beacon::{BusyPoll, MAX_BUSY_POLL};
use ottla_storage::error::{Error, Result};
use ottla_storage::log::{Durability, PartitionLog, ReadCursor};
use ottla_storage::store::{Store, Topic};

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
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5000,
            max_partition_fetch_bytes: 1024 * 1024,
            auto_create_topics: true,
            num_partitions: 1,
            check_crcs: true,
            client_id: String::new(),
            assignor: Assignor::CooperativeSticky,
            session_timeout_ms: 10_000,
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

/// Off, as Linux's `SO_BUSY_POLL` is: on the shared 2-core VM a spinning
/// consumer did not lower the p50 and raised it under load (it takes the
/// core the producer's threads need; docs/PERFORMANCE.md, "End-to-end
/// latency"). 50 µs (Linux's suggested `net.core.busy_poll`) is the value
/// to try where a core is free.
pub const DEFAULT_BUSY_POLL: Duration = Duration::ZERO;

/// The shortest `session_timeout_ms` accepted.
pub const MIN_SESSION_TIMEOUT_MS: u64 = 100;

/// What a consumer subscribes to.
#[derive(Clone, Debug)]
pub enum Subscription {
    Topics(Vec<String>),
    /// Every non-internal topic whose whole name matches, now or later.
    Pattern(regex::Regex),
}

impl Subscription {
    /// A pattern subscription; Kafka matches the whole topic name.
    pub fn pattern(pattern: &str) -> Result<Subscription> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Subscription::Pattern)
            .map_err(|e| Error::InvalidConfig(format!("invalid topic pattern {pattern:?}: {e}")))
    }
}

/// Told about partitions a group member gains and loses, on the thread that
/// polls (or subscribes, unsubscribes, closes), with no engine lock held, so
/// it may call back into the consumer (to commit, seek or read positions).
pub trait RebalanceListener: Send + Sync {
    /// About to give these up: the last moment to commit their positions.
    fn on_partitions_revoked(&self, partitions: &[TopicPartition]);
    /// Now owned; reading starts at the committed offset (or the reset).
    fn on_partitions_assigned(&self, partitions: &[TopicPartition]);
    /// Already gone (the member missed its session timeout): committing
    /// them is no longer possible.
    fn on_partitions_lost(&self, partitions: &[TopicPartition]);
}

/// A consumer's membership of its group.
struct Membership {
    /// `None` after a session timeout until the next poll rejoins.
    session: Option<MemberSession>,
    listener: Option<Arc<dyn RebalanceListener>>,
    /// The beacon's group word when the state file was last read.
    seen: u64,
    generation: i64,
    target: Vec<(String, u32)>,
    /// Assigned partitions whose previous owner has not let go yet.
    pending: bool,
    retry_at: Instant,
    /// Released by the watchdog; reported by the next poll.
    lost: Vec<TopicPartition>,
}

/// How often a member with pending partitions retries their locks, as a
/// fallback: the releasing member also wakes everyone.
const RETRY: Duration = Duration::from_millis(50);

pub type TopicPartition = (Arc<str>, u32);

/// The batch being handed out, and how far into it we are.
struct Fetch {
    data: Vec<u8>,
    /// Start of the current batch in `data`.
    batch_at: usize,
    header: Option<BatchHeader>,
    iter_state: (usize, i32),
    /// The current batch's records, inflated, when its producer compressed it.
    inflated: Option<Vec<u8>>,
    /// Error met after the fetched bytes (corruption), raised when reached.
    error: Option<Error>,
}

impl Fetch {
    /// Nothing left to hand out but `error`, raised when the partition is
    /// next drained.
    fn failed(error: Error) -> Fetch {
        Fetch {
            data: Vec::new(),
            batch_at: 0,
            header: None,
            iter_state: (0, 0),
            inflated: None,
            error: Some(error),
        }
    }
}

struct Assigned {
    tp: TopicPartition,
    log: Arc<PartitionLog>,
    /// Offset of the next record to hand out; `None` until resolved from the
    /// committed offset or `auto_offset_reset`.
    position: Option<i64>,
    paused: bool,
    cursor: Option<ReadCursor>,
    fetch: Option<Fetch>,
}

struct Inner {
    subscription: Option<Subscription>,
    /// Set while subscribed with a group: then `assignment` holds exactly the
    /// partitions whose ownership byte this member has locked.
    group: Option<Membership>,
    assignment: Vec<Assigned>,
    next_rr: usize,
    meta_gen: u64,
    /// When positions were last committed, in [`coarse_ms`].
    last_commit: u64,
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
                last_commit: coarse_ms(),
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

    /// Subscribe to topics; with a `group_id`, join the group.
    pub fn subscribe(&self, topics: &[String]) -> Result<()> {
        self.subscribe_with(Subscription::Topics(topics.to_vec()), None)
    }

    /// Subscribe (replacing any subscription or assignment). Without a
    /// group, every partition of the subscribed topics is read. With one,
    /// the consumer joins the group and reads the partitions it is given;
    /// the first of them are taken here, the rest as polling goes on.
    pub fn subscribe_with(
        &self,
        subscription: Subscription,
        listener: Option<Arc<dyn RebalanceListener>>,
    ) -> Result<()> {
        if let Subscription::Topics(topics) = &subscription {
            for t in topics {
                ottla_storage::topic::validate_topic_name(t)?;
            }
        }
        let was_member = {
            let inner = self.inner.lock();
            Self::check_open(&inner)?;
            inner.group.is_some()
        };
        if was_member {
            // Leaving first gives the old listener its revocations.
            self.unsubscribe()?;
        }
        let Some(group) = &self.config.group_id else {
            let mut inner = self.inner.lock();
            inner.subscription = Some(subscription);
            inner.meta_gen = u64::MAX;
            return self.refresh_subscription(&mut inner);
        };
        let dir = self.group_dir(group)?;
        let meta_gen = self.store.beacon().metadata_gen();
        let topics = self.resolve_topics(&subscription)?;
        let session = MemberSession::join(
            dir.clone(),
            &self.config.client_id,
            topics,
            self.config.assignor,
        )?;
        {
            let mut inner = self.inner.lock();
            Self::check_open(&inner)?;
            inner.subscription = Some(subscription);
            inner.meta_gen = meta_gen;
            // A manual assignment does not carry over: a member reads only
            // partitions whose ownership byte it holds.
            inner.assignment.clear();
            inner.group = Some(Membership {
                session: Some(session),
                listener,
                seen: u64::MAX,
                generation: -1,
                target: Vec::new(),
                pending: false,
                retry_at: Instant::now(),
                lost: Vec::new(),
            });
        }
        self.ensure_watchdog(dir);
        self.group_step()
    }

    /// Leave the group (revoking, with an auto-commit first) or drop the
    /// subscription.
    pub fn unsubscribe(&self) -> Result<()> {
        let committed = self.give_up_all(true);
        let mut inner = self.inner.lock();
        inner.subscription = None;
        inner.assignment.clear();
        let session = inner.group.take().and_then(|m| m.session);
        drop(inner);
        let left = session.map_or(Ok(()), MemberSession::leave);
        committed.and(left)
    }

    /// Revoke every owned partition of a group member: the listener first,
    /// then the auto-commit, then the locks. Returns the commit's result.
    fn give_up_all(&self, autocommit: bool) -> Result<()> {
        let (owned, listener) = {
            let inner = self.inner.lock();
            match &inner.group {
                Some(m) if !inner.closed => (
                    inner
                        .assignment
                        .iter()
                        .map(|a| a.tp.clone())
                        .collect::<Vec<_>>(),
                    m.listener.clone(),
                ),
                _ => return Ok(()),
            }
        };
        if let (false, Some(l)) = (owned.is_empty(), &listener) {
            l.on_partitions_revoked(&owned);
        }
        let mut inner = self.inner.lock();
        self.finish_revoke(&mut inner, &owned, autocommit)
    }

    /// Subscribed topic names (for a pattern, the topics matching now).
    pub fn subscription(&self) -> Vec<String> {
        let sub = self.inner.lock().subscription.clone();
        match sub {
            Some(Subscription::Topics(t)) => t,
            Some(s) => self.resolve_topics(&s).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The member id in the group, while a member.
    pub fn member_id(&self) -> Option<String> {
        let inner = self.inner.lock();
        let m = inner.group.as_ref()?;
        m.session.as_ref().map(|s| s.member_id().to_string())
    }

    fn group_dir(&self, group: &str) -> Result<Arc<GroupDir>> {
        let mut d = self.group_dir.lock();
        if let Some(dir) = &*d {
            return Ok(dir.clone());
        }
        let dir = Arc::new(GroupDir::open(&self.store, group)?);
        *d = Some(dir.clone());
        Ok(dir)
    }

    /// Topic names a subscription stands for now. Named topics are created
    /// if `auto_create_topics` allows, and kept even while they do not
    /// exist (the group picks them up once they do).
    fn resolve_topics(&self, sub: &Subscription) -> Result<Vec<String>> {
        match sub {
            Subscription::Topics(topics) => {
                for t in topics {
                    match self.store.topic_or_create(
                        t,
                        self.config.auto_create_topics,
                        self.config.num_partitions,
                    ) {
                        Ok(_) | Err(Error::UnknownTopicOrPartition { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(topics.clone())
            }
            Subscription::Pattern(re) => Ok(self
                .store
                .list_topics(false)?
                .into_iter()
                .filter(|t| re.is_match(t))
                .collect()),
        }
    }

    /// Cheap check, on every drain: is there group work to do?
    fn group_needs_attention(&self, inner: &Inner) -> bool {
        let Some(m) = &inner.group else { return false };
        let beacon = self.store.beacon();
        m.session.is_none()
            || !m.lost.is_empty()
            || m.seen != beacon.groups_gen()
            || inner.meta_gen != beacon.metadata_gen()
            || (m.pending && Instant::now() >= m.retry_at)
    }

    /// Bring ownership in line with the group: report partitions lost to a
    /// session timeout and rejoin, publish subscription changes, give up
    /// partitions assigned elsewhere (listener, auto-commit, unlock), and
    /// take newly assigned ones whose previous owner has let go.
    ///
    /// The listener runs with no lock held; state is re-checked after it.
    fn group_step(&self) -> Result<()> {
        let beacon = self.store.beacon().clone();
        let mut inner = self.inner.lock();
        let Some(m) = inner.group.as_mut() else {
            return Ok(());
        };
        let listener = m.listener.clone();
        if !m.lost.is_empty() {
            let lost = std::mem::take(&mut m.lost);
            drop(inner);
            if let Some(l) = &listener {
                l.on_partitions_lost(&lost);
            }
            inner = self.inner.lock();
        }
        if inner.closed {
            return Ok(());
        }
        let Some(sub) = inner.subscription.clone() else {
            return Ok(());
        };
        let meta_gen = beacon.metadata_gen();
        let Some(m) = inner.group.as_mut() else {
            return Ok(());
        };
        if m.session.is_none() {
            // The watchdog gave everything up: join again as a new member.
            let Some(dir) = self.group_dir.lock().clone() else {
                return Ok(());
            };
            let topics = self.resolve_topics(&sub)?;
            m.session = Some(MemberSession::join(
                dir,
                &self.config.client_id,
                topics,
                self.config.assignor,
            )?);
            m.seen = u64::MAX;
            m.generation = -1;
            m.target.clear();
            inner.meta_gen = meta_gen;
        } else if inner.meta_gen != meta_gen {
            // Topics created or grown: re-resolve and let the group reassign
            // (the update writes nothing if nothing changed).
            inner.meta_gen = meta_gen;
            let topics = self.resolve_topics(&sub)?;
            if let Some(s) = inner.group.as_ref().and_then(|m| m.session.as_ref()) {
                s.set_topics(topics)?;
            }
        }
        let Some(m) = inner.group.as_mut() else {
            return Ok(());
        };
        let Some(session) = m.session.as_ref() else {
            return Ok(());
        };
        let mut revoke = Vec::new();
        let word = beacon.groups_gen();
        if word != m.seen {
            // Read the word before the file: a change after this read moves
            // the word again and is seen next time.
            m.seen = word;
            let st = session.dir().read_state()?;
            if st.member(session.member_id()).is_none() {
                // No longer listed (the state was cleared or damaged): the
                // partitions are not ours to keep. Rejoin next poll.
                let owned: Vec<TopicPartition> = inner.assignment.drain(..).map(|a| a.tp).collect();
                if let Some(m) = inner.group.as_mut() {
                    m.session = None;
                    m.lost.extend(owned);
                }
                return Ok(());
            }
            let target = st.assigned_to(session.member_id()).to_vec();
            let eager_new_generation =
                !self.config.assignor.is_cooperative() && st.generation != m.generation;
            m.generation = st.generation;
            revoke = inner
                .assignment
                .iter()
                .filter(|a| {
                    eager_new_generation
                        || !target.iter().any(|(t, p)| **t == *a.tp.0 && *p == a.tp.1)
                })
                .map(|a| a.tp.clone())
                .collect();
            if let Some(m) = inner.group.as_mut() {
                m.target = target;
            }
        }
        if !revoke.is_empty() {
            drop(inner);
            if let Some(l) = &listener {
                l.on_partitions_revoked(&revoke);
            }
            inner = self.inner.lock();
            self.finish_revoke(&mut inner, &revoke, true)?;
        }
        let acquired = self.acquire_pending(&mut inner)?;
        drop(inner);
        if let (false, Some(l)) = (acquired.is_empty(), &listener) {
            l.on_partitions_assigned(&acquired);
        }
        Ok(())
    }

    /// Lock the ownership byte of every assigned partition not yet owned;
    /// those whose previous owner still holds them stay pending.
    fn acquire_pending(&self, inner: &mut Inner) -> Result<Vec<TopicPartition>> {
        let Inner {
            group, assignment, ..
        } = inner;
        let Some(m) = group.as_mut() else {
            return Ok(Vec::new());
        };
        let Some(session) = m.session.as_mut() else {
            return Ok(Vec::new());
        };
        let mut acquired = Vec::new();
        let mut waiting = false;
        for (t, p) in &m.target {
            if assignment.iter().any(|a| *a.tp.0 == **t && a.tp.1 == *p) {
                continue;
            }
            let topic = match self.store.topic(t)? {
                Some(topic) if *p < topic.partitions => topic,
                // Assigned from newer metadata than this process has seen,
                // or deleted: look again later.
                _ => {
                    waiting = true;
                    continue;
                }
            };
            if !session.try_acquire(t, *p)? {
                waiting = true;
                continue;
            }
            let log = match self.store.partition(&topic, *p) {
                Ok(log) => log,
                Err(e) => {
                    session.release(t, *p)?;
                    return Err(e);
                }
            };
            let tp: TopicPartition = (topic.name.clone(), *p);
            acquired.push(tp.clone());
            assignment.push(Assigned {
                tp,
                log,
                position: None,
                paused: false,
                cursor: None,
                fetch: None,
            });
        }
        m.pending = waiting;
        m.retry_at = Instant::now() + RETRY;
        Ok(acquired)
    }

    /// Stop reading `partitions`: commit their positions (if auto-commit is
    /// on and `autocommit`), forget them, then unlock their ownership bytes
    /// and wake the members waiting for them. The commit comes first so the
    /// next owner, which can only start after the unlock, resumes from it.
    fn finish_revoke(
        &self,
        inner: &mut Inner,
        partitions: &[TopicPartition],
        autocommit: bool,
    ) -> Result<()> {
        let still: Vec<(String, u32, i64, String)> = inner
            .assignment
            .iter()
            .filter(|a| partitions.contains(&a.tp))
            .filter_map(|a| {
                a.position
                    .map(|p| (a.tp.0.to_string(), a.tp.1, p, String::new()))
            })
            .collect();
        let committed = if autocommit && self.config.enable_auto_commit && !still.is_empty() {
            self.commit_locked(inner, Some(&still))
        } else {
            Ok(())
        };
        let mut released = Vec::new();
        inner.assignment.retain(|a| {
            if partitions.contains(&a.tp) {
                released.push(a.tp.clone());
                false
            } else {
                true
            }
        });
        if let Some(session) = inner.group.as_mut().and_then(|m| m.session.as_mut()) {
            for (t, p) in &released {
                session.release(t, *p)?;
            }
        }
        if !released.is_empty() {
            self.store.beacon().bump_groups();
        }
        committed
    }

    /// Start the thread that watches this member's polling and the other
    /// members' liveness. It holds the consumer's state weakly and ends
    /// when the consumer is closed or dropped.
    fn ensure_watchdog(&self, dir: Arc<GroupDir>) {
        let mut started = self.watchdog.lock();
        if *started {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let polls = self.polls.clone();
        let closed = self.closed.clone();
        let timeout = Duration::from_millis(self.config.session_timeout_ms);
        let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
        let spawned = std::thread::Builder::new()
            .name("ottla-group".into())
            .spawn(move || {
                let mut watch = Watch {
                    inner,
                    polls,
                    dir,
                    timeout,
                    last_polls: u64::MAX,
                    progress_at: Instant::now(),
                    seen: u64::MAX,
                    tokens: Vec::new(),
                };
                while !closed.load(Ordering::Acquire) {
                    std::thread::sleep(tick);
                    if !watch.tick() {
                        return;
                    }
                }
            });
        // Without the thread, dead members are still pruned whenever anyone
        // updates the group; only the session timeout would be missing.
        *started = spawned.is_ok();
    }
    /// Manual assignment (no group membership), replacing any previous one.
    pub fn assign(&self, partitions: &[(String, u32)]) -> Result<()> {
        if self.inner.lock().group.is_some() {
            self.unsubscribe()?;
        }
        let mut assigned = Vec::with_capacity(partitions.len());
        let topics = partitions
            .iter()
            .map(|(t, p)| {
                let topic = self.store.topic_or_create(
                    t,
                    self.config.auto_create_topics,
                    self.config.num_partitions,
                )?;
                Ok((topic, *p))
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<(&Topic, u32)> = topics.iter().map(|(t, p)| (t, *p)).collect();
        self.store.open_many(&refs);
        for (topic, p) in &topics {
            let log = self.store.partition(topic, *p)?;
            assigned.push(Assigned {
                tp: (topic.name.clone(), *p),
                log,
                position: None,
                paused: false,
                cursor: None,
                fetch: None,
            });
        }
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        inner.subscription = None;
        // Keep positions of partitions that stay assigned.
        let old: HashMap<TopicPartition, Assigned> = inner
            .assignment
            .drain(..)
            .map(|a| (a.tp.clone(), a))
            .collect();
        let mut old = old;
        inner.assignment = assigned
            .into_iter()
            .map(|a| old.remove(&a.tp).unwrap_or(a))
            .collect();
        Ok(())
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner
            .lock()
            .assignment
            .iter()
            .map(|a| a.tp.clone())
            .collect()
    }

    /// Without a group: follow topic creation, pattern matches and
    /// partition growth of the subscription. (A group member does this in
    /// `group_step`, through the group.)
    fn refresh_subscription(&self, inner: &mut Inner) -> Result<()> {
        if inner.group.is_some() {
            return Ok(());
        }
        let Some(sub) = &inner.subscription else {
            return Ok(());
        };
        let gen = self.store.beacon().metadata_gen();
        if inner.meta_gen == gen {
            return Ok(());
        }
        let names = self.resolve_topics(sub)?;
        let mut want = Vec::new();
        for t in &names {
            let topic = match self.store.topic_or_create(
                t,
                self.config.auto_create_topics,
                self.config.num_partitions,
            ) {
                Ok(topic) => topic,
                Err(Error::UnknownTopicOrPartition { .. }) => continue,
                Err(e) => return Err(e),
            };
            for p in 0..topic.partitions {
                want.push((topic.clone(), p));
            }
        }
        let mut old: HashMap<TopicPartition, Assigned> = inner
            .assignment
            .drain(..)
            .map(|a| (a.tp.clone(), a))
            .collect();
        let mut next = Vec::with_capacity(want.len());
        let new_ones: Vec<(&Topic, u32)> = want
            .iter()
            .filter(|(t, p)| !old.contains_key(&(t.name.clone(), *p)))
            .map(|(t, p)| (t, *p))
            .collect();
        self.store.open_many(&new_ones);
        for (topic, p) in want {
            let key = (topic.name.clone(), p);
            match old.remove(&key) {
                Some(a) if !a.log.is_deleted() => next.push(a),
                _ => next.push(Assigned {
                    log: self.store.partition(&topic, p)?,
                    tp: key,
                    position: None,
                    paused: false,
                    cursor: None,
                    fetch: None,
                }),
            }
        }
        inner.assignment = next;
        inner.meta_gen = gen;
        Ok(())
    }

    fn find<'a>(inner: &'a mut Inner, tp: (&str, u32)) -> Result<&'a mut Assigned> {
        inner
            .assignment
            .iter_mut()
            .find(|a| &*a.tp.0 == tp.0 && a.tp.1 == tp.1)
            .ok_or_else(|| {
                Error::IllegalState(format!(
                    "{}-{} is not assigned to this consumer",
                    tp.0, tp.1
                ))
            })
    }

    /// Resolve a partition's starting position: the group's committed offset,
    /// else `auto_offset_reset`.
    fn resolve(&self, a: &mut Assigned) -> Result<i64> {
        if let Some(p) = a.position {
            return Ok(p);
        }
        if let Some(group) = &self.config.group_id {
            if let Some(c) = self.store.offsets()?.committed(group, &a.tp.0, a.tp.1)? {
                let (start, end) = a.log.offsets()?;
                if c.offset >= start && c.offset <= end {
                    a.position = Some(c.offset);
                    return Ok(c.offset);
                }
            }
        }
        let p = self.reset_position(a, None)?;
        Ok(p)
    }

    fn reset_position(&self, a: &mut Assigned, out_of_range: Option<Error>) -> Result<i64> {
        let (start, end) = a.log.offsets()?;
        let p = match self.config.auto_offset_reset {
            OffsetReset::Earliest => start,
            OffsetReset::Latest => end,
            OffsetReset::None => {
                return Err(out_of_range.unwrap_or_else(|| Error::NoOffsetForPartition {
                    topic: a.tp.0.to_string(),
                    partition: a.tp.1,
                }))
            }
        };
        a.position = Some(p);
        a.fetch = None;
        a.cursor = None;
        Ok(p)
    }

    /// Hand out up to `max` records to `f`, round-robin over partitions,
    /// without waiting. Returns how many were handed out.
    pub fn drain(
        &self,
        max: usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>),
    ) -> Result<usize> {
        self.drain_while(max, &mut |tp, rec| {
            f(tp, rec);
            true
        })
    }

    /// Like [`Consumer::drain`], but `f` may refuse a record (return
    /// false): the call then ends, and the refused record is not handed
    /// out: its partition's position stays on it, so the next call (or a
    /// commit) starts there. This is how a caller bounds a result by bytes
    /// or stops at an offset without losing a record.
    pub fn drain_while(
        &self,
        max: usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>) -> bool,
    ) -> Result<usize> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        // Moved with `inner` locked (see `next_in_batch`).
        self.polls
            .store(self.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.group_needs_attention(&inner) {
            drop(inner);
            self.group_step()?;
            inner = self.inner.lock();
            Self::check_open(&inner)?;
        }
        self.refresh_subscription(&mut inner)?;
        self.maybe_auto_commit(&mut inner)?;
        let n = inner.assignment.len();
        let mut count = 0;
        let start = inner.next_rr;
        for i in 0..n {
            if count >= max {
                break;
            }
            let idx = (start + i) % n;
            let a = &mut inner.assignment[idx];
            if a.paused {
                continue;
            }
            let refused = match self.drain_partition(a, max, &mut count, f) {
                Ok(refused) => refused,
                // Records already handed out in this call must reach the
                // caller (their positions have moved past them): the error
                // waits in the partition's fetch and is raised by the next
                // call, unless a seek or reassignment makes it moot.
                // The next call starts after the failing partition, so
                // one bad batch cannot starve the others.
                Err(e) if count > 0 => {
                    a.fetch = Some(Fetch::failed(e));
                    inner.next_rr = (idx + 1) % n;
                    return Ok(count);
                }
                Err(e) => {
                    inner.next_rr = (idx + 1) % n;
                    return Err(e);
                }
            };
            if count >= max || refused {
                // Fairness: resume with this partition next time only to
                // finish a batch it was reached in the middle of this call;
                // a partition that had the whole call hands over, so one
                // with a deep backlog (or a busy producer) cannot starve the
                // others. Its fetch is kept, so nothing is lost or re-read.
                let mid_batch = inner.assignment[idx]
                    .fetch
                    .as_ref()
                    .is_some_and(|f| f.header.is_some() && f.iter_state.1 > 0);
                inner.next_rr = if mid_batch && idx != start {
                    idx
                } else {
                    (idx + 1) % n
                };
                return Ok(count);
            }
        }
        inner.next_rr = (start + 1) % n.max(1);
        Ok(count)
    }

    /// The per-record path of iteration: hand `f` the next record when it
    /// is simply the next one of the batch that the partition whose turn it
    /// is stands in the middle of, and return what `f` returned. `Ok(None)`
    /// means "not that simple" (a batch or fetch boundary, group work, a
    /// changed subscription, a record to skip or a decoding error, nothing
    /// to read): nothing was handed out and no state moved, so the caller
    /// falls back to [`Consumer::drain`], which does all of that.
    ///
    /// Exactly equivalent to `drain(1, f)` when it hands a record out: the
    /// same record, the same position afterwards (the record's offset + 1,
    /// or the batch's end after its last record), and the same next
    /// partition in the round-robin. It only skips what `drain` would find
    /// there is nothing to do for (no refetch, no batch change).
    pub fn next_in_batch<R>(
        &self,
        f: impl FnOnce(&TopicPartition, &RecordView<'_>) -> R,
    ) -> Result<Option<R>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        Self::check_open(inner)?;
        // Moved with `inner` locked, so a plain load and store (no locked
        // read-modify-write) loses no step; and the watchdog only looks
        // for change, which a lost step could not hide.
        self.polls
            .store(self.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.group_needs_attention(inner) || !self.subscription_current(inner) {
            return Ok(None);
        }
        self.maybe_auto_commit(inner)?;
        let n = inner.assignment.len();
        let idx = inner.next_rr;
        let Some(a) = inner.assignment.get_mut(idx) else {
            return Ok(None);
        };
        let (false, Some(position), Some(fetch)) = (a.paused, a.position, a.fetch.as_mut()) else {
            return Ok(None);
        };
        // A batch being walked; control batches and batches already behind
        // the position are stepped over by `drain` with `iter_state.1 == 0`.
        let Some(h) = fetch.header.filter(|_| fetch.iter_state.1 > 0) else {
            return Ok(None);
        };
        let body = match &fetch.inflated {
            Some(inflated) => inflated.as_slice(),
            None => match fetch
                .data
                .get(fetch.batch_at + HEADER_LEN..fetch.batch_at + h.total_size())
            {
                Some(body) => body,
                None => return Ok(None),
            },
        };
        let mut it = RecordIter::resume(h, body, fetch.iter_state);
        let rec = match it.next() {
            Some(Ok(rec)) if rec.offset >= position => rec,
            // A record below the position (skipped by `drain`) or a
            // decoding error (raised by `drain`, after the same walk).
            _ => return Ok(None),
        };
        let out = f(&a.tp, &rec);
        let mut position = rec.offset + 1;
        fetch.iter_state = it.state();
        if fetch.iter_state.1 <= 0 {
            // Offsets may skip (compaction): the batch's end is authoritative.
            position = position.max(h.next_offset());
        }
        a.position = Some(position);
        // As `drain` leaves it after one record taken from the partition it
        // started at: the turn passes on.
        inner.next_rr = if idx + 1 < n { idx + 1 } else { 0 };
        Ok(Some(out))
    }

    /// Whether `refresh_subscription` has nothing to do.
    fn subscription_current(&self, inner: &Inner) -> bool {
        inner.group.is_some()
            || inner.subscription.is_none()
            || inner.meta_gen == self.store.beacon().metadata_gen()
    }

    /// Hand out records of one partition until `*count` (the call's total)
    /// reaches `max`. Returns whether `f` refused a record. On an error,
    /// `a.position` is the offset after the last record handed out.
    fn drain_partition(
        &self,
        a: &mut Assigned,
        max: usize,
        count: &mut usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>) -> bool,
    ) -> Result<bool> {
        let mut position = self.resolve(a)?;
        let mut refetched = false;
        while *count < max {
            if a.fetch.is_none() {
                if refetched {
                    break;
                }
                refetched = true;
                let fetched = match a.log.read(
                    position,
                    self.config.max_partition_fetch_bytes,
                    &mut a.cursor,
                    self.config.check_crcs,
                ) {
                    Ok(f) => f,
                    Err(e @ Error::OffsetOutOfRange { .. }) => {
                        position = self.reset_position(a, Some(e))?;
                        refetched = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if fetched.bytes.is_empty() {
                    if let Some(e) = fetched.error {
                        return Err(e);
                    }
                    break;
                }
                a.fetch = Some(Fetch {
                    data: fetched.bytes,
                    batch_at: 0,
                    header: None,
                    iter_state: (0, 0),
                    inflated: None,
                    error: fetched.error,
                });
            }
            let Some(fetch) = a.fetch.as_mut() else { break };
            // Move to the next batch when the current one is used up.
            if fetch.header.is_none() || fetch.iter_state.1 <= 0 {
                if let Some(h) = fetch.header.take() {
                    fetch.batch_at += h.total_size();
                }
                if fetch.batch_at + HEADER_LEN > fetch.data.len() {
                    let err = fetch.error.take();
                    a.fetch = None;
                    if let Some(e) = err {
                        // With records handed out, the caller defers it.
                        return Err(e);
                    }
                    continue;
                }
                let Some(h) = BatchHeader::parse(&fetch.data[fetch.batch_at..]) else {
                    a.fetch = None;
                    continue;
                };
                if h.is_control() || h.next_offset() <= position {
                    fetch.header = Some(h);
                    fetch.iter_state = (0, 0);
                    position = position.max(h.next_offset());
                    a.position = Some(position);
                    continue;
                }
                let end = fetch.batch_at + h.total_size();
                let Some(batch) = fetch.data.get(fetch.batch_at..end) else {
                    a.fetch = None;
                    continue;
                };
                fetch.inflated = inflate(&h, batch).map_err(|e| match Error::from(e) {
                    Error::InvalidRecord(why) => Error::InvalidRecord(format!(
                        "{}-{} batch at offset {}: {why}",
                        a.tp.0, a.tp.1, h.base_offset
                    )),
                    other => other,
                })?;
                fetch.header = Some(h);
                fetch.iter_state = (0, h.records_count);
            }
            let Some(h) = fetch.header else { continue };
            let batch = &fetch.data[fetch.batch_at..fetch.batch_at + h.total_size()];
            let body = match &fetch.inflated {
                Some(inflated) => inflated.as_slice(),
                None => &batch[HEADER_LEN..],
            };
            let mut it = RecordIter::resume(h, body, fetch.iter_state);
            while *count < max {
                let before = it.state();
                match it.next() {
                    None => break,
                    Some(Err(reason)) => {
                        fetch.iter_state = before;
                        a.position = Some(position);
                        return Err(Error::InvalidRecord(format!(
                            "{}-{} batch at offset {}: {reason}",
                            a.tp.0, a.tp.1, h.base_offset
                        )));
                    }
                    Some(Ok(rec)) => {
                        if rec.offset < position {
                            continue;
                        }
                        if !f(&a.tp, &rec) {
                            // Not handed out: the walk and the position stay on it.
                            fetch.iter_state = before;
                            a.position = Some(position);
                            return Ok(true);
                        }
                        position = rec.offset + 1;
                        *count += 1;
                    }
                }
            }
            fetch.iter_state = it.state();
            if fetch.iter_state.1 <= 0 {
                // Offsets may skip (compaction): the batch's end is authoritative.
                position = position.max(h.next_offset());
            }
            a.position = Some(position);
        }
        Ok(false)
    }

    /// True if any assigned, unpaused partition has records past its position.
    fn has_data(&self, inner: &mut Inner) -> Result<bool> {
        for a in inner.assignment.iter_mut() {
            if a.paused {
                continue;
            }
            if a.fetch.is_some() {
                return Ok(true);
            }
            let pos = self.resolve(a)?;
            let (start, end) = a.log.offsets()?;
            if pos < end || pos < start {
                return Ok(true);
            }
        }
        Ok(false)
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
                if self.group_needs_attention(&inner) {
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

    fn maybe_auto_commit(&self, inner: &mut Inner) -> Result<()> {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return Ok(());
        }
        // Asked on every drain, i.e. per record when iterating: a coarse
        // clock keeps this to a few nanoseconds.
        let now = coarse_ms();
        if now.saturating_sub(inner.last_commit) < self.config.auto_commit_interval_ms {
            return Ok(());
        }
        inner.last_commit = now;
        self.commit_locked(inner, None)
    }

    fn commit_locked(
        &self,
        inner: &mut Inner,
        explicit: Option<&[(String, u32, i64, String)]>,
    ) -> Result<()> {
        let Some(group) = &self.config.group_id else {
            return Err(Error::IllegalState("commit needs a group_id".into()));
        };
        if let (Some(o), true) = (explicit, inner.group.is_some()) {
            // A member commits only what it owns: a partition it lost may
            // already be read (and committed) by its new owner.
            for (t, p, _, _) in o {
                if !inner
                    .assignment
                    .iter()
                    .any(|a| *a.tp.0 == **t && a.tp.1 == *p)
                {
                    return Err(Error::IllegalState(format!(
                        "cannot commit {t}-{p}: not owned by this member of group {group:?} \
                         (it moved in a rebalance; commit in on_revoke)"
                    )));
                }
            }
        }
        let offsets: Vec<(String, u32, i64, String)> = match explicit {
            Some(o) => o.to_vec(),
            None => inner
                .assignment
                .iter()
                .filter_map(|a| {
                    a.position
                        .map(|p| (a.tp.0.to_string(), a.tp.1, p, String::new()))
                })
                .collect(),
        };
        let offsets_store = self.store.offsets()?;
        // Skip unchanged offsets: an idle consumer should not grow the topic.
        let mut changed = Vec::with_capacity(offsets.len());
        for o in offsets {
            let same = offsets_store
                .committed(group, &o.0, o.1)?
                .is_some_and(|c| c.offset == o.2 && c.metadata == o.3);
            if !same {
                changed.push(o);
            }
        }
        offsets_store.commit(group, &changed, Durability::PageCache)
    }

    /// Commit the current positions, or the given (topic, partition, offset, metadata).
    pub fn commit(&self, offsets: Option<&[(String, u32, i64, String)]>) -> Result<()> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        inner.last_commit = coarse_ms();
        self.commit_locked(&mut inner, offsets)
    }

    pub fn committed(&self, topic: &str, partition: u32) -> Result<Option<i64>> {
        let Some(group) = &self.config.group_id else {
            return Ok(None);
        };
        Ok(self
            .store
            .offsets()?
            .committed(group, topic, partition)?
            .map(|c| c.offset))
    }

    pub fn position(&self, topic: &str, partition: u32) -> Result<i64> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        let a = Self::find(&mut inner, (topic, partition))?;
        self.resolve(a)
    }

    pub fn seek(&self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::IllegalState(format!(
                "cannot seek to negative offset {offset}"
            )));
        }
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        let a = Self::find(&mut inner, (topic, partition))?;
        a.position = Some(offset);
        a.fetch = None;
        a.cursor = None;
        Ok(())
    }

    /// Seek the given partitions (all assigned if empty) to their start or end.
    pub fn seek_to(&self, partitions: &[(String, u32)], beginning: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        let targets: Vec<(String, u32)> = if partitions.is_empty() {
            inner
                .assignment
                .iter()
                .map(|a| (a.tp.0.to_string(), a.tp.1))
                .collect()
        } else {
            partitions.to_vec()
        };
        for (t, p) in targets {
            let a = Self::find(&mut inner, (&t, p))?;
            let (start, end) = a.log.offsets()?;
            a.position = Some(if beginning { start } else { end });
            a.fetch = None;
            a.cursor = None;
        }
        Ok(())
    }

    pub fn set_paused(&self, partitions: &[(String, u32)], paused: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        for (t, p) in partitions {
            Self::find(&mut inner, (t, *p))?.paused = paused;
        }
        Ok(())
    }

    pub fn paused(&self) -> Vec<TopicPartition> {
        self.inner
            .lock()
            .assignment
            .iter()
            .filter(|a| a.paused)
            .map(|a| a.tp.clone())
            .collect()
    }

    /// (log start, log end) of any partition in the directory.
    pub fn watermarks(&self, topic: &str, partition: u32) -> Result<(i64, i64)> {
        self.store.partition_by_name(topic, partition)?.offsets()
    }

    pub fn offset_for_time(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<(i64, i64)>> {
        self.store
            .partition_by_name(topic, partition)?
            .offset_for_time(ts)
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

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: the kernel's last tick, read
/// from the vDSO without reading the TSC (`Instant::now()` cost ~20 ns per
/// call on the VM this was measured on), to a few milliseconds' resolution,
/// which is plenty for an auto-commit interval.
fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; this clock id cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// The group watchdog's view, on its own thread.
struct Watch {
    inner: Weak<Mutex<Inner>>,
    polls: Arc<AtomicU64>,
    dir: Arc<GroupDir>,
    timeout: Duration,
    last_polls: u64,
    progress_at: Instant,
    seen: u64,
    tokens: Vec<String>,
}

impl Watch {
    /// One look: has our application stopped polling, and has another
    /// member died? False once the consumer is gone.
    fn tick(&mut self) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let now = Instant::now();
        let polls = self.polls.load(Ordering::Relaxed);
        if polls != self.last_polls {
            self.last_polls = polls;
            self.progress_at = now;
        } else if now.duration_since(self.progress_at) > self.timeout && expire(&inner) {
            self.progress_at = now;
        }
        drop(inner);
        // A dead member's partitions are free the moment it dies (the
        // kernel dropped its locks); pruning it lets the group reassign them.
        let word = self.dir.store().beacon().groups_gen();
        if word != self.seen {
            if let Ok(st) = self.dir.read_state() {
                self.seen = word;
                self.tokens = st.members.into_iter().map(|m| m.token).collect();
            }
        }
        if self
            .tokens
            .iter()
            .any(|t| matches!(self.dir.member_alive(t), Ok(false)))
        {
            // Errors are retried next tick.
            let _ = self.dir.update(|_| Ok(()));
        }
        true
    }
}

/// The application missed its session timeout: give up every partition and
/// leave, as a dead member would, so live members take over. The next poll
/// reports them lost and rejoins. False if the consumer is busy (inside a
/// drain, so polling after all): try again next tick.
fn expire(inner: &Mutex<Inner>) -> bool {
    let Some(mut guard) = inner.try_lock_for(Duration::from_millis(10)) else {
        return false;
    };
    let g = &mut *guard;
    let Some(m) = g.group.as_mut() else {
        return true;
    };
    let Some(session) = m.session.take() else {
        return true;
    };
    // Removing them from the assignment first means no record of theirs is
    // handed out from here on; the locks go with the session below.
    m.lost.extend(g.assignment.drain(..).map(|a| a.tp));
    m.pending = false;
    m.target.clear();
    m.generation = -1;
    drop(guard);
    let _ = session.leave();
    true
}
