//! The API versions this broker speaks, and the ApiVersions request.
//!
//! Most ranges are those of a Kafka 3.0-era broker, at versions without the
//! KIP-848 group protocol. Topic ids (KIP-516) are served where Kafka 4.x
//! has them: Metadata v10-12, CreateTopics v7 (the created topic's id),
//! DeleteTopics v6 (by id) and Fetch v13-18 (topics by id; v15-18 add only
//! what a follower sends). Issue 13's describe APIs are served at Kafka
//! 4.x's ranges: DeleteRecords, DescribeLogDirs, DescribeCluster,
//! DescribeProducers, GetTelemetrySubscriptions (no subscription) and
//! DescribeTopicPartitions. That is what the three client families need:
//! librdkafka picks the highest common version per API; kafka-python infers
//! a broker version from the ranges and uses record batch v2 from 0.11 on;
//! aiokafka refuses an API that is not listed. Leader epochs (KIP-320) are
//! served as Kafka 4.x serves them: in Metadata (v7+), checked in Fetch
//! (v9+) and ListOffsets (v4+), and OffsetForLeaderEpoch (v2-4), so
//! clients validate their positions after a seek or a committed offset as
//! they do against Kafka. docs/COMPATIBILITY.md lists every key against Kafka 4.x's
//! range (`tests/test_compatibility_doc.py` checks it against this table).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use crate::errors::code;

pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::GetTelemetrySubscriptions, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
];

/// The API, if `key` at `version` is one this broker serves.
pub fn supported(key: i16, version: i16) -> Option<ApiKey> {
    SUPPORTED
        .iter()
        .find(|(k, lo, hi)| *k as i16 == key && (*lo..=*hi).contains(&version))
        .map(|(k, _, _)| *k)
}

/// The ApiVersions answer; `error` is UNSUPPORTED_VERSION when the client
/// asked with a version above ours (it then retries with v0..=3).
pub fn api_versions(error: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error;
    r.api_keys = SUPPORTED
        .iter()
        .map(|(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *lo;
            v.max_version = *hi;
            v
        })
        .collect();
    r
}

pub fn unsupported_version() -> ApiVersionsResponse {
    api_versions(code::UNSUPPORTED_VERSION)
}
