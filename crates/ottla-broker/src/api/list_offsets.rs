//! ListOffsets: earliest (-2), latest (-1), the record with the largest
//! timestamp (-3), or the first offset at or after a time, looked up by the
//! replica manager. From v4, with the leader epoch the answered offset was
//! written in (the current epoch for latest; -1 when unknown, as for
//! records written before leader epochs), and the client's
//! `current_leader_epoch` checked first when it gives one (not -1): a lower
//! one is FENCED_LEADER_EPOCH, a higher one UNKNOWN_LEADER_EPOCH.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::dispatch::Session;
use crate::Shared;

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
            let found = shared.replicas.list_offset(
                t.name.as_str(),
                p.partition_index,
                p.timestamp,
                current,
            );
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
