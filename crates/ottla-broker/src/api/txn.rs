//! The transaction APIs (KIP-98, KIP-447): AddPartitionsToTxn (v0-3, and
//! v4's batched form with `verify_only`), AddOffsetsToTxn, TxnOffsetCommit,
//! EndTxn, DescribeTransactions and ListTransactions, through the
//! transaction coordinator (`coordinator::txn`). InitProducerId is
//! `producer_id`'s.
//!
//! WriteTxnMarkers (v1) is the brokers' own: the transaction coordinator
//! of a cluster sends each partition's marker to its leader with it.
//!
//! In a cluster, only the coordinator (the leader of `__transaction_state`)
//! answers the transaction APIs; every other broker answers
//! NOT_COORDINATOR (`coordinator::txn_placement`). TxnOffsetCommit goes to
//! the group coordinator, as OffsetCommit does.
//!
//! Versions stop before KIP-890 part 2: EndTxn v5 (the epoch bumped on
//! every end, returned in the answer) and TRANSACTION_ABORTABLE (AddPartitionsToTxn
//! v5, AddOffsetsToTxn v4, TxnOffsetCommit v5) are not advertised. A fenced
//! producer gets PRODUCER_FENCED from the versions that know it (v2+ of
//! AddPartitionsToTxn, AddOffsetsToTxn and EndTxn) and
//! INVALID_PRODUCER_EPOCH below, as Kafka answers.

use std::sync::Arc;

use crate::replica::markers::TxnMarker;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use ottla_record::batch::ControlType;

use super::{blocking, s, topic_name};
use crate::auth::acl::{Operation, ResourceType};
use crate::coordinator::group::MemberRef;
use crate::coordinator::placement::{group_check, replicated, with_leadership};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::offsets::{check_metadata, OffsetEntry};
use ottla_storage::txn_state::TxnState as State;

/// PRODUCER_FENCED as a client of version `v` of an API that learnt it at
/// `since` understands it.
fn fenced_for(c: i16, v: i16, since: i16) -> i16 {
    if c == code::PRODUCER_FENCED && v < since {
        code::INVALID_PRODUCER_EPOCH
    } else {
        c
    }
}

/// How many partitions `topic` has: in a cluster as the metadata image
/// says (the coordinator need not hold a replica of it), else as the
/// store does.
fn partition_count(shared: &Shared, topic: &str) -> Option<u32> {
    match &shared.cluster {
        Some(node) => {
            let image = node.image();
            let id = image.topic_ids.get(topic)?;
            image
                .topics
                .get(id)
                .map(|t| u32::try_from(t.partitions.len()).unwrap_or(0))
        }
        None => shared
            .store
            .topic(topic)
            .ok()
            .flatten()
            .map(|t| t.partitions),
    }
}

/// The partitions of `topics` that exist, and the per-partition answer for
/// those that do not (UNKNOWN_TOPIC_OR_PARTITION; the others then get
/// OPERATION_NOT_ATTEMPTED, as from Kafka).
fn known(shared: &Shared, topics: &[AddPartitionsToTxnTopic]) -> (Vec<(String, u32)>, bool) {
    let mut out = Vec::new();
    let mut missing = false;
    for t in topics {
        let count = partition_count(shared, t.name.as_str());
        for p in &t.partitions {
            match (count, u32::try_from(*p)) {
                (Some(n), Ok(p)) if p < n => out.push((t.name.as_str().to_string(), p)),
                _ => missing = true,
            }
        }
    }
    (out, missing)
}

fn topic_results(
    shared: &Shared,
    topics: &[AddPartitionsToTxnTopic],
    missing: bool,
    error: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    topics
        .iter()
        .map(|t| {
            let count = partition_count(shared, t.name.as_str());
            let mut tr = AddPartitionsToTxnTopicResult::default();
            tr.name = t.name.clone();
            tr.results_by_partition = t
                .partitions
                .iter()
                .map(|p| {
                    let exists = count.is_some_and(|n| u32::try_from(*p).is_ok_and(|p| p < n));
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = *p;
                    pr.partition_error_code = match (missing, exists) {
                        (true, false) => code::UNKNOWN_TOPIC_OR_PARTITION,
                        (true, true) => code::OPERATION_NOT_ATTEMPTED,
                        _ => error,
                    };
                    pr
                })
                .collect();
            tr
        })
        .collect()
}

pub async fn add_partitions(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: AddPartitionsToTxnRequest,
    v: i16,
) -> AddPartitionsToTxnResponse {
    let mut r = AddPartitionsToTxnResponse::default();
    if v <= 3 {
        // ACLs (Kafka's): WRITE on the transactional id, then on each topic.
        let txn_id = req.v3_and_below_transactional_id.as_str();
        if let Some(results) = add_refused(shared, _s, txn_id, &req.v3_and_below_topics) {
            r.results_by_topic_v3_and_below = results;
            return r;
        }
        let (parts, missing) = blocking(|| known(shared, &req.v3_and_below_topics));
        let not_here = shared.txns.check();
        let error = if not_here != code::NONE {
            not_here
        } else if missing {
            code::NONE
        } else {
            let e = blocking(|| {
                shared.txns.add_partitions(
                    &shared.replicas,
                    req.v3_and_below_transactional_id.as_str(),
                    req.v3_and_below_producer_id.0,
                    req.v3_and_below_producer_epoch,
                    &parts,
                )
            });
            fenced_for(e.err().unwrap_or(code::NONE), v, 2)
        };
        r.results_by_topic_v3_and_below = blocking(|| {
            topic_results(
                shared,
                &req.v3_and_below_topics,
                missing && not_here == code::NONE,
                error,
            )
        });
        return r;
    }
    // v4 is the brokers' batched form: CLUSTER_ACTION on the cluster.
    if !_s.authorized_cluster(shared, Operation::ClusterAction) {
        r.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return r;
    }
    // v4: several transactions, each added or (verify_only) checked.
    for t in &req.transactions {
        let mut tr = AddPartitionsToTxnResult::default();
        tr.transactional_id = t.transactional_id.clone();
        let id = t.transactional_id.as_str();
        if let Some(results) = add_refused(shared, _s, id, &t.topics) {
            tr.topic_results = results;
            r.results_by_transaction.push(tr);
            continue;
        }
        let (parts, missing) = blocking(|| known(shared, &t.topics));
        if t.verify_only {
            tr.topic_results = t
                .topics
                .iter()
                .map(|topic| {
                    let mut res = AddPartitionsToTxnTopicResult::default();
                    res.name = topic.name.clone();
                    res.results_by_partition = topic
                        .partitions
                        .iter()
                        .map(|p| {
                            let mut pr = AddPartitionsToTxnPartitionResult::default();
                            pr.partition_index = *p;
                            let part = (
                                topic.name.as_str().to_string(),
                                u32::try_from(*p).unwrap_or(u32::MAX),
                            );
                            pr.partition_error_code = shared
                                .txns
                                .verify(id, t.producer_id.0, t.producer_epoch, &part)
                                .err()
                                .unwrap_or(code::NONE);
                            pr
                        })
                        .collect();
                    res
                })
                .collect();
        } else {
            let error = if missing {
                code::NONE
            } else {
                blocking(|| {
                    shared.txns.add_partitions(
                        &shared.replicas,
                        id,
                        t.producer_id.0,
                        t.producer_epoch,
                        &parts,
                    )
                })
                .err()
                .unwrap_or(code::NONE)
            };
            tr.topic_results = blocking(|| topic_results(shared, &t.topics, missing, error));
        }
        r.results_by_transaction.push(tr);
    }
    r
}

/// AddPartitionsToTxn's ACL check: `None` if the principal may WRITE the
/// transactional id and every topic; else every partition's answer
/// (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, or TOPIC_AUTHORIZATION_FAILED
/// for the refused topics and OPERATION_NOT_ATTEMPTED for the others).
fn add_refused(
    shared: &Shared,
    session: &Session,
    txn_id: &str,
    topics: &[AddPartitionsToTxnTopic],
) -> Option<Vec<AddPartitionsToTxnTopicResult>> {
    let txn_ok = session.authorized(
        shared,
        Operation::Write,
        ResourceType::TransactionalId,
        txn_id,
    );
    let topic_ok: Vec<bool> = topics
        .iter()
        .map(|t| {
            session.authorized(
                shared,
                Operation::Write,
                ResourceType::Topic,
                t.name.as_str(),
            )
        })
        .collect();
    if txn_ok && topic_ok.iter().all(|ok| *ok) {
        return None;
    }
    Some(
        topics
            .iter()
            .zip(topic_ok)
            .map(|(t, ok)| {
                let c = match (txn_ok, ok) {
                    (false, _) => code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    (true, false) => code::TOPIC_AUTHORIZATION_FAILED,
                    (true, true) => code::OPERATION_NOT_ATTEMPTED,
                };
                let mut tr = AddPartitionsToTxnTopicResult::default();
                tr.name = t.name.clone();
                tr.results_by_partition = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut pr = AddPartitionsToTxnPartitionResult::default();
                        pr.partition_index = *p;
                        pr.partition_error_code = c;
                        pr
                    })
                    .collect();
                tr
            })
            .collect(),
    )
}

pub async fn add_offsets(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: AddOffsetsToTxnRequest,
    v: i16,
) -> AddOffsetsToTxnResponse {
    let mut r = AddOffsetsToTxnResponse::default();
    let group = req.group_id.as_str();
    r.error_code = if !_s.authorized(
        shared,
        Operation::Write,
        ResourceType::TransactionalId,
        req.transactional_id.as_str(),
    ) {
        code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !_s.authorized(shared, Operation::Read, ResourceType::Group, group) {
        code::GROUP_AUTHORIZATION_FAILED
    } else if group.is_empty() {
        code::INVALID_GROUP_ID
    } else {
        let e = blocking(|| {
            let part = shared.txns.offsets_partition(group)?;
            shared.txns.add_partitions(
                &shared.replicas,
                req.transactional_id.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                &[part],
            )
        });
        fenced_for(e.err().unwrap_or(code::NONE), v, 2)
    };
    r
}

pub async fn txn_offset_commit(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: TxnOffsetCommitRequest,
    v: i16,
) -> TxnOffsetCommitResponse {
    let group = req.group_id.as_str().to_string();
    // The producer's transaction first, then (v3+, KIP-447) the member's
    // generation, as Kafka's group coordinator checks a consumer's commit.
    let mut error = blocking(|| {
        shared.txns.check_offset_commit(
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            &group,
        )
    })
    .err()
    .unwrap_or(code::NONE);
    if error == code::NONE && v >= 3 && shared.groups.is_active(&group) {
        error = shared.groups.check_commit(
            &group,
            req.generation_id,
            MemberRef {
                member_id: req.member_id.as_str(),
                instance_id: req.group_instance_id.as_deref(),
            },
        );
    }
    if group.is_empty() {
        error = code::INVALID_GROUP_ID;
    }
    // In a cluster, only the group coordinator takes the commit.
    let not_here = group_check(shared);
    if not_here != code::NONE && error != code::INVALID_GROUP_ID {
        error = not_here;
    }
    // ACLs (Kafka's): WRITE on the transactional id, READ on the group,
    // READ on each topic.
    if !_s.authorized(
        shared,
        Operation::Write,
        ResourceType::TransactionalId,
        req.transactional_id.as_str(),
    ) {
        error = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
    } else if !_s.authorized(shared, Operation::Read, ResourceType::Group, &group) {
        error = code::GROUP_AUTHORIZATION_FAILED;
    }
    let mut entries: Vec<OffsetEntry> = Vec::new();
    let mut per: Vec<(usize, i32, i16)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            let c = if error != code::NONE {
                error
            } else if !_s.authorized(
                shared,
                Operation::Read,
                ResourceType::Topic,
                t.name.as_str(),
            ) {
                code::TOPIC_AUTHORIZATION_FAILED
            } else if p.partition_index < 0 {
                code::UNKNOWN_TOPIC_OR_PARTITION
            } else if let Err(e) = check_metadata(&metadata) {
                kafka_code(&e)
            } else {
                entries.push((
                    t.name.as_str().to_string(),
                    p.partition_index as u32,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    metadata,
                ));
                code::NONE
            };
            per.push((ti, p.partition_index, c));
        }
    }
    let written = with_leadership(shared, || {
        blocking(|| {
            shared.store.offsets().and_then(|o| {
                o.commit_transactional(
                    &group,
                    &entries,
                    req.producer_id.0,
                    req.producer_epoch,
                    shared.config.durability,
                )
            })
        })
    });
    let written = match written {
        Err(not_coordinator) => Some(not_coordinator),
        Ok(Err(e)) => Some(kafka_code(&e)),
        Ok(Ok(())) if entries.is_empty() => None,
        // On every in-sync replica before the answer, in a cluster.
        Ok(Ok(())) => Some(replicated(shared).await).filter(|c| *c != code::NONE),
    };
    crate::errors::debug(&format!(
        "TxnOffsetCommit {group} gen {} member {:?} -> error {error}, written {written:?}",
        req.generation_id,
        req.member_id.as_str()
    ));
    let mut r = TxnOffsetCommitResponse::default();
    for (ti, t) in req.topics.iter().enumerate() {
        let mut tr = TxnOffsetCommitResponseTopic::default();
        tr.name = t.name.clone();
        for (_, p, c) in per.iter().filter(|(i, _, _)| *i == ti) {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = *p;
            pr.error_code = match (*c, written) {
                (code::NONE, Some(w)) => w,
                (c, _) => c,
            };
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}

pub async fn end_txn(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: EndTxnRequest,
    v: i16,
) -> EndTxnResponse {
    let mut r = EndTxnResponse::default();
    let id = req.transactional_id.as_str();
    if !_s.authorized(shared, Operation::Write, ResourceType::TransactionalId, id) {
        r.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        return r;
    }
    let e = blocking(|| {
        shared.txns.end_txn(
            &shared.replicas,
            req.transactional_id.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
    });
    r.error_code = fenced_for(e.err().unwrap_or(code::NONE), v, 2);
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    r
}

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeTransactionsRequest,
    _v: i16,
) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    // In a cluster, only the coordinator knows the transactions.
    let not_here = shared.txns.check();
    for id in req.transactional_ids {
        let mut ts = TransactionState::default();
        // ACLs: DESCRIBE on the transactional id; partitions of topics the
        // principal may not DESCRIBE are left out (Kafka's answer).
        let allowed = _s.authorized(
            shared,
            Operation::Describe,
            ResourceType::TransactionalId,
            &id,
        );
        match shared
            .txns
            .describe(id.as_str())
            .filter(|_| allowed && not_here == code::NONE)
        {
            Some(mut m) => {
                m.partitions.retain(|(t, _)| {
                    _s.authorized(shared, Operation::Describe, ResourceType::Topic, t)
                });
                ts.transaction_state = s(m.state.name());
                ts.transaction_timeout_ms = m.timeout_ms;
                ts.transaction_start_time_ms = m.start_ms;
                ts.producer_id = ProducerId(m.producer_id);
                ts.producer_epoch = m.producer_epoch;
                for (topic, p) in &m.partitions {
                    match ts.topics.last_mut() {
                        Some(t) if t.topic.as_str() == topic.as_str() => {
                            t.partitions.push(*p as i32)
                        }
                        _ => {
                            let mut t = TopicData::default();
                            t.topic = topic_name(topic);
                            t.partitions.push(*p as i32);
                            ts.topics.push(t);
                        }
                    }
                }
            }
            None => {
                ts.error_code = if !allowed {
                    code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                } else if not_here != code::NONE {
                    not_here
                } else {
                    code::TRANSACTIONAL_ID_NOT_FOUND
                };
                ts.producer_id = ProducerId(-1);
                ts.producer_epoch = -1;
                ts.transaction_start_time_ms = -1;
                ts.transaction_state = s("");
            }
        }
        ts.transactional_id = id;
        r.transaction_states.push(ts);
    }
    r
}

pub async fn list(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ListTransactionsRequest,
    v: i16,
) -> ListTransactionsResponse {
    let mut r = ListTransactionsResponse::default();
    const STATES: [State; 8] = [
        State::Empty,
        State::Ongoing,
        State::PrepareCommit,
        State::PrepareAbort,
        State::CompleteCommit,
        State::CompleteAbort,
        State::Dead,
        State::PrepareEpochFence,
    ];
    let mut states = Vec::new();
    for f in &req.state_filters {
        match STATES.iter().find(|st| st.name() == f.as_str()) {
            Some(st) => states.push(*st),
            None => r.unknown_state_filters.push(f.clone()),
        }
    }
    let now = ottla_storage::log::now_ms();
    let mut all = shared.txns.list();
    all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    for m in all {
        if !states.is_empty() && !states.contains(&m.state) {
            continue;
        }
        // ACLs: only the transactional ids the principal may DESCRIBE.
        if !_s.authorized(
            shared,
            Operation::Describe,
            ResourceType::TransactionalId,
            &m.transactional_id,
        ) {
            continue;
        }
        if !req.producer_id_filters.is_empty()
            && !req.producer_id_filters.contains(&ProducerId(m.producer_id))
        {
            continue;
        }
        // v1 (KIP-994): only transactions running longer than this (ms).
        if v >= 1
            && req.duration_filter >= 0
            && (m.state != State::Ongoing || now - m.start_ms < req.duration_filter)
        {
            continue;
        }
        let mut t = ListedState::default();
        t.transactional_id = TransactionalId(s(&m.transactional_id));
        t.producer_id = ProducerId(m.producer_id);
        t.transaction_state = s(m.state.name());
        r.transaction_states.push(t);
    }
    r
}

/// WriteTxnMarkers (API 27): a transaction coordinator (another broker)
/// asks this one, the leader of each partition named, to write the
/// transaction's marker there. Only for CLUSTER_ACTION principals (Kafka's
/// rule: brokers). Each partition is answered once its marker is on every
/// in-sync replica: NOT_LEADER_OR_FOLLOWER when this broker does not lead
/// it (the coordinator looks the leader up again).
pub async fn write_txn_markers(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: WriteTxnMarkersRequest,
    _v: i16,
) -> WriteTxnMarkersResponse {
    let allowed = _s.authorized_cluster(shared, Operation::ClusterAction);
    let mut r = WriteTxnMarkersResponse::default();
    for m in &req.markers {
        let kind = if m.transaction_result {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let mut mr = WritableTxnMarkerResult::default();
        mr.producer_id = m.producer_id;
        let mut waits = Vec::new();
        for t in &m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name.clone();
            for p in &t.partition_indexes {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = *p;
                pr.error_code = if !allowed {
                    code::CLUSTER_AUTHORIZATION_FAILED
                } else {
                    match u32::try_from(*p) {
                        Err(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
                        Ok(index) => match blocking(|| {
                            let marker = TxnMarker {
                                producer_id: m.producer_id.0,
                                epoch: m.producer_epoch,
                                kind,
                                coordinator_epoch: m.coordinator_epoch,
                            };
                            shared
                                .replicas
                                .write_marker(t.name.as_str(), index, marker, None)
                        }) {
                            Ok(Some(end)) => {
                                waits.push((
                                    tr.partitions.len(),
                                    t.name.as_str().to_string(),
                                    *p,
                                    end,
                                ));
                                code::NONE
                            }
                            Ok(None) => code::NONE,
                            Err(c) => c,
                        },
                    }
                };
                tr.partitions.push(pr);
            }
            // Answered once replicated (Kafka appends markers with acks=-1).
            let parts: Vec<(usize, String, i32, i64)> = std::mem::take(&mut waits);
            let waited = shared
                .replicas
                .wait_for_replication(
                    parts
                        .iter()
                        .map(|(_, t, p, e)| (t.clone(), *p, *e))
                        .collect(),
                    crate::replica::markers::MARKER_REPLICATION_TIMEOUT,
                )
                .await;
            for ((i, _, _, _), c) in parts.iter().zip(waited) {
                if let Some(pr) = tr.partitions.get_mut(*i) {
                    if c != code::NOT_ENOUGH_REPLICAS_AFTER_APPEND {
                        pr.error_code = c;
                    }
                }
            }
            mr.topics.push(tr);
        }
        r.markers.push(mr);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_is_invalid_epoch_for_old_versions() {
        assert_eq!(
            fenced_for(code::PRODUCER_FENCED, 1, 2),
            code::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            fenced_for(code::PRODUCER_FENCED, 2, 2),
            code::PRODUCER_FENCED
        );
        assert_eq!(
            fenced_for(code::INVALID_TXN_STATE, 0, 2),
            code::INVALID_TXN_STATE
        );
    }
}
