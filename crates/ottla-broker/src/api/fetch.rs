//! Fetch: the request's partitions read through the replica manager, their
//! stored batches put into the response as they are; the replica manager
//! long-polls when there is less than `min_bytes`.

use std::sync::Arc;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::replica::ReadResult;
use crate::Shared;

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: FetchRequest,
    _v: i16,
) -> FetchResponse {
    let max_bytes = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    shared
        .replicas
        .fetch(req.max_wait_ms, req.min_bytes, || {
            gather(shared, session, &req, max_bytes)
        })
        .await
}

/// One pass over the requested partitions: (response, bytes, any error).
fn gather(
    shared: &Shared,
    session: &mut Session,
    req: &FetchRequest,
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    for t in &req.topics {
        let name = t.topic.as_str();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        let topic = shared.store.topic(name);
        for p in &t.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            let budget =
                (max_bytes.saturating_sub(total)).min(p.partition_max_bytes.max(0) as usize);
            let read = match &topic {
                Ok(Some(topic)) => shared.replicas.read(
                    &mut session.cursors,
                    topic,
                    name,
                    p.partition,
                    p.fetch_offset,
                    budget,
                ),
                Ok(None) => ReadResult::error(code::UNKNOWN_TOPIC_OR_PARTITION),
                Err(e) => ReadResult::error(kafka_code(e)),
            };
            if read.error != code::NONE {
                pd.error_code = read.error;
                errors = true;
            }
            if let Some((start, end)) = read.offsets {
                pd.high_watermark = end;
                pd.last_stable_offset = end;
                pd.log_start_offset = start;
            }
            if let Some(records) = read.records {
                total += records.len();
                pd.records = Some(records);
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, errors)
}
