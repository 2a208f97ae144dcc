//! `ottla.aio.Producer`: the engine's producer with asyncio futures.
//!
//! `send()` is a plain call (no coroutine): it encodes the record into its
//! batch exactly as the sync producer does and returns a [`SendFuture`].
//! Nothing asyncio-related is created until someone awaits that future, so
//! a fire-and-forget loop costs what the sync `send()` costs.
//!
//! Awaiting registers the task's asyncio future on the record's batch and
//! asks for the batch to be appended at the end of the current event-loop
//! iteration: every task that sends in the same iteration shares the batch,
//! and nobody waits for `linger_ms` (a caller waiting on a record wants it
//! now, as the sync `get()` does). The append runs with the GIL released,
//! on the loop's thread for a page-cache append and on a tokio blocking
//! thread when it must fsync; the batch's completion callback hands all its
//! waiters' results to their loops' bells (`aio_bell`) without taking the
//! GIL. No thread is parked per send.
//!
//! Cancelling an await cancels only the waiting: the record stays in its
//! batch and is appended (or fails) like any other, and the same
//! `SendFuture` can be awaited again, or asked `done()`/`result()`, to learn
//! its offset. Kafka producers cannot take a record back either.

use crate::errors::PyResultExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::aio_bell::{running_loop, set_future, spawn_awaitable, Bell, Delivery, Value};
use super::errors::to_pyerr;
use super::producer::{
    check_partition, fsync_label, open_engine, parse_acks, pick_timestamp, runs_metadata,
    send_chunk, send_one, serialize, unacked_metadata, Acks,
};
use super::types::{path_arg, py_repr_str, RecordMetadata};
use ottla_client::producer::{
    BatchHandle, Completions, FsyncPolicy, Producer as Engine, SendReceipt, SendRun,
};
use ottla_storage::error::Error;

type Outcome = std::result::Result<i64, Arc<Error>>;

/// A task waiting for one record, or for every batch of a `send_many`.
enum Waiter {
    Record {
        bell: Arc<Bell>,
        future: Py<PyAny>,
        index: u32,
        timestamp: i64,
    },
    Many(Arc<ManyWait>),
}

/// One awaited `send_many`: resolved when its last batch completes.
struct ManyWait {
    remaining: AtomicUsize,
    /// The first failed batch: its error is the one the task gets.
    failed: Mutex<Option<Arc<BatchHandle>>>,
    /// (its loop's bell, asyncio future); taken by whoever resolves it.
    target: Mutex<Option<(Arc<Bell>, Py<PyAny>)>>,
}

/// Waiters per batch (keyed by the handle's address; the entry holds the
/// handle, so the address cannot be reused while the entry exists).
/// Kept apart from the producer so the completion callbacks the engine
/// stores do not keep the engine itself alive.
#[derive(Default)]
struct Waiting {
    by_batch: Mutex<HashMap<usize, BatchWaiters>>,
}

/// A batch (held, so its address stays unique) and the tasks awaiting it.
type BatchWaiters = (Arc<BatchHandle>, Vec<Waiter>);

impl Waiting {
    /// Add `w` to the batch's waiters. The first waiter of a batch installs
    /// the completion callback; if the batch is already complete the
    /// callback runs at once, on this thread.
    fn add(self: &Arc<Self>, handle: &Arc<BatchHandle>, w: Waiter) {
        let key = Arc::as_ptr(handle) as usize;
        let first = {
            let mut map = self.by_batch.lock();
            let entry = map
                .entry(key)
                .or_insert_with(|| (handle.clone(), Vec::new()));
            entry.1.push(w);
            entry.1.len() == 1
        };
        if first {
            let me = self.clone();
            handle.on_complete(Box::new(move |r| me.complete(key, r)));
        }
    }

    /// The batch at `key` completed: hand each waiter's result to its
    /// loop's bell (one ring per loop). Runs on whichever thread completed
    /// the batch, and never takes the GIL.
    fn complete(&self, key: usize, r: &Outcome) {
        let Some((handle, waiters)) = self.by_batch.lock().remove(&key) else {
            return;
        };
        let mut per_bell: Vec<(Arc<Bell>, Vec<Delivery>)> = Vec::new();
        let mut push = |bell: Arc<Bell>, item: (Py<PyAny>, Value)| match per_bell
            .iter_mut()
            .find(|(b, _)| Arc::ptr_eq(b, &bell))
        {
            Some((_, items)) => items.push(item),
            None => per_bell.push((bell, vec![item])),
        };
        for w in waiters {
            match w {
                Waiter::Record {
                    bell,
                    future,
                    index,
                    timestamp,
                } => {
                    let value = match r {
                        Ok(base) => Value::Metadata(RecordMetadata {
                            topic: handle.topic.to_string(),
                            partition: handle.partition,
                            offset: base + index as i64,
                            timestamp,
                        }),
                        Err(e) => {
                            // Handed to the awaiting task: lifts the fence.
                            handle.error_delivered();
                            Value::Failed(e.clone())
                        }
                    };
                    push(bell, (future, value));
                }
                Waiter::Many(m) => {
                    if r.is_err() {
                        m.failed.lock().get_or_insert_with(|| handle.clone());
                    }
                    if m.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        if let Some((bell, future)) = m.target.lock().take() {
                            let value = match m.failed.lock().take() {
                                Some(h) => failed_value(&h),
                                None => Value::Unit,
                            };
                            push(bell, (future, value));
                        }
                    }
                }
            }
        }
        for (bell, items) in per_bell {
            bell.ring(items);
        }
    }
}

/// The error of a failed batch, for a task that awaits it: handing it over
/// lifts the partition's fence.
fn failed_value(h: &BatchHandle) -> Value {
    h.error_delivered();
    match h.result() {
        Some(Err(e)) => Value::Failed(e.clone()),
        _ => Value::Failed(Arc::new(Error::IllegalState("batch not failed".into()))),
    }
}

fn run_callbacks(completions: Vec<Completions>) -> Option<Arc<Error>> {
    let mut first = None;
    for c in completions {
        if first.is_none() {
            first = c.error().cloned();
        }
        c.run();
    }
    first
}

/// State shared by the Python object, its futures and background appends.
struct Shared {
    engine: Arc<Engine>,
    waiting: Arc<Waiting>,
    /// Batches an awaiting task wants appended now.
    flush_wanted: Mutex<Vec<Arc<BatchHandle>>>,
    /// The event loop (address) on which a [`FlushSoon`] is scheduled and
    /// has not run yet; 0 if none. An await on another loop schedules its
    /// own, so a stopped loop never holds up the others' appends.
    flush_armed: Mutex<usize>,
    /// Background appends of sealed batches in flight (at most
    /// [`MAX_BACKGROUND_APPENDS`]).
    appending: AtomicUsize,
}

/// Sealed-batch appends that may run in the background before `send()`
/// appends the next one itself: bounds the memory a producer that outruns
/// its disk can hold to a few batches, without blocking the loop on the
/// first slow append (an fsync, say).
const MAX_BACKGROUND_APPENDS: usize = 4;

impl Shared {
    /// Ask for `handle`'s batch to be appended once the current loop
    /// iteration has let every ready task send.
    fn flush_soon(self: &Arc<Self>, event_loop: &Bound<'_, PyAny>, handle: &Arc<BatchHandle>) {
        self.flush_wanted.lock().push(handle.clone());
        let this_loop = event_loop.as_ptr() as usize;
        {
            let mut armed = self.flush_armed.lock();
            if *armed == this_loop {
                return;
            }
            *armed = this_loop;
        }
        let py = event_loop.py();
        let cb = FlushSoon {
            shared: self.clone(),
            event_loop: this_loop,
        };
        let scheduled = Bound::new(py, cb)
            .and_then(|cb| event_loop.call_method1(intern!(py, "call_soon"), (cb,)));
        if scheduled.is_err() {
            // Unreachable from a running loop; linger_ms still appends it.
            *self.flush_armed.lock() = 0;
        }
    }

    /// Append the wanted batches on a blocking thread.
    ///
    /// With `fsync="always"` the appends run on a blocking thread: an fsync
    /// takes milliseconds. Otherwise an append is a `pwrite` into the page
    /// cache (microseconds, the same class of work as a consumer's read),
    /// so it runs right here with the GIL released: two thread hops would
    /// cost more than the append, and a task awaiting one record at a time
    /// would pay them on every record.
    fn flush_wanted_now(self: &Arc<Self>, py: Python<'_>) {
        *self.flush_armed.lock() = 0;
        let mut wanted = std::mem::take(&mut *self.flush_wanted.lock());
        if wanted.is_empty() {
            return;
        }
        wanted.sort_by_key(|h| Arc::as_ptr(h) as usize);
        wanted.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let engine = self.engine.clone();
        let append = move || {
            for h in wanted {
                if !h.is_done() {
                    run_callbacks(engine.flush_batch(&h));
                }
            }
        };
        if self.engine.config().fsync == FsyncPolicy::Always {
            pyo3_async_runtimes::tokio::get_runtime().spawn_blocking(append);
        } else {
            py.detach(append);
        }
    }

    /// `send()` sealed a batch: append it on a blocking thread, or, if
    /// [`MAX_BACKGROUND_APPENDS`] are still running (the disk is behind),
    /// here with the GIL released, which holds this caller back as the
    /// sync producer would. Every path appends under the engine's ordering
    /// lock, so batches reach the log in the order they were sealed.
    fn append_sealed(self: &Arc<Self>, py: Python<'_>) {
        if self.appending.fetch_add(1, Ordering::AcqRel) >= MAX_BACKGROUND_APPENDS {
            self.appending.fetch_sub(1, Ordering::AcqRel);
            let engine = &self.engine;
            let done = py.detach(|| engine.flush_ready());
            run_callbacks(done);
            return;
        }
        let me = self.clone();
        pyo3_async_runtimes::tokio::get_runtime().spawn_blocking(move || {
            let done = me.engine.flush_ready();
            me.appending.fetch_sub(1, Ordering::AcqRel);
            run_callbacks(done);
        });
    }
}

/// The `call_soon` callback behind [`Shared::flush_soon`].
#[pyclass(module = "ottla._core", frozen)]
struct FlushSoon {
    shared: Arc<Shared>,
    event_loop: usize,
}

#[pymethods]
impl FlushSoon {
    fn __call__(&self, py: Python<'_>) {
        self.shared.flush_wanted_now(py);
    }
}

impl Drop for FlushSoon {
    /// A loop closed before running this callback must not leave the
    /// producer believing a flush is on its way for that loop (a new loop
    /// could get the same address).
    fn drop(&mut self) {
        let mut armed = self.shared.flush_armed.lock();
        if *armed == self.event_loop {
            *armed = 0;
        }
    }
}

/// Runs an engine call that may do I/O on a blocking thread and awaits it.
fn blocking_awaitable<'py, F>(py: Python<'py>, f: F) -> PyResult<Bound<'py, PyAny>>
where
    F: FnOnce() -> Option<Arc<Error>> + Send + 'static,
{
    spawn_awaitable(py, async move {
        match tokio::task::spawn_blocking(f).await {
            Ok(None) => Value::Unit,
            Ok(Some(e)) => Value::Failed(e),
            Err(e) => Value::Failed(Arc::new(Error::IllegalState(format!(
                "background append failed: {e}"
            )))),
        }
    })
}

#[pyclass(module = "ottla._core", name = "AioProducer", subclass, frozen)]
pub struct AioProducer {
    shared: Arc<Shared>,
    acks: Acks,
    key_serializer: Option<Py<PyAny>>,
    value_serializer: Option<Py<PyAny>>,
    path: String,
}

#[pymethods]
impl AioProducer {
    #[new]
    #[pyo3(signature = (
        path, *, linger_ms=5, batch_size=262144, fsync="never", fsync_interval_ms=1000,
        auto_create_topics=true, num_partitions=1, key_serializer=None, value_serializer=None,
        acks=None, client_id=None, retention_check_interval_ms=300000, transactional_id=None,
        transaction_timeout_ms=60000
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Bound<'_, PyAny>,
        linger_ms: u64,
        batch_size: usize,
        fsync: &str,
        fsync_interval_ms: u64,
        auto_create_topics: bool,
        num_partitions: u32,
        key_serializer: Option<Py<PyAny>>,
        value_serializer: Option<Py<PyAny>>,
        acks: Option<Bound<'_, PyAny>>,
        client_id: Option<String>,
        retention_check_interval_ms: u64,
        transactional_id: Option<String>,
        transaction_timeout_ms: i32,
    ) -> PyResult<Self> {
        let path = path_arg(&path, "Producer")?;
        let acks = parse_acks(acks.as_ref())?;
        let _ = client_id; // accepted for Kafka compatibility, as in ottla.Producer
        let engine = open_engine(
            py,
            &path,
            linger_ms,
            batch_size,
            fsync,
            fsync_interval_ms,
            auto_create_topics,
            num_partitions,
            retention_check_interval_ms,
            (&key_serializer, &value_serializer),
            transactional_id,
            transaction_timeout_ms,
        )?;
        let path = engine.store().root().display().to_string();
        Ok(AioProducer {
            acks,
            shared: Arc::new(Shared {
                engine,
                waiting: Arc::new(Waiting::default()),
                flush_wanted: Mutex::new(Vec::new()),
                flush_armed: Mutex::new(0),
                appending: AtomicUsize::new(0),
            }),
            key_serializer,
            value_serializer,
            path,
        })
    }

    /// Queue a record; returns a `SendFuture` (await it for `RecordMetadata`).
    #[pyo3(signature = (
        topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None,
        *, timestamp=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn send<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        value: Option<Bound<'py, PyAny>>,
        key: Option<Bound<'py, PyAny>>,
        partition: Option<i64>,
        timestamp_ms: Option<i64>,
        headers: Option<Bound<'py, PyAny>>,
        timestamp: Option<i64>,
    ) -> PyResult<SendFuture> {
        let partition = check_partition(partition)?;
        let timestamp = pick_timestamp(timestamp_ms, timestamp)?;
        let value = serialize(py, &self.value_serializer, value, "value")?;
        let key = serialize(py, &self.key_serializer, key, "key")?;
        let vs = value.as_ref().map(|v| v.as_slice()).transpose()?;
        let ks = key.as_ref().map(|k| k.as_slice()).transpose()?;
        let engine = &self.shared.engine;
        let (receipt, sealed) = send_one(engine, topic, ks, vs, headers, partition, timestamp)?;
        if sealed {
            self.shared.append_sealed(py);
        }
        Ok(SendFuture {
            shared: self.shared.clone(),
            receipt,
            acks: self.acks,
        })
    }

    /// Queue many values (and optionally keys) for one topic; returns a
    /// `SendManyFuture` that resolves once every record is in the log.
    #[pyo3(signature = (topic, values, keys=None, partition=None, timestamp_ms=None, *, timestamp=None))]
    #[allow(clippy::too_many_arguments)]
    fn send_many<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        values: Bound<'py, PyAny>,
        keys: Option<Bound<'py, PyAny>>,
        partition: Option<i64>,
        timestamp_ms: Option<i64>,
        timestamp: Option<i64>,
    ) -> PyResult<SendManyFuture> {
        let partition = check_partition(partition)?;
        let timestamp = pick_timestamp(timestamp_ms, timestamp)?;
        // Chunks keep memory bounded by the chunk: sealed batches go to the
        // log while later values are still being encoded.
        const CHUNK: usize = 8192;
        let mut values = values.try_iter()?;
        let mut keys = keys.map(|k| k.try_iter()).transpose()?;
        let timestamp = timestamp.unwrap_or_else(ottla_storage::log::now_ms);
        let mut runs: Vec<SendRun> = Vec::new();
        let mut count = 0usize;
        loop {
            let (mut r, n, sealed) = send_chunk(
                py,
                &self.shared.engine,
                (&self.key_serializer, &self.value_serializer),
                topic,
                values.by_ref().take(CHUNK),
                keys.as_mut(),
                partition,
                timestamp,
            )?;
            if n == 0 {
                if let Some(kit) = keys.as_mut() {
                    if kit.next().is_some() {
                        return Err(pyo3::exceptions::PyValueError::new_err(
                            "keys has more items than values",
                        ));
                    }
                }
                break;
            }
            count += n;
            runs.append(&mut r);
            if sealed {
                self.shared.append_sealed(py);
            }
        }
        Ok(SendManyFuture {
            shared: self.shared.clone(),
            runs,
            count,
            timestamp,
            acks: self.acks,
        })
    }

    /// Append every queued record (awaitable); raises the first error of a
    /// failed batch.
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.shared.engine.clone();
        blocking_awaitable(py, move || {
            let failed = run_callbacks(engine.flush());
            // Raising tells the caller about every failed append, so it
            // lifts the partitions' fences (see `PartitionFence`).
            let fenced = engine.take_failure();
            failed.or(fenced)
        })
    }

    /// Kafka's `init_transactions()` (awaitable).
    fn init_transactions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.shared.engine.clone();
        blocking_awaitable(py, move || {
            engine
                .transactions()
                .and_then(|t| t.init())
                .err()
                .map(Arc::new)
        })
    }

    /// Kafka's `begin_transaction()` (not awaitable: nothing is written).
    fn begin_transaction(&self) -> PyResult<()> {
        self.shared
            .engine
            .transactions()
            .and_then(|t| t.begin())
            .py()
    }

    /// Kafka's `commit_transaction()` (awaitable).
    fn commit_transaction<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.shared.engine.clone();
        blocking_awaitable(py, move || match engine.end_transaction(true) {
            Ok(done) => {
                run_callbacks(done);
                None
            }
            Err(e) => Some(Arc::new(e)),
        })
    }

    /// Kafka's `abort_transaction()` (awaitable).
    fn abort_transaction<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.shared.engine.clone();
        blocking_awaitable(py, move || match engine.end_transaction(false) {
            Ok(done) => {
                run_callbacks(done);
                None
            }
            Err(e) => Some(Arc::new(e)),
        })
    }

    /// Kafka's `send_offsets_to_transaction(offsets, group_metadata)`
    /// (awaitable).
    fn send_offsets_to_transaction<'py>(
        &self,
        py: Python<'py>,
        offsets: Bound<'py, PyAny>,
        group_metadata: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (group, entries) = super::producer::parse_txn_offsets(&offsets, &group_metadata)?;
        let engine = self.shared.engine.clone();
        blocking_awaitable(py, move || {
            engine
                .transactions()
                .and_then(|t| t.send_offsets(&group, &entries))
                .err()
                .map(Arc::new)
        })
    }

    /// Flush and stop (awaitable); later sends raise `ClosedError`.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = self.shared.engine.clone();
        blocking_awaitable(py, move || run_callbacks(engine.close()))
    }

    /// Partition numbers of a topic (created if auto_create_topics allows).
    fn partitions_for(&self, py: Python<'_>, topic: &str) -> PyResult<Vec<u32>> {
        let engine = &self.shared.engine;
        let n = py.detach(|| engine.partitions_for(topic)).py()?;
        Ok((0..n).collect())
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn closed(&self) -> bool {
        self.shared.engine.is_closed()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let c = self.shared.engine.config();
        let fsync = fsync_label(c.fsync);
        format!(
            "<ottla.aio.Producer path={} acks={} linger_ms={} batch_size={} {}{}>",
            py_repr_str(py, &self.path),
            self.acks.label(),
            c.linger_ms,
            c.batch_size,
            fsync,
            if self.shared.engine.is_closed() {
                " closed"
            } else {
                ""
            }
        )
    }
}

fn invalid_state(py: Python<'_>, msg: &str) -> PyErr {
    match py
        .import(intern!(py, "asyncio"))
        .and_then(|m| m.getattr(intern!(py, "InvalidStateError")))
        .and_then(|t| t.call1((msg,)))
    {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// The pending result of `ottla.aio.Producer.send()`: await it for the
/// record's `RecordMetadata`.
#[pyclass(module = "ottla.aio", frozen)]
pub struct SendFuture {
    shared: Arc<Shared>,
    receipt: SendReceipt,
    acks: Acks,
}

impl SendFuture {
    fn metadata(&self, base: i64) -> RecordMetadata {
        let h = &self.receipt.batch;
        RecordMetadata {
            topic: h.topic.to_string(),
            partition: h.partition,
            offset: base + self.receipt.index as i64,
            timestamp: self.receipt.timestamp,
        }
    }
}

#[pymethods]
impl SendFuture {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let event_loop = running_loop(py)?;
        let fut = event_loop.call_method0(intern!(py, "create_future"))?;
        let handle = &self.receipt.batch;
        match handle.result() {
            _ if self.acks == Acks::None => {
                set_future(py, &fut, Value::Metadata(unacked_metadata(&self.receipt)))?
            }
            Some(Ok(base)) => set_future(py, &fut, Value::Metadata(self.metadata(*base)))?,
            Some(Err(_)) => set_future(py, &fut, failed_value(handle))?,
            None => {
                self.shared.waiting.add(
                    handle,
                    Waiter::Record {
                        bell: Bell::for_loop(&event_loop)?,
                        future: fut.clone().unbind(),
                        index: self.receipt.index,
                        timestamp: self.receipt.timestamp,
                    },
                );
                self.shared.flush_soon(&event_loop, handle);
            }
        }
        fut.call_method0(intern!(py, "__await__"))
    }

    /// True once the record is in the log (or its batch failed).
    fn done(&self) -> bool {
        self.acks == Acks::None || self.receipt.batch.is_done()
    }

    /// The `RecordMetadata` of a done send (raises its error if it failed,
    /// `asyncio.InvalidStateError` if it is not done).
    fn result(&self, py: Python<'_>) -> PyResult<RecordMetadata> {
        if self.acks == Acks::None {
            return Ok(unacked_metadata(&self.receipt));
        }
        match self.receipt.batch.result() {
            Some(Ok(base)) => Ok(self.metadata(*base)),
            Some(Err(e)) => {
                self.receipt.batch.error_delivered();
                Err(to_pyerr(e))
            }
            None => Err(invalid_state(py, "the record is not appended yet")),
        }
    }

    /// The error of a failed send, None if it succeeded
    /// (`asyncio.InvalidStateError` if it is not done).
    fn exception(&self, py: Python<'_>) -> PyResult<Option<PyErr>> {
        if self.acks == Acks::None {
            return Ok(None);
        }
        match self.receipt.batch.result() {
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => {
                self.receipt.batch.error_delivered();
                Ok(Some(to_pyerr(e)))
            }
            None => Err(invalid_state(py, "the record is not appended yet")),
        }
    }

    fn __repr__(&self) -> String {
        let state = match self.receipt.batch.result() {
            None => "pending".to_string(),
            Some(Ok(base)) => format!("offset={}", base + self.receipt.index as i64),
            Some(Err(e)) => format!("failed: {e}"),
        };
        format!(
            "<SendFuture {}-{} {state}>",
            self.receipt.batch.topic, self.receipt.batch.partition
        )
    }
}

/// The pending result of `ottla.aio.Producer.send_many()`: await it until
/// every record is in the log; `metadata()` then lists where they went.
#[pyclass(module = "ottla.aio", frozen)]
pub struct SendManyFuture {
    shared: Arc<Shared>,
    runs: Vec<SendRun>,
    count: usize,
    timestamp: i64,
    acks: Acks,
}

impl SendManyFuture {
    /// Distinct batches of this call that are not complete yet.
    fn pending(&self) -> Vec<Arc<BatchHandle>> {
        let mut out: Vec<Arc<BatchHandle>> = Vec::new();
        for r in &self.runs {
            if !r.batch.is_done() && !out.iter().any(|b| Arc::ptr_eq(b, &r.batch)) {
                out.push(r.batch.clone());
            }
        }
        out
    }

    fn first_failed(&self) -> Option<&Arc<BatchHandle>> {
        self.runs
            .iter()
            .find(|r| matches!(r.batch.result(), Some(Err(_))))
            .map(|r| &r.batch)
    }
}

#[pymethods]
impl SendManyFuture {
    fn __await__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let event_loop = running_loop(py)?;
        let fut = event_loop.call_method0(intern!(py, "create_future"))?;
        let pending = self.pending();
        if self.acks == Acks::None {
            set_future(py, &fut, Value::Unit)?;
        } else if pending.is_empty() {
            let value = match self.first_failed() {
                Some(h) => failed_value(h),
                None => Value::Unit,
            };
            set_future(py, &fut, value)?;
        } else {
            let wait = Arc::new(ManyWait {
                remaining: AtomicUsize::new(pending.len()),
                failed: Mutex::new(self.first_failed().cloned()),
                target: Mutex::new(Some((Bell::for_loop(&event_loop)?, fut.clone().unbind()))),
            });
            for h in &pending {
                self.shared.waiting.add(h, Waiter::Many(wait.clone()));
                self.shared.flush_soon(&event_loop, h);
            }
        }
        fut.call_method0(intern!(py, "__await__"))
    }

    /// True once every record is in the log (or a batch failed).
    fn done(&self) -> bool {
        self.acks == Acks::None || self.runs.iter().all(|r| r.batch.is_done())
    }

    /// `RecordMetadata` of every record, in send order, once done.
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        if !self.done() {
            return Err(invalid_state(py, "the records are not all appended yet"));
        }
        runs_metadata(py, &self.runs, self.acks, self.timestamp, || {
            invalid_state(py, "batch not complete")
        })
    }

    fn __len__(&self) -> usize {
        self.count
    }

    fn __repr__(&self) -> String {
        format!(
            "<SendManyFuture records={} done={}>",
            self.count,
            if self.done() { "True" } else { "False" }
        )
    }
}
