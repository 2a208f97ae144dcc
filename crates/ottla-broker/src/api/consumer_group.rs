//! ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848): adapters over
//! `coordinator::consumer_group`, topic ids to names and back. Also the
//! places where the classic group APIs meet consumer groups: a
//! ConsumerGroupHeartbeat join upgrades a classic group (online migration,
//! `coordinator::consumer_group::classic`), ListGroups lists consumer
//! groups with type "consumer", DescribeGroups answers GROUP_ID_NOT_FOUND
//! for them (as Kafka 4.x: "not a classic group").

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member, TopicPartitions as DescribedTp,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions as HeartbeatTp,
};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    JoinGroupRequest, JoinGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest,
};
use uuid::Uuid;

use super::metadata::topic_by_id;
use super::{blocking, s, topic_name};
use crate::auth::acl::{Operation, ResourceType};
use crate::coordinator::consumer_group::{Assignment, Heartbeat};
use crate::coordinator::placement::{group_check, replicated, with_leadership};
use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

/// Kafka's group type of the consumer protocol (ListGroups v5).
const CONSUMER: &str = "consumer";

pub async fn heartbeat(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: ConsumerGroupHeartbeatRequest,
    v: i16,
) -> ConsumerGroupHeartbeatResponse {
    let group = req.group_id.as_str().to_string();
    let mut r = ConsumerGroupHeartbeatResponse::default();
    // ACLs: READ on the group, DESCRIBE on every topic subscribed to.
    if super::groups::group_read_refused(shared, session, &group) {
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    let hidden: Vec<&str> = req
        .subscribed_topic_names
        .iter()
        .flatten()
        .map(|t| t.as_str())
        .filter(|t| !session.authorized(shared, Operation::Describe, ResourceType::Topic, t))
        .collect();
    if !hidden.is_empty() {
        r.error_code = code::TOPIC_AUTHORIZATION_FAILED;
        r.error_message = Some(s(&format!(
            "The client is not authorized to describe topics: {}",
            hidden.join(", ")
        )));
        return r;
    }
    r.error_code = group_check(shared);
    if r.error_code != code::NONE {
        // In a cluster, only the leader of `__consumer_offsets` coordinates.
        return r;
    }
    if shared.groups.is_active(&group) {
        // KIP-848's online upgrade: a classic group joined by a
        // consumer-protocol member becomes a consumer group, policy allowing.
        match upgrade(shared, &group, req.member_epoch) {
            Ok(true) => {}
            Ok(false) => {
                r.error_code = code::GROUP_ID_NOT_FOUND;
                r.error_message = Some(s(&format!("Group {group} is not a consumer group.")));
                return r;
            }
            Err(c) => {
                r.error_code = c;
                return r;
            }
        }
    }
    // Owned partitions by topic id; ids of topics gone are dropped.
    let owned = req.topic_partitions.as_ref().map(|tps| {
        let mut a = Assignment::new();
        for tp in tps {
            if let Some(name) = topic_by_id(shared, &mut session.topic_names, tp.topic_id) {
                a.entry(name)
                    .or_default()
                    .extend(tp.partitions.iter().copied());
            }
        }
        a
    });
    let hb = Heartbeat {
        version: v,
        group,
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|i| i.as_str().to_string()),
        rack_id: req.rack_id.as_ref().map(|i| i.as_str().to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.as_str().to_string()).collect()),
        regex: req
            .subscribed_topic_regex
            .as_ref()
            .map(|r| r.as_str().to_string()),
        assignor: req.server_assignor.as_ref().map(|a| a.as_str().to_string()),
        owned,
        client_id: session.client_id.clone(),
        host: format!("/{}", session.peer.ip()),
    };
    let out = match with_leadership(shared, || blocking(|| shared.consumer_groups.heartbeat(hb))) {
        Ok(out) => out,
        Err(c) => {
            r.error_code = c;
            return r;
        }
    };
    // What the heartbeat wrote (epochs, assignments) is answered once on
    // every in-sync replica, in a cluster.
    let waited = replicated(shared).await;
    if waited != code::NONE {
        r.error_code = waited;
        return r;
    }
    crate::errors::debug(&format!(
        "ConsumerGroupHeartbeat {} {} epoch {} -> error {} epoch {} {:?}",
        req.group_id.as_str(),
        req.member_id.as_str(),
        req.member_epoch,
        out.error,
        out.member_epoch,
        out.assignment
    ));
    r.error_code = out.error;
    r.error_message = out.message.as_deref().map(s);
    r.member_id = out.member_id.as_deref().map(s);
    r.member_epoch = out.member_epoch;
    r.heartbeat_interval_ms = out.heartbeat_interval_ms;
    r.assignment = out.assignment.map(|a| {
        let mut ha = HeartbeatAssignment::default();
        ha.topic_partitions = with_ids(shared, &a)
            .into_iter()
            .map(|(id, _, ps)| {
                let mut tp = HeartbeatTp::default();
                tp.topic_id = id;
                tp.partitions = ps;
                tp
            })
            .collect();
        ha
    });
    r
}

/// The online upgrade of the classic group `group` for a heartbeat of
/// `epoch` (Kafka's `validateOnlineUpgrade` and `convertToConsumerGroup`):
/// only a joining member (epoch 0) converts it, if
/// `group.consumer.migration.policy` allows. Whether the group is a
/// consumer group now (or no longer a classic group here).
fn upgrade(shared: &Arc<Shared>, group: &str, epoch: i32) -> Result<bool, i16> {
    let policy = shared.consumer_groups.migration_policy();
    if epoch != 0 || !policy.upgrades() {
        crate::errors::debug(&format!(
            "group {group:?} is a classic group; not upgraded (epoch {epoch}, policy {})",
            policy.name()
        ));
        return Ok(false);
    }
    let max = shared.consumer_groups.max_size();
    let upgraded = with_leadership(shared, || {
        blocking(|| {
            shared.groups.upgrade(group, max, |c| {
                shared.consumer_groups.adopt(group, c);
            })
        })
    })?;
    match upgraded {
        Ok(_) => Ok(true),
        Err(why) => {
            crate::errors::warn(&format!("group {group:?}: not upgraded: {why}"));
            Ok(false)
        }
    }
}

/// Each topic of `a` with its id (topics gone are left out).
fn with_ids(shared: &Shared, a: &Assignment) -> Vec<(Uuid, String, Vec<i32>)> {
    let mut ids: HashMap<&str, Uuid> = HashMap::new();
    for t in a.keys() {
        if let Ok(Some(topic)) = blocking(|| shared.store.topic(t)) {
            ids.insert(t, Uuid::from_bytes(topic.id.0));
        }
    }
    a.iter()
        .filter_map(|(t, ps)| {
            let id = ids.get(t.as_str())?;
            Some((*id, t.clone(), ps.iter().copied().collect()))
        })
        .collect()
}

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ConsumerGroupDescribeRequest,
    _v: i16,
) -> ConsumerGroupDescribeResponse {
    let mut r = ConsumerGroupDescribeResponse::default();
    let not_here = group_check(shared);
    for gid in req.group_ids {
        let mut d = DescribedGroup::default();
        d.group_id = gid.clone();
        d.authorized_operations = i32::MIN;
        if !_s.authorized(
            shared,
            Operation::Describe,
            ResourceType::Group,
            gid.as_str(),
        ) {
            d.error_code = code::GROUP_AUTHORIZATION_FAILED;
            r.groups.push(d);
            continue;
        }
        if req.include_authorized_operations {
            d.authorized_operations =
                _s.authorized_operations(shared, ResourceType::Group, gid.as_str());
        }
        if not_here != code::NONE {
            d.error_code = not_here;
            r.groups.push(d);
            continue;
        }
        let classic = shared.groups.is_active(gid.as_str());
        match shared
            .consumer_groups
            .describe(gid.as_str())
            .filter(|_| !classic)
        {
            Some(info) => {
                d.group_state = s(info.state);
                d.group_epoch = info.epoch;
                d.assignment_epoch = info.assignment_epoch;
                d.assignor_name = s(&info.assignor);
                d.members = info
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = Member::default();
                        dm.member_id = s(&m.member_id);
                        dm.instance_id = m.instance_id.as_deref().map(s);
                        dm.rack_id = m.rack_id.as_deref().map(s);
                        dm.member_epoch = m.member_epoch;
                        dm.client_id = s(&m.client_id);
                        dm.client_host = s(&m.host);
                        dm.subscribed_topic_names =
                            m.topics.iter().map(|t| topic_name(t)).collect();
                        dm.subscribed_topic_regex = m.regex.as_deref().map(s);
                        dm.assignment = described(shared, &m.assignment);
                        dm.target_assignment = described(shared, &m.target);
                        // v1: 0 a classic member (online migration), 1 the
                        // consumer protocol.
                        dm.member_type = if m.classic { 0 } else { 1 };
                        dm
                    })
                    .collect();
            }
            None => {
                d.error_code = code::GROUP_ID_NOT_FOUND;
                let why = if classic {
                    format!("Group {} is not a consumer group.", gid.as_str())
                } else {
                    format!("Group {} not found.", gid.as_str())
                };
                d.error_message = Some(s(&why));
                d.group_state = s("Dead");
            }
        }
        r.groups.push(d);
    }
    r
}

fn described(shared: &Shared, a: &Assignment) -> DescribedAssignment {
    let mut da = DescribedAssignment::default();
    da.topic_partitions = with_ids(shared, a)
        .into_iter()
        .map(|(id, name, ps)| {
            let mut tp = DescribedTp::default();
            tp.topic_id = id;
            tp.topic_name = topic_name(&name);
            tp.partitions = ps;
            tp
        })
        .collect();
    da
}

/// OffsetCommit's check for a consumer-protocol group: `None` if `group` is
/// no consumer group with members here (the classic check stands), else the
/// error code. The member epoch is in the generation field (librdkafka
/// sends it there below OffsetCommit v9 too).
pub fn check_commit(shared: &Shared, req: &OffsetCommitRequest) -> Option<i16> {
    shared.consumer_groups.check_commit(
        req.group_id.as_str(),
        req.member_id.as_str(),
        req.generation_id_or_member_epoch,
    )
}

/// JoinGroup (classic): into a consumer group with members here, the
/// member joins it as a classic member (KIP-848's online migration;
/// `groups::join` routes it), or is refused with GROUP_ID_NOT_FOUND ("not a
/// classic group") when `group.consumer.migration.policy` is disabled.
pub async fn classic_join(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: JoinGroupRequest,
    v: i16,
) -> JoinGroupResponse {
    if super::groups::group_read_refused(shared, session, req.group_id.as_str()) {
        let mut r = JoinGroupResponse::default();
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        r.generation_id = -1;
        r.member_id = req.member_id;
        r.protocol_name = Some(s(""));
        return r;
    }
    super::groups::join(shared, session, req, v).await
}

/// ListGroups: every group with DESCRIBE on the cluster, else those the
/// principal may DESCRIBE (Kafka's ACL rule).
pub async fn list(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: ListGroupsRequest,
    v: i16,
) -> ListGroupsResponse {
    let mut r = list_all(shared, session, req, v).await;
    if !session.authorized_cluster(shared, Operation::Describe) {
        r.groups.retain(|g| {
            session.authorized(
                shared,
                Operation::Describe,
                ResourceType::Group,
                g.group_id.as_str(),
            )
        });
    }
    r
}

/// ListGroups' groups: the classic answer, consumer groups here listed with
/// type "consumer" and their state (Kafka's `ConsumerGroupState` names).
async fn list_all(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: ListGroupsRequest,
    v: i16,
) -> ListGroupsResponse {
    let mut live = shared.consumer_groups.live();
    live.sort();
    let types = req.types_filter.clone();
    let states = req.states_filter.clone();
    let mut r = super::groups::list(shared, session, req, v).await;
    r.groups
        .retain(|g| !live.iter().any(|(n, _)| n.as_str() == g.group_id.as_str()));
    let wanted_type = v < 5
        || types.is_empty()
        || types
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(CONSUMER));
    if r.error_code != code::NONE || !wanted_type {
        return r;
    }
    for (name, state) in live {
        if v >= 4
            && !states.is_empty()
            && !states
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(state))
        {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(s(&name));
        g.protocol_type = s(CONSUMER);
        if v >= 4 {
            g.group_state = s(state);
        }
        if v >= 5 {
            g.group_type = s(CONSUMER);
        }
        r.groups.push(g);
    }
    r
}

/// DescribeGroups (classic): a consumer group here is "not a classic
/// group" (GROUP_ID_NOT_FOUND, state Dead), as Kafka 4.x answers; the others
/// as the classic handler describes them.
pub async fn classic_describe(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: DescribeGroupsRequest,
    v: i16,
) -> DescribeGroupsResponse {
    let consumer: Vec<bool> = req
        .groups
        .iter()
        .map(|g| shared.consumer_groups.is_active(g.as_str()))
        .collect();
    let with_ops = v >= 3 && req.include_authorized_operations;
    let mut r = super::groups::describe(shared, session, req, v).await;
    for (d, is_consumer) in r.groups.iter_mut().zip(consumer) {
        // ACLs: DESCRIBE on the group, else GROUP_AUTHORIZATION_FAILED and
        // nothing about it (Kafka's answer).
        let group = d.group_id.as_str().to_string();
        if !session.authorized(shared, Operation::Describe, ResourceType::Group, &group) {
            let mut refused =
                kafka_protocol::messages::describe_groups_response::DescribedGroup::default();
            refused.group_id = d.group_id.clone();
            refused.error_code = code::GROUP_AUTHORIZATION_FAILED;
            *d = refused;
            continue;
        }
        if with_ops {
            d.authorized_operations =
                session.authorized_operations(shared, ResourceType::Group, &group);
        }
        if is_consumer {
            d.error_code = code::GROUP_ID_NOT_FOUND;
            if v >= 6 {
                d.error_message = Some(s(&format!(
                    "Group {} is not a classic group.",
                    d.group_id.as_str()
                )));
            }
            d.group_state = s("Dead");
            d.protocol_type = s("");
            d.protocol_data = s("");
            d.members.clear();
        }
    }
    r
}
