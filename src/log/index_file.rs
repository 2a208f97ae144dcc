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

use memmap2::{Mmap, MmapMut, MmapOptions};

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
        // SAFETY: as in `open_writable`.
        let map = match (len, writable) {
            (0, _) => Map::Empty,
            (_, true) => Map::Write(unsafe { opts.map_mut(&file) }.ctx("mmap index", path)?),
            (_, false) => Map::Read(unsafe { opts.map(&file) }.ctx("mmap index", path)?),
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

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .ctx("open index", path)
}
