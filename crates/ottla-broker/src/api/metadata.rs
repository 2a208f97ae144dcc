//! Metadata: one broker (this one), every partition led by it, no epochs;
//! each topic's id (v10+), and topics asked for by id alone (v12+).

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{blocking, s, topic_name};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::topic::{is_internal, TopicId};
use uuid::Uuid;

pub const NODE_ID: i32 = 0;
pub const CLUSTER_ID: &str = "ottla";

pub async fn handle(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: MetadataRequest,
    v: i16,
) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    let mut b = MetadataResponseBroker::default();
    b.node_id = BrokerId(NODE_ID);
    b.host = s(&shared.advertised_host);
    b.port = shared.advertised_port as i32;
    r.brokers = vec![b];
    if v >= 2 {
        r.cluster_id = Some(s(CLUSTER_ID));
    }
    if v >= 1 {
        r.controller_id = BrokerId(NODE_ID);
    }
    let store = &shared.store;
    // Each topic asked for: by name, or (v12+) by id alone, found here.
    let names: Vec<Result<String, Uuid>> = match &req.topics {
        Some(t) if !(t.is_empty() && v == 0) => t
            .iter()
            .map(|t| match &t.name {
                Some(n) => Ok(n.as_str().to_string()),
                None => topic_by_id(shared, t.topic_id).ok_or(t.topic_id),
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
        let mut t = MetadataResponseTopic::default();
        let name = match name {
            Ok(name) => name,
            Err(id) => {
                // Kafka answers an id it does not know with the id, no name.
                t.error_code = code::UNKNOWN_TOPIC_ID;
                t.name = None;
                t.topic_id = id;
                r.topics.push(t);
                continue;
            }
        };
        t.name = Some(topic_name(&name));
        if v >= 1 {
            t.is_internal = is_internal(&name);
        }
        // Internal topics are created by the engine with their own config.
        let create = auto_create && !is_internal(&name);
        let found = blocking(|| store.topic_or_create(&name, create, shared.config.num_partitions));
        match found {
            Ok(topic) => {
                if v >= 10 {
                    t.topic_id = Uuid::from_bytes(topic.id.0);
                }
                t.partitions = (0..topic.partitions)
                    .map(|p| {
                        let mut part = MetadataResponsePartition::default();
                        part.partition_index = p as i32;
                        part.leader_id = BrokerId(NODE_ID);
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

/// The name of the topic whose id is `id`, if one has it (a scan of the
/// topics: asking by id alone is rare, and ids change only on re-create).
fn topic_by_id(shared: &Shared, id: Uuid) -> Option<String> {
    let wanted = TopicId(*id.as_bytes());
    if wanted == TopicId::ZERO {
        return None;
    }
    let store = &shared.store;
    blocking(|| {
        let names = store.list_topics(true).ok()?;
        names
            .into_iter()
            .find(|n| matches!(store.topic(n), Ok(Some(t)) if t.id == wanted))
    })
}
