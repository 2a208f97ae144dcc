//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after
//! a time, looked up by the replica manager.

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
    _v: i16,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            let found =
                shared
                    .replicas
                    .list_offset(t.name.as_str(), p.partition_index, p.timestamp);
            match found {
                Ok((ts, offset)) => {
                    pr.timestamp = ts;
                    pr.offset = offset;
                }
                Err(c) => pr.error_code = c,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
