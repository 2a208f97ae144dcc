//! The group coordinator: Kafka's classic consumer-group protocol.
//!
//! ```text
//!  Empty --join--> PreparingRebalance --all joined / rebalance timeout-->
//!  CompletingRebalance --leader's SyncGroup--> Stable
//!  Stable --join / leave / session timeout--> PreparingRebalance
//! ```
//!
//! The broker only referees: the group's leader (a client) computes the
//! assignment, as in Kafka, and SyncGroup hands each member its share.
//! JoinGroup and a follower's SyncGroup park on a oneshot channel until the
//! round completes; the state itself sits behind one mutex never held across
//! an await. A reaper task expires members whose session ran out and ends
//! rebalances whose timeout passed.
//!
//! Static members (KIP-345) carry a `group.instance.id`: a static member
//! that joins again with a new member id (a restarted process) takes its
//! old member's place, assignment and leadership without a rebalance, and
//! the old member id is fenced (FENCED_INSTANCE_ID). A static member still
//! leaves by LeaveGroup or when its session runs out.
//!
//! A new dynamic member (JoinGroup v4+, KIP-394) is first answered
//! MEMBER_ID_REQUIRED with a member id of its own, kept as pending for a
//! session timeout; it joins the group when it comes back with that id, so
//! a client that never returns leaves no member behind to wait for.
//!
//! The first rebalance of an empty group waits `initial_rebalance_delay`
//! (Kafka's `group.initial.rebalance.delay.ms`) for more members, extended
//! by the delay while new members keep joining, up to the rebalance
//! timeout, so members started together get one rebalance.
//!
//! Committed offsets do not live here: they go to the engine's OffsetStore,
//! shared with embedded consumers. While a group has members here, the
//! broker holds the group's coordinator claim (see `claim`).
//!
//! KIP-848's online migration moves a group between this coordinator and
//! the consumer-protocol one (`consumer_group`) as a [`Converted`] group:
//! `upgrade` hands a classic group over when a consumer-protocol member
//! joins it; a consumer group whose last consumer-protocol member left comes
//! back through the [`Handoff`] and rebalances here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::claim::{self, CoordinatorClaim};
use crate::errors::{code, warn};
use crate::Shared;
use ottla_storage::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a JoinGroup caller gets back.
#[derive(Clone, Debug, Default)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members and their subscriptions.
    pub members: Vec<JoinedMember>,
    /// A static leader back without a rebalance: it gets the members but
    /// keeps the assignment (JoinGroup v9's `skip_assignment`, KIP-814).
    pub skip_assignment: bool,
}

/// A member as the leader's JoinGroup answer lists it.
#[derive(Clone, Debug, Default)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

impl JoinOutcome {
    pub fn error(error: i16, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

pub enum Pending<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

/// A SyncGroup answer: (error, assignment).
pub type SyncOutcome = (i16, Bytes);

struct Member {
    id: String,
    /// `group.instance.id` of a static member.
    instance_id: Option<String>,
    client_id: String,
    host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    expires: Instant,
    join: Option<oneshot::Sender<JoinOutcome>>,
    sync: Option<oneshot::Sender<SyncOutcome>>,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order: the first member of a round leads it if the old leader left.
    members: Vec<Member>,
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group, waiting for more members.
    initial: Option<InitialDelay>,
    /// Topics the members subscribe to (consumer protocol), `None` when a
    /// subscription could not be read: OffsetDelete then takes every topic
    /// as subscribed, as Kafka does.
    subscribed: Option<HashSet<String>>,
    claim: Option<CoordinatorClaim>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined with:
    /// until when each is kept (Kafka's pending members).
    pending: HashMap<String, Instant>,
}

/// Kafka's InitialDelayedJoin: when the join phase of an empty group's first
/// rebalance ends, and how much of the rebalance timeout is left to extend it.
#[derive(Clone, Copy, Debug)]
struct InitialDelay {
    deadline: Instant,
    delay: Duration,
    remaining: Duration,
    /// A member joined since the delay was (re)armed.
    new_member_added: bool,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            rebalance_deadline: None,
            initial: None,
            subscribed: None,
            claim: None,
            pending: HashMap::new(),
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// The member id `instance` is known by now.
    fn static_member_id(&self, instance: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance))
            .map(|m| m.id.as_str())
    }

    /// Kafka's `ClassicGroup.validateMember`: a static member must be the
    /// one its instance id maps to now (FENCED_INSTANCE_ID otherwise).
    fn validate_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), i16> {
        match instance {
            Some(i) => match self.static_member_id(i) {
                None => Err(code::UNKNOWN_MEMBER_ID),
                Some(id) if id != member_id => Err(code::FENCED_INSTANCE_ID),
                Some(_) => Ok(()),
            },
            None if self.members.iter().any(|m| m.id == member_id) => Ok(()),
            None => Err(code::UNKNOWN_MEMBER_ID),
        }
    }

    /// Kafka's `isStaticMemberFenced`: `instance` is known by another member id.
    fn fenced(&self, member_id: &str, instance: Option<&str>) -> bool {
        instance
            .and_then(|i| self.static_member_id(i))
            .is_some_and(|id| id != member_id)
    }

    fn longest_rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Start a rebalance; the first one of an empty group waits `initial_delay`.
    fn prepare_rebalance(&mut self, initial_delay: Duration) {
        let now = Instant::now();
        let longest = self.longest_rebalance_timeout();
        if self.state == State::Empty && !initial_delay.is_zero() {
            self.initial = Some(InitialDelay {
                deadline: now + initial_delay,
                delay: initial_delay,
                remaining: longest.saturating_sub(initial_delay),
                new_member_added: false,
            });
            self.rebalance_deadline = None;
        } else {
            self.initial = None;
            self.rebalance_deadline = Some(now + longest);
        }
        self.state = State::PreparingRebalance;
        // Followers waiting for an assignment of the old generation must rejoin.
        for m in &mut self.members {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send((code::REBALANCE_IN_PROGRESS, Bytes::new()));
            }
        }
    }

    /// End the join phase once every member rejoined and no member id
    /// handed out with MEMBER_ID_REQUIRED is still to come back (Kafka's
    /// `hasAllMembersJoined`: members started together get one generation,
    /// not one each); the initial delay of a new group ends only when it
    /// runs out (`tick`).
    fn try_complete_join(&mut self) {
        if self.state == State::PreparingRebalance
            && self.initial.is_none()
            && self.pending.is_empty()
            && self.members.iter().all(|m| m.join.is_some())
        {
            self.complete_join();
        }
    }

    /// End the join phase: drop members that did not rejoin, pick the
    /// protocol and leader, start a generation, answer every JoinGroup.
    fn complete_join(&mut self) {
        self.members.retain(|m| m.join.is_some());
        self.rebalance_deadline = None;
        self.initial = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.protocol = choose_protocol(&self.members);
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.iter().any(|m| &m.id == l))
        {
            self.leader = Some(self.members[0].id.clone());
        }
        self.state = State::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let subscriptions = self.subscriptions();
        self.subscribed = if self.protocol_type.as_deref() == Some("consumer") {
            subscriptions
                .iter()
                .map(|m| subscription_topics(&m.metadata))
                .try_fold(HashSet::new(), |mut all, topics| {
                    all.extend(topics?);
                    Some(all)
                })
        } else {
            None
        };
        let now = Instant::now();
        for m in &mut self.members {
            m.assignment = Bytes::new();
            m.expires = now + m.session_timeout;
            if let Some(tx) = m.join.take() {
                let _ = tx.send(JoinOutcome {
                    error: code::NONE,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: m.id.clone(),
                    members: if m.id == leader {
                        subscriptions.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
    }

    /// Each member with its subscription for the chosen protocol.
    fn subscriptions(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members
            .iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The JoinGroup answer of the current generation, for a static member
    /// that took an old member's place without a rebalance.
    fn current_generation_for(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        JoinOutcome {
            error: code::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            members: if leader == member_id {
                self.subscriptions()
            } else {
                Vec::new()
            },
            leader,
            member_id: member_id.to_string(),
            skip_assignment: false,
        }
    }

    fn become_empty(&mut self) {
        self.state = State::Empty;
        self.leader = None;
        self.protocol = None;
        self.rebalance_deadline = None;
        self.initial = None;
        self.subscribed = None;
        // No members here: embedded consumers may coordinate the group now.
        self.claim = None;
    }

    /// Remove members (leave or expiry) and rebalance the rest.
    fn remove(&mut self, ids: &[String]) -> usize {
        let before = self.members.len();
        self.members.retain(|m| !ids.contains(&m.id));
        let removed = before - self.members.len();
        if removed == 0 {
            return 0;
        }
        if self.members.is_empty() {
            self.generation += 1;
            self.become_empty();
        } else if self.state != State::PreparingRebalance {
            self.prepare_rebalance(Duration::ZERO);
            self.try_complete_join();
        } else {
            self.try_complete_join();
        }
        removed
    }
}

/// The protocol every member supports that most members list first (ties:
/// the first member's preference order).
fn choose_protocol(members: &[Member]) -> Option<String> {
    let first = members.first()?;
    let common: Vec<&String> = first
        .protocols
        .iter()
        .map(|(n, _)| n)
        .filter(|n| {
            members
                .iter()
                .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
        })
        .collect();
    let votes = |name: &String| {
        members
            .iter()
            .filter(|m| {
                m.protocols
                    .iter()
                    .map(|(n, _)| n)
                    .find(|n| common.contains(n))
                    == Some(name)
            })
            .count()
    };
    let mut best: Option<(&String, usize)> = None;
    for n in &common {
        let v = votes(n);
        if best.map_or(true, |(_, bv)| v > bv) {
            best = Some((n, v));
        }
    }
    best.map(|(n, _)| n.clone())
}

/// A group moving between the classic coordinator and the consumer-protocol
/// one (KIP-848's online migration), with its coordinator claim.
pub struct Converted {
    /// The classic generation, or the consumer group's epoch.
    pub generation: i32,
    pub members: Vec<ConvertedMember>,
    pub claim: Option<CoordinatorClaim>,
}

/// A classic member of a [`Converted`] group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvertedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// Its last assignment (`ConsumerProtocolAssignment`).
    pub assignment: Bytes,
}

/// Groups the consumer-protocol coordinator downgraded, waiting for the
/// classic coordinator, which takes them in before it looks at any group.
pub type Handoff = Arc<Mutex<Vec<(String, Converted)>>>;

fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// A classic group from a downgraded consumer group (Kafka's
/// `ClassicGroup.fromConsumerGroup`): its members with their assignments at
/// the group epoch, rebalancing at once, so every member joins again.
fn from_converted(c: Converted) -> Group {
    let now = Instant::now();
    let mut g = Group::new();
    g.generation = c.generation;
    g.protocol_type = Some("consumer".to_string());
    g.claim = c.claim;
    g.members = c
        .members
        .into_iter()
        .map(|m| Member {
            session_timeout: millis(m.session_timeout_ms),
            rebalance_timeout: millis(m.rebalance_timeout_ms.max(m.session_timeout_ms)),
            expires: now + millis(m.session_timeout_ms),
            id: m.id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            host: m.host,
            protocols: m.protocols,
            assignment: m.assignment,
            join: None,
            sync: None,
        })
        .collect();
    g.protocol = choose_protocol(&g.members);
    g.leader = g.members.first().map(|m| m.id.clone());
    g.state = State::Stable;
    g.prepare_rebalance(Duration::ZERO);
    g
}

/// A member as DescribeGroups shows it.
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct GroupInfo {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberInfo>,
}

pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    /// `group.instance.id` (JoinGroup v5+): a static member.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member gets MEMBER_ID_REQUIRED first.
    pub require_known_member_id: bool,
}

/// Who a request speaks for: a member id and, for a static member, its
/// `group.instance.id` (Heartbeat v3+, SyncGroup v3+, OffsetCommit v7+,
/// LeaveGroup v3+).
#[derive(Clone, Copy, Debug)]
pub struct MemberRef<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
}

impl<'a> MemberRef<'a> {
    /// A dynamic member (no instance id).
    pub fn dynamic(member_id: &'a str) -> MemberRef<'a> {
        MemberRef {
            member_id,
            instance_id: None,
        }
    }
}

/// Kafka's GroupCoordinator: every group this broker coordinates.
pub struct GroupCoordinator {
    store: Arc<Store>,
    groups: Mutex<HashMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
    /// Kafka's `group.initial.rebalance.delay.ms`.
    initial_delay: Duration,
    /// Wakes the reaper when a group's initial delay is armed.
    wake: Notify,
    /// Consumer groups downgraded to classic groups, to take in.
    handoff: Handoff,
}

impl GroupCoordinator {
    pub fn new(store: Arc<Store>) -> GroupCoordinator {
        GroupCoordinator::with_initial_delay(store, Duration::ZERO)
    }

    /// A coordinator whose empty groups wait `initial_delay` for more
    /// members before their first rebalance.
    pub fn with_initial_delay(store: Arc<Store>, initial_delay: Duration) -> GroupCoordinator {
        GroupCoordinator {
            store,
            groups: Mutex::new(HashMap::new()),
            next_member: std::sync::atomic::AtomicU64::new(0),
            initial_delay,
            wake: Notify::new(),
            handoff: Handoff::default(),
        }
    }

    /// Where the consumer-protocol coordinator leaves downgraded groups.
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
    }

    /// The groups, with the downgraded ones taken in first.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        let mut groups = self.groups.lock();
        for (name, c) in self.handoff.lock().drain(..) {
            crate::errors::debug(&format!(
                "group {name:?}: downgraded to a classic group at generation {}",
                c.generation
            ));
            groups.insert(name, from_converted(c));
        }
        groups
    }

    /// KIP-848's online upgrade: the classic group `group`, with members
    /// here, is handed to `adopt` (the consumer-protocol coordinator, called
    /// with this coordinator's lock held so no classic request sees the
    /// group in neither), as Kafka's `validateOnlineUpgrade` allows: its
    /// protocol type is "consumer" and it has at most `max_size` members.
    /// Joins and syncs waiting get REBALANCE_IN_PROGRESS and join again.
    /// `Ok(false)`: no such group here; `Err`: why it cannot be upgraded.
    pub fn upgrade(
        &self,
        group: &str,
        max_size: usize,
        adopt: impl FnOnce(Converted),
    ) -> Result<bool, String> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group).filter(|g| !g.members.is_empty()) else {
            return Ok(false);
        };
        if g.protocol_type.as_deref() != Some("consumer") {
            return Err(format!(
                "Group {group} is not a consumer group: its classic members do not use the consumer embedded protocol."
            ));
        }
        if g.members.len() > max_size {
            return Err(format!(
                "Group {group} has {} classic members, more than group.consumer.max.size {max_size}.",
                g.members.len()
            ));
        }
        let members = g
            .members
            .iter_mut()
            .map(|m| {
                if let Some(tx) = m.join.take() {
                    let _ = tx.send(JoinOutcome::error(code::REBALANCE_IN_PROGRESS, &m.id));
                }
                if let Some(tx) = m.sync.take() {
                    let _ = tx.send((code::REBALANCE_IN_PROGRESS, Bytes::new()));
                }
                ConvertedMember {
                    id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128)
                        as i32,
                    protocols: m.protocols.clone(),
                    assignment: m.assignment.clone(),
                }
            })
            .collect();
        let converted = Converted {
            generation: g.generation,
            members,
            claim: g.claim.take(),
        };
        groups.remove(group);
        adopt(converted);
        Ok(true)
    }

    fn new_member_id(&self, prefix: &str) -> String {
        let n = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix}-{:x}-{n}", ottla_storage::log::now_ms())
    }

    /// KIP-394: a new dynamic member's id, handed out with
    /// MEMBER_ID_REQUIRED and kept as pending for a session timeout.
    fn member_id_required(&self, g: &mut Group, req: &JoinRequest) -> JoinOutcome {
        let id = self.new_member_id(&req.client_id);
        let keep = Duration::from_millis(req.session_timeout_ms as u64);
        g.pending.insert(id.clone(), Instant::now() + keep);
        JoinOutcome::error(code::MEMBER_ID_REQUIRED, &id)
    }

    pub fn join(&self, req: JoinRequest) -> Pending<JoinOutcome> {
        let fail = |code| Pending::Ready(JoinOutcome::error(code, &req.member_id));
        if req.group.is_empty() {
            return fail(code::INVALID_GROUP_ID);
        }
        if req.session_timeout_ms <= 0 || req.session_timeout_ms > 30 * 60 * 1000 {
            return fail(code::INVALID_SESSION_TIMEOUT);
        }
        let mut groups = self.lock();
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        crate::errors::debug(&format!(
            "JoinGroup {} member {:?} arrives in {} gen {}",
            req.group,
            req.member_id,
            g.state.name(),
            g.generation
        ));
        // Kafka's order: the protocols are checked, then a new dynamic
        // member is sent back for its member id (before this broker claims
        // the group for it).
        let needs_member_id =
            req.require_known_member_id && req.member_id.is_empty() && req.instance_id.is_none();
        if g.members.is_empty() {
            if req.protocols.is_empty() {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL);
            }
            if needs_member_id {
                return Pending::Ready(self.member_id_required(g, &req));
            }
            if g.claim.is_none() {
                match claim::try_claim(&self.store, &req.group) {
                    Ok(Some(lock)) => g.claim = Some(lock),
                    Ok(None) => {
                        warn(&format!(
                            "group {:?} has embedded members on this directory; refusing broker members",
                            req.group
                        ));
                        return fail(code::INCONSISTENT_GROUP_PROTOCOL);
                    }
                    Err(e) => {
                        warn(&format!(
                            "group {:?}: cannot take its coordinator claim: {e}",
                            req.group
                        ));
                        return fail(code::COORDINATOR_NOT_AVAILABLE);
                    }
                }
            }
            g.protocol_type = Some(req.protocol_type.clone());
        } else {
            let same_type = g.protocol_type.as_deref() == Some(req.protocol_type.as_str());
            // A static member taking its old member's place is compared with
            // the others, not with itself.
            let replaced = req
                .instance_id
                .as_deref()
                .and_then(|i| g.static_member_id(i))
                .map(str::to_string);
            let others_known = |m: &Member| {
                req.protocols
                    .iter()
                    .any(|(n, _)| m.protocols.iter().any(|(x, _)| x == n))
            };
            let compatible = g
                .members
                .iter()
                .filter(|m| m.id != req.member_id && Some(&m.id) != replaced.as_ref())
                .all(others_known);
            if !same_type || !compatible {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL);
            }
            if needs_member_id {
                return Pending::Ready(self.member_id_required(g, &req));
            }
        }
        let now = Instant::now();
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance =
            Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64);
        let (tx, rx) = oneshot::channel();
        // A pending member back with its id joins as a new member.
        let pending = req.instance_id.is_none() && g.pending.remove(&req.member_id).is_some();
        if !req.member_id.is_empty() && !pending {
            // A known member joining again.
            if let Err(e) = g.validate_member(&req.member_id, req.instance_id.as_deref()) {
                return fail(e);
            }
            let (state, leader) = (g.state, g.leader.clone());
            let Some(m) = g.member(&req.member_id) else {
                return fail(code::UNKNOWN_MEMBER_ID);
            };
            m.expires = now + session;
            // Kafka: a member joining again with the metadata it has (it
            // missed the answer, or lost its connection) gets the current
            // generation back; only the leader or a changed subscription
            // starts a rebalance of a Stable group.
            let same = m.protocols == req.protocols;
            let is_leader = leader.as_deref() == Some(req.member_id.as_str());
            match state {
                State::CompletingRebalance if same => {
                    return Pending::Ready(g.current_generation_for(&req.member_id));
                }
                State::Stable if same && !is_leader => {
                    return Pending::Ready(g.current_generation_for(&req.member_id));
                }
                _ => {
                    m.protocols = req.protocols;
                    m.session_timeout = session;
                    m.rebalance_timeout = rebalance;
                    m.join = Some(tx);
                }
            }
        } else if let Some(old_id) = req
            .instance_id
            .as_deref()
            .and_then(|i| g.static_member_id(i))
            .map(str::to_string)
        {
            // A static member back with a new member id (a restart): it takes
            // the old member's place; the old id is fenced.
            let new_id = self.new_member_id(req.instance_id.as_deref().unwrap_or_default());
            if g.leader.as_deref() == Some(old_id.as_str()) {
                g.leader = Some(new_id.clone());
            }
            let state = g.state;
            let Some(m) = g.member(&old_id) else {
                return fail(code::UNKNOWN_MEMBER_ID);
            };
            if let Some(old) = m.join.take() {
                let _ = old.send(JoinOutcome::error(code::FENCED_INSTANCE_ID, &old_id));
            }
            if let Some(old) = m.sync.take() {
                let _ = old.send((code::FENCED_INSTANCE_ID, Bytes::new()));
            }
            m.id = new_id.clone();
            m.client_id = req.client_id;
            m.host = req.host;
            m.protocols = req.protocols;
            m.session_timeout = session;
            m.rebalance_timeout = rebalance;
            m.expires = now + session;
            crate::errors::debug(&format!(
                "group {:?}: static member {:?} replaces {old_id} by {new_id}",
                req.group, req.instance_id
            ));
            match state {
                // Kafka: no rebalance unless the group's protocol would change.
                State::Stable if choose_protocol(&g.members) == g.protocol => {
                    let mut answer = g.current_generation_for(&new_id);
                    answer.skip_assignment = answer.leader == new_id;
                    return Pending::Ready(answer);
                }
                State::CompletingRebalance => {
                    return Pending::Ready(g.current_generation_for(&new_id));
                }
                _ => {
                    if let Some(m) = g.member(&new_id) {
                        m.join = Some(tx);
                    }
                }
            }
        } else {
            let member_id = if pending {
                req.member_id.clone()
            } else {
                let prefix = req.instance_id.as_deref().unwrap_or(req.client_id.as_str());
                self.new_member_id(prefix)
            };
            g.members.push(Member {
                id: member_id,
                instance_id: req.instance_id,
                client_id: req.client_id,
                host: req.host,
                session_timeout: session,
                rebalance_timeout: rebalance,
                protocols: req.protocols,
                assignment: Bytes::new(),
                expires: now + session,
                join: Some(tx),
                sync: None,
            });
            if let Some(initial) = g.initial.as_mut() {
                initial.new_member_added = true;
            }
        }
        if g.state != State::PreparingRebalance {
            g.prepare_rebalance(self.initial_delay);
            if g.initial.is_some() {
                self.wake.notify_one();
            }
        }
        g.try_complete_join();
        Pending::Wait(rx)
    }

    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        who: MemberRef<'_>,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncOutcome> {
        let member_id = who.member_id;
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return Pending::Ready((code::UNKNOWN_MEMBER_ID, Bytes::new()));
        };
        if let Err(e) = g.validate_member(member_id, who.instance_id) {
            return Pending::Ready((e, Bytes::new()));
        }
        let gen = g.generation;
        let state = g.state;
        let leader = g.leader.clone();
        let Some(m) = g.member(member_id) else {
            return Pending::Ready((code::UNKNOWN_MEMBER_ID, Bytes::new()));
        };
        if generation != gen {
            return Pending::Ready((code::ILLEGAL_GENERATION, Bytes::new()));
        }
        m.expires = Instant::now() + m.session_timeout;
        match state {
            State::Empty => Pending::Ready((code::UNKNOWN_MEMBER_ID, Bytes::new())),
            State::PreparingRebalance => {
                Pending::Ready((code::REBALANCE_IN_PROGRESS, Bytes::new()))
            }
            State::Stable => Pending::Ready((code::NONE, m.assignment.clone())),
            State::CompletingRebalance => {
                if leader.as_deref() != Some(member_id) {
                    let (tx, rx) = oneshot::channel();
                    m.sync = Some(tx);
                    return Pending::Wait(rx);
                }
                for m in &mut g.members {
                    m.assignment = assignments
                        .iter()
                        .find(|(id, _)| *id == m.id)
                        .map(|(_, a)| a.clone())
                        .unwrap_or_default();
                    if let Some(tx) = m.sync.take() {
                        let _ = tx.send((code::NONE, m.assignment.clone()));
                    }
                }
                g.state = State::Stable;
                let own = g
                    .member(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Pending::Ready((code::NONE, own))
            }
        }
    }

    pub fn heartbeat(&self, group: &str, generation: i32, who: MemberRef<'_>) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if let Err(e) = g.validate_member(who.member_id, who.instance_id) {
            return e;
        }
        let (gen, state) = (g.generation, g.state);
        let Some(m) = g.member(who.member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.expires = Instant::now() + m.session_timeout;
        if generation != gen {
            return code::ILLEGAL_GENERATION;
        }
        match state {
            State::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
            State::Empty => code::UNKNOWN_MEMBER_ID,
            _ => code::NONE,
        }
    }

    /// LeaveGroup, per member: its error code. A member named by its
    /// instance id alone (empty member id, LeaveGroup v3+) leaves as
    /// whichever member id holds that instance now.
    pub fn leave(&self, group: &str, members: &[MemberRef<'_>]) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        };
        members
            .iter()
            .map(|who| {
                let id = if who.member_id.is_empty() {
                    match who.instance_id.and_then(|i| g.static_member_id(i)) {
                        Some(id) => id.to_string(),
                        None => return code::UNKNOWN_MEMBER_ID,
                    }
                } else if g.fenced(who.member_id, who.instance_id) {
                    return code::FENCED_INSTANCE_ID;
                } else {
                    who.member_id.to_string()
                };
                // Kafka: a pending member (MEMBER_ID_REQUIRED) may leave too.
                if g.pending.remove(&id).is_some() {
                    g.try_complete_join();
                    return code::NONE;
                }
                crate::errors::debug(&format!("group {group:?}: {id} leaves"));
                if g.remove(std::slice::from_ref(&id)) > 0 {
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect()
    }

    /// Whether this broker coordinates `group` now (it has live members here).
    pub fn is_active(&self, group: &str) -> bool {
        self.lock()
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// For OffsetDelete: `None` if `group` has no members here, else whether
    /// its members subscribe to `topic` (Kafka's GROUP_SUBSCRIBED_TO_TOPIC);
    /// a group of another protocol type than "consumer" counts as
    /// subscribed to everything (Kafka refuses it with NON_EMPTY_GROUP).
    pub fn subscribed_to(&self, group: &str, topic: &str) -> Option<bool> {
        let groups = self.lock();
        let g = groups.get(group).filter(|g| !g.members.is_empty())?;
        Some(match &g.subscribed {
            Some(topics) => topics.contains(topic),
            None => true,
        })
    }

    /// The protocol type of `group` if it has members here.
    pub fn protocol_type(&self, group: &str) -> Option<String> {
        let groups = self.lock();
        let g = groups.get(group).filter(|g| !g.members.is_empty())?;
        Some(g.protocol_type.clone().unwrap_or_default())
    }

    /// May this (generation, member) commit offsets for `group` now?
    /// Kafka's `ClassicGroup.validateOffsetCommit`.
    pub fn check_commit(&self, group: &str, generation: i32, who: MemberRef<'_>) -> i16 {
        let member_id = who.member_id;
        let mut groups = self.lock();
        let g = match groups.get_mut(group) {
            Some(g) if !g.members.is_empty() => g,
            // No live members here: a simple (unmanaged) commit, as Kafka
            // allows for an empty group. Whether embedded members make the
            // group active is settled when it is written
            // (`commit_outside_group`).
            _ => {
                return if generation < 0 {
                    code::NONE
                } else {
                    code::ILLEGAL_GENERATION
                }
            }
        };
        if generation < 0 && member_id.is_empty() && who.instance_id.is_none() {
            return code::UNKNOWN_MEMBER_ID;
        }
        if let Err(e) = g.validate_member(member_id, who.instance_id) {
            return e;
        }
        let (gen, state) = (g.generation, g.state);
        let Some(m) = g.member(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.expires = Instant::now() + m.session_timeout;
        if generation != gen {
            code::ILLEGAL_GENERATION
        } else if state == State::CompletingRebalance {
            // The new generation has no assignment yet.
            code::REBALANCE_IN_PROGRESS
        } else {
            // Stable, or PreparingRebalance: members commit what they
            // processed before giving their partitions up, as in Kafka.
            code::NONE
        }
    }

    pub fn describe(&self, group: &str) -> Option<GroupInfo> {
        let groups = self.lock();
        let g = groups.get(group)?;
        if g.members.is_empty() {
            return None;
        }
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupInfo {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|m| MemberInfo {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Groups with live members: (name, state, protocol type).
    pub fn live(&self) -> Vec<(String, &'static str, String)> {
        let groups = self.lock();
        groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(n, g)| {
                (
                    n.clone(),
                    g.state.name(),
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Expire members whose session ran out; finish overdue rebalances and
    /// initial delays that ran out. Returns the earliest initial-delay
    /// deadline still pending (the reaper wakes for it).
    pub fn tick(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut groups = self.lock();
        let mut next: Option<Instant> = None;
        for g in groups.values_mut() {
            if let Some(initial) = g.initial {
                if initial.deadline <= now {
                    if initial.new_member_added && !initial.remaining.is_zero() {
                        // Kafka: members keep coming; wait again, within
                        // the rebalance timeout.
                        let delay = initial.delay.min(initial.remaining);
                        g.initial = Some(InitialDelay {
                            deadline: now + delay,
                            delay,
                            remaining: initial.remaining.saturating_sub(initial.delay),
                            new_member_added: false,
                        });
                    } else {
                        g.complete_join();
                    }
                }
            }
            if g.state == State::PreparingRebalance
                && g.rebalance_deadline.is_some_and(|d| d <= now)
            {
                g.complete_join();
            }
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|m| m.join.is_none() && m.expires <= now)
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                crate::errors::debug(&format!("group: session expired for {expired:?}"));
                g.remove(&expired);
            }
            if let Some(initial) = g.initial {
                next = Some(next.map_or(initial.deadline, |n| n.min(initial.deadline)));
            }
            // Pending member ids never joined with expire (Kafka's heartbeat
            // expiry of a pending member); the join phase may end without them.
            let before = g.pending.len();
            g.pending.retain(|_, until| *until > now);
            if g.pending.len() < before {
                g.try_complete_join();
            }
        }
        groups.retain(|_, g| !g.members.is_empty() || g.claim.is_some() || !g.pending.is_empty());
        next
    }

    /// Let go of every group (broker shutdown): waiting callers get an error.
    pub fn release_all(&self) {
        self.groups.lock().clear();
        self.handoff.lock().clear();
    }
}

/// The topics of a consumer-protocol subscription (`ConsumerProtocolSubscription`,
/// every version starts with its version and topics), `None` if unreadable.
fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let head = b.get(..n)?;
        *b = b.get(n..)?;
        Some(head)
    }
    let mut b = metadata;
    let _version = take(&mut b, 2)?;
    let count = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let name = take(&mut b, usize::try_from(len).ok()?)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
    }
    Some(topics)
}

/// Runs `tick` until shutdown: every 100 ms, and when a group's initial
/// rebalance delay runs out.
pub async fn reaper(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let period = Duration::from_millis(100);
    let mut next = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(next) => {}
            _ = shared.groups.wake.notified() => {}
        }
        let due = shared.groups.tick();
        let now = Instant::now();
        let periodic = now + period;
        let at = due.map_or(periodic, |d| d.min(periodic));
        next = tokio::time::Instant::now() + at.saturating_duration_since(now);
    }
}

#[cfg(test)]
mod tests {
    use super::subscription_topics;

    #[test]
    fn subscribed_topics_are_read_from_consumer_protocol_metadata() {
        // ConsumerProtocolSubscription v1: version, ["a", "bc"], user data, owned partitions.
        let mut m = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(
            subscription_topics(&m),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(subscription_topics(b"meta"), None, "cut short");
        assert_eq!(subscription_topics(&[0, 0, 0, 0, 0, 1, 0, 5, b'x']), None);
    }
}
