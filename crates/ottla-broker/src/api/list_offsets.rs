//! ListOffsets: earliest (-2), latest (-1), the record with the largest
//! timestamp (-3), or the first offset at or after a time, looked up by the
//! replica manager. From v4, with the leader epoch the answered offset was
//! written in (the current epoch for latest; -1 when unknown, as for
//! records written before leader epochs), and the client's
//! `current_leader_epoch` checked first when it gives one (not -1): a lower
//! one is FENCED_LEADER_EPOCH, a higher one UNKNOWN_LEADER_EPOCH.
//!
//! Under `isolation_level=1` (read_committed, v2+), latest is the
//! partition's last stable offset, as Kafka answers.
//!
//! The tiered-storage specs are answered as a Kafka broker without remote
//! storage answers them: earliest-local (-4, v8+, KIP-405) is the log start
//! offset, as earliest; latest-tiered (-5, v9+, KIP-1005) is "none" (offset
//! and epoch -1, no error). v10's `timeout_ms` bounds a remote lookup
//! (KIP-1075); every lookup here is local, so it is not needed.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

/// Kafka's `ListOffsetsRequest` specs past max-timestamp (-3).
const EARLIEST_TIMESTAMP: i64 = -2;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

/// What `timestamp` asks for at version `v`: a spec the replica manager
/// answers, or `None` for latest-tiered, which has no offset without
/// remote storage.
fn local_spec(timestamp: i64, v: i16) -> Option<i64> {
    match timestamp {
        EARLIEST_LOCAL_TIMESTAMP if v >= 8 => Some(EARLIEST_TIMESTAMP),
        LATEST_TIERED_TIMESTAMP if v >= 9 => None,
        t => Some(t),
    }
}

pub async fn handle(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ListOffsetsRequest,
    v: i16,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        // ACLs: DESCRIBE on the topic (Kafka's check).
        let allowed = _s.authorized(
            shared,
            Operation::Describe,
            ResourceType::Topic,
            t.name.as_str(),
        );
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            if !allowed {
                pr.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                pr.timestamp = -1;
                pr.offset = -1;
                tr.partitions.push(pr);
                continue;
            }
            // Kafka's `ListOffsetsResponse.UNKNOWN_EPOCH` (-1) skips the check.
            let current =
                (v >= 4 && p.current_leader_epoch != -1).then_some(p.current_leader_epoch);
            let found = match local_spec(p.timestamp, v) {
                Some(spec) => {
                    shared
                        .replicas
                        .list_offset(t.name.as_str(), p.partition_index, spec, current)
                }
                // No remote storage: nothing is tiered, once the partition
                // and the epoch check pass.
                None => shared
                    .replicas
                    .list_offset(t.name.as_str(), p.partition_index, -1, current)
                    .map(|_| (-1, -1, -1)),
            };
            // read_committed (v2+): latest is the last stable offset, and
            // a lookup by time (or max timestamp) finds only offsets below
            // it (Kafka's `lastFetchableOffset`); earliest is unchanged.
            let found = match found {
                Ok((ts, offset, epoch)) if req.isolation_level == 1 && p.timestamp != -2 => shared
                    .replicas
                    .last_stable_offset(t.name.as_str(), p.partition_index)
                    .map(|lso| committed_answer(p.timestamp, (ts, offset, epoch), lso)),
                other => other,
            };
            match found {
                Ok((ts, offset, epoch)) => {
                    pr.timestamp = ts;
                    pr.offset = offset;
                    if v >= 4 {
                        pr.leader_epoch = epoch;
                    }
                }
                Err(c) => pr.error_code = c,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// What a read_committed ListOffsets answers for `spec`, given the
/// uncommitted answer `found` and the partition's last stable offset.
fn committed_answer(spec: i64, found: (i64, i64, i32), lso: i64) -> (i64, i64, i32) {
    let (ts, offset, epoch) = found;
    match spec {
        -1 => (ts, lso, epoch),
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => found,
        _ if offset >= lso => (-1, -1, -1),
        _ => found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_committed_answers_stop_at_the_lso() {
        assert_eq!(committed_answer(-1, (-1, 10, 3), 7), (-1, 7, 3));
        assert_eq!(committed_answer(-2, (-1, 0, 3), 7), (-1, 0, 3));
        // By time, or the max timestamp: an offset at or past the LSO is "none".
        assert_eq!(committed_answer(1000, (1000, 8, 3), 7), (-1, -1, -1));
        assert_eq!(committed_answer(-3, (1000, 6, 3), 7), (1000, 6, 3));
        assert_eq!(committed_answer(-5, (-1, -1, -1), 7), (-1, -1, -1));
    }

    #[test]
    fn tiered_specs_are_local_or_none_from_their_versions() {
        assert_eq!(
            local_spec(EARLIEST_LOCAL_TIMESTAMP, 8),
            Some(EARLIEST_TIMESTAMP)
        );
        assert_eq!(local_spec(LATEST_TIERED_TIMESTAMP, 9), None);
        assert_eq!(local_spec(LATEST_TIERED_TIMESTAMP, 10), None);
        // Below their versions they are plain (negative) timestamps.
        assert_eq!(local_spec(EARLIEST_LOCAL_TIMESTAMP, 7), Some(-4));
        assert_eq!(local_spec(LATEST_TIERED_TIMESTAMP, 8), Some(-5));
        assert_eq!(local_spec(-1, 10), Some(-1));
        assert_eq!(local_spec(1_700_000_000_000, 10), Some(1_700_000_000_000));
    }
}
