//! The consumer group coordinator: KIP-848's consumer protocol
//! (ConsumerGroupHeartbeat), where the broker assigns partitions.
//!
//! ```text
//!  a heartbeat (join: epoch 0, leave: epoch -1)
//!    -> membership, subscription or topic metadata changed: group epoch + 1
//!    -> group epoch > assignment epoch: a new target assignment (assignor)
//!    -> the member reconciles towards its target:
//!         owns partitions it must give up  -> UNREVOKED_PARTITIONS (its epoch stays)
//!         wants partitions another holds   -> UNRELEASED_PARTITIONS (new epoch, gets them later)
//!         else                             -> STABLE at the assignment epoch
//! ```
//!
//! A partition is only given to a member once no other member holds it:
//! a member that must give partitions up keeps its epoch until a heartbeat
//! of its own no longer lists them among the partitions it owns (revocation
//! first, as Kafka's `CurrentAssignmentBuilder`). Members heartbeat every
//! `heartbeat_interval`; one silent for `session_timeout` is fenced, and one
//! that does not revoke within its rebalance timeout too.
//!
//! Two assignors, Kafka's server-side ones: `uniform` (the default; every
//! member gets as many partitions as the others, give or take one, keeping
//! what it had where it can) and `range` (per topic, contiguous ranges in
//! member id order).
//!
//! A group is either a classic group (`group`) or a consumer group (this
//! module), never both: while it has members here, the broker holds the
//! group's coordinator claim (`claim`), as the classic coordinator does, so
//! embedded members keep out. Classic members may be members of a consumer
//! group (KIP-848's online migration, `classic`): a classic group a
//! consumer-protocol member joins becomes a consumer group, and one whose
//! last consumer-protocol member leaves becomes a classic group again, as
//! `group.consumer.migration.policy` allows.

#[path = "consumer_group_classic.rs"]
pub mod classic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::claim::{self, CoordinatorClaim};
use super::consumer_group_records::{
    self as records, ClassicRecord, CurrentRecord, MemberRecord, Records,
};
use super::group::Handoff;
use crate::errors::{code, warn};
use ottla_storage::log::Durability;
use ottla_storage::store::Store;
use ottla_storage::topic::TopicId;

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// Kafka's default server assignor.
pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";
const ASSIGNORS: &[&str] = &[UNIFORM, RANGE];

/// Error codes of the consumer protocol (KIP-848).
pub mod error {
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNRELEASED_INSTANCE_ID: i16 = 111;
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
    pub const STALE_MEMBER_EPOCH: i16 = 113;
    pub const INVALID_REGULAR_EXPRESSION: i16 = 130;
}

/// The member epoch of a leaving member (ConsumerGroupHeartbeat).
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch of a static member leaving for a while.
pub const LEAVE_STATIC_EPOCH: i32 = -2;

/// Kafka's `group.consumer.migration.policy`: which conversions between a
/// classic group and a consumer group the coordinator makes (KIP-848).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MigrationPolicy {
    /// Both ways (Kafka 4.x's default).
    #[default]
    Bidirectional,
    /// Classic to consumer only.
    Upgrade,
    /// Consumer to classic only.
    Downgrade,
    /// Neither: a group keeps the protocol it was made with.
    Disabled,
}

impl MigrationPolicy {
    /// Kafka's names, in any case.
    pub fn parse(name: &str) -> Option<MigrationPolicy> {
        Some(match name.to_ascii_lowercase().as_str() {
            "bidirectional" => MigrationPolicy::Bidirectional,
            "upgrade" => MigrationPolicy::Upgrade,
            "downgrade" => MigrationPolicy::Downgrade,
            "disabled" => MigrationPolicy::Disabled,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MigrationPolicy::Bidirectional => "bidirectional",
            MigrationPolicy::Upgrade => "upgrade",
            MigrationPolicy::Downgrade => "downgrade",
            MigrationPolicy::Disabled => "disabled",
        }
    }

    /// A classic group may become a consumer group.
    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade
        )
    }

    /// A consumer group of classic members may become a classic group.
    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade
        )
    }
}

/// The coordinator's settings (Kafka's `group.consumer.*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `group.consumer.heartbeat.interval.ms`
    pub heartbeat_interval: Duration,
    /// `group.consumer.session.timeout.ms`
    pub session_timeout: Duration,
    /// `group.consumer.max.size`
    pub max_size: usize,
    /// `broker.rack`: the rack of every replica of this single node, which
    /// members' `rack_id` is matched against.
    pub broker_rack: Option<String>,
    /// `group.consumer.migration.policy`
    pub migration: MigrationPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

/// A ConsumerGroupHeartbeat, with topic ids resolved to names.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    pub version: i16,
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub topics: Option<Vec<String>>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    /// What the member owns; `None`: unchanged since the last heartbeat.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub host: String,
}

/// The ConsumerGroupHeartbeat answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Sent when it changed, or the request was a full one.
    pub assignment: Option<Assignment>,
}

impl Outcome {
    fn error(error: i16, message: impl Into<String>) -> Outcome {
        Outcome {
            error,
            message: Some(message.into()),
            ..Default::default()
        }
    }
}

struct Member {
    id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    host: String,
    rebalance_timeout: Duration,
    topics: Vec<String>,
    regex: Option<String>,
    assignor: Option<String>,
    epoch: i32,
    previous_epoch: i32,
    state: MemberState,
    /// What the member may own now.
    assigned: Assignment,
    /// What it must give up before anyone else gets it.
    revoking: Assignment,
    /// What it said it owns, last time it said.
    owned: Option<Assignment>,
    expires: Instant,
    /// When a member still revoking is fenced.
    revoke_deadline: Option<Instant>,
    /// A static member that left for a while (epoch -2): its assignment
    /// waits for a member with its instance id, until its session runs out.
    left: bool,
    /// A member that uses the classic protocol (JoinGroup, SyncGroup,
    /// Heartbeat): its session timeout and protocols.
    classic: Option<ClassicRecord>,
}

impl Member {
    fn new(id: String, req: &Heartbeat, now: Instant, session: Duration) -> Member {
        Member {
            id,
            instance_id: req.instance_id.clone(),
            rack_id: req.rack_id.clone(),
            client_id: req.client_id.clone(),
            host: req.host.clone(),
            rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
            topics: Vec::new(),
            regex: None,
            assignor: None,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            owned: None,
            expires: now + session,
            revoke_deadline: None,
            left: false,
            classic: None,
        }
    }

    /// The topics of `meta` it subscribes to, by name or by its regex.
    fn subscribed(&self, meta: &BTreeMap<String, u32>) -> BTreeSet<String> {
        let re = self.regex.as_deref().and_then(|r| compile(r).ok());
        meta.keys()
            .filter(|t| self.topics.contains(t) || re.as_ref().is_some_and(|re| re.is_match(t)))
            .cloned()
            .collect()
    }
}

/// Kafka matches a subscription's regex against the whole topic name.
fn compile(regex: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{regex})$"))
}

#[derive(Default)]
struct Group {
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: HashMap<String, Assignment>,
    /// Partition counts of the subscribed topics the target was computed from.
    meta: BTreeMap<String, u32>,
    assignor: String,
    claim: Option<CoordinatorClaim>,
    /// The group's records in `__consumer_offsets` as last written.
    persisted: Records,
}

impl Group {
    fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch != self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor most members asked for (Kafka's choice), else uniform.
    fn choose_assignor(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (a, n) in votes {
            if best.map_or(true, |(_, bn)| n > bn) {
                best = Some((a, n));
            }
        }
        best.map_or(UNIFORM, |(a, _)| a).to_string()
    }

    /// A new target assignment for the group epoch.
    /// `rack`: the broker's rack, where every replica is (single node).
    fn compute_target(&mut self, rack: Option<&str>) {
        self.assignor = self.choose_assignor();
        let subs: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.subscribed(&self.meta)))
            .collect();
        // Members on the rack of the partitions' replicas (KIP-848's
        // rack-aware assignment): with one node, the broker's rack.
        let on_rack: BTreeSet<String> = self
            .members
            .values()
            .filter(|m| rack.is_some() && m.rack_id.as_deref() == rack)
            .map(|m| m.id.clone())
            .collect();
        self.target = if self.assignor == RANGE {
            range_with_racks(&subs, &self.meta, &on_rack)
        } else {
            uniform_with_racks(&subs, &self.meta, &self.target, &on_rack)
        };
        self.assignment_epoch = self.epoch;
    }

    /// Partitions held by members other than `id` (assigned or still revoking).
    fn held_by_others(&self, id: &str) -> BTreeSet<(String, i32)> {
        self.members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| pairs(&m.assigned).chain(pairs(&m.revoking)))
            .collect()
    }

    /// Move member `id` towards its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, id: &str, now: Instant) {
        let target_epoch = self.assignment_epoch;
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held = self.held_by_others(id);
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if m.state == MemberState::UnrevokedPartitions {
            let revoked = m
                .owned
                .as_ref()
                .is_some_and(|o| pairs(o).all(|(t, p)| !contains(&m.revoking, &t, p)));
            if !revoked {
                return;
            }
            m.revoking.clear();
            m.revoke_deadline = None;
            m.state = MemberState::Stable;
        }
        if m.epoch == target_epoch && m.state == MemberState::Stable {
            return;
        }
        let keep: Assignment = filter(&m.assigned, |t, p| contains(&target, t, p));
        let revoke: Assignment = filter(&m.assigned, |t, p| !contains(&target, t, p));
        if !revoke.is_empty() {
            m.assigned = keep;
            m.revoking = revoke;
            m.state = MemberState::UnrevokedPartitions;
            m.revoke_deadline = Some(now + m.rebalance_timeout);
            return;
        }
        let mut assigned = keep;
        let mut unreleased = false;
        for (t, p) in pairs(&target) {
            if contains(&assigned, &t, p) {
                continue;
            }
            if held.contains(&(t.clone(), p)) {
                unreleased = true;
            } else {
                assigned.entry(t).or_default().insert(p);
            }
        }
        m.assigned = assigned;
        if m.epoch != target_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch;
        }
        m.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }

    /// Every record of the group as it stands (`consumer_group_records`).
    fn records(&self, name: &str, ids: &dyn Fn(&str) -> Option<TopicId>) -> Records {
        let mut r = Records::new();
        r.insert(
            records::key(records::GROUP_METADATA, name, None),
            records::epoch_value(self.epoch),
        );
        r.insert(
            records::key(records::TARGET_METADATA, name, None),
            records::epoch_value(self.assignment_epoch),
        );
        for m in self.members.values() {
            let id = Some(m.id.as_str());
            let member = MemberRecord {
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                topics: m.topics.clone(),
                regex: m.regex.clone(),
                assignor: m.assignor.clone(),
                rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                classic: m.classic.clone(),
            };
            r.insert(
                records::key(records::MEMBER_METADATA, name, id),
                records::member_value(&member),
            );
            let target = self.target.get(&m.id).cloned().unwrap_or_default();
            r.insert(
                records::key(records::TARGET_MEMBER, name, id),
                records::target_value(&target, ids),
            );
            let current = CurrentRecord {
                epoch: m.epoch,
                previous_epoch: m.previous_epoch,
                state: match m.state {
                    MemberState::Stable => 0,
                    MemberState::UnrevokedPartitions => 1,
                    MemberState::UnreleasedPartitions => 2,
                },
                assigned: m.assigned.clone(),
                revoking: m.revoking.clone(),
            };
            r.insert(
                records::key(records::CURRENT_ASSIGNMENT, name, id),
                records::current_value(&current, ids),
            );
        }
        r
    }

    /// Remove members (leave, session or rebalance timeout): a new group
    /// epoch and target; their partitions are free at once.
    fn remove(&mut self, ids: &[String], rack: Option<&str>) {
        let before = self.members.len();
        self.members.retain(|id, _| !ids.contains(id));
        if self.members.len() == before {
            return;
        }
        for id in ids {
            self.target.remove(id);
        }
        self.epoch += 1;
        if self.members.is_empty() {
            self.target.clear();
            self.assignment_epoch = self.epoch;
            // Embedded or classic members may have the group now.
            self.claim = None;
        } else {
            self.compute_target(rack);
        }
    }
}

fn pairs(a: &Assignment) -> impl Iterator<Item = (String, i32)> + '_ {
    a.iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
}

fn contains(a: &Assignment, t: &str, p: i32) -> bool {
    a.get(t).is_some_and(|ps| ps.contains(&p))
}

fn filter(a: &Assignment, keep: impl Fn(&str, i32) -> bool) -> Assignment {
    let mut out = Assignment::new();
    for (t, p) in pairs(a) {
        if keep(&t, p) {
            out.entry(t).or_default().insert(p);
        }
    }
    out
}

fn count(a: Option<&Assignment>) -> usize {
    a.map_or(0, |a| a.values().map(BTreeSet::len).sum())
}

/// The `uniform` assignor: balanced over all partitions (each member has as
/// many as any other that could take them, give or take one), sticky: a
/// partition stays with its member of the previous target where balance
/// allows.
pub fn uniform(
    subs: &BTreeMap<String, BTreeSet<String>>,
    meta: &BTreeMap<String, u32>,
    previous: &HashMap<String, Assignment>,
) -> HashMap<String, Assignment> {
    uniform_with_racks(subs, meta, previous, &BTreeSet::new())
}

/// `uniform`, rack-aware: a new partition goes, among the members with
/// the fewest, to one on the rack of its replicas (`on_rack`) if any;
/// balance and stickiness come first, as in Kafka.
pub fn uniform_with_racks(
    subs: &BTreeMap<String, BTreeSet<String>>,
    meta: &BTreeMap<String, u32>,
    previous: &HashMap<String, Assignment>,
    on_rack: &BTreeSet<String>,
) -> HashMap<String, Assignment> {
    let mut out: HashMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let valid = |m: &str, t: &str, p: i32| {
        subs.get(m).is_some_and(|s| s.contains(t))
            && meta.get(t).is_some_and(|n| p >= 0 && (p as u32) < *n)
    };
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    for m in subs.keys() {
        if let Some(prev) = previous.get(m) {
            for (t, p) in pairs(prev) {
                if valid(m, &t, p) && taken.insert((t.clone(), p)) {
                    out.entry(m.clone())
                        .or_default()
                        .entry(t)
                        .or_default()
                        .insert(p);
                }
            }
        }
    }
    // New partitions, spread: partition 0 of every topic, then 1, ...
    let most = meta.values().copied().max().unwrap_or(0);
    for p in 0..most as i32 {
        for (t, n) in meta {
            if p as u32 >= *n || taken.contains(&(t.clone(), p)) {
                continue;
            }
            let fewest = subs
                .iter()
                .filter(|(_, s)| s.contains(t))
                .map(|(m, _)| m)
                .min_by_key(|m| (count(out.get(*m)), !on_rack.contains(*m)));
            if let Some(m) = fewest {
                out.entry(m.clone())
                    .or_default()
                    .entry(t.clone())
                    .or_default()
                    .insert(p);
                taken.insert((t.clone(), p));
            }
        }
    }
    // Balance: move a partition from a member with the most to one that
    // subscribes to its topic and has two fewer, until none can move.
    let total: usize = meta.values().map(|n| *n as usize).sum();
    for _ in 0..total * subs.len().max(1) {
        let mut moved = false;
        let mut by_count: Vec<&String> = subs.keys().collect();
        by_count.sort_by_key(|m| std::cmp::Reverse(count(out.get(*m))));
        'from: for from in by_count {
            let have = count(out.get(from));
            let candidates: Vec<(String, i32)> = out
                .get(from)
                .map(|a| pairs(a).collect::<Vec<_>>())
                .unwrap_or_default();
            for (t, p) in candidates.into_iter().rev() {
                let to = subs
                    .iter()
                    .filter(|(m, s)| *m != from && s.contains(&t))
                    .map(|(m, _)| m)
                    .filter(|m| count(out.get(*m)) + 1 < have)
                    .min_by_key(|m| count(out.get(*m)));
                if let Some(to) = to.cloned() {
                    if let Some(ps) = out.get_mut(from).and_then(|a| a.get_mut(&t)) {
                        ps.remove(&p);
                    }
                    if let Some(a) = out.get_mut(from) {
                        a.retain(|_, ps| !ps.is_empty());
                    }
                    out.entry(to).or_default().entry(t).or_default().insert(p);
                    moved = true;
                    break 'from;
                }
            }
        }
        if !moved {
            break;
        }
    }
    out
}

/// The `range` assignor: per topic, its subscribers in member id order get
/// contiguous ranges, the first ones one partition more when it does not
/// divide evenly.
pub fn range(
    subs: &BTreeMap<String, BTreeSet<String>>,
    meta: &BTreeMap<String, u32>,
) -> HashMap<String, Assignment> {
    range_with_racks(subs, meta, &BTreeSet::new())
}

/// `range`, rack-aware (as Kafka's rack-aware range, KIP-881): each
/// member's share is what `range` gives it, but members on the rack of the
/// topic's replicas (`on_rack`) take their ranges first, so the partitions
/// go to them before members elsewhere.
pub fn range_with_racks(
    subs: &BTreeMap<String, BTreeSet<String>>,
    meta: &BTreeMap<String, u32>,
    on_rack: &BTreeSet<String>,
) -> HashMap<String, Assignment> {
    let mut out: HashMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (t, n) in meta {
        let members: Vec<&String> = subs
            .iter()
            .filter(|(_, s)| s.contains(t))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let (base, extra) = (*n as usize / members.len(), *n as usize % members.len());
        let mut shares: Vec<(&String, usize)> = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, base + usize::from(i < extra)))
            .collect();
        // Stable: members keep their id order within each side.
        shares.sort_by_key(|(m, _)| !on_rack.contains(*m));
        let mut start = 0usize;
        for (m, len) in shares {
            if len > 0 {
                let ps = out
                    .entry(m.clone())
                    .or_default()
                    .entry(t.clone())
                    .or_default();
                ps.extend((start..start + len).map(|p| p as i32));
            }
            start += len;
        }
    }
    out
}

/// A member as ConsumerGroupDescribe shows it.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub host: String,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignment: Assignment,
    pub target: Assignment,
    /// A member that uses the classic protocol.
    pub classic: bool,
}

#[derive(Clone, Debug)]
pub struct GroupInfo {
    pub state: &'static str,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<MemberInfo>,
}

/// Every consumer-protocol group this broker coordinates.
pub struct ConsumerGroupCoordinator {
    store: Arc<Store>,
    settings: Settings,
    groups: Mutex<HashMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
    /// Groups downgraded to classic groups, for the classic coordinator.
    handoff: Handoff,
}

impl ConsumerGroupCoordinator {
    /// The coordinator, with the groups `__consumer_offsets` keeps (a
    /// restarted broker resumes them: epochs, members, assignments).
    pub fn new(store: Arc<Store>, settings: Settings) -> ConsumerGroupCoordinator {
        ConsumerGroupCoordinator::with_handoff(store, settings, Handoff::default())
    }

    /// The coordinator, handing the groups it downgrades to the classic
    /// coordinator that reads `handoff` (`GroupCoordinator::handoff`).
    pub fn with_handoff(
        store: Arc<Store>,
        settings: Settings,
        handoff: Handoff,
    ) -> ConsumerGroupCoordinator {
        let c = ConsumerGroupCoordinator {
            store,
            settings,
            groups: Mutex::new(HashMap::new()),
            next_member: std::sync::atomic::AtomicU64::new(0),
            handoff,
        };
        match c.load() {
            Ok(groups) => *c.groups.lock() = groups,
            Err(e) => warn(&format!("consumer groups: cannot read them back: {e}")),
        }
        c
    }

    /// Kafka's group coordinator loading its partition of
    /// `__consumer_offsets`: every consumer group with its epochs, members
    /// (their sessions start again now) and assignments.
    fn load(&self) -> ottla_storage::error::Result<HashMap<String, Group>> {
        // A directory without commits has no groups: the offsets topic is
        // created by the first write, not by a broker start.
        if self
            .store
            .topic(ottla_storage::offsets::OFFSETS_TOPIC)?
            .is_none()
        {
            return Ok(HashMap::new());
        }
        let offsets = self.store.offsets()?;
        let mut all = Vec::new();
        for v in [
            records::GROUP_METADATA,
            records::MEMBER_METADATA,
            records::TARGET_METADATA,
            records::TARGET_MEMBER,
            records::CURRENT_ASSIGNMENT,
        ] {
            all.extend(offsets.group_records(v)?);
        }
        if all.is_empty() {
            return Ok(HashMap::new());
        }
        let mut names: HashMap<TopicId, String> = HashMap::new();
        for t in self.store.list_topics(false)? {
            if let Ok(Some(topic)) = self.store.topic(&t) {
                names.insert(topic.id, t);
            }
        }
        let mut bad = 0;
        let read = records::read_groups(&all, &|id| names.get(id).cloned(), &mut bad);
        if bad > 0 {
            warn(&format!(
                "consumer groups: {bad} record(s) of __consumer_offsets not understood, skipped"
            ));
        }
        let now = Instant::now();
        let mut groups = HashMap::new();
        for (name, r) in read {
            let mut g = Group {
                epoch: r.epoch,
                assignment_epoch: r.assignment_epoch,
                target: r.target,
                ..Default::default()
            };
            for (id, m) in r.members {
                let current = r.current.get(&id).cloned().unwrap_or_default();
                let state = match current.state {
                    1 => MemberState::UnrevokedPartitions,
                    2 => MemberState::UnreleasedPartitions,
                    _ => MemberState::Stable,
                };
                let rebalance_timeout = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
                g.members.insert(
                    id.clone(),
                    Member {
                        id,
                        instance_id: m.instance_id,
                        rack_id: m.rack_id,
                        client_id: m.client_id,
                        host: m.host,
                        rebalance_timeout,
                        topics: m.topics,
                        regex: m.regex,
                        assignor: m.assignor,
                        epoch: current.epoch,
                        previous_epoch: current.previous_epoch,
                        state,
                        assigned: current.assigned,
                        revoking: current.revoking,
                        owned: None,
                        expires: now + classic::session(&m.classic, self.settings.session_timeout),
                        revoke_deadline: (state == MemberState::UnrevokedPartitions)
                            .then_some(now + rebalance_timeout),
                        left: false,
                        classic: m.classic,
                    },
                );
            }
            g.assignor = g.choose_assignor();
            g.meta = self.metadata(&g);
            if !g.members.is_empty() {
                match claim::try_claim(&self.store, &name) {
                    Ok(Some(lock)) => g.claim = Some(lock),
                    _ => {
                        warn(&format!(
                            "consumer group {name:?}: others coordinate it now; its members here are dropped"
                        ));
                        g.members.clear();
                        g.target.clear();
                    }
                }
            }
            g.persisted = g.records(&name, &|t| self.topic_id(t));
            crate::errors::debug(&format!(
                "consumer group {name:?} resumed: epoch {}, {} member(s)",
                g.epoch,
                g.members.len()
            ));
            groups.insert(name, g);
        }
        Ok(groups)
    }

    fn topic_id(&self, topic: &str) -> Option<TopicId> {
        self.store.topic(topic).ok().flatten().map(|t| t.id)
    }

    /// Write what changed in `g` since its records were last written.
    fn persist(&self, name: &str, g: &mut Group) {
        let now = g.records(name, &|t| self.topic_id(t));
        let changes = records::diff(&g.persisted, &now);
        if changes.is_empty() {
            return;
        }
        match self
            .store
            .offsets()
            .and_then(|o| o.write_group_records(&changes, Durability::PageCache))
        {
            Ok(()) => g.persisted = now,
            Err(e) => warn(&format!(
                "consumer group {name:?}: cannot write its state: {e}"
            )),
        }
    }

    /// A member id for a v0 member that joins without one (v1+ members
    /// bring their own), unique within this broker's life.
    fn new_member_id(&self) -> String {
        let n = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "{:016x}{:08x}{n:08x}",
            ottla_storage::log::now_ms(),
            std::process::id()
        )
    }

    /// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`.
    fn validate(req: &Heartbeat) -> Result<(), Outcome> {
        let invalid = |m: &str| Err(Outcome::error(code::INVALID_REQUEST, m));
        if req.group.is_empty() {
            return invalid("GroupId can't be empty.");
        }
        if req.instance_id.as_deref() == Some("") {
            return invalid("InstanceId can't be empty.");
        }
        if req.rack_id.as_deref() == Some("") {
            return invalid("RackId can't be empty.");
        }
        if req.member_id.is_empty() && (req.version >= 1 || req.member_epoch != 0) {
            return invalid("MemberId can't be empty.");
        }
        match req.member_epoch {
            0 => {
                if req.rebalance_timeout_ms == -1 {
                    return invalid("RebalanceTimeoutMs must be provided in first request.");
                }
                if req.owned.as_ref().map_or(true, |o| !o.is_empty()) {
                    return invalid("TopicPartitions must be empty when (re-)joining.");
                }
                if req.topics.is_none() && req.regex.is_none() {
                    return invalid(
                        "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                    );
                }
            }
            e if e > 0 || e == LEAVE_EPOCH || e == LEAVE_STATIC_EPOCH => {}
            _ => return invalid("MemberEpoch is invalid."),
        }
        if let Some(a) = req.assignor.as_deref() {
            if !ASSIGNORS.contains(&a) {
                return Err(Outcome::error(
                    error::UNSUPPORTED_ASSIGNOR,
                    format!(
                        "ServerAssignor {a} is not supported. Supported assignors: uniform, range."
                    ),
                ));
            }
        }
        if let Some(r) = req.regex.as_deref() {
            if let Err(e) = compile(r) {
                return Err(Outcome::error(
                    error::INVALID_REGULAR_EXPRESSION,
                    format!("SubscribedTopicRegex {r:?} is not a valid regular expression: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// After a member's change (`changed`: its subscription or assignor):
    /// refresh the subscribed topics' partition counts, bump the group
    /// epoch if either changed, and compute a new target assignment if the
    /// epoch moved past the last one (KIP-848's three steps).
    fn bump_and_target(&self, g: &mut Group, mut changed: bool) {
        let meta = self.metadata(g);
        if meta != g.meta {
            g.meta = meta;
            changed = true;
        }
        if changed {
            g.epoch += 1;
        }
        if g.epoch > g.assignment_epoch {
            g.compute_target(self.settings.broker_rack.as_deref());
        }
    }

    /// Partition counts of the topics some member subscribes to.
    fn metadata(&self, g: &Group) -> BTreeMap<String, u32> {
        let mut names: BTreeSet<String> = g
            .members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        let regexes: Vec<regex::Regex> = g
            .members
            .values()
            .filter_map(|m| m.regex.as_deref().and_then(|r| compile(r).ok()))
            .collect();
        if !regexes.is_empty() {
            if let Ok(all) = self.store.list_topics(false) {
                names.extend(
                    all.into_iter()
                        .filter(|t| regexes.iter().any(|re| re.is_match(t))),
                );
            }
        }
        names
            .into_iter()
            .filter_map(|t| match self.store.topic(&t) {
                Ok(Some(topic)) if topic.partitions > 0 => Some((t, topic.partitions)),
                _ => None,
            })
            .collect()
    }

    pub fn heartbeat(&self, req: Heartbeat) -> Outcome {
        if let Err(o) = Self::validate(&req) {
            return o;
        }
        let interval = self
            .settings
            .heartbeat_interval
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let now = Instant::now();
        let mut groups = self.groups.lock();
        if req.member_epoch < 0 {
            let Some(g) = groups.get_mut(&req.group) else {
                return unknown_group(&req.group);
            };
            if !g.members.contains_key(&req.member_id) {
                return Outcome::error(
                    code::UNKNOWN_MEMBER_ID,
                    format!(
                        "Member {} is not a member of group {}.",
                        req.member_id, req.group
                    ),
                );
            }
            let static_leave = req.member_epoch == LEAVE_STATIC_EPOCH;
            match g.members.get_mut(&req.member_id) {
                // Kafka: a static member leaving for a while keeps its
                // place (and partitions) for its instance id.
                Some(m) if static_leave && m.instance_id.is_some() => m.left = true,
                _ => g.remove(
                    std::slice::from_ref(&req.member_id),
                    self.settings.broker_rack.as_deref(),
                ),
            }
            self.persist(&req.group, g);
            self.maybe_downgrade(&mut groups, &req.group);
            return Outcome {
                member_id: Some(req.member_id),
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: 0,
                ..Default::default()
            };
        }
        let joining = req.member_epoch == 0;
        if !joining && !groups.contains_key(&req.group) {
            return unknown_group(&req.group);
        }
        let g = groups.entry(req.group.clone()).or_default();
        let mut member_id = req.member_id.clone();
        let mut changed = false;
        if joining {
            if g.members.is_empty() && g.claim.is_none() {
                match claim::try_claim(&self.store, &req.group) {
                    Ok(Some(lock)) => g.claim = Some(lock),
                    Ok(None) => {
                        warn(&format!(
                            "group {:?} has classic or embedded members on this directory; refusing consumer-protocol members",
                            req.group
                        ));
                        return Outcome::error(
                            code::GROUP_ID_NOT_FOUND,
                            format!("Group {} is not a consumer group.", req.group),
                        );
                    }
                    Err(e) => {
                        warn(&format!(
                            "group {:?}: cannot take its coordinator claim: {e}",
                            req.group
                        ));
                        return Outcome::error(code::COORDINATOR_NOT_AVAILABLE, e.to_string());
                    }
                }
            }
            if member_id.is_empty() {
                member_id = self.new_member_id();
            }
            let replaced = req.instance_id.as_deref().and_then(|i| {
                g.members
                    .values()
                    .find(|m| m.instance_id.as_deref() == Some(i) && m.id != member_id)
                    .map(|m| (m.id.clone(), m.left))
            });
            match replaced {
                Some((old, false)) => {
                    return Outcome::error(
                        error::UNRELEASED_INSTANCE_ID,
                        format!(
                            "Static member {old} with instance id {} is not released yet.",
                            req.instance_id.as_deref().unwrap_or_default()
                        ),
                    );
                }
                Some((old, true)) => {
                    // A static member back (KIP-345 in KIP-848): the new
                    // member id takes the old one's place, epoch and
                    // partitions, without a new group epoch.
                    if let Some(mut m) = g.members.remove(&old) {
                        m.id = member_id.clone();
                        m.left = false;
                        if let Some(t) = g.target.remove(&old) {
                            g.target.insert(member_id.clone(), t);
                        }
                        g.members.insert(member_id.clone(), m);
                    }
                }
                None if !g.members.contains_key(&member_id)
                    && g.members.len() >= self.settings.max_size =>
                {
                    return Outcome::error(
                        error::GROUP_MAX_SIZE_REACHED,
                        format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            self.settings.max_size
                        ),
                    );
                }
                None => {
                    // A member joining again with its id starts afresh:
                    // what it had is free for the others.
                    g.members.insert(
                        member_id.clone(),
                        Member::new(member_id.clone(), &req, now, self.settings.session_timeout),
                    );
                    changed = true;
                }
            }
        } else {
            // A classic member speaks JoinGroup, SyncGroup and Heartbeat.
            let Some(m) = g.members.get(&member_id).filter(|m| m.classic.is_none()) else {
                return Outcome::error(
                    code::UNKNOWN_MEMBER_ID,
                    format!("Member {member_id} is not a member of group {}.", req.group),
                );
            };
            let epoch_ok = req.member_epoch == m.epoch
                || (req.member_epoch == m.previous_epoch
                    && req.member_epoch < m.epoch
                    && req.owned.as_ref().map_or(true, |o| {
                        pairs(o).all(|(t, p)| contains(&m.assigned, &t, p))
                    }));
            if !epoch_ok {
                return Outcome::error(
                    error::FENCED_MEMBER_EPOCH,
                    format!(
                        "The consumer group member has a smaller or larger member epoch ({}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                        req.member_epoch, m.epoch
                    ),
                );
            }
        }
        let Some(m) = g.members.get_mut(&member_id) else {
            return Outcome::error(code::UNKNOWN_MEMBER_ID, "unknown member");
        };
        m.expires = now + self.settings.session_timeout;
        m.client_id = req.client_id.clone();
        m.host = req.host.clone();
        if req.rebalance_timeout_ms > 0 {
            m.rebalance_timeout = Duration::from_millis(req.rebalance_timeout_ms as u64);
        }
        if let Some(o) = &req.owned {
            m.owned = Some(o.clone());
        }
        if let Some(topics) = &req.topics {
            let mut topics = topics.clone();
            topics.sort();
            topics.dedup();
            if topics != m.topics {
                m.topics = topics;
                changed = true;
            }
        }
        if let Some(r) = &req.regex {
            let r = (!r.is_empty()).then(|| r.clone());
            if r != m.regex {
                m.regex = r;
                changed = true;
            }
        }
        if req.assignor.is_some() && req.assignor != m.assignor {
            m.assignor = req.assignor.clone();
            changed = true;
        }
        let before = m.assigned.clone();
        self.bump_and_target(g, changed);
        g.reconcile(&member_id, now);
        self.persist(&req.group, g);
        let Some(m) = g.members.get(&member_id) else {
            return Outcome::error(code::UNKNOWN_MEMBER_ID, "unknown member");
        };
        let full = joining || req.owned.is_some();
        Outcome {
            error: code::NONE,
            message: None,
            member_id: Some(member_id.clone()),
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment: (full || m.assigned != before).then(|| m.assigned.clone()),
        }
    }

    /// `group.consumer.migration.policy`
    pub fn migration_policy(&self) -> MigrationPolicy {
        self.settings.migration
    }

    /// `group.consumer.max.size`
    pub fn max_size(&self) -> usize {
        self.settings.max_size
    }

    /// Whether this broker coordinates `group` as a consumer group now.
    pub fn is_active(&self, group: &str) -> bool {
        self.groups
            .lock()
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// For OffsetCommit: `None` if `group` is no consumer group with members
    /// here, else the commit's error code (Kafka's
    /// `ConsumerGroup.validateOffsetCommit`): a non-member gets
    /// UNKNOWN_MEMBER_ID, a member with another epoch STALE_MEMBER_EPOCH.
    /// Before OffsetCommit v9 the generation carries the member epoch.
    pub fn check_commit(&self, group: &str, member_id: &str, epoch: i32) -> Option<i16> {
        let groups = self.groups.lock();
        let g = groups.get(group).filter(|g| !g.members.is_empty())?;
        let Some(m) = g.members.get(member_id) else {
            return Some(code::UNKNOWN_MEMBER_ID);
        };
        Some(if epoch == m.epoch {
            code::NONE
        } else if m.classic.is_some() {
            // Kafka: a classic member's generation is its member epoch.
            code::ILLEGAL_GENERATION
        } else {
            error::STALE_MEMBER_EPOCH
        })
    }

    /// A consumer group known here, with members or Empty (Kafka keeps an
    /// empty consumer group, and describes it, until it is deleted).
    pub fn describe(&self, group: &str) -> Option<GroupInfo> {
        let groups = self.groups.lock();
        let g = groups.get(group)?;
        Some(GroupInfo {
            state: g.state(),
            epoch: g.epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor.clone(),
            members: g
                .members
                .values()
                .map(|m| MemberInfo {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    topics: m.topics.clone(),
                    regex: m.regex.clone(),
                    assignment: m.assigned.clone(),
                    target: g.target.get(&m.id).cloned().unwrap_or_default(),
                    classic: m.classic.is_some(),
                })
                .collect(),
        })
    }

    /// DeleteGroups of a consumer group without members: forget it and
    /// tombstone its records, as Kafka deletes a group. Whether there was
    /// such a group (a group with members is kept: false).
    pub fn forget(&self, group: &str) -> bool {
        let mut groups = self.groups.lock();
        if !groups.get(group).is_some_and(|g| g.members.is_empty()) {
            return false;
        }
        let Some(g) = groups.remove(group) else {
            return false;
        };
        let tombstones = records::diff(&g.persisted, &Records::new());
        if let Err(e) = self
            .store
            .offsets()
            .and_then(|o| o.write_group_records(&tombstones, Durability::PageCache))
        {
            warn(&format!(
                "consumer group {group:?}: cannot delete its state: {e}"
            ));
        }
        true
    }

    /// Groups with members: (name, state).
    pub fn live(&self) -> Vec<(String, &'static str)> {
        self.groups
            .lock()
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(n, g)| (n.clone(), g.state()))
            .collect()
    }

    /// Fence members whose session ran out, or that did not revoke within
    /// their rebalance timeout. Run by the classic coordinator's reaper.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let mut changed = Vec::new();
        for (name, g) in groups.iter_mut() {
            let fenced: Vec<String> = g
                .members
                .values()
                .filter(|m| m.expires <= now || m.revoke_deadline.is_some_and(|d| d <= now))
                .map(|m| m.id.clone())
                .collect();
            if !fenced.is_empty() {
                crate::errors::debug(&format!("consumer group {name:?}: fenced {fenced:?}"));
                g.remove(&fenced, self.settings.broker_rack.as_deref());
                self.persist(name, g);
                changed.push(name.clone());
            }
        }
        for name in changed {
            self.maybe_downgrade(&mut groups, &name);
        }
    }

    /// Read every consumer group back from `__consumer_offsets`, replacing
    /// what was known (a broker becoming their coordinator in a cluster).
    pub fn reload(&self) {
        match self.load() {
            Ok(groups) => *self.groups.lock() = groups,
            Err(e) => {
                warn(&format!("consumer groups: cannot read them back: {e}"));
                self.groups.lock().clear();
            }
        }
    }

    /// Let go of every group (broker shutdown, or no longer their
    /// coordinator in a cluster).
    pub fn release_all(&self) {
        self.groups.lock().clear();
    }
}

/// A heartbeat (epoch > 0, or a leave) for a group this broker does not
/// know, as after a broker restart: UNKNOWN_MEMBER_ID, as Kafka 4.x answers
/// ("Consumer group g not found."), so the member joins again; Kafka keeps
/// GROUP_ID_NOT_FOUND for a group of another type, which clients take as
/// fatal.
fn unknown_group(group: &str) -> Outcome {
    Outcome::error(
        code::UNKNOWN_MEMBER_ID,
        format!("Consumer group {group} not found."),
    )
}

/// Runs `tick` every 100 ms until shutdown.
pub async fn reaper(
    shared: Arc<crate::Shared>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    _done: tokio::sync::mpsc::Sender<()>,
) {
    let period = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(period) => {}
        }
        // In a cluster, what expiry writes goes under the leadership of
        // `__consumer_offsets` (no groups to expire when not leading it).
        let _ = crate::coordinator::placement::with_leadership(&shared, || {
            shared.consumer_groups.tick()
        });
    }
}
