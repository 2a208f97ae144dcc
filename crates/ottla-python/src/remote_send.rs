//! The common case of a remote `send()` in one call of the extension
//! (`ottla.Producer(bootstrap_servers=...)`, `python/ottla/remote/producer.py`).
//!
//! `producer.send(topic, value)` with a `bytes` value and nothing else, to a
//! topic the producer knows, is most of any send loop. Its Python method
//! spent about 300 ns a record beyond librdkafka's own `produce()` call
//! (the frame and its seven parameters, the checks, the sticky partition,
//! the future; docs/PERFORMANCE.md, "Over a cluster", step 4). A
//! `RemoteSender` is set as the producer's `send` attribute: that case it
//! does here, to the letter of the Python fast path (sticky partition
//! bookkeeping, the future as librdkafka's delivery callback, reports served
//! every `poll_every` sends); anything else it hands to the Python `send()`
//! unchanged, so there is one definition of what a send does.

use std::sync::atomic::{AtomicI64, Ordering};

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBytes, PyDict, PyList, PyString, PyTuple, PyWeakrefMethods, PyWeakrefReference,
};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::ClosedError;
use crate::remote_future::RemoteFuture;

/// A remote producer's `send`: its common case here, the rest in Python.
///
/// It holds its producer weakly: the producer holds it (its `send`
/// attribute), and a producer dropped unclosed must still be freed at once,
/// which stops its background thread (`weakref.finalize`), not whenever the
/// cyclic GC comes. The Python functions it calls are the class's, given
/// the producer as their first argument.
#[pyclass(module = "ottla", frozen)]
pub struct RemoteSender {
    /// The `Producer` (the futures' owner), weakly.
    owner: Py<PyWeakrefReference>,
    /// `Producer.send`, unbound: every other case.
    send: Py<PyAny>,
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
    #[allow(clippy::too_many_arguments)]
    fn new(
        owner: &Bound<'_, PyAny>,
        send: Py<PyAny>,
        produce: Py<PyAny>,
        fast: Py<PyDict>,
        batch_size: i64,
        poll_every: i64,
        serve: Py<PyAny>,
        produce_slow: Py<PyAny>,
    ) -> PyResult<Self> {
        let poll_every = poll_every.max(1);
        Ok(RemoteSender {
            owner: PyWeakrefReference::new(owner)?.unbind(),
            send,
            produce,
            fast,
            batch_size,
            poll_every,
            until_poll: AtomicI64::new(poll_every),
            serve,
            produce_slow,
        })
    }

    /// `send(topic, value, key=None, partition=None, timestamp_ms=None,
    /// headers=None, *, timestamp=None)`, as `ottla.Producer.send`.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let owner = self.owner(py)?;
        if let Some(future) = self.fast_send(py, &owner, args, kwargs)? {
            return Ok(future);
        }
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(owner);
        all.extend(args.iter());
        self.send.bind(py).call(PyTuple::new(py, all)?, kwargs)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)?;
        visit.call(&self.send)?;
        visit.call(&self.produce)?;
        visit.call(&self.fast)?;
        visit.call(&self.serve)?;
        visit.call(&self.produce_slow)
    }
}

impl RemoteSender {
    /// The producer; gone only if it was collected while this object was
    /// kept (`send = ottla.Producer(...).send`): closed, for this object.
    fn owner<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.owner
            .bind(py)
            .upgrade()
            .ok_or_else(|| ClosedError::new_err("producer is closed (it was dropped)"))
    }

    /// The common case, or `None` for the Python `send()`: positional
    /// `(topic, value)` with a `bytes` value (a key, partition, timestamp
    /// and headers of None given positionally allowed), no keywords, a topic
    /// in `fast` whose sticky partition has room.
    fn fast_send<'py>(
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
