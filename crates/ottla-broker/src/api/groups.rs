//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups,
//! DescribeGroups and DeleteGroups: thin adapters over the coordinator.
//!
//! ListGroups and DescribeGroups show the groups of the whole directory:
//! those with members here, those with committed offsets, and those whose
//! members are embedded consumers (as `Admin.list_groups` does); all are
//! Kafka "classic" groups.
//!
//! Versions up to Kafka 4.x's: JoinGroup v4+ sends a new dynamic member
//! back for its member id (MEMBER_ID_REQUIRED, KIP-394); JoinGroup v8 and
//! LeaveGroup v5 carry a reason (logged); JoinGroup v9 tells a static
//! leader back without a rebalance to skip the assignment (KIP-814);
//! DescribeGroups v6 answers GROUP_ID_NOT_FOUND for a group unknown here
//! (KIP-1043); FindCoordinator v6 refuses share-group keys (KIP-932).

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::{blocking, s};
use crate::auth::acl::{Operation, ResourceType};
use crate::coordinator::group::{JoinOutcome, JoinRequest, MemberRef, Pending, SyncOutcome};
use crate::coordinator::placement::{group_check, replicated, with_leadership};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_client::group::admin;
use ottla_storage::error::Error;

/// FindCoordinator's key types (`CoordinatorType`).
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;
/// v6 (KIP-932): a share-group partition's share coordinator, asked by
/// brokers.
const SHARE_KEY: i8 = 2;

pub async fn find_coordinator(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: FindCoordinatorRequest,
    v: i16,
) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    let here = _s.advertised(shared);
    let here = (here.0.to_string(), here.1);
    let mut coordinator = None;
    let (error, message) = if req.key_type == GROUP_KEY {
        // In a cluster: the leader of `__consumer_offsets`, created on
        // first use (`coordinator::placement`).
        match shared.group_coordinator((&here.0, here.1)).await {
            Ok(c) => {
                coordinator = Some(c);
                (code::NONE, None)
            }
            Err(e) => (e, None),
        }
    } else if req.key_type != TRANSACTION_KEY {
        // Kafka refuses a key type it does not know, and a share key while
        // share groups are off, with INVALID_REQUEST.
        let why = if req.key_type == SHARE_KEY {
            "Share groups are not supported by this broker (ottla).".to_string()
        } else {
            format!("Unknown coordinator type {}.", req.key_type)
        };
        (code::INVALID_REQUEST, Some(s(&why)))
    } else if shared.cluster.is_some() {
        // The leader of `__transaction_state`, created on first use
        // (`coordinator::txn_placement`).
        match crate::coordinator::txn_placement::find(shared).await {
            Ok(c) => {
                coordinator = Some(c);
                (code::NONE, None)
            }
            Err(e) => (e, None),
        }
    } else {
        // The transaction coordinator: this broker, which leads every
        // partition of `__transaction_state` (see `coordinator::txn`).
        coordinator = Some((crate::api::metadata::NODE_ID, here.0.clone(), here.1));
        (code::NONE, None)
    };
    if v >= 4 {
        r.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let mut c = CoordinatorEntry::default();
                c.key = k.clone();
                let error = acl_refusal(shared, _s, req.key_type, k).unwrap_or(error);
                c.error_code = error;
                c.error_message = message.clone().filter(|_| error != code::NONE);
                if let (code::NONE, Some((id, host, port))) = (error, &coordinator) {
                    c.node_id = BrokerId(*id);
                    c.host = s(host);
                    c.port = i32::from(*port);
                } else {
                    c.node_id = BrokerId(-1);
                    c.port = -1;
                }
                c
            })
            .collect();
    } else {
        let error = acl_refusal(shared, _s, req.key_type, &req.key).unwrap_or(error);
        r.error_code = error;
        if v >= 1 {
            r.error_message = message.filter(|_| error != code::NONE);
        }
        if let (code::NONE, Some((id, host, port))) = (error, &coordinator) {
            r.node_id = BrokerId(*id);
            r.host = s(host);
            r.port = i32::from(*port);
        } else {
            r.node_id = BrokerId(-1);
            r.port = -1;
        }
    }
    r
}

/// FindCoordinator's ACL check: DESCRIBE on the group or transactional id.
fn acl_refusal(shared: &Shared, session: &Session, key_type: i8, key: &str) -> Option<i16> {
    let (resource, refused) = match key_type {
        GROUP_KEY => (ResourceType::Group, code::GROUP_AUTHORIZATION_FAILED),
        TRANSACTION_KEY => (
            ResourceType::TransactionalId,
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ),
        _ => return None,
    };
    (!session.authorized(shared, Operation::Describe, resource, key)).then_some(refused)
}

/// The classic group APIs' ACL check: READ on the group.
pub(crate) fn group_read_refused(shared: &Shared, session: &Session, group: &str) -> bool {
    !session.authorized(shared, Operation::Read, ResourceType::Group, group)
}

pub async fn join(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: JoinGroupRequest,
    v: i16,
) -> JoinGroupResponse {
    // ACLs first (READ on the group, as Kafka's JoinGroup), then whether
    // this broker coordinates it.
    let not_here = if group_read_refused(shared, session, req.group_id.as_str()) {
        code::GROUP_AUTHORIZATION_FAILED
    } else {
        group_check(shared)
    };
    if not_here != code::NONE {
        // In a cluster, only the leader of `__consumer_offsets` coordinates.
        let mut r = JoinGroupResponse::default();
        r.error_code = not_here;
        r.generation_id = -1;
        r.member_id = req.member_id;
        r.protocol_name = Some(s(""));
        return r;
    }
    let jr = JoinRequest {
        group: req.group_id.as_str().to_string(),
        member_id: req.member_id.as_str().to_string(),
        // Null below v5, which has no such field.
        instance_id: req
            .group_instance_id
            .as_ref()
            .map(|i| i.as_str().to_string()),
        client_id: session.client_id.clone(),
        host: format!("/{}", session.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
        // KIP-394: from v4 on a new dynamic member first gets its member id
        // with MEMBER_ID_REQUIRED and joins again with it.
        require_known_member_id: v >= 4,
    };
    if let Some(reason) = req.reason.as_ref() {
        // v8+ (KIP-800): why the member (re)joins; Kafka logs it.
        crate::errors::debug(&format!(
            "JoinGroup {} member {:?}: {}",
            jr.group,
            jr.member_id,
            reason.as_str()
        ));
    }
    let member_id = jr.member_id.clone();
    // A classic member of a consumer group (KIP-848's online migration):
    // the consumer-group coordinator answers, with what it wrote replicated.
    let in_consumer_group = match with_leadership(shared, || {
        blocking(|| shared.consumer_groups.classic_join(&jr))
    }) {
        Ok(Some(o)) => match replicated(shared).await {
            code::NONE => Some(o),
            waited => Some(JoinOutcome {
                error: waited,
                generation: -1,
                member_id: member_id.clone(),
                ..Default::default()
            }),
        },
        Ok(None) => None,
        Err(c) => Some(JoinOutcome {
            error: c,
            generation: -1,
            member_id: member_id.clone(),
            ..Default::default()
        }),
    };
    let pending = match in_consumer_group {
        Some(o) => Pending::Ready(o),
        None => blocking(|| shared.groups.join(jr)),
    };
    let outcome = match pending {
        Pending::Ready(o) => o,
        Pending::Wait(rx) => match shared.unless_stopping(rx).await {
            Some(Ok(o)) => o,
            waited => JoinOutcome {
                // As Kafka's coordinator answers the joins it holds when it
                // unloads the group: find the coordinator again.
                error: if waited.is_none() {
                    code::NOT_COORDINATOR
                } else {
                    code::UNKNOWN_MEMBER_ID
                },
                generation: -1,
                member_id,
                ..Default::default()
            },
        },
    };
    crate::errors::debug(&format!(
        "JoinGroup {} -> error {} gen {} member {} leader {} ({} members)",
        req.group_id.as_str(),
        outcome.error,
        outcome.generation,
        outcome.member_id,
        outcome.leader,
        outcome.members.len()
    ));
    let mut r = JoinGroupResponse::default();
    r.error_code = outcome.error;
    r.generation_id = outcome.generation;
    if v >= 7 {
        r.protocol_type = outcome.protocol_type.as_deref().map(s);
    }
    if v >= 9 {
        // KIP-814: a static leader back without a rebalance gets the members
        // but must not compute a new assignment.
        r.skip_assignment = outcome.skip_assignment;
    }
    r.protocol_name = Some(s(outcome.protocol.as_deref().unwrap_or_default()));
    r.leader = s(&outcome.leader);
    r.member_id = s(&outcome.member_id);
    r.members = outcome
        .members
        .into_iter()
        .map(|joined| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&joined.member_id);
            if v >= 5 {
                m.group_instance_id = joined.instance_id.as_deref().map(s);
            }
            m.metadata = joined.metadata;
            m
        })
        .collect();
    r
}

pub async fn sync(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: SyncGroupRequest,
    v: i16,
) -> SyncGroupResponse {
    if group_read_refused(shared, _s, req.group_id.as_str()) {
        let mut r = SyncGroupResponse::default();
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    let not_here = group_check(shared);
    if not_here != code::NONE {
        let mut r = SyncGroupResponse::default();
        r.error_code = not_here;
        return r;
    }
    let who = MemberRef {
        member_id: req.member_id.as_str(),
        instance_id: req.group_instance_id.as_deref(),
    };
    let in_consumer_group = shared.consumer_groups.classic_sync(
        req.group_id.as_str(),
        req.generation_id,
        who,
        req.protocol_type.as_deref(),
        req.protocol_name.as_deref(),
    );
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
        .collect();
    let pending = match in_consumer_group {
        Some(o) => Pending::Ready(o),
        None => shared
            .groups
            .sync(req.group_id.as_str(), req.generation_id, who, assignments),
    };
    let (error, assignment): SyncOutcome = match pending {
        Pending::Ready(o) => o,
        Pending::Wait(rx) => match shared.unless_stopping(rx).await {
            Some(Ok(o)) => o,
            Some(Err(_)) => (code::UNKNOWN_MEMBER_ID, bytes::Bytes::new()),
            // The broker is stopping (as for JoinGroup).
            None => (code::NOT_COORDINATOR, bytes::Bytes::new()),
        },
    };
    crate::errors::debug(&format!(
        "SyncGroup {} gen {} member {} -> error {error}, {} bytes",
        req.group_id.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        assignment.len()
    ));
    let mut r = SyncGroupResponse::default();
    r.error_code = error;
    r.assignment = assignment;
    if v >= 5 {
        r.protocol_type = req.protocol_type;
        r.protocol_name = req.protocol_name;
    }
    r
}

pub async fn heartbeat(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: HeartbeatRequest,
    _v: i16,
) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    if group_read_refused(shared, _s, req.group_id.as_str()) {
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    r.error_code = group_check(shared);
    if r.error_code != code::NONE {
        return r;
    }
    let who = MemberRef {
        member_id: req.member_id.as_str(),
        instance_id: req.group_instance_id.as_deref(),
    };
    r.error_code = match shared.consumer_groups.classic_heartbeat(
        req.group_id.as_str(),
        req.generation_id,
        who,
    ) {
        Some(c) => c,
        None => shared
            .groups
            .heartbeat(req.group_id.as_str(), req.generation_id, who),
    };
    if r.error_code != code::NONE {
        crate::errors::debug(&format!(
            "Heartbeat {} gen {} member {} -> error {}",
            req.group_id.as_str(),
            req.generation_id,
            req.member_id.as_str(),
            r.error_code
        ));
    }
    r
}

pub async fn leave(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: LeaveGroupRequest,
    v: i16,
) -> LeaveGroupResponse {
    let mut r = LeaveGroupResponse::default();
    if group_read_refused(shared, _s, req.group_id.as_str()) {
        r.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return r;
    }
    r.error_code = group_check(shared);
    if r.error_code != code::NONE {
        return r;
    }
    if v >= 3 {
        // A batch (KIP-345): a static member may be named by its instance
        // id alone.
        let who: Vec<MemberRef<'_>> = req
            .members
            .iter()
            .map(|m| MemberRef {
                member_id: m.member_id.as_str(),
                instance_id: m.group_instance_id.as_deref(),
            })
            .collect();
        for m in &req.members {
            if let Some(reason) = m.reason.as_ref() {
                // v5+ (KIP-800): why the member leaves; Kafka logs it.
                crate::errors::debug(&format!(
                    "LeaveGroup {} member {:?}: {}",
                    req.group_id.as_str(),
                    m.member_id.as_str(),
                    reason.as_str()
                ));
            }
        }
        let codes = match leave_members(shared, req.group_id.as_str(), &who).await {
            Ok(codes) => codes,
            Err(c) => {
                r.error_code = c;
                return r;
            }
        };
        r.members = req
            .members
            .iter()
            .zip(codes)
            .map(|(m, c)| {
                let mut mr = MemberResponse::default();
                mr.member_id = m.member_id.clone();
                mr.group_instance_id = m.group_instance_id.clone();
                mr.error_code = c;
                mr
            })
            .collect();
    } else {
        let who = [MemberRef::dynamic(req.member_id.as_str())];
        r.error_code = match leave_members(shared, req.group_id.as_str(), &who).await {
            Ok(codes) => codes.first().copied().unwrap_or(code::UNKNOWN_MEMBER_ID),
            Err(c) => c,
        };
    }
    r
}

/// LeaveGroup's members: classic members of a consumer group leave it
/// (what it writes replicated first), the others their classic group.
async fn leave_members(
    shared: &Arc<Shared>,
    group: &str,
    who: &[MemberRef<'_>],
) -> Result<Vec<i16>, i16> {
    match with_leadership(shared, || {
        blocking(|| shared.consumer_groups.classic_leave(group, who))
    })? {
        Some(codes) => match replicated(shared).await {
            code::NONE => Ok(codes),
            waited => Err(waited),
        },
        None => Ok(shared.groups.leave(group, who)),
    }
}

pub async fn list(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ListGroupsRequest,
    v: i16,
) -> ListGroupsResponse {
    let mut r = ListGroupsResponse::default();
    if group_check(shared) != code::NONE {
        // In a cluster each broker lists the groups it coordinates, as
        // Kafka's: none here.
        return r;
    }
    // Every group here is a classic one (no KIP-848 "consumer" groups).
    if v >= 5
        && !req.types_filter.is_empty()
        && !req
            .types_filter
            .iter()
            .any(|t| t.as_str().eq_ignore_ascii_case(CLASSIC))
    {
        return r;
    }
    let mut groups = blocking(|| directory_groups(shared));
    groups.sort();
    for (name, state, ptype) in groups {
        if v >= 4
            && !req.states_filter.is_empty()
            && !req
                .states_filter
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(state))
        {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = GroupId(s(&name));
        g.protocol_type = s(&ptype);
        if v >= 4 {
            g.group_state = s(state);
        }
        if v >= 5 {
            g.group_type = s(CLASSIC);
        }
        r.groups.push(g);
    }
    r
}

fn embedded_group(shared: &Arc<Shared>, group: &str) -> bool {
    ottla_client::group::groups_with_live_members(&shared.store)
        .is_ok_and(|gs| gs.iter().any(|g| g == group))
}

/// Kafka's name for the group type of the classic protocol (ListGroups v5).
const CLASSIC: &str = "classic";

/// (name, state, protocol type) of every group of the directory: with
/// members here, with embedded members, or known by committed offsets.
fn directory_groups(shared: &Arc<Shared>) -> Vec<(String, &'static str, String)> {
    let mut groups: Vec<(String, &'static str, String)> = shared.groups.live();
    let embedded = ottla_client::group::groups_with_live_members(&shared.store).unwrap_or_default();
    for g in embedded {
        if !groups.iter().any(|(n, _, _)| *n == g) {
            let state = embedded_state(shared, &g);
            groups.push((g, state, "consumer".to_string()));
        }
    }
    // Groups known only by their committed offsets (either door wrote them).
    if let Ok(names) = shared.store.offsets().and_then(|o| o.groups()) {
        for g in names {
            if !groups.iter().any(|(n, _, _)| *n == g) {
                groups.push((g, "Empty", "consumer".to_string()));
            }
        }
    }
    groups
}

/// The state of a group whose members are embedded consumers, as
/// `Admin.describe_group` reports it ("Stable" or "PreparingRebalance").
fn embedded_state(shared: &Arc<Shared>, group: &str) -> &'static str {
    admin::describe_group(&shared.store, group).map_or("Stable", |d| d.state)
}

/// DeleteGroups: the engine's `delete_group` (as `Admin.delete_group`),
/// refused with NON_EMPTY_GROUP while the group has members, here or
/// embedded; GROUP_ID_NOT_FOUND for a group with neither members nor
/// committed offsets.
pub async fn delete(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DeleteGroupsRequest,
    _v: i16,
) -> DeleteGroupsResponse {
    let mut r = DeleteGroupsResponse::default();
    let not_here = group_check(shared);
    for gid in req.groups_names {
        let name = gid.as_str().to_string();
        let error = if name.is_empty() {
            code::INVALID_GROUP_ID
        } else if !_s.authorized(shared, Operation::Delete, ResourceType::Group, &name) {
            code::GROUP_AUTHORIZATION_FAILED
        } else if not_here != code::NONE {
            not_here
        } else if shared.groups.is_active(&name) {
            code::NON_EMPTY_GROUP
        } else {
            let deleted = with_leadership(shared, || blocking(|| delete_group(shared, &name)));
            match deleted.unwrap_or_else(|e| e) {
                // An empty consumer group (KIP-848) is a group to delete
                // even without offsets; its records go too.
                code::GROUP_ID_NOT_FOUND if blocking(|| shared.consumer_groups.forget(&name)) => {
                    code::NONE
                }
                code::NONE => {
                    blocking(|| shared.consumer_groups.forget(&name));
                    code::NONE
                }
                other => other,
            }
        };
        crate::errors::debug(&format!("DeleteGroups {name:?} -> error {error}"));
        let mut d = DeletableGroupResult::default();
        d.group_id = gid;
        d.error_code = error;
        r.results.push(d);
    }
    // The tombstones answered once on every in-sync replica.
    if r.results.iter().any(|d| d.error_code == code::NONE) {
        let waited = replicated(shared).await;
        for d in r.results.iter_mut().filter(|d| d.error_code == code::NONE) {
            d.error_code = waited;
        }
    }
    r
}

fn delete_group(shared: &Arc<Shared>, group: &str) -> i16 {
    let had_offsets = match shared.store.offsets().and_then(|o| o.group_offsets(group)) {
        Ok(o) => !o.is_empty(),
        Err(e) => return kafka_code(&e),
    };
    // Takes the group's coordinator claim exclusively: fails while embedded
    // members or this broker's hold it, and keeps them out meanwhile.
    match admin::delete_group(&shared.store, group) {
        Ok(()) if had_offsets => code::NONE,
        Ok(()) => code::GROUP_ID_NOT_FOUND,
        Err(Error::GroupNotEmpty(_)) => code::NON_EMPTY_GROUP,
        Err(e) => kafka_code(&e),
    }
}

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeGroupsRequest,
    v: i16,
) -> DescribeGroupsResponse {
    let mut r = DescribeGroupsResponse::default();
    let not_here = group_check(shared);
    for gid in req.groups {
        let mut d = DescribedGroup::default();
        d.group_id = gid.clone();
        if not_here != code::NONE {
            d.error_code = not_here;
            d.group_state = s("Dead");
            r.groups.push(d);
            continue;
        }
        match shared.groups.describe(gid.as_str()) {
            Some(info) => {
                d.group_state = s(info.state);
                d.protocol_type = s(&info.protocol_type);
                d.protocol_data = s(&info.protocol);
                d.members = info
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut dm = DescribedGroupMember::default();
                        dm.member_id = s(&m.member_id);
                        if v >= 4 {
                            dm.group_instance_id = m.instance_id.as_deref().map(s);
                        }
                        dm.client_id = s(&m.client_id);
                        dm.client_host = s(&m.host);
                        dm.member_metadata = m.metadata;
                        dm.member_assignment = m.assignment;
                        dm
                    })
                    .collect();
            }
            None if blocking(|| embedded_group(shared, gid.as_str())) => {
                // Embedded members coordinate it: their state, no member
                // list (as `Admin.describe_group` shows a group this broker
                // coordinates).
                d.group_state = s(blocking(|| embedded_state(shared, gid.as_str())));
                d.protocol_type = s("consumer");
            }
            None => {
                let known = blocking(|| {
                    shared
                        .store
                        .offsets()
                        .and_then(|o| o.group_offsets(gid.as_str()))
                        .map(|v| !v.is_empty())
                        .unwrap_or(false)
                });
                d.group_state = s(if known { "Empty" } else { "Dead" });
                d.protocol_type = s(if known { "consumer" } else { "" });
                if !known && v >= 6 {
                    // KIP-1043: v6 says so instead of a bare Dead group.
                    d.error_code = code::GROUP_ID_NOT_FOUND;
                    d.error_message = Some(s(&format!("Group {} not found.", gid.as_str())));
                }
            }
        }
        r.groups.push(d);
    }
    r
}
