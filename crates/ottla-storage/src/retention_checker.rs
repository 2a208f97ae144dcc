//! The periodic retention check (Kafka's `log.retention.check.interval.ms`).
//!
//! A partition otherwise enforces retention only when it rolls, opens or
//! changes config, so a partition nobody writes to (or one whose active
//! segment never fills) would keep expired segments forever. A checker
//! wakes every interval and runs `PartitionLog::enforce_retention` over
//! every partition of every topic in the data directory, and the cleaner's
//! check over compacted topics with a `max.compaction.lag.ms`.
//!
//! One process does a round at a time: a round first takes, without
//! waiting, an exclusive OFD lock on byte [`CHECK_BYTE`] of
//! `.ottla/retention.lock`; whoever does not get it skips the round (the
//! holder is doing the same work). Each checker opens its own description
//! of the file, so two checkers in one process exclude each other as two
//! processes do, and a dead holder's lock goes with it.
//!
//! The thread holds the store weakly and sleeps on a condvar: dropping (or
//! [`RetentionChecker::stop`]) wakes it and joins it at once, and it never
//! keeps a store open. A failing round is dropped silently and retried next
//! interval; the writes that roll segments report their own errors.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::ofd::{ByteGuard, ByteLocks};
use crate::store::Store;

/// Kafka's default `log.retention.check.interval.ms` (five minutes).
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 300_000;

/// The byte of `retention.lock` a round holds exclusively.
pub const CHECK_BYTE: u64 = 0;

/// The lock file every checker of a data directory shares.
pub fn lock_path(store: &Store) -> PathBuf {
    store.root().join(".ottla").join("retention.lock")
}

/// One retention round over every topic of `store`, if `locks` gets
/// [`CHECK_BYTE`]: `Some(segments deleted)`, or `None` when another
/// description holds it (another checker's round is under way).
pub fn check_once(store: &Store, locks: &ByteLocks) -> Result<Option<usize>> {
    if !locks.try_lock(CHECK_BYTE, true)? {
        return Ok(None);
    }
    let _held = ByteGuard::held(locks, CHECK_BYTE);
    let mut deleted = 0;
    let mut first_err = None;
    for name in store.list_topics(true)? {
        // A topic deleted since the listing is simply gone; one partition's
        // error does not stop the others' retention.
        let topic = match store.topic(&name) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        // max.compaction.lag.ms: a compacted partition nobody writes to is
        // still cleaned once its dirty section is overdue (Kafka's cleaner
        // looks on a timer too; rolls and opens are ottla's other triggers).
        let overdue_check = topic.config.cleanup_policy != crate::config::CleanupPolicy::Delete
            && topic.config.max_compaction_lag_ms != i64::MAX;
        let deletes = topic.config.deletes_by_retention();
        if !deletes && !overdue_check {
            continue;
        }
        for p in 0..topic.partitions {
            match store.partition(&topic, p).and_then(|log| {
                let n = if deletes { log.enforce_retention()? } else { 0 };
                if overdue_check {
                    crate::log::cleaner::clean_on_roll(&log);
                }
                Ok(n)
            }) {
                Ok(n) => deleted += n,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(Some(deleted)),
    }
}

struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// A running checker thread; stopped and joined when dropped.
pub struct RetentionChecker {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionChecker {
    /// Start checking `store` every `interval_ms` (at least 1 ms); the first
    /// round runs one interval from now.
    pub fn start(store: &Arc<Store>, interval_ms: u64) -> Result<RetentionChecker> {
        let locks = ByteLocks::open(&lock_path(store))?;
        let every = Duration::from_millis(interval_ms.max(1));
        let stop = Arc::new(Stop {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let weak: Weak<Store> = Arc::downgrade(store);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ottla-retention".into())
            .spawn(move || run(weak, locks, every, &stop2))
            .map_err(|e| Error::IllegalState(format!("cannot start the retention checker: {e}")))?;
        Ok(RetentionChecker {
            stop,
            thread: Some(thread),
        })
    }

    /// The checker of `store` at `interval_ms`, started if none is running:
    /// several producers (and a broker) in one process on one directory
    /// share one thread. It stops when the last holder drops it.
    pub fn shared(store: &Arc<Store>, interval_ms: u64) -> Result<Arc<RetentionChecker>> {
        let mut running = store.retention_checkers.lock();
        running.retain(|(_, w)| w.strong_count() > 0);
        if let Some(c) = running
            .iter()
            .find(|(ms, _)| *ms == interval_ms)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(c);
        }
        let c = Arc::new(RetentionChecker::start(store, interval_ms)?);
        running.push((interval_ms, Arc::downgrade(&c)));
        Ok(c)
    }

    /// Stop the thread and wait for it (a round under way finishes first).
    pub fn stop(&mut self) {
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
        if let Some(h) = self.thread.take() {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for RetentionChecker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(store: Weak<Store>, locks: ByteLocks, every: Duration, stop: &Stop) {
    loop {
        let deadline = Instant::now() + every;
        {
            let mut stopped = stop.stopped.lock();
            // Loops over spurious wakeups until the deadline or a stop.
            while !*stopped {
                if stop.wake.wait_until(&mut stopped, deadline).timed_out() {
                    break;
                }
            }
            if *stopped {
                return;
            }
        }
        let Some(store) = store.upgrade() else { return };
        // Errors are retried next round (see the module comment).
        let _ = check_once(&store, &locks);
    }
}
