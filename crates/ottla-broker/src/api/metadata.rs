//! Metadata: one broker (this one), every partition led by it in leader
//! epoch 0 (v7+; KIP-320: clients then validate their positions with
//! OffsetForLeaderEpoch); each topic's id (v10+), and topics asked for by
//! id alone (v12+); authorized operations when asked (v8+; everything is
//! allowed); v13's top-level error code (KIP-1102's REBOOTSTRAP_REQUIRED)
//! is never set. And DescribeTopicPartitions (KIP-966), the paged form of
//! a Metadata answer.
//!
//! The epoch is `INITIAL_LEADER_EPOCH`, the one every partition log
//! appends in while one broker leads it alone: answered without opening
//! the partitions. Replication (issue 14) takes it from the cluster's
//! metadata instead.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
    MetadataResponse,
};

use super::{blocking, s, topic_name};
use crate::auth::acl::{Operation, ResourceType::Cluster, ResourceType::Topic, CLUSTER_NAME};
use crate::cluster::{assignments, codes, ClusterNode};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::log::INITIAL_LEADER_EPOCH;
use ottla_storage::topic::{is_internal, TopicId};
use uuid::Uuid;

pub const NODE_ID: i32 = 0;
pub const CLUSTER_ID: &str = "ottla";

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: MetadataRequest,
    v: i16,
) -> MetadataResponse {
    if let Some(node) = &shared.cluster {
        return cluster_metadata(shared, session, node, req, v).await;
    }
    let mut r = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(NODE_ID);
    b.host = s(session.advertised(shared).0);
    b.port = i32::from(session.advertised(shared).1);
    b.rack = shared.config.broker_rack.as_deref().map(s);
    r.brokers = vec![b];
    if v >= 2 {
        r.cluster_id = Some(s(CLUSTER_ID));
    }
    if v >= 1 {
        r.controller_id = BrokerId(NODE_ID);
    }
    if (8..=10).contains(&v) && req.include_cluster_authorized_operations {
        r.cluster_authorized_operations =
            session.authorized_operations(shared, Cluster, CLUSTER_NAME);
    }
    let store = &shared.store;
    let all_topics = !matches!(&req.topics, Some(t) if !(t.is_empty() && v == 0));
    // Each topic asked for: by name, or (v12+) by id alone, found here.
    let names: Vec<Result<String, Uuid>> = match &req.topics {
        Some(t) if !(t.is_empty() && v == 0) => t
            .iter()
            .map(|t| match &t.name {
                Some(n) => Ok(n.as_str().to_string()),
                None => topic_by_id(shared, &mut session.topic_names, t.topic_id).ok_or(t.topic_id),
            })
            .collect(),
        // All topics (null list, or an empty one in v0).
        _ => match blocking(|| store.list_topics(false)) {
            Ok(all) => all.into_iter().map(Ok).collect(),
            Err(e) => {
                super::super::errors::warn(&format!("metadata: cannot list topics: {e}"));
                Vec::new()
            }
        },
    };
    let auto_create = shared.config.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    for name in names {
        let (mut t, name) = match topic_entry(name, v) {
            Ok(named) => named,
            Err(unknown) => {
                r.topics.push(unknown);
                continue;
            }
        };
        // ACLs: topics not DESCRIBE-able are left out of "all topics" and
        // TOPIC_AUTHORIZATION_FAILED when named, as Kafka answers.
        if let Some(refused) = describe_refused(shared, session, &mut t, &name, all_topics) {
            if refused {
                r.topics.push(t);
            }
            continue;
        }
        // Internal topics are created by the engine with their own config.
        let create = auto_create && !is_internal(&name);
        if create
            && !may_create_topic(shared, session, &name)
            && !matches!(blocking(|| store.topic(&name)), Ok(Some(_)))
        {
            t.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            r.topics.push(t);
            continue;
        }
        let found = blocking(|| store.topic_or_create(&name, create, shared.config.num_partitions));
        match found {
            Ok(topic) => {
                if v >= 10 {
                    t.topic_id = Uuid::from_bytes(topic.id.0);
                }
                if v >= 8 && req.include_topic_authorized_operations {
                    t.topic_authorized_operations =
                        session.authorized_operations(shared, Topic, &name);
                }
                t.partitions = (0..topic.partitions)
                    .map(|p| {
                        let mut part = MetadataResponsePartition::default();
                        part.partition_index = p as i32;
                        part.leader_id = BrokerId(NODE_ID);
                        if v >= 7 {
                            part.leader_epoch = INITIAL_LEADER_EPOCH;
                        }
                        part.replica_nodes = vec![BrokerId(NODE_ID)];
                        part.isr_nodes = vec![BrokerId(NODE_ID)];
                        part
                    })
                    .collect();
            }
            Err(e) => t.error_code = kafka_code(&e),
        }
        r.topics.push(t);
    }
    r
}

/// Metadata in a cluster, from this node's metadata image: the unfenced
/// brokers with their advertised listeners, the active controller, and per
/// partition its leader (LEADER_NOT_AVAILABLE without one), leader epoch,
/// replicas, in-sync set and offline replicas (on brokers not alive, as
/// KRaft's metadata cache says). Unknown topics asked for by name are
/// created through the active controller when auto-creation is on.
async fn cluster_metadata(
    shared: &Arc<Shared>,
    session: &Session,
    node: &Arc<ClusterNode>,
    req: MetadataRequest,
    v: i16,
) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    // A node just started answers once it has caught up with the metadata
    // and the controller unfenced it, so it lists itself (bounded: then
    // from what it has).
    node.wait_caught_up(std::time::Duration::from_secs(5)).await;
    let mut image = node.image();
    let listener = session.listener.as_ref().map(|l| l.name.as_str());
    let live = assignments::live_brokers_on(&image, listener);
    let listed = with_just_fenced(node, &image, &live, listener);
    r.brokers = listed
        .iter()
        .map(|(id, host, port, rack)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(*id);
            b.host = s(host);
            b.port = i32::from(*port);
            if v >= 1 {
                b.rack = rack.as_deref().map(s);
            }
            b
        })
        .collect();
    if v >= 2 {
        r.cluster_id = Some(s(CLUSTER_ID));
    }
    if v >= 1 {
        r.controller_id = BrokerId(node.controller_id().unwrap_or(-1));
    }
    if (8..=10).contains(&v) && req.include_cluster_authorized_operations {
        r.cluster_authorized_operations =
            session.authorized_operations(shared, Cluster, CLUSTER_NAME);
    }
    let all_topics = !matches!(&req.topics, Some(t) if !(t.is_empty() && v == 0));
    let names: Vec<Result<String, Uuid>> = match &req.topics {
        Some(t) if !(t.is_empty() && v == 0) => t
            .iter()
            .map(|t| match &t.name {
                Some(n) => Ok(n.as_str().to_string()),
                None => image
                    .topics
                    .get(&ottla_meta::TopicId(*t.topic_id.as_bytes()))
                    .map(|topic| topic.name.clone())
                    .ok_or(t.topic_id),
            })
            .collect(),
        _ => image.topic_ids.keys().cloned().map(Ok).collect(),
    };
    let auto_create = shared.config.auto_create_topics && (v < 4 || req.allow_auto_topic_creation);
    // How long a leader found gone may go unfenced: the controller fences
    // within a session and a tick, after an election if it died too.
    let suspicion = std::time::Duration::from_millis(
        2 * (node.config.broker_session_timeout_ms + node.config.election_timeout_ms),
    );
    for name in names {
        let (mut t, name) = match topic_entry(name, v) {
            Ok(named) => named,
            Err(unknown) => {
                r.topics.push(unknown);
                continue;
            }
        };
        if let Some(refused) = describe_refused(shared, session, &mut t, &name, all_topics) {
            if refused {
                r.topics.push(t);
            }
            continue;
        }
        if !image.topic_ids.contains_key(&name) {
            if auto_create && !may_create_topic(shared, session, &name) {
                t.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                r.topics.push(t);
                continue;
            }
            let creatable = auto_create
                && !is_internal(&name)
                && ottla_storage::topic::validate_topic_name(&name).is_ok();
            if !creatable {
                t.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                r.topics.push(t);
                continue;
            }
            let partitions = i32::try_from(shared.config.num_partitions).unwrap_or(1);
            match node
                .create_topic(&name, partitions, -1, Default::default(), false)
                .await
            {
                // Created, or created meanwhile by another request.
                Ok(_) => image = node.image(),
                Err((c, _)) if c == code::TOPIC_ALREADY_EXISTS => image = node.image(),
                Err((c, _)) => {
                    t.error_code = c;
                    r.topics.push(t);
                    continue;
                }
            }
        }
        let Some(topic) = image.topic_by_name(&name) else {
            // Committed, not yet applied here: clients retry on this one.
            t.error_code = codes::LEADER_NOT_AVAILABLE;
            r.topics.push(t);
            continue;
        };
        if v >= 10 {
            t.topic_id = Uuid::from_bytes(topic.topic_id.0);
        }
        if v >= 8 && req.include_topic_authorized_operations {
            t.topic_authorized_operations = session.authorized_operations(shared, Topic, &name);
        }
        let alive = |b: &i32| live.iter().any(|l| l.0 == *b);
        t.partitions = topic
            .partitions
            .iter()
            .map(|(&index, p)| {
                let mut part = MetadataResponsePartition::default();
                part.partition_index = index;
                // A leader this broker's fetchers found gone (refused,
                // reset) and the controller has not fenced yet: no leader
                // for now, so clients keep asking (see
                // `ReplicaManager::leader_suspected`).
                let leader = p
                    .leader
                    .filter(|l| !shared.replicas.leader_suspected(*l, suspicion));
                part.leader_id = BrokerId(leader.unwrap_or(-1));
                if leader.is_none() {
                    part.error_code = codes::LEADER_NOT_AVAILABLE;
                }
                if v >= 7 {
                    part.leader_epoch = p.leader_epoch;
                }
                part.replica_nodes = p.replicas.iter().copied().map(BrokerId).collect();
                part.isr_nodes = p.isr.iter().copied().map(BrokerId).collect();
                if v >= 5 {
                    part.offline_replicas = p
                        .replicas
                        .iter()
                        .filter(|b| !alive(b))
                        .copied()
                        .map(BrokerId)
                        .collect();
                }
                part
            })
            .collect();
        r.topics.push(t);
    }
    r
}

/// How long a broker this node last listed live stays in its Metadata
/// answers once fenced.
const FENCED_LISTED_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The brokers a Metadata answer lists: the live ones, and those fenced
/// less than `FENCED_LISTED_FOR` after this node last listed them live.
/// An answer that moves a dead broker's leaderships is then not also the
/// one that drops the broker: librdkafka (2.x) decommissions a broker
/// missing from Metadata, and doing so in the same pass as the leader
/// change it reverts the partitions it was moving to "no leader" until its
/// next once-a-second scan (measured: failovers of 1.5 s instead of 0.5 s,
/// docs/PERFORMANCE.md). Their replicas are still reported offline.
fn with_just_fenced(
    node: &ClusterNode,
    image: &ottla_meta::MetadataImage,
    live: &[(i32, String, u16, Option<String>)],
    listener: Option<&str>,
) -> Vec<(i32, String, u16, Option<String>)> {
    let now = std::time::Instant::now();
    let mut listed = node.listed.lock();
    for (id, ..) in live {
        listed.insert(*id, now);
    }
    let mut out = live.to_vec();
    listed.retain(|id, at| {
        let keep = now.saturating_duration_since(*at) < FENCED_LISTED_FOR;
        if keep && !live.iter().any(|l| l.0 == *id) {
            if let Some(b) = image.brokers.get(id) {
                // The endpoint `live_brokers_on` would give it.
                if let Some(e) = listener
                    .and_then(|name| b.listeners.iter().find(|l| l.name == name))
                    .or_else(|| b.listeners.first())
                {
                    out.push((*id, e.host.clone(), e.port, b.rack.clone()));
                }
            }
        }
        keep
    });
    out.sort_by_key(|b| b.0);
    out
}

/// Metadata's DESCRIBE check of a topic: `None` when allowed; else
/// whether the topic still has an answer (named or asked by id:
/// TOPIC_AUTHORIZATION_FAILED; asked as part of "all topics": left out).
fn describe_refused(
    shared: &Shared,
    session: &Session,
    t: &mut MetadataResponseTopic,
    name: &str,
    all_topics: bool,
) -> Option<bool> {
    if session.authorized(shared, Operation::Describe, Topic, name) {
        return None;
    }
    if all_topics {
        return Some(false);
    }
    t.error_code = code::TOPIC_AUTHORIZATION_FAILED;
    t.is_internal = false;
    Some(true)
}

/// Whether Metadata may create `name` for this connection: CREATE on the
/// cluster or on the topic (Kafka's auto-creation check).
fn may_create_topic(shared: &Shared, session: &Session, name: &str) -> bool {
    session.authorized_cluster(shared, Operation::Create)
        || session.authorized(shared, Operation::Create, Topic, name)
}

/// The name of the topic whose id is `id`, if one has it. `known` is the
/// connection's map of ids it asked by (`Session::topic_names`), checked
/// against the store's cached topic on every use (a topic deleted and
/// created again under the name has another id); on a miss, a scan of the
/// topics, whose result joins the map.
pub(crate) fn topic_by_id(
    shared: &Shared,
    known: &mut HashMap<Uuid, String>,
    id: Uuid,
) -> Option<String> {
    let wanted = TopicId(*id.as_bytes());
    if wanted == TopicId::ZERO {
        return None;
    }
    let store = &shared.store;
    if let Some(name) = known.get(&id) {
        if matches!(blocking(|| store.topic(name)), Ok(Some(t)) if t.id == wanted) {
            return Some(name.clone());
        }
        known.remove(&id);
    }
    let found = blocking(|| {
        let names = store.list_topics(true).ok()?;
        names
            .into_iter()
            .find(|n| matches!(store.topic(n), Ok(Some(t)) if t.id == wanted))
    })?;
    // Bounded: a client naming ids by the thousand gets a fresh map.
    if known.len() >= 10_000 {
        known.clear();
    }
    known.insert(id, found.clone());
    Some(found)
}

/// The most partitions one DescribeTopicPartitions answer carries, whatever
/// the request asks (Kafka's `max.request.partition.size.limit` default).
const MAX_RESPONSE_PARTITIONS: i32 = 2000;

/// DescribeTopicPartitions: the topics asked for (all of them for an empty
/// list), sorted by name, from the cursor on, with at most
/// `response_partition_limit` partitions; `next_cursor` says where the next
/// page starts when there is more. An unknown topic answers
/// UNKNOWN_TOPIC_OR_PARTITION; a cursor naming a topic not asked for makes
/// every topic asked for INVALID_REQUEST, as Kafka's error response does.
pub async fn describe_topic_partitions(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: DescribeTopicPartitionsRequest,
    _v: i16,
) -> DescribeTopicPartitionsResponse {
    let _s = &*session;
    let mut r = DescribeTopicPartitionsResponse::default();
    let store = &shared.store;
    // In a cluster, topics and partitions are the metadata image's.
    let image = shared.cluster.as_ref().map(|n| n.image());
    let mut names: Vec<String> = if req.topics.is_empty() {
        if let Some(img) = &image {
            img.topic_ids.keys().cloned().collect()
        } else {
            match blocking(|| store.list_topics(false)) {
                Ok(all) => all,
                Err(e) => {
                    super::super::errors::warn(&format!(
                        "describe topics: cannot list topics: {e}"
                    ));
                    Vec::new()
                }
            }
        }
    } else {
        req.topics
            .iter()
            .map(|t| t.name.as_str().to_string())
            .collect()
    };
    names.sort_unstable();
    names.dedup();
    // ACLs: every topic listed is one the principal may DESCRIBE; a topic
    // named that it may not is TOPIC_AUTHORIZATION_FAILED (below).
    if req.topics.is_empty() {
        names.retain(|n| _s.authorized(shared, Operation::Describe, Topic, n));
    }
    let (first_topic, mut first_partition) = match &req.cursor {
        Some(c) => {
            let at = c.topic_name.as_str();
            if !names.iter().any(|n| n == at) || c.partition_index < 0 {
                // Kafka's error response: every topic asked for, with the error.
                for asked in &req.topics {
                    let mut t = DescribeTopicPartitionsResponseTopic::default();
                    t.error_code = code::INVALID_REQUEST;
                    t.name = Some(asked.name.clone());
                    r.topics.push(t);
                }
                return r;
            }
            (Some(at.to_string()), c.partition_index as u32)
        }
        None => (None, 0),
    };
    if let Some(first) = &first_topic {
        names.retain(|n| n >= first);
    }
    let mut left = req
        .response_partition_limit
        .clamp(1, MAX_RESPONSE_PARTITIONS) as u32;
    let mut iter = names.into_iter().peekable();
    while let Some(name) = iter.next() {
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(topic_name(&name));
        t.is_internal = is_internal(&name);
        let start = std::mem::take(&mut first_partition);
        if !_s.authorized(shared, Operation::Describe, Topic, &name) {
            t.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            r.topics.push(t);
            continue;
        }
        // (id, partition count, one partition's answer) of the topic.
        type Describe<'a> = Box<dyn Fn(u32) -> DescribeTopicPartitionsResponsePartition + 'a>;
        let found: Result<Option<(Uuid, u32, Describe<'_>)>, i16> = match &image {
            Some(img) => Ok(img.topic_by_name(&name).map(|topic| {
                let count = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
                let one: Describe<'_> = Box::new(move |p| {
                    let mut part = DescribeTopicPartitionsResponsePartition::default();
                    part.partition_index = p as i32;
                    if let Some(state) = topic.partitions.get(&(p as i32)) {
                        part.leader_id = BrokerId(state.leader.unwrap_or(-1));
                        if state.leader.is_none() {
                            part.error_code = codes::LEADER_NOT_AVAILABLE;
                        }
                        part.leader_epoch = state.leader_epoch;
                        part.replica_nodes = state.replicas.iter().copied().map(BrokerId).collect();
                        part.isr_nodes = state.isr.iter().copied().map(BrokerId).collect();
                    }
                    part
                });
                (Uuid::from_bytes(topic.topic_id.0), count, one)
            })),
            None => match blocking(|| store.topic(&name)) {
                Ok(Some(topic)) => {
                    let one: Describe<'_> = Box::new(|p| {
                        let mut part = DescribeTopicPartitionsResponsePartition::default();
                        part.partition_index = p as i32;
                        part.leader_id = BrokerId(NODE_ID);
                        part.leader_epoch = INITIAL_LEADER_EPOCH;
                        part.replica_nodes = vec![BrokerId(NODE_ID)];
                        part.isr_nodes = vec![BrokerId(NODE_ID)];
                        part
                    });
                    Ok(Some((Uuid::from_bytes(topic.id.0), topic.partitions, one)))
                }
                Ok(None) => Ok(None),
                Err(e) => Err(kafka_code(&e)),
            },
        };
        match found {
            Ok(Some((id, count, describe))) => {
                t.topic_id = id;
                t.topic_authorized_operations = _s.authorized_operations(shared, Topic, &name);
                let end = count.min(start.saturating_add(left));
                for p in start..end {
                    let mut part = describe(p);
                    part.eligible_leader_replicas = Some(Vec::new());
                    part.last_known_elr = Some(Vec::new());
                    t.partitions.push(part);
                }
                left -= end.saturating_sub(start);
                if end < count {
                    let mut c = Cursor::default();
                    c.topic_name = topic_name(&name);
                    c.partition_index = end as i32;
                    r.topics.push(t);
                    r.next_cursor = Some(c);
                    return r;
                }
            }
            Ok(None) => t.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            Err(c) => t.error_code = c,
        }
        r.topics.push(t);
        if left == 0 {
            if let Some(next) = iter.peek() {
                let mut c = Cursor::default();
                c.topic_name = topic_name(next);
                c.partition_index = 0;
                r.next_cursor = Some(c);
            }
            return r;
        }
    }
    r
}

/// A topic's entry, begun: named (with `is_internal` from v1), or for an
/// id no topic has, the finished answer (Kafka answers it with the id and
/// no name).
fn topic_entry(
    name: Result<String, Uuid>,
    v: i16,
) -> Result<(MetadataResponseTopic, String), MetadataResponseTopic> {
    let mut t = MetadataResponseTopic::default();
    match name {
        Ok(name) => {
            t.name = Some(topic_name(&name));
            if v >= 1 {
                t.is_internal = is_internal(&name);
            }
            Ok((t, name))
        }
        Err(id) => {
            t.error_code = code::UNKNOWN_TOPIC_ID;
            t.name = None;
            t.topic_id = id;
            Err(t)
        }
    }
}
