//! Small file-system primitives shared by the store (topic metadata), the
//! log (the cleaner's checkpoint and gap end) and the clients' group files:
//! below all of them, so none reaches into another for them.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};

/// Write a file so readers see the old or the new content, never a mix,
/// and so the new content survives a power cut once this returns.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, true)
}

/// Replace a file by rename, without fsync: for files that describe live
/// processes only (group state), whose loss to a power cut loses nothing.
pub fn write_replace(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, false)
}

/// The start of the engine's temporary file names (written, then renamed
/// into place); reserved, so no topic is ever named so.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

fn replace(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    // A short temporary name: the final name may already be at the limit.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_file_name(format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::write(&tmp, data).ctx("write", &tmp).and_then(|()| {
        if durable {
            let f = fs::File::open(&tmp).ctx("open", &tmp)?;
            f.sync_all().ctx("fsync", &tmp)?;
        }
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        if let Some(dir) = path.parent() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(())
}
