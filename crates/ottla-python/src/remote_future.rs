//! The future of one remote `send()` (`ottla.Producer(bootstrap_servers=...)`,
//! `python/ottla/remote/producer.py`): its state and its two hot paths.
//!
//! A remote `send()` makes one future per record and hands it to
//! confluent-kafka's `produce()` as the delivery callback; librdkafka calls
//! it with `(error, message)` once the broker answered. As a Python class
//! the future cost a Python `__init__` frame per record (about 280 ns of a
//! 2.3 µs send), and its bound `_deliver` method another object. Here the
//! object is made without a Python frame and is itself the callback
//! (`__call__`); a delivery without error nor callbacks waiting (the common
//! case) only stores the message. Everything else (`get()`, callbacks,
//! errbacks, errors) is the Python code it always was, in
//! `ottla.remote.producer` (`_future_*` functions), working on this
//! object's attributes: one behaviour, in one place.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;

static DELIVER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ADD_CALLBACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ADD_ERRBACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static METADATA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static REPORTED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

const MODULE: &str = "ottla.remote.producer";

/// The pending result of one remote `send()`: the methods of
/// `ottla.FutureRecordMetadata`, completed by librdkafka's delivery report.
/// (`ottla.remote.producer.FutureRecordMetadata` is this class.)
#[pyclass(module = "ottla.remote.producer", name = "FutureRecordMetadata")]
pub struct RemoteFuture {
    /// The `Producer` that sent the record (its lock, `acks`, first error).
    #[pyo3(get)]
    _owner: Py<PyAny>,
    /// librdkafka's delivered message, once acknowledged: done.
    #[pyo3(get, set)]
    _msg: Option<Py<PyAny>>,
    /// The `RecordMetadata`, made from `_msg` when first asked for.
    #[pyo3(get, set)]
    _md: Option<Py<PyAny>>,
    /// The send's error, once failed: done.
    #[pyo3(get, set)]
    _exc: Option<Py<PyAny>>,
    /// `add_callback` functions waiting for the acknowledgement.
    #[pyo3(get, set)]
    _callbacks: Option<Py<PyAny>>,
    /// `add_errback` functions waiting for an error.
    #[pyo3(get, set)]
    _errbacks: Option<Py<PyAny>>,
}

/// `ottla.remote.producer.<name>(*args)`.
fn call_python<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    name: &str,
    args: Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let f = cell.get_or_try_init(py, || py.import(MODULE)?.getattr(name).map(Bound::unbind))?;
    f.bind(py).call1(args)
}

impl RemoteFuture {
    /// A pending future of `owner` (a remote `Producer`).
    pub fn of(owner: Py<PyAny>) -> Self {
        Self::new(owner)
    }
}

#[pymethods]
impl RemoteFuture {
    #[new]
    fn new(owner: Py<PyAny>) -> Self {
        RemoteFuture {
            _owner: owner,
            _msg: None,
            _md: None,
            _exc: None,
            _callbacks: None,
            _errbacks: None,
        }
    }

    /// librdkafka's `on_delivery(error, message)`, on a thread serving
    /// `poll()`.
    fn __call__(
        slf: &Bound<'_, Self>,
        err: Bound<'_, PyAny>,
        msg: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        if err.is_none() {
            let mut this = slf.try_borrow_mut()?;
            if this._callbacks.is_none() {
                this._msg = Some(msg.unbind());
                return Ok(());
            }
        }
        let args = PyTuple::new(py, [slf.clone().into_any(), err, msg])?;
        call_python(py, &DELIVER, "_future_deliver", args).map(drop)
    }

    /// Wait (seconds; None: forever) for the broker's acknowledgement and
    /// return the `RecordMetadata`; raises the send's error.
    #[pyo3(signature = (timeout=None))]
    fn get<'py>(
        slf: Bound<'py, Self>,
        timeout: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let timeout = timeout.unwrap_or_else(|| py.None().into_bound(py));
        let args = PyTuple::new(py, [slf.into_any(), timeout])?;
        call_python(py, &GET, "_future_get", args)
    }

    /// `get()`'s other name.
    #[pyo3(signature = (timeout=None))]
    fn result<'py>(
        slf: Bound<'py, Self>,
        timeout: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::get(slf, timeout)
    }

    fn _metadata<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let args = PyTuple::new(py, [slf.into_any()])?;
        call_python(py, &METADATA, "_future_metadata", args)
    }

    fn _reported<'py>(slf: Bound<'py, Self>) -> PyResult<()> {
        let py = slf.py();
        let args = PyTuple::new(py, [slf.into_any()])?;
        call_python(py, &REPORTED, "_future_reported", args).map(drop)
    }

    fn _is_done(&self) -> bool {
        self._msg.is_some() || self._exc.is_some()
    }

    #[getter]
    fn is_done(&self) -> bool {
        self._is_done()
    }

    fn done(&self) -> bool {
        self._is_done()
    }

    fn succeeded(&self) -> bool {
        self._msg.is_some()
    }

    fn failed(&self) -> bool {
        self._exc.is_some()
    }

    /// The send's error (None if none, or not yet).
    #[getter]
    fn exception<'py>(slf: Bound<'py, Self>) -> PyResult<Option<Py<PyAny>>> {
        let exc = slf.borrow()._exc.as_ref().map(|e| e.clone_ref(slf.py()));
        if exc.is_some() {
            Self::_reported(slf)?;
        }
        Ok(exc)
    }

    /// Call `f(record_metadata)` once acknowledged; returns this future.
    fn add_callback<'py>(
        slf: Bound<'py, Self>,
        f: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let args = PyTuple::new(py, [slf.into_any(), f])?;
        call_python(py, &ADD_CALLBACK, "_future_add_callback", args)
    }

    /// Call `f(exception)` if the send fails; returns this future.
    fn add_errback<'py>(
        slf: Bound<'py, Self>,
        f: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let args = PyTuple::new(py, [slf.into_any(), f])?;
        call_python(py, &ADD_ERRBACK, "_future_add_errback", args)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self._owner)?;
        for o in [
            &self._msg,
            &self._md,
            &self._exc,
            &self._callbacks,
            &self._errbacks,
        ]
        .into_iter()
        .flatten()
        {
            visit.call(o)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self._msg = None;
        self._md = None;
        self._exc = None;
        self._callbacks = None;
        self._errbacks = None;
    }
}
