//! Open-file-description byte locks on an arbitrary byte of a file: the one
//! owner of the `fcntl(F_OFD_*)` plumbing.
//!
//! Each user names its own bytes: `log::lockfile` the fixed bytes of
//! `partition.lock` (append, presence, cleaner and swap locks), `group` one
//! byte per partition of a group's ownership file. OFD locks belong to the open file description, so two
//! consumers in one process (each with its own descriptor) exclude each other
//! exactly as two processes do, and the kernel drops them when the process
//! dies, `kill -9` included. That last property is what group membership
//! leans on: death releases everything at once, with no timeout.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub struct ByteLocks {
    file: File,
    path: PathBuf,
}

#[derive(Clone, Copy)]
enum Kind {
    Shared,
    Exclusive,
    Unlock,
}

impl ByteLocks {
    pub fn open(path: &Path) -> Result<ByteLocks> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        Ok(ByteLocks {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Open only if the file exists (probing must not leave files behind).
    pub fn open_existing(path: &Path) -> Result<Option<ByteLocks>> {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(file) => Ok(Some(ByteLocks {
                file,
                path: path.to_path_buf(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open lock file", path, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn flock(byte: u64, kind: Kind) -> libc::flock {
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
        fl
    }

    fn set(&self, byte: u64, kind: Kind, wait: bool) -> Result<bool> {
        let mut fl = Self::flock(byte, kind);
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
                _ => return Err(Error::io("lock", &self.path, err)),
            }
        }
    }

    /// Take `byte` without waiting; false if another description holds a
    /// conflicting lock. Converting a lock this description holds is atomic.
    pub fn try_lock(&self, byte: u64, exclusive: bool) -> Result<bool> {
        let kind = if exclusive {
            Kind::Exclusive
        } else {
            Kind::Shared
        };
        self.set(byte, kind, false)
    }

    /// Take `byte` exclusively, waiting for other holders.
    pub fn lock_exclusive(&self, byte: u64) -> Result<()> {
        self.set(byte, Kind::Exclusive, true).map(|_| ())
    }

    /// Take `byte` shared or exclusive, waiting for conflicting holders.
    pub fn lock(&self, byte: u64, exclusive: bool) -> Result<()> {
        let kind = if exclusive {
            Kind::Exclusive
        } else {
            Kind::Shared
        };
        self.set(byte, kind, true).map(|_| ())
    }

    pub fn unlock(&self, byte: u64) -> Result<()> {
        self.set(byte, Kind::Unlock, false).map(|_| ())
    }

    /// Whether some *other* open file description holds any lock on `byte`
    /// (F_OFD_GETLK; nothing is taken, so probing never disturbs a holder).
    pub fn held_elsewhere(&self, byte: u64) -> Result<bool> {
        let mut fl = Self::flock(byte, Kind::Exclusive);
        // SAFETY: valid fd and a pointer to an initialised flock struct;
        // F_OFD_GETLK requires l_pid to be zero, which zeroed() gave.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if rc != 0 {
            return Err(Error::io(
                "probe lock",
                &self.path,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }
}

/// Releases a byte lock (shared or exclusive) when dropped.
pub struct ByteGuard<'a> {
    locks: &'a ByteLocks,
    byte: u64,
}

impl<'a> ByteGuard<'a> {
    /// Take `byte` exclusively, waiting for other holders.
    pub fn lock(locks: &'a ByteLocks, byte: u64) -> Result<ByteGuard<'a>> {
        locks.lock_exclusive(byte)?;
        Ok(ByteGuard { locks, byte })
    }

    /// Guard a lock on `byte` the caller has just taken through `locks`.
    pub fn held(locks: &'a ByteLocks, byte: u64) -> ByteGuard<'a> {
        ByteGuard { locks, byte }
    }
}

impl Drop for ByteGuard<'_> {
    fn drop(&mut self) {
        // An unlock can only fail on a closed descriptor; closing it (or the
        // process exiting) releases the lock anyway.
        let _ = self.locks.unlock(self.byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_independent_and_descriptions_exclude_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("owners");
        let a = ByteLocks::open(&p).expect("open a");
        let b = ByteLocks::open(&p).expect("open b");
        assert!(a.try_lock(3, true).expect("a 3"));
        assert!(!b.try_lock(3, true).expect("b 3"));
        assert!(b.try_lock(4, true).expect("b 4"));
        assert!(b.held_elsewhere(3).expect("probe"));
        assert!(!a.held_elsewhere(0).expect("probe free byte"));
        // A description does not see its own lock as held elsewhere.
        assert!(!a.held_elsewhere(3).expect("probe own"));
        a.unlock(3).expect("unlock");
        assert!(b.try_lock(3, true).expect("b 3 after unlock"));
        drop(b);
        assert!(a.try_lock(4, true).expect("closing b released 4"));
    }

    #[test]
    fn shared_holders_coexist_and_block_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("door");
        let a = ByteLocks::open(&p).expect("open a");
        let b = ByteLocks::open(&p).expect("open b");
        let c = ByteLocks::open(&p).expect("open c");
        assert!(a.try_lock(0, false).expect("a shared"));
        assert!(b.try_lock(0, false).expect("b shared"));
        assert!(!c.try_lock(0, true).expect("c exclusive"));
        drop(a);
        drop(b);
        assert!(c.try_lock(0, true).expect("c exclusive once alone"));
        let d = ByteLocks::open(&p).expect("open d");
        assert!(!d.try_lock(0, false).expect("d shared against exclusive"));
    }
}
