//! The producer: batching records per partition in memory (the record
//! accumulator), and appending whole batches to the partition logs.
//!
//! `send` encodes the record straight into the open batch of its partition
//! (no per-record allocation) and returns a handle to that batch. A batch is
//! appended when it reaches `batch_size`, when it is `linger_ms` old (the
//! linger thread), on `flush`, or when someone waits on one of its records.
//! A record is acknowledged (its handle resolved) only after the log has
//! published it, so an acknowledged record survives `kill -9`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::partitioner::partition_for_key;
use ottla_record::batch::{BatchBuilder, FillStop, HeaderRef, HEADER_LEN};
use ottla_record::single::SingleRecordBatch;
use ottla_record::varint::varlong_len;
use ottla_storage::error::{Error, Result};
use ottla_storage::log::{now_ms, Durability, PartitionLog};
use ottla_storage::store::{Store, Topic};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    Never,
    Interval(u64),
    Always,
}

#[derive(Clone, Debug)]
pub struct ProducerConfig {
    pub linger_ms: u64,
    pub batch_size: usize,
    pub fsync: FsyncPolicy,
    pub auto_create_topics: bool,
    pub num_partitions: u32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger_ms: 5,
            batch_size: 256 * 1024,
            fsync: FsyncPolicy::Never,
            auto_create_topics: true,
            num_partitions: 1,
        }
    }
}

pub type Callback = Box<dyn FnOnce(&std::result::Result<i64, Arc<Error>>) + Send>;

/// One batch's fate, shared by the futures of all its records.
pub struct BatchHandle {
    pub topic: Arc<str>,
    pub partition: u32,
    done: OnceLock<std::result::Result<i64, Arc<Error>>>,
    lock: Mutex<Vec<Callback>>,
    cv: Condvar,
    /// The partition's fence, lifted through this handle once its error
    /// reaches the caller (weak: a raised fence holds a handle).
    fence: Weak<PartitionFence>,
}

impl BatchHandle {
    fn new(topic: Arc<str>, partition: u32, fence: &Arc<PartitionFence>) -> Arc<BatchHandle> {
        Arc::new(BatchHandle {
            topic,
            partition,
            done: OnceLock::new(),
            lock: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            fence: Arc::downgrade(fence),
        })
    }

    /// The caller has been handed this batch's error (a future raised or
    /// returned it): if it is the error that fenced the partition, sends to
    /// the partition are appended again. See [`PartitionFence`].
    pub fn error_delivered(&self) {
        if let Some(Err(e)) = self.done.get() {
            if let Some(f) = self.fence.upgrade() {
                f.lift(Some(e));
            }
        }
    }

    fn same_partition(&self, other: &BatchHandle) -> bool {
        Weak::ptr_eq(&self.fence, &other.fence)
    }

    /// Base offset of the batch once appended, or the error that lost it.
    pub fn result(&self) -> Option<&std::result::Result<i64, Arc<Error>>> {
        self.done.get()
    }

    pub fn is_done(&self) -> bool {
        self.done.get().is_some()
    }

    fn complete(&self, r: std::result::Result<i64, Arc<Error>>) -> Vec<Callback> {
        let mut cbs = self.lock.lock();
        let _ = self.done.set(r);
        self.cv.notify_all();
        std::mem::take(&mut *cbs)
    }

    /// Wait for the batch; false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock.lock();
        while self.done.get().is_none() {
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut g, d).timed_out() {
                        return self.done.get().is_some();
                    }
                }
                None => self.cv.wait(&mut g),
            }
        }
        true
    }

    /// Run `cb` when the batch completes (now, if it has).
    pub fn on_complete(&self, cb: Callback) {
        let mut g = self.lock.lock();
        if let Some(r) = self.done.get() {
            drop(g);
            cb(r);
        } else {
            g.push(cb);
        }
    }
}

/// Consecutive records of one `send_many` that went into one batch.
pub struct SendRun {
    pub batch: Arc<BatchHandle>,
    pub first_index: u32,
    pub count: u32,
}

/// Where a sent record went: its batch and its place in it.
pub struct SendReceipt {
    pub batch: Arc<BatchHandle>,
    pub index: u32,
    pub timestamp: i64,
}

/// A partition's fence: the contract that a partition's log holds a prefix
/// of the records this producer sent to it, up to the first failed append
/// the caller has not been told about (Kafka's idempotent producer keeps
/// the same order).
///
/// When appending a batch of the partition fails, the fence is raised with
/// the error before the batch's handle completes (so a waiter that sees the
/// error can lift it), and every other batch of the partition, open or
/// sealed, fails with the same error. While it is up, records sent to the
/// partition fail at once with that error (their handle is `Fenced::handle`,
/// complete from the start), so nothing queued behind the lost records can
/// take their offsets. It is lifted when the caller has been told:
/// [`BatchHandle::error_delivered`] with the fencing error (the same `Arc`,
/// so an older failure's future cannot lift a newer fence), or
/// [`Producer::take_failure`] (a flush that raises).
///
/// Raised only under the accumulator lock and the append-order lock, and
/// read by senders under the accumulator lock, once per new batch (`up`),
/// never per record.
#[derive(Default)]
pub struct PartitionFence {
    up: AtomicBool,
    fenced: Mutex<Option<Fenced>>,
}

struct Fenced {
    error: Arc<Error>,
    /// Failed from the start: the handle of every record sent while fenced.
    handle: Arc<BatchHandle>,
    next_index: u32,
}

impl PartitionFence {
    #[inline]
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Raise the fence with `error` (keeping an earlier undelivered one).
    fn raise(self: &Arc<Self>, error: &Arc<Error>, topic: &Arc<str>, partition: u32) {
        let mut g = self.fenced.lock();
        if g.is_none() {
            let handle = BatchHandle::new(topic.clone(), partition, self);
            let _ = handle.done.set(Err(error.clone()));
            *g = Some(Fenced {
                error: error.clone(),
                handle,
                next_index: 0,
            });
            self.up.store(true, Ordering::Release);
        }
    }

    /// Lift the fence if `delivered` is its error (any error if None);
    /// returns the error it held.
    fn lift(&self, delivered: Option<&Arc<Error>>) -> Option<Arc<Error>> {
        if !self.is_up() {
            return None;
        }
        let mut g = self.fenced.lock();
        let matches = g
            .as_ref()
            .is_some_and(|f| delivered.map_or(true, |e| Arc::ptr_eq(&f.error, e)));
        if !matches {
            return None;
        }
        self.up.store(false, Ordering::Release);
        g.take().map(|f| f.error)
    }

    /// Give one record sent while the fence is up the fence's failed
    /// handle; false if the fence was lifted meanwhile. Out of line: the
    /// send path only pays the `is_up` test.
    #[cold]
    #[inline(never)]
    fn place_fenced(&self, placed: &mut dyn FnMut(&Arc<BatchHandle>, u32)) -> bool {
        match self.fenced_records(1) {
            Some((h, index)) => {
                placed(&h, index);
                true
            }
            None => false,
        }
    }

    /// The failed handle and first index for `count` records sent while
    /// the fence is up, or None if it was lifted meanwhile.
    fn fenced_records(&self, count: usize) -> Option<(Arc<BatchHandle>, u32)> {
        let mut g = self.fenced.lock();
        let f = g.as_mut()?;
        let first = f.next_index;
        f.next_index = first.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        Some((f.handle.clone(), first))
    }
}

struct OpenBatch {
    log: Arc<PartitionLog>,
    builder: BatchBuilder,
    handle: Arc<BatchHandle>,
    created: Instant,
}

struct TopicState {
    topic: Topic,
    batches: Vec<Option<OpenBatch>>,
    /// One per partition, as `batches`.
    fences: Vec<Arc<PartitionFence>>,
    sticky: u32,
    meta_gen: u64,
}

/// FxHash-style multiply-rotate hashing for the topic map: `send()` looks
/// a topic up on every call, and SipHash's DoS resistance buys nothing for
/// names the application itself passes.
#[derive(Default)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        for b in chunks.remainder() {
            self.add(*b as u64);
        }
    }
}

impl FastHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Topic name -> index into `Topics::states`: one hash lookup per send,
/// and the state is reached by index, which the borrow checker allows.
#[derive(Default)]
struct Topics {
    index: HashMap<Arc<str>, usize, std::hash::BuildHasherDefault<FastHasher>>,
    states: Vec<TopicState>,
    /// The state index of the topic looked up last: a loop sending to one
    /// topic pays a string compare instead of a hash lookup.
    last: usize,
}

impl Topics {
    /// Take the open batch of `topic`-`partition` out of its slot, if it is
    /// the one `wanted` picks.
    fn take_open(
        &mut self,
        topic: &str,
        partition: u32,
        wanted: impl Fn(&OpenBatch) -> bool,
    ) -> Option<OpenBatch> {
        let i = *self.index.get(topic)?;
        let slot = self
            .states
            .get_mut(i)?
            .batches
            .get_mut(partition as usize)?;
        if slot.as_ref().is_some_and(wanted) {
            slot.take()
        } else {
            None
        }
    }
}

/// Record timestamps without a clock read per record: the wall clock is
/// re-read whenever more than 2^15 TSC ticks (about 10 µs) have passed, so a
/// timestamp is never more than that behind, far inside its 1 ms resolution.
#[derive(Default)]
struct RecordClock {
    tsc: u64,
    ms: i64,
}

impl RecordClock {
    #[inline]
    fn now_ms(&mut self) -> i64 {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: RDTSC has no preconditions on x86_64.
            #[allow(unused_unsafe)]
            let t = unsafe { core::arch::x86_64::_rdtsc() };
            if self.ms != 0 && t.wrapping_sub(self.tsc) < 1 << 15 {
                return self.ms;
            }
            self.tsc = t;
        }
        self.ms = now_ms();
        self.ms
    }
}

struct Inner {
    topics: Topics,
    clock: RecordClock,
    open_batches: usize,
    /// Sealed batches in the order they must be appended.
    ready: Vec<OpenBatch>,
    closed: bool,
}

pub struct Producer {
    store: Arc<Store>,
    config: ProducerConfig,
    inner: Mutex<Inner>,
    linger_cv: Condvar,
    linger_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Buffers of appended batches, reused for new ones (at most
    /// [`SPARE_BUFFERS`] of any size up to [`SPARE_BUFFER_MAX`] bytes, or
    /// [`SPARE_BUFFERS_MAX`] small ones: see [`SPARE_BYTES`]).
    spare: Mutex<Vec<Vec<u8>>>,
    /// Held while sealed batches are taken from `inner.ready` and appended,
    /// so batches reach the log in the order they were sealed while the
    /// accumulator itself stays free for `send()` during the I/O.
    append_order: Mutex<()>,
}

/// How many appended batches' buffers a producer keeps for reuse, of any
/// size up to [`SPARE_BUFFER_MAX`].
const SPARE_BUFFERS: usize = 4;
/// More buffers are kept, up to this many, while all kept ones total at most
/// [`SPARE_BYTES`] (twelve default 256 KiB batches: the bulk path's sealed
/// batches in flight, plus the ones being filled).
const SPARE_BUFFERS_MAX: usize = 12;
const SPARE_BYTES: usize = 12 * (256 << 10) + (64 << 10);
/// Smallest value [`Producer::send_direct`] writes from the caller's buffer.
pub const DIRECT_VALUE_MIN: usize = 64 * 1024;
/// Larger buffers (huge records) are freed rather than kept.
const SPARE_BUFFER_MAX: usize = 16 << 20;

/// A partition whose append failed during one run of appends: a failed
/// batch of it, and the error.
type FailedPartition = (Arc<BatchHandle>, Arc<Error>);

/// Callbacks of completed batches, run after the accumulator is unlocked.
#[must_use]
pub struct Completions(Vec<Callback>, Arc<BatchHandle>, Option<Arc<Error>>);

impl Producer {
    pub fn new(store: Arc<Store>, config: ProducerConfig) -> Result<Arc<Producer>> {
        if config.batch_size == 0 {
            return Err(Error::InvalidConfig("batch_size must be positive".into()));
        }
        if config.num_partitions == 0 {
            return Err(Error::InvalidConfig(
                "num_partitions must be positive".into(),
            ));
        }
        if let FsyncPolicy::Interval(ms) = config.fsync {
            store.ensure_flusher(ms);
        }
        let p = Arc::new(Producer {
            store,
            config,
            inner: Mutex::new(Inner {
                topics: Topics::default(),
                clock: RecordClock::default(),
                open_batches: 0,
                ready: Vec::new(),
                closed: false,
            }),
            linger_cv: Condvar::new(),
            linger_thread: Mutex::new(None),
            spare: Mutex::new(Vec::new()),
            append_order: Mutex::new(()),
        });
        let weak = Arc::downgrade(&p);
        let handle = std::thread::Builder::new()
            .name("ottla-linger".into())
            .spawn(move || linger_loop(weak))
            .map_err(|e| Error::IllegalState(format!("cannot start linger thread: {e}")))?;
        *p.linger_thread.lock() = Some(handle);
        Ok(p)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    fn durability(&self) -> Durability {
        match self.config.fsync {
            FsyncPolicy::Always => Durability::Fsync,
            _ => Durability::PageCache,
        }
    }

    fn topic_state_in<'a>(
        &self,
        topics: &'a mut Topics,
        topic: &str,
    ) -> Result<&'a mut TopicState> {
        let gen = self.store.beacon().metadata_gen();
        let last = topics.last;
        if topics
            .states
            .get(last)
            .is_some_and(|s| s.meta_gen == gen && *s.topic.name == *topic)
        {
            return Ok(&mut topics.states[last]);
        }
        let found = topics.index.get(topic).copied();
        if let Some(i) = found {
            if topics.states[i].meta_gen == gen {
                topics.last = i;
                return Ok(&mut topics.states[i]);
            }
        }
        let t = self.store.topic_or_create(
            topic,
            self.config.auto_create_topics,
            self.config.num_partitions,
        )?;
        let n = t.partitions as usize;
        let i = match found {
            Some(i) => {
                let ts = &mut topics.states[i];
                ts.batches.resize_with(n.max(ts.batches.len()), || None);
                ts.fences
                    .resize_with(n.max(ts.fences.len()), Default::default);
                ts.topic = t;
                ts.meta_gen = gen;
                i
            }
            None => {
                let sticky = (now_ms() as u32) % t.partitions;
                topics.index.insert(t.name.clone(), topics.states.len());
                topics.states.push(TopicState {
                    batches: (0..n).map(|_| None).collect(),
                    fences: (0..n).map(|_| Default::default()).collect(),
                    topic: t,
                    sticky,
                    meta_gen: gen,
                });
                topics.states.len() - 1
            }
        };
        topics.last = i;
        Ok(&mut topics.states[i])
    }

    /// Add one record to its partition's open batch. The returned flag says
    /// that a batch is sealed and waiting: call [`Producer::flush_ready`]
    /// (it appends to the log: call it where blocking on a disk write is
    /// acceptable, without locks other threads need).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        partition: Option<u32>,
        timestamp: Option<i64>,
    ) -> Result<(SendReceipt, bool)> {
        let mut inner = self.inner.lock();
        let mut receipt = None;
        let ts = self.place(
            &mut inner,
            topic,
            key,
            value,
            headers,
            partition,
            timestamp,
            &mut |h, i| receipt = Some((h.clone(), i)),
        )?;
        let (batch, index) =
            receipt.ok_or_else(|| Error::IllegalState("record not placed".into()))?;
        let receipt = SendReceipt {
            batch,
            index,
            timestamp: ts,
        };
        Ok((receipt, !inner.ready.is_empty()))
    }

    /// Send many records to one topic under one lock acquisition. Records
    /// without an explicit `timestamp` share the call's timestamp. Returns
    /// the runs of records that landed in the same batch (no per-record
    /// handle), the timestamp used, and whether batches were sealed.
    pub fn send_many<'a>(
        &self,
        topic: &str,
        records: impl Iterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>,
        partition: Option<u32>,
        timestamp: Option<i64>,
    ) -> Result<(Vec<SendRun>, i64, bool)> {
        let mut inner = self.inner.lock();
        let ts = match timestamp {
            Some(t) => t,
            None => inner.clock.now_ms(),
        };
        let mut runs: Vec<SendRun> = Vec::new();
        for (key, value) in records {
            self.place(
                &mut inner,
                topic,
                key,
                value,
                &[],
                partition,
                Some(ts),
                &mut |h, i| match runs.last_mut() {
                    Some(r) if Arc::ptr_eq(&r.batch, h) && r.first_index + r.count == i => {
                        r.count += 1
                    }
                    _ => runs.push(SendRun {
                        batch: h.clone(),
                        first_index: i,
                        count: 1,
                    }),
                },
            )?;
        }
        Ok((runs, ts, !inner.ready.is_empty()))
    }

    /// Send key-less values to one topic, all with `timestamp`, a batch at a
    /// time: the topic is looked up and the partition chosen once per batch
    /// rather than per record, and [`BatchBuilder::append_values`] encodes
    /// each run in one pass. Partitioning is `send_many`'s for key-less
    /// records: `partition` if given, else the sticky partition, which moves
    /// on whenever a batch is sealed. Returns the runs of records per batch
    /// and whether batches were sealed. On error (a record over the size
    /// limit) the records before it stay queued, as with `send_many`.
    pub fn send_values(
        &self,
        topic: &str,
        values: &[Option<&[u8]>],
        partition: Option<u32>,
        timestamp: i64,
    ) -> Result<(Vec<SendRun>, bool)> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(Error::Closed("producer"));
        }
        let was_open = inner.open_batches;
        let Inner {
            topics,
            open_batches,
            ready,
            ..
        } = &mut *inner;
        let state = self.topic_state_in(topics, topic)?;
        let n = state.topic.partitions;
        if let Some(p) = partition.filter(|p| *p >= n) {
            return Err(Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition: p as i64,
            });
        }
        let max_bytes = state.topic.config.max_message_bytes;
        let limit = self.config.batch_size.min(max_bytes);
        let mut runs: Vec<SendRun> = Vec::new();
        let mut done = 0;
        let mut result = Ok(());
        while done < values.len() {
            let p = partition.unwrap_or(state.sticky % n);
            let slot = &mut state.batches[p as usize];
            if slot.is_none() {
                let fence = &state.fences[p as usize];
                if fence.is_up() {
                    // The rest of the call fails with the partition's error.
                    if let Some((h, first_index)) = fence.fenced_records(values.len() - done) {
                        runs.push(SendRun {
                            batch: h,
                            first_index,
                            count: (values.len() - done) as u32,
                        });
                        if partition.is_none() {
                            state.sticky = (state.sticky + 1) % n;
                        }
                        break;
                    }
                }
                let log = self.store.partition(&state.topic, p)?;
                *slot = Some(OpenBatch {
                    log,
                    builder: self.new_builder(limit + 64),
                    handle: BatchHandle::new(state.topic.name.clone(), p, fence),
                    created: Instant::now(),
                });
                *open_batches += 1;
            }
            let Some(b) = slot.as_mut() else {
                return Err(Error::IllegalState("open batch vanished".into()));
            };
            let first_index = b.builder.count();
            let (k, stop) = b
                .builder
                .append_values(timestamp, &values[done..], limit, max_bytes);
            if k > 0 {
                runs.push(SendRun {
                    batch: b.handle.clone(),
                    first_index,
                    count: k as u32,
                });
            }
            done += k;
            match stop {
                None => {}
                Some(FillStop::Full) => {
                    if let Some(b) = slot.take() {
                        ready.push(b);
                        *open_batches -= 1;
                    }
                    if partition.is_none() {
                        state.sticky = (state.sticky + 1) % n;
                    }
                }
                Some(FillStop::TooLarge { size }) => {
                    result = Err(Error::RecordTooLarge {
                        size,
                        max: max_bytes,
                    });
                    break;
                }
            }
        }
        if was_open == 0 && *open_batches > 0 {
            self.linger_cv.notify_one();
        }
        result.map(|()| (runs, !ready.is_empty()))
    }

    /// Encode one record into its partition's open batch; `placed` learns
    /// the batch and the record's index in it. Returns the timestamp used.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        inner: &mut Inner,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        partition: Option<u32>,
        timestamp: Option<i64>,
        placed: &mut dyn FnMut(&Arc<BatchHandle>, u32),
    ) -> Result<i64> {
        if inner.closed {
            return Err(Error::Closed("producer"));
        }
        let batch_size = self.config.batch_size;
        let ts = match timestamp {
            Some(t) => t,
            None => inner.clock.now_ms(),
        };
        let was_open = inner.open_batches;
        let Inner {
            topics,
            open_batches,
            ready,
            ..
        } = inner;
        let state = self.topic_state_in(topics, topic)?;
        let n = state.topic.partitions;
        let max_bytes = state.topic.config.max_message_bytes;
        let (body_alone, rec_size) = record_size(key, value, headers, max_bytes)?;
        let sticky = partition.is_none() && key.is_none();
        let mut p = pick_partition(topic, partition, key, n, state.sticky)?;
        // Seal the open batch first if this record would overflow it.
        let limit = batch_size.min(max_bytes);
        // Exact size in the open batch (its deltas may be wider than the
        // zero deltas `rec_size` assumed), so a batch never passes `limit`.
        let overflows = |slot: &Option<OpenBatch>| {
            slot.as_ref().is_some_and(|b| {
                !b.builder.is_empty()
                    && b.builder.size_in_bytes() + b.builder.size_here(ts, body_alone) > limit
            })
        };
        if overflows(&state.batches[p as usize]) {
            if let Some(b) = state.batches[p as usize].take() {
                ready.push(b);
                *open_batches -= 1;
                if sticky {
                    state.sticky = (state.sticky + 1) % n;
                    p = state.sticky;
                    // The next partition may hold an open batch (from keyed
                    // or explicit-partition sends) with no room either.
                    if overflows(&state.batches[p as usize]) {
                        if let Some(b) = state.batches[p as usize].take() {
                            ready.push(b);
                            *open_batches -= 1;
                        }
                    }
                }
            }
        }
        let slot = &mut state.batches[p as usize];
        if slot.is_none() {
            let fence = &state.fences[p as usize];
            if fence.is_up() && fence.place_fenced(placed) {
                if sticky {
                    state.sticky = (state.sticky + 1) % n;
                }
                return Ok(ts);
            }
            let log = self.store.partition(&state.topic, p)?;
            *slot = Some(OpenBatch {
                log,
                builder: self.new_builder(limit + rec_size),
                handle: BatchHandle::new(state.topic.name.clone(), p, fence),
                created: Instant::now(),
            });
            *open_batches += 1;
        }
        let Some(b) = slot.as_mut() else {
            return Err(Error::IllegalState("open batch vanished".into()));
        };
        let index = b.builder.append_sized(ts, key, value, headers, body_alone);
        placed(&b.handle, index);
        if b.builder.size_in_bytes() >= batch_size {
            if let Some(b) = slot.take() {
                ready.push(b);
                *open_batches -= 1;
                if sticky {
                    state.sticky = (state.sticky + 1) % n;
                }
            }
        }
        if was_open == 0 && *open_batches > 0 {
            self.linger_cv.notify_one();
        }
        Ok(ts)
    }

    /// Whether [`Producer::send_direct`] takes a value of `value_len` bytes:
    /// one large enough to fill a batch by itself, which `send` would seal
    /// and append alone anyway, and large enough that the copy into a batch
    /// buffer costs more than the extra bookkeeping.
    pub fn sends_direct(&self, value_len: usize) -> bool {
        value_len >= DIRECT_VALUE_MIN && value_len >= self.config.batch_size
    }

    /// Send one large record as a batch of its own, appended now, with the
    /// value written from the caller's buffer (`pwritev`; no copy into a
    /// batch buffer). Batches sealed before it, including its partition's
    /// open one, are appended first, so records keep their send order.
    ///
    /// Errors about the record itself (size, partition, a closed producer)
    /// are returned; an append that fails is reported through the receipt's
    /// handle, as for `send`. The completions of every batch appended come
    /// back for the caller to run. The caller must keep `value` unchanged
    /// until this returns: it is written to the log from the caller's buffer,
    /// not copied (so only an immutable buffer is safe to pass).
    #[allow(clippy::too_many_arguments)]
    pub fn send_direct(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[HeaderRef<'_>],
        partition: Option<u32>,
        timestamp: Option<i64>,
    ) -> Result<(SendReceipt, Vec<Completions>)> {
        let _order = self.append_order.lock();
        let (log, handle, ts, sealed) = {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Err(Error::Closed("producer"));
            }
            let ts = match timestamp {
                Some(t) => t,
                None => inner.clock.now_ms(),
            };
            let Inner {
                topics,
                open_batches,
                ready,
                ..
            } = &mut *inner;
            let state = self.topic_state_in(topics, topic)?;
            let n = state.topic.partitions;
            let max_bytes = state.topic.config.max_message_bytes;
            record_size(key, Some(value), headers, max_bytes)?;
            let sticky = partition.is_none() && key.is_none();
            let p = pick_partition(topic, partition, key, n, state.sticky)?;
            let log = self.store.partition(&state.topic, p)?;
            // Records sent to this partition before this one go first.
            if let Some(b) = state.batches[p as usize].take() {
                ready.push(b);
                *open_batches -= 1;
            }
            if sticky {
                // As `send` does once a batch is full.
                state.sticky = (state.sticky + 1) % n;
            }
            let fence = &state.fences[p as usize];
            let fenced = if fence.is_up() {
                fence.fenced_records(1)
            } else {
                None
            };
            let handle = match &fenced {
                Some((h, _)) => h.clone(),
                None => BatchHandle::new(state.topic.name.clone(), p, fence),
            };
            (log, handle, ts, std::mem::take(ready))
        };
        let durability = self.durability();
        let (mut done, failed) = self.append_run(sealed, durability);
        if handle.is_done() {
            // Fenced: the record fails with its partition's error.
            let receipt = SendReceipt {
                batch: handle,
                index: 0,
                timestamp: ts,
            };
            return Ok((receipt, done));
        }
        if let Some((_, e)) = failed.iter().find(|(h, _)| h.same_partition(&handle)) {
            // A batch ahead of it in its partition failed just now.
            let e = e.clone();
            let cbs = handle.complete(Err(e.clone()));
            done.push(Completions(cbs, handle.clone(), Some(e)));
            let receipt = SendReceipt {
                batch: handle,
                index: 0,
                timestamp: ts,
            };
            return Ok((receipt, done));
        }
        // With fsync, the CRC is computed while the disk writes the value
        // back (see `PartitionLog::append_parts`), off the critical path.
        let (mut batch, seal) = if durability == Durability::Fsync {
            let seal: ottla_storage::log::partition::SealFn = SingleRecordBatch::seal_first_part;
            (
                SingleRecordBatch::new_unsealed(ts, key, value, headers),
                Some(seal),
            )
        } else {
            (SingleRecordBatch::new(ts, key, value, headers), None)
        };
        let (first, rest) = batch.parts_mut();
        let r = log
            .append_parts(first, &rest, durability, seal)
            .map(|info| info.base_offset)
            .map_err(Arc::new);
        let err = r.as_ref().err().cloned();
        if let Some(e) = &err {
            done.extend(self.fence_after(&handle, e));
        }
        let cbs = handle.complete(r);
        done.push(Completions(cbs, handle.clone(), err));
        let receipt = SendReceipt {
            batch: handle,
            index: 0,
            timestamp: ts,
        };
        Ok((receipt, done))
    }

    /// Have the linger thread append the sealed batches while the caller
    /// goes on encoding (the bulk `send_many` path: encoding and the
    /// `pwrite` copy into the page cache then run on two cores instead of
    /// one after the other). Returns false, handing nothing off, when more
    /// than `max_ready` sealed batches are already waiting: the caller must
    /// then append them itself ([`Producer::flush_ready`]), which bounds the
    /// memory sealed batches hold. Acknowledgement is unchanged: a record's
    /// handle resolves only once its batch is in the log.
    pub fn append_in_background(&self, max_ready: usize) -> bool {
        let inner = self.inner.lock();
        if inner.ready.len() > max_ready {
            return false;
        }
        if !inner.ready.is_empty() {
            self.linger_cv.notify_one();
        }
        true
    }

    /// A builder for a new batch, on a recycled buffer if one is spare.
    fn new_builder(&self, capacity: usize) -> BatchBuilder {
        match self.spare.lock().pop() {
            Some(buf) => BatchBuilder::with_buffer(buf, capacity),
            None => BatchBuilder::with_capacity(capacity),
        }
    }

    /// Append sealed batches in order (the caller holds `append_order`).
    /// After a batch of a partition fails, the run's later batches of that
    /// partition fail with the same error, unappended (see
    /// [`PartitionFence`]); returns the completions and, per partition that
    /// failed, a failed handle and its error.
    fn append_run(
        &self,
        batches: Vec<OpenBatch>,
        durability: Durability,
    ) -> (Vec<Completions>, Vec<FailedPartition>) {
        let mut done = Vec::with_capacity(batches.len());
        let mut failed: Vec<FailedPartition> = Vec::new();
        for mut b in batches {
            if !failed.is_empty() {
                if let Some((_, e)) = failed.iter().find(|(h, _)| h.same_partition(&b.handle)) {
                    let e = e.clone();
                    done.push(self.fail_batch(b, e));
                    continue;
                }
            }
            let r = b
                .log
                .append(b.builder.finish_mut(), durability)
                .map(|info| info.base_offset)
                .map_err(Arc::new);
            if let Err(e) = &r {
                // Fence before completing: a waiter that sees the error may
                // lift the fence at once.
                done.extend(self.fence_after(&b.handle, e));
                failed.push((b.handle.clone(), e.clone()));
            }
            done.push(self.complete_batch(b, r));
        }
        (done, failed)
    }

    /// Appending a batch of `failed`'s partition failed with `error`: raise
    /// the partition's fence and fail its open and sealed batches (every
    /// one is behind the failed batch: appends go in order).
    fn fence_after(&self, failed: &BatchHandle, error: &Arc<Error>) -> Vec<Completions> {
        let mut behind = Vec::new();
        {
            let mut inner = self.inner.lock();
            let Inner {
                topics,
                open_batches,
                ready,
                ..
            } = &mut *inner;
            if let Some(fence) = failed.fence.upgrade() {
                fence.raise(error, &failed.topic, failed.partition);
            }
            let mut i = 0;
            while i < ready.len() {
                if ready[i].handle.same_partition(failed) {
                    behind.push(ready.remove(i));
                } else {
                    i += 1;
                }
            }
            if let Some(b) = topics.take_open(&failed.topic, failed.partition, |b| {
                b.handle.same_partition(failed)
            }) {
                behind.push(b);
                *open_batches -= 1;
            }
        }
        behind
            .into_iter()
            .map(|b| self.fail_batch(b, error.clone()))
            .collect()
    }

    /// Fail a batch that is never appended.
    fn fail_batch(&self, b: OpenBatch, error: Arc<Error>) -> Completions {
        self.complete_batch(b, Err(error))
    }

    /// Complete a batch's handle and keep its buffer for reuse.
    fn complete_batch(&self, b: OpenBatch, r: std::result::Result<i64, Arc<Error>>) -> Completions {
        let err = r.as_ref().err().cloned();
        let cbs = b.handle.complete(r);
        let done = Completions(cbs, b.handle, err);
        let buf = b.builder.into_buffer();
        if buf.capacity() <= SPARE_BUFFER_MAX {
            let mut spare = self.spare.lock();
            // Beyond the first few, small buffers are kept while they add up
            // to little: the bulk path has up to `MAX_READY` sealed batches
            // in flight, and each buffer freed and allocated again cost ~64
            // fresh pages (page faults and zeroing, `brk`/`munmap`).
            let keep = spare.len() < SPARE_BUFFERS
                || (spare.len() < SPARE_BUFFERS_MAX
                    && spare.iter().map(Vec::capacity).sum::<usize>() + buf.capacity()
                        <= SPARE_BYTES);
            if keep {
                spare.push(buf);
            }
        }
        done
    }

    /// Append every sealed batch, in order. Callbacks come back to be run by
    /// the caller once it may: a callback may need a lock the caller holds
    /// or must take first, so none runs here.
    pub fn flush_ready(&self) -> Vec<Completions> {
        self.append_sealed(|_| {})
    }

    /// Under the ordering lock: let `prepare` seal batches (briefly holding
    /// the accumulator), take every sealed batch, and append them with the
    /// accumulator unlocked.
    fn append_sealed(&self, prepare: impl FnOnce(&mut Inner)) -> Vec<Completions> {
        let _order = self.append_order.lock();
        let batches = {
            let mut inner = self.inner.lock();
            prepare(&mut inner);
            std::mem::take(&mut inner.ready)
        };
        self.append_run(batches, self.durability()).0
    }

    /// Seal open batches (all, or those created before `older_than`).
    fn seal(&self, inner: &mut Inner, older_than: Option<Instant>) {
        let Inner {
            topics,
            open_batches,
            ready,
            ..
        } = inner;
        for state in topics.states.iter_mut() {
            for slot in state.batches.iter_mut() {
                let due = match (slot.as_ref(), older_than) {
                    (Some(_), None) => true,
                    (Some(b), Some(cutoff)) => b.created <= cutoff,
                    (None, _) => false,
                };
                if due {
                    if let Some(b) = slot.take() {
                        ready.push(b);
                        *open_batches -= 1;
                    }
                }
            }
        }
    }

    /// Append every open batch.
    pub fn flush(&self) -> Vec<Completions> {
        self.append_sealed(|inner| self.seal(inner, None))
    }

    /// Append the batch holding `handle` now, if it has not been (a caller
    /// is waiting on one of its records).
    pub fn flush_batch(&self, handle: &Arc<BatchHandle>) -> Vec<Completions> {
        if handle.is_done() {
            return Vec::new();
        }
        self.append_sealed(|inner| {
            let Inner {
                topics,
                open_batches,
                ready,
                ..
            } = inner;
            if let Some(b) = topics.take_open(&handle.topic, handle.partition, |b| {
                Arc::ptr_eq(&b.handle, handle)
            }) {
                ready.push(b);
                *open_batches -= 1;
            }
        })
    }

    /// Flush and stop; later sends fail with `Closed`.
    pub fn close(&self) -> Vec<Completions> {
        let mut was_closed = false;
        let out = self.append_sealed(|inner| {
            was_closed = inner.closed;
            self.seal(inner, None);
            inner.closed = true;
        });
        if was_closed {
            return out;
        }
        self.linger_cv.notify_all();
        if let Some(h) = self.linger_thread.lock().take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        out
    }

    /// Lift every partition's fence, returning one of their errors: for a
    /// `flush()` that tells the caller about failed appends (raising this
    /// error, or one of its own batches'). Sends to those partitions are
    /// appended again afterwards. See [`PartitionFence`].
    pub fn take_failure(&self) -> Option<Arc<Error>> {
        let inner = self.inner.lock();
        let mut first = None;
        for s in &inner.topics.states {
            for f in &s.fences {
                if let Some(e) = f.lift(None) {
                    first.get_or_insert(e);
                }
            }
        }
        first
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Partition count of a topic (creating it if allowed).
    pub fn partitions_for(&self, topic: &str) -> Result<u32> {
        let mut inner = self.inner.lock();
        Ok(self
            .topic_state_in(&mut inner.topics, topic)?
            .topic
            .partitions)
    }
}

impl Completions {
    /// Run the callbacks of the completed batch.
    pub fn run(self) {
        let Completions(cbs, handle, _) = self;
        if let Some(r) = handle.result() {
            for cb in cbs {
                cb(r);
            }
        }
    }

    /// The error that failed the batch, if it failed.
    pub fn error(&self) -> Option<&Arc<Error>> {
        self.2.as_ref()
    }
}

fn linger_loop(weak: std::sync::Weak<Producer>) {
    loop {
        let Some(p) = weak.upgrade() else { return };
        let linger = Duration::from_millis(p.config.linger_ms);
        {
            let mut inner = p.inner.lock();
            if inner.closed {
                return;
            }
            if inner.open_batches == 0 && inner.ready.is_empty() {
                // Sleep until a send opens a batch (bounded, to notice drops).
                p.linger_cv.wait_for(&mut inner, Duration::from_millis(200));
                continue;
            }
            let oldest = inner
                .topics
                .states
                .iter()
                .flat_map(|s| s.batches.iter().flatten())
                .map(|b| b.created)
                .min();
            match oldest {
                Some(t) if t + linger > Instant::now() && inner.ready.is_empty() => {
                    p.linger_cv.wait_until(&mut inner, t + linger);
                    continue;
                }
                _ => {}
            }
        };
        let completions = p.append_sealed(|inner| {
            let cutoff = Instant::now()
                .checked_sub(linger)
                .unwrap_or_else(Instant::now);
            p.seal(inner, Some(cutoff));
        });
        drop(p);
        for c in completions {
            c.run();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        for c in self.close() {
            c.run();
        }
    }
}

/// A record's body size and its size alone (length prefix included, zero
/// deltas), refused when it would not fit `max_bytes` even in a batch of
/// its own.
fn record_size(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[HeaderRef<'_>],
    max_bytes: usize,
) -> Result<(usize, usize)> {
    let body = BatchBuilder::record_body_size(key, value, headers);
    let rec_size = varlong_len(body as i64) + body;
    if rec_size + HEADER_LEN > max_bytes {
        return Err(Error::RecordTooLarge {
            size: rec_size + HEADER_LEN,
            max: max_bytes,
        });
    }
    Ok((body, rec_size))
}

/// Where a record goes among a topic's `n` partitions: the one asked for
/// (which must exist), the key's hash, or the sticky partition.
fn pick_partition(
    topic: &str,
    partition: Option<u32>,
    key: Option<&[u8]>,
    n: u32,
    sticky: u32,
) -> Result<u32> {
    Ok(match (partition, key) {
        (Some(p), _) if p < n => p,
        (Some(p), _) => {
            return Err(Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition: p as i64,
            })
        }
        (None, Some(k)) => partition_for_key(k, n),
        (None, None) => sticky % n,
    })
}
