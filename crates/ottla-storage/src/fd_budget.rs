//! The open-file budget: how many descriptors the engine keeps open for
//! partition files at once, in a process.
//!
//! Every partition a process has touched used to keep its `.log`, its lock
//! file (and, for the active segment, its index files) open for good, so a
//! process that wrote to a few thousand partitions ran out of descriptors
//! (`RLIMIT_NOFILE`, often 1,024) and then could not open anything else: not
//! a socket, not a metadata file. Now each such descriptor sits in a
//! [`Slot`], and the slots of a process share one budget
//! ([`max_open_files`]): opening past it closes the least recently used
//! ones first, and a closed slot is opened again by its next use. Memory
//! maps (the indexes, the head) need no descriptor once made, so they keep
//! none.
//!
//! Why one budget per process: the descriptor limit is the process's.
//!
//! Correctness under eviction:
//! * A slot hands out `Arc<T>`; eviction only drops the slot's own
//!   reference. A reader in the middle of a `pread` keeps its descriptor
//!   until it lets go, so the count can run over the budget for a moment,
//!   never a read fail.
//! * A slot made with `exclusive` (a partition's lock file, whose OFD locks
//!   live on its open file description) is evicted only while nobody else
//!   holds its value: no lock can be held through it then, and every user
//!   in the process shares one description, as OFD locking requires.
//! * Eviction never waits: a slot another thread is opening or using
//!   exclusively is skipped.
//!
//! Cost on the hot path: a use of an open slot is a read lock, an `Arc`
//! clone and, at most, one relaxed store of the budget's clock (which moves
//! only when something is opened), so recency is "used since the last
//! open", a CLOCK-like approximation of LRU that costs nothing while
//! everything fits.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};

/// The environment variable that sets the budget before anything opens
/// (a number of descriptors); [`set_max_open_files`] overrides it.
pub const ENV_MAX_OPEN_FILES: &str = "OTTLA_MAX_OPEN_FILES";

/// The smallest budget: a partition being appended to needs its lock file
/// and its active `.log` at once, and a few readers beside it.
pub const MIN_OPEN_FILES: usize = 16;

/// A budget of open descriptors shared by slots.
pub struct FdBudget {
    limit: AtomicUsize,
    open: AtomicUsize,
    /// Moves on every open; a slot used since then carries its value.
    clock: AtomicU64,
    evictions: AtomicU64,
    entries: Mutex<Entries>,
}

struct Entries {
    list: Vec<Weak<dyn Evictable>>,
    /// `list.len()` after the last sweep of dropped slots.
    swept_len: usize,
}

trait Evictable: Send + Sync {
    /// The budget's clock when last used, and whether open now.
    fn stamp(&self) -> Option<u64>;
    /// Close if nobody needs it open; whether it closed.
    fn try_evict(&self) -> bool;
}

impl FdBudget {
    /// A budget of `limit` descriptors (at least [`MIN_OPEN_FILES`]).
    pub fn new(limit: usize) -> Arc<FdBudget> {
        Arc::new(FdBudget {
            limit: AtomicUsize::new(limit.max(MIN_OPEN_FILES)),
            open: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            evictions: AtomicU64::new(0),
            entries: Mutex::new(Entries {
                list: Vec::new(),
                swept_len: 0,
            }),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Change the budget; a smaller one closes what runs over it now.
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.max(MIN_OPEN_FILES);
        self.limit.store(limit, Ordering::Relaxed);
        if self.open() > limit {
            self.evict_down(limit);
        }
    }

    /// Descriptors the slots hold open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How many descriptors were closed to stay within the budget.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn register(&self, e: Weak<dyn Evictable>) {
        let mut entries = self.entries.lock();
        // Drop the entries of dropped slots once the list doubled since
        // the last sweep: amortised O(1) per registration.
        if entries.list.len() >= 2 * entries.swept_len + 64 {
            entries.list.retain(|w| w.strong_count() > 0);
            entries.swept_len = entries.list.len();
        }
        entries.list.push(e);
    }

    /// Count one more open descriptor, closing the least recently used
    /// ones first when that runs over the budget. Closes a sixteenth of
    /// the budget at once, so the scan is paid once per many opens.
    fn reserve(&self) {
        self.clock.fetch_add(1, Ordering::Relaxed);
        let limit = self.limit();
        if self.open.fetch_add(1, Ordering::AcqRel) + 1 > limit {
            self.evict_down(limit - (limit / 16).max(1));
        }
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Close least recently used slots until at most `target` are open
    /// (or nothing more can be closed now).
    fn evict_down(&self, target: usize) {
        let mut entries = self.entries.lock();
        let over = self.open().saturating_sub(target);
        if over == 0 {
            return;
        }
        let mut open: Vec<(u64, Arc<dyn Evictable>)> = Vec::new();
        entries.list.retain(|w| match w.upgrade() {
            Some(e) => {
                if let Some(stamp) = e.stamp() {
                    open.push((stamp, e));
                }
                true
            }
            None => false,
        });
        entries.swept_len = entries.list.len();
        drop(entries);
        open.sort_unstable_by_key(|(stamp, _)| *stamp);
        let mut closed = 0;
        for (_, e) in &open {
            if closed >= over {
                break;
            }
            if e.try_evict() {
                closed += 1;
            }
        }
        self.evictions.fetch_add(closed as u64, Ordering::Relaxed);
    }
}

/// The process's budget, made on first use: [`ENV_MAX_OPEN_FILES`] if
/// set, else [`default_max_open_files`].
pub fn global() -> &'static Arc<FdBudget> {
    static GLOBAL: OnceLock<Arc<FdBudget>> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let from_env = std::env::var(ENV_MAX_OPEN_FILES)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0);
        FdBudget::new(from_env.unwrap_or_else(default_max_open_files))
    })
}

/// The process's budget (see [`global`]).
pub fn max_open_files() -> usize {
    global().limit()
}

/// Set the process's budget; 0 restores [`default_max_open_files`].
pub fn set_max_open_files(n: usize) {
    let n = if n == 0 { default_max_open_files() } else { n };
    global().set_limit(n);
}

/// Half the soft `RLIMIT_NOFILE`: the other half is left for sockets,
/// short-lived opens (heads, indexes being mapped, metadata files) and
/// whatever else the process does. 1,024 gives 512; an unlimited or huge
/// limit is capped at 2^20.
pub fn default_max_open_files() -> usize {
    (soft_nofile_limit() / 2).max(MIN_OPEN_FILES)
}

/// The soft `RLIMIT_NOFILE` (1,024 if it cannot be read), at most 2^21.
pub fn soft_nofile_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur.min(1 << 21)).unwrap_or(1 << 21)
}

/// Whether `e` is the process (or system) running out of descriptors.
pub fn is_out_of_descriptors(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)))
}

/// One descriptor (or a value holding one) that the budget may close while
/// it is not in use; [`Slot::get`] opens it again on demand.
pub struct Slot<T: Send + Sync + 'static> {
    inner: Arc<SlotInner<T>>,
}

struct SlotInner<T> {
    budget: Arc<FdBudget>,
    value: RwLock<Option<Arc<T>>>,
    stamp: AtomicU64,
    exclusive: bool,
}

impl<T: Send + Sync + 'static> Evictable for SlotInner<T> {
    fn stamp(&self) -> Option<u64> {
        // A slot being opened or used exclusively is not a candidate.
        let v = self.value.try_read()?;
        v.as_ref()?;
        Some(self.stamp.load(Ordering::Relaxed))
    }

    fn try_evict(&self) -> bool {
        let Some(mut v) = self.value.try_write() else {
            return false;
        };
        match v.as_ref() {
            None => return false,
            Some(held) if self.exclusive && Arc::strong_count(held) > 1 => return false,
            Some(_) => {}
        }
        let closed = v.take();
        drop(v);
        self.budget.release();
        // Closed here, outside the slot's lock (or later, by the last
        // reader still holding it).
        drop(closed);
        true
    }
}

impl<T> Drop for SlotInner<T> {
    fn drop(&mut self) {
        if self.value.get_mut().is_some() {
            self.budget.release();
        }
    }
}

impl<T: Send + Sync + 'static> Slot<T> {
    /// An empty slot in `budget`; `exclusive`: evict only while nobody
    /// holds the value (see the module docs).
    pub fn new(budget: &Arc<FdBudget>, exclusive: bool) -> Slot<T> {
        let inner = Arc::new(SlotInner {
            budget: budget.clone(),
            value: RwLock::new(None),
            stamp: AtomicU64::new(0),
            exclusive,
        });
        let weak: Weak<SlotInner<T>> = Arc::downgrade(&inner);
        budget.register(weak);
        Slot { inner }
    }

    /// A slot holding `value`, just opened by the caller.
    pub fn with(budget: &Arc<FdBudget>, exclusive: bool, value: T) -> Slot<T> {
        let slot = Slot::new(budget, exclusive);
        slot.inner.budget.reserve();
        slot.inner.stamp.store(
            slot.inner.budget.clock.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        *slot.inner.value.write() = Some(Arc::new(value));
        slot
    }

    /// The value, opened with `open` if the budget closed it (or it was
    /// never opened). A failure to open for want of descriptors closes
    /// more of the budget's slots and tries once more.
    #[inline]
    pub fn get(&self, open: impl Fn() -> Result<T>) -> Result<Arc<T>> {
        if let Some(v) = self.inner.value.read().as_ref() {
            self.touch();
            return Ok(v.clone());
        }
        self.open_slow(&open)
    }

    #[inline]
    fn touch(&self) {
        let now = self.inner.budget.clock.load(Ordering::Relaxed);
        if self.inner.stamp.load(Ordering::Relaxed) != now {
            self.inner.stamp.store(now, Ordering::Relaxed);
        }
    }

    #[cold]
    fn open_slow(&self, open: &dyn Fn() -> Result<T>) -> Result<Arc<T>> {
        let mut slot = self.inner.value.write();
        if let Some(v) = slot.as_ref() {
            return Ok(v.clone());
        }
        let budget = &self.inner.budget;
        budget.reserve();
        let opened = match open() {
            Err(e) if is_out_of_descriptors(&e) => {
                // Others' descriptors (sockets, files outside the budget)
                // filled the table: give back half of ours and retry.
                budget.evict_down(budget.open() / 2);
                open()
            }
            other => other,
        };
        match opened {
            Ok(v) => {
                let v = Arc::new(v);
                self.touch();
                *slot = Some(v.clone());
                Ok(v)
            }
            Err(e) => {
                budget.release();
                Err(e)
            }
        }
    }

    /// The value if it is open now, without opening it.
    pub fn peek(&self) -> Option<Arc<T>> {
        self.inner.value.read().clone()
    }

    /// Whether the slot holds its value open now.
    pub fn is_open(&self) -> bool {
        self.inner.value.read().is_some()
    }

    /// Close the slot's own reference now (it opens again on next use).
    pub fn close(&self) -> bool {
        Evictable::try_evict(&*self.inner)
    }
}

#[cfg(test)]
mod tests;
