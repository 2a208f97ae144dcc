//! The process allocator, made safe against claimed sizes.
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

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

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
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if huge(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            // SAFETY: as in `alloc`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: the caller's contract, passed on unchanged.
            unsafe { System.alloc_zeroed(layout) }
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
            // SAFETY: the same size test gave this block to `System`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !huge(layout.size(), layout.align()) && !huge(new_size, layout.align()) {
            // SAFETY: neither size is huge, so `ptr` is System's and stays so.
            return unsafe { System.realloc(ptr, layout, new_size) };
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
