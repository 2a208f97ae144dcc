//! `TimeIndex`: the `.timeindex` file, Kafka's 12-byte entries of
//! (timestamp: int64, offset relative to the segment base: int32). An entry
//! is added beside an offset index entry when the segment's largest
//! timestamp so far has grown, and once more when the segment rolls, so the
//! last entry of a closed segment holds its largest timestamp.

use std::path::Path;

use super::index_file::IndexFile;
use crate::error::Result;

pub const ENTRY_SIZE: usize = 12;

pub struct TimeIndex {
    base_offset: i64,
    file: IndexFile,
}

impl TimeIndex {
    pub fn open_writable(path: &Path, base_offset: i64, max_bytes: u64) -> Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::open_writable(path, ENTRY_SIZE, max_bytes)?,
        })
    }

    /// See [`IndexFile::empty`].
    pub fn empty(path: &Path, base_offset: i64) -> TimeIndex {
        TimeIndex {
            base_offset,
            file: IndexFile::empty(path, ENTRY_SIZE),
        }
    }

    /// See [`IndexFile::open_existing`].
    pub fn open_existing(path: &Path, base_offset: i64) -> Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::open_existing(path, ENTRY_SIZE)?,
        })
    }

    pub fn open_readonly(path: &Path, base_offset: i64) -> Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            file: IndexFile::open_readonly(path, ENTRY_SIZE)?,
        })
    }

    /// Entries the file (or, while active, its preallocated mapping) holds.
    pub fn capacity(&self) -> u64 {
        self.file.capacity()
    }

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

    /// (timestamp, absolute offset) of entry `i`.
    pub fn entry(&self, i: u64) -> Option<(i64, i64)> {
        let e = self.file.entry(i)?;
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&e[..8]);
        let rel = i32::from_be_bytes([e[8], e[9], e[10], e[11]]);
        // A damaged entry may not overflow; it reads as no entry.
        Some((
            i64::from_be_bytes(ts),
            self.base_offset.checked_add(rel as i64)?,
        ))
    }

    /// Offset of the last entry (among `entries`) whose timestamp is below
    /// `target`: every record up to it is older than `target`, so a search
    /// for the first record at or after `target` may start there.
    pub fn offset_before(&self, target: i64, entries: u64) -> i64 {
        let n = entries.min(self.file.capacity());
        let (mut lo, mut hi) = (0u64, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some((ts, _)) if ts < target => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo == 0 {
            self.base_offset
        } else {
            self.entry(lo - 1).map_or(self.base_offset, |(_, off)| off)
        }
    }

    pub fn last(&self, entries: u64) -> Option<(i64, i64)> {
        entries.checked_sub(1).and_then(|i| self.entry(i))
    }

    /// As [`OffsetIndex::put`](super::offset_index::OffsetIndex::put).
    #[inline]
    pub fn put(&mut self, i: u64, timestamp: i64, offset: i64) -> Result<bool> {
        let rel = (offset - self.base_offset) as i32;
        let mut e = [0u8; ENTRY_SIZE];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&rel.to_be_bytes());
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
    fn offset_before_skips_only_older_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("0.timeindex");
        let mut idx = TimeIndex::open_writable(&p, 50, 120).expect("open");
        assert!(idx.put(0, 1000, 60).expect("put"));
        assert!(idx.put(1, 2000, 70).expect("put"));
        assert!(idx.put(2, 3000, 80).expect("put"));
        assert_eq!(idx.offset_before(500, 3), 50);
        assert_eq!(idx.offset_before(1000, 3), 50);
        assert_eq!(idx.offset_before(1001, 3), 60);
        assert_eq!(idx.offset_before(99_999, 3), 80);
        assert_eq!(idx.last(3), Some((3000, 80)));
    }
}
