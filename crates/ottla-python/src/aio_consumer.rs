//! The asyncio consumer's wait for new records: `RecordWaiter`.
//!
//! `ottla.aio.Consumer` (python/ottla/aio.py) reads with the sync
//! consumer's non-blocking calls, on the event loop's thread, and awaits a
//! `RecordWaiter` only when nothing is ready. Because records are taken from
//! the engine only by a call that returns them straight to the task that
//! asked, a cancelled wait has taken nothing: positions move only for
//! records handed to Python.
//!
//! Waiting holds neither the GIL nor a Python thread. Appenders in any
//! process bump the directory's beacon (a futex word); one watcher thread
//! per data directory sleeps on it, only while some task waits, and
//! publishes each new append sequence into a tokio `watch` channel. A wait is
//! a task on pyo3-async-runtimes' tokio runtime that sleeps on that channel,
//! on the waiter's close signal and on a timer, and hands its answer to the
//! loop through the loop's bell (`aio_bell`); cancelling the asyncio future
//! aborts the task.

use crate::errors::PyResultExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio::sync::watch;

use super::aio_bell::{spawn_awaitable, Value};
use ottla_storage::beacon::Beacon;
use ottla_storage::error::Error;
use ottla_storage::store::Store;

/// Longest a wait sleeps without re-reading the beacon itself, so a wake
/// the watcher missed costs at most this.
const SLICE: Duration = Duration::from_millis(100);

/// One per data directory (per process): the thread that turns beacon
/// futex wakes into `watch` updates.
struct Watcher {
    beacon: Arc<Beacon>,
    seq: watch::Sender<u32>,
    /// Waits in progress; the thread sleeps on the futex only while > 0.
    active: Mutex<usize>,
    cv: Condvar,
}

impl Watcher {
    fn for_store(store: &Store) -> ottla_storage::Result<Arc<Watcher>> {
        static REG: OnceLock<Mutex<HashMap<PathBuf, Weak<Watcher>>>> = OnceLock::new();
        let mut reg = REG.get_or_init(|| Mutex::new(HashMap::new())).lock();
        if let Some(w) = reg.get(store.root()).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let beacon = store.beacon().clone();
        let (seq, _) = watch::channel(beacon.append_seq());
        let w = Arc::new(Watcher {
            beacon,
            seq,
            active: Mutex::new(0),
            cv: Condvar::new(),
        });
        let weak = Arc::downgrade(&w);
        std::thread::Builder::new()
            .name("ottla-aio-watch".into())
            .spawn(move || watch_loop(weak))
            .map_err(|e| Error::IllegalState(format!("cannot start watcher thread: {e}")))?;
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(store.root().to_path_buf(), Arc::downgrade(&w));
        Ok(w)
    }

    fn publish(&self) -> u32 {
        let now = self.beacon.append_seq();
        self.seq.send_if_modified(|v| {
            let changed = *v != now;
            *v = now;
            changed
        });
        now
    }
}

fn watch_loop(weak: Weak<Watcher>) {
    loop {
        let Some(w) = weak.upgrade() else { return };
        {
            let mut active = w.active.lock();
            if *active == 0 {
                // Idle: nobody waits. Bounded, to notice the last drop.
                w.cv.wait_for(&mut active, Duration::from_millis(500));
                continue;
            }
        }
        let seen = w.publish();
        w.beacon.wait(seen, SLICE);
        w.publish();
    }
}

/// Counts a wait in the watcher (and in its waiter) for as long as it lives.
struct Active {
    watcher: Arc<Watcher>,
    mine: Arc<AtomicUsize>,
}

impl Active {
    fn new(watcher: Arc<Watcher>, mine: Arc<AtomicUsize>) -> Active {
        *watcher.active.lock() += 1;
        watcher.cv.notify_all();
        mine.fetch_add(1, Ordering::AcqRel);
        Active { watcher, mine }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        *self.watcher.active.lock() -= 1;
        self.mine.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Awaitable "new records may be there" for one data directory.
///
/// `seq()` reads the directory's append sequence; after finding nothing to
/// read, `await wait(seen, timeout_ms)` returns True once any process has
/// appended since `seen` (False on timeout or after `close()`, which wakes
/// every wait at once).
#[pyclass(module = "ottla._core", name = "RecordWaiter", frozen)]
pub struct RecordWaiter {
    watcher: Arc<Watcher>,
    closed: watch::Sender<bool>,
    waits: Arc<AtomicUsize>,
    path: String,
}

#[pymethods]
impl RecordWaiter {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let watcher = py
            .detach(|| -> ottla_storage::Result<Arc<Watcher>> {
                let store = Store::open_existing(&path)?;
                Watcher::for_store(&store)
            })
            .py()?;
        Ok(RecordWaiter {
            watcher,
            closed: watch::channel(false).0,
            waits: Arc::new(AtomicUsize::new(0)),
            path: path.display().to_string(),
        })
    }

    /// The directory's append sequence (moves on every append, and on
    /// topic metadata changes).
    fn seq(&self) -> u32 {
        self.watcher.beacon.append_seq()
    }

    /// Awaitable: True once the append sequence moved past `seen`; False
    /// after `timeout_ms` (None: no limit) or once the waiter is closed.
    #[pyo3(signature = (seen, timeout_ms=None))]
    fn wait<'py>(
        &self,
        py: Python<'py>,
        seen: u32,
        timeout_ms: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let deadline = match timeout_ms {
            None => None,
            Some(ms) if ms.is_infinite() && ms > 0.0 => None,
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                Some(Instant::now() + Duration::from_secs_f64(ms / 1000.0))
            }
            Some(ms) => {
                return Err(PyValueError::new_err(format!(
                    "timeout_ms must be >= 0, got {ms}"
                )))
            }
        };
        let watcher = self.watcher.clone();
        let mut closed = self.closed.subscribe();
        let mine = self.waits.clone();
        spawn_awaitable(py, async move {
            let _active = Active::new(watcher.clone(), mine);
            let mut seq = watcher.seq.subscribe();
            loop {
                if *closed.borrow_and_update() {
                    return Value::Bool(false);
                }
                if watcher.beacon.append_seq() != seen {
                    return Value::Bool(true);
                }
                let now = Instant::now();
                let slice = match deadline {
                    Some(d) if d <= now => return Value::Bool(false),
                    Some(d) => (d - now).min(SLICE),
                    None => SLICE,
                };
                tokio::select! {
                    r = seq.changed() => if r.is_err() { return Value::Bool(false) },
                    // An error here means the waiter itself is gone.
                    r = closed.changed() => if r.is_err() { return Value::Bool(false) },
                    _ = tokio::time::sleep(slice) => {}
                }
            }
        })
    }

    /// Wake every wait (they return False) and make later waits return at once.
    fn close(&self) {
        self.closed.send_replace(true);
    }

    #[getter]
    fn closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Waits in progress on this waiter (0 once cancelled ones are gone).
    #[getter]
    fn waiting(&self) -> usize {
        self.waits.load(Ordering::Acquire)
    }

    fn __repr__(&self) -> String {
        format!(
            "<RecordWaiter path={:?} waiting={}{}>",
            self.path,
            self.waiting(),
            if self.closed() { " closed" } else { "" }
        )
    }
}
