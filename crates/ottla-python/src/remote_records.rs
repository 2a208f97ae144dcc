//! `Record`s from librdkafka's messages, for the consumer of a cluster
//! (`python/ottla/remote/consumer.py`, over confluent-kafka).
//!
//! The remote consumer hands out the same `Record` as the directory form.
//! Built in Python, each took seven method calls on confluent-kafka's
//! `Message`, a tuple index and the constructor's argument parsing, about
//! 1.5 µs a record in CPython (docs/PERFORMANCE.md, "Over a cluster").
//! Here a fetched batch is converted in one call. Without deserializers a
//! `Record` keeps its `Message` and reads each field from it when asked
//! (`Record::of_message`); with them, key and value must be deserialized
//! when the record is handed out, so every field is read then, one
//! C-level method call each (`PyObject_CallMethodObjArgs`, no bound method,
//! no bytecode: the stable ABI this module is built for has nothing
//! cheaper, and a `Message` exposes its fields through methods only).

use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::types::Record;

/// One message's field as an `i64` (`partition()`, `offset()`), with a
/// `TypeError` naming the field if librdkafka gave none.
fn int_field(m: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<i64> {
    let v = m.call_method0(name)?;
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
    let topic = m.call_method0(intern!(py, "topic"))?;
    let topic = topic
        .cast_into::<PyString>()
        .map_err(|_| PyTypeError::new_err("a consumed message has no topic"))?;
    let partition = int_field(m, intern!(py, "partition"))?;
    let partition = u32::try_from(partition)
        .map_err(|_| PyTypeError::new_err(format!("a consumed message's partition {partition}")))?;
    let offset = int_field(m, intern!(py, "offset"))?;
    // `timestamp()` is `(type, milliseconds)`.
    let ts = m.call_method0(intern!(py, "timestamp"))?;
    let timestamp = ts
        .cast::<PyTuple>()
        .ok()
        .and_then(|t| t.get_item(1).ok())
        .and_then(|v| v.extract::<i64>().ok())
        .ok_or_else(|| PyTypeError::new_err("a consumed message's timestamp is not (type, ms)"))?;
    let mut key = m.call_method0(intern!(py, "key"))?;
    let mut value = m.call_method0(intern!(py, "value"))?;
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
    let headers = m.call_method0(intern!(py, "headers"))?;
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
    let record = Bound::new(
        py,
        Record {
            topic: topic.unbind(),
            partition,
            offset,
            timestamp,
            key: (!key.is_none()).then(|| key.unbind()),
            value: (!value.is_none()).then(|| value.unbind()),
            headers,
            message: None,
        },
    )?;
    let obj = record.as_ptr();
    let deserialized = kd.is_some() || vd.is_some();
    // SAFETY: `obj` is a live object of a GC type (every pyclass is one)
    // whose fields are all initialised; the GIL is held. The same rule as
    // the directory consumer's `make_record`: records from the free list
    // come back untracked, and only a deserialized key or value can make a
    // cycle through one.
    unsafe {
        let tracked = pyo3::ffi::PyObject_GC_IsTracked(obj) != 0;
        if deserialized && !tracked {
            pyo3::ffi::PyObject_GC_Track(obj.cast());
        } else if !deserialized && tracked {
            pyo3::ffi::PyObject_GC_UnTrack(obj.cast());
        }
    }
    Ok(record)
}

/// Records without deserializers hold only strings, numbers and their
/// `Message` (which refers to none of them): the cyclic GC need not track
/// them. The free list hands objects out untracked, a new one is tracked.
fn untrack(record: &Bound<'_, Record>) {
    let obj = record.as_ptr();
    // SAFETY: `obj` is a live object of a GC type (every pyclass is one)
    // whose fields are all initialised; the GIL is held.
    unsafe {
        if pyo3::ffi::PyObject_GC_IsTracked(obj) != 0 {
            pyo3::ffi::PyObject_GC_UnTrack(obj.cast());
        }
    }
}

/// `(records, error)`: the `Record` of each message of `messages`
/// (confluent-kafka `Message`s without an error), in order. Without
/// deserializers each `Record` holds its message and reads a field from it
/// when asked (`Record::of_message`): creating one costs an allocation. A deserializer
/// that raises stops the conversion there: `records` are those before the
/// message it failed on, and `error` is its exception (else `None`), so the
/// caller hands those out first and raises where the record would have
/// been.
#[pyfunction]
#[pyo3(signature = (messages, key_deserializer=None, value_deserializer=None))]
pub fn remote_records<'py>(
    py: Python<'py>,
    messages: &Bound<'py, PyList>,
    key_deserializer: Option<Bound<'py, PyAny>>,
    value_deserializer: Option<Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyList>, Option<PyErr>)> {
    let out = PyList::empty(py);
    let kd = key_deserializer.as_ref().filter(|f| !f.is_none());
    let vd = value_deserializer.as_ref().filter(|f| !f.is_none());
    if kd.is_none() && vd.is_none() {
        for m in messages.iter() {
            let record = Bound::new(py, Record::of_message(py, m.unbind()))?;
            untrack(&record);
            out.append(record)?;
        }
        return Ok((out, None));
    }
    for m in messages.iter() {
        match record_of(py, &m, kd, vd) {
            Ok(r) => out.append(r)?,
            Err(e) => return Ok((out, Some(e))),
        }
    }
    Ok((out, None))
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
        let record = Bound::new(py, Record::of_message(py, message.clone().unbind()))?;
        untrack(&record);
        return Ok(record);
    }
    record_of(py, message, kd, vd)
}
