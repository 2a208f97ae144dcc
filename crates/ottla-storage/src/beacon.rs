//! The beacon: one memory-mapped page per data directory (`.ottla/beacon`)
//! through which processes on the directory tell each other that something
//! changed, so a waiting consumer in another process wakes within
//! microseconds instead of polling.
//!
//! Appenders bump `appends` after publishing a partition head and wake
//! waiters with a futex on that word. Linux futexes on a shared file mapping
//! work across processes; the `waiters` count lets an appender skip the wake
//! syscall when nobody sleeps. Waiters re-check their partitions after every
//! wake, so a wake meant for another topic costs only a spurious re-check.
//! `metadata` is bumped on topic create, delete and config change.
//! `groups` (byte 64, away from the words above so they can grow) is bumped
//! whenever a consumer group's state file changes or a member releases a
//! partition, so members of every group re-check without polling files.
//!
//! A waiter may first spin on the `appends` word for a short, adaptive
//! budget ([`BusyPoll`], Linux's `SO_BUSY_POLL` idea): a futex sleep costs
//! the wake-up of a sleeping thread (3 µs at p50, 16-22 µs at p99 here),
//! which a consumer fed every few tens of microseconds pays per record.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;

use crate::error::{IoContext, Result};

pub struct Beacon {
    map: MmapMut,
}

impl Beacon {
    pub fn open(path: &Path) -> Result<Beacon> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx("open beacon", path)?;
        if file.metadata().ctx("stat beacon", path)?.len() < 4096 {
            file.set_len(4096).ctx("size beacon", path)?;
        }
        // As for the partition head: allocate the page before any store
        // through the mapping can fault on it (SIGBUS on a full disk).
        if let Err(e) = crate::log::index_file::fallocate_keep_size(&file, 0, 4096) {
            if !crate::log::index_file::is_unsupported(&e) {
                return Err(crate::Error::io("allocate beacon", path, e));
            }
        }
        // SAFETY: the page is only accessed through atomics.
        let map = unsafe { MmapMut::map_mut(&file) }.ctx("mmap beacon", path)?;
        Ok(Beacon { map })
    }

    fn u32_at(&self, byte: usize) -> &AtomicU32 {
        // SAFETY: in bounds of a 4096-byte page-aligned mapping, aligned.
        unsafe { &*(self.map.as_ptr().add(byte) as *const AtomicU32) }
    }

    fn u64_at(&self, byte: usize) -> &AtomicU64 {
        // SAFETY: as above.
        unsafe { &*(self.map.as_ptr().add(byte) as *const AtomicU64) }
    }

    fn appends(&self) -> &AtomicU32 {
        self.u32_at(0)
    }
    fn waiters(&self) -> &AtomicU32 {
        self.u32_at(4)
    }
    fn metadata(&self) -> &AtomicU64 {
        self.u64_at(8)
    }

    /// The current append sequence; pass it to [`Beacon::wait`] after
    /// finding nothing new, so a wake between the check and the sleep is not
    /// missed.
    pub fn append_seq(&self) -> u32 {
        self.appends().load(Ordering::Acquire)
    }

    pub fn notify_append(&self) {
        // SeqCst on both sides (here and in `wait`): each side writes its
        // word then reads the other's, which only sequential consistency
        // orders. Then either the waiter sees the new sequence and does not
        // sleep, or the appender sees the waiter and wakes it.
        self.appends().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) > 0 {
            futex_wake(self.appends());
        }
    }

    /// Sleep until the append sequence moves past `seen` or `timeout` passes.
    pub fn wait(&self, seen: u32, timeout: Duration) {
        self.waiters().fetch_add(1, Ordering::SeqCst);
        // FUTEX_WAIT compares the word again in the kernel, so an append
        // between this load and the sleep returns at once (EAGAIN).
        if self.appends().load(Ordering::SeqCst) == seen {
            futex_wait(self.appends(), seen, timeout);
        }
        self.waiters().fetch_sub(1, Ordering::SeqCst);
    }

    /// Like [`Beacon::wait`], but first spin (without sleeping) for up to
    /// `poll`'s current budget, then adapt the budget to what happened.
    ///
    /// The spin only reads the sequence; when it gives up, the plain `wait`
    /// above runs with the same `seen`, so an append landing just as the
    /// spin ends is caught by its re-check or by the appender's wake: the
    /// spin adds no window in which a wake can be missed.
    pub fn wait_polling(&self, seen: u32, timeout: Duration, poll: &BusyPoll) {
        if poll.cap_ns == 0 {
            return self.wait(seen, timeout);
        }
        let start = Instant::now();
        let budget = poll.budget_at(start).min(timeout);
        if !budget.is_zero() {
            match self.spin(seen, start, start + budget) {
                Spin::Moved => {
                    poll.hit(start.elapsed());
                    return;
                }
                Spin::Preempted => poll.preempted(Instant::now()),
                Spin::GaveUp => {}
            }
        }
        self.wait(seen, timeout.saturating_sub(start.elapsed()));
        let waited = start.elapsed();
        if self.append_seq() != seen && waited.as_nanos() <= u128::from(poll.cap_ns) {
            poll.near_miss(waited);
        } else {
            poll.miss();
        }
    }

    /// Spin until the sequence moves past `seen` or `until`.
    fn spin(&self, seen: u32, start: Instant, until: Instant) -> Spin {
        let mut last = start;
        let mut yield_at = start + YIELD_EVERY;
        loop {
            // The clock (a vDSO call) is read once per 16 looks at the word.
            for _ in 0..16 {
                if self.appends().load(Ordering::Acquire) != seen {
                    return Spin::Moved;
                }
                std::hint::spin_loop();
            }
            let mut now = Instant::now();
            if now.duration_since(last) >= PREEMPTED {
                return Spin::Preempted;
            }
            if now >= until {
                return Spin::GaveUp;
            }
            if now >= yield_at {
                // The appender may have been woken onto this CPU (both cores
                // busy): let it run rather than spin in its way.
                // SAFETY: no arguments; it only reschedules this thread.
                unsafe { libc::sched_yield() };
                let back = Instant::now();
                // Another thread ran that long here: this CPU is wanted.
                if back.duration_since(now) >= PREEMPTED
                    && self.appends().load(Ordering::Acquire) == seen
                {
                    return Spin::Preempted;
                }
                now = back;
                yield_at = now + YIELD_EVERY;
            }
            last = now;
        }
    }

    pub fn metadata_gen(&self) -> u64 {
        self.metadata().load(Ordering::Acquire)
    }

    pub fn bump_metadata(&self) {
        self.metadata().fetch_add(1, Ordering::AcqRel);
        self.notify_append();
    }

    fn groups(&self) -> &AtomicU64 {
        self.u64_at(64)
    }

    /// Moves whenever any group's state or partition ownership changes.
    pub fn groups_gen(&self) -> u64 {
        self.groups().load(Ordering::Acquire)
    }

    /// Announce a group change and wake sleeping consumers so they react.
    pub fn bump_groups(&self) {
        self.groups().fetch_add(1, Ordering::AcqRel);
        self.notify_append();
    }
}

enum Spin {
    Moved,
    GaveUp,
    /// The clock jumped between two looks: this thread lost its CPU.
    Preempted,
}

/// A gap this long between two clock reads of a spin (normally well under
/// a microsecond apart) means the spinning thread was descheduled.
const PREEMPTED: Duration = Duration::from_micros(10);

/// How often a spin offers its CPU to another runnable thread.
const YIELD_EVERY: Duration = Duration::from_micros(2);

/// After a preempted spin, waits sleep at once for this long. A spinner
/// that loses its CPU has no core to itself: spinning then only takes CPU
/// from the thread that would produce the record (measured on the 2-core
/// VM under load: a 50 µs spin raised the sender's lateness and the p50).
const COOL_DOWN: Duration = Duration::from_millis(50);

/// The longest busy-poll a consumer may ask for: beyond CPython's 5 ms
/// thread switch interval, sleeping is as fast as spinning.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(5);

/// A waiter's adaptive spin budget, capped by the consumer's `busy_poll_us`.
///
/// Like glibc's adaptive mutex, the budget follows what spinning would have
/// bought: it starts at zero; a sleep that an append ended within the cap
/// (spinning that long would have caught it) sets it to twice that wait; a
/// spin that caught an append keeps it at least twice the time spun; a
/// sleep that timed out, or lasted longer than the cap, halves it, down to
/// zero. So an idle consumer never spins (its waits time out), and a
/// consumer fed faster than the cap spins instead of sleeping. A spin that
/// finds itself descheduled (no core of its own) stops spinning for
/// `COOL_DOWN` (50 ms).
/// Invariant: `budget_ns <= cap_ns`.
pub struct BusyPoll {
    cap_ns: u64,
    budget_ns: AtomicU64,
    epoch: Instant,
    /// Nanoseconds after `epoch` before which no wait spins.
    cool_until_ns: AtomicU64,
}

impl BusyPoll {
    pub fn new(cap: Duration) -> BusyPoll {
        BusyPoll {
            cap_ns: cap.min(MAX_BUSY_POLL).as_nanos() as u64,
            budget_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            cool_until_ns: AtomicU64::new(0),
        }
    }

    /// How long the next wait may spin.
    pub fn budget(&self) -> Duration {
        Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed))
    }

    /// The budget of a wait starting at `now` (zero while cooling down).
    fn budget_at(&self, now: Instant) -> Duration {
        let at = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        if at < self.cool_until_ns.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        self.budget()
    }

    fn preempted(&self, now: Instant) {
        let until = now.saturating_duration_since(self.epoch) + COOL_DOWN;
        self.cool_until_ns
            .store(until.as_nanos() as u64, Ordering::Relaxed);
        self.budget_ns.store(0, Ordering::Relaxed);
    }

    fn set(&self, ns: u64) {
        // Below a microsecond a spin is not worth its clock reads.
        let ns = if ns < 1_000 { 0 } else { ns.min(self.cap_ns) };
        self.budget_ns.store(ns, Ordering::Relaxed);
    }

    fn hit(&self, spun: Duration) {
        let twice = (spun.as_nanos() as u64).saturating_mul(2);
        self.set(twice.max(self.budget_ns.load(Ordering::Relaxed)));
    }

    fn near_miss(&self, waited: Duration) {
        self.set((waited.as_nanos() as u64).saturating_mul(2));
    }

    fn miss(&self) {
        self.set(self.budget_ns.load(Ordering::Relaxed) / 2);
    }
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 in shared memory, with a
    // relative timeout; spurious returns (EINTR, EAGAIN) are fine for callers.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_returns_on_notify_from_another_mapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("beacon");
        let a = Arc::new(Beacon::open(&p).expect("open"));
        let b = Beacon::open(&p).expect("open again");
        let seen = a.append_seq();
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                a.wait(seen, Duration::from_secs(5));
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        b.notify_append();
        let waited = waiter.join().expect("join");
        assert!(waited < Duration::from_secs(4), "waited {waited:?}");
        assert_ne!(a.append_seq(), seen);
    }

    #[test]
    fn busy_poll_budget_grows_on_near_misses_and_decays_to_zero() {
        let p = BusyPoll::new(Duration::from_micros(50));
        assert_eq!(
            p.budget(),
            Duration::ZERO,
            "an untried consumer does not spin"
        );
        p.near_miss(Duration::from_micros(10));
        assert_eq!(p.budget(), Duration::from_micros(20));
        p.hit(Duration::from_micros(40));
        assert_eq!(p.budget(), Duration::from_micros(50), "capped");
        p.hit(Duration::from_micros(1));
        assert_eq!(
            p.budget(),
            Duration::from_micros(50),
            "a quick hit keeps it"
        );
        for _ in 0..6 {
            p.miss();
        }
        assert_eq!(p.budget(), Duration::ZERO, "below 1 µs it stops");
        let capped = BusyPoll::new(Duration::from_secs(1));
        capped.near_miss(Duration::from_millis(4));
        assert_eq!(capped.budget(), MAX_BUSY_POLL);
        let off = BusyPoll::new(Duration::ZERO);
        off.near_miss(Duration::from_micros(10));
        assert_eq!(off.budget(), Duration::ZERO);
    }

    #[test]
    fn a_preempted_spin_cools_down() {
        let p = BusyPoll::new(Duration::from_micros(50));
        p.near_miss(Duration::from_micros(20));
        let now = Instant::now();
        assert_eq!(p.budget_at(now), Duration::from_micros(40));
        p.preempted(now);
        p.near_miss(Duration::from_micros(20));
        assert_eq!(p.budget_at(now), Duration::ZERO, "cooling down");
        assert_eq!(
            p.budget_at(now + COOL_DOWN + Duration::from_millis(1)),
            Duration::from_micros(40)
        );
    }

    #[test]
    fn polling_wait_returns_on_notify_whether_spinning_or_asleep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("beacon");
        let a = Arc::new(Beacon::open(&p).expect("open"));
        let b = Beacon::open(&p).expect("open again");
        let poll = Arc::new(BusyPoll::new(MAX_BUSY_POLL));
        // Delays below, around and far beyond the budget: the spin catches
        // some, the futex the rest, and the budget moves both ways.
        for delay_us in [0u64, 100, 3000, 20_000, 200, 50, 30_000] {
            let seen = a.append_seq();
            let waiter = {
                let (a, poll) = (a.clone(), poll.clone());
                std::thread::spawn(move || {
                    let t = Instant::now();
                    while a.append_seq() == seen && t.elapsed() < Duration::from_secs(5) {
                        a.wait_polling(seen, Duration::from_secs(5), &poll);
                    }
                    a.append_seq()
                })
            };
            std::thread::sleep(Duration::from_micros(delay_us));
            b.notify_append();
            assert_ne!(waiter.join().expect("join"), seen);
            assert!(poll.budget() <= MAX_BUSY_POLL);
        }
    }

    #[test]
    fn polling_wait_times_out_and_decays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Beacon::open(&dir.path().join("beacon")).expect("open");
        let poll = BusyPoll::new(Duration::from_micros(50));
        poll.near_miss(Duration::from_micros(25));
        assert_eq!(poll.budget(), Duration::from_micros(50));
        a.wait_polling(a.append_seq(), Duration::from_millis(30), &poll);
        // Halved by the timed-out wait; zero if the spin found itself
        // preempted first (a loaded machine): either way it decayed.
        let left = poll.budget();
        assert!(
            left == Duration::from_micros(25) || left.is_zero(),
            "{left:?}"
        );
    }

    #[test]
    fn wait_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Beacon::open(&dir.path().join("beacon")).expect("open");
        let t = Instant::now();
        a.wait(a.append_seq(), Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}
