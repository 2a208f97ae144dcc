//! Cross-process locks on a partition's `partition.lock` file.
//!
//! Two open-file-description (OFD) byte-range locks on one file, so a process
//! can hold both without the classic POSIX pitfall of dropping every lock when
//! any descriptor of the file closes, and so `kill -9` releases them:
//!
//! * byte 0, the **append lock** (exclusive): held while appending, rolling,
//!   deleting segments or recovering. Appenders in every process serialise
//!   on it, which is what makes offsets gap-free across processes.
//! * byte 1, the **presence lock**: every process that has the partition open
//!   holds it shared. Taking it exclusively (while holding the append lock)
//!   answers "am I the only process here?", which decides whether to run
//!   crash recovery on open and whether to mark the log clean on close.
//! * byte 2, the **cleaner lock** (exclusive, never waited for): held by the
//!   one log cleaner working on the partition, in whatever process.
//! * byte 3, the **swap lock**: the cleaner holds it exclusively (with the
//!   append lock) while it renames cleaned segment files into place; a
//!   process listing the segment files holds it shared, so it sees the files
//!   before or after a swap, never halfway (see `log::cleaner`).

use std::path::Path;

use crate::error::Result;
pub use crate::ofd::ByteGuard;
use crate::ofd::ByteLocks;

const APPEND_BYTE: u64 = 0;
const PRESENCE_BYTE: u64 = 1;
const CLEANER_BYTE: u64 = 2;
const SWAP_BYTE: u64 = 3;

/// `partition.lock`: the fcntl plumbing is `crate::ofd`'s; this names the
/// bytes and what holding them means.
pub struct LockFile {
    locks: ByteLocks,
}

impl LockFile {
    pub fn open(path: &Path) -> Result<LockFile> {
        Ok(LockFile {
            locks: ByteLocks::open(path)?,
        })
    }

    pub fn lock_append(&self) -> Result<AppendGuard<'_>> {
        self.locks.lock_exclusive(APPEND_BYTE)?;
        Ok(AppendGuard {
            _byte: ByteGuard::held(&self.locks, APPEND_BYTE),
        })
    }

    pub fn hold_presence_shared(&self) -> Result<()> {
        self.locks.lock(PRESENCE_BYTE, false)
    }

    /// Try to become the only process with the partition open. Converting an
    /// OFD lock is atomic, so on failure the shared hold (if any) is kept.
    pub fn try_presence_exclusive(&self) -> Result<bool> {
        self.locks.try_lock(PRESENCE_BYTE, true)
    }

    /// Become the partition's cleaner, unless another one is at work.
    pub fn try_lock_cleaner(&self) -> Result<Option<ByteGuard<'_>>> {
        Ok(self
            .locks
            .try_lock(CLEANER_BYTE, true)?
            .then(|| ByteGuard::held(&self.locks, CLEANER_BYTE)))
    }

    /// The swap lock: exclusive for the cleaner's renames, shared for
    /// listing segment files. OFD locks do not exclude threads sharing the
    /// description: in-process exclusion is the caller's (the segment map's
    /// write lock, see `PartitionLog::segments_for`).
    pub fn lock_swap(&self, exclusive: bool) -> Result<ByteGuard<'_>> {
        self.locks.lock(SWAP_BYTE, exclusive)?;
        Ok(ByteGuard::held(&self.locks, SWAP_BYTE))
    }
}

/// Releases the append lock when dropped (unlocking a held lock cannot fail
/// short of a closed fd; if it did, closing the file still releases it).
pub struct AppendGuard<'a> {
    _byte: ByteGuard<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_tells_sole_opener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("partition.lock");
        let a = LockFile::open(&p).expect("open a");
        let b = LockFile::open(&p).expect("open b");
        assert!(a.try_presence_exclusive().expect("lock"));
        // b is a separate open file description: it must see a's lock.
        assert!(!b.try_presence_exclusive().expect("lock"));
        a.hold_presence_shared().expect("downgrade");
        b.hold_presence_shared().expect("shared");
        assert!(!a.try_presence_exclusive().expect("lock"));
        drop(b);
        assert!(a.try_presence_exclusive().expect("lock"));
    }

    #[test]
    fn append_lock_excludes_other_descriptions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("partition.lock");
        let a = LockFile::open(&p).expect("open a");
        let b = LockFile::open(&p).expect("open b");
        let g = a.lock_append().expect("lock");
        assert!(!b.locks.try_lock(APPEND_BYTE, true).expect("try"));
        drop(g);
        assert!(b.locks.try_lock(APPEND_BYTE, true).expect("try"));
    }

    #[test]
    fn one_cleaner_at_a_time_and_swap_excludes_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("partition.lock");
        let a = LockFile::open(&p).expect("open a");
        let b = LockFile::open(&p).expect("open b");
        let g = a.try_lock_cleaner().expect("lock").expect("free");
        assert!(b.try_lock_cleaner().expect("lock").is_none());
        drop(g);
        assert!(b.try_lock_cleaner().expect("lock").is_some());
        let s = a.lock_swap(true).expect("swap");
        assert!(!b.locks.try_lock(SWAP_BYTE, false).expect("try"));
        drop(s);
        let _r = b.lock_swap(false).expect("shared");
        assert!(!a.locks.try_lock(SWAP_BYTE, true).expect("try"));
    }
}
