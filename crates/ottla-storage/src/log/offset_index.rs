//! `OffsetIndex`: the sparse map from offset to file position in a segment's
//! `.index` file, in Kafka's format: 8-byte entries of (offset relative to the
//! segment base: int32, position: int32), big-endian, one entry at most every
//! `index.interval.bytes` of log. A lookup finds the greatest indexed offset
//! at or below the target; the reader scans batches forward from there.

use std::path::Path;

use super::index_file::IndexFile;
use crate::error::Result;

pub const ENTRY_SIZE: usize = 8;

pub struct OffsetIndex {
    base_offset: i64,
    file: IndexFile,
}

impl OffsetIndex {
    pub fn open_writable(path: &Path, base_offset: i64, max_bytes: u64) -> Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::open_writable(path, ENTRY_SIZE, max_bytes)?,
        })
    }

    /// See [`IndexFile::empty`].
    pub fn empty(path: &Path, base_offset: i64) -> OffsetIndex {
        OffsetIndex {
            base_offset,
            file: IndexFile::empty(path, ENTRY_SIZE),
        }
    }

    /// See [`IndexFile::open_existing`].
    pub fn open_existing(path: &Path, base_offset: i64) -> Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::open_existing(path, ENTRY_SIZE)?,
        })
    }

    pub fn open_readonly(path: &Path, base_offset: i64) -> Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            file: IndexFile::open_readonly(path, ENTRY_SIZE)?,
        })
    }

    /// Entries the file (or, while active, its preallocated mapping) holds.
    pub fn capacity(&self) -> u64 {
        self.file.capacity()
    }

    /// Entries in a closed (trimmed) index file.
    pub fn closed_entries(&self) -> u64 {
        self.file.capacity()
    }

    pub fn is_full(&self, entries: u64) -> bool {
        entries >= self.file.capacity()
    }

    /// See [`IndexFile::is_short_of`].
    pub fn is_short_of(&self, max_bytes: u64) -> bool {
        self.file.is_short_of(max_bytes)
    }

    /// (absolute offset, position) of entry `i`; `None` past the file or
    /// for an entry whose offset overflows (a damaged one).
    pub fn entry(&self, i: u64) -> Option<(i64, u32)> {
        let e = self.file.entry(i)?;
        let rel = i32::from_be_bytes([e[0], e[1], e[2], e[3]]);
        let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        Some((self.base_offset.checked_add(rel as i64)?, pos))
    }

    /// Greatest entry among the first `entries` whose offset is <= `target`:
    /// (offset, position), or the segment start if none is.
    pub fn lookup(&self, target: i64, entries: u64) -> (i64, u32) {
        let n = entries.min(self.file.capacity());
        // Binary search for the first entry with offset > target.
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some((off, _)) if off <= target => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo == 0 {
            (self.base_offset, 0)
        } else {
            self.entry(lo - 1).unwrap_or((self.base_offset, 0))
        }
    }

    /// Write entry `i`: `Ok(false)` when the index is full, an error when
    /// the entry's page cannot be allocated (see [`IndexFile::put`]).
    #[inline]
    pub fn put(&mut self, i: u64, offset: i64, position: u32) -> Result<bool> {
        let rel = (offset - self.base_offset) as i32;
        let mut e = [0u8; ENTRY_SIZE];
        e[..4].copy_from_slice(&rel.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.file.put(i, &e)
    }

    pub fn trim(&mut self, entries: u64) -> Result<()> {
        self.file.trim(entries)
    }

    pub fn flush(&self) -> Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_floor_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::open_writable(&p, 100, 1024).expect("open");
        for (i, (off, pos)) in [(105, 4096u32), (120, 8200), (130, 12300)]
            .iter()
            .enumerate()
        {
            assert!(idx.put(i as u64, *off, *pos).expect("put"));
        }
        assert_eq!(idx.lookup(99, 3), (100, 0));
        assert_eq!(idx.lookup(104, 3), (100, 0));
        assert_eq!(idx.lookup(105, 3), (105, 4096));
        assert_eq!(idx.lookup(129, 3), (120, 8200));
        assert_eq!(idx.lookup(1_000, 3), (130, 12300));
        // Entries past the published count are invisible.
        assert_eq!(idx.lookup(1_000, 2), (120, 8200));
        idx.trim(3).expect("trim");
        assert_eq!(std::fs::metadata(&p).expect("stat").len(), 24);
        let ro = OffsetIndex::open_readonly(&p, 100).expect("reopen");
        assert_eq!(ro.closed_entries(), 3);
        assert_eq!(ro.lookup(125, 3), (120, 8200));
    }

    #[test]
    fn full_index_refuses_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.index");
        let mut idx = OffsetIndex::open_writable(&p, 0, 16).expect("open");
        assert!(idx.put(0, 1, 1).expect("put"));
        assert!(idx.put(1, 2, 2).expect("put"));
        assert!(!idx.put(2, 3, 3).expect("put"));
        assert!(idx.is_full(2));
    }
}
