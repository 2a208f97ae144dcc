//! The record accumulator (Kafka's `RecordAccumulator`): each partition's
//! open batch, the sealed batches waiting for the sender, and the spare
//! buffers new batches are built on.
//!
//! Records are encoded into their partition's open batch under the
//! accumulator lock (`Producer::inner`), with no I/O: appending is the
//! sender's. What holds under that lock:
//!
//! - A partition has at most one open batch. It is sealed (moved to
//!   `Inner::ready`) before a record would take it past
//!   `min(batch_size, max.message.bytes)`, once it reaches `batch_size`,
//!   when it is `linger_ms` old, or on a flush. `ready` is in sealing
//!   order, the order the sender appends in, so a partition's records
//!   reach its log in the order they were sent.
//! - `open_batches` counts the open batches; the linger thread is woken
//!   when it goes from zero to more.
//! - No batch is opened on a fenced partition: its records get the fence's
//!   failed handle instead (see `fence`).
//! - Key-less records sent without a partition go to the topic's sticky
//!   partition, which moves on whenever one of them seals a batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ottla_record::batch::{BatchBuilder, FillStop, HeaderRef};
use ottla_storage::error::{Error, Result};
use ottla_storage::log::now_ms;
use ottla_storage::store::Topic;

use super::batch::{BatchHandle, Completions, OpenBatch, SendRun};
use super::fence::PartitionFence;
use super::{check_key, pick_partition, record_size, Producer};

/// The accumulator's state, behind `Producer::inner`.
pub(super) struct Inner {
    pub(super) topics: Topics,
    pub(super) clock: RecordClock,
    pub(super) open_batches: usize,
    /// Sealed batches in the order they must be appended.
    pub(super) ready: Vec<OpenBatch>,
    pub(super) closed: bool,
}

pub(super) struct TopicState {
    pub(super) topic: Topic,
    pub(super) batches: Vec<Option<OpenBatch>>,
    /// One per partition, as `batches`.
    pub(super) fences: Vec<Arc<PartitionFence>>,
    pub(super) sticky: u32,
    pub(super) meta_gen: u64,
}

/// Topic name -> index into `Topics::states`: one hash lookup per send,
/// and the state is reached by index, which the borrow checker allows.
#[derive(Default)]
pub(super) struct Topics {
    index: HashMap<Arc<str>, usize, std::hash::BuildHasherDefault<FastHasher>>,
    pub(super) states: Vec<TopicState>,
    /// The state index of the topic looked up last: a loop sending to one
    /// topic pays a string compare instead of a hash lookup.
    last: usize,
}

impl Topics {
    /// Take the open batch of `topic`-`partition` out of its slot, if it is
    /// the one `wanted` picks.
    pub(super) fn take_open(
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

/// Record timestamps without a clock read per record: the wall clock is
/// re-read whenever more than 2^15 TSC ticks (about 10 µs) have passed, so a
/// timestamp is never more than that behind, far inside its 1 ms resolution.
#[derive(Default)]
pub(super) struct RecordClock {
    tsc: u64,
    ms: i64,
}

impl RecordClock {
    #[inline]
    pub(super) fn now_ms(&mut self) -> i64 {
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

/// How many appended batches' buffers a producer keeps for reuse, of any
/// size up to [`SPARE_BUFFER_MAX`].
pub(super) const SPARE_BUFFERS: usize = 4;

/// More buffers are kept, up to this many, while all kept ones total at most
/// [`SPARE_BYTES`] (twelve default 256 KiB batches: the bulk path's sealed
/// batches in flight, plus the ones being filled).
pub(super) const SPARE_BUFFERS_MAX: usize = 12;

pub(super) const SPARE_BYTES: usize = 12 * (256 << 10) + (64 << 10);

/// Larger buffers (huge records) are freed rather than kept.
pub(super) const SPARE_BUFFER_MAX: usize = 16 << 20;

impl Producer {
    pub(super) fn topic_state_in<'a>(
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

    /// Encode one record into its partition's open batch; `placed` learns
    /// the batch and the record's index in it. Returns the timestamp used.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place(
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
        if let Some(t) = &self.txn {
            t.check_open()?;
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
        check_key(&state.topic, p, key)?;
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
        if let Some(t) = &self.txn {
            t.check_open()?;
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
        if !values.is_empty() {
            check_key(&state.topic, partition.unwrap_or(state.sticky % n), None)?;
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

    /// Seal open batches (all, or those created before `older_than`).
    pub(super) fn seal(&self, inner: &mut Inner, older_than: Option<Instant>) {
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

    /// A builder for a new batch, on a recycled buffer if one is spare.
    fn new_builder(&self, capacity: usize) -> BatchBuilder {
        match self.spare.lock().pop() {
            Some(buf) => BatchBuilder::with_buffer(buf, capacity),
            None => BatchBuilder::with_capacity(capacity),
        }
    }

    /// Complete a batch's handle and keep its buffer for reuse.
    pub(super) fn complete_batch(
        &self,
        b: OpenBatch,
        r: std::result::Result<i64, Arc<Error>>,
    ) -> Completions {
        let err = r.as_ref().err().cloned();
        let cbs = b.handle.complete(r);
        let done = Completions(cbs, b.handle, err);
        let buf = b.builder.into_buffer();
        if buf.capacity() <= SPARE_BUFFER_MAX {
            let mut spare = self.spare.lock();
            // Beyond the first few, small buffers are kept while they add up
            // to little: a bulk sender keeps up to the `max_ready` it passes
            // to `append_in_background` sealed batches in flight, and each
            // buffer freed and allocated again cost ~64 fresh pages (page
            // faults and zeroing, `brk`/`munmap`).
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

    /// Fail a batch that is never appended.
    pub(super) fn fail_batch(&self, b: OpenBatch, error: Arc<Error>) -> Completions {
        self.complete_batch(b, Err(error))
    }
}
