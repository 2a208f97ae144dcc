//! The common case of a remote `send()` in one call of the extension
//! (`ottla.Producer(bootstrap_servers=...)`, `python/ottla/remote/producer.py`).
//!
//! `producer.send(topic, value)` with a `bytes` value and nothing else, to a
//! topic the producer knows, is most of any send loop. Its Python method
//! spent about 300 ns a record beyond librdkafka's own `produce()` call
//! (the frame and its seven parameters, the checks, the sticky partition,
//! the future; docs/PERFORMANCE.md, "Over a cluster", step 4). That case
//! is done here, to the letter of the Python fast path (sticky partition
//! bookkeeping, the future as librdkafka's delivery callback, reports served
//! every `poll_every` sends); anything else it hands to the Python `send()`
//! unchanged, so there is one definition of what a send does.
//!
//! Three objects, so that nothing makes a reference cycle through the
//! producer (one dropped unclosed is freed at once, which stops its
//! background thread) while `ottla.Producer(...).send(...)` keeps its
//! producer alive for the call, as a bound method does:
//! `RemoteSendMethod` is the class's `send` (a descriptor); reading
//! `producer.send` makes a `RemoteBoundSend` (the producer and its
//! `RemoteSender`, the producer's `_sender`, which holds no reference to
//! the producer), whose call is the send.

use std::sync::atomic::{AtomicI64, Ordering};

use pyo3::exceptions::PyBufferError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::remote_future::RemoteFuture;

/// A remote producer's send state (its `_sender`): what the common case
/// needs, and no reference to the producer.
#[pyclass(module = "ottla", frozen)]
pub struct RemoteSender {
    /// librdkafka's `produce`.
    produce: Py<PyAny>,
    /// The producer's `_fast`: topic -> `[partition, bytes on it]`, the
    /// sticky state of the topics the fast path applies to (emptied when
    /// the producer closes).
    fast: Py<PyDict>,
    /// `batch_size`: the sticky partition changes once this many bytes
    /// went to it (the Python `send()` picks the next one).
    batch_size: i64,
    poll_every: i64,
    until_poll: AtomicI64,
    /// `Producer._serve_reports`, unbound.
    serve: Py<PyAny>,
    /// `Producer._produce`, unbound: a full librdkafka queue (BufferError).
    produce_slow: Py<PyAny>,
}

#[pymethods]
impl RemoteSender {
    #[new]
    fn new(
        produce: Py<PyAny>,
        fast: Py<PyDict>,
        batch_size: i64,
        poll_every: i64,
        serve: Py<PyAny>,
        produce_slow: Py<PyAny>,
    ) -> Self {
        let poll_every = poll_every.max(1);
        RemoteSender {
            produce,
            fast,
            batch_size,
            poll_every,
            until_poll: AtomicI64::new(poll_every),
            serve,
            produce_slow,
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.produce)?;
        visit.call(&self.fast)?;
        visit.call(&self.serve)?;
        visit.call(&self.produce_slow)
    }
}

/// `Producer.send` of a cluster's producer: a descriptor over the Python
/// method. Read from a producer with a `_sender`, it gives a
/// `RemoteBoundSend`; from the class (or a producer without one), the
/// Python function (or its bound method).
#[pyclass(module = "ottla", frozen)]
pub struct RemoteSendMethod {
    function: Py<PyAny>,
}

#[pymethods]
impl RemoteSendMethod {
    #[new]
    fn new(function: Py<PyAny>) -> Self {
        RemoteSendMethod { function }
    }

    /// The Python `send` function.
    #[getter]
    fn __func__(&self, py: Python<'_>) -> Py<PyAny> {
        self.function.clone_ref(py)
    }

    #[getter]
    fn __doc__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .function
            .bind(py)
            .getattr(intern!(py, "__doc__"))?
            .unbind())
    }

    fn __get__<'py>(
        &self,
        py: Python<'py>,
        obj: Option<Bound<'py, PyAny>>,
        owner_type: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = owner_type;
        let function = self.function.bind(py);
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(function.clone());
        };
        if let Ok(sender) = obj.getattr(intern!(py, "_sender")) {
            if let Ok(sender) = sender.cast_into::<RemoteSender>() {
                let bound = RemoteBoundSend {
                    owner: obj.unbind(),
                    sender: sender.unbind(),
                    function: self.function.clone_ref(py),
                };
                return Ok(Bound::new(py, bound)?.into_any());
            }
        }
        function.call_method1(intern!(py, "__get__"), (obj,))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.function)
    }
}

/// `producer.send`: the producer, its send state and the Python method.
#[pyclass(module = "ottla", frozen)]
pub struct RemoteBoundSend {
    owner: Py<PyAny>,
    sender: Py<RemoteSender>,
    function: Py<PyAny>,
}

#[pymethods]
impl RemoteBoundSend {
    /// `send(topic, value, key=None, partition=None, timestamp_ms=None,
    /// headers=None, *, timestamp=None)`, as `ottla.Producer.send`.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let owner = self.owner.bind(py);
        if let Some(future) = self.sender.get().fast_send(py, owner, args, kwargs)? {
            return Ok(future);
        }
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(owner.clone());
        all.extend(args.iter());
        self.function.bind(py).call(PyTuple::new(py, all)?, kwargs)
    }

    #[getter]
    fn __self__(&self, py: Python<'_>) -> Py<PyAny> {
        self.owner.clone_ref(py)
    }

    #[getter]
    fn __func__(&self, py: Python<'_>) -> Py<PyAny> {
        self.function.clone_ref(py)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)?;
        visit.call(&self.sender)?;
        visit.call(&self.function)
    }
}

impl RemoteSender {
    /// The common case, or `None` for the Python `send()`: positional
    /// `(topic, value)` with a `bytes` value (a key, partition, timestamp
    /// and headers of None given positionally allowed), no keywords, a topic
    /// in `fast` whose sticky partition has room.
    pub fn fast_send<'py>(
        &self,
        py: Python<'py>,
        owner: &Bound<'py, PyAny>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if kwargs.is_some_and(|k| !k.is_empty()) {
            return Ok(None);
        }
        let n = args.len();
        if !(2..=6).contains(&n) {
            return Ok(None);
        }
        for i in 2..n {
            if !args.get_item(i)?.is_none() {
                return Ok(None);
            }
        }
        let topic = args.get_item(0)?;
        let value = args.get_item(1)?;
        if !topic.is_exact_instance_of::<PyString>() || !value.is_exact_instance_of::<PyBytes>() {
            return Ok(None);
        }
        let Some(state) = self.fast.bind(py).get_item(&topic)? else {
            return Ok(None);
        };
        let Ok(state) = state.cast_into::<PyList>() else {
            return Ok(None);
        };
        if state.len() != 2 {
            return Ok(None);
        }
        let used: i64 = state.get_item(1)?.extract()?;
        if used >= self.batch_size {
            return Ok(None); // the next sticky partition: chosen in Python
        }
        let partition = state.get_item(0)?;
        let size = i64::try_from(value.len()?).unwrap_or(i64::MAX);
        // The record's bytes and its share of a batch's overhead, as the
        // Python `_sticky`.
        state.set_item(1, used.saturating_add(size).saturating_add(70))?;
        let future = Bound::new(py, RemoteFuture::of(owner.clone().unbind()))?.into_any();
        let produced =
            self.produce
                .bind(py)
                .call1((&topic, &value, py.None(), &partition, &future));
        if let Err(e) = produced {
            if !e.is_instance_of::<PyBufferError>(py) {
                return Err(e);
            }
            // librdkafka's queue is full: the Python path serves reports
            // and retries (and counts the send).
            let kw = PyDict::new(py);
            kw.set_item("partition", &partition)?;
            kw.set_item("on_delivery", &future)?;
            self.produce_slow
                .bind(py)
                .call1((owner, &topic, &value, py.None(), kw))?;
            return Ok(Some(future));
        }
        if self.until_poll.fetch_sub(1, Ordering::Relaxed) <= 1 {
            self.until_poll.store(self.poll_every, Ordering::Relaxed);
            self.serve.bind(py).call1((owner,))?;
        }
        Ok(Some(future))
    }
}
