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

use crate::dispatch::Session;
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
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
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
            // read_committed (v2+): latest is the last stable offset.
            let found = match found {
                Ok((ts, _, epoch)) if req.isolation_level == 1 && p.timestamp == -1 => shared
                    .replicas
                    .last_stable_offset(t.name.as_str(), p.partition_index)
                    .map(|lso| (ts, lso, epoch)),
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

#[cfg(test)]
mod tests {
    use super::*;

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
