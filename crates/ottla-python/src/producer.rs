//! `ottla.Producer` and the futures `send()` returns.

use crate::errors::PyResultExt;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList, PyString, PyTuple};

use super::errors::{to_pyerr, OttlaTimeoutError};
use super::types::{path_arg, py_repr_str, short_repr, BytesArg, RecordMetadata};
use ottla_client::producer::{
    BatchHandle, Completions, FsyncPolicy, Producer as Engine, ProducerConfig, SendReceipt, SendRun,
};
use ottla_storage::error::Error;
use ottla_storage::offsets::OffsetEntry;
use ottla_storage::store::Store;

fn run(py: Python<'_>, completions: Vec<Completions>) -> PyResult<()> {
    let mut first_err = None;
    for c in completions {
        if first_err.is_none() {
            first_err = c.error().map(|e| to_pyerr(e));
        }
        c.run();
    }
    let _ = py;
    first_err.map_or(Ok(()), Err)
}

/// Sealed batches `send` and `send_many` leave to the linger thread to
/// append (8 x the default 256 KiB batch: 2 MiB); past that, the sending
/// thread appends them itself.
const MAX_READY: usize = 8;

fn timeout_of(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, got {t}"
        ))),
    }
}

/// Kafka's `acks`, in-process. Every record is appended to the log by the
/// same code whatever `acks` says; what changes is when its future is done:
/// `acks=0` when it is queued (`send()` returned: the offset is unknown,
/// -1, and a failed append is reported only by `flush()`), `1` and `all`
/// (the same thing with no replicas) once it is in the log, after the
/// fsync when `fsync="always"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub(super) fn label(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "'all'",
        }
    }
}

/// `acks` as Kafka's clients take it: 0, 1, -1 or "all", or the same as
/// strings (Kafka's config files); None is the default, 1 (kafka-python's).
pub(super) fn parse_acks(acks: Option<&Bound<'_, PyAny>>) -> PyResult<Acks> {
    let Some(a) = acks else {
        return Ok(Acks::Leader);
    };
    let bad = || {
        PyValueError::new_err(format!(
            "acks must be 0, 1, -1 or 'all' (or '0', '1', '-1'), not {}",
            short_repr(a)
        ))
    };
    if a.is_instance_of::<pyo3::types::PyBool>() {
        return Err(bad());
    }
    if let Ok(n) = a.extract::<i64>() {
        return match n {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            _ => Err(bad()),
        };
    }
    if let Ok(s) = a.cast::<PyString>() {
        return match s.to_str()?.trim() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "-1" | "all" => Ok(Acks::All),
            _ => Err(bad()),
        };
    }
    Err(bad())
}

/// `timestamp_ms` (kafka-python's and aiokafka's name) or `timestamp`
/// (ottla's first one), not both.
pub(super) fn pick_timestamp(
    timestamp_ms: Option<i64>,
    timestamp: Option<i64>,
) -> PyResult<Option<i64>> {
    match (timestamp_ms, timestamp) {
        (Some(_), Some(_)) => Err(PyTypeError::new_err(
            "pass timestamp_ms or timestamp (the same setting), not both",
        )),
        (t, None) | (None, t) => {
            check_timestamp(t)?;
            Ok(t)
        }
    }
}

/// The metadata an `acks=0` future gives: the offset is not known (-1), as
/// in Kafka's clients.
pub(super) fn unacked_metadata(receipt: &SendReceipt) -> RecordMetadata {
    RecordMetadata {
        topic: receipt.batch.topic.to_string(),
        partition: receipt.batch.partition,
        offset: -1,
        timestamp: receipt.timestamp,
    }
}

#[pyclass(module = "ottla._core", name = "Producer", subclass, frozen)]
pub struct Producer {
    engine: Arc<Engine>,
    acks: Acks,
    key_serializer: Option<Py<PyAny>>,
    value_serializer: Option<Py<PyAny>>,
    path: String,
}

impl Producer {
    fn flush_sealed(&self, py: Python<'_>) -> PyResult<()> {
        let engine = &self.engine;
        let done = py.detach(|| engine.flush_ready());
        // Failures of earlier batches reach their futures; send() itself only
        // fails for this record.
        let _ = run(py, done);
        Ok(())
    }
}

/// The general `send_many` path for one chunk, shared by both producers:
/// serializers, keys, and any bytes-like value. Returns the runs, the
/// records taken and whether batches were sealed.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_chunk<'py>(
    py: Python<'py>,
    engine: &Engine,
    serializers: (&Option<Py<PyAny>>, &Option<Py<PyAny>>),
    topic: &str,
    values: impl Iterator<Item = PyResult<Bound<'py, PyAny>>>,
    mut keys: Option<&mut Bound<'py, PyIterator>>,
    partition: Option<u32>,
    timestamp: i64,
) -> PyResult<(Vec<SendRun>, usize, bool)> {
    let (key_serializer, value_serializer) = serializers;
    let mut vals: Vec<Option<BytesArg<'py>>> = Vec::new();
    let mut ks: Vec<Option<BytesArg<'py>>> = Vec::new();
    for v in values {
        vals.push(serialize(py, value_serializer, Some(v?), "value")?);
        if let Some(kit) = keys.as_mut() {
            match kit.next() {
                Some(k) => ks.push(serialize(py, key_serializer, Some(k?), "key")?),
                None => return Err(PyValueError::new_err("keys has fewer items than values")),
            }
        }
    }
    if vals.is_empty() {
        return Ok((Vec::new(), 0, false));
    }
    let mut slices = Vec::with_capacity(vals.len());
    for (i, v) in vals.iter().enumerate() {
        let vs = v.as_ref().map(|v| v.as_slice()).transpose()?;
        let kb = match ks.get(i) {
            Some(k) => k.as_ref().map(|k| k.as_slice()).transpose()?,
            None => None,
        };
        slices.push((kb, vs));
    }
    let n = slices.len();
    let (r, _, sealed) = engine
        .send_many(topic, slices.into_iter(), partition, Some(timestamp))
        .py()?;
    Ok((r, n, sealed))
}

/// A key or value as bytes: through its serializer when there is one;
/// `None` (given or serialized) is a null.
pub(super) fn serialize<'py>(
    py: Python<'py>,
    ser: &Option<Py<PyAny>>,
    obj: Option<Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<BytesArg<'py>>> {
    let obj = match (ser, obj) {
        (_, None) => return Ok(None),
        (Some(f), Some(o)) => f.bind(py).call1((o,))?,
        (None, Some(o)) => o,
    };
    if obj.is_none() {
        return Ok(None);
    }
    BytesArg::from_obj(&obj, what).map(Some)
}

/// One record through `Engine::send`, with its headers (if any) borrowed
/// from their Python form: the common tail of both producers' `send()`.
#[allow(clippy::too_many_arguments)]
pub(super) fn send_one(
    engine: &Engine,
    topic: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: Option<Bound<'_, PyAny>>,
    partition: Option<u32>,
    timestamp: Option<i64>,
) -> PyResult<(SendReceipt, bool)> {
    let sent = match headers {
        None => engine.send(topic, key, value, &[], partition, timestamp),
        Some(h) => {
            let owned = extract_headers(&h)?;
            let refs: Vec<(&[u8], Option<&[u8]>)> = owned
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                .collect();
            engine.send(topic, key, value, &refs, partition, timestamp)
        }
    }
    .py()?;
    Ok(sent)
}

/// The settings both producers take (`ottla.Producer` and
/// `ottla.aio.Producer` share their keyword arguments): checks them and
/// opens the engine over the store at `path`, with the GIL released.
#[allow(clippy::too_many_arguments)]
pub(super) fn open_engine(
    py: Python<'_>,
    path: &std::path::Path,
    linger_ms: u64,
    batch_size: usize,
    fsync: &str,
    fsync_interval_ms: u64,
    auto_create_topics: bool,
    num_partitions: u32,
    retention_check_interval_ms: u64,
    serializers: (&Option<Py<PyAny>>, &Option<Py<PyAny>>),
    transactional_id: Option<String>,
    transaction_timeout_ms: i32,
) -> PyResult<Arc<Engine>> {
    parse_fsync(fsync)?;
    let policy = match fsync {
        "always" => FsyncPolicy::Always,
        "interval" => FsyncPolicy::Interval(fsync_interval_ms),
        _ => FsyncPolicy::Never,
    };
    for (name, f) in [
        ("key_serializer", serializers.0),
        ("value_serializer", serializers.1),
    ] {
        if let Some(f) = f {
            if !f.bind(py).is_callable() {
                return Err(PyTypeError::new_err(format!("{name} must be callable")));
            }
        }
    }
    let engine = py
        .detach(|| -> ottla_storage::Result<Arc<Engine>> {
            let store = Store::open(path)?;
            Engine::new(
                store,
                ProducerConfig {
                    linger_ms,
                    batch_size,
                    fsync: policy,
                    auto_create_topics,
                    num_partitions,
                    retention_check_interval_ms,
                    transactional_id,
                    transaction_timeout_ms,
                },
            )
        })
        .py()?;
    Ok(engine)
}

/// `commit_transaction` / `abort_transaction` for both producers.
pub(super) fn end_transaction(py: Python<'_>, engine: &Engine, commit: bool) -> PyResult<()> {
    let done = py.detach(|| engine.end_transaction(commit)).py()?;
    let _ = run(py, done);
    Ok(())
}

/// The offsets and group of `send_offsets_to_transaction`: offsets as
/// `{TopicPartition: offset | OffsetAndMetadata}` (kafka-python) or a list
/// of objects with `topic`, `partition`, `offset` (confluent-kafka); the
/// group as `Consumer.consumer_group_metadata()` or its id.
pub(super) fn parse_txn_offsets(
    offsets: &Bound<'_, PyAny>,
    group_metadata: &Bound<'_, PyAny>,
) -> PyResult<(String, Vec<OffsetEntry>)> {
    let group: String = match group_metadata.extract::<String>() {
        Ok(g) => g,
        Err(_) => group_metadata.getattr("group_id")?.extract()?,
    };
    let mut out = Vec::new();
    let mut push = |t: String, p: i64, o: i64, meta: String| -> PyResult<()> {
        let p =
            u32::try_from(p).map_err(|_| PyValueError::new_err(format!("bad partition {p}")))?;
        if o < 0 {
            return Err(PyValueError::new_err(format!(
                "cannot commit negative offset {o}"
            )));
        }
        out.push((t, p, o, -1, meta));
        Ok(())
    };
    let meta_of = |v: &Bound<'_, PyAny>| {
        v.getattr("metadata")
            .ok()
            .and_then(|m| m.extract::<Option<String>>().ok())
            .flatten()
            .unwrap_or_default()
    };
    if let Ok(d) = offsets.cast::<PyDict>() {
        for (k, v) in d.iter() {
            let (t, p): (String, i64) = match k.extract() {
                Ok(tp) => tp,
                Err(_) => (
                    k.getattr("topic")?.extract()?,
                    k.getattr("partition")?.extract()?,
                ),
            };
            if let Ok(o) = v.extract::<i64>() {
                push(t, p, o, String::new())?;
            } else {
                push(t, p, v.getattr("offset")?.extract()?, meta_of(&v))?;
            }
        }
    } else {
        for item in offsets.try_iter()? {
            let item = item?;
            push(
                item.getattr("topic")?.extract()?,
                item.getattr("partition")?.extract()?,
                item.getattr("offset")?.extract()?,
                meta_of(&item),
            )?;
        }
    }
    Ok((group, out))
}

/// `send_offsets_to_transaction` for both producers (blocking).
pub(super) fn send_offsets(
    py: Python<'_>,
    engine: &Engine,
    offsets: &Bound<'_, PyAny>,
    group_metadata: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let (group, entries) = parse_txn_offsets(offsets, group_metadata)?;
    py.detach(|| engine.transactions()?.send_offsets(&group, &entries))
        .py()
}

/// How `__repr__` shows a producer's fsync policy: as its settings.
pub(super) fn fsync_label(policy: FsyncPolicy) -> String {
    match policy {
        FsyncPolicy::Never => "fsync='never'".to_string(),
        FsyncPolicy::Interval(ms) => format!("fsync='interval' fsync_interval_ms={ms}"),
        FsyncPolicy::Always => "fsync='always'".to_string(),
    }
}

pub(super) fn check_partition(partition: Option<i64>) -> PyResult<Option<u32>> {
    match partition {
        None => Ok(None),
        Some(p) if (0..=u32::MAX as i64).contains(&p) => Ok(Some(p as u32)),
        Some(p) => Err(PyValueError::new_err(format!(
            "partition must be >= 0, got {p}"
        ))),
    }
}

pub(super) fn check_timestamp(timestamp: Option<i64>) -> PyResult<()> {
    match timestamp {
        Some(t) if t < 0 => Err(PyValueError::new_err(format!(
            "timestamp must be milliseconds since the epoch (>= 0), got {t}"
        ))),
        _ => Ok(()),
    }
}

pub(super) fn parse_fsync(fsync: &str) -> PyResult<bool> {
    match fsync {
        "never" => Ok(false),
        "interval" => Ok(false),
        "always" => Ok(true),
        other => Err(PyValueError::new_err(format!(
            "fsync must be 'never', 'interval' or 'always', not {other:?}"
        ))),
    }
}

#[pymethods]
impl Producer {
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
        let _ = client_id; // accepted for Kafka compatibility
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
        Ok(Producer {
            engine,
            acks,
            key_serializer,
            value_serializer,
            path,
        })
    }

    /// Queue a record; returns a future resolving to its `RecordMetadata`.
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
    ) -> PyResult<FutureRecordMetadata> {
        let timestamp = pick_timestamp(timestamp_ms, timestamp)?;
        let partition = check_partition(partition)?;
        let value = serialize(py, &self.value_serializer, value, "value")?;
        let key = serialize(py, &self.key_serializer, key, "key")?;
        let vs = value.as_ref().map(|v| v.as_slice()).transpose()?;
        let ks = key.as_ref().map(|k| k.as_slice()).transpose()?;
        // A large immutable `bytes` value is written from its own buffer,
        // with the GIL released: `value` keeps the object alive meanwhile.
        if let (Some(BytesArg::Bytes(_)), Some(v)) = (&value, vs) {
            if self.engine.sends_direct(v.len()) {
                let owned = match &headers {
                    None => Vec::new(),
                    Some(h) => extract_headers(h)?,
                };
                let refs: Vec<(&[u8], Option<&[u8]>)> = owned
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                    .collect();
                let engine = &self.engine;
                let (receipt, done) = py
                    .detach(|| engine.send_direct(topic, ks, v, &refs, partition, timestamp))
                    .py()?;
                let _ = run(py, done);
                return Ok(FutureRecordMetadata {
                    engine: self.engine.clone(),
                    receipt,
                    acks: self.acks,
                });
            }
        }
        let (receipt, sealed) =
            send_one(&self.engine, topic, ks, vs, headers, partition, timestamp)?;
        // A sealed batch goes to the linger thread, as in `send_many`, so the
        // page-cache copy (~20 ns of kernel time per 100-byte record) leaves
        // the sending thread; past `MAX_READY` waiting batches, or with
        // fsync="always" (whose appends stay in the caller, see
        // `send_direct`), this thread appends them itself.
        if sealed
            && (self.engine.config().fsync == FsyncPolicy::Always
                || !self.engine.append_in_background(MAX_READY))
        {
            self.flush_sealed(py)?;
        }
        Ok(FutureRecordMetadata {
            engine: self.engine.clone(),
            receipt,
            acks: self.acks,
        })
    }

    /// Send many values (and optionally keys) to one topic in one call.
    /// Returns a `BatchFuture`; `get()` on it waits for all of them.
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
    ) -> PyResult<BatchFuture> {
        let timestamp = pick_timestamp(timestamp_ms, timestamp)?;
        let partition = check_partition(partition)?;
        // Work in chunks: sealed batches are appended as we go, so memory
        // stays bounded by the chunk, not by the whole input.
        const CHUNK: usize = 8192;
        let timestamp = timestamp.unwrap_or_else(ottla_storage::log::now_ms);
        let mut runs = Vec::new();
        let mut count = 0usize;
        // The bulk path: a list of bytes (or None) with no serializer and no
        // keys is encoded a batch at a time from borrowed buffers. Only an
        // exact list: a subclass may override iteration, which the general
        // path honours.
        if let (None, None, Ok(list)) =
            (&self.value_serializer, &keys, values.cast_exact::<PyList>())
        {
            let mut at = 0;
            let mut slices: Vec<Option<&[u8]>> = Vec::with_capacity(CHUNK);
            // The list's length is re-read per chunk: flush_sealed releases
            // the GIL, and another thread may change the list meanwhile.
            while at < list.len() {
                let end = list.len().min(at + CHUNK);
                slices.clear();
                let (mut r, sealed) = if borrow_bytes(list, at, end, &mut slices) {
                    self.engine
                        .send_values(topic, &slices, partition, timestamp)
                        .py()?
                } else {
                    let items = (at..end).map(|i| list.get_item(i));
                    let (r, _, sealed) = send_chunk(
                        py,
                        &self.engine,
                        (&self.key_serializer, &self.value_serializer),
                        topic,
                        items,
                        None,
                        partition,
                        timestamp,
                    )?;
                    (r, sealed)
                };
                slices.clear();
                count += end - at;
                at = end;
                runs.append(&mut r);
                // The linger thread appends sealed batches while this
                // thread encodes the next chunk.
                if sealed && !self.engine.append_in_background(MAX_READY) {
                    self.flush_sealed(py)?;
                }
            }
            return Ok(BatchFuture {
                engine: self.engine.clone(),
                runs,
                count,
                timestamp,
                acks: self.acks,
            });
        }
        let mut values = values.try_iter()?;
        let mut keys = keys.map(|k| k.try_iter()).transpose()?;
        loop {
            let (mut r, n, sealed) = send_chunk(
                py,
                &self.engine,
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
                        return Err(PyValueError::new_err("keys has more items than values"));
                    }
                }
                break;
            }
            count += n;
            runs.append(&mut r);
            if sealed {
                self.flush_sealed(py)?;
            }
        }
        Ok(BatchFuture {
            engine: self.engine.clone(),
            runs,
            count,
            timestamp,
            acks: self.acks,
        })
    }

    /// Append every queued record; raises the first error of a failed batch.
    /// Appends are local writes, so `timeout` (accepted for Kafka
    /// compatibility) never cuts one short.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        timeout_of(timeout)?;
        let engine = &self.engine;
        let done = py.detach(|| engine.flush());
        // Raising tells the caller about every failed append, so it lifts
        // the partitions' fences (see `PartitionFence`).
        let fenced = engine.take_failure();
        run(py, done).and(fenced.map_or(Ok(()), |e| Err(to_pyerr(&e))))
    }

    /// Kafka's `init_transactions()`: registers the `transactional_id`,
    /// fencing any older producer with it (its open transaction is
    /// aborted).
    #[pyo3(signature = (timeout=None))]
    fn init_transactions(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        timeout_of(timeout)?;
        let engine = &self.engine;
        py.detach(|| engine.transactions()?.init().map(|_| ())).py()
    }

    /// Kafka's `begin_transaction()`.
    fn begin_transaction(&self) -> PyResult<()> {
        self.engine.transactions().and_then(|t| t.begin()).py()
    }

    /// Kafka's `commit_transaction()`: appends every record sent, then
    /// commits them (and any offsets sent) atomically.
    #[pyo3(signature = (timeout=None))]
    fn commit_transaction(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        timeout_of(timeout)?;
        end_transaction(py, &self.engine, true)
    }

    /// Kafka's `abort_transaction()`: no read_committed reader ever sees
    /// the transaction's records, and its offsets are dropped.
    #[pyo3(signature = (timeout=None))]
    fn abort_transaction(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        timeout_of(timeout)?;
        end_transaction(py, &self.engine, false)
    }

    /// Kafka's `send_offsets_to_transaction(offsets, group_metadata)`: the
    /// consumer group's offsets committed with the transaction.
    #[pyo3(signature = (offsets, group_metadata, timeout=None))]
    fn send_offsets_to_transaction(
        &self,
        py: Python<'_>,
        offsets: Bound<'_, PyAny>,
        group_metadata: Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        timeout_of(timeout)?;
        send_offsets(py, &self.engine, &offsets, &group_metadata)
    }

    /// Flush and release; later sends raise `ClosedError`.
    #[pyo3(signature = (timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        timeout_of(timeout)?;
        let engine = &self.engine;
        let done = py.detach(|| engine.close());
        run(py, done)
    }

    /// Partition numbers of a topic (created if auto_create_topics allows).
    fn partitions_for(&self, py: Python<'_>, topic: &str) -> PyResult<Vec<u32>> {
        let engine = &self.engine;
        let n = py.detach(|| engine.partitions_for(topic)).py()?;
        Ok((0..n).collect())
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn closed(&self) -> bool {
        self.engine.is_closed()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        self.close(py, None)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let c = self.engine.config();
        let fsync = fsync_label(c.fsync);
        format!(
            "<ottla.Producer path={} acks={} linger_ms={} batch_size={} {}{}>",
            py_repr_str(py, &self.path),
            self.acks.label(),
            c.linger_ms,
            c.batch_size,
            fsync,
            if self.engine.is_closed() {
                " closed"
            } else {
                ""
            }
        )
    }
}

/// Borrow `list[start..end]` as byte slices for the bulk `send_many` path:
/// `None` items are null values. Returns false, leaving `out` partly
/// filled, at the first item that is not exactly `bytes`; the caller then
/// takes the general path for the chunk.
///
/// Per item this is one `PyList_GetItem` and one `PyBytes_AsStringAndSize`,
/// with no reference-count traffic: the list keeps every item alive, and the
/// slices are used and dropped before the caller runs Python code or
/// releases the GIL, so nothing can mutate the list while they exist (the
/// `'a` borrow of the list ties them to the caller's scope).
fn borrow_bytes<'a>(
    list: &'a Bound<'_, PyList>,
    start: usize,
    end: usize,
    out: &mut Vec<Option<&'a [u8]>>,
) -> bool {
    let bytes_type = std::ptr::addr_of_mut!(pyo3::ffi::PyBytes_Type);
    // SAFETY: Py_None only returns the singleton's address.
    let none = unsafe { pyo3::ffi::Py_None() };
    for i in start..end.min(list.len()) {
        // SAFETY: the GIL is held (we hold a Bound) and i < len(list), so
        // this returns a borrowed, non-null reference kept alive by the list.
        let item = unsafe { pyo3::ffi::PyList_GetItem(list.as_ptr(), i as pyo3::ffi::Py_ssize_t) };
        if item.is_null() {
            // Cannot happen with i < len; clear the IndexError and let the
            // general path report whatever is wrong.
            let _ = PyErr::take(list.py());
            return false;
        }
        if item == none {
            out.push(None);
            continue;
        }
        // SAFETY: item is a live object (above).
        if unsafe { pyo3::ffi::Py_TYPE(item) } != bytes_type {
            return false;
        }
        let mut ptr: *mut std::os::raw::c_char = std::ptr::null_mut();
        let mut len: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: item is exactly a bytes object, for which this only reads
        // its buffer address and size.
        if unsafe { pyo3::ffi::PyBytes_AsStringAndSize(item, &mut ptr, &mut len) } != 0
            || ptr.is_null()
            || len < 0
        {
            let _ = PyErr::take(list.py());
            return false;
        }
        // SAFETY: a bytes object's buffer is immutable and lives as long as
        // the object, which the list holds for the whole borrow (see above).
        out.push(Some(unsafe {
            std::slice::from_raw_parts(ptr as *const u8, len as usize)
        }));
    }
    true
}

pub(super) fn extract_headers(h: &Bound<'_, PyAny>) -> PyResult<Vec<(String, Option<Vec<u8>>)>> {
    let items: Bound<'_, PyAny> = if let Ok(d) = h.cast::<PyDict>() {
        d.items().into_any()
    } else {
        h.clone()
    };
    let mut out = Vec::new();
    for item in items.try_iter()? {
        let item = item?;
        let pair = item.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("headers must be a dict or a list of (str, bytes | None) pairs")
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each header must be a (key, value) pair",
            ));
        }
        let k = pair.get_item(0)?;
        let k: String = k
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("header keys must be str"))?
            .to_str()?
            .to_string();
        let v = pair.get_item(1)?;
        let v = if v.is_none() {
            None
        } else {
            Some(BytesArg::from_obj(&v, "header value")?.as_slice()?.to_vec())
        };
        out.push((k, v));
    }
    Ok(out)
}

fn metadata_of(r: &SendReceipt, handle: &BatchHandle) -> Result<RecordMetadata, Arc<Error>> {
    match handle.result() {
        Some(Ok(base)) => Ok(RecordMetadata {
            topic: handle.topic.to_string(),
            partition: handle.partition,
            offset: base + r.index as i64,
            timestamp: r.timestamp,
        }),
        Some(Err(e)) => Err(e.clone()),
        None => Err(Arc::new(Error::IllegalState("batch not complete".into()))),
    }
}

fn wait_batch(
    py: Python<'_>,
    engine: &Arc<Engine>,
    handle: &Arc<BatchHandle>,
    timeout: Option<Duration>,
) -> PyResult<()> {
    if !handle.is_done() {
        let done = py.detach(|| engine.flush_batch(handle));
        let _ = run(py, done);
        let ok = py.detach(|| handle.wait(timeout));
        if !ok {
            return Err(OttlaTimeoutError::new_err(format!(
                "record not acknowledged within {:?}",
                timeout.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// The pending result of one `send()`. A free list keeps the objects of a
/// `send()` loop that drops its futures from going through the allocator.
#[pyclass(module = "ottla", frozen, freelist = 64)]
pub struct FutureRecordMetadata {
    engine: Arc<Engine>,
    receipt: SendReceipt,
    acks: Acks,
}

#[pymethods]
impl FutureRecordMetadata {
    /// Wait until the record is appended; returns its `RecordMetadata`.
    #[pyo3(signature = (timeout=None))]
    fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<RecordMetadata> {
        timeout_of(timeout)?;
        if self.acks == Acks::None {
            return Ok(unacked_metadata(&self.receipt));
        }
        let handle = &self.receipt.batch;
        wait_batch(py, &self.engine, handle, timeout_of(timeout)?)?;
        metadata_of(&self.receipt, handle).map_err(|e| {
            handle.error_delivered();
            to_pyerr(&e)
        })
    }

    /// Same as `get()`, as in concurrent.futures.
    #[pyo3(signature = (timeout=None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<RecordMetadata> {
        self.get(py, timeout)
    }

    #[getter]
    fn is_done(&self) -> bool {
        self.done()
    }

    fn done(&self) -> bool {
        self.acks == Acks::None || self.receipt.batch.is_done()
    }

    fn succeeded(&self) -> bool {
        self.acks == Acks::None || matches!(self.receipt.batch.result(), Some(Ok(_)))
    }

    fn failed(&self) -> bool {
        self.acks != Acks::None && matches!(self.receipt.batch.result(), Some(Err(_)))
    }

    /// The exception if the send failed, else None.
    #[getter]
    fn exception(&self) -> Option<PyErr> {
        if self.acks == Acks::None {
            return None;
        }
        match self.receipt.batch.result() {
            Some(Err(e)) => {
                self.receipt.batch.error_delivered();
                Some(to_pyerr(e))
            }
            _ => None,
        }
    }

    /// Call `fn(record_metadata)` once the record is appended.
    fn add_callback(slf: Bound<'_, Self>, f: Py<PyAny>) -> Bound<'_, Self> {
        let this = slf.get();
        if this.acks == Acks::None {
            let py = slf.py();
            if let Err(e) = f.call1(py, (unacked_metadata(&this.receipt),)) {
                e.write_unraisable(py, None);
            }
            return slf;
        }
        let handle = this.receipt.batch.clone();
        let index = this.receipt.index;
        let ts = this.receipt.timestamp;
        this.receipt.batch.on_complete(Box::new(move |r| {
            if let Ok(base) = r {
                Python::attach(|py| {
                    let md = RecordMetadata {
                        topic: handle.topic.to_string(),
                        partition: handle.partition,
                        offset: base + index as i64,
                        timestamp: ts,
                    };
                    if let Err(e) = f.call1(py, (md,)) {
                        e.write_unraisable(py, None);
                    }
                });
            }
        }));
        slf
    }

    /// Call `fn(exception)` if the send fails.
    fn add_errback(slf: Bound<'_, Self>, f: Py<PyAny>) -> Bound<'_, Self> {
        if slf.get().acks == Acks::None {
            return slf; // acks=0: failures reach flush() only
        }
        let handle = slf.get().receipt.batch.clone();
        slf.get().receipt.batch.on_complete(Box::new(move |r| {
            if let Err(e) = r {
                handle.error_delivered();
                Python::attach(|py| {
                    let err = to_pyerr(e).into_value(py);
                    if let Err(e) = f.call1(py, (err,)) {
                        e.write_unraisable(py, None);
                    }
                });
            }
        }));
        slf
    }

    fn __repr__(&self) -> String {
        let state = match self.receipt.batch.result() {
            _ if self.acks == Acks::None => "acks=0".to_string(),
            None => "pending".to_string(),
            Some(Ok(base)) => format!("offset={}", base + self.receipt.index as i64),
            Some(Err(e)) => format!("failed: {e}"),
        };
        format!(
            "<FutureRecordMetadata {}-{} {state}>",
            self.receipt.batch.topic, self.receipt.batch.partition
        )
    }
}

/// `RecordMetadata` of every record of a `send_many()` whose batches are all
/// done, in send order (offset -1 under `acks=0`, as Kafka's clients report);
/// `not_complete` is the error for a batch that is not (the sync and asyncio
/// futures raise different ones).
pub(crate) fn runs_metadata<'py>(
    py: Python<'py>,
    runs: &[SendRun],
    acks: Acks,
    timestamp: i64,
    not_complete: impl Fn() -> PyErr,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for r in runs {
        if acks == Acks::None {
            for _ in 0..r.count {
                list.append(RecordMetadata {
                    topic: r.batch.topic.to_string(),
                    partition: r.batch.partition,
                    offset: -1,
                    timestamp,
                })?;
            }
            continue;
        }
        let base = match r.batch.result() {
            Some(Ok(base)) => *base,
            Some(Err(e)) => {
                r.batch.error_delivered();
                return Err(to_pyerr(e));
            }
            None => return Err(not_complete()),
        };
        for i in 0..r.count {
            list.append(RecordMetadata {
                topic: r.batch.topic.to_string(),
                partition: r.batch.partition,
                offset: base + (r.first_index + i) as i64,
                timestamp,
            })?;
        }
    }
    Ok(list)
}

/// The pending result of one `send_many()`.
#[pyclass(module = "ottla", frozen)]
pub struct BatchFuture {
    engine: Arc<Engine>,
    runs: Vec<SendRun>,
    count: usize,
    timestamp: i64,
    acks: Acks,
}

#[pymethods]
impl BatchFuture {
    /// Wait for every record; returns a list of `RecordMetadata` in send order.
    #[pyo3(signature = (timeout=None))]
    fn get<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyList>> {
        self.wait(py, timeout)?;
        runs_metadata(py, &self.runs, self.acks, self.timestamp, || {
            to_pyerr(&Error::IllegalState("batch not complete".into()))
        })
    }

    /// Wait for every record without building metadata objects.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = timeout_of(timeout)?;
        if self.acks == Acks::None {
            return Ok(());
        }
        for r in &self.runs {
            wait_batch(py, &self.engine, &r.batch, t)?;
            if let Some(Err(e)) = r.batch.result() {
                r.batch.error_delivered();
                return Err(to_pyerr(e));
            }
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.count
    }

    fn done(&self) -> bool {
        self.acks == Acks::None || self.runs.iter().all(|r| r.batch.is_done())
    }

    fn __repr__(&self) -> String {
        format!("<BatchFuture records={} done={}>", self.count, self.done())
    }
}
