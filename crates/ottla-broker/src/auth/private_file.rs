//! The broker's private files in the data directory (SCRAM credentials,
//! ACLs): a directory made with mode 0700, files with mode 0600, every
//! change made under the file's `flock` and written whole by rename, so a
//! reader (this process or another) sees the old file or the new one,
//! never half of one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// `dir` (and its parents), the last one created with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Refuses a change of `what` (ACLs, SCRAM users) in the private directory
/// `dir` (`<data>/.ottla`) of a cluster node: its ACLs and users live in the
/// cluster's metadata log, so a file change would be ignored by every node.
pub fn refuse_cluster_node(dir: &Path, what: &str, command: &str) -> Result<(), String> {
    let marker = dir.join("cluster").join("node");
    if !marker.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&marker).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::to_string))
    };
    let node = field("node.id=").unwrap_or_else(|| "?".into());
    let listener = field("listener=").unwrap_or_else(|| "HOST:PORT".into());
    Err(format!(
        "{} belongs to cluster node {node}: its {what} live in the cluster's metadata log, \
         not in this directory; change them through a running broker \
         (`{command} --bootstrap-server {listener}`)",
        dir.parent().unwrap_or(dir).display()
    ))
}

/// Runs `f` holding the exclusive lock `dir/lock` (created 0600), after
/// making `dir` private.
pub fn locked<T>(
    dir: &Path,
    lock: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    create_private_dir(dir)?;
    let lock_path = dir.join(lock);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let _held = Flock::exclusive(&file).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    f()
}

/// Replaces `dir/name` with `text` (mode 0600): a temporary file, fsync'd,
/// renamed over it, the directory fsync'd. Call under [`locked`].
pub fn replace(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

/// An exclusive `flock` held until dropped.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(f: &'a File) -> std::io::Result<Flock<'a>> {
        loop {
            // SAFETY: flock on a descriptor `f` owns and keeps open for the
            // guard's lifetime; no memory is passed.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Flock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `exclusive`; unlocking a descriptor we still own.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
