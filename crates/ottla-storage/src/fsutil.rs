//! Small file-system primitives shared by the store (topic metadata) and
//! the log (the cleaner's checkpoint and gap end): below both, so neither
//! reaches into the other for them.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

/// Write a file so readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    // A short temporary name: the final name may already be at the limit.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_file_name(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::write(&tmp, data).ctx("write", &tmp)?;
    let f = fs::File::open(&tmp).ctx("open", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    fs::rename(&tmp, path).ctx("rename", path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
