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

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const APPEND_BYTE: i64 = 0;
const PRESENCE_BYTE: i64 = 1;
const CLEANER_BYTE: i64 = 2;
const SWAP_BYTE: i64 = 3;

pub struct LockFile {
    file: File,
    path: PathBuf,
}

#[derive(Clone, Copy)]
enum Kind {
    Shared,
    Exclusive,
    Unlock,
}

impl LockFile {
    pub fn open(path: &Path) -> Result<LockFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        Ok(LockFile {
            file,
            path: path.to_path_buf(),
        })
    }

    fn fcntl(&self, byte: i64, kind: Kind, wait: bool) -> std::io::Result<bool> {
        // SAFETY: flock is a plain C struct for which all-zero is valid.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = match kind {
            Kind::Shared => libc::F_RDLCK,
            Kind::Exclusive => libc::F_WRLCK,
            Kind::Unlock => libc::F_UNLCK,
        } as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = byte as _;
        fl.l_len = 1;
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        loop {
            // SAFETY: valid fd and a pointer to an initialised flock struct.
            let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &mut fl) };
            if rc == 0 {
                return Ok(true);
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
                _ => return Err(err),
            }
        }
    }

    fn set(&self, byte: i64, kind: Kind, wait: bool) -> Result<bool> {
        self.fcntl(byte, kind, wait)
            .map_err(|e| Error::io("lock", &self.path, e))
    }

    pub fn lock_append(&self) -> Result<AppendGuard<'_>> {
        self.set(APPEND_BYTE, Kind::Exclusive, true)?;
        Ok(AppendGuard { lock: self })
    }

    pub fn hold_presence_shared(&self) -> Result<()> {
        self.set(PRESENCE_BYTE, Kind::Shared, true).map(|_| ())
    }

    /// Try to become the only process with the partition open. Converting an
    /// OFD lock is atomic, so on failure the shared hold (if any) is kept.
    pub fn try_presence_exclusive(&self) -> Result<bool> {
        self.set(PRESENCE_BYTE, Kind::Exclusive, false)
    }

    /// Become the partition's cleaner, unless another one is at work.
    pub fn try_lock_cleaner(&self) -> Result<Option<ByteGuard<'_>>> {
        Ok(self
            .set(CLEANER_BYTE, Kind::Exclusive, false)?
            .then_some(ByteGuard {
                lock: self,
                byte: CLEANER_BYTE,
            }))
    }

    /// The swap lock: exclusive for the cleaner's renames, shared for
    /// listing segment files. OFD locks do not exclude threads sharing the
    /// description: in-process exclusion is the caller's (the segment map's
    /// write lock, see `PartitionLog::segments_for`).
    pub fn lock_swap(&self, exclusive: bool) -> Result<ByteGuard<'_>> {
        let kind = if exclusive {
            Kind::Exclusive
        } else {
            Kind::Shared
        };
        self.set(SWAP_BYTE, kind, true)?;
        Ok(ByteGuard {
            lock: self,
            byte: SWAP_BYTE,
        })
    }
}

/// Releases one lock byte when dropped.
pub struct ByteGuard<'a> {
    lock: &'a LockFile,
    byte: i64,
}

impl Drop for ByteGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.fcntl(self.byte, Kind::Unlock, false);
    }
}

/// Releases the append lock when dropped.
pub struct AppendGuard<'a> {
    lock: &'a LockFile,
}

impl Drop for AppendGuard<'_> {
    fn drop(&mut self) {
        // Unlocking a held lock cannot fail short of a closed fd; if it did,
        // closing the file (process exit) still releases it.
        let _ = self.lock.fcntl(APPEND_BYTE, Kind::Unlock, false);
    }
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
        assert!(!b.set(APPEND_BYTE, Kind::Exclusive, false).expect("try"));
        drop(g);
        assert!(b.set(APPEND_BYTE, Kind::Exclusive, false).expect("try"));
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
        assert!(!b.set(SWAP_BYTE, Kind::Shared, false).expect("try"));
        drop(s);
        let _r = b.lock_swap(false).expect("shared");
        assert!(!a.set(SWAP_BYTE, Kind::Exclusive, false).expect("try"));
    }
}
