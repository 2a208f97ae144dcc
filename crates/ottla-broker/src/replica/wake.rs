//! Waking parked fetches: per partition, from the directory beacon.
//!
//! Appenders in any process publish the partition head, then bump the
//! beacon's futex word; the beacon says *that* something was appended on
//! the directory, not *where*. A parked Fetch registers each partition it
//! read with the end (high watermark) its look saw ([`Watches::park`]).
//! One thread per broker sleeps on the beacon (in short slices, so it
//! notices shutdown) and, when it moves, looks once at the head of each
//! *watched partition* (an atomic seqlock read of a mapped page, no
//! syscall) and wakes only the fetches whose partition's end moved past
//! what they saw. So an append costs O(distinct watched partitions) head
//! reads plus the fetches it is really for, whatever the number of fetches
//! parked; a fetch whose partitions did not grow is not run again.
//! Appends from other processes (embedded producers on the directory) wake
//! fetches the same way: their head is the same shared page.
//!
//! No lost wakeup: a fetch registers *after* its look, with the end that
//! look saw, and then compares each partition's current end with it itself
//! (an append between the look and the registration wakes it at once).
//! Any append after that comparison bumps the beacon after the
//! registration was in the map, so the thread's next pass sees both.
//!
//! The thread watches the beacon only while some Fetch is parked. A beacon
//! waiter costs every append a futex wake and this thread a context switch;
//! a producer-only workload (the common one for a test broker) would pay
//! both on every Produce request for nothing. Invariant: whenever the
//! thread (re)reads the sequence it waits on, it then checks every watched
//! partition once, so an append it did not watch for (while it was not
//! watching) is still seen.
//!
//! A leader's own appends do not wait for the thread: the appending task
//! wakes the fetches parked on that partition itself
//! ([`Watches::wake_partition`]: one lock and two map lookups). Under
//! `acks=all` each Produce waits for a follower's next Fetch, which waits
//! for its previous one to be answered: a hop through the wake thread (a
//! futex wake and a thread to schedule, milliseconds on a loaded machine)
//! was on every produce's path. The thread still looks (and finds nothing
//! left to wake).
//!
//! A deleted partition (its head flagged, by any process) wakes its
//! fetches, which then answer with the error; so does any metadata change
//! (topic create, delete, config: rare), so a registration never outlives
//! the partition it names for longer than one wake. Registrations are
//! guards ([`Parked`]): a fetch that ends in any way (answered, timed out,
//! or dropped with its connection) removes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use ottla_storage::beacon::Beacon;
use ottla_storage::log::PartitionLog;

/// The partitions a Fetch looked at, each with the end its look saw (and
/// which end: the high watermark, or the log end for a follower's fetch):
/// what it waits to move.
#[derive(Default)]
pub struct Looked(Vec<(Arc<PartitionLog>, i64, bool)>);

impl Looked {
    /// `log` was read up to its high watermark `end`.
    pub fn saw(&mut self, log: Arc<PartitionLog>, end: i64) {
        self.0.push((log, end, false));
    }

    /// `log` was read up to its log end `end` (a follower's fetch, which
    /// waits for appends, not for the high watermark).
    pub fn saw_log_end(&mut self, log: Arc<PartitionLog>, end: i64) {
        self.0.push((log, end, true));
    }
}

/// The parked fetches, by the partitions they wait on.
#[derive(Default)]
pub struct Watches {
    state: Mutex<State>,
    /// Fetches parked now (each may watch several partitions, or none).
    parked: AtomicUsize,
    thread: OnceLock<Thread>,
    /// Partition heads looked at by the wake thread (for tests: the cost of
    /// its passes).
    looks: AtomicU64,
    /// Fetches woken by the wake thread or by their own registration check.
    wakes: AtomicU64,
}

#[derive(Default)]
struct State {
    /// By the address of the log (one `PartitionLog` per partition per
    /// process; a re-created partition is another log, hence another key).
    partitions: HashMap<usize, Watched>,
    next_id: u64,
}

struct Watched {
    /// Held while watched: the head it maps is what the thread reads.
    log: Arc<PartitionLog>,
    /// Watching the log end rather than the high watermark (a follower's
    /// fetch): such waiters are kept under a key of their own.
    log_end: bool,
    /// The lowest end a waiter not yet woken saw: while the partition's
    /// end is at most this, nobody here is to be woken.
    low: i64,
    waiters: HashMap<u64, Waiter>,
}

struct Waiter {
    /// The end this fetch saw; `i64::MAX` once woken.
    seen: i64,
    signal: Arc<Notify>,
}

/// The end of `log` as a wake compares it (its high watermark, or its log
/// end with `log_end`): `i64::MAX` once the partition is deleted or its
/// head cannot be read, so its fetches wake and find out.
fn end_of(log: &PartitionLog, log_end: bool) -> i64 {
    if log.is_deleted() {
        return i64::MAX;
    }
    if log_end {
        log.log_end_offset().unwrap_or(i64::MAX)
    } else {
        log.high_watermark().unwrap_or(i64::MAX)
    }
}

impl Watches {
    /// Park a Fetch on the partitions it `looked` at. The fetch waits on
    /// [`Parked::woken`]; already woken if some partition moved since the
    /// look. The registration lasts as long as the guard.
    pub fn park(self: &Arc<Self>, looked: Looked) -> Parked {
        let signal = Arc::new(Notify::new());
        let mut keys = Vec::with_capacity(looked.0.len());
        let id = {
            let mut st = self.state.lock();
            let id = st.next_id;
            st.next_id += 1;
            for (log, seen, log_end) in &looked.0 {
                // A log is at least 8-byte aligned: the low bit tells the
                // two kinds of watch of one log apart.
                let key = Arc::as_ptr(log) as usize | usize::from(*log_end);
                let w = st.partitions.entry(key).or_insert_with(|| Watched {
                    log: log.clone(),
                    log_end: *log_end,
                    low: i64::MAX,
                    waiters: HashMap::new(),
                });
                let waiter = w.waiters.entry(id).or_insert_with(|| Waiter {
                    seen: *seen,
                    signal: signal.clone(),
                });
                // The same partition twice in one request: the lower end.
                waiter.seen = waiter.seen.min(*seen);
                w.low = w.low.min(*seen);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            id
        };
        if self.parked.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        // An append between the look and the registration: the thread may
        // have passed over it already, so look here (see the module).
        if looked
            .0
            .iter()
            .any(|(log, seen, log_end)| end_of(log, *log_end) > *seen)
        {
            self.wakes.fetch_add(1, Ordering::Relaxed);
            signal.notify_one();
        }
        Parked {
            watches: self.clone(),
            id,
            keys,
            signal,
        }
    }

    /// How many Fetch requests are parked now.
    pub fn waiting(&self) -> usize {
        self.parked.load(Ordering::Acquire)
    }

    /// (partition heads looked at by the wake thread, fetches woken), since
    /// the broker started: what parked fetches have cost.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.looks.load(Ordering::Relaxed),
            self.wakes.load(Ordering::Relaxed),
        )
    }

    /// Distinct partitions watched now.
    #[cfg(test)]
    pub fn watched_partitions(&self) -> usize {
        self.state.lock().partitions.len()
    }

    /// One pass of the wake thread: look at each watched partition once and
    /// wake the fetches whose partition moved past what they saw (all of
    /// them with `everyone`).
    fn pass(&self, everyone: bool) {
        let mut st = self.state.lock();
        let mut looks = 0u64;
        let mut wakes = 0u64;
        for w in st.partitions.values_mut() {
            looks += 1;
            wakes += w.wake_moved(everyone);
        }
        drop(st);
        self.looks.fetch_add(looks, Ordering::Relaxed);
        self.wakes.fetch_add(wakes, Ordering::Relaxed);
    }

    /// Wake the fetches parked on `log` (either kind of watch) whose end
    /// moved past what they saw, now, from the caller's thread: a leader
    /// after its append, or after its high watermark moved (see the
    /// module). Nothing to do, and no lock taken, while no fetch is parked.
    pub fn wake_partition(&self, log: &Arc<PartitionLog>) {
        if self.parked.load(Ordering::Acquire) == 0 {
            return;
        }
        let base = Arc::as_ptr(log) as usize;
        let mut wakes = 0u64;
        {
            let mut st = self.state.lock();
            for key in [base, base | 1] {
                if let Some(w) = st.partitions.get_mut(&key) {
                    wakes += w.wake_moved(false);
                }
            }
        }
        self.wakes.fetch_add(wakes, Ordering::Relaxed);
    }
}

impl Watched {
    /// Wake the waiters whose end moved past what they saw (all not yet
    /// woken, with `everyone`); returns how many.
    fn wake_moved(&mut self, everyone: bool) -> u64 {
        let end = end_of(&self.log, self.log_end);
        if end <= self.low && !everyone {
            return 0;
        }
        let mut wakes = 0u64;
        let mut low = i64::MAX;
        for waiter in self.waiters.values_mut() {
            if waiter.seen < end || (everyone && waiter.seen != i64::MAX) {
                waiter.seen = i64::MAX;
                waiter.signal.notify_one();
                wakes += 1;
            }
            low = low.min(waiter.seen);
        }
        self.low = low;
        wakes
    }
}

/// A parked Fetch's registration; dropping it (the fetch answered, timed
/// out, or was dropped with its connection) unregisters it.
pub struct Parked {
    watches: Arc<Watches>,
    id: u64,
    keys: Vec<usize>,
    signal: Arc<Notify>,
}

impl Parked {
    /// Returns once a partition this fetch watches moved past what it saw
    /// (or was deleted, or metadata changed).
    pub async fn woken(&self) {
        self.signal.notified().await
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        {
            let mut st = self.watches.state.lock();
            for key in &self.keys {
                if let Some(w) = st.partitions.get_mut(key) {
                    w.waiters.remove(&self.id);
                    if w.waiters.is_empty() {
                        st.partitions.remove(key);
                    }
                }
            }
        }
        self.watches.parked.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Waker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long the thread sleeps at a time, so it notices shutdown.
const SLICE: Duration = Duration::from_millis(50);

impl Waker {
    pub fn start(beacon: Arc<Beacon>, watches: Arc<Watches>) -> Waker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let watched = watches.clone();
        let thread = std::thread::Builder::new()
            .name("ottla-broker-wake".into())
            .spawn(move || {
                let mut last = beacon.append_seq();
                let mut meta = beacon.metadata_gen();
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
                        // appends since the parked fetches registered went
                        // unwatched: look at every watched partition once.
                        watching = true;
                        last = now;
                        let gen = beacon.metadata_gen();
                        watched.pass(gen != meta);
                        meta = gen;
                        continue;
                    }
                    beacon.wait(last, SLICE);
                }
            })
            .ok();
        if let Some(t) = &thread {
            let _ = watches.thread.set(t.thread().clone());
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
