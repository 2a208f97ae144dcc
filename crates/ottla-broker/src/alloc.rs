//! The process allocator, made safe against claimed sizes, and giving
//! memory back after a burst.
//!
//! `kafka-protocol` sizes a decoded array with `Vec::with_capacity(n)`
//! from the element count on the wire, before reading any element. A
//! 20-byte request claiming 2^31 topics asks for ~150 GB; the system
//! allocator refuses, and Rust aborts the whole process on a refused
//! allocation. No check after the fact can help, so the defence sits here:
//! allocations of 1 GiB and more are served by an anonymous `mmap` with
//! `MAP_NORESERVE`. That reserves address space only; pages are committed as
//! they are written, and a bogus array fails to decode after a handful of
//! elements (each needs input bytes the frame does not have) and is freed.
//! Legitimate data never reaches this size in one allocation (frames are
//! capped by `max_request_bytes`), so nothing else changes: smaller requests
//! go to the system allocator untouched.
//!
//! Memory given back. glibc's malloc keeps freed memory for reuse: above its
//! mmap threshold a block is mapped and unmapped on free, but freeing such a
//! block raises the threshold to the block's size (up to 32 MiB), and from
//! then on blocks of that size come from the heaps and stay there when
//! freed. Measured on the broker: 40 clients holding 14 MiB Fetch responses
//! took it to 944 MiB, and 664 MiB stayed after they left. So the allocator
//! counts the bytes of live blocks of `COUNTED` bytes and more, and the
//! highest that count reached; `trimmer` (run by the broker) asks malloc to
//! give free pages back (`malloc_trim`) once the live bytes are
//! `TRIM_SLACK` below that high mark: after a burst, not during a steady
//! load (whose pages are reused), and at most once per `TRIM_EVERY`. Same
//! test after the trimmer: 48-98 MiB stayed. What stays is the free top of
//! each thread's heap below glibc's trim threshold (twice its mmap
//! threshold), which `malloc_trim` leaves alone outside the main arena.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Allocations at least this large are mapped lazily.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

/// Blocks at least this large are counted in `LIVE`: smaller ones hardly
/// move the total, and counting them would cost every small allocation.
const COUNTED: usize = 64 * 1024;
/// How far below its high mark the count must fall before a trim.
const TRIM_SLACK: usize = 16 * 1024 * 1024;
/// How often `trimmer` looks.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Bytes in live system-allocator blocks of `COUNTED` bytes or more.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The highest `LIVE` since the last trim.
static HIGH: AtomicUsize = AtomicUsize::new(0);

fn counted_alloc(size: usize) {
    if size >= COUNTED {
        let now = LIVE.fetch_add(size, Ordering::Relaxed).wrapping_add(size);
        HIGH.fetch_max(now, Ordering::Relaxed);
    }
}

fn counted_free(size: usize) {
    if size >= COUNTED {
        LIVE.fetch_sub(size, Ordering::Relaxed);
    }
}

/// True once live counted bytes are `TRIM_SLACK` below their high mark
/// (which then restarts from here): memory malloc may be holding free.
fn trim_due() -> bool {
    let live = LIVE.load(Ordering::Relaxed);
    if !worth_trimming(live, HIGH.load(Ordering::Relaxed)) {
        return false;
    }
    HIGH.store(live, Ordering::Relaxed);
    true
}

fn worth_trimming(live: usize, high: usize) -> bool {
    high.saturating_sub(live) >= TRIM_SLACK
}

/// Give malloc's free pages back to the system (every arena's, not only the
/// top of the heap); a no-op where the C library has no `malloc_trim`.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; it has no
    // preconditions, and 0 asks it to keep no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trim after bursts (see the module comment) until `stop` turns true.
pub async fn trimmer(mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = stop.changed() => return,
        }
        if trim_due() {
            // It walks the heaps and madvises their free pages: off the
            // runtime's worker threads.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

pub struct Allocator;

fn huge(size: usize, align: usize) -> bool {
    size >= HUGE && align <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint; failure is
    // reported as MAP_FAILED, turned into null as GlobalAlloc requires.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every block is either the system allocator's or a whole mapping
// of exactly `layout.size()` bytes, told apart by the same size test on
// allocation and deallocation; mappings are page-aligned, which satisfies any
// alignment up to PAGE.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if huge(layout.size(), layout.align()) {
            // SAFETY: `map` has no preconditions beyond a non-zero size.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: the caller's contract for `alloc`, passed on unchanged.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                counted_alloc(layout.size());
            }
            p
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if huge(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            // SAFETY: as in `alloc`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: the caller's contract, passed on unchanged.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                counted_alloc(layout.size());
            }
            p
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if huge(layout.size(), layout.align()) {
            // SAFETY: the same size test put this block in a mapping of
            // exactly `layout.size()` bytes starting at `ptr`.
            unsafe {
                libc::munmap(ptr as *mut libc::c_void, layout.size());
            }
        } else {
            counted_free(layout.size());
            // SAFETY: the same size test gave this block to `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !huge(layout.size(), layout.align()) && !huge(new_size, layout.align()) {
            // SAFETY: neither size is huge, so `ptr` is System's and stays so.
            let q = unsafe { System.realloc(ptr, layout, new_size) };
            if !q.is_null() {
                counted_free(layout.size());
                counted_alloc(new_size);
            }
            return q;
        }
        // SAFETY: the caller guarantees new_size is valid for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` is valid (above) and non-zero (a huge size is).
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: `q` is a fresh block of `new_size` bytes, `ptr` one of
            // `layout.size()`; they cannot overlap, and `ptr` is ours to free.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        q
    }
}

// The broker's own test binary runs under the allocator it ships with, so
// the malformed-frame tests see what production sees.
#[cfg(test)]
#[global_allocator]
static TEST_GLOBAL: Allocator = Allocator;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_counted_and_a_trim_follows_a_burst_only() {
        // Other tests allocate and free meanwhile, but the count cannot
        // fall below what this one holds.
        let burst: Vec<Vec<u8>> = (0..4).map(|_| vec![1u8; 32 << 20]).collect();
        assert!(LIVE.load(Ordering::Relaxed) >= 128 << 20);
        assert!(HIGH.load(Ordering::Relaxed) >= 128 << 20);
        drop(burst);
        trim();
        assert!(worth_trimming(0, 128 << 20));
        assert!(!worth_trimming(120 << 20, 128 << 20), "a steady load");
        assert!(!worth_trimming(128 << 20, 100 << 20));
    }

    #[test]
    fn a_claimed_capacity_beyond_memory_does_not_abort() {
        // ~128 GiB of address space, never touched.
        let mut v: Vec<u64> = Vec::with_capacity(1 << 34);
        v.push(7);
        v.extend_from_slice(&[1, 2, 3]);
        assert_eq!(v.iter().sum::<u64>(), 13);
        let mut w = v;
        w.shrink_to_fit();
        assert_eq!(w, vec![7, 1, 2, 3]);
    }
}
