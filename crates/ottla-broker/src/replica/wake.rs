//! The directory beacon as an async signal.
//!
//! Appenders in any process bump the beacon's futex word. One thread per
//! broker sleeps on it (in short slices, so it notices shutdown) and
//! publishes the sequence on a `watch` channel; a long-polling Fetch marks
//! the current value seen, looks for data, and awaits the next change, so an
//! append between the look and the wait is never missed.
//!
//! The thread watches the beacon only while some Fetch is parked (see
//! [`Interest`]). A beacon waiter costs every append a futex wake and this
//! thread a context switch; a producer-only workload (the common one for a
//! test broker) would pay both on every Produce request for nothing.
//! Invariant: when the thread starts watching, it first publishes once, so
//! an append it did not watch for (between a Fetch's look and its parking)
//! still wakes that Fetch; the worst case is one spurious re-check.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use tokio::sync::watch;

use ottla_storage::beacon::Beacon;

/// How many Fetch requests are waiting for an append right now.
#[derive(Default)]
pub struct Interest {
    parked: AtomicUsize,
    thread: OnceLock<Thread>,
}

impl Interest {
    /// Announce a Fetch about to wait; the interest lasts as long as the guard.
    pub fn park(self: &Arc<Self>) -> Parked {
        if self.parked.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Parked(self.clone())
    }

    /// How many Fetch requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }
}

pub struct Parked(Arc<Interest>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Waker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long the thread sleeps at a time, so it notices shutdown.
const SLICE: Duration = Duration::from_millis(50);

impl Waker {
    pub fn start(beacon: Arc<Beacon>, tx: watch::Sender<u64>, interest: Arc<Interest>) -> Waker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let watched = interest.clone();
        let thread = std::thread::Builder::new()
            .name("ottla-broker-wake".into())
            .spawn(move || {
                let mut last = beacon.append_seq();
                let mut published = 0u64;
                let mut watching = false;
                while !flag.load(Ordering::Acquire) {
                    if watched.parked.load(Ordering::Acquire) == 0 {
                        // Nobody to wake: not a beacon waiter, so appends
                        // skip the futex wake. A Fetch parking unparks us.
                        watching = false;
                        std::thread::park_timeout(SLICE);
                        continue;
                    }
                    let now = beacon.append_seq();
                    if !watching || now != last {
                        // An append; or we are starting to watch, and
                        // appends since the parked Fetches looked went
                        // unwatched: wake them (once, at worst spuriously).
                        watching = true;
                        last = now;
                        published += 1;
                        tx.send_replace(published);
                        continue;
                    }
                    beacon.wait(last, SLICE);
                }
            })
            .ok();
        if let Some(t) = &thread {
            let _ = interest.thread.set(t.thread().clone());
        }
        Waker { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
