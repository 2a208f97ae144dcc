//! Classic members of a consumer group: KIP-848's online migration, as
//! Kafka 3.8+ serves it.
//!
//! ```text
//!  classic group + a ConsumerGroupHeartbeat join  --upgrade-->  consumer group
//!      (members keep their assignment and generation as their epoch)
//!  consumer group, last consumer-protocol member gone, classic members left
//!                                                  --downgrade-->  classic group (rebalances)
//! ```
//!
//! In a consumer group a classic member speaks JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup, and the coordinator answers them with what its
//! own assignor decided (Kafka's `classicGroupJoinToConsumerGroup` and its
//! siblings): a JoinGroup reconciles the member towards its target (the
//! subscription's owned partitions are what it owns; an eager member owns
//! nothing when it joins again), the generation is the member epoch, no
//! member leads (the leader id is empty), and SyncGroup hands out the
//! member's assigned partitions as a `ConsumerProtocolAssignment`. A
//! Heartbeat answers REBALANCE_IN_PROGRESS when the member must join again:
//! the group epoch moved past its epoch, it has partitions to give up, or
//! partitions it waits for are free now.
//!
//! The conversions carry the coordinator claim with the group and are
//! written to `__consumer_offsets` as the group's records (the classic
//! members with Kafka's `ClassicMemberMetadata`), so a restarted broker, or
//! a new coordinator in a cluster, resumes the migrated group.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::records::{self, ClassicRecord, Records};
use super::{contains, pairs, Assignment, ConsumerGroupCoordinator, Group, Member, MemberState};
use crate::coordinator::group::{
    Converted, ConvertedMember, JoinOutcome, JoinRequest, MemberRef, SyncOutcome,
};
use crate::errors::{code, debug, warn};
use ottla_storage::log::Durability;

/// The protocol type of the consumer's embedded protocol.
const CONSUMER: &str = "consumer";

fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

fn clamp_ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// A member's session: a classic member's own, else the group setting.
pub(super) fn session(classic: &Option<ClassicRecord>, default: Duration) -> Duration {
    classic
        .as_ref()
        .map_or(default, |c| millis(c.session_timeout_ms))
}

/// A `ConsumerProtocolSubscription` (JoinGroup metadata of protocol type
/// "consumer").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub version: i16,
    pub topics: Vec<String>,
    /// v1+: the partitions the member owns (cooperative assignors).
    pub owned: Option<Assignment>,
    /// v2+: the generation the owned partitions are of.
    pub generation: Option<i32>,
    /// v3+: the member's rack.
    pub rack_id: Option<String>,
}

/// A cursor over a client's bytes: every read checked.
struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.b.get(..n)?;
        self.b = self.b.get(n..)?;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    /// A nullable string (`None` for null).
    fn string(&mut self) -> Option<Option<String>> {
        match self.i16()? {
            -1 => Some(None),
            n => {
                let n = usize::try_from(n).ok()?;
                Some(Some(String::from_utf8(self.take(n)?.to_vec()).ok()?))
            }
        }
    }
    fn bytes(&mut self) -> Option<()> {
        match self.i32()? {
            -1 => Some(()),
            n => self.take(usize::try_from(n).ok()?).map(|_| ()),
        }
    }
    /// An array's length (null reads as empty), bounded by the bytes left.
    fn count(&mut self) -> Option<usize> {
        let n = self.i32()?;
        if n < 0 {
            return Some(0);
        }
        let n = usize::try_from(n).ok()?;
        (n <= self.b.len()).then_some(n)
    }
    /// `[topic, [partition]]`
    fn partitions(&mut self) -> Option<Assignment> {
        let mut a = Assignment::new();
        for _ in 0..self.count()? {
            let topic = self.string()??;
            let mut ps = BTreeSet::new();
            for _ in 0..self.count()? {
                ps.insert(self.i32()?);
            }
            if !ps.is_empty() {
                a.entry(topic).or_default().extend(ps);
            }
        }
        Some(a)
    }
}

/// A classic consumer's subscription; `None` if it does not decode.
/// Fields of later versions missing at the end are taken as absent.
pub fn parse_subscription(metadata: &[u8]) -> Option<Subscription> {
    let mut c = Cursor { b: metadata };
    let version = c.i16()?;
    if version < 0 {
        return None;
    }
    let mut topics = Vec::new();
    for _ in 0..c.count()? {
        topics.push(c.string()??);
    }
    c.bytes()?;
    let mut sub = Subscription {
        version,
        topics,
        ..Default::default()
    };
    if version >= 1 && !c.b.is_empty() {
        sub.owned = Some(c.partitions()?);
        if version >= 2 && !c.b.is_empty() {
            sub.generation = Some(c.i32()?);
            if version >= 3 && !c.b.is_empty() {
                sub.rack_id = c.string()?;
            }
        }
    }
    Some(sub)
}

/// A `ConsumerProtocolAssignment`'s partitions; `None` if it does not decode.
pub fn parse_assignment(assignment: &[u8]) -> Option<Assignment> {
    let mut c = Cursor { b: assignment };
    if c.i16()? < 0 {
        return None;
    }
    c.partitions()
}

/// `a` as a `ConsumerProtocolAssignment` of `version` (0 to 3 share one
/// layout), without user data.
pub fn assignment_bytes(a: &Assignment, version: i16) -> Bytes {
    let mut b = version.clamp(0, 3).to_be_bytes().to_vec();
    let topics: Vec<(&String, &BTreeSet<i32>)> = a.iter().filter(|(_, p)| !p.is_empty()).collect();
    b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (t, ps) in topics {
        let name = &t.as_bytes()[..t.len().min(i16::MAX as usize)];
        b.extend_from_slice(&(name.len() as i16).to_be_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
        for p in ps {
            b.extend_from_slice(&p.to_be_bytes());
        }
    }
    b.extend_from_slice(&(-1i32).to_be_bytes());
    Bytes::from(b)
}

/// The subscription a classic member's protocols carry (the first that
/// decodes), with its version.
fn subscription_of(protocols: &[(String, Vec<u8>)]) -> Option<Subscription> {
    protocols.iter().find_map(|(_, m)| parse_subscription(m))
}

/// A classic member of a classic group as a member of the consumer group
/// it becomes (Kafka's `ConsumerGroup.fromClassicGroup`): its generation is
/// its epoch, its last assignment its assigned partitions, its JoinGroup
/// subscription its topics.
pub(super) fn from_classic(m: ConvertedMember, generation: i32, now: Instant) -> Member {
    let protocols: Vec<(String, Vec<u8>)> = m
        .protocols
        .iter()
        .map(|(n, b)| (n.clone(), b.to_vec()))
        .collect();
    let sub = subscription_of(&protocols).unwrap_or_default();
    let mut topics = sub.topics;
    topics.sort();
    topics.dedup();
    Member {
        id: m.id,
        instance_id: m.instance_id,
        rack_id: sub.rack_id.filter(|r| !r.is_empty()),
        client_id: m.client_id,
        host: m.host,
        rebalance_timeout: millis(m.rebalance_timeout_ms),
        topics,
        regex: None,
        assignor: None,
        epoch: generation,
        previous_epoch: generation,
        state: MemberState::Stable,
        assigned: parse_assignment(&m.assignment).unwrap_or_default(),
        revoking: Assignment::new(),
        owned: None,
        expires: now + millis(m.session_timeout_ms),
        revoke_deadline: None,
        left: false,
        classic: Some(ClassicRecord {
            session_timeout_ms: m.session_timeout_ms,
            protocols,
        }),
    }
}

/// A classic member of a consumer group as a member of the classic group
/// it becomes (Kafka's `ClassicGroup.fromConsumerGroup`); `None` for a
/// consumer-protocol member.
pub(super) fn to_classic(m: &Member) -> Option<ConvertedMember> {
    let c = m.classic.as_ref()?;
    let version = subscription_of(&c.protocols).map_or(0, |s| s.version);
    Some(ConvertedMember {
        id: m.id.clone(),
        instance_id: m.instance_id.clone(),
        client_id: m.client_id.clone(),
        host: m.host.clone(),
        session_timeout_ms: c.session_timeout_ms,
        rebalance_timeout_ms: clamp_ms(m.rebalance_timeout),
        protocols: c
            .protocols
            .iter()
            .map(|(n, b)| (n.clone(), Bytes::from(b.clone())))
            .collect(),
        assignment: assignment_bytes(&m.assigned, version),
    })
}

/// Kafka's `ConsumerGroup.supportsClassicProtocols`: the consumer protocol
/// type, and a protocol every other classic member supports.
fn supports(
    g: &Group,
    member_id: &str,
    protocol_type: &str,
    protocols: &[(String, Bytes)],
) -> bool {
    if protocol_type != CONSUMER || protocols.is_empty() {
        return false;
    }
    let others: Vec<&ClassicRecord> = g
        .members
        .values()
        .filter(|m| m.id != member_id)
        .filter_map(|m| m.classic.as_ref())
        .collect();
    others.is_empty()
        || protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|c| c.protocols.iter().any(|(n, _)| n == name))
        })
}

/// Kafka's `validateConsumerGroupMember` for a classic request: the member
/// id of `who`, a classic member of `g`.
fn classic_member(g: &Group, who: MemberRef<'_>) -> Result<String, i16> {
    if let Some(i) = who.instance_id {
        match g
            .members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(i))
        {
            None => return Err(code::UNKNOWN_MEMBER_ID),
            Some(m) if !who.member_id.is_empty() && m.id != who.member_id => {
                return Err(code::FENCED_INSTANCE_ID)
            }
            Some(m) if m.classic.is_none() => return Err(code::UNKNOWN_MEMBER_ID),
            Some(m) => return Ok(m.id.clone()),
        }
    }
    match g.members.get(who.member_id) {
        Some(m) if m.classic.is_some() => Ok(m.id.clone()),
        _ => Err(code::UNKNOWN_MEMBER_ID),
    }
}

impl Group {
    /// Kafka's `waitingOnUnreleasedPartition`: partitions of the member's
    /// target it has not got are all still held by others.
    fn waiting_on_unreleased(&self, id: &str) -> bool {
        let Some(m) = self.members.get(id) else {
            return false;
        };
        let held = self.held_by_others(id);
        self.target.get(id).map_or(true, |t| {
            pairs(t)
                .filter(|(t, p)| !contains(&m.assigned, t, *p))
                .all(|tp| held.contains(&tp))
        })
    }
}

impl ConsumerGroupCoordinator {
    /// The online upgrade's second half: the classic group `name` (from
    /// `GroupCoordinator::upgrade`) becomes a consumer group here, at its
    /// generation, each member's target its current assignment; written to
    /// `__consumer_offsets` at once.
    pub fn adopt(&self, name: &str, c: Converted) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        // An empty consumer group of that name gives way (its records are
        // replaced by the new group's).
        let old = groups.remove(name);
        let mut g = Group {
            epoch: c.generation,
            assignment_epoch: c.generation,
            claim: c.claim,
            persisted: old.map(|o| o.persisted).unwrap_or_default(),
            ..Default::default()
        };
        for cm in c.members {
            let m = from_classic(cm, c.generation, now);
            g.target.insert(m.id.clone(), m.assigned.clone());
            g.members.insert(m.id.clone(), m);
        }
        g.assignor = g.choose_assignor();
        g.meta = self.metadata(&g);
        debug(&format!(
            "group {name:?}: upgraded to a consumer group at epoch {} with {} classic member(s)",
            g.epoch,
            g.members.len()
        ));
        self.persist(name, &mut g);
        groups.insert(name.to_string(), g);
    }

    /// Tombstones for every record of a group leaving this coordinator.
    fn tombstone(&self, name: &str, persisted: &Records) {
        let tombstones = records::diff(persisted, &Records::new());
        if tombstones.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .offsets()
            .and_then(|o| o.write_group_records(&tombstones, Durability::PageCache))
        {
            warn(&format!(
                "consumer group {name:?}: cannot delete its records: {e}"
            ));
        }
    }

    /// The online downgrade (Kafka's `validateOnlineDowngrade` and
    /// `convertToClassicGroup`): a group whose members all use the classic
    /// protocol now leaves for the classic coordinator, its records
    /// tombstoned, if the policy allows it.
    pub(super) fn maybe_downgrade(
        &self,
        groups: &mut std::collections::HashMap<String, Group>,
        name: &str,
    ) {
        if !self.settings.migration.downgrades() {
            return;
        }
        let all_classic = groups.get(name).is_some_and(|g| {
            !g.members.is_empty() && g.members.values().all(|m| m.classic.is_some())
        });
        if !all_classic {
            return;
        }
        let Some(mut g) = groups.remove(name) else {
            return;
        };
        self.tombstone(name, &g.persisted);
        // The classic generation is the members' latest epoch (the group
        // epoch before the last consumer-protocol member left, as Kafka
        // converts before it bumps it): members there heartbeat into
        // REBALANCE_IN_PROGRESS and join again.
        let generation = g.members.values().map(|m| m.epoch).max().unwrap_or(g.epoch);
        let converted = Converted {
            generation,
            members: g.members.values().filter_map(to_classic).collect(),
            claim: g.claim.take(),
        };
        debug(&format!(
            "group {name:?}: downgraded at generation {generation} ({} classic member(s))",
            converted.members.len()
        ));
        self.handoff.lock().push((name.to_string(), converted));
    }

    /// JoinGroup of a classic member into a consumer group with members
    /// here (Kafka's `classicGroupJoinToConsumerGroup`); `None` if `group`
    /// is no such group (the classic coordinator answers).
    pub fn classic_join(&self, req: &JoinRequest) -> Option<JoinOutcome> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        if groups.get(&req.group).is_some_and(|g| g.members.is_empty()) {
            // An empty consumer group gives way to the classic group the
            // member makes (Kafka's `maybeDeleteEmptyConsumerGroup`): its
            // records are tombstoned, so a restart does not bring it back
            // beside the classic group.
            if let Some(old) = groups.remove(&req.group) {
                self.tombstone(&req.group, &old.persisted);
            }
            return None;
        }
        let g = groups
            .get_mut(&req.group)
            .filter(|g| !g.members.is_empty())?;
        let fail = |error: i16, why: &str| {
            debug(&format!(
                "JoinGroup {} member {:?} into a consumer group: {why}",
                req.group, req.member_id
            ));
            Some(JoinOutcome::error(error, &req.member_id))
        };
        // Whatever `group.consumer.migration.policy` says: it governs the
        // conversions only (Kafka's `classicGroupJoinToConsumerGroup` serves
        // a classic member of a non-empty consumer group under every policy).
        if !supports(g, &req.member_id, &req.protocol_type, &req.protocols) {
            return fail(
                code::INCONSISTENT_GROUP_PROTOCOL,
                "its protocols are not supported",
            );
        }
        let protocols: Vec<(String, Vec<u8>)> = req
            .protocols
            .iter()
            .map(|(n, b)| (n.clone(), b.to_vec()))
            .collect();
        let Some(sub) = subscription_of(&protocols) else {
            return fail(
                code::INCONSISTENT_GROUP_PROTOCOL,
                "its subscription does not decode",
            );
        };
        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if req.instance_id.is_none() && req.require_known_member_id {
                return Some(JoinOutcome::error(
                    code::MEMBER_ID_REQUIRED,
                    &self.new_member_id(),
                ));
            }
            member_id = self.new_member_id();
        }
        let static_id = req.instance_id.as_deref().and_then(|i| {
            g.members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(i))
                .map(|m| m.id.clone())
        });
        if let Some(old) = static_id.filter(|old| *old != member_id) {
            if !req.member_id.is_empty() {
                return fail(
                    code::FENCED_INSTANCE_ID,
                    "its instance id is another member's",
                );
            }
            // A static member back with a new member id takes the old
            // one's place, epoch and partitions (no new group epoch).
            if let Some(mut m) = g.members.remove(&old) {
                m.id = member_id.clone();
                m.left = false;
                if let Some(t) = g.target.remove(&old) {
                    g.target.insert(member_id.clone(), t);
                }
                g.members.insert(member_id.clone(), m);
            }
        }
        let mut changed = false;
        match g.members.get(&member_id) {
            Some(m) if m.classic.is_none() => {
                return fail(code::UNKNOWN_MEMBER_ID, "a consumer-protocol member");
            }
            Some(_) => {}
            None if g.members.len() >= self.settings.max_size => {
                return fail(super::error::GROUP_MAX_SIZE_REACHED, "the group is full");
            }
            None => {
                let mut m = Member::new(
                    member_id.clone(),
                    &super::Heartbeat::default(),
                    now,
                    Duration::ZERO,
                );
                m.instance_id = req.instance_id.clone();
                g.members.insert(member_id.clone(), m);
                changed = true;
            }
        }
        let Some(m) = g.members.get_mut(&member_id) else {
            return fail(code::UNKNOWN_MEMBER_ID, "gone");
        };
        let session = millis(req.session_timeout_ms);
        m.expires = now + session;
        m.client_id = req.client_id.clone();
        m.host = req.host.clone();
        m.rebalance_timeout = millis(req.rebalance_timeout_ms.max(req.session_timeout_ms));
        if let Some(rack) = sub.rack_id.clone().filter(|r| !r.is_empty()) {
            m.rack_id = Some(rack);
        }
        let mut topics = sub.topics.clone();
        topics.sort();
        topics.dedup();
        if topics != m.topics {
            m.topics = topics;
            changed = true;
        }
        // What it owns: a new member nothing; an eager member joining again
        // has given everything up (its subscription lists nothing).
        m.owned = Some(if m.epoch == 0 {
            Assignment::new()
        } else {
            sub.owned.clone().unwrap_or_default()
        });
        m.classic = Some(ClassicRecord {
            session_timeout_ms: req.session_timeout_ms,
            protocols,
        });
        self.bump_and_target(g, changed);
        // Twice: the owned partitions of this request may already show the
        // revocation the first step asks for.
        g.reconcile(&member_id, now);
        g.reconcile(&member_id, now);
        self.persist(&req.group, g);
        let m = g.members.get(&member_id)?;
        debug(&format!(
            "JoinGroup {} classic member {member_id} in a consumer group: epoch {} {:?} assigned {:?}",
            req.group, m.epoch, m.state, m.assigned
        ));
        Some(JoinOutcome {
            error: code::NONE,
            generation: m.epoch,
            protocol_type: Some(CONSUMER.to_string()),
            protocol: req.protocols.first().map(|(n, _)| n.clone()),
            // No member leads: the coordinator assigns.
            leader: String::new(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
        })
    }

    /// SyncGroup of a classic member of a consumer group (Kafka's
    /// `classicGroupSyncToConsumerGroup`): its assigned partitions; `None`
    /// if `group` is no consumer group with members here.
    pub fn classic_sync(
        &self,
        group: &str,
        generation: i32,
        who: MemberRef<'_>,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
    ) -> Option<SyncOutcome> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group).filter(|g| !g.members.is_empty())?;
        let fail = |e: i16| Some((e, Bytes::new()));
        let id = match classic_member(g, who) {
            Ok(id) => id,
            Err(e) => return fail(e),
        };
        let group_epoch = g.epoch;
        let m = g.members.get_mut(&id)?;
        if generation != m.epoch {
            return fail(code::ILLEGAL_GENERATION);
        }
        let c = m.classic.as_ref()?;
        if protocol_type.is_some_and(|t| t != CONSUMER)
            || protocol.is_some_and(|p| !c.protocols.iter().any(|(n, _)| n == p))
        {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        // A member still revoking keeps its epoch: it syncs, gives the
        // partitions up, and joins again.
        if group_epoch > m.epoch && m.state != MemberState::UnrevokedPartitions {
            return fail(code::REBALANCE_IN_PROGRESS);
        }
        m.expires = Instant::now() + millis(c.session_timeout_ms);
        let version = subscription_of(&c.protocols).map_or(0, |s| s.version);
        Some((code::NONE, assignment_bytes(&m.assigned, version)))
    }

    /// Heartbeat of a classic member of a consumer group (Kafka's
    /// `classicGroupHeartbeatToConsumerGroup`); `None` if `group` is no
    /// consumer group with members here.
    pub fn classic_heartbeat(
        &self,
        group: &str,
        generation: i32,
        who: MemberRef<'_>,
    ) -> Option<i16> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group).filter(|g| !g.members.is_empty())?;
        let id = match classic_member(g, who) {
            Ok(id) => id,
            Err(e) => return Some(e),
        };
        let waiting = g.waiting_on_unreleased(&id);
        let group_epoch = g.epoch;
        let m = g.members.get_mut(&id)?;
        if generation != m.epoch {
            return Some(code::ILLEGAL_GENERATION);
        }
        m.expires = Instant::now() + session(&m.classic, Duration::ZERO);
        let rejoin = m.epoch < group_epoch
            || m.state == MemberState::UnrevokedPartitions
            || (m.state == MemberState::UnreleasedPartitions && !waiting);
        Some(if rejoin {
            code::REBALANCE_IN_PROGRESS
        } else {
            code::NONE
        })
    }

    /// LeaveGroup of classic members of a consumer group: each member's
    /// code; `None` if `group` is no consumer group with members here. The
    /// group is downgraded when only classic members are left and the
    /// policy allows it.
    pub fn classic_leave(&self, group: &str, who: &[MemberRef<'_>]) -> Option<Vec<i16>> {
        let mut groups = self.groups.lock();
        let g = groups.get_mut(group).filter(|g| !g.members.is_empty())?;
        let codes: Vec<i16> = who
            .iter()
            .map(|w| match classic_member(g, *w) {
                Ok(id) => {
                    debug(&format!("group {group:?}: classic member {id} leaves"));
                    g.remove(
                        std::slice::from_ref(&id),
                        self.settings.broker_rack.as_deref(),
                    );
                    code::NONE
                }
                Err(e) => e,
            })
            .collect();
        self.persist(group, g);
        self.maybe_downgrade(&mut groups, group);
        Some(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::consumer_group::MigrationPolicy;

    fn subscription_v1(topics: &[&str], owned: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for t in topics {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(owned.len() as i32).to_be_bytes());
        for (t, ps) in owned {
            b.extend_from_slice(&(t.len() as i16).to_be_bytes());
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(&(ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend_from_slice(&p.to_be_bytes());
            }
        }
        b
    }

    fn a(pairs: &[(&str, &[i32])]) -> Assignment {
        pairs
            .iter()
            .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn subscriptions_decode_at_every_version_and_never_panic() {
        let b = subscription_v1(&["t", "u"], &[("t", &[0, 2])]);
        let s = parse_subscription(&b).expect("decodes");
        assert_eq!(s.version, 1);
        assert_eq!(s.topics, vec!["t", "u"]);
        assert_eq!(s.owned, Some(a(&[("t", &[0, 2])])));
        // v0: topics and user data only.
        // (the owned partitions take 19 bytes: count, "t", count, 0, 2)
        let mut v0 = b[..b.len() - 19].to_vec();
        v0[1] = 0;
        let s0 = parse_subscription(&v0).expect("v0");
        assert_eq!((s0.version, s0.owned), (0, None));
        // v3 with a generation and a rack.
        let mut v3 = b.clone();
        v3[1] = 3;
        v3.extend_from_slice(&7i32.to_be_bytes());
        v3.extend_from_slice(&[0, 2, b'r', b'1']);
        let s3 = parse_subscription(&v3).expect("v3");
        assert_eq!(
            (s3.generation, s3.rack_id.as_deref()),
            (Some(7), Some("r1"))
        );
        for n in 0..v3.len() {
            let _ = parse_subscription(&v3[..n]);
        }
        assert_eq!(parse_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(parse_subscription(&[0xff, 0xff]), None);
    }

    use crate::coordinator::consumer_group::{Heartbeat, Settings};
    use crate::coordinator::group::{GroupCoordinator, Pending};
    use ottla_storage::store::Store;

    fn settings(migration: MigrationPolicy) -> Settings {
        Settings {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(30),
            max_size: 10,
            broker_rack: None,
            migration,
        }
    }

    fn classic_request(member: &str) -> JoinRequest {
        JoinRequest {
            group: "g".into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "test".into(),
            host: "/127.0.0.1".into(),
            session_timeout_ms: 30_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: CONSUMER.into(),
            protocols: vec![("range".into(), Bytes::from(subscription_v1(&["t"], &[])))],
            require_known_member_id: false,
        }
    }

    fn consumer_beat(c: &ConsumerGroupCoordinator, id: &str, epoch: i32) -> super::super::Outcome {
        c.heartbeat(Heartbeat {
            version: 1,
            group: "g".into(),
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 60_000,
            topics: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: Some(Assignment::new()),
            ..Default::default()
        })
    }

    /// A classic group of one member `x` holding t-0 and t-1 at generation 1.
    fn classic_group(classic: &GroupCoordinator) -> String {
        let Pending::Wait(mut rx) = classic.join(classic_request("")) else {
            panic!("the join waits for its round");
        };
        let j = rx.try_recv().expect("alone: the round is over");
        assert_eq!((j.error, j.generation), (code::NONE, 1));
        let both = assignment_bytes(&a(&[("t", &[0, 1])]), 0);
        let x = j.member_id;
        let Pending::Ready((error, _)) =
            classic.sync("g", 1, MemberRef::dynamic(&x), vec![(x.clone(), both)])
        else {
            panic!("the leader's sync is answered at once");
        };
        assert_eq!(error, code::NONE);
        x
    }

    #[test]
    fn a_classic_group_upgrades_for_a_consumer_member_and_downgrades_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        store.create_topic("t", 2, &[]).expect("create");
        let classic = GroupCoordinator::new(store.clone());
        let cg = ConsumerGroupCoordinator::with_handoff(
            store.clone(),
            settings(MigrationPolicy::Bidirectional),
            classic.handoff(),
        );
        let x = classic_group(&classic);
        let who = MemberRef::dynamic(&x);
        assert_eq!(classic.upgrade("g", 10, |c| cg.adopt("g", c)), Ok(true));
        assert!(!classic.is_active("g") && cg.is_active("g"));
        // The consumer member joins at a new epoch, waiting for t-1.
        let o = consumer_beat(&cg, "c", 0);
        assert_eq!((o.error, o.member_epoch), (code::NONE, 2));
        assert_eq!(o.assignment, Some(Assignment::new()));
        assert_eq!(
            cg.classic_heartbeat("g", 1, who),
            Some(code::REBALANCE_IN_PROGRESS)
        );
        let j = cg
            .classic_join(&classic_request(&x))
            .expect("a consumer group");
        assert_eq!(
            (j.error, j.generation, j.leader.as_str()),
            (code::NONE, 2, "")
        );
        assert_eq!(
            cg.classic_sync("g", 1, who, None, None),
            Some((code::ILLEGAL_GENERATION, Bytes::new()))
        );
        let (error, mine) = cg
            .classic_sync("g", 2, who, Some(CONSUMER), Some("range"))
            .expect("synced");
        assert_eq!(error, code::NONE);
        assert_eq!(parse_assignment(&mine), Some(a(&[("t", &[0])])));
        assert_eq!(cg.classic_heartbeat("g", 2, who), Some(code::NONE));
        let o = consumer_beat(&cg, "c", 2);
        assert_eq!(o.assignment, Some(a(&[("t", &[1])])));
        // The same group read back from its records: the classic member at
        // its epoch (a restarted broker).
        cg.release_all();
        cg.reload();
        let described = cg.describe("g").expect("kept");
        let kinds: Vec<(String, bool, i32)> = described
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.classic, m.member_epoch))
            .collect();
        assert_eq!(
            kinds,
            vec![("c".to_string(), false, 2), (x.clone(), true, 2)]
        );
        assert_eq!(cg.classic_heartbeat("g", 2, who), Some(code::NONE));
        // The consumer member leaves: a classic group again, rebalancing
        // at the classic member's generation.
        assert_eq!(consumer_beat(&cg, "c", -1).error, code::NONE);
        assert!(!cg.is_active("g") && classic.is_active("g"));
        assert_eq!(classic.heartbeat("g", 2, who), code::REBALANCE_IN_PROGRESS);
        assert_eq!(
            classic.describe("g").map(|d| d.state),
            Some("PreparingRebalance")
        );
        // Its records are gone: nothing to resume.
        cg.reload();
        assert!(cg.describe("g").is_none());
    }

    #[test]
    fn the_policy_decides_which_conversions_happen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        store.create_topic("t", 2, &[]).expect("create");
        let classic = GroupCoordinator::new(store.clone());
        let cg = ConsumerGroupCoordinator::with_handoff(
            store.clone(),
            settings(MigrationPolicy::Upgrade),
            classic.handoff(),
        );
        let x = classic_group(&classic);
        assert_eq!(
            classic
                .upgrade("g", 0, |c| cg.adopt("g", c))
                .map_err(|_| ()),
            Err(())
        );
        assert_eq!(classic.upgrade("g", 10, |c| cg.adopt("g", c)), Ok(true));
        consumer_beat(&cg, "c", 0);
        // No downgrade: a consumer group of one classic member.
        assert_eq!(consumer_beat(&cg, "c", -1).error, code::NONE);
        assert!(cg.is_active("g") && !classic.is_active("g"));
        assert_eq!(
            cg.classic_leave("g", &[MemberRef::dynamic(&x)]),
            Some(vec![code::NONE])
        );
        assert!(!cg.is_active("g"));
        // The empty consumer group gives way to a classic member, records
        // and all (nothing to read back).
        assert!(cg.describe("g").is_some());
        assert!(cg.classic_join(&classic_request("")).is_none());
        assert!(cg.describe("g").is_none());
        cg.release_all();
        cg.reload();
        assert!(cg.describe("g").is_none());
        // Disabled: no conversion, but a classic member of a consumer group
        // with members is still served by it (as Kafka 4.x does).
        let off = ConsumerGroupCoordinator::new(store, settings(MigrationPolicy::Disabled));
        consumer_beat(&off, "d", 0);
        let j = off
            .classic_join(&classic_request(""))
            .expect("a consumer group");
        assert_eq!(j.error, code::NONE);
        assert_eq!(
            MigrationPolicy::parse("UPGRADE"),
            Some(MigrationPolicy::Upgrade)
        );
        assert_eq!(MigrationPolicy::parse("both"), None);
    }

    #[test]
    fn assignments_round_trip() {
        let x = a(&[("t", &[0, 1]), ("u", &[3])]);
        let b = assignment_bytes(&x, 1);
        assert_eq!(&b[..2], &[0, 1]);
        assert_eq!(parse_assignment(&b), Some(x));
        assert_eq!(
            parse_assignment(&assignment_bytes(&Assignment::new(), 9)),
            Some(Assignment::new())
        );
        for n in 0..b.len() {
            let _ = parse_assignment(&b[..n]);
        }
    }

    #[test]
    fn a_classic_member_converts_both_ways() {
        let sub = Bytes::from(subscription_v1(&["t"], &[]));
        let cm = ConvertedMember {
            id: "m".into(),
            instance_id: Some("i".into()),
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            session_timeout_ms: 6000,
            rebalance_timeout_ms: 9000,
            protocols: vec![("range".into(), sub)],
            assignment: assignment_bytes(&a(&[("t", &[1, 2])]), 0),
        };
        let m = from_classic(cm.clone(), 5, Instant::now());
        assert_eq!(
            (m.epoch, m.previous_epoch, m.state),
            (5, 5, MemberState::Stable)
        );
        assert_eq!(m.topics, vec!["t"]);
        assert_eq!(m.assigned, a(&[("t", &[1, 2])]));
        assert_eq!(m.rebalance_timeout, Duration::from_millis(9000));
        let back = to_classic(&m).expect("a classic member");
        assert_eq!(
            back,
            ConvertedMember {
                assignment: assignment_bytes(&a(&[("t", &[1, 2])]), 1),
                ..cm
            }
        );
        let mut consumer = m;
        consumer.classic = None;
        assert!(to_classic(&consumer).is_none());
    }
}
