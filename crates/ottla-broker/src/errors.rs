//! Kafka error codes, and the engine's errors mapped onto them.

use ottla_storage::error::Error;

pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const RECORD_LIST_TOO_LARGE: i16 = 18;
    pub const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const INVALID_TIMESTAMP: i16 = 32;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INVALID_CONFIG: i16 = 40;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    pub const PRODUCER_FENCED: i16 = 90;
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    // ACLs (issue 18).
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
    pub const SECURITY_DISABLED: i16 = 54;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const INVALID_RECORD: i16 = 87;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    // Security (issue 18).
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const ILLEGAL_SASL_STATE: i16 = 34;
    pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const DUPLICATE_RESOURCE: i16 = 92;
    pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
}

/// The Kafka error code a client should see for an engine error.
pub fn kafka_code(e: &Error) -> i16 {
    match e {
        Error::InvalidTopic { .. } => code::INVALID_TOPIC_EXCEPTION,
        Error::UnknownTopicOrPartition { .. } => code::UNKNOWN_TOPIC_OR_PARTITION,
        Error::TopicAlreadyExists(_) => code::TOPIC_ALREADY_EXISTS,
        Error::InvalidPartitions(_) => code::INVALID_PARTITIONS,
        Error::InvalidConfig(_) => code::INVALID_CONFIG,
        Error::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        Error::RecordTooLarge { .. } => code::MESSAGE_TOO_LARGE,
        Error::CorruptRecord { .. } => code::CORRUPT_MESSAGE,
        Error::InvalidRecord(_) | Error::DecompressedTooLarge { .. } => code::INVALID_RECORD,
        Error::UnsupportedCompression(_) => code::UNSUPPORTED_COMPRESSION_TYPE,
        Error::Io { .. } | Error::NotADataDirectory { .. } => code::KAFKA_STORAGE_ERROR,
        Error::GroupNotEmpty(..) => code::NON_EMPTY_GROUP,
        Error::OffsetMetadataTooLarge { .. } => code::OFFSET_METADATA_TOO_LARGE,
        Error::GroupCoordinatedByBroker { .. } => code::INCONSISTENT_GROUP_PROTOCOL,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// Diagnostics for an operator, on stderr when `OTTLA_BROKER_LOG` is set.
pub fn debug(msg: &str) {
    if std::env::var_os("OTTLA_BROKER_LOG").is_some() {
        eprintln!("ottla broker: {msg}");
    }
}

/// Something an operator should know about (a group refused, a failed write).
pub fn warn(msg: &str) {
    eprintln!("ottla broker: {msg}");
}

/// Why a partition's request was refused: the Kafka error code and, for an
/// engine error, its text ("No space left on device" and the file), which
/// responses from Produce v8 on carry as the partition's `error_message`.
pub struct Refusal {
    pub code: i16,
    pub message: Option<String>,
    /// Produce v8+'s `record_errors`: (index of the record in its batch,
    /// why it was refused).
    pub record_errors: Vec<(i32, String)>,
}

impl Refusal {
    pub fn engine(e: &Error) -> Refusal {
        Refusal {
            code: kafka_code(e),
            message: Some(e.to_string()),
            record_errors: Vec::new(),
        }
    }

    /// Records refused one by one (Kafka's `RecordValidationException`),
    /// with the summary Kafka's LogValidator gives as the partition's
    /// message.
    pub fn records(code: i16, errors: Vec<(i32, String)>) -> Refusal {
        let shown: Vec<String> = errors
            .iter()
            .take(3)
            .map(|(i, m)| format!("RecordError(batchIndex={i}, message='{m}')"))
            .collect();
        Refusal {
            code,
            message: Some(format!(
                "One or more records have been rejected due to {} record errors in total, and \
                 only showing the first three errors at most: [{}]",
                errors.len(),
                shown.join(", ")
            )),
            record_errors: errors,
        }
    }
}

impl From<i16> for Refusal {
    fn from(code: i16) -> Refusal {
        Refusal {
            code,
            message: None,
            record_errors: Vec::new(),
        }
    }
}
