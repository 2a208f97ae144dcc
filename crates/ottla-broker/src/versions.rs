//! The API versions this broker speaks, and the ApiVersions request.
//!
//! Most ranges are those of a Kafka 3.0-era broker. The KIP-848 consumer
//! group protocol is served at Kafka 4.x's ranges: ConsumerGroupHeartbeat
//! and ConsumerGroupDescribe v0-1. Topic ids (KIP-516) are served where Kafka 4.x
//! has them: Metadata v10-12, CreateTopics v7 (the created topic's id),
//! DeleteTopics v6 (by id) and Fetch v13-18 (topics by id; v15-18 add only
//! what a follower sends). Issue 13's describe APIs are served at Kafka
//! 4.x's ranges: DeleteRecords, DescribeLogDirs, DescribeCluster,
//! DescribeProducers, GetTelemetrySubscriptions (no subscription) and
//! DescribeTopicPartitions. Produce (v13: topics by id), FindCoordinator,
//! JoinGroup (MEMBER_ID_REQUIRED from v4, KIP-394), LeaveGroup,
//! DescribeGroups, ApiVersions and ListOffsets (v8-10: the tiered-storage
//! specs, answered as without remote storage) are served at Kafka 4.x's maxima;
//! so are OffsetCommit and OffsetFetch (v8: batched groups; v10: topics by
//! id) and InitProducerId (v6: KIP-939, two-phase commit refused as by a
//! Kafka broker without it), whose newest versions kafka-protocol 0.18 has
//! no schema for: `api::codec_v10` decodes and encodes those three. That
//! is what the three client families need:
//! librdkafka picks the highest common version per API; kafka-python infers
//! a broker version from the ranges and uses record batch v2 from 0.11 on;
//! aiokafka refuses an API that is not listed. Leader epochs (KIP-320) are
//! served as Kafka 4.x serves them: in Metadata (v7+), checked in Fetch
//! (v9+) and ListOffsets (v4+), and OffsetForLeaderEpoch (v2-4), so
//! clients validate their positions after a seek or a committed offset as
//! they do against Kafka. docs/COMPATIBILITY.md lists every key against Kafka 4.x's
//! range (`tests/test_compatibility_doc.py` checks it against this table).
//! Transactions (KIP-98, KIP-447) are served up to KIP-890 part 1:
//! AddPartitionsToTxn v0-4 (v4: batched, `verify_only`), AddOffsetsToTxn
//! v0-3, TxnOffsetCommit v0-4, EndTxn v0-4; the versions that add part 2
//! (EndTxn v5's bumped epoch) or TRANSACTION_ABORTABLE are not advertised.
//! DescribeTransactions v0 and ListTransactions v0-1 (v1: the duration
//! filter) report the coordinator's state.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

use crate::errors::code;

pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 10),
    (ApiKey::OffsetFetch, 1, 10),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 6),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeCluster, 0, 2),
    // Cluster operations (KIP-455, KIP-460, KRaft's UnregisterBroker).
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::GetTelemetrySubscriptions, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    // Brokers' markers (the transaction coordinator to partition leaders).
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // Security (issue 18). SaslHandshake v0 is followed by bare SASL
    // tokens outside Kafka's framing (`api::sasl::raw_token`). Kafka 4.x
    // advertises 0-1, and librdkafka (2.0 seen) refuses SASL ("SASL
    // Handshake not supported by broker") unless v0 is in the range.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (issue 18), at Kafka 4.x's ranges (KIP-896 removed v0).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

/// The API, if `key` at `version` is one this broker serves.
pub fn supported(key: i16, version: i16) -> Option<ApiKey> {
    SUPPORTED
        .iter()
        .find(|(k, lo, hi)| *k as i16 == key && (*lo..=*hi).contains(&version))
        .map(|(k, _, _)| *k)
}

/// The ApiVersions answer; `error` is UNSUPPORTED_VERSION when the client
/// asked with a version above ours (it then retries with v0..=4).
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
