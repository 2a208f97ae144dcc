//! A memory-mapped file of fixed-size big-endian entries: the storage under
//! [`OffsetIndex`](super::offset_index::OffsetIndex) and
//! [`TimeIndex`](super::time_index::TimeIndex).
//!
//! The active segment's index is preallocated to `max_bytes` (sparse, so
//! unused entries cost no disk) and mapped writable; how many entries are
//! valid is not in the file but in the partition head, published only after
//! the entries are written. When a segment rolls, its index is trimmed to the
//! valid entries, so for a closed segment the count is `len / entry_size`.
//! Readers never touch entries at or past the count they were given, which
//! is what makes trimming a file that other processes have mapped safe.

use std::fs::{File, OpenOptions};

use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap, MmapMut, MmapOptions};

use crate::error::{IoContext, Result};

enum Map {
    Empty,
    Read(Mmap),
    Write(MmapMut),
}

pub struct IndexFile {
    path: PathBuf,
    entry_size: usize,
    map: Map,
}

impl IndexFile {
    /// Open for appending, growing the file to `max_bytes` if it is shorter.
    pub fn open_writable(path: &Path, entry_size: usize, max_bytes: u64) -> Result<IndexFile> {
        let file = open_rw(path)?;
        let max_bytes = max_bytes - max_bytes % entry_size as u64;
        let len = file.metadata().ctx("stat index", path)?.len();
        if len < max_bytes {
            file.set_len(max_bytes).ctx("grow index", path)?;
        }
        let map_len = len.max(max_bytes);
        // SAFETY: entries are read and written only below published counts
        // (see the module docs), so other processes never race our accesses.
        let map = unsafe { MmapOptions::new().len(map_len as usize).map_mut(&file) }
            .ctx("mmap index", path)?;
        advise_random(&map);
        Ok(IndexFile {
            path: path.to_path_buf(),
            entry_size,
            map: Map::Write(map),
        })
    }

    /// Open the index of a segment some writer created, without creating,
    /// growing or shrinking the file: the whole current file is mapped
    /// writable (for the append-lock holder), or nothing if it is absent.
    /// Readers that may hold a stale head use this, so that reopening a
    /// segment that has just been closed (and its index trimmed) can never
    /// grow that index back to its preallocated size.
    pub fn open_existing(path: &Path, entry_size: usize) -> Result<IndexFile> {
        Self::map_existing(path, entry_size, true)
    }

    /// An index with no entries, mapping nothing: for a segment whose index
    /// files cannot be trusted to match its log (see `LogSegment::indexes`).
    pub fn empty(path: &Path, entry_size: usize) -> IndexFile {
        IndexFile {
            path: path.to_path_buf(),
            entry_size,
            map: Map::Empty,
        }
    }

    /// Open a closed segment's index read-only.
    pub fn open_readonly(path: &Path, entry_size: usize) -> Result<IndexFile> {
        Self::map_existing(path, entry_size, false)
    }

    /// Map an index file at its current length (none if absent or empty).
    fn map_existing(path: &Path, entry_size: usize, writable: bool) -> Result<IndexFile> {
        let file = match OpenOptions::new().read(true).write(writable).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(IndexFile {
                    path: path.to_path_buf(),
                    entry_size,
                    map: Map::Empty,
                })
            }
            Err(e) => return Err(crate::Error::io("open index", path, e)),
        };
        let len = file.metadata().ctx("stat index", path)?.len();
        let len = (len - len % entry_size as u64) as usize;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let map = match (len, writable) {
            (0, _) => Map::Empty,
            (_, true) => {
                // SAFETY: as in `open_writable`: accesses stay below counts
                // published by the head, so no other process races them.
                let m = unsafe { opts.map_mut(&file) }.ctx("mmap index", path)?;
                advise_random(&m);
                Map::Write(m)
            }
            (_, false) => {
                // SAFETY: as above; a read-only mapping is never written.
                let m = unsafe { opts.map(&file) }.ctx("mmap index", path)?;
                advise_random(&m);
                Map::Read(m)
            }
        };
        Ok(IndexFile {
            path: path.to_path_buf(),
            entry_size,
            map,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.map {
            Map::Empty => &[],
            Map::Read(m) => m,
            Map::Write(m) => m,
        }
    }

    /// Entries the mapping can hold.
    pub fn capacity(&self) -> u64 {
        (self.bytes().len() / self.entry_size) as u64
    }

    /// Entry `i`, or `None` past the mapping.
    #[inline]
    pub fn entry(&self, i: u64) -> Option<&[u8]> {
        let start = usize::try_from(i).ok()?.checked_mul(self.entry_size)?;
        self.bytes().get(start..start.checked_add(self.entry_size)?)
    }

    /// Write entry `i`; false when the index is full or read-only.
    pub fn put(&mut self, i: u64, entry: &[u8]) -> bool {
        debug_assert_eq!(entry.len(), self.entry_size);
        let es = self.entry_size;
        match &mut self.map {
            Map::Write(m) => {
                let slot = usize::try_from(i)
                    .ok()
                    .and_then(|i| i.checked_mul(es))
                    .and_then(|s| m.get_mut(s..s.checked_add(es)?));
                match slot {
                    Some(slot) => {
                        slot.copy_from_slice(entry);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// Whether the mapping holds fewer entries than a file of `max_bytes`.
    pub fn is_short_of(&self, max_bytes: u64) -> bool {
        self.capacity() < max_bytes / self.entry_size as u64
    }

    /// Shrink the file to `entries` entries and remap it read-only. Never
    /// to more entries than the mapping holds: entries that were never
    /// written here (a missing or short file) must not become zero-filled
    /// "entries" (a zero timestamp would make the segment look expired).
    pub fn trim(&mut self, entries: u64) -> Result<()> {
        let entries = entries.min(self.capacity());
        let file = open_rw(&self.path)?;
        file.set_len(entries * self.entry_size as u64)
            .ctx("trim index", &self.path)?;
        *self = IndexFile::open_readonly(&self.path, self.entry_size)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        if let Map::Write(m) = &self.map {
            m.flush().ctx("flush index", &self.path)?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Tell the kernel that an index mapping is read and written a page here
/// and there (binary searches, one entry per `index.interval.bytes`), so a
/// page fault brings in that page alone. Without it a fault is served with
/// the device's read-around window (`read_ahead_kb`, 8 MiB on some hosts):
/// the first entry written into a fresh, sparse 10 MiB index allocated and
/// zero-filled megabytes of page cache for its holes, about 6 ms of kernel
/// time per file, so a flush whose 800 batches each crossed the index
/// interval spent 10-25 s in page faults. Advice only: if it fails,
/// indexes work as before, just slower.
fn advise_random(map: &impl Advise) {
    let _ = map.advise_random();
}

/// The two mapping kinds of `memmap2`, which share no trait for `advise`.
trait Advise {
    fn advise_random(&self) -> std::io::Result<()>;
}

impl Advise for Mmap {
    fn advise_random(&self) -> std::io::Result<()> {
        self.advise(Advice::Random)
    }
}

impl Advise for MmapMut {
    fn advise_random(&self) -> std::io::Result<()> {
        self.advise(Advice::Random)
    }
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("open index", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that starts at `addr`, from
    /// `/proc/self/smaps`.
    fn vm_flags(addr: *const u8) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
        let start = format!("{:x}-", addr as usize);
        let mut in_map = false;
        for line in smaps.lines() {
            if line.starts_with(&start) {
                in_map = true;
            } else if in_map {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            }
        }
        panic!("no mapping at {addr:?} in /proc/self/smaps");
    }

    /// Pages of the mapping `bytes` that are in the page cache.
    fn resident_pages(bytes: &[u8]) -> usize {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut vec = vec![0u8; bytes.len().div_ceil(page)];
        // SAFETY: `bytes` is a whole mapping (page-aligned start) and `vec`
        // has one byte per page of it.
        let rc = unsafe {
            libc::mincore(
                bytes.as_ptr() as *mut libc::c_void,
                bytes.len(),
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    /// The first entry written into a fresh, sparse index must fault in its
    /// own page, not the device's read-around window: with 8 MiB of
    /// `read_ahead_kb`, every first entry zero-filled 8 MiB of page cache,
    /// and a flush of 800 partitions crossing `index.interval.bytes` took
    /// 10-25 s. The mapping carries the random-access advice (`rr`), and
    /// (on a device with read-ahead) the write leaves a handful of pages
    /// resident, not thousands.
    #[test]
    fn first_entry_of_a_sparse_index_faults_in_one_page_not_a_read_ahead_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000000000000000000.index");
        let max = 10 << 20;
        let mut idx = IndexFile::open_writable(&path, 8, max).expect("open index");
        assert_eq!(idx.capacity(), max / 8);
        assert!(idx.put(0, &[1, 2, 3, 4, 5, 6, 7, 8]));
        let bytes = idx.bytes();
        assert!(
            vm_flags(bytes.as_ptr()).iter().any(|f| f == "rr"),
            "writable index mapping lacks MADV_RANDOM"
        );
        // Fault-around may map up to 16 already-cached pages; read-around
        // would have read 2,048 of them.
        let resident = resident_pages(bytes);
        assert!(resident <= 16, "{resident} pages resident after one entry");
        assert_eq!(idx.entry(0), Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..]));

        // A closed segment's index (trimmed, mapped read-only) and one
        // mapped as found are advised the same way.
        idx.trim(1).expect("trim");
        assert!(vm_flags(idx.bytes().as_ptr()).iter().any(|f| f == "rr"));
        let again = IndexFile::open_existing(&path, 8).expect("reopen");
        assert!(vm_flags(again.bytes().as_ptr()).iter().any(|f| f == "rr"));
        assert_eq!(again.entry(0), Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..]));
    }
}
