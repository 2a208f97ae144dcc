//! The directory beacon as an async signal.
//!
//! Appenders in any process bump the beacon's futex word. One thread per
//! broker sleeps on it (in short slices, so it notices shutdown) and
//! publishes the sequence on a `watch` channel; a long-polling Fetch marks
//! the current value seen, looks for data, and awaits the next change, so an
//! append between the look and the wait is never missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::beacon::Beacon;

pub struct Waker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Waker {
    pub fn start(beacon: Arc<Beacon>, tx: watch::Sender<u64>) -> Waker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ottla-broker-wake".into())
            .spawn(move || {
                let mut last = beacon.append_seq();
                let mut published = 0u64;
                while !flag.load(Ordering::Acquire) {
                    beacon.wait(last, Duration::from_millis(50));
                    let now = beacon.append_seq();
                    if now != last {
                        last = now;
                        published += 1;
                        tx.send_replace(published);
                    }
                }
            })
            .ok();
        Waker { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
