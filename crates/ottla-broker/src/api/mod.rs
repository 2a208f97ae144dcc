//! One module per API family. Each handler takes the decoded request and
//! returns the response to encode; errors are Kafka error codes in the
//! response, never a closed connection.

pub mod configs;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod topics;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// Run blocking engine work (file I/O, fsync) without stalling the
/// runtime's other connections.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
