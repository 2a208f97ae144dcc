//! The engine's error type.
//!
//! Every failure a caller can act on has its own variant, so the Python layer
//! can map each onto its own exception class and the broker onto a Kafka error
//! code. I/O errors always carry the path they happened on: "No space left on
//! device" is useless without knowing which file.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic { name: String, reason: &'static str },

    #[error("unknown topic or partition: {topic}-{partition}")]
    UnknownTopicOrPartition { topic: String, partition: i64 },

    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),

    #[error("invalid partitions: {0}")]
    InvalidPartitions(String),

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error("offset {offset} is out of range for {topic}-{partition} (valid offsets are {start}..{end})")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
        start: i64,
        end: i64,
    },

    #[error("no committed offset for {topic}-{partition} and auto_offset_reset is 'none'")]
    NoOffsetForPartition { topic: String, partition: u32 },

    #[error("record of {size} bytes is larger than max_message_bytes ({max})")]
    RecordTooLarge { size: usize, max: usize },

    #[error("corrupt record batch in {path} at byte {position}: {reason}")]
    CorruptRecord {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    #[error("invalid record batch: {0}")]
    InvalidRecord(String),

    #[error("unsupported compression codec {0} in record batch")]
    UnsupportedCompression(u8),

    #[error("compressed record batch inflates past {limit} bytes")]
    DecompressedTooLarge { limit: usize },

    /// Opening a directory that holds no ottla data (a mistyped path):
    /// only a producer, a broker or an explicit create makes one.
    #[error("no ottla data directory at {path}: {reason}")]
    NotADataDirectory { path: PathBuf, reason: &'static str },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "offset metadata of {len} bytes is longer than the {max} allowed (Kafka's offset.metadata.max.bytes)"
    )]
    OffsetMetadataTooLarge { len: usize, max: usize },

    #[error("group {group} is coordinated by a broker on this directory")]
    GroupCoordinatedByBroker { group: String },

    #[error("group {0:?} has live members; stop them first")]
    GroupNotEmpty(String),

    #[error("{0}")]
    IllegalState(String),

    /// A follower's append (`PartitionLog::append_as_follower`) whose
    /// batches do not start at the log end (Kafka's
    /// `UnexpectedAppendOffsetException`).
    #[error(
        "batches for {topic}-{partition} start at offset {first}, but the log ends at {expected}"
    )]
    UnexpectedAppendOffset {
        topic: String,
        partition: u32,
        expected: i64,
        first: i64,
    },

    #[error("timed out after {0} ms")]
    Timeout(u64),

    #[error("{0} is closed")]
    Closed(&'static str),

    /// A newer producer with the same transactional id took over (Kafka's
    /// PRODUCER_FENCED / INVALID_PRODUCER_EPOCH): this one can only close.
    #[error("producer fenced: {0}")]
    ProducerFenced(String),

    /// A transactional call out of order (Kafka's INVALID_TXN_STATE).
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
}

impl Error {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
        Error::CorruptRecord {
            path: path.to_path_buf(),
            position,
            reason: reason.into(),
        }
    }

    /// True when the error is about the disk running out of room (ENOSPC,
    /// EDQUOT or EFBIG from a file size limit).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            ),
            _ => false,
        }
    }
}

/// A batch that does not decode keeps its own variant, so callers that map
/// errors (onto Python exceptions, onto Kafka error codes) see no difference
/// between the format's errors and the engine's.
impl From<ottla_record::Error> for Error {
    fn from(e: ottla_record::Error) -> Error {
        match e {
            ottla_record::Error::InvalidRecord(reason) => Error::InvalidRecord(reason),
            ottla_record::Error::UnsupportedCompression(codec) => {
                Error::UnsupportedCompression(codec)
            }
            ottla_record::Error::DecompressedTooLarge { limit } => {
                Error::DecompressedTooLarge { limit }
            }
        }
    }
}

/// Attach a path and operation name to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
