//! The producer: batching records per partition in memory (the record
//! accumulator), and appending whole batches to the partition logs.
//!
//! `send` encodes the record straight into the open batch of its partition
//! (no per-record allocation) and returns a handle to that batch. A batch is
//! appended when it reaches `batch_size`, when it is `linger_ms` old (the
//! linger thread), on `flush`, or when someone waits on one of its records.
//! A record is acknowledged (its handle resolved) only after the log has
//! published it, so an acknowledged record survives `kill -9`.
//!
//! This module holds the [`Producer`], its configuration, its lifecycle,
//! the per-record send calls, and the checks every send path shares (record
//! size, partition choice). The rest follows Kafka's producer internals:
//!
//! - `accumulator`: the record accumulator: open batches per partition,
//!   sealing, the sticky partition, spare batch buffers (and
//!   [`Producer::send_values`], which fills batches a run at a time);
//! - `batch`: the producer batch and the handle its records' futures share;
//! - `fence`: the partition fence raised by a failed append;
//! - `sender`: appending sealed batches in order, flushing, the linger
//!   thread;
//! - `direct`: [`Producer::send_direct`], a large record appended as a batch
//!   of its own from the caller's buffer;
//! - `compress`: the topic's `compression.type`, applied to each batch
//!   before it is appended;
//! - `txn`: transactions (a producer with a `transactional_id`): its
//!   batches are appended as transactional ones, and the coordinator's
//!   work (state, markers) is done in-process.
//!
//! Lock order: `append_order`, then the accumulator (`inner`). The locks of
//! a fence, of a batch handle and of the spare-buffer pool are taken last
//! (nothing is locked under them), and no callback runs under any producer
//! lock.

mod accumulator;
mod batch;
mod compress;
mod direct;
mod fence;
mod sender;
pub mod txn;

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::partitioner::partition_for_key;
use ottla_record::batch::{BatchBuilder, HeaderRef, HEADER_LEN};
use ottla_record::varint::varlong_len;
use ottla_storage::config::CleanupPolicy;
use ottla_storage::error::{Error, Result};
use ottla_storage::log::Durability;
use ottla_storage::retention_checker::{RetentionChecker, DEFAULT_CHECK_INTERVAL_MS};
use ottla_storage::store::{Store, Topic};

use accumulator::{Inner, RecordClock, Topics};
pub use batch::{BatchHandle, Callback, Completions, SendReceipt, SendRun};
pub use direct::DIRECT_VALUE_MIN;
pub use fence::PartitionFence;
use sender::linger_loop;

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
    /// How often this producer's retention checker deletes expired segments
    /// of every topic in the directory (Kafka's
    /// `log.retention.check.interval.ms`); one process's checker works at a
    /// time (see `ottla_storage::retention_checker`).
    pub retention_check_interval_ms: u64,
    /// Kafka's `transactional.id`: the producer's records are written in
    /// transactions (see [`txn`]).
    pub transactional_id: Option<String>,
    /// Kafka's `transaction.timeout.ms`.
    pub transaction_timeout_ms: i32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger_ms: 5,
            batch_size: 256 * 1024,
            fsync: FsyncPolicy::Never,
            auto_create_topics: true,
            num_partitions: 1,
            retention_check_interval_ms: DEFAULT_CHECK_INTERVAL_MS,
            transactional_id: None,
            transaction_timeout_ms: txn::DEFAULT_TRANSACTION_TIMEOUT_MS,
        }
    }
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
    ///
    /// [`SPARE_BUFFERS`]: accumulator::SPARE_BUFFERS
    /// [`SPARE_BUFFER_MAX`]: accumulator::SPARE_BUFFER_MAX
    /// [`SPARE_BUFFERS_MAX`]: accumulator::SPARE_BUFFERS_MAX
    /// [`SPARE_BYTES`]: accumulator::SPARE_BYTES
    spare: Mutex<Vec<Vec<u8>>>,
    /// Held while sealed batches are taken from `inner.ready` and appended,
    /// so batches reach the log in the order they were sealed while the
    /// accumulator itself stays free for `send()` during the I/O.
    append_order: Mutex<()>,
    /// Stopped by `close()`.
    retention: Mutex<Option<Arc<RetentionChecker>>>,
    /// Set for a transactional producer.
    txn: Option<Arc<txn::Transactions>>,
}

/// The marker a cluster node writes in its directory (the broker's
/// `cluster::node::marker_path`): `node.id=N` and `listener=HOST:PORT`.
const CLUSTER_NODE_MARKER: [&str; 3] = [".ottla", "cluster", "node"];

/// An embedded producer appending to a cluster node's directory would write
/// records no other replica receives, at offsets the partition's leader
/// also hands out: refused, naming the address to produce to instead.
fn refuse_cluster_directory(root: &std::path::Path) -> Result<()> {
    let marker = CLUSTER_NODE_MARKER
        .iter()
        .fold(root.to_path_buf(), |p, part| p.join(part));
    let Ok(text) = std::fs::read_to_string(&marker) else {
        return Ok(());
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let node = field("node.id=").unwrap_or_else(|| "?".into());
    let bootstrap = field("listener=").unwrap_or_else(|| "its Kafka listener".into());
    Err(Error::IllegalState(format!(
        "{} is the data directory of cluster node {node}: an embedded Producer would bypass \
         replication; produce through the cluster with a Kafka client \
         (bootstrap.servers={bootstrap}) instead",
        root.display()
    )))
}

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
        if config.retention_check_interval_ms == 0 {
            return Err(Error::InvalidConfig(
                "retention_check_interval_ms must be positive".into(),
            ));
        }
        refuse_cluster_directory(store.root())?;
        if let FsyncPolicy::Interval(ms) = config.fsync {
            store.ensure_flusher(ms);
        }
        let retention = RetentionChecker::shared(&store, config.retention_check_interval_ms)?;
        let txn = match &config.transactional_id {
            Some(id) => Some(Arc::new(txn::Transactions::new(
                store.clone(),
                id,
                config.transaction_timeout_ms,
                match config.fsync {
                    FsyncPolicy::Always => Durability::Fsync,
                    _ => Durability::PageCache,
                },
            )?)),
            None => None,
        };
        let p = Arc::new(Producer {
            txn,
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
            retention: Mutex::new(Some(retention)),
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

    /// The transactions of a producer with a `transactional_id`.
    pub fn transactions(&self) -> Result<&Arc<txn::Transactions>> {
        self.txn
            .as_ref()
            .ok_or_else(|| Error::InvalidTxnState("the producer has no transactional_id".into()))
    }

    /// `commit_transaction` / `abort_transaction`: every record sent is
    /// appended first (an abort appends them too: they are part of the
    /// aborted transaction, which no read_committed reader sees), then the
    /// transaction ends. A commit is refused when a record of the
    /// transaction failed to append (abort then). The completions of the
    /// appended batches are returned for the caller to run.
    pub fn end_transaction(&self, commit: bool) -> Result<Vec<Completions>> {
        let t = self.transactions()?;
        t.check_open()?;
        let done = self.flush();
        t.end(commit)?;
        Ok(done)
    }

    fn durability(&self) -> Durability {
        match self.config.fsync {
            FsyncPolicy::Always => Durability::Fsync,
            _ => Durability::PageCache,
        }
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
        let retention = self.retention.lock().take();
        drop(retention);
        self.linger_cv.notify_all();
        if let Some(h) = self.linger_thread.lock().take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        out
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

/// Refuse a record without a key for a topic whose cleanup policy includes
/// `compact`, as Kafka's LogValidator does (the cleaner keeps the latest
/// record per key; a record without one could never be compacted away).
fn check_key(topic: &Topic, partition: u32, key: Option<&[u8]>) -> Result<()> {
    if key.is_none() && topic.config.cleanup_policy != CleanupPolicy::Delete {
        return Err(Error::InvalidRecord(format!(
            "Compacted topic cannot accept message without key in topic partition {}-{partition}.",
            topic.name
        )));
    }
    Ok(())
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
