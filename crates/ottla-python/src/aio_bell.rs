//! How results made on other threads reach asyncio futures: one doorbell
//! per event loop.
//!
//! An asyncio future may only be touched on its loop's thread. The usual
//! bridge (take the GIL on the finishing thread and call
//! `loop.call_soon_threadsafe`) makes every engine thread that finishes a
//! batch, and every tokio thread that finishes a wait, queue for the GIL
//! behind a busy loop (up to the 5 ms switch interval) and, worse, can be
//! caught taking the GIL while the interpreter finalizes: CPython then ends
//! the thread with `pthread_exit`, whose forced unwind through Rust frames
//! aborts the process. So threads here never take the GIL: a finished
//! result is pushed onto the loop's bell queue and the bell (an eventfd the
//! loop watches with `add_reader`) is rung; the loop's thread then sets the
//! futures. Ringing is a mutex push and, for the first item, one `write`.
//!
//! A bell lives as long as its loop holds the reader callback: the registry
//! keeps only a weak reference, so a closed, collected loop takes its bell
//! (and eventfd) with it, and a live weak reference also proves the loop
//! object at that address is the one the bell was made for.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;

use super::errors::to_pyerr;
use super::types::RecordMetadata;
use ottla_storage::error::Error;

/// What a future is resolved with (built into a Python object on the loop).
pub enum Value {
    Metadata(RecordMetadata),
    Unit,
    Bool(bool),
    Failed(Arc<Error>),
}

/// A future and what to resolve it with.
pub type Delivery = (Py<PyAny>, Value);

pub struct Bell {
    fd: OwnedFd,
    queue: Mutex<Vec<Delivery>>,
    /// Set when the loop dropped our reader (closed or collected): the
    /// registry entry then no longer proves the loop at that address is
    /// ours, even while waiters of the old loop still hold the bell.
    orphaned: AtomicBool,
}

/// (event loop address, its bell) for every loop that has one.
type Registry = Mutex<Vec<(usize, Weak<Bell>)>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(Vec::new()))
}

impl Bell {
    /// The bell of `event_loop` (the running loop), made and registered
    /// with the loop on first use.
    pub fn for_loop(event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Bell>> {
        let key = event_loop.as_ptr() as usize;
        // Bells upgraded under the registry lock are dropped after it: the
        // last reference to one may drop Python objects, which can run
        // Python code. For the same reason the lock is never held across a
        // Python call (the GIL may change hands there, and another thread
        // holding it could then wait for this lock forever).
        let mut seen: Vec<Arc<Bell>> = Vec::new();
        let found = {
            let reg = registry().lock();
            seen.extend(
                reg.iter()
                    .filter(|(k, _)| *k == key)
                    .filter_map(|(_, w)| w.upgrade()),
            );
            seen.iter()
                .find(|b| !b.orphaned.load(Ordering::Acquire))
                .cloned()
        };
        drop(seen);
        if let Some(b) = found {
            return Ok(b);
        }
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bell = Arc::new(Bell {
            fd,
            queue: Mutex::new(Vec::new()),
            orphaned: AtomicBool::new(false),
        });
        let py = event_loop.py();
        let reader = Bound::new(py, BellReader { bell: bell.clone() })?;
        event_loop.call_method1(intern!(py, "add_reader"), (bell.fd.as_raw_fd(), reader))?;
        // Only this loop's thread makes this loop's bell, so no other bell
        // for `key` can have appeared meanwhile.
        let mut upgraded: Vec<Arc<Bell>> = Vec::new();
        {
            let mut reg = registry().lock();
            reg.retain(|(_, w)| match w.upgrade() {
                Some(b) => {
                    let live = !b.orphaned.load(Ordering::Acquire);
                    upgraded.push(b);
                    live
                }
                None => false,
            });
            reg.push((key, Arc::downgrade(&bell)));
        }
        drop(upgraded);
        Ok(bell)
    }

    /// Queue results for the loop and wake it. Needs no GIL.
    pub fn ring(&self, items: impl IntoIterator<Item = Delivery>) {
        let was_empty = {
            let mut q = self.queue.lock();
            let was_empty = q.is_empty();
            q.extend(items);
            was_empty
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A full
            // counter (EAGAIN) still leaves the fd readable, which is all
            // the loop needs.
            unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                );
            }
        }
    }
}

/// The loop's `add_reader` callback: drain the queue and set the futures.
#[pyclass(module = "ottla._core", frozen)]
struct BellReader {
    bell: Arc<Bell>,
}

impl Drop for BellReader {
    fn drop(&mut self) {
        self.bell.orphaned.store(true, Ordering::Release);
    }
}

#[pymethods]
impl BellReader {
    fn __call__(&self, py: Python<'_>) {
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.bell.fd.as_raw_fd(),
                &mut buf as *mut u64 as *mut libc::c_void,
                8,
            );
        }
        let items = std::mem::take(&mut *self.bell.queue.lock());
        for (fut, value) in items {
            if let Err(e) = set_future(py, fut.bind(py), value) {
                e.write_unraisable(py, Some(fut.bind(py)));
            }
        }
    }
}

/// Set `fut` unless its task gave up on it (cancelled) meanwhile.
pub fn set_future(py: Python<'_>, fut: &Bound<'_, PyAny>, value: Value) -> PyResult<()> {
    if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    let (method, arg) = match value {
        Value::Metadata(md) => (intern!(py, "set_result"), Bound::new(py, md)?.into_any()),
        Value::Unit => (intern!(py, "set_result"), py.None().into_bound(py)),
        Value::Bool(b) => (
            intern!(py, "set_result"),
            pyo3::types::PyBool::new(py, b).to_owned().into_any(),
        ),
        Value::Failed(e) => (
            intern!(py, "set_exception"),
            to_pyerr(&e).into_value(py).into_bound(py).into_any(),
        ),
    };
    fut.call_method1(method, (arg,))?;
    Ok(())
}

/// The running loop of this thread (RuntimeError if none).
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::get_running_loop(py)
}

/// Run `work` as a tokio task (pyo3-async-runtimes' runtime) and return an
/// asyncio future of its value. Cancelling the future aborts the task, so
/// nothing keeps running for a caller that gave up (work already handed to
/// a blocking thread finishes, but its result is dropped).
pub fn spawn_awaitable<'py, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Value> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let bell = Bell::for_loop(&event_loop)?;
    let fut = event_loop.call_method0(intern!(py, "create_future"))?;
    let target = fut.clone().unbind();
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let v = work.await;
        bell.ring([(target, v)]);
    });
    fut.call_method1(
        intern!(py, "add_done_callback"),
        (AbortOnCancel {
            task: task.abort_handle(),
        },),
    )?;
    Ok(fut)
}

/// Done callback of a [`spawn_awaitable`] future.
#[pyclass(module = "ottla._core", frozen)]
struct AbortOnCancel {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut
            .call_method0(intern!(fut.py(), "cancelled"))?
            .is_truthy()?
        {
            self.task.abort();
        }
        Ok(())
    }
}
