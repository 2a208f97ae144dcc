//! `Record`s from librdkafka's messages, for the consumer of a cluster
//! (`python/ottla/remote/consumer.py`, over confluent-kafka).
//!
//! The remote consumer hands out the same `Record` as the directory form.
//! Built in Python, each took seven method calls on confluent-kafka's
//! `Message`, a tuple index and the constructor's argument parsing, about
//! 1.5 µs a record in CPython (docs/PERFORMANCE.md, "Over a cluster").
//! Here a fetched batch is converted in one call. Without deserializers a
//! `Record` takes its topic, key and value from its `Message` and keeps the
//! message for the other fields, read when asked (`Record::of_message`);
//! with them, key and value must be deserialized when the record is handed
//! out, so every field is read then. Each read is a direct call of the
//! `Message` method's C function (`kafka_message`).

use pyo3::exceptions::PyTypeError;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList, PyString, PyTuple};

use crate::kafka_message::{self, Field};
use crate::refcount;
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
/// (`Record::of_message`); iteration's chunks are `remote_record_chunk`.
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
        return Ok((records_of_range(messages, 0, messages.len())?, None));
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

/// The `Record`s of `messages[start:stop]` without deserializers, as a
/// list made at its size (no append growing it). The records are made
/// first; each message is made owned at once, before anything that may run
/// Python code.
fn records_of_range<'py>(
    messages: &Bound<'py, PyList>,
    start: usize,
    stop: usize,
) -> PyResult<Bound<'py, PyList>> {
    let mut records = Vec::with_capacity(stop.saturating_sub(start));
    let mut i = start;
    while i < stop {
        // SAFETY: see above: `new_ref` takes the reference at once.
        let Some(m) = (unsafe { kafka_message::borrowed_item(messages, i) }) else {
            break;
        };
        records.push(Record::of_message(refcount::new_ref(m))?);
        i += 1;
    }
    PyList::new(messages.py(), records)
}

/// An iterator over the `Record`s of `messages[start:stop]` (confluent-kafka
/// `Message`s without an error), without deserializers: iteration's chunk
/// (`python/ottla/remote/consumer.py`), made in one call from the batch
/// itself (a slice of it, then `remote_records`, the tuple it returns and
/// `iter()` cost 4-5 ns a record more).
#[pyfunction]
pub fn remote_record_chunk<'py>(
    messages: &Bound<'py, PyList>,
    start: usize,
    stop: usize,
) -> PyResult<Bound<'py, PyIterator>> {
    records_of_range(messages, start, stop)?.try_iter()
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
