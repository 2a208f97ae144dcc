//! OffsetCommit, OffsetFetch and OffsetDelete, through the engine's OffsetStore
//! (`__consumer_offsets`), the same store embedded consumers commit to, so a
//! group's position is the same whichever door wrote it.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};

use super::codec_v10::{
    FetchedGroup10, FetchedPartition10, OffsetCommitRequest10, OffsetCommitResponse10,
    OffsetFetchRequest10, OffsetFetchResponse10,
};
use super::metadata::topic_by_id;
use super::{blocking, s, topic_name};
use crate::auth::acl::{Operation, ResourceType};
use crate::coordinator::group::MemberRef;
use crate::coordinator::placement::{group_check, replicated, with_leadership};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_client::group::admin::{commit_outside_group_with_epochs, live_subscription};
use ottla_storage::error::Error;
use ottla_storage::offsets::check_metadata;
use std::collections::HashMap;
use uuid::Uuid;

/// OffsetCommit. v9's `generation_id_or_member_epoch` is a member epoch
/// for a KIP-848 consumer group; for a classic group (every group here)
/// Kafka checks it as the generation, as below.
pub async fn commit(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: OffsetCommitRequest,
    _v: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.as_str().to_string();
    let mut error = shared.groups.check_commit(
        &group,
        req.generation_id_or_member_epoch,
        MemberRef {
            member_id: req.member_id.as_str(),
            // Null below v7, which has no such field.
            instance_id: req.group_instance_id.as_deref(),
        },
    );
    // A consumer-protocol group (KIP-848) checks the member epoch instead.
    let consumer = crate::api::consumer_group::check_commit(shared, &req);
    if let Some(e) = consumer {
        error = e;
    }
    if group.is_empty() {
        error = code::INVALID_GROUP_ID;
    } else if super::groups::group_read_refused(shared, _s, &group) {
        error = code::GROUP_AUTHORIZATION_FAILED;
    }
    // In a cluster, only the leader of `__consumer_offsets` takes commits.
    // (After the request's own errors and the ACL check, as Kafka orders them.)
    let not_here = group_check(shared);
    if not_here != code::NONE
        && error != code::INVALID_GROUP_ID
        && error != code::GROUP_AUTHORIZATION_FAILED
    {
        error = not_here;
    }
    let mut entries = Vec::new();
    let mut per_partition = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
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
            } else if let Err(e) = check_metadata(p.committed_metadata.as_deref().unwrap_or("")) {
                // Only this partition is refused, as in Kafka.
                kafka_code(&e)
            } else {
                match blocking(|| shared.store.topic(t.name.as_str())) {
                    Ok(Some(topic)) if (p.partition_index as u32) < topic.partitions => {
                        entries.push((
                            t.name.as_str().to_string(),
                            p.partition_index as u32,
                            p.committed_offset,
                            // -1 below v6, which has no such field.
                            p.committed_leader_epoch,
                            p.committed_metadata
                                .as_ref()
                                .map(|m| m.as_str().to_string())
                                .unwrap_or_default(),
                        ));
                        code::NONE
                    }
                    Ok(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
                    Err(e) => kafka_code(&e),
                }
            };
            per_partition.push((t.name.clone(), p.partition_index, c));
        }
    }
    // Not from a member of a group coordinated here: written only while the
    // group has no members anywhere (embedded ones included), and a
    // non-member of an active group gets Kafka's UNKNOWN_MEMBER_ID.
    let outside = error == code::NONE && consumer.is_none() && !shared.groups.is_active(&group);
    let written = with_leadership(shared, || {
        blocking(|| {
            if outside {
                commit_outside_group_with_epochs(
                    &shared.store,
                    &group,
                    &entries,
                    shared.config.durability,
                )
            } else {
                shared
                    .store
                    .offsets()
                    .and_then(|o| o.commit_with_epochs(&group, &entries, shared.config.durability))
            }
        })
    });
    let write_error = match written {
        Err(not_coordinator) => Some(not_coordinator),
        Ok(Ok(())) if entries.is_empty() => None,
        // Answered once on every in-sync replica (acks=all), in a cluster.
        Ok(Ok(())) => Some(replicated(shared).await).filter(|c| *c != code::NONE),
        Ok(Err(e)) => Some(match e {
            Error::GroupNotEmpty(_) | Error::GroupCoordinatedByBroker { .. } => {
                code::UNKNOWN_MEMBER_ID
            }
            e => kafka_code(&e),
        }),
    };
    let mut resp = OffsetCommitResponse::default();
    for (name, partition, c) in per_partition {
        let c = match (c, write_error) {
            (code::NONE, Some(w)) => w,
            (c, _) => c,
        };
        if !resp.topics.iter().any(|t| t.name == name) {
            let mut t = OffsetCommitResponseTopic::default();
            t.name = name.clone();
            resp.topics.push(t);
        }
        let Some(topic) = resp.topics.iter_mut().find(|t| t.name == name) else {
            continue;
        };
        let mut pr = OffsetCommitResponsePartition::default();
        pr.partition_index = partition;
        pr.error_code = c;
        topic.partitions.push(pr);
    }
    resp
}

/// OffsetFetch. v8 asks for several groups at once (KIP-709), each answered
/// with its own error; v9 adds the member id and epoch of a KIP-848
/// consumer group's member, which Kafka does not check for a classic group
/// (every group here is one). With `require_stable` (v7+; read_committed
/// consumers set it), a partition whose offset an open transaction holds
/// (TxnOffsetCommit not yet committed) answers UNSTABLE_OFFSET_COMMIT, and
/// the client retries, as from Kafka.
pub async fn fetch(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: OffsetFetchRequest,
    v: i16,
) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if v >= 8 {
        for g in &req.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (error, topics) =
                fetch_group(shared, _s, g.group_id.as_str(), wanted, req.require_stable);
            let mut rg = OffsetFetchResponseGroup::default();
            rg.group_id = g.group_id.clone();
            rg.error_code = error;
            rg.topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    let mut t = OffsetFetchResponseTopics::default();
                    t.name = topic_name(&name);
                    t.partitions = partitions
                        .into_iter()
                        .map(|c| {
                            let mut p = OffsetFetchResponsePartitions::default();
                            p.partition_index = c.partition;
                            p.committed_offset = c.offset;
                            p.committed_leader_epoch = c.leader_epoch;
                            p.metadata = Some(s(&c.metadata));
                            p.error_code = c.error;
                            p
                        })
                        .collect();
                    t
                })
                .collect();
            resp.groups.push(rg);
        }
        return resp;
    }
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.as_str().to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (error, topics) = fetch_group(
        shared,
        _s,
        req.group_id.as_str(),
        wanted,
        req.require_stable,
    );
    if v >= 2 {
        resp.error_code = error;
    }
    resp.topics = topics
        .into_iter()
        .map(|(name, partitions)| {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = topic_name(&name);
            t.partitions = partitions
                .into_iter()
                .map(|c| {
                    let mut pr = OffsetFetchResponsePartition::default();
                    pr.partition_index = c.partition;
                    pr.committed_offset = c.offset;
                    pr.committed_leader_epoch = c.leader_epoch;
                    pr.metadata = Some(s(&c.metadata));
                    pr.error_code = c.error;
                    pr
                })
                .collect();
            t
        })
        .collect();
    resp
}

/// OffsetCommit v10 (KIP-848): topics named by id. Each id is resolved to
/// its topic's name and the commit is v9's; an id no topic has answers
/// UNKNOWN_TOPIC_ID for each of its partitions, as Kafka does (a group the
/// client may not read answers GROUP_AUTHORIZATION_FAILED everywhere first).
pub async fn commit_v10(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: OffsetCommitRequest10,
    v: i16,
) -> OffsetCommitResponse10 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::GroupId;
    let mut k = OffsetCommitRequest::default();
    k.group_id = GroupId(s(&req.group_id));
    k.generation_id_or_member_epoch = req.generation_id_or_member_epoch;
    k.member_id = s(&req.member_id);
    k.group_instance_id = req.group_instance_id.as_deref().map(s);
    let mut ids: HashMap<String, Uuid> = HashMap::new();
    let mut unknown: Vec<(Uuid, Vec<i32>)> = Vec::new();
    for t in req.topics {
        let Some(name) = topic_by_id(shared, &mut session.topic_names, t.topic_id) else {
            unknown.push((
                t.topic_id,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            ));
            continue;
        };
        let mut kt = OffsetCommitRequestTopic::default();
        kt.name = topic_name(&name);
        kt.partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let mut kp = OffsetCommitRequestPartition::default();
                kp.partition_index = p.partition_index;
                kp.committed_offset = p.committed_offset;
                kp.committed_leader_epoch = p.committed_leader_epoch;
                kp.committed_metadata = p.committed_metadata.as_deref().map(s);
                kp
            })
            .collect();
        ids.insert(name, t.topic_id);
        k.topics.push(kt);
    }
    let unknown_error = if !req.group_id.is_empty()
        && super::groups::group_read_refused(shared, session, &req.group_id)
    {
        code::GROUP_AUTHORIZATION_FAILED
    } else {
        code::UNKNOWN_TOPIC_ID
    };
    let answered = commit(shared, session, k, v).await;
    let mut resp = OffsetCommitResponse10::default();
    for t in answered.topics {
        let Some(id) = ids.get(t.name.as_str()) else {
            continue;
        };
        let partitions = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.error_code))
            .collect();
        resp.topics.push((*id, partitions));
    }
    for (id, partitions) in unknown {
        let partitions = partitions.into_iter().map(|p| (p, unknown_error)).collect();
        resp.topics.push((id, partitions));
    }
    resp
}

/// OffsetFetch v10 (KIP-848): v9's batched groups with topics named by id,
/// both ways. An id no topic has answers UNKNOWN_TOPIC_ID for each of its
/// partitions; "every committed partition" leaves out topics that no longer
/// exist (they have no id to be named by), as Kafka does.
pub async fn fetch_v10(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: OffsetFetchRequest10,
    _v: i16,
) -> OffsetFetchResponse10 {
    let mut resp = OffsetFetchResponse10::default();
    for g in req.groups {
        let mut ids: HashMap<String, Uuid> = HashMap::new();
        let mut unknown: Vec<(Uuid, Vec<i32>)> = Vec::new();
        let wanted = match g.topics {
            None => None,
            Some(ts) => {
                let mut w = Vec::new();
                for (id, partitions) in ts {
                    match topic_by_id(shared, &mut session.topic_names, id) {
                        Some(name) => {
                            ids.insert(name.clone(), id);
                            w.push((name, partitions));
                        }
                        None => unknown.push((id, partitions)),
                    }
                }
                Some(w)
            }
        };
        let (error, topics) = fetch_group(shared, session, &g.group_id, wanted, req.require_stable);
        let mut rg = FetchedGroup10 {
            group_id: g.group_id,
            topics: Vec::new(),
            error_code: error,
        };
        for (name, fetched) in topics {
            let id = match ids.get(&name) {
                Some(id) => *id,
                None => match blocking(|| shared.store.topic(&name)) {
                    Ok(Some(t)) => Uuid::from_bytes(t.id.0),
                    _ => continue,
                },
            };
            let partitions = fetched
                .into_iter()
                .map(|c| FetchedPartition10 {
                    partition_index: c.partition,
                    committed_offset: c.offset,
                    committed_leader_epoch: c.leader_epoch,
                    metadata: Some(c.metadata),
                    error_code: c.error,
                })
                .collect();
            rg.topics.push((id, partitions));
        }
        if error == code::NONE {
            for (id, partitions) in unknown {
                let partitions = partitions
                    .into_iter()
                    .map(|p| FetchedPartition10 {
                        partition_index: p,
                        committed_offset: -1,
                        committed_leader_epoch: -1,
                        metadata: Some(String::new()),
                        error_code: code::UNKNOWN_TOPIC_ID,
                    })
                    .collect();
                rg.topics.push((id, partitions));
            }
        }
        resp.groups.push(rg);
    }
    resp
}

/// One partition's committed position as OffsetFetch answers it.
struct Fetched {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    error: i16,
}

/// One group's committed offsets: of the `wanted` partitions, or (None)
/// of every partition the group has committed; the group's error, if the
/// offsets cannot be read at all.
fn fetch_group(
    shared: &Arc<Shared>,
    session: &Session,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> (i16, Vec<(String, Vec<Fetched>)>) {
    // ACLs (Kafka's): DESCRIBE on the group; DESCRIBE on each topic, whose
    // partitions are TOPIC_AUTHORIZATION_FAILED when asked for by name and
    // left out of "every partition".
    if !session.authorized(shared, Operation::Describe, ResourceType::Group, group) {
        return (code::GROUP_AUTHORIZATION_FAILED, Vec::new());
    }
    let may_describe =
        |t: &str| session.authorized(shared, Operation::Describe, ResourceType::Topic, t);
    let not_here = group_check(shared);
    if not_here != code::NONE {
        // Each partition asked for carries the error too (OffsetFetch
        // below v2 has no group error).
        let topics = wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(name, partitions)| {
                let fetched = partitions
                    .into_iter()
                    .map(|p| Fetched {
                        partition: p,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: String::new(),
                        error: not_here,
                    })
                    .collect();
                (name, fetched)
            })
            .collect();
        return (not_here, topics);
    }
    let store = match blocking(|| shared.store.offsets()) {
        Ok(o) => o,
        Err(e) => return (kafka_code(&e), Vec::new()),
    };
    let wanted = match wanted {
        Some(w) => w,
        // Every partition the group has committed.
        None => {
            let mut all: Vec<(String, Vec<i32>)> = Vec::new();
            for (t, p, _) in blocking(|| store.group_offsets(group)).unwrap_or_default() {
                match all.iter_mut().find(|(n, _)| *n == t) {
                    Some((_, ps)) => ps.push(p as i32),
                    None => all.push((t, vec![p as i32])),
                }
            }
            all.retain(|(t, _)| may_describe(t));
            all
        }
    };
    let topics = wanted
        .into_iter()
        .map(|(name, partitions)| {
            let fetched = partitions
                .into_iter()
                .map(|p| {
                    let mut f = Fetched {
                        partition: p,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: String::new(),
                        error: code::NONE,
                    };
                    if !may_describe(&name) {
                        f.error = code::TOPIC_AUTHORIZATION_FAILED;
                    } else if p >= 0 {
                        match blocking(|| store.committed(group, &name, p as u32)) {
                            Ok(Some(c)) => {
                                f.offset = c.offset;
                                f.leader_epoch = c.leader_epoch;
                                f.metadata = c.metadata;
                            }
                            Ok(None) => {}
                            Err(e) => f.error = kafka_code(&e),
                        }
                        let pending = || store.pending(group, &name, p as u32);
                        if require_stable && blocking(pending).unwrap_or(false) {
                            f.error = code::UNSTABLE_OFFSET_COMMIT;
                            f.offset = -1;
                        }
                    }
                    f
                })
                .collect();
            (name, fetched)
        })
        .collect();
    (code::NONE, topics)
}

/// OffsetDelete (KIP-496): forget a group's committed offsets of some
/// partitions. Refused per partition with GROUP_SUBSCRIBED_TO_TOPIC while a
/// member of the group (here or embedded) subscribes to the topic, and as a
/// whole with NON_EMPTY_GROUP for an active group of another protocol than
/// "consumer", as Kafka does.
pub async fn delete(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: OffsetDeleteRequest,
    _v: i16,
) -> OffsetDeleteResponse {
    let group = req.group_id.as_str().to_string();
    let mut resp = OffsetDeleteResponse::default();
    if group.is_empty() {
        resp.error_code = code::INVALID_GROUP_ID;
        return resp;
    }
    if !_s.authorized(shared, Operation::Delete, ResourceType::Group, &group) {
        resp.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return resp;
    }
    resp.error_code = group_check(shared);
    if resp.error_code != code::NONE {
        return resp;
    }
    if shared
        .groups
        .protocol_type(&group)
        .is_some_and(|t| t != "consumer")
    {
        resp.error_code = code::NON_EMPTY_GROUP;
        return resp;
    }
    let embedded = match blocking(|| live_subscription(&shared.store, &group)) {
        Ok(e) => e,
        Err(e) => {
            resp.error_code = kafka_code(&e);
            return resp;
        }
    };
    let known = shared.groups.is_active(&group)
        || embedded.is_some()
        || blocking(|| shared.store.offsets().and_then(|o| o.group_offsets(&group)))
            .is_ok_and(|o| !o.is_empty());
    if !known {
        resp.error_code = code::GROUP_ID_NOT_FOUND;
        return resp;
    }
    let mut forget = Vec::new();
    for t in &req.topics {
        let name = t.name.as_str();
        let topic = blocking(|| shared.store.topic(name));
        let subscribed = shared.groups.subscribed_to(&group, name) == Some(true)
            || embedded.as_ref().is_some_and(|e| e.contains(name));
        let mut rt = OffsetDeleteResponseTopic::default();
        rt.name = t.name.clone();
        for p in &t.partitions {
            let mut rp = OffsetDeleteResponsePartition::default();
            rp.partition_index = p.partition_index;
            rp.error_code = match &topic {
                _ if !_s.authorized(shared, Operation::Read, ResourceType::Topic, name) => {
                    code::TOPIC_AUTHORIZATION_FAILED
                }
                Ok(Some(tm))
                    if p.partition_index >= 0 && (p.partition_index as u32) < tm.partitions =>
                {
                    if subscribed {
                        code::GROUP_SUBSCRIBED_TO_TOPIC
                    } else {
                        forget.push((name.to_string(), p.partition_index as u32));
                        code::NONE
                    }
                }
                Ok(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
                Err(e) => kafka_code(e),
            };
            rt.partitions.push(rp);
        }
        resp.topics.push(rt);
    }
    let deleted = with_leadership(shared, || {
        blocking(|| {
            shared
                .store
                .offsets()
                .and_then(|o| o.delete_offsets(&group, &forget))
        })
    });
    let error = match deleted {
        Err(c) => c,
        Ok(Err(e)) => kafka_code(&e),
        Ok(Ok(_)) if forget.is_empty() => code::NONE,
        Ok(Ok(_)) => replicated(shared).await,
    };
    if error != code::NONE {
        resp.error_code = error;
        resp.topics.clear();
    }
    resp
}
