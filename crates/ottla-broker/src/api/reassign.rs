//! Cluster operations over Kafka's protocol, as a KRaft broker serves them
//! by forwarding to the active controller: AlterPartitionReassignments (45)
//! and ListPartitionReassignments (46) of KIP-455, ElectLeaders (43) of
//! KIP-460, and UnregisterBroker (64).
//!
//! A broker alone (no cluster) leads every partition itself: nothing can
//! move, so it answers as a one-broker Kafka cluster would (its own id is
//! the only valid replica set, no election is ever needed, no reassignment
//! is ever in progress).

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};

use super::metadata::NODE_ID;
use super::s;
use crate::cluster::codes;
use crate::dispatch::Session;
use crate::errors::code;
use crate::{blocking, Shared};

const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
const UNKNOWN_PARTITION: &str = "This server does not host this topic-partition.";

/// The partitions of a topic, as this broker knows them (the image in a
/// cluster, the store alone): `None` for an unknown topic.
fn partition_count(shared: &Arc<Shared>, topic: &str) -> Option<i32> {
    match &shared.cluster {
        Some(node) => node
            .image()
            .topic_by_name(topic)
            .map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX)),
        None => blocking(|| shared.store.topic(topic))
            .ok()
            .flatten()
            .map(|t| i32::try_from(t.partitions).unwrap_or(i32::MAX)),
    }
}

pub async fn alter_reassignments(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: AlterPartitionReassignmentsRequest,
    v: i16,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    if v >= 1 {
        resp.allow_replication_factor_change = req.allow_replication_factor_change;
    }
    // Every partition asked, in order, and the ones sent to the controller.
    let mut answers: Vec<(TopicName, i32, i16, Option<String>)> = Vec::new();
    let mut asked: Vec<(String, i32, Option<Vec<i32>>)> = Vec::new();
    let mut slots: Vec<usize> = Vec::new();
    let image = shared.cluster.as_ref().map(|n| n.image());
    for t in req.topics {
        for p in t.partitions {
            let slot = answers.len();
            answers.push((t.name.clone(), p.partition_index, 0, None));
            let target: Option<Vec<i32>> = p.replicas.map(|r| r.into_iter().map(|b| b.0).collect());
            let name = t.name.as_str().to_string();
            let Some(image) = &image else {
                // One broker: its own id is the only replica set.
                let known = partition_count(shared, &name)
                    .is_some_and(|n| (0..n).contains(&p.partition_index));
                let a = &mut answers[slot];
                if !known {
                    (a.2, a.3) = (
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some(UNKNOWN_PARTITION.into()),
                    );
                } else {
                    match target {
                        None => {
                            (a.2, a.3) = (
                                NO_REASSIGNMENT_IN_PROGRESS,
                                Some("No reassignment in progress".into()),
                            )
                        }
                        Some(r) if r == [NODE_ID] => {}
                        Some(_) => {
                            (a.2, a.3) = (
                                code::INVALID_REPLICA_ASSIGNMENT,
                                Some(format!("this broker alone is node {NODE_ID}")),
                            )
                        }
                    }
                }
                continue;
            };
            // KIP-860: a change of the replication factor only when allowed.
            if let (Some(r), false) = (&target, v < 1 || req.allow_replication_factor_change) {
                let current = image
                    .topic_by_name(&name)
                    .and_then(|tp| tp.partitions.get(&p.partition_index))
                    .map(|ps| ps.original_replicas().len());
                if current.is_some_and(|n| n != r.len()) {
                    answers[slot].2 = code::INVALID_REPLICATION_FACTOR;
                    answers[slot].3 = Some(
                        "The replication factor is changed from the current one, which is \
                         not allowed (allow_replication_factor_change is false)"
                            .into(),
                    );
                    continue;
                }
            }
            asked.push((name, p.partition_index, target));
            slots.push(slot);
        }
    }
    if let Some(node) = &shared.cluster {
        if !asked.is_empty() {
            match node.reassign(asked).await {
                Ok(results) => {
                    for (slot, (c, m)) in slots.into_iter().zip(results) {
                        answers[slot].2 = c;
                        answers[slot].3 = m;
                    }
                }
                Err((c, m)) => {
                    resp.error_code = c;
                    resp.error_message = Some(s(&m));
                }
            }
        }
    }
    for (topic, partition, c, m) in answers {
        let mut pr = ReassignablePartitionResponse::default();
        pr.partition_index = partition;
        pr.error_code = c;
        pr.error_message = m.as_deref().map(s);
        match resp.responses.iter_mut().find(|r| r.name == topic) {
            Some(tr) => tr.partitions.push(pr),
            None => {
                let mut tr = ReassignableTopicResponse::default();
                tr.name = topic;
                tr.partitions.push(pr);
                resp.responses.push(tr);
            }
        }
    }
    resp
}

pub async fn list_reassignments(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ListPartitionReassignmentsRequest,
    _v: i16,
) -> ListPartitionReassignmentsResponse {
    let mut resp = ListPartitionReassignmentsResponse::default();
    let Some(node) = &shared.cluster else {
        return resp; // A broker alone never reassigns.
    };
    // Answered from this broker's image (KRaft forwards to the active
    // controller; a broker's image is at most a heartbeat behind it).
    let image = node.image();
    let wanted = |topic: &str, partition: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.name.as_str() == topic && t.partition_indexes.contains(&partition)),
    };
    for (topic, partition, p) in ottla_meta::decide::reassignments(&image) {
        if !wanted(&topic, partition) {
            continue;
        }
        let mut op = OngoingPartitionReassignment::default();
        op.partition_index = partition;
        op.replicas = p.replicas.iter().map(|b| BrokerId(*b)).collect();
        op.adding_replicas = p.adding_replicas.iter().map(|b| BrokerId(*b)).collect();
        op.removing_replicas = p.removing_replicas.iter().map(|b| BrokerId(*b)).collect();
        match resp.topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(op),
            None => {
                let mut t = OngoingTopicReassignment::default();
                t.name = TopicName(s(&topic));
                t.partitions.push(op);
                resp.topics.push(t);
            }
        }
    }
    resp
}

pub async fn elect_leaders(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ElectLeadersRequest,
    v: i16,
) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    // v0 has no election type: preferred.
    let unclean = v >= 1 && req.election_type == 1;
    if v >= 1 && !matches!(req.election_type, 0 | 1) {
        resp.error_code = code::INVALID_REQUEST;
        return resp;
    }
    // `None`: every partition, answered without the ones needing none.
    let all = req.topic_partitions.is_none();
    let partitions: Vec<(String, i32)> = match req.topic_partitions {
        Some(tps) => tps
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.as_str().to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect(),
        None => match &shared.cluster {
            Some(node) => {
                let image = node.image();
                image
                    .topic_ids
                    .iter()
                    .filter_map(|(name, id)| Some((name, image.topics.get(id)?)))
                    .flat_map(|(name, t)| t.partitions.keys().map(move |p| (name.clone(), *p)))
                    .collect()
            }
            None => Vec::new(),
        },
    };
    let results: Vec<(i16, Option<String>)> = match &shared.cluster {
        Some(node) => match node.elect_leaders(unclean, partitions.clone()).await {
            Ok(r) => r,
            Err((c, _)) => {
                resp.error_code = c;
                return resp;
            }
        },
        None => partitions
            .iter()
            .map(|(t, p)| {
                if partition_count(shared, t).is_some_and(|n| (0..n).contains(p)) {
                    (
                        ELECTION_NOT_NEEDED,
                        Some("Leader election not needed for topic partition.".into()),
                    )
                } else {
                    (
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some(UNKNOWN_PARTITION.into()),
                    )
                }
            })
            .collect(),
    };
    for ((topic, partition), (c, m)) in partitions.into_iter().zip(results) {
        if all && c == ELECTION_NOT_NEEDED {
            continue;
        }
        let mut pr = PartitionResult::default();
        pr.partition_id = partition;
        pr.error_code = c;
        pr.error_message = m.as_deref().map(s);
        match resp
            .replica_election_results
            .iter_mut()
            .find(|r| r.topic.as_str() == topic)
        {
            Some(r) => r.partition_result.push(pr),
            None => {
                let mut r = ReplicaElectionResult::default();
                r.topic = TopicName(s(&topic));
                r.partition_result.push(pr);
                resp.replica_election_results.push(r);
            }
        }
    }
    resp
}

pub async fn unregister_broker(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: UnregisterBrokerRequest,
    _v: i16,
) -> UnregisterBrokerResponse {
    let mut resp = UnregisterBrokerResponse::default();
    let outcome = match &shared.cluster {
        Some(node) => node.unregister_broker(req.broker_id.0).await,
        None => Err((
            codes::BROKER_ID_NOT_REGISTERED,
            format!(
                "this broker is not part of a cluster (broker {} cannot be unregistered)",
                req.broker_id.0
            ),
        )),
    };
    if let Err((c, m)) = outcome {
        resp.error_code = c;
        resp.error_message = Some(s(&m));
    }
    resp
}
