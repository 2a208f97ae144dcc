//! Fetch: the request's partitions read through the replica manager, their
//! stored batches put into the response as they are; the replica manager
//! long-polls when there is less than `min_bytes`, woken only by appends to
//! the partitions this request reads.
//!
//! Limits (KIP-74, as Kafka's `ReplicaManager.readFromLog`): the records of
//! the whole response fit `max_bytes`, capped by the broker's
//! `fetch_max_bytes`; each partition's fit `partition_max_bytes` and what
//! is left of the response's. Partitions are filled in request order. The
//! one exception is the response's first batch: when it alone is larger
//! than the limits it is returned whole (`min_one`), so a consumer never
//! sticks behind a batch larger than its limits. After the first partition
//! with records there is no exception: a partition whose next batch does
//! not fit what is left returns no records.
//!
//! From v13 on, topics are named by id in the request and the response
//! (KIP-516); an id no topic has answers UNKNOWN_TOPIC_ID for each of its
//! partitions, so the client refreshes its metadata. v15's replica state
//! and v17's directory ids are a follower's; a consumer sends neither.

use std::sync::Arc;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::replica::{Looked, ReadResult};
use crate::Shared;

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: FetchRequest,
    v: i16,
) -> FetchResponse {
    let max_bytes = (req.max_bytes.max(0) as usize).min(shared.config.fetch_max_bytes);
    // Each topic's name: the request's before v13, found by id after.
    let names: Vec<Option<String>> = req
        .topics
        .iter()
        .map(|t| {
            if v >= 13 {
                super::metadata::topic_by_id(shared, &mut session.topic_names, t.topic_id)
            } else {
                Some(t.topic.as_str().to_string())
            }
        })
        .collect();
    shared
        .replicas
        .fetch(req.max_wait_ms, req.min_bytes, |looked| {
            gather(shared, session, looked, &req, &names, max_bytes)
        })
        .await
}

/// One pass over the requested partitions: (response, bytes, any error);
/// `looked` gets each partition read, for the long poll to wait on.
fn gather(
    shared: &Shared,
    session: &mut Session,
    looked: &mut Looked,
    req: &FetchRequest,
    names: &[Option<String>],
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    // True until a partition returns records: only the response's first
    // batch may exceed the limits.
    let mut min_one = true;
    for (t, name) in req.topics.iter().zip(names) {
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        tr.topic_id = t.topic_id;
        let (name, topic) = match name {
            Some(name) => (name.as_str(), shared.store.topic(name)),
            None => ("", Ok(None)),
        };
        let unknown = if name.is_empty() {
            code::UNKNOWN_TOPIC_ID
        } else {
            code::UNKNOWN_TOPIC_OR_PARTITION
        };
        for p in &t.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            let budget =
                (max_bytes.saturating_sub(total)).min(p.partition_max_bytes.max(0) as usize);
            let read = match &topic {
                Ok(Some(topic)) => shared.replicas.read(
                    &mut session.cursors,
                    looked,
                    topic,
                    name,
                    p.partition,
                    p.fetch_offset,
                    budget,
                    min_one,
                ),
                Ok(None) => ReadResult::error(unknown),
                Err(e) => ReadResult::error(kafka_code(e)),
            };
            if read.error != code::NONE {
                pd.error_code = read.error;
                errors = true;
            }
            match read.offsets {
                Some((start, end)) => {
                    pd.high_watermark = end;
                    pd.last_stable_offset = end;
                    pd.log_start_offset = start;
                }
                // Kafka's answer for a partition it cannot read
                // (`FetchResponse.INVALID_HIGH_WATERMARK`).
                None => pd.high_watermark = -1,
            }
            if let Some(records) = read.records {
                min_one &= records.is_empty();
                total += records.len();
                pd.records = Some(records);
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, errors)
}
