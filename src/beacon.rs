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

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

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
        self.appends().fetch_add(1, Ordering::AcqRel);
        if self.waiters().load(Ordering::Acquire) > 0 {
            futex_wake(self.appends());
        }
    }

    /// Sleep until the append sequence moves past `seen` or `timeout` passes.
    pub fn wait(&self, seen: u32, timeout: Duration) {
        self.waiters().fetch_add(1, Ordering::AcqRel);
        if self.appends().load(Ordering::Acquire) == seen {
            futex_wait(self.appends(), seen, timeout);
        }
        self.waiters().fetch_sub(1, Ordering::AcqRel);
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
    fn wait_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Beacon::open(&dir.path().join("beacon")).expect("open");
        let t = Instant::now();
        a.wait(a.append_seq(), Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(25));
    }
}
