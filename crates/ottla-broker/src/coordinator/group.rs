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
//! Committed offsets do not live here: they go to the engine's OffsetStore,
//! shared with embedded consumers. While a group has members here, the
//! broker holds the group's coordinator claim (see `claim`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

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
    pub members: Vec<(String, Bytes)>,
}

impl JoinOutcome {
    fn error(error: i16, member_id: &str) -> JoinOutcome {
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
    claim: Option<CoordinatorClaim>,
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
            claim: None,
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn prepare_rebalance(&mut self) {
        let now = Instant::now();
        self.state = State::PreparingRebalance;
        let longest = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.rebalance_deadline = Some(now + longest);
        // Followers waiting for an assignment of the old generation must rejoin.
        for m in &mut self.members {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send((code::REBALANCE_IN_PROGRESS, Bytes::new()));
            }
        }
    }

    fn try_complete_join(&mut self) {
        if self.state == State::PreparingRebalance && self.members.iter().all(|m| m.join.is_some())
        {
            self.complete_join();
        }
    }

    /// End the join phase: drop members that did not rejoin, pick the
    /// protocol and leader, start a generation, answer every JoinGroup.
    fn complete_join(&mut self) {
        self.members.retain(|m| m.join.is_some());
        self.rebalance_deadline = None;
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
        let protocol = self.protocol.clone().unwrap_or_default();
        let subscriptions: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|m| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (m.id.clone(), meta)
            })
            .collect();
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
                });
            }
        }
    }

    fn become_empty(&mut self) {
        self.state = State::Empty;
        self.leader = None;
        self.protocol = None;
        self.rebalance_deadline = None;
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
            self.prepare_rebalance();
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

/// A member as DescribeGroups shows it.
pub struct MemberInfo {
    pub member_id: String,
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
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// Kafka's GroupCoordinator: every group this broker coordinates.
pub struct GroupCoordinator {
    store: Arc<Store>,
    groups: Mutex<HashMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
}

impl GroupCoordinator {
    pub fn new(store: Arc<Store>) -> GroupCoordinator {
        GroupCoordinator {
            store,
            groups: Mutex::new(HashMap::new()),
            next_member: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn join(&self, req: JoinRequest) -> Pending<JoinOutcome> {
        let fail = |code| Pending::Ready(JoinOutcome::error(code, &req.member_id));
        if req.group.is_empty() {
            return fail(code::INVALID_GROUP_ID);
        }
        if req.session_timeout_ms <= 0 || req.session_timeout_ms > 30 * 60 * 1000 {
            return fail(code::INVALID_SESSION_TIMEOUT);
        }
        let mut groups = self.groups.lock();
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        if g.members.is_empty() {
            if req.protocols.is_empty() {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL);
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
            let others_known = |m: &Member| {
                req.protocols
                    .iter()
                    .any(|(n, _)| m.protocols.iter().any(|(x, _)| x == n))
            };
            let compatible = g
                .members
                .iter()
                .filter(|m| m.id != req.member_id)
                .all(others_known);
            if !same_type || !compatible {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        let member_id = if req.member_id.is_empty() {
            let n = self
                .next_member
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("{}-{:x}-{n}", req.client_id, ottla_storage::log::now_ms())
        } else if g.member(&req.member_id).is_none() {
            return fail(code::UNKNOWN_MEMBER_ID);
        } else {
            req.member_id.clone()
        };
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let session = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance =
            Duration::from_millis(req.rebalance_timeout_ms.max(req.session_timeout_ms) as u64);
        match g.member(&member_id) {
            Some(m) => {
                m.protocols = req.protocols;
                m.session_timeout = session;
                m.rebalance_timeout = rebalance;
                m.expires = now + session;
                m.join = Some(tx);
            }
            None => g.members.push(Member {
                id: member_id,
                client_id: req.client_id,
                host: req.host,
                session_timeout: session,
                rebalance_timeout: rebalance,
                protocols: req.protocols,
                assignment: Bytes::new(),
                expires: now + session,
                join: Some(tx),
                sync: None,
            }),
        }
        if g.state != State::PreparingRebalance {
            g.prepare_rebalance();
        }
        g.try_complete_join();
        Pending::Wait(rx)
    }

    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncOutcome> {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return Pending::Ready((code::UNKNOWN_MEMBER_ID, Bytes::new()));
        };
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

    pub fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let (gen, state) = (g.generation, g.state);
        let Some(m) = g.member(member_id) else {
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

    /// Per member: its error code.
    pub fn leave(&self, group: &str, members: &[String]) -> Vec<i16> {
        let mut groups = self.groups.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        };
        members
            .iter()
            .map(|id| {
                if g.remove(std::slice::from_ref(id)) > 0 {
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect()
    }

    /// Whether this broker coordinates `group` now (it has live members here).
    pub fn is_active(&self, group: &str) -> bool {
        self.groups
            .lock()
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// May this (generation, member) commit offsets for `group` now?
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str) -> i16 {
        let mut groups = self.groups.lock();
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
        if generation < 0 && member_id.is_empty() {
            return code::UNKNOWN_MEMBER_ID;
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
        let groups = self.groups.lock();
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
        let groups = self.groups.lock();
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

    /// Expire members whose session ran out; finish overdue rebalances.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for g in groups.values_mut() {
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
                g.remove(&expired);
            }
        }
        groups.retain(|_, g| !g.members.is_empty() || g.claim.is_some());
    }

    /// Let go of every group (broker shutdown): waiting callers get an error.
    pub fn release_all(&self) {
        self.groups.lock().clear();
    }
}

/// Runs `tick` until shutdown.
pub async fn reaper(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = every.tick() => shared.groups.tick(),
        }
    }
}
