//! Small whole files written atomically (the vote, the purge mark, the
//! snapshot): `magic(4) | version u8 | 0 0 0 | len u32 LE | crc32c u32 LE |
//! payload`, written to `<name>.tmp`, fsync'd, renamed over `<name>`, and the
//! directory fsync'd. A reader sees the old file or the new one, whole.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use super::StoreError;

pub(crate) const HEADER: usize = 16;
pub(crate) const VERSION: u8 = 1;

/// Encodes `payload` in the small-file layout.
pub(crate) fn frame(magic: &[u8; 4], payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len =
        u32::try_from(payload.len()).map_err(|_| StoreError::TooLarge { len: payload.len() })?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&[VERSION, 0, 0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks the small-file layout of `bytes` and returns the payload.
pub(crate) fn unframe<'a>(
    magic: &[u8; 4],
    bytes: &'a [u8],
    path: &Path,
) -> Result<&'a [u8], StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    if bytes.len() < HEADER {
        return Err(corrupt(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    }
    if &bytes[0..4] != magic {
        return Err(corrupt("bad magic".into()));
    }
    if bytes[4] != VERSION {
        return Err(StoreError::UnknownVersion {
            path: path.to_path_buf(),
            version: bytes[4],
        });
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(corrupt(format!(
            "payload of {} bytes, header says {len}",
            payload.len()
        )));
    }
    if crc32c::crc32c(payload) != crc {
        return Err(corrupt("payload CRC mismatch".into()));
    }
    Ok(payload)
}

/// Reads `path`; `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// fsyncs a directory, so that a rename or a new file in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Writes `bytes` to `dir/name` atomically and durably.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    fs::rename(&tmp, &dst).map_err(|e| StoreError::io(&dst, e))?;
    sync_dir(dir)
}
