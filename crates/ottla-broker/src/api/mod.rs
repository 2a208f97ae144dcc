//! One module per API family (protocol only). Each handler takes the decoded
//! request, calls the replica manager (partition logs), a coordinator, or
//! the store (topic metadata and configs), and returns the response to
//! encode; errors are Kafka error codes in the response, never a closed
//! connection.

pub mod acls;
pub mod cluster;
pub mod codec_v10;
pub mod configs;
pub mod consumer_group;
#[cfg(test)]
mod consumer_group_tests;
pub mod epochs;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod producers;
pub mod reassign;
pub mod records;
pub mod sasl;
pub mod scram_users;
pub mod telemetry;
pub mod topics;
pub mod txn;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;

pub(crate) use crate::blocking;

pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub(crate) fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}
