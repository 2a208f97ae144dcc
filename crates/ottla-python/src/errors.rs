//! The exception hierarchy, rooted at `ottla.OttlaError`, and the mapping
//! from engine errors onto it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use ottla_storage::error::Error;

create_exception!(
    ottla,
    OttlaError,
    PyException,
    "Base class of every error ottla raises."
);
create_exception!(
    ottla,
    InvalidTopicError,
    OttlaError,
    "A topic name breaks Kafka's naming rules."
);
create_exception!(
    ottla,
    UnknownTopicOrPartitionError,
    OttlaError,
    "The topic or partition does not exist."
);
create_exception!(
    ottla,
    TopicAlreadyExistsError,
    OttlaError,
    "create_topic() of a topic that exists."
);
create_exception!(
    ottla,
    InvalidPartitionsError,
    OttlaError,
    "A partition count that is not allowed."
);
create_exception!(
    ottla,
    InvalidConfigError,
    OttlaError,
    "An unknown setting or a bad value."
);
create_exception!(
    ottla,
    OffsetMetadataTooLargeError,
    OttlaError,
    "Commit metadata longer than 4096 bytes (Kafka's offset.metadata.max.bytes)."
);
create_exception!(
    ottla,
    OffsetOutOfRangeError,
    OttlaError,
    "An offset below the log start or past the log end."
);
create_exception!(
    ottla,
    NoOffsetForPartitionError,
    OttlaError,
    "No committed offset and auto_offset_reset='none'."
);
create_exception!(
    ottla,
    RecordTooLargeError,
    OttlaError,
    "A record larger than max.message.bytes."
);
create_exception!(
    ottla,
    CorruptRecordError,
    OttlaError,
    "A stored batch failed its checksum or framing; the message names the file and byte position."
);
create_exception!(
    ottla,
    InvalidRecordError,
    OttlaError,
    "A record batch that is not valid record format v2."
);
create_exception!(
    ottla,
    UnsupportedCompressionError,
    OttlaError,
    "A batch compressed with a codec this build cannot read."
);
create_exception!(
    ottla,
    StorageError,
    OttlaError,
    "An operating-system error on a file of the data directory."
);
create_exception!(
    ottla,
    DiskFullError,
    StorageError,
    "The disk (or a file size limit) ran out of room; the log stays readable."
);
create_exception!(
    ottla,
    GroupMemberConflictError,
    OttlaError,
    "The group is coordinated by the other door (a broker on this directory), so this member cannot join."
);
create_exception!(
    ottla,
    GroupNotEmptyError,
    OttlaError,
    "A group operation that needs the group empty (delete, reset offsets) while it has live members."
);
create_exception!(
    ottla,
    IllegalStateError,
    OttlaError,
    "An operation that does not fit the object's state."
);
create_exception!(
    ottla,
    OttlaTimeoutError,
    OttlaError,
    "A blocking call ran out of time."
);
create_exception!(
    ottla,
    ProducerFencedError,
    OttlaError,
    "A newer producer with the same transactional_id took over (Kafka's PRODUCER_FENCED): close this one."
);
create_exception!(
    ottla,
    InvalidTxnStateError,
    OttlaError,
    "A transactional call out of order, e.g. commit_transaction() with no transaction begun (Kafka's INVALID_TXN_STATE)."
);
create_exception!(
    ottla,
    ClosedError,
    OttlaError,
    "The producer or consumer has been closed."
);

create_exception!(
    ottla,
    DataDirectoryNotFoundError,
    OttlaError,
    "The path given to a Consumer or Admin is not an ottla data directory (it does not exist, or has no .ottla/ inside); only a Producer, a Broker or Admin(path, create=True) creates one."
);

pub fn to_pyerr(e: &Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidTopic { .. } => InvalidTopicError::new_err(msg),
        Error::UnknownTopicOrPartition { .. } => UnknownTopicOrPartitionError::new_err(msg),
        Error::TopicAlreadyExists(_) => TopicAlreadyExistsError::new_err(msg),
        Error::InvalidPartitions(_) => InvalidPartitionsError::new_err(msg),
        Error::InvalidConfig(_) => InvalidConfigError::new_err(msg),
        Error::OffsetOutOfRange { .. } => OffsetOutOfRangeError::new_err(msg),
        Error::OffsetMetadataTooLarge { .. } => OffsetMetadataTooLargeError::new_err(msg),
        Error::NoOffsetForPartition { .. } => NoOffsetForPartitionError::new_err(msg),
        Error::RecordTooLarge { .. } => RecordTooLargeError::new_err(msg),
        Error::CorruptRecord { .. } => CorruptRecordError::new_err(msg),
        Error::InvalidRecord(_) => InvalidRecordError::new_err(msg),
        Error::UnsupportedCompression(_) => UnsupportedCompressionError::new_err(msg),
        Error::DecompressedTooLarge { .. } => InvalidRecordError::new_err(msg),
        Error::NotADataDirectory { .. } => DataDirectoryNotFoundError::new_err(msg),
        Error::Io { .. } if e.is_disk_full() => DiskFullError::new_err(msg),
        Error::Io { .. } => StorageError::new_err(msg),
        Error::GroupCoordinatedByBroker { .. } => GroupMemberConflictError::new_err(msg),
        Error::GroupNotEmpty(_) => GroupNotEmptyError::new_err(msg),
        Error::IllegalState(_) | Error::UnexpectedAppendOffset { .. } => {
            IllegalStateError::new_err(msg)
        }
        Error::Timeout(_) => OttlaTimeoutError::new_err(msg),
        Error::Closed(_) => ClosedError::new_err(msg),
        Error::ProducerFenced(_) => ProducerFencedError::new_err(msg),
        Error::InvalidTxnState(_) => InvalidTxnStateError::new_err(msg),
    }
}

/// The engine's results as Python's: `engine_call().py()?`. (A `From` impl
/// would be an orphan: neither type is defined in this crate.)
pub trait PyResultExt<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> PyResultExt<T> for Result<T, Error> {
    fn py(self) -> PyResult<T> {
        self.map_err(|e| to_pyerr(&e))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("OttlaError", py.get_type::<OttlaError>())?;
    m.add("InvalidTopicError", py.get_type::<InvalidTopicError>())?;
    m.add(
        "UnknownTopicOrPartitionError",
        py.get_type::<UnknownTopicOrPartitionError>(),
    )?;
    m.add(
        "TopicAlreadyExistsError",
        py.get_type::<TopicAlreadyExistsError>(),
    )?;
    m.add(
        "InvalidPartitionsError",
        py.get_type::<InvalidPartitionsError>(),
    )?;
    m.add("InvalidConfigError", py.get_type::<InvalidConfigError>())?;
    m.add(
        "OffsetOutOfRangeError",
        py.get_type::<OffsetOutOfRangeError>(),
    )?;
    m.add(
        "OffsetMetadataTooLargeError",
        py.get_type::<OffsetMetadataTooLargeError>(),
    )?;
    m.add(
        "NoOffsetForPartitionError",
        py.get_type::<NoOffsetForPartitionError>(),
    )?;
    m.add("RecordTooLargeError", py.get_type::<RecordTooLargeError>())?;
    m.add("CorruptRecordError", py.get_type::<CorruptRecordError>())?;
    m.add("InvalidRecordError", py.get_type::<InvalidRecordError>())?;
    m.add(
        "UnsupportedCompressionError",
        py.get_type::<UnsupportedCompressionError>(),
    )?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("DiskFullError", py.get_type::<DiskFullError>())?;
    m.add(
        "GroupMemberConflictError",
        py.get_type::<GroupMemberConflictError>(),
    )?;
    m.add("GroupNotEmptyError", py.get_type::<GroupNotEmptyError>())?;
    m.add("IllegalStateError", py.get_type::<IllegalStateError>())?;
    m.add("ProducerFencedError", py.get_type::<ProducerFencedError>())?;
    m.add(
        "InvalidTxnStateError",
        py.get_type::<InvalidTxnStateError>(),
    )?;
    m.add("OttlaTimeoutError", py.get_type::<OttlaTimeoutError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add(
        "DataDirectoryNotFoundError",
        py.get_type::<DataDirectoryNotFoundError>(),
    )?;
    Ok(())
}
