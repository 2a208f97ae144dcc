//! Small value types shared by the producer and consumer doors.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

/// `TopicPartition(topic, partition)`: hashable, comparable, unpackable.
#[pyclass(module = "ottla", frozen, eq, hash, ord, from_py_object)]
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    #[pyo3(get)]
    pub topic: String,
    #[pyo3(get)]
    pub partition: u32,
}

#[pymethods]
impl TopicPartition {
    #[new]
    fn new(topic: String, partition: u32) -> Self {
        TopicPartition { topic, partition }
    }

    fn __repr__(&self) -> String {
        format!(
            "TopicPartition(topic={:?}, partition={})",
            self.topic, self.partition
        )
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let t = PyTuple::new(
            py,
            [
                self.topic.clone().into_pyobject(py)?.into_any(),
                self.partition.into_pyobject(py)?.into_any(),
            ],
        )?;
        t.try_iter().map(|i| i.into_any())
    }

    fn __getnewargs__(&self) -> (String, u32) {
        (self.topic.clone(), self.partition)
    }
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
    fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "RecordMetadata(topic={:?}, partition={}, offset={}, timestamp={})",
            self.topic, self.partition, self.offset, self.timestamp
        )
    }
}

/// A record read from a topic.
///
/// Iteration drops most records right after handing them out: a free list
/// recycles them (objects from it come back untracked by the cyclic GC; the
/// consumer tracks them again when a deserializer could make a cycle).
#[pyclass(module = "ottla", frozen, freelist = 1024)]
pub struct Record {
    pub topic: Py<PyString>,
    #[pyo3(get)]
    pub partition: u32,
    #[pyo3(get)]
    pub offset: i64,
    #[pyo3(get)]
    pub timestamp: i64,
    pub key: Option<Py<PyAny>>,
    pub value: Option<Py<PyAny>>,
    pub headers: Option<Py<PyList>>,
}

#[pymethods]
impl Record {
    /// Lets the cyclic GC see a deserialized key or value: one that refers
    /// back to its record (directly or not) is then collected, not leaked.
    /// (Records without deserializers are not tracked at all; see
    /// `Consumer::make_record`.)
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for o in [&self.key, &self.value].into_iter().flatten() {
            visit.call(o)?;
        }
        if let Some(h) = &self.headers {
            visit.call(h)?;
        }
        Ok(())
    }

    #[getter]
    fn topic(&self, py: Python<'_>) -> Py<PyString> {
        self.topic.clone_ref(py)
    }

    #[getter]
    fn key(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.key.as_ref().map(|k| k.clone_ref(py))
    }

    #[getter]
    fn value(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.value.as_ref().map(|v| v.clone_ref(py))
    }

    /// `[(key, value), ...]` with `str` keys and `bytes | None` values.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> Bound<'py, PyList> {
        // A fresh list each time: a Record is immutable.
        match &self.headers {
            Some(h) => PyList::new(py, h.bind(py).iter()).unwrap_or_else(|_| PyList::empty(py)),
            None => PyList::empty(py),
        }
    }

    #[getter]
    fn topic_partition(&self, py: Python<'_>) -> PyResult<TopicPartition> {
        Ok(TopicPartition {
            topic: self.topic.bind(py).to_str()?.to_string(),
            partition: self.partition,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let show = |o: &Option<Py<PyAny>>| -> PyResult<String> {
            match o {
                None => Ok("None".into()),
                Some(o) => {
                    let r = o.bind(py).repr()?.to_string();
                    Ok(if r.len() > 60 {
                        format!(
                            "{}...",
                            &r[..r.char_indices().nth(57).map_or(r.len(), |(i, _)| i)]
                        )
                    } else {
                        r
                    })
                }
            }
        };
        Ok(format!(
            "Record(topic={:?}, partition={}, offset={}, timestamp={}, key={}, value={})",
            self.topic.bind(py).to_str()?,
            self.partition,
            self.offset,
            self.timestamp,
            show(&self.key)?,
            show(&self.value)?
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
