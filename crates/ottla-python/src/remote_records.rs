//! `Record`s from librdkafka's messages, for the consumer of a cluster
//! (`python/ottla/remote/consumer.py`, over confluent-kafka).
//!
//! The remote consumer hands out the same `Record` as the directory form.
//! Built in Python, each took seven method calls on confluent-kafka's
//! `Message`, a tuple index and the constructor's argument parsing, about
//! 1.5 µs a record in CPython (docs/PERFORMANCE.md, "Over a cluster").
//! Here a fetched batch is converted in one call (`remote_records`), or,
//! for iteration, one record at a time as the loop asks, by an iterator
//! whose `next()` is a C function of its own (`RecordIter`, `iternext`).
//! Without deserializers a
//! `Record` takes its topic, key and value from its `Message` and keeps the
//! message for the other fields, read when asked (`Record::of_message`);
//! with them, key and value must be deserialized when the record is handed
//! out, so every field is read then. Each read is a direct call of the
//! `Message` method's C function (`kafka_message`).

use pyo3::exceptions::PyTypeError;

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::PyTypeInfo;

use crate::kafka_message::{self, Field};
use crate::refcount;
use crate::type_slots::{self, VALUE_AT};
use crate::types::Record;

/// One message's field as an `i64` (`partition()`, `offset()`), with a
/// `TypeError` naming the field if librdkafka gave none.
fn int_field(m: &Bound<'_, PyAny>, field: Field, name: &str) -> PyResult<i64> {
    let v = kafka_message::call(m, field)?;
    v.extract::<i64>().map_err(|_| {
        PyTypeError::new_err(format!(
            "a consumed message has no {name}: {}",
            crate::types::short_repr(&v)
        ))
    })
}

/// The `Record` of one confluent-kafka `Message`, its key and value passed
/// through the deserializers (a null key or value stays `None`, as in
/// Kafka's clients).
fn record_of<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    kd: Option<&Bound<'py, PyAny>>,
    vd: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, Record>> {
    let (topic, mut key, mut value) = kafka_message::topic_key_value(m)?;
    let topic = Record::topic_of(topic)?;
    let partition = int_field(m, Field::Partition, "partition")?;
    let partition = u32::try_from(partition)
        .map_err(|_| PyTypeError::new_err(format!("a consumed message's partition {partition}")))?;
    let offset = int_field(m, Field::Offset, "offset")?;
    // `timestamp()` is `(type, milliseconds)`.
    let ts = kafka_message::call(m, Field::Timestamp)?;
    let timestamp = ts
        .cast::<PyTuple>()
        .ok()
        .and_then(|t| t.get_item(1).ok())
        .and_then(|v| v.extract::<i64>().ok())
        .ok_or_else(|| PyTypeError::new_err("a consumed message's timestamp is not (type, ms)"))?;
    if let Some(f) = kd {
        if !key.is_none() {
            key = f.call1((key,))?;
        }
    }
    if let Some(f) = vd {
        if !value.is_none() {
            value = f.call1((value,))?;
        }
    }
    let headers = kafka_message::call(m, Field::Headers)?;
    let headers = if headers.is_none() {
        None
    } else {
        // A list of its own (the message keeps and may hand out its own),
        // checked as `Record(...)` checks headers given by hand.
        let list = PyList::empty(py);
        for item in headers.try_iter()? {
            let (k, v): (Bound<'_, PyString>, Option<Bound<'_, PyBytes>>) =
                item?.extract().map_err(|_| {
                    PyTypeError::new_err("Record headers must be (str, bytes | None) pairs")
                })?;
            list.append((k, v))?;
        }
        (!list.is_empty()).then(|| list.unbind())
    };
    // The same rule as the directory consumer's `make_record`: only a
    // deserialized key or value can make a cycle through a record.
    let deserialized = kd.is_some() || vd.is_some();
    Record {
        topic: topic.unbind(),
        partition,
        offset,
        timestamp,
        key: key.unbind(),
        value: value.unbind(),
        headers,
        message: None,
    }
    .into_object(py, deserialized)
}

/// `(records, error)`: the `Record` of each message of `messages`
/// (confluent-kafka `Message`s without an error), in order. Without
/// deserializers each `Record` takes its topic, key and value from its
/// message and keeps the message for the other fields
/// (`Record::of_message`); iteration's are made by `remote_record_iter`.
/// A deserializer that raises stops the conversion there: `records` are
/// those before the message it failed on, and `error` is its exception
/// (else `None`), so the caller hands those out first and raises where the
/// record would have been.
#[pyfunction]
#[pyo3(signature = (messages, key_deserializer=None, value_deserializer=None))]
pub fn remote_records<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyList>,
    key_deserializer: Option<Bound<'py, PyAny>>,
    value_deserializer: Option<Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyList>, Option<PyErr>)> {
    let kd = key_deserializer.as_ref().filter(|f| !f.is_none());
    let vd = value_deserializer.as_ref().filter(|f| !f.is_none());
    if kd.is_none() && vd.is_none() {
        // Made first, then the list at its size (no append growing it).
        let mut records = Vec::with_capacity(messages.len());
        // SAFETY: the message is made owned at once, before anything that
        // may run Python code.
        while let Some(m) = unsafe { kafka_message::borrowed_item(messages, records.len()) } {
            records.push(Record::of_message(refcount::new_ref(m))?);
        }
        return Ok((PyList::new(py, records)?, None));
    }
    let out = PyList::empty(py);
    for m in messages.iter() {
        match record_of(py, &m, kd, vd) {
            Ok(r) => out.append(r)?,
            Err(e) => return Ok((out, Some(e))),
        }
    }
    Ok((out, None))
}

/// Iteration's records of a fetched batch (`python/ottla/remote/consumer.py`),
/// each made from its message as it is handed out: no list of records, and
/// the record just freed is the next one's memory (`record_alloc`'s free
/// list). Like a list's iterator, `__length_hint__` says how many are left
/// and `__setstate__(k)` moves it to the `k`-th message of its range, which
/// is how the consumer ends a batch early (`_settle`).
#[pyclass(module = "ottla._core", frozen)]
pub struct RecordIter {
    messages: Py<PyList>,
    start: usize,
    stop: usize,
    /// The index in `messages` of the next record's message. A load and a
    /// store, not one atomic step: calls are one at a time under the GIL,
    /// and the consumer's iteration, its only user, is one thread's.
    next: AtomicUsize,
}

impl RecordIter {
    /// The next record, or `None` at the end of the range (or of the list).
    fn next_record<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, Record>>> {
        let i = self.next.load(Ordering::Relaxed);
        if i >= self.stop {
            return Ok(None);
        }
        let messages = self.messages.bind(py);
        // SAFETY: `new_ref` takes the message's reference before anything
        // that may run Python code.
        let Some(m) = (unsafe { kafka_message::borrowed_item(messages, i) }) else {
            self.next.store(self.stop, Ordering::Relaxed);
            return Ok(None);
        };
        self.next.store(i + 1, Ordering::Relaxed);
        Record::of_message(refcount::new_ref(m)).map(Some)
    }
}

#[pymethods]
impl RecordIter {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, Record>>> {
        self.next_record(py)
    }

    fn __length_hint__(&self) -> usize {
        self.stop.saturating_sub(self.next.load(Ordering::Relaxed))
    }

    fn __setstate__(&self, state: usize) {
        let at = self.start.saturating_add(state).min(self.stop);
        self.next.store(at, Ordering::Relaxed);
    }
}

/// Makes `iternext` the `tp_iternext` of `RecordIter` where that is shown
/// to be sound (`type_slots`; its value alone at `VALUE_AT`) and the GIL
/// guards its state (`refcount::in_place`: a CPython with the GIL). Else
/// PyO3's `__next__`, the same records through its trampoline (10-15 ns a
/// record more). Called when the module loads.
pub fn init(py: Python<'_>) {
    if !refcount::in_place() {
        return;
    }
    let Ok(probe) = Bound::new(py, remote_record_iter(PyList::empty(py), 0, 0)) else {
        return;
    };
    if type_slots::value_alone(&probe) {
        type_slots::set_iternext(&RecordIter::type_object(py), iternext);
    }
}

/// Whether `RecordIter`'s `next()` is `iternext` (true) or PyO3's. For
/// tests.
#[pyfunction]
pub fn record_iter_direct(py: Python<'_>) -> bool {
    let ours: ffi::iternextfunc = iternext;
    type_slots::slot_is(
        &RecordIter::type_object(py),
        ffi::Py_tp_iternext,
        ours as *mut c_void,
    )
}

/// `tp_iternext` of `RecordIter`: `next_record` without PyO3's trampoline.
/// Null without an exception at the end (the iterator protocol's
/// `StopIteration`), or with one.
///
/// # Safety
/// Called by the interpreter with the GIL held, for an object of
/// `RecordIter`'s type (which has no subclasses), whose value is at
/// `VALUE_AT` (`init` installed it only where both are shown).
unsafe extern "C" fn iternext(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: this function's contract: the GIL is held, and the object's
    // value is a live `RecordIter`, borrowed for the call (the interpreter
    // holds a reference to the object meanwhile).
    let (py, this) = unsafe {
        (
            Python::assume_attached(),
            &*obj.cast::<u8>().add(VALUE_AT).cast::<RecordIter>(),
        )
    };
    // No panic can unwind into the interpreter: one becomes an exception.
    let got = catch_unwind(AssertUnwindSafe(|| this.next_record(py)))
        .unwrap_or_else(|_| Err(PyRuntimeError::new_err("ottla: a record could not be made")));
    match got {
        Ok(Some(record)) => record.into_ptr(),
        Ok(None) => ptr::null_mut(),
        Err(e) => {
            e.restore(py);
            ptr::null_mut()
        }
    }
}

/// The records of `messages[start:stop]` (confluent-kafka `Message`s without
/// an error), without deserializers, made as they are handed out
/// (`RecordIter`): the remote consumer's iteration.
#[pyfunction]
pub fn remote_record_iter(messages: Bound<'_, PyList>, start: usize, stop: usize) -> RecordIter {
    let stop = stop.max(start);
    RecordIter {
        messages: messages.unbind(),
        start,
        stop,
        next: AtomicUsize::new(start),
    }
}

/// The `Record` of one message: the consumer's per-record path (`next()`,
/// and iteration with a deserializer, which must run when its record is
/// handed out, not ahead of it).
#[pyfunction]
#[pyo3(signature = (message, key_deserializer=None, value_deserializer=None))]
pub fn remote_record<'py>(
    py: Python<'py>,
    message: &Bound<'py, PyAny>,
    key_deserializer: Option<Bound<'py, PyAny>>,
    value_deserializer: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, Record>> {
    let kd = key_deserializer.as_ref().filter(|f| !f.is_none());
    let vd = value_deserializer.as_ref().filter(|f| !f.is_none());
    if kd.is_none() && vd.is_none() {
        return Record::of_message(message.clone());
    }
    record_of(py, message, kd, vd)
}
