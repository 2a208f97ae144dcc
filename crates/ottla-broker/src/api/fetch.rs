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
//! Transactions (KIP-98): every partition reports its last stable offset
//! (the first offset of its earliest open transaction, or the high
//! watermark); with `isolation_level=1` (read_committed) a partition's
//! records stop below it and come with the aborted transactions they
//! overlap (`replica::lso`), so the consumer drops those producers'
//! records. A read_uncommitted Fetch reports the high watermark as the
//! LSO until the broker has loaded the partition's producer state.
//!
//! Leader epochs (KIP-320): from v9 a partition's `current_leader_epoch`,
//! when given (not -1), must be the partition's: a lower one is
//! FENCED_LEADER_EPOCH, a higher one UNKNOWN_LEADER_EPOCH, and the client
//! refreshes its metadata (v16+ answers a fenced one with the current
//! leader and its endpoint, KIP-951, so it need not; in a cluster, also
//! NOT_LEADER_OR_FOLLOWER, naming the leader this broker was assigned).
//!
//! A follower's Fetch (`replica_id`, in `replica_state` from v15) reads up
//! to the log end and records the follower's position on the leader (see
//! `replica::cluster`); a consumer's reads up to the high watermark.
//!
//! From v12 a fetcher may say which epoch it last fetched in (`last_fetched_epoch`, a
//! follower's; consumers send -1): if that epoch ends below the fetch
//! offset here, or is not known here, the answer is the diverging epoch
//! and its end offset instead of records, as Kafka's
//! `Partition.fetchRecords` answers, so the fetcher truncates its log.

use std::sync::Arc;

use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::AbortedTransaction;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId};

use super::metadata::NODE_ID;

use crate::auth::acl::{Operation, ResourceType::Topic};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::replica::lso::{Stable, READ_COMMITTED};
use crate::replica::{Looked, ReadResult};
use crate::Shared;

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: FetchRequest,
    v: i16,
) -> FetchResponse {
    let max_bytes = (req.max_bytes.max(0) as usize).min(shared.config.fetch_max_bytes);
    // A follower names itself (its broker id; -1 for a consumer): v15 moved
    // it into `replica_state` (KIP-903).
    let replica = if v >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
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
    // ACLs (Kafka's checks): a follower's fetch needs CLUSTER_ACTION on
    // the cluster, a consumer's READ on each topic.
    let follower_ok = replica < 0 || session.authorized_cluster(shared, Operation::ClusterAction);
    let denied: Vec<bool> = names
        .iter()
        .map(|n| match n {
            Some(n) => {
                !follower_ok
                    || (replica < 0 && !session.authorized(shared, Operation::Read, Topic, n))
            }
            None => false,
        })
        .collect();
    shared
        .replicas
        .fetch(req.max_wait_ms, req.min_bytes, |looked| {
            let names = (&names[..], &denied[..]);
            gather(shared, session, looked, &req, v, names, max_bytes, replica)
        })
        .await
}

/// One pass over the requested partitions: (response, bytes, any error);
/// `looked` gets each partition read, for the long poll to wait on.
#[allow(clippy::too_many_arguments)]
fn gather(
    shared: &Shared,
    session: &mut Session,
    looked: &mut Looked,
    req: &FetchRequest,
    v: i16,
    (names, denied): (&[Option<String>], &[bool]),
    max_bytes: usize,
    replica: i32,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    // A partition answered FENCED_LEADER_EPOCH (v16+): the response names
    // the leader's endpoint.
    let mut fenced = false;
    // Cluster mode, v16+: the leaders named in answers, with their
    // listeners (KIP-951's node endpoints).
    let mut leaders: Vec<(i32, std::net::SocketAddr)> = Vec::new();
    // True until a partition returns records: only the response's first
    // batch may exceed the limits.
    let mut min_one = true;
    for ((t, name), denied) in req.topics.iter().zip(names).zip(denied) {
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        tr.topic_id = t.topic_id;
        if *denied {
            for p in &t.partitions {
                let mut pd = PartitionData::default();
                pd.partition_index = p.partition;
                pd.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                pd.high_watermark = -1;
                pd.last_stable_offset = -1;
                pd.log_start_offset = -1;
                tr.partitions.push(pd);
            }
            errors = true;
            resp.responses.push(tr);
            continue;
        }
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
                    replica,
                ),
                Ok(None) => ReadResult::error(unknown),
                Err(e) => ReadResult::error(kafka_code(e)),
            };
            let mut read = read;
            let stable = match &topic {
                Ok(Some(topic)) if req.isolation_level == READ_COMMITTED => {
                    let (offset, partition) = (p.fetch_offset, p.partition);
                    let cursors = &mut session.cursors;
                    shared
                        .replicas
                        .read_committed(cursors, topic, name, partition, offset, &mut read)
                }
                _ => None,
            };
            if read.error != code::NONE {
                pd.error_code = read.error;
                errors = true;
                let moved = read.error == code::FENCED_LEADER_EPOCH
                    || read.error == code::NOT_LEADER_OR_FOLLOWER;
                if moved && v >= 16 && shared.replicas.is_cluster() {
                    // KIP-951 in a cluster: the leader this broker knows.
                    if let Some((leader, epoch, addr)) =
                        shared.replicas.current_leader(name, p.partition)
                    {
                        pd.current_leader.leader_id = BrokerId(leader);
                        pd.current_leader.leader_epoch = epoch;
                        if let Some(a) = addr.filter(|_| !leaders.iter().any(|(l, _)| *l == leader))
                        {
                            leaders.push((leader, a));
                        }
                    }
                } else if read.error == code::FENCED_LEADER_EPOCH && v >= 16 {
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
                    pd.last_stable_offset = last_stable(shared, name, p.partition, end, &stable);
                    pd.log_start_offset = start;
                }
                // Kafka's answer for a partition it cannot read
                // (`FetchResponse.INVALID_HIGH_WATERMARK`).
                None => pd.high_watermark = -1,
            }
            if let Some(st) = stable {
                pd.aborted_transactions = Some(aborted(st));
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
    for (leader, addr) in leaders {
        let mut n = NodeEndpoint::default();
        n.node_id = BrokerId(leader);
        n.host = super::s(&addr.ip().to_string());
        n.port = i32::from(addr.port());
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
        // As the read's out-of-range answer: the log start, and the log
        // end in the high watermark's field (a follower starts again
        // from them; only followers send a last fetched epoch).
        pd.log_start_offset = epochs.log_start_offset;
        pd.high_watermark = epochs.log_end_offset;
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

/// The LSO a partition reports: a read_committed read's, else the one the
/// broker knows without loading producer state.
fn last_stable(
    shared: &Shared,
    name: &str,
    partition: i32,
    hw: i64,
    stable: &Option<Stable>,
) -> i64 {
    match stable {
        Some(st) => st.last_stable_offset,
        None => shared.replicas.peek_last_stable_offset(name, partition, hw),
    }
}

fn aborted(st: Stable) -> Vec<AbortedTransaction> {
    st.aborted
        .into_iter()
        .map(|a| {
            let mut t = AbortedTransaction::default();
            t.producer_id = ProducerId(a.producer_id);
            t.first_offset = a.first_offset;
            t
        })
        .collect()
}
