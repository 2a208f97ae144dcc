//! DeleteRecords: move partitions' log start offsets up (Kafka's
//! `deleteRecords`), through the replica manager. The answer per partition
//! is the low watermark (the log start offset after the call); -1 asks for
//! the high watermark; an offset past it is OFFSET_OUT_OF_RANGE, an unknown
//! topic or partition UNKNOWN_TOPIC_OR_PARTITION (low watermark -1, as
//! Kafka answers). One replica: the call returns once the start is on disk,
//! so `timeout_ms` is never reached.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::Shared;

pub async fn delete(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DeleteRecordsRequest,
    _v: i16,
) -> DeleteRecordsResponse {
    let mut resp = DeleteRecordsResponse::default();
    for t in req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        // ACLs: DELETE on the topic (Kafka's check).
        let allowed = _s.authorized(
            shared,
            Operation::Delete,
            ResourceType::Topic,
            t.name.as_str(),
        );
        for p in t.partitions {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            if !allowed {
                pr.error_code = crate::errors::code::TOPIC_AUTHORIZATION_FAILED;
                pr.low_watermark = -1;
                tr.partitions.push(pr);
                continue;
            }
            match shared
                .replicas
                .delete_records(t.name.as_str(), p.partition_index, p.offset)
            {
                Ok(low) => pr.low_watermark = low,
                Err(c) => {
                    pr.error_code = c;
                    pr.low_watermark = -1;
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
