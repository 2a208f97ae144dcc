//! Produce: each partition's batches handed to the replica manager as the
//! client sent them.
//!
//! A produced batch travels: socket -> frame -> this handler, which finds
//! the topic (creating it if allowed), refuses what no partition may take
//! (internal topics, acks=all beyond `min.insync.replicas`, a transactional
//! batch outside its producer's open transaction),
//! and passes each partition's `records`, still a slice of the request
//! frame, to `ReplicaManager::append`.
//!
//! Versions: v10-11 add KIP-951's current leader and node endpoints, which
//! Kafka fills only for NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH, errors
//! a sole broker never answers; v11-12 change only what a transactional
//! producer may do (KIP-890): its partitions are verified against the
//! transaction coordinator whatever the version (`coordinator::txn_verify`).
//! From v13 on, topics are named by id (KIP-516): an id no topic has answers
//! UNKNOWN_TOPIC_ID for each of its partitions (a topic is never created by
//! id), and the response names topics by id too.

use std::sync::Arc;

use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{blocking, s, topic_name};
use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::{code, Refusal};
use crate::Shared;
use ottla_record::batch::BatchHeader;
use ottla_storage::store::Topic;
use ottla_storage::topic::is_internal;

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: ProduceRequest,
    v: i16,
) -> Option<ProduceResponse> {
    // Taken apart so that nothing but a partition's `records` still points
    // into the request frame when that partition is written (see
    // `replica::append`'s `owned`).
    let ProduceRequest {
        acks,
        timeout_ms,
        transactional_id,
        topic_data,
        ..
    } = req;
    // acks=all in cluster mode: (topic index, partition index, name,
    // partition, end offset) of each append, answered once replicated.
    let mut waits: Vec<(usize, usize, String, i32, i64)> = Vec::new();
    let cluster = shared.replicas.is_cluster();
    let transactional_id = transactional_id.map(|id| id.to_string());
    // ACLs: a transactional producer needs WRITE on its transactional id
    // (else every partition is refused), every producer WRITE on each topic.
    let txn_denied = transactional_id.as_ref().is_some_and(|id| {
        !session.authorized(shared, Operation::Write, ResourceType::TransactionalId, id)
    });
    let mut resp = ProduceResponse::default();
    for t in topic_data {
        let TopicProduceData {
            name: wire_name,
            topic_id,
            partition_data,
            ..
        } = t;
        let mut tr = TopicProduceResponse::default();
        // The topic's name: the request's before v13, found by id after
        // (None: no topic has the id).
        let name = if v >= 13 {
            tr.topic_id = topic_id;
            super::metadata::topic_by_id(shared, &mut session.topic_names, topic_id)
        } else {
            tr.name = topic_name(wire_name.as_str());
            Some(wire_name.as_str().to_string())
        };
        drop(wire_name);
        let topic = match &name {
            Some(name) => {
                // Internal topics are never auto-created here: the engine
                // creates __consumer_offsets with its own (compacted) config.
                // In a cluster, topics are created through the controller.
                let auto_create = shared.config.auto_create_topics
                    && !is_internal(name)
                    && !cluster
                    && may_create(shared, session, name);
                // A known topic is a lookup in memory; only creating one
                // touches files.
                match shared.store.topic(name) {
                    Ok(Some(t)) => Ok(Some(t)),
                    _ => blocking(|| {
                        shared.store.topic_or_create(
                            name,
                            auto_create,
                            shared.config.num_partitions,
                        )
                    })
                    .map(Some),
                }
            }
            None => Ok(None),
        };
        let name = name.unwrap_or_default();
        let denied = if txn_denied {
            Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else if !name.is_empty()
            && !session.authorized(shared, Operation::Write, ResourceType::Topic, &name)
        {
            Some(code::TOPIC_AUTHORIZATION_FAILED)
        } else {
            None
        };
        for p in partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            let records = p.records;
            let txn_refusal = match &topic {
                Ok(Some(t)) if denied.is_none() => {
                    verify_txn(
                        shared,
                        transactional_id.as_deref(),
                        records.as_deref(),
                        t,
                        p.index,
                    )
                    .await
                }
                _ => code::NONE,
            };
            let outcome = match (&topic, transactional_id.is_some()) {
                _ if denied.is_some() => Err(denied.unwrap_or_default().into()),
                // __consumer_offsets is written by the engine only.
                _ if is_internal(&name) => Err(code::INVALID_TOPIC_EXCEPTION.into()),
                // A transactional batch: its producer's transaction is open
                // here and has this partition (see `coordinator::txn`).
                (Ok(Some(_)), _) if txn_refusal != code::NONE => Err(txn_refusal.into()),
                (Err(e), _) => Err(Refusal::engine(e)),
                (Ok(None), _) => Err(code::UNKNOWN_TOPIC_ID.into()),
                // acks=all cannot be met while the ISR is smaller than the
                // topic asks: Kafka's check, before the append (a single
                // broker is its partitions' only in-sync replica). Then
                // inline on this worker when the log is open (see `append`).
                (Ok(Some(topic)), _) => {
                    let enough = if acks == -1 {
                        shared.replicas.check_enough_replicas(
                            &name,
                            p.index,
                            topic.config.min_insync_replicas,
                            super::metadata::NODE_ID,
                        )
                    } else {
                        Ok(())
                    };
                    enough.and_then(|()| {
                        shared
                            .replicas
                            .append(&mut session.written, topic, &name, p.index, records)
                    })
                }
            };
            match outcome {
                Ok(a) => {
                    pr.base_offset = a.base_offset;
                    pr.log_start_offset = a.log_start_offset;
                    pr.log_append_time_ms = a.log_append_time;
                    if acks == -1 && cluster {
                        waits.push((
                            resp.responses.len(),
                            tr.partition_responses.len(),
                            name.clone(),
                            p.index,
                            a.end_offset,
                        ));
                    }
                }
                Err(r) => {
                    pr.error_code = r.code;
                    pr.error_message = r.message.map(|m| s(&m));
                    pr.record_errors = r
                        .record_errors
                        .into_iter()
                        .map(|(i, m)| {
                            let mut e = BatchIndexAndErrorMessage::default();
                            e.batch_index = i;
                            e.batch_index_error_message = Some(s(&m));
                            e
                        })
                        .collect();
                    pr.base_offset = -1;
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    if !waits.is_empty() {
        let timeout = std::time::Duration::from_millis(timeout_ms.max(0) as u64);
        let codes = shared
            .replicas
            .wait_for_replication(
                waits
                    .iter()
                    .map(|(_, _, name, p, end)| (name.clone(), *p, *end))
                    .collect(),
                timeout,
            )
            .await;
        for ((t, p, ..), c) in waits.iter().zip(codes) {
            if c != code::NONE {
                if let Some(pr) = resp
                    .responses
                    .get_mut(*t)
                    .and_then(|tr| tr.partition_responses.get_mut(*p))
                {
                    pr.error_code = c;
                    pr.base_offset = -1;
                }
            }
        }
    }
    (acks != 0).then_some(resp)
}

/// Whether the connection may create topic `name` (auto-creation): WRITE
/// on it to begin with, and CREATE on the cluster or on the topic, as
/// Kafka's auto-creation asks.
pub(crate) fn may_create(shared: &Shared, session: &Session, name: &str) -> bool {
    session.authorized(shared, Operation::Write, ResourceType::Topic, name)
        && (session.authorized_cluster(shared, Operation::Create)
            || session.authorized(shared, Operation::Create, ResourceType::Topic, name))
}

/// Produce's check of a transactional batch (KIP-890's verification, see
/// `coordinator::txn_verify`): its producer's transaction is open at the
/// batch's epoch and has this partition. A transactional batch without a
/// transactional id in the request is refused as Kafka refuses it
/// (INVALID_RECORD).
async fn verify_txn(
    shared: &Arc<Shared>,
    transactional_id: Option<&str>,
    records: Option<&[u8]>,
    topic: &Topic,
    partition: i32,
) -> i16 {
    let Some(h) = records.and_then(BatchHeader::parse) else {
        return code::NONE;
    };
    if !h.is_transactional() {
        return code::NONE;
    }
    let Some(id) = transactional_id else {
        return code::INVALID_RECORD;
    };
    let Ok(partition) = u32::try_from(partition) else {
        return code::NONE;
    };
    if partition >= topic.partitions {
        return code::NONE; // refused by the append (UNKNOWN_TOPIC_OR_PARTITION)
    }
    crate::coordinator::txn_verify::verify(
        shared,
        id,
        topic,
        partition,
        h.producer_id,
        h.producer_epoch,
    )
    .await
}
