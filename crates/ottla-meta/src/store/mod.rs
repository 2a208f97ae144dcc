//! The metadata quorum's files, under a directory the caller gives (the
//! broker will use `<data>/.ottla/cluster/meta/`):
//!
//! - `log/<first index, 20 digits>.log`: the Raft log, in segments of
//!   CRC-framed entries ([`log`]);
//! - `vote`: the last vote ([`file`] layout, replaced atomically);
//! - `purged`: the id of the last purged log entry;
//! - `snapshot`: the last snapshot of the metadata image ([`state_machine`]).
//!
//! Everything is fsync'd before openraft is told it is done. Damage is a
//! typed [`StoreError`], never a panic; a torn tail of the log (a write cut by
//! a crash) is truncated on open. docs/FORMAT.md has the bytes.

pub(crate) mod file;
pub mod log;
pub mod state_machine;

use std::path::{Path, PathBuf};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::types::{NodeId, StorageError};

/// A storage failure: I/O, or bytes on disk that are not what was written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: unknown format version {version}")]
    UnknownVersion { path: PathBuf, version: u8 },
    #[error("a record of {len} bytes is too large")]
    TooLarge { len: usize },
    #[error("encoding: {0}")]
    Encode(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// As openraft's storage error (which stops the Raft node).
    pub(crate) fn to_raft(&self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, AnyError::new(self)).into()
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Encode(e.to_string()))
}

pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
    path: &Path,
    offset: u64,
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| StoreError::corrupt(path, offset, format!("undecodable: {e}")))
}
