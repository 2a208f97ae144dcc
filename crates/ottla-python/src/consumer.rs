//! `ottla.Consumer`: iteration, `poll`, seeking and committing.

use crate::errors::PyResultExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use super::arrow::{ArrowBatch, Limits as ArrowLimits};
use super::types::{
    new_topic_partition, path_arg, py_repr_str, short_repr, tp_pair, Record, TopicPartition,
};
// `Tp` is the engine's `TopicPartition` (`ottla_storage::topic`), which
// shares its topic name; `TopicPartition` here is the Python-facing class,
// which owns one. `py_topic_partition` converts.
use ottla_client::consumer::{
    Consumer as Engine, ConsumerConfig, OffsetReset, RebalanceListener, Subscription,
    TopicPartition as Tp,
};
use ottla_client::group::assignor::Assignor;
use ottla_record::RecordView;
use ottla_storage::store::Store;

/// Longest single sleep while blocking, so Ctrl-C is noticed promptly.
const SLICE: Duration = Duration::from_millis(100);

#[pyclass(module = "ottla._core", name = "Consumer", subclass, frozen, weakref)]
pub struct Consumer {
    engine: Arc<Engine>,
    /// The callbacks of the current subscription, for their errors.
    listener: Mutex<Option<Arc<PyListener>>>,
    key_deserializer: Option<Py<PyAny>>,
    value_deserializer: Option<Py<PyAny>>,
    consumer_timeout: Option<Duration>,
    max_poll_records: usize,
    topic_names: Mutex<TopicNames>,
    path: String,
}

/// Each topic's name as one shared Python `str`, so a record costs a
/// reference, not a string; and each partition's `TopicPartition` (an
/// immutable tuple), so a `poll()` result's keys cost a reference too.
#[derive(Default)]
struct TopicNames {
    all: HashMap<Arc<str>, Py<PyString>>,
    partitions: HashMap<Tp, Py<PyAny>>,
    /// The last one asked for.
    last: Option<(Arc<str>, Py<PyString>)>,
}

fn tps(args: &Bound<'_, PyAny>) -> PyResult<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for item in args.try_iter()? {
        out.push(tp_pair(&item?)?);
    }
    Ok(out)
}

fn tp_key(obj: &Bound<'_, PyAny>) -> PyResult<(String, u32)> {
    tp_pair(obj)
}

/// The topics of `Consumer(path, *topics)`: names, or one list (or tuple,
/// or set) of names, as users of kafka-python's `subscribe([...])` pass.
fn topic_args(topics: &Bound<'_, PyTuple>) -> PyResult<Vec<String>> {
    let mut out = Vec::new();
    let bad = |item: &Bound<'_, PyAny>| {
        PyTypeError::new_err(format!(
            "Consumer() topics must be str, given as Consumer(path, \"a\", \"b\") or \
             Consumer(path, [\"a\", \"b\"]); got {}",
            short_repr(item)
        ))
    };
    for item in topics.iter() {
        if let Ok(s) = item.cast::<PyString>() {
            out.push(s.to_str()?.to_string());
        } else if item.cast::<PyList>().is_ok()
            || item.cast::<PyTuple>().is_ok()
            || item.cast::<pyo3::types::PySet>().is_ok()
            || item.cast::<pyo3::types::PyFrozenSet>().is_ok()
        {
            for t in item.try_iter()? {
                let t = t?;
                match t.cast::<PyString>() {
                    Ok(s) => out.push(s.to_str()?.to_string()),
                    Err(_) => return Err(bad(&t)),
                }
            }
        } else {
            return Err(bad(&item));
        }
    }
    Ok(out)
}

/// The engine's `TopicPartition` as the Python-facing class.
fn py_topic_partition(tp: &Tp) -> TopicPartition {
    TopicPartition {
        topic: tp.topic.to_string(),
        partition: tp.partition,
    }
}

/// Rebalance callbacks in confluent-kafka's shape (`on_assign(consumer,
/// partitions)`, ...) and/or kafka-python's listener object
/// (`on_partitions_assigned(partitions)`, ...). The engine calls them on the
/// polling thread with no lock held; the first exception is kept and raised
/// by the consumer call that ran them.
struct PyListener {
    /// `weakref.ref(consumer)`: the consumer owns its engine, which owns
    /// this listener, so a strong reference would keep it alive forever.
    consumer: Py<PyAny>,
    on_assign: Option<Py<PyAny>>,
    on_revoke: Option<Py<PyAny>>,
    on_lost: Option<Py<PyAny>>,
    listener: Option<Py<PyAny>>,
    error: Mutex<Option<PyErr>>,
}

#[derive(Clone, Copy)]
enum Change {
    Assigned,
    Revoked,
    Lost,
}

impl PyListener {
    fn call(&self, change: Change, partitions: &[Tp]) {
        Python::attach(|py| {
            if let Err(e) = self.call_py(py, change, partitions) {
                let mut err = self.error.lock();
                if err.is_none() {
                    *err = Some(e);
                }
            }
        });
    }

    fn call_py(&self, py: Python<'_>, change: Change, partitions: &[Tp]) -> PyResult<()> {
        let list = PyList::empty(py);
        for tp in partitions {
            list.append(py_topic_partition(tp))?;
        }
        // Like confluent-kafka, a missing on_lost falls back to on_revoke.
        let func = match change {
            Change::Assigned => &self.on_assign,
            Change::Revoked => &self.on_revoke,
            Change::Lost => match &self.on_lost {
                Some(f) => &Some(f.clone_ref(py)),
                None => &self.on_revoke,
            },
        };
        if let Some(f) = func {
            let consumer = self.consumer.bind(py).call0()?;
            if !consumer.is_none() {
                f.bind(py).call1((consumer, &list))?;
            }
        }
        if let Some(l) = &self.listener {
            let l = l.bind(py);
            let name = match change {
                Change::Assigned => "on_partitions_assigned",
                Change::Revoked => "on_partitions_revoked",
                // kafka-python listeners may lack it; Java's default is "revoked".
                Change::Lost if l.hasattr("on_partitions_lost")? => "on_partitions_lost",
                Change::Lost => "on_partitions_revoked",
            };
            l.call_method1(name, (&list,))?;
        }
        Ok(())
    }
}

impl RebalanceListener for PyListener {
    fn on_partitions_revoked(&self, partitions: &[Tp]) {
        self.call(Change::Revoked, partitions);
    }
    fn on_partitions_assigned(&self, partitions: &[Tp]) {
        self.call(Change::Assigned, partitions);
    }
    fn on_partitions_lost(&self, partitions: &[Tp]) {
        self.call(Change::Lost, partitions);
    }
}

fn callable(py: Python<'_>, name: &str, f: Option<Py<PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match f {
        Some(f) if !f.bind(py).is_callable() => {
            Err(PyTypeError::new_err(format!("{name} must be callable")))
        }
        f => Ok(f),
    }
}

fn strategy(value: &Bound<'_, PyAny>) -> PyResult<Assignor> {
    // A string (confluent-kafka; a comma list takes the first) or a list of
    // names (kafka-python takes classes; here their names).
    let first = if let Ok(s) = value.extract::<String>() {
        s.split(',').next().unwrap_or("").trim().to_string()
    } else if let Ok(v) = value.extract::<Vec<String>>() {
        v.into_iter().next().unwrap_or_default()
    } else {
        return Err(PyTypeError::new_err(
            "partition_assignment_strategy must be a string or a list of strings",
        ));
    };
    Assignor::parse(&first).py()
}

impl Consumer {
    /// Raise the first exception a rebalance callback raised, if any.
    fn callback_error(&self) -> PyResult<()> {
        let listener = self.listener.lock().clone();
        match listener.and_then(|l| l.error.lock().take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn topic_name(&self, py: Python<'_>, t: &Arc<str>) -> Py<PyString> {
        let mut names = self.topic_names.lock();
        // Records come in runs from one partition: the last topic's name
        // is found by comparing a pointer, not by hashing the string.
        if let Some((last, name)) = &names.last {
            if Arc::ptr_eq(last, t) {
                return name.clone_ref(py);
            }
        }
        let name = names
            .all
            .entry(t.clone())
            .or_insert_with(|| PyString::new(py, t).unbind())
            .clone_ref(py);
        names.last = Some((t.clone(), name.clone_ref(py)));
        name
    }

    /// The partition's `ottla.TopicPartition`, made once per partition.
    fn tp_object<'py>(&self, py: Python<'py>, tp: &Tp) -> PyResult<Bound<'py, PyAny>> {
        if let Some(o) = self.topic_names.lock().partitions.get(tp) {
            return Ok(o.bind(py).clone());
        }
        let name = self.topic_name(py, &tp.topic);
        let o = new_topic_partition(py, name.into_bound(py), tp.partition)?;
        self.topic_names
            .lock()
            .partitions
            .insert(tp.clone(), o.clone().unbind());
        Ok(o)
    }

    /// The record as a Python object. Its fields are immutable and hold
    /// only `str`, `int`, `bytes`, `None` and a list no caller can reach
    /// (the `headers` getter copies it), so it can be part of no reference
    /// cycle: it is left out of the cyclic GC, which would otherwise walk
    /// every record of a large `poll()` result again and again. With a
    /// deserializer, `key`/`value` may be anything, so it stays tracked
    /// (and `Record.__traverse__` shows the GC those two).
    fn make_record<'py>(
        &self,
        py: Python<'py>,
        tp: &Tp,
        rec: &RecordView<'_>,
    ) -> PyResult<Bound<'py, Record>> {
        let deserialized = self.key_deserializer.is_some() || self.value_deserializer.is_some();
        // Only a deserialized key or value can make a cycle through a record.
        let record = self
            .record_fields(py, tp, rec)?
            .into_object(py, deserialized)?;
        Ok(record)
    }

    fn record_fields(&self, py: Python<'_>, tp: &Tp, rec: &RecordView<'_>) -> PyResult<Record> {
        let conv = |b: Option<&[u8]>, de: &Option<Py<PyAny>>| -> PyResult<Py<PyAny>> {
            let obj = b.map(|b| PyBytes::new(py, b).into_any());
            match (de, obj) {
                (Some(f), Some(o)) => Ok(f.bind(py).call1((o,))?.unbind()),
                (_, Some(o)) => Ok(o.unbind()),
                // Like Kafka's clients, a null key or value stays None.
                (_, None) => Ok(py.None()),
            }
        };
        let headers = if rec.header_count == 0 {
            None
        } else {
            let list = PyList::empty(py);
            for (k, v) in rec.headers() {
                let key = PyString::new(py, &String::from_utf8_lossy(k));
                let val = v.map(|v| PyBytes::new(py, v));
                list.append((key, val))?;
            }
            Some(list.unbind())
        };
        Ok(Record {
            topic: self.topic_name(py, &tp.topic),
            partition: tp.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: conv(rec.key, &self.key_deserializer)?,
            value: conv(rec.value, &self.value_deserializer)?,
            headers,
            message: None,
        })
    }

    /// Hand out up to `max` records as Python objects, with the GIL held.
    fn drain_into<'py>(
        &self,
        py: Python<'py>,
        max: usize,
        f: &mut dyn FnMut(&Tp, Bound<'py, Record>) -> PyResult<()>,
    ) -> PyResult<usize> {
        let mut err: Option<PyErr> = None;
        let n = self.engine.drain(max, &mut |tp, rec| {
            if err.is_some() {
                return;
            }
            match self.make_record(py, tp, rec).and_then(|r| f(tp, r)) {
                Ok(()) => {}
                Err(e) => err = Some(e),
            }
        });
        self.callback_error()?;
        let n = n.py()?;
        match err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    fn watermarks<'py>(
        &self,
        py: Python<'py>,
        partitions: &Bound<'py, PyAny>,
        start: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (t, p) in tps(partitions)? {
            let engine = &self.engine;
            // Detached: a read_committed end may read the partition's
            // producer state, under the consumer's lock.
            let (lo, hi) = py.detach(|| engine.watermarks(&t, p)).py()?;
            out.set_item(
                TopicPartition {
                    topic: t,
                    partition: p,
                },
                if start { lo } else { hi },
            )?;
        }
        Ok(out)
    }

    /// Wait (GIL released, in slices so signals are seen) until data may be
    /// there or the deadline passes.
    fn wait_until(&self, py: Python<'_>, deadline: Option<Instant>) -> PyResult<bool> {
        loop {
            let slice = match deadline {
                None => SLICE,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    (d - now).min(SLICE)
                }
            };
            let engine = &self.engine;
            if py.detach(|| engine.wait(slice)).py()? {
                return Ok(true);
            }
            py.check_signals()?;
        }
    }
}

#[pymethods]
impl Consumer {
    #[new]
    #[pyo3(signature = (
        path, *topics, group_id=None, auto_offset_reset="latest", enable_auto_commit=true,
        auto_commit_interval_ms=5000, consumer_timeout_ms=None, max_poll_records=500,
        max_partition_fetch_bytes=1048576, check_crcs=true, auto_create_topics=false,
        num_partitions=1, key_deserializer=None, value_deserializer=None, client_id=None,
        partition_assignment_strategy=None, session_timeout_ms=10000, busy_poll_us=0,
        isolation_level="read_uncommitted"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: Bound<'_, PyAny>,
        topics: Bound<'_, PyTuple>,
        group_id: Option<String>,
        auto_offset_reset: &str,
        enable_auto_commit: bool,
        auto_commit_interval_ms: u64,
        consumer_timeout_ms: Option<f64>,
        max_poll_records: usize,
        max_partition_fetch_bytes: usize,
        check_crcs: bool,
        auto_create_topics: bool,
        num_partitions: u32,
        key_deserializer: Option<Py<PyAny>>,
        value_deserializer: Option<Py<PyAny>>,
        client_id: Option<String>,
        partition_assignment_strategy: Option<Bound<'_, PyAny>>,
        session_timeout_ms: u64,
        busy_poll_us: i64,
        isolation_level: &str,
    ) -> PyResult<Self> {
        let read_committed = match isolation_level {
            "read_committed" => true,
            "read_uncommitted" => false,
            other => {
                return Err(PyValueError::new_err(format!(
                    "isolation_level must be 'read_uncommitted' or 'read_committed', not {other:?}"
                )))
            }
        };
        let path = path_arg(&path, "Consumer")?;
        let topics = topic_args(&topics)?;
        let assignor = match &partition_assignment_strategy {
            None => Assignor::CooperativeSticky,
            Some(v) => strategy(v)?,
        };
        let reset = match auto_offset_reset {
            "earliest" | "smallest" | "beginning" => OffsetReset::Earliest,
            "latest" | "largest" | "end" => OffsetReset::Latest,
            "none" => OffsetReset::None,
            other => {
                return Err(PyValueError::new_err(format!(
                    "auto_offset_reset must be 'earliest', 'latest' or 'none', not {other:?}"
                )))
            }
        };
        if max_poll_records == 0 {
            return Err(PyValueError::new_err("max_poll_records must be positive"));
        }
        let consumer_timeout = match consumer_timeout_ms {
            None => None,
            Some(ms) if ms.is_infinite() && ms > 0.0 => None,
            Some(ms) if ms.is_finite() && ms >= 0.0 => Some(Duration::from_secs_f64(ms / 1000.0)),
            Some(ms) => {
                return Err(PyValueError::new_err(format!(
                    "consumer_timeout_ms must be >= 0, got {ms}"
                )))
            }
        };
        let max_busy = ottla_storage::beacon::MAX_BUSY_POLL.as_micros();
        if busy_poll_us < 0 || busy_poll_us as u128 > max_busy {
            return Err(PyValueError::new_err(format!(
                "busy_poll_us must be between 0 and {max_busy}, got {busy_poll_us}"
            )));
        }
        let config = ConsumerConfig {
            group_id,
            auto_offset_reset: reset,
            enable_auto_commit,
            auto_commit_interval_ms,
            max_partition_fetch_bytes: max_partition_fetch_bytes.max(1),
            auto_create_topics,
            num_partitions,
            check_crcs,
            client_id: client_id.unwrap_or_default(),
            assignor,
            session_timeout_ms,
            busy_poll: Duration::from_micros(busy_poll_us as u64),
            read_committed,
        };
        let engine = py
            .detach(|| -> ottla_storage::Result<Arc<Engine>> {
                let store = Store::open_existing(&path)?;
                let c = Arc::new(Engine::new(store, config)?);
                if !topics.is_empty() {
                    c.subscribe(&topics)?;
                }
                Ok(c)
            })
            .py()?;
        let root = engine.store().root().display().to_string();
        Ok(Consumer {
            engine,
            listener: Mutex::new(None),
            key_deserializer,
            value_deserializer,
            consumer_timeout,
            max_poll_records,
            topic_names: Mutex::new(TopicNames::default()),
            path: root,
        })
    }

    /// Subscribe to topics, or to every topic matching `pattern` (a
    /// regex over the whole name; a topic given as `"^..."` is a pattern
    /// too, as in confluent-kafka). With a `group_id` this joins the group.
    /// Rebalance callbacks: `on_assign(consumer, partitions)`,
    /// `on_revoke(...)`, `on_lost(...)`, or a `listener` with
    /// `on_partitions_assigned/revoked/lost(partitions)`.
    #[pyo3(signature = (topics=None, pattern=None, *, on_assign=None, on_revoke=None, on_lost=None, listener=None))]
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        slf: &Bound<'_, Self>,
        topics: Option<Bound<'_, PyAny>>,
        pattern: Option<String>,
        on_assign: Option<Py<PyAny>>,
        on_revoke: Option<Py<PyAny>>,
        on_lost: Option<Py<PyAny>>,
        listener: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let mut names: Vec<String> = match &topics {
            None => Vec::new(),
            Some(t) if t.is_instance_of::<PyString>() => vec![t.extract()?],
            Some(t) => t
                .try_iter()?
                .map(|x| x.and_then(|x| x.extract::<String>()))
                .collect::<PyResult<_>>()?,
        };
        let mut pattern = pattern;
        if let Some(i) = names.iter().position(|t| t.starts_with('^')) {
            if names.len() > 1 || pattern.is_some() {
                return Err(PyValueError::new_err(
                    "subscribe to one pattern, or to topic names, not both",
                ));
            }
            pattern = Some(names.remove(i));
        }
        let subscription = match pattern {
            Some(p) => {
                if !names.is_empty() {
                    return Err(PyValueError::new_err(
                        "subscribe to one pattern, or to topic names, not both",
                    ));
                }
                Subscription::pattern(&p).py()?
            }
            None if names.is_empty() => {
                return Err(PyValueError::new_err(
                    "subscribe() needs at least one topic or a pattern",
                ))
            }
            None => Subscription::Topics(names),
        };
        let has_callbacks =
            on_assign.is_some() || on_revoke.is_some() || on_lost.is_some() || listener.is_some();
        let py_listener = if has_callbacks {
            if let Some(l) = &listener {
                if !l.bind(py).hasattr("on_partitions_assigned")?
                    || !l.bind(py).hasattr("on_partitions_revoked")?
                {
                    return Err(PyTypeError::new_err(
                        "listener needs on_partitions_assigned and on_partitions_revoked methods",
                    ));
                }
            }
            let weak = py
                .import("weakref")?
                .getattr("ref")?
                .call1((slf,))?
                .unbind();
            Some(Arc::new(PyListener {
                consumer: weak,
                on_assign: callable(py, "on_assign", on_assign)?,
                on_revoke: callable(py, "on_revoke", on_revoke)?,
                on_lost: callable(py, "on_lost", on_lost)?,
                listener,
                error: Mutex::new(None),
            }))
        } else {
            None
        };
        let this = slf.get();
        let engine = &this.engine;
        // Revocations of the previous subscription report to its listener.
        let r = py.detach(|| engine.unsubscribe());
        this.callback_error()?;
        r.py()?;
        *this.listener.lock() = py_listener.clone();
        let dyn_listener = py_listener.map(|l| l as Arc<dyn RebalanceListener>);
        let r = py.detach(|| engine.subscribe_with(subscription, dyn_listener));
        this.callback_error()?;
        r.py()?;
        Ok(())
    }

    /// Leave the group (revoking, after an auto-commit) or drop the subscription.
    fn unsubscribe(&self, py: Python<'_>) -> PyResult<()> {
        let engine = &self.engine;
        let r = py.detach(|| engine.unsubscribe());
        self.callback_error()?;
        r.py()
    }

    fn subscription(&self) -> std::collections::BTreeSet<String> {
        self.engine.subscription().into_iter().collect()
    }

    /// Read exactly these partitions, with no group membership.
    fn assign(&self, py: Python<'_>, partitions: Bound<'_, PyAny>) -> PyResult<()> {
        let parts = tps(&partitions)?;
        let engine = &self.engine;
        let r = py.detach(|| engine.assign(&parts));
        self.callback_error()?;
        r.py()
    }

    fn assignment(&self) -> std::collections::BTreeSet<TopicPartition> {
        self.engine
            .assignment()
            .iter()
            .map(py_topic_partition)
            .collect()
    }

    /// Fetch records: `{TopicPartition: [Record, ...]}`, waiting up to
    /// `timeout_ms` when none are ready.
    #[pyo3(signature = (timeout_ms=0.0, max_records=None))]
    fn poll<'py>(
        &self,
        py: Python<'py>,
        timeout_ms: f64,
        max_records: Option<usize>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let max = max_records.unwrap_or(self.max_poll_records).max(1);
        let deadline = Instant::now() + Duration::from_secs_f64(timeout_ms.max(0.0) / 1000.0);
        let out = PyDict::new(py);
        loop {
            let mut lists: HashMap<(*const u8, u32), Bound<'py, PyList>> = HashMap::new();
            // Records come in runs from one partition: the run's list is
            // found without hashing.
            let mut last: Option<((*const u8, u32), Bound<'py, PyList>)> = None;
            let n = self.drain_into(py, max, &mut |tp, rec| {
                let key = (tp.topic.as_ptr(), tp.partition);
                if let Some((k, l)) = &last {
                    if *k == key {
                        return l.append(rec);
                    }
                }
                if let Some(l) = lists.get(&key) {
                    l.append(rec)?;
                    last = Some((key, l.clone()));
                    return Ok(());
                }
                let l = PyList::empty(py);
                l.append(&rec)?;
                last = Some((key, l.clone()));
                out.set_item(self.tp_object(py, tp)?, &l)?;
                lists.insert(key, l);
                Ok(())
            })?;
            if n > 0 || !self.wait_until(py, Some(deadline))? {
                return Ok(out);
            }
        }
    }

    /// Bulk read: up to `max_records` values (bytes, or None for a null
    /// value) across the assigned partitions, with no `Record` objects.
    /// Positions advance exactly as with `poll`. Deserializers are not
    /// applied. Waits up to `timeout_ms` when nothing is ready.
    #[pyo3(signature = (max_records=100000, timeout_ms=0.0))]
    fn poll_values<'py>(
        &self,
        py: Python<'py>,
        max_records: usize,
        timeout_ms: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let deadline = Instant::now() + Duration::from_secs_f64(timeout_ms.max(0.0) / 1000.0);
        let out = PyList::empty(py);
        loop {
            let mut err: Option<PyErr> = None;
            let n = self.engine.drain(max_records.max(1), &mut |_, rec| {
                let r = match rec.value {
                    Some(v) => out.append(PyBytes::new(py, v)),
                    None => out.append(py.None()),
                };
                if let (Err(e), None) = (r, &err) {
                    err = Some(e);
                }
            });
            self.callback_error()?;
            let n = n.py()?;
            if let Some(e) = err {
                return Err(e);
            }
            if n > 0 || !self.wait_until(py, Some(deadline))? {
                return Ok(out);
            }
        }
    }

    /// Bulk read into Arrow columns (see `ottla.Consumer.poll_arrow`):
    /// one `ArrowBatch` of up to `max_records` records and about
    /// `max_bytes` key/value/header bytes, built with the GIL released.
    /// Positions advance exactly as with `poll`. Waits up to `timeout_ms`
    /// when nothing is ready.
    #[pyo3(signature = (max_records=100000, max_bytes=None, timeout_ms=0.0))]
    fn _poll_arrow(
        &self,
        py: Python<'_>,
        max_records: usize,
        max_bytes: Option<usize>,
        timeout_ms: f64,
    ) -> PyResult<ArrowBatch> {
        let limits = arrow_limits(Some(max_records), max_bytes)?;
        let deadline = Instant::now() + Duration::from_secs_f64(timeout_ms.max(0.0) / 1000.0);
        loop {
            let engine = &self.engine;
            let cols = py.detach(|| super::arrow::poll_columns(engine, limits));
            self.callback_error()?;
            let cols = cols.py()?;
            if !cols.is_empty() || !self.wait_until(py, Some(deadline))? {
                return Ok(ArrowBatch::new(cols));
            }
        }
    }

    /// Everything between the current positions and the end offsets of the
    /// assigned partitions at call time, as `ArrowBatch`es (see
    /// `ottla.Consumer.read_arrow`). Never waits.
    #[pyo3(signature = (max_records=None, max_bytes=None))]
    fn _read_arrow(
        &self,
        py: Python<'_>,
        max_records: Option<usize>,
        max_bytes: Option<usize>,
    ) -> PyResult<Vec<ArrowBatch>> {
        let limits = arrow_limits(max_records, max_bytes)?;
        let engine = &self.engine;
        let batches = py.detach(|| super::arrow::read_columns(engine, limits));
        self.callback_error()?;
        Ok(batches.py()?.into_iter().map(ArrowBatch::new).collect())
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Record>> {
        // The common case: the next record of the batch being walked. No
        // rebalance callback can have run, so there is no error of theirs
        // to raise.
        if let Some(record) = self
            .engine
            .next_in_batch(|tp, rec| self.make_record(py, tp, rec))
            .py()?
        {
            return record;
        }
        let deadline = self.consumer_timeout.map(|t| Instant::now() + t);
        loop {
            let mut got = None;
            self.drain_into(py, 1, &mut |_, rec| {
                got = Some(rec);
                Ok(())
            })?;
            if let Some(r) = got {
                return Ok(r);
            }
            if !self.wait_until(py, deadline)? {
                return Err(PyStopIteration::new_err(()));
            }
        }
    }

    fn seek(&self, partition: Bound<'_, PyAny>, offset: i64) -> PyResult<()> {
        let (t, p) = tp_key(&partition)?;
        if offset < 0 {
            return Err(PyValueError::new_err(format!(
                "offset must be >= 0, got {offset}"
            )));
        }
        self.engine.seek(&t, p, offset).py()
    }

    #[pyo3(signature = (*partitions))]
    fn seek_to_beginning(&self, partitions: Bound<'_, PyTuple>) -> PyResult<()> {
        self.engine.seek_to(&tps(partitions.as_any())?, true).py()
    }

    #[pyo3(signature = (*partitions))]
    fn seek_to_end(&self, partitions: Bound<'_, PyTuple>) -> PyResult<()> {
        self.engine.seek_to(&tps(partitions.as_any())?, false).py()
    }

    /// Offset of the next record this consumer will return for `partition`.
    fn position(&self, partition: Bound<'_, PyAny>) -> PyResult<i64> {
        let (t, p) = tp_key(&partition)?;
        self.engine.position(&t, p).py()
    }

    /// kafka-python's `highwater(partition)`: the high watermark (the log
    /// end offset: every appended record is readable) of an assigned
    /// partition, or None when `partition` is not assigned. For a
    /// read_committed consumer, the last stable offset: the end it reads to.
    fn highwater(&self, py: Python<'_>, partition: Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        let (t, p) = tp_key(&partition)?;
        let assigned = self
            .engine
            .assignment()
            .iter()
            .any(|tp| &*tp.topic == t.as_str() && tp.partition == p);
        if !assigned {
            return Ok(None);
        }
        let engine = &self.engine;
        Ok(py
            .detach(|| engine.watermarks(&t, p))
            .ok()
            .map(|(_, hi)| hi))
    }

    /// The group's committed offset for `partition`, or None.
    fn committed(&self, partition: Bound<'_, PyAny>) -> PyResult<Option<i64>> {
        let (t, p) = tp_key(&partition)?;
        self.engine.committed(&t, p).py()
    }

    /// Kafka's `consumer_group_metadata()`: what
    /// `Producer.send_offsets_to_transaction` needs to know of the group.
    fn consumer_group_metadata(&self) -> PyResult<ConsumerGroupMetadata> {
        let group_id = self.engine.config().group_id.clone().ok_or_else(|| {
            super::errors::IllegalStateError::new_err(
                "consumer_group_metadata() needs a consumer with a group_id",
            )
        })?;
        Ok(ConsumerGroupMetadata {
            group_id,
            generation_id: -1,
            member_id: String::new(),
        })
    }

    /// Commit current positions, or `{TopicPartition: offset}` if given.
    #[pyo3(signature = (offsets=None))]
    fn commit(&self, py: Python<'_>, offsets: Option<Bound<'_, PyDict>>) -> PyResult<()> {
        let explicit = match offsets {
            None => None,
            Some(d) => {
                let mut v = Vec::with_capacity(d.len());
                for (k, val) in d.iter() {
                    let (t, p) = tp_key(&k)?;
                    let (off, meta) = if let Ok(o) = val.extract::<i64>() {
                        (o, String::new())
                    } else if let Ok(o) = val.getattr("offset") {
                        let meta = val
                            .getattr("metadata")
                            .ok()
                            .and_then(|m| m.extract::<Option<String>>().ok())
                            .flatten()
                            .unwrap_or_default();
                        (o.extract::<i64>()?, meta)
                    } else {
                        return Err(PyTypeError::new_err(
                            "offsets values must be int or OffsetAndMetadata",
                        ));
                    };
                    if off < 0 {
                        return Err(PyValueError::new_err(format!(
                            "cannot commit negative offset {off}"
                        )));
                    }
                    v.push((t, p, off, meta));
                }
                Some(v)
            }
        };
        let engine = &self.engine;
        py.detach(|| engine.commit(explicit.as_deref())).py()?;
        Ok(())
    }

    /// `{TopicPartition: (offset, timestamp) | None}` for the earliest record
    /// at or after each timestamp (ms).
    fn offsets_for_times<'py>(
        &self,
        py: Python<'py>,
        timestamps: Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (k, v) in timestamps.iter() {
            let (t, p) = tp_key(&k)?;
            let ts: i64 = v.extract()?;
            let engine = &self.engine;
            let r = py.detach(|| engine.offset_for_time(&t, p, ts)).py()?;
            let val = match r {
                Some((o, ts)) => OffsetAndTimestamp {
                    offset: o,
                    timestamp: ts,
                }
                .into_pyobject(py)?
                .into_any(),
                None => py.None().into_bound(py),
            };
            out.set_item(
                TopicPartition {
                    topic: t,
                    partition: p,
                },
                val,
            )?;
        }
        Ok(out)
    }

    /// `{TopicPartition: log start offset}`.
    fn beginning_offsets<'py>(
        &self,
        py: Python<'py>,
        partitions: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.watermarks(py, &partitions, true)
    }

    /// `{TopicPartition: log end offset}` (the offset the next record will
    /// get); for a read_committed consumer the last stable offset.
    fn end_offsets<'py>(
        &self,
        py: Python<'py>,
        partitions: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.watermarks(py, &partitions, false)
    }

    #[pyo3(signature = (*partitions))]
    fn pause(&self, partitions: Bound<'_, PyTuple>) -> PyResult<()> {
        self.engine
            .set_paused(&tps(partitions.as_any())?, true)
            .py()
    }

    #[pyo3(signature = (*partitions))]
    fn resume(&self, partitions: Bound<'_, PyTuple>) -> PyResult<()> {
        self.engine
            .set_paused(&tps(partitions.as_any())?, false)
            .py()
    }

    fn paused(&self) -> std::collections::BTreeSet<TopicPartition> {
        self.engine
            .paused()
            .iter()
            .map(py_topic_partition)
            .collect()
    }

    /// Topics in the directory (internal ones hidden).
    fn topics(&self) -> PyResult<std::collections::BTreeSet<String>> {
        Ok(self
            .engine
            .store()
            .list_topics(false)
            .py()?
            .into_iter()
            .collect())
    }

    fn partitions_for_topic(
        &self,
        topic: &str,
    ) -> PyResult<Option<std::collections::BTreeSet<u32>>> {
        Ok(self
            .engine
            .store()
            .topic(topic)
            .py()?
            .map(|t| (0..t.partitions).collect()))
    }

    /// Commit (with auto-commit on) and leave the group.
    #[pyo3(signature = (autocommit=true))]
    fn close(&self, py: Python<'_>, autocommit: bool) -> PyResult<()> {
        let engine = &self.engine;
        let r = py.detach(|| engine.close(autocommit));
        self.callback_error()?;
        r.py()
    }

    /// This consumer's member id in its group (None unless subscribed with a group_id).
    #[getter]
    fn member_id(&self) -> Option<String> {
        self.engine.member_id()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.engine.is_closed()
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    #[getter]
    fn group_id(&self) -> Option<String> {
        self.engine.config().group_id.clone()
    }

    #[getter]
    fn isolation_level(&self) -> &'static str {
        if self.engine.config().read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        }
    }

    /// Lets the garbage collector see the rebalance callbacks, so a
    /// callback that refers back to its consumer does not keep it (and its
    /// group membership) alive forever.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let listener = self.listener.try_lock().and_then(|l| l.clone());
        if let Some(l) = listener {
            visit.call(&l.consumer)?;
            for f in [&l.on_assign, &l.on_revoke, &l.on_lost, &l.listener]
                .into_iter()
                .flatten()
            {
                visit.call(f)?;
            }
        }
        for f in [&self.key_deserializer, &self.value_deserializer]
            .into_iter()
            .flatten()
        {
            visit.call(f)?;
        }
        Ok(())
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
        self.close(py, true)?;
        Ok(false)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let path = py_repr_str(py, &self.path);
        if self.engine.is_closed() {
            return format!("<ottla.Consumer path={path} closed>");
        }
        let parts: Vec<String> = self
            .engine
            .assignment()
            .iter()
            .take(8)
            .map(|tp| match self.engine.position(&tp.topic, tp.partition) {
                Ok(pos) => format!("{tp}@{pos}"),
                Err(_) => format!("{tp}"),
            })
            .collect();
        let n = self.engine.assignment().len();
        let group = match self.engine.config().group_id.as_deref() {
            Some(g) => py_repr_str(py, g),
            None => "None".to_string(),
        };
        format!(
            "<ottla.Consumer path={path} group_id={group} partitions=[{}{}]>",
            parts.join(", "),
            if n > 8 { ", ..." } else { "" }
        )
    }
}

fn arrow_limits(max_records: Option<usize>, max_bytes: Option<usize>) -> PyResult<ArrowLimits> {
    if max_records == Some(0) {
        return Err(PyValueError::new_err("max_records must be positive"));
    }
    if max_bytes == Some(0) {
        return Err(PyValueError::new_err("max_bytes must be positive"));
    }
    Ok(ArrowLimits {
        max_records: max_records.unwrap_or(usize::MAX),
        max_bytes: max_bytes.unwrap_or(usize::MAX),
    })
}

/// Result entry of `offsets_for_times`.
#[pyclass(module = "ottla", frozen, eq)]
#[derive(Clone, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    #[pyo3(get)]
    pub offset: i64,
    #[pyo3(get)]
    pub timestamp: i64,
}

#[pymethods]
impl OffsetAndTimestamp {
    /// Made by hand too: the remote consumer (`ottla.remote`) builds the
    /// same result from a cluster's ListOffsets answer.
    #[new]
    fn new(offset: i64, timestamp: i64) -> Self {
        OffsetAndTimestamp { offset, timestamp }
    }

    fn __getnewargs__(&self) -> (i64, i64) {
        (self.offset, self.timestamp)
    }

    fn __repr__(&self) -> String {
        format!(
            "OffsetAndTimestamp(offset={}, timestamp={})",
            self.offset, self.timestamp
        )
    }
}

/// A consumer's group as a transactional producer needs it
/// (`Consumer.consumer_group_metadata()`).
#[pyclass(module = "ottla._core", frozen)]
pub struct ConsumerGroupMetadata {
    #[pyo3(get)]
    group_id: String,
    #[pyo3(get)]
    generation_id: i32,
    #[pyo3(get)]
    member_id: String,
}

#[pymethods]
impl ConsumerGroupMetadata {
    fn __repr__(&self) -> String {
        format!("ConsumerGroupMetadata(group_id={:?})", self.group_id)
    }
}
