//! Small value types shared by the producer and consumer doors.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::kafka_message;
use crate::refcount;

/// A partition of a topic, on the Rust side of the door. In Python it is
/// `ottla.types.TopicPartition`, a `NamedTuple` as in kafka-python (equal
/// to, and hashed as, the `(topic, partition)` tuple): this struct is
/// converted into that class; `tp_pair` reads any such pair back.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

static TOPIC_PARTITION: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TUPLE_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `ottla.types.TopicPartition(topic, partition)`, made through
/// `tuple.__new__` (what the class's own `__new__` calls), which skips a
/// Python frame per object.
pub fn new_topic_partition<'py>(
    py: Python<'py>,
    topic: Bound<'py, PyString>,
    partition: u32,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = TOPIC_PARTITION.import(py, "ottla.types", "TopicPartition")?;
    let new = TUPLE_NEW.get_or_try_init(py, || {
        py.get_type::<PyTuple>()
            .getattr(intern!(py, "__new__"))
            .map(Bound::unbind)
    })?;
    let pair = PyTuple::new(
        py,
        [topic.into_any(), partition.into_pyobject(py)?.into_any()],
    )?;
    new.bind(py).call1((cls, pair))
}

impl<'py> IntoPyObject<'py> for TopicPartition {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        new_topic_partition(py, PyString::new(py, &self.topic), self.partition)
    }
}

/// `(topic, partition)` from a `TopicPartition` or any 2-tuple, with a
/// `TypeError` that says what was expected.
pub fn tp_pair(obj: &Bound<'_, PyAny>) -> PyResult<(String, u32)> {
    if let Ok(t) = obj.cast::<PyTuple>() {
        if t.len() == 2 {
            let topic = t.get_item(0)?;
            let partition = t.get_item(1)?;
            if let (Ok(topic), Ok(partition)) =
                (topic.extract::<String>(), partition.extract::<u32>())
            {
                return Ok((topic, partition));
            }
        }
    }
    Err(PyTypeError::new_err(format!(
        "expected a TopicPartition or a (topic: str, partition: int >= 0) tuple, got {}",
        short_repr(obj)
    )))
}

/// `repr(obj)`, cut to 60 characters.
pub fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    if r.chars().count() > 60 {
        let cut = r.char_indices().nth(57).map_or(r.len(), |(i, _)| i);
        format!("{}...", &r[..cut])
    } else {
        r
    }
}

/// The data directory argument of `Producer`, `Consumer` and `Admin`, with
/// a `TypeError` for a Kafka-style config dict (a common first try) or
/// anything else that is not a path.
pub fn path_arg(obj: &Bound<'_, PyAny>, who: &str) -> PyResult<PathBuf> {
    if obj.cast::<PyDict>().is_ok() {
        return Err(PyTypeError::new_err(format!(
            "{who}() takes the path of a data directory, not a config dict: pass Kafka \
             settings as keyword arguments with underscores ({who}(\"data\", linger_ms=5)); \
             ottla's {who} reads and writes a local directory (to talk to a Kafka cluster, \
             use a Kafka client; bootstrap_servers support is planned)"
        )));
    }
    obj.extract::<PathBuf>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{who}() path must be a str or os.PathLike naming a data directory, not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

/// `repr()` of a string the way the producer, consumer and admin reprs
/// show their path: Python's own quoting.
pub fn py_repr_str(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

/// Where an acknowledged record was stored.
#[pyclass(module = "ottla", frozen, eq)]
#[derive(Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    #[pyo3(get)]
    pub topic: String,
    #[pyo3(get)]
    pub partition: u32,
    #[pyo3(get)]
    pub offset: i64,
    #[pyo3(get)]
    pub timestamp: i64,
}

#[pymethods]
impl RecordMetadata {
    #[getter]
    fn topic_partition<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        new_topic_partition(py, PyString::new(py, &self.topic), self.partition)
    }

    #[new]
    fn new(topic: String, partition: u32, offset: i64, timestamp: i64) -> Self {
        RecordMetadata {
            topic,
            partition,
            offset,
            timestamp,
        }
    }

    fn __getnewargs__(&self) -> (String, u32, i64, i64) {
        (
            self.topic.clone(),
            self.partition,
            self.offset,
            self.timestamp,
        )
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "RecordMetadata(topic={}, partition={}, offset={}, timestamp={})",
            py_repr_str(py, &self.topic),
            self.partition,
            self.offset,
            self.timestamp
        )
    }
}

/// A record read from a topic.
///
/// Iteration drops most records right after handing them out, so the next
/// one reuses the memory of the last (CPython's small-object allocator).
/// No PyO3 free list: its lock cost more than the allocation it saves (a
/// cluster's iteration 391 against 428 ns of CPU a record without and
/// with; a directory's the same, 238-260 against 252-261). The consumers'
/// records are made and freed by `record_alloc` (not through PyO3's
/// generic paths), and tracked by the cyclic GC only if they may be in a
/// cycle (a deserializer made their key or value).
///
/// A record of a cluster's consumer (`bootstrap_servers`, no
/// deserializers) reads each field from librdkafka's message when it is
/// asked for; it behaves as any other record.
#[pyclass(module = "ottla", frozen)]
pub struct Record {
    /// The topic's name.
    #[pyo3(get)]
    pub topic: Py<PyString>,
    pub partition: u32,
    pub offset: i64,
    pub timestamp: i64,
    /// The key (deserialized if the consumer has a `key_deserializer`), or
    /// None.
    #[pyo3(get)]
    pub key: Py<PyAny>,
    /// The value (deserialized if the consumer has a `value_deserializer`),
    /// or None.
    #[pyo3(get)]
    pub value: Py<PyAny>,
    pub headers: Option<Py<PyList>>,
    /// A record of a cluster's consumer without deserializers
    /// (`remote_records::remote_records`): librdkafka's message (a
    /// confluent-kafka `Message`, immutable), whose methods give the
    /// partition, offset, timestamp and headers when they are asked for;
    /// those fields above are then unused. Reading all seven up front cost
    /// more than the raw client's whole loop (`timestamp()` alone builds a
    /// tuple through `Py_BuildValue`), most of it for fields an application
    /// never reads. The topic, key and value are taken from it up front
    /// (the `Message` holds those objects: no copy, a C call each through
    /// `kafka_message`), so that they are plain fields: `#[pyo3(get)]` on a
    /// `Py` field of a frozen class is a member descriptor, which the
    /// interpreter reads without a call (a PyO3 getter cost 55-60 ns a
    /// read).
    pub message: Option<Py<PyAny>>,
}

impl Record {
    /// Gives up this record's references (what dropping it does, without
    /// PyO3's per-field check of the GIL: `record_alloc::dealloc` runs
    /// inside the interpreter's free, with the GIL held). Every field is
    /// named, so a new one cannot be forgotten here.
    ///
    /// # Safety
    /// The GIL is held.
    pub unsafe fn release(self) {
        let Record {
            topic,
            partition: _,
            offset: _,
            timestamp: _,
            key,
            value,
            headers,
            message,
        } = self;
        // SAFETY: each is a reference this record owned, given up once
        // (`into_ptr` hands it over without a decrement); the GIL is held.
        unsafe {
            refcount::decref(topic.into_ptr());
            refcount::decref(key.into_ptr());
            refcount::decref(value.into_ptr());
            if let Some(h) = headers {
                refcount::decref(h.into_ptr());
            }
            if let Some(m) = message {
                refcount::decref(m.into_ptr());
            }
        }
    }

    /// The `Record` of librdkafka's `message` (a message without an
    /// error: it has a topic): its topic, key and value taken from it, the
    /// message kept for the other fields. Strings, bytes and the message:
    /// no cycle through it, so not tracked. Built where the object is (no
    /// `Record` value moved through a result on the way).
    pub fn of_message(message: Bound<'_, PyAny>) -> PyResult<Bound<'_, Record>> {
        let py = message.py();
        let (topic, key, value) = kafka_message::topic_key_value(&message)?;
        let topic = Record::topic_of(topic)?;
        Record::object_of(py, false, || Record {
            topic: topic.unbind(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: key.unbind(),
            value: value.unbind(),
            headers: None,
            message: Some(message.unbind()),
        })
    }

    /// A consumed message's topic as a `str`, or a `TypeError`. An exact
    /// `str` (librdkafka's always is) is told by comparing its type, without
    /// `PyUnicode_Check` (a call into the interpreter under the stable ABI).
    pub fn topic_of(topic: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyString>> {
        if topic.is_exact_instance_of::<PyString>() {
            // SAFETY: its type is exactly `str`.
            return Ok(unsafe { topic.cast_into_unchecked::<PyString>() });
        }
        topic
            .cast_into::<PyString>()
            .map_err(|_| PyTypeError::new_err("a consumed message has no topic"))
    }

    fn ask<'py>(
        &self,
        py: Python<'py>,
        m: &Py<PyAny>,
        field: kafka_message::Field,
    ) -> PyResult<Bound<'py, PyAny>> {
        kafka_message::call(m.bind(py), field)
    }
}

#[pymethods]
impl Record {
    /// Lets the cyclic GC see a deserialized key or value: one that refers
    /// back to its record (directly or not) is then collected, not leaked.
    /// (Records without deserializers are not tracked at all; see
    /// `record_alloc`.)
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.key)?;
        visit.call(&self.value)?;
        if let Some(m) = &self.message {
            visit.call(m)?;
        }
        if let Some(h) = &self.headers {
            visit.call(h)?;
        }
        Ok(())
    }

    #[getter]
    fn partition(&self, py: Python<'_>) -> PyResult<u32> {
        match &self.message {
            None => Ok(self.partition),
            Some(m) => self.ask(py, m, kafka_message::Field::Partition)?.extract(),
        }
    }

    #[getter]
    fn offset(&self, py: Python<'_>) -> PyResult<i64> {
        match &self.message {
            None => Ok(self.offset),
            Some(m) => self.ask(py, m, kafka_message::Field::Offset)?.extract(),
        }
    }

    #[getter]
    fn timestamp(&self, py: Python<'_>) -> PyResult<i64> {
        match &self.message {
            None => Ok(self.timestamp),
            // librdkafka's `(type, milliseconds)`.
            Some(m) => self
                .ask(py, m, kafka_message::Field::Timestamp)?
                .cast_into::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("the record's message has no timestamp"))?
                .get_item(1)?
                .extract(),
        }
    }

    /// `[(key, value), ...]` with `str` keys and `bytes | None` values.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        // A fresh list each time: a Record is immutable.
        if let Some(m) = &self.message {
            let h = self.ask(py, m, kafka_message::Field::Headers)?;
            return if h.is_none() {
                Ok(PyList::empty(py))
            } else {
                PyList::new(py, h.try_iter()?.collect::<PyResult<Vec<_>>>()?)
            };
        }
        Ok(match &self.headers {
            Some(h) => PyList::new(py, h.bind(py).iter()).unwrap_or_else(|_| PyList::empty(py)),
            None => PyList::empty(py),
        })
    }

    #[getter]
    fn topic_partition<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        new_topic_partition(py, self.topic.bind(py).clone(), self.partition(py)?)
    }

    /// `Record(topic, partition, offset, timestamp, key=None, value=None,
    /// headers=None)`: what a consumer hands out, made by hand (tests of
    /// code that takes records) or by unpickling.
    #[new]
    #[pyo3(signature = (topic, partition, offset, timestamp, key=None, value=None, headers=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        topic: Bound<'_, PyString>,
        partition: u32,
        offset: i64,
        timestamp: i64,
        key: Option<Py<PyAny>>,
        value: Option<Py<PyAny>>,
        headers: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let headers = match headers {
            None => None,
            Some(h) => {
                let list = PyList::empty(py);
                for item in h.try_iter()? {
                    let (k, v): (Bound<'_, PyString>, Option<Bound<'_, PyBytes>>) =
                        item?.extract().map_err(|_| {
                            PyTypeError::new_err("Record headers must be (str, bytes | None) pairs")
                        })?;
                    list.append((k, v))?;
                }
                (!list.is_empty()).then(|| list.unbind())
            }
        };
        Ok(Record {
            topic: topic.unbind(),
            partition,
            offset,
            timestamp,
            key: key.unwrap_or_else(|| py.None()),
            value: value.unwrap_or_else(|| py.None()),
            headers,
            message: None,
        })
    }

    /// Pickling (and `copy.deepcopy`): the constructor and its arguments.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let this = slf.get();
        let args = (
            this.topic.clone_ref(py),
            this.partition(py)?,
            this.offset(py)?,
            this.timestamp(py)?,
            this.key.clone_ref(py),
            this.value.clone_ref(py),
            this.headers(py)?,
        )
            .into_pyobject(py)?;
        Ok((slf.get_type(), args))
    }

    /// A record is immutable: a shallow copy is the record itself.
    fn __copy__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let show = |o: &Py<PyAny>| -> PyResult<String> {
            let r = o.bind(py).repr()?.to_string();
            Ok(if r.len() > 60 {
                format!(
                    "{}...",
                    &r[..r.char_indices().nth(57).map_or(r.len(), |(i, _)| i)]
                )
            } else {
                r
            })
        };
        let headers = self.headers(py)?;
        let headers = if headers.is_empty() {
            "[]".to_string()
        } else {
            short_repr(headers.as_any())
        };
        Ok(format!(
            "Record(topic={}, partition={}, offset={}, timestamp={}, key={}, value={}, headers={})",
            self.topic.bind(py).repr()?,
            self.partition(py)?,
            self.offset(py)?,
            self.timestamp(py)?,
            show(&self.key)?,
            show(&self.value)?,
            headers
        ))
    }
}

/// Borrow bytes from a `bytes`-like or `str` argument without copying where
/// Python allows it.
pub enum BytesArg<'py> {
    Bytes(Bound<'py, PyBytes>),
    Str(Bound<'py, PyString>),
    Owned(Vec<u8>),
}

impl<'py> BytesArg<'py> {
    pub fn from_obj(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<BytesArg<'py>> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(BytesArg::Bytes(b.clone()));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(BytesArg::Str(s.clone()));
        }
        if let Ok(b) = obj.cast::<pyo3::types::PyByteArray>() {
            return Ok(BytesArg::Owned(b.to_vec()));
        }
        if let Ok(m) = obj.cast::<pyo3::types::PyMemoryView>() {
            let b = m.call_method0("tobytes")?;
            if let Ok(b) = b.cast::<PyBytes>() {
                return Ok(BytesArg::Owned(b.as_bytes().to_vec()));
            }
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be bytes, bytearray, memoryview, str or None (or set a {what}_serializer), not {}",
            obj.get_type().name()?
        )))
    }

    pub fn as_slice(&self) -> PyResult<&[u8]> {
        Ok(match self {
            BytesArg::Bytes(b) => b.as_bytes(),
            BytesArg::Str(s) => s.to_str()?.as_bytes(),
            BytesArg::Owned(v) => v,
        })
    }
}
