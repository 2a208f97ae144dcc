//! CreateTopics, DeleteTopics, CreatePartitions: the engine's topic
//! operations, one result per topic. CreateTopics v7+ answers each created
//! topic's id; DeleteTopics v6+ deletes topics named by id too (an id no
//! topic has is UNKNOWN_TOPIC_ID) and answers each topic's id.

use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use uuid::Uuid;

use super::metadata::NODE_ID;
use super::{blocking, s, topic_name};
use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::config::TopicConfig;
use ottla_storage::error::Error;
use ottla_storage::topic::{check_user_creatable, validate_topic_name};

const MAX_PARTITIONS: i32 = 100_000;

pub async fn create(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: CreateTopicsRequest,
    v: i16,
) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.as_str().to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        let partitions = if !t.assignments.is_empty() {
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            shared.config.num_partitions as i32
        } else {
            t.num_partitions
        };
        let config: Vec<(String, String)> = t
            .configs
            .iter()
            .filter_map(|c| {
                c.value
                    .as_ref()
                    .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
            })
            .collect();
        // ACLs: CREATE on the cluster or on the topic (Kafka's check).
        let may_create = _s.authorized_cluster(shared, Operation::Create)
            || _s.authorized(shared, Operation::Create, ResourceType::Topic, &name);
        // The created topic's id (zero for validate_only, as Kafka answers).
        let outcome = blocking(|| -> Result<Uuid, (i16, String)> {
            if !may_create {
                return Err((
                    code::TOPIC_AUTHORIZATION_FAILED,
                    "Authorization failed.".to_string(),
                ));
            }
            let engine = |e: Error| (kafka_code(&e), e.to_string());
            // Kafka's order (`ReplicationControlManager.createTopics`): the
            // name, whether the topic exists (an application creating its
            // topics "if absent" with a replication factor of 3 gets
            // TOPIC_ALREADY_EXISTS, not a placement error), the configs,
            // then the placement.
            check_user_creatable(&name).map_err(engine)?;
            validate_topic_name(&name).map_err(engine)?;
            // In a cluster the controller knows whether it exists.
            if shared.cluster.is_none() && shared.store.topic(&name).map_err(engine)?.is_some() {
                return Err(engine(Error::TopicAlreadyExists(name.clone())));
            }
            // Names exact, refusals in Kafka's words (see `configs`).
            let wire = |e: Error| super::configs::wire_error(&e);
            super::configs::check_names(config.iter().map(|(k, _)| k.as_str())).map_err(wire)?;
            TopicConfig::from_overrides(config.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(wire)?;
            if shared.cluster.is_some() {
                check_cluster_placement(&t)?;
            } else {
                check_placement(&t)?;
            }
            if !(1..=MAX_PARTITIONS).contains(&partitions) {
                return Err(engine(Error::InvalidPartitions(format!(
                    "partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}"
                ))));
            }
            if req.validate_only || shared.cluster.is_some() {
                return Ok(Uuid::nil());
            }
            shared
                .store
                .create_topic(&name, partitions as u32, &config)
                .map(|t| Uuid::from_bytes(t.id.0))
                .map_err(engine)
        });
        // In a cluster: placed and committed by the active controller.
        let outcome = match (outcome, &shared.cluster) {
            (Ok(_), Some(node)) if !t.assignments.is_empty() => {
                let configs = config.iter().cloned().collect();
                let assignments = t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect();
                node.create_topic_assigned(&name, assignments, configs, req.validate_only)
                    .await
                    .map(|id| if req.validate_only { Uuid::nil() } else { id })
            }
            (Ok(_), Some(node)) => {
                let configs = config.iter().cloned().collect();
                node.create_topic(
                    &name,
                    partitions,
                    t.replication_factor,
                    configs,
                    req.validate_only,
                )
                .await
                .map(|id| if req.validate_only { Uuid::nil() } else { id })
            }
            (other, _) => other,
        };
        let replication_factor = match &shared.cluster {
            Some(_) if !t.assignments.is_empty() => t
                .assignments
                .first()
                .map_or(-1, |a| a.broker_ids.len() as i16),
            Some(node) if t.replication_factor == -1 => node.config.default_replication_factor,
            Some(_) => t.replication_factor,
            None => 1,
        };
        match outcome {
            Ok(id) => {
                if v >= 7 {
                    r.topic_id = id;
                }
                if v >= 5
                    && !_s.authorized(
                        shared,
                        Operation::DescribeConfigs,
                        ResourceType::Topic,
                        &name,
                    )
                {
                    // Created, but its configs are not the principal's to see.
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                    r.topic_config_error_code = code::TOPIC_AUTHORIZATION_FAILED;
                } else if v >= 5 {
                    r.num_partitions = partitions;
                    r.replication_factor = replication_factor;
                    let effective = TopicConfig::from_overrides(
                        config.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    )
                    .map(|c| c.effective())
                    .unwrap_or_default();
                    r.configs = Some(
                        effective
                            .into_iter()
                            .map(|(k, v)| {
                                let mut c = CreatableTopicConfigs::default();
                                c.config_source = if config.iter().any(|(n, _)| *n == k) {
                                    1
                                } else {
                                    5
                                };
                                c.name = s(&k);
                                c.value = Some(s(&v));
                                c
                            })
                            .collect(),
                    );
                }
            }
            Err((c, message)) => {
                r.error_code = c;
                if v >= 1 {
                    r.error_message = Some(s(&message));
                }
            }
        }
        resp.topics.push(r);
    }
    resp
}

/// The replicas a topic asks for, checked as Kafka's controller checks them
/// (`ReplicationControlManager.createTopic`, `StripedReplicaPlacer`), with
/// Kafka's error codes and messages. This broker is the cluster's only
/// one, so every partition has exactly one replica, on it: a replication
/// factor above 1, or an assignment naming another broker, cannot be
/// placed. Quietly creating one replica instead would let an application
/// believe its data is on three machines.
fn check_placement(t: &CreatableTopic) -> Result<(), (i16, String)> {
    const BROKERS: i16 = 1;
    if t.assignments.is_empty() {
        let rf = t.replication_factor;
        if rf == 0 || rf < -1 {
            return Err((
                code::INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        if t.num_partitions == 0 || t.num_partitions < -1 {
            return Err((
                code::INVALID_PARTITIONS,
                "Number of partitions was set to an invalid non-positive value.".into(),
            ));
        }
        // -1: the broker's default.replication.factor, 1 here.
        if rf > BROKERS {
            return Err((
                code::INVALID_REPLICATION_FACTOR,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication \
                     factor of {rf} cannot be reached because only {BROKERS} broker(s) are \
                     registered."
                ),
            ));
        }
        return Ok(());
    }
    if t.replication_factor != -1 {
        return Err((
            code::INVALID_REQUEST,
            "A manual partition assignment was specified, but replication factor was not set \
             to -1."
                .into(),
        ));
    }
    if t.num_partitions != -1 {
        return Err((
            code::INVALID_REQUEST,
            "A manual partition assignment was specified, but numPartitions was not set to -1."
                .into(),
        ));
    }
    let invalid = |m: String| Err((code::INVALID_REPLICA_ASSIGNMENT, m));
    let mut seen = std::collections::BTreeSet::new();
    for a in &t.assignments {
        if !seen.insert(a.partition_index) {
            return invalid(format!(
                "Found multiple manual partition assignments for partition {}",
                a.partition_index
            ));
        }
        check_replicas(&a.broker_ids).map_err(|m| (code::INVALID_REPLICA_ASSIGNMENT, m))?;
    }
    // Partitions 0..n, each once.
    if seen.iter().copied().ne(0..t.assignments.len() as i32) {
        return invalid("partitions should be a consecutive 0-based integer sequence".into());
    }
    Ok(())
}

/// A topic's placement request in a cluster: the active controller places
/// the replicas (Kafka's checks of the factor, then `assign_replicas`), or
/// checks the manual assignment given (`decide::manual_assignment`).
fn check_cluster_placement(t: &CreatableTopic) -> Result<(), (i16, String)> {
    if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                code::INVALID_REQUEST,
                "Both numPartitions or replicationFactor and replicasAssignments were set. \
                 Both cannot be used at the same time."
                    .into(),
            ));
        }
        return Ok(());
    }
    if t.replication_factor == 0 || t.replication_factor < -1 {
        return Err((
            code::INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0, or -1 to use the default value.".into(),
        ));
    }
    if t.num_partitions == 0 || t.num_partitions < -1 {
        return Err((
            code::INVALID_PARTITIONS,
            "Number of partitions was set to an invalid non-positive value.".into(),
        ));
    }
    Ok(())
}

/// One partition's replicas in a manual assignment, as Kafka's
/// `validateManualPartitionAssignment` checks them; with this broker
/// (id 0) the only one registered, a valid list is `[0]`, so every
/// partition has the same replica count and that check cannot fail here.
fn check_replicas(brokers: &[BrokerId]) -> Result<(), String> {
    if brokers.is_empty() {
        return Err("The manual partition assignment includes an empty replica list.".into());
    }
    let mut ids: Vec<i32> = brokers.iter().map(|b| b.0).collect();
    ids.sort_unstable();
    for (i, id) in ids.iter().enumerate() {
        if *id != NODE_ID {
            return Err(format!(
                "The manual partition assignment includes broker {id}, but no such broker is \
                 registered."
            ));
        }
        if i > 0 && ids[i - 1] == *id {
            return Err(format!(
                "The manual partition assignment includes the broker {id} more than once."
            ));
        }
    }
    Ok(())
}

pub async fn delete(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: DeleteTopicsRequest,
    v: i16,
) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    // (name, id) of each topic asked for: by name before v6; by name or by
    // id from v6 on.
    let wanted: Vec<(Option<TopicName>, Uuid)> = if v >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut seen_names = std::collections::HashSet::new();
    let mut seen_ids = std::collections::HashSet::new();
    for (name, id) in wanted {
        let mut r = DeletableTopicResult::default();
        r.name = name.clone();
        r.topic_id = id;
        // Kafka's checks (`ControllerApis.deleteTopics`), with its messages.
        let refusal = match (&name, id.is_nil()) {
            (Some(_), false) => Some("You may not specify both topic name and topic id."),
            (None, true) => Some("Neither topic name nor id were specified."),
            (Some(n), true) if !seen_names.insert(n.as_str().to_string()) => {
                Some("Duplicate topic name.")
            }
            (None, false) if !seen_ids.insert(id) => Some("Duplicate topic id."),
            _ => None,
        };
        if let Some(why) = refusal {
            r.error_code = code::INVALID_REQUEST;
            r.error_message = Some(s(why));
            resp.responses.push(r);
            continue;
        }
        let name = match name {
            Some(n) => n.as_str().to_string(),
            None => match super::metadata::topic_by_id(shared, &mut session.topic_names, id) {
                Some(n) => {
                    r.name = Some(topic_name(&n));
                    n
                }
                None => {
                    r.error_code = code::UNKNOWN_TOPIC_ID;
                    if v >= 5 {
                        r.error_message = Some(s("This server does not host this topic ID."));
                    }
                    resp.responses.push(r);
                    continue;
                }
            },
        };
        if !session.authorized(shared, Operation::Delete, ResourceType::Topic, &name) {
            r.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            if v >= 5 {
                r.error_message = Some(s("Authorization failed."));
            }
            resp.responses.push(r);
            continue;
        }
        if v >= 6 && id.is_nil() {
            if let Ok(Some(t)) = blocking(|| shared.store.topic(&name)) {
                r.topic_id = Uuid::from_bytes(t.id.0);
            }
        }
        if let Some(node) = &shared.cluster {
            // Internal topics (the group coordinators' `__consumer_offsets`)
            // are refused as the store refuses them to a broker alone.
            if let Err(e) = ottla_storage::topic::check_deletable(&name) {
                r.error_code = kafka_code(&e);
                if v >= 5 {
                    r.error_message = Some(s(&e.to_string()));
                }
                resp.responses.push(r);
                continue;
            }
            // Deleted by the active controller; every broker deletes its
            // replicas when its image drops the topic.
            match node.delete_topic(&name).await {
                Ok(id) => {
                    if v >= 6 {
                        r.topic_id = id;
                    }
                    shared.replicas.forget_topic(&name);
                }
                Err((c, message)) => {
                    r.error_code = c;
                    if v >= 5 {
                        r.error_message = Some(s(&message));
                    }
                }
            }
            resp.responses.push(r);
            continue;
        }
        // Internal topics are refused by the store, for every door.
        let deleted = blocking(|| shared.store.delete_topic(&name));
        match deleted {
            Ok(()) => shared.replicas.forget_topic(&name),
            Err(e) => {
                r.error_code = kafka_code(&e);
                if v >= 5 {
                    r.error_message = Some(s(&e.to_string()));
                }
            }
        }
        resp.responses.push(r);
    }
    resp
}

pub async fn create_partitions(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: CreatePartitionsRequest,
    _v: i16,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if !_s.authorized(
            shared,
            Operation::Alter,
            ResourceType::Topic,
            t.name.as_str(),
        ) {
            r.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            r.error_message = Some(s("Authorization failed."));
            resp.results.push(r);
            continue;
        }
        if let Some(node) = &shared.cluster {
            let outcome = if t.assignments.as_ref().is_some_and(|a| !a.is_empty()) {
                Err((
                    code::INVALID_REQUEST,
                    "Manual replica assignments are not supported by ottla clusters yet.".into(),
                ))
            } else if !(1..=MAX_PARTITIONS).contains(&t.count) {
                Err((
                    code::INVALID_PARTITIONS,
                    format!(
                        "partition count must be between 1 and {MAX_PARTITIONS}, got {}",
                        t.count
                    ),
                ))
            } else {
                node.add_partitions(t.name.as_str(), t.count, req.validate_only)
                    .await
            };
            if let Err((c, message)) = outcome {
                r.error_code = c;
                r.error_message = Some(s(&message));
            }
            resp.results.push(r);
            continue;
        }
        let engine = |e: Error| (kafka_code(&e), e.to_string());
        let outcome = blocking(|| -> Result<(), (i16, String)> {
            if !(1..=MAX_PARTITIONS).contains(&t.count) {
                return Err(engine(Error::InvalidPartitions(format!(
                    "partition count must be between 1 and {MAX_PARTITIONS}, got {}",
                    t.count
                ))));
            }
            if req.validate_only || t.assignments.is_some() {
                let topic = shared
                    .store
                    .require_topic(t.name.as_str())
                    .map_err(engine)?;
                if t.count as u32 <= topic.partitions {
                    return Err(engine(Error::InvalidPartitions(format!(
                        "topic has {} partitions; the new total must be larger",
                        topic.partitions
                    ))));
                }
                // Kafka's `createPartitions`: one replica list per partition
                // added, each placeable.
                if let Some(lists) = &t.assignments {
                    let invalid = |m: String| (code::INVALID_REPLICA_ASSIGNMENT, m);
                    let added = t.count as u32 - topic.partitions;
                    if lists.len() != added as usize {
                        return Err(invalid(format!(
                            "Attempted to add {added} additional partition(s), but only {} \
                             assignment(s) were specified.",
                            lists.len()
                        )));
                    }
                    for a in lists {
                        check_replicas(&a.broker_ids).map_err(invalid)?;
                    }
                }
                if req.validate_only {
                    return Ok(());
                }
            }
            shared
                .store
                .create_partitions(t.name.as_str(), t.count as u32)
                .map(|_| ())
                .map_err(engine)
        });
        if let Err((c, message)) = outcome {
            r.error_code = c;
            r.error_message = Some(s(&message));
        }
        resp.results.push(r);
    }
    resp
}
