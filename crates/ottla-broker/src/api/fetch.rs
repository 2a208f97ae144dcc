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
//!
//! Leader epochs (KIP-320): from v9 a partition's `current_leader_epoch`,
//! when given (not -1), must be the partition's: a lower one is
//! FENCED_LEADER_EPOCH, a higher one UNKNOWN_LEADER_EPOCH, and the client
//! refreshes its metadata (v16+ answers a fenced one with the current
//! leader and its endpoint, KIP-951, so it need not). From v12 a fetcher
//! may say which epoch it last fetched in (`last_fetched_epoch`, a
//! follower's; consumers send -1): if that epoch ends below the fetch
//! offset here, or is not known here, the answer is the diverging epoch
//! and its end offset instead of records, as Kafka's
//! `Partition.fetchRecords` answers, so the fetcher truncates its log.

use std::sync::Arc;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use super::metadata::NODE_ID;

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
            gather(shared, session, looked, &req, v, &names, max_bytes)
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
    v: i16,
    names: &[Option<String>],
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    // A partition answered FENCED_LEADER_EPOCH (v16+): the response names
    // the leader's endpoint.
    let mut fenced = false;
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
            // -1 (or anything negative: Kafka's `optionalEpoch`) skips the check.
            let current_epoch =
                (v >= 9 && p.current_leader_epoch >= 0).then_some(p.current_leader_epoch);
            if v >= 12 && p.last_fetched_epoch >= 0 && topic.as_ref().is_ok_and(|t| t.is_some()) {
                if let Some(pd) = diverging(shared, name, p, current_epoch) {
                    errors = true;
                    tr.partitions.push(pd);
                    continue;
                }
            }
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
                    current_epoch,
                    budget,
                    min_one,
                ),
                Ok(None) => ReadResult::error(unknown),
                Err(e) => ReadResult::error(kafka_code(e)),
            };
            if read.error != code::NONE {
                pd.error_code = read.error;
                errors = true;
                if read.error == code::FENCED_LEADER_EPOCH && v >= 16 {
                    fenced = true;
                    if let Ok(e) = shared.replicas.leader_epochs(name, p.partition, None) {
                        pd.current_leader.leader_id = BrokerId(NODE_ID);
                        pd.current_leader.leader_epoch = e.current;
                    }
                }
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
    if fenced {
        // KIP-951: where the current leader is, so the client need not ask.
        let mut n = NodeEndpoint::default();
        n.node_id = BrokerId(NODE_ID);
        n.host = super::s(session.advertised(shared).0);
        n.port = i32::from(session.advertised(shared).1);
        resp.node_endpoints.push(n);
    }
    (resp, total, errors)
}

/// Kafka's check of the epoch a fetcher last fetched in
/// (`Partition.fetchRecords`): `None` when its log agrees with this one up
/// to the fetch offset (read as usual), else the partition's answer: the
/// epoch check's error, OFFSET_OUT_OF_RANGE for an epoch whose end is not
/// known here or a fetch offset below the log start, or the diverging
/// epoch (the largest epoch here at or below the fetcher's, and where it
/// ends) with no records.
fn diverging(
    shared: &Shared,
    name: &str,
    p: &FetchPartition,
    current_epoch: Option<i32>,
) -> Option<PartitionData> {
    let mut pd = PartitionData::default();
    pd.partition_index = p.partition;
    pd.high_watermark = -1;
    let epochs = match shared
        .replicas
        .leader_epochs(name, p.partition, current_epoch)
    {
        Ok(e) => e,
        Err(c) => {
            pd.error_code = c;
            return Some(pd);
        }
    };
    let (epoch, end) = epochs.end_offset_for(p.last_fetched_epoch);
    if epoch < 0 || end < 0 || p.fetch_offset < epochs.log_start_offset {
        pd.error_code = code::OFFSET_OUT_OF_RANGE;
        return Some(pd);
    }
    if epoch >= p.last_fetched_epoch && end >= p.fetch_offset {
        return None;
    }
    pd.diverging_epoch.epoch = epoch;
    pd.diverging_epoch.end_offset = end;
    pd.high_watermark = epochs.high_watermark;
    pd.last_stable_offset = epochs.high_watermark;
    pd.log_start_offset = epochs.log_start_offset;
    pd.records = Some(bytes::Bytes::new());
    Some(pd)
}
