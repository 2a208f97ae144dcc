//! The consumer: positions per assigned partition, fetching whole batches
//! from the logs, handing out records one at a time without copying them,
//! and committing positions to the offset store.
//!
//! Records are handed to a caller-supplied function as borrowed
//! [`RecordView`]s; the Python door turns them into Python objects there, so
//! the engine never builds a per-record object of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::log::lockfile::LockFile;
use crate::log::{Durability, PartitionLog, ReadCursor};
use crate::record::batch::{BatchHeader, RecordIter, RecordView, HEADER_LEN};
use crate::record::decode::inflate;
use crate::store::Store;

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
        }
    }
}

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
    subscription: Vec<String>,
    assignment: Vec<Assigned>,
    next_rr: usize,
    meta_gen: u64,
    last_commit: Instant,
    closed: bool,
}

pub struct Consumer {
    store: Arc<Store>,
    config: ConsumerConfig,
    inner: Mutex<Inner>,
    group_lock: Mutex<Option<LockFile>>,
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
        Ok(Consumer {
            inner: Mutex::new(Inner {
                subscription: Vec::new(),
                assignment: Vec::new(),
                next_rr: 0,
                meta_gen: u64::MAX,
                last_commit: Instant::now(),
                closed: false,
            }),
            group_lock: Mutex::new(None),
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

    /// Join the group as its only member (several members arrive with group
    /// rebalancing); a second live member anywhere on the directory is refused.
    fn join_group(&self) -> Result<()> {
        let Some(group) = &self.config.group_id else {
            return Ok(());
        };
        let mut g = self.group_lock.lock();
        if g.is_some() {
            return Ok(());
        }
        let path = self
            .store
            .groups_dir()
            .join(format!("{}.member", file_safe(group)));
        let lock = LockFile::open(&path)?;
        if !lock.try_presence_exclusive()? {
            let holder = std::fs::read_to_string(path.with_extension("pid")).unwrap_or_default();
            return Err(Error::GroupMemberConflict {
                group: group.clone(),
                holder: if holder.trim().is_empty() {
                    "unknown".into()
                } else {
                    holder.trim().to_string()
                },
            });
        }
        let _ = std::fs::write(path.with_extension("pid"), std::process::id().to_string());
        *g = Some(lock);
        Ok(())
    }

    pub fn subscribe(&self, topics: &[String]) -> Result<()> {
        for t in topics {
            crate::topic::validate_topic_name(t)?;
        }
        self.join_group()?;
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        inner.subscription = topics.to_vec();
        inner.meta_gen = u64::MAX;
        self.refresh_subscription(&mut inner)
    }

    pub fn unsubscribe(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.subscription.clear();
        inner.assignment.clear();
        *self.group_lock.lock() = None;
        Ok(())
    }

    pub fn subscription(&self) -> Vec<String> {
        self.inner.lock().subscription.clone()
    }

    /// Manual assignment (no group membership), replacing any previous one.
    pub fn assign(&self, partitions: &[(String, u32)]) -> Result<()> {
        let mut assigned = Vec::with_capacity(partitions.len());
        for (t, p) in partitions {
            let topic = self.store.topic_or_create(
                t,
                self.config.auto_create_topics,
                self.config.num_partitions,
            )?;
            let log = self.store.partition(&topic, *p)?;
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
        inner.subscription.clear();
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

    /// Follow topic creation and partition growth for subscribed topics.
    fn refresh_subscription(&self, inner: &mut Inner) -> Result<()> {
        if inner.subscription.is_empty() {
            return Ok(());
        }
        let gen = self.store.beacon().metadata_gen();
        if inner.meta_gen == gen {
            return Ok(());
        }
        let mut want = Vec::new();
        for t in &inner.subscription {
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
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
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
            count += self.drain_partition(a, max - count, f)?;
            if count >= max {
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

    fn drain_partition(
        &self,
        a: &mut Assigned,
        max: usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>),
    ) -> Result<usize> {
        let mut count = 0;
        let mut position = self.resolve(a)?;
        let mut refetched = false;
        while count < max {
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
                        if count > 0 {
                            // Hand out what we have; the error comes next call.
                            a.fetch = Some(Fetch {
                                data: Vec::new(),
                                batch_at: 0,
                                header: None,
                                iter_state: (0, 0),
                                inflated: None,
                                error: Some(e),
                            });
                            break;
                        }
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
                fetch.inflated = inflate(&h, batch).map_err(|e| match e {
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
            while count < max {
                match it.next() {
                    None => break,
                    Some(Err(reason)) => {
                        return Err(Error::InvalidRecord(format!(
                            "{}-{} batch at offset {}: {reason}",
                            a.tp.0, a.tp.1, h.base_offset
                        )))
                    }
                    Some(Ok(rec)) => {
                        if rec.offset < position {
                            continue;
                        }
                        f(&a.tp, &rec);
                        position = rec.offset + 1;
                        count += 1;
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
        Ok(count)
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
        loop {
            let seq = self.store.beacon().append_seq();
            {
                let mut inner = self.inner.lock();
                Self::check_open(&inner)?;
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
            self.store
                .beacon()
                .wait(seq, (deadline - now).min(Duration::from_millis(100)));
        }
    }

    fn maybe_auto_commit(&self, inner: &mut Inner) -> Result<()> {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return Ok(());
        }
        if inner.last_commit.elapsed() < Duration::from_millis(self.config.auto_commit_interval_ms)
        {
            return Ok(());
        }
        inner.last_commit = Instant::now();
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
        inner.last_commit = Instant::now();
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

    /// Commit (if auto-commit is on) and release the group membership.
    pub fn close(&self, autocommit: bool) -> Result<()> {
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
        inner.assignment.clear();
        *self.group_lock.lock() = None;
        r
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }
}

/// Group ids may hold any character; file names may not.
pub(crate) fn file_safe(group: &str) -> String {
    let mut s = String::with_capacity(group.len());
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02x}"));
        }
    }
    if s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}
