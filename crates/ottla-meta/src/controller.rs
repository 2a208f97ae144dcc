//! A controller: one member of the metadata quorum. It runs a Raft node on
//! its directory and a [`Transport`], proposes records when it is the leader
//! (the active controller), and publishes the metadata image to whoever
//! watches it (the brokers in the same process).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::decide::{self, DecideError, ElectionType, HeartbeatTracker, PartitionError};
use crate::heard::LastHeard;
use crate::image::{Applied, ApplyError, MetadataImage};
use crate::network::{Network, RpcServer, Transport};
use crate::records::{BrokerId, Endpoint, MetadataRecord, Proposal, TopicId};
use crate::store::log::{LogStore, DEFAULT_SEGMENT_BYTES};
use crate::store::state_machine::StateMachine;
use crate::store::StoreError;
use crate::types::{BasicNode, NodeId, Raft};

/// Milliseconds from `base` to `at` (0 if `at` is earlier).
fn millis_since(base: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX)
}

/// How a controller is set up.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// Where its log, vote and snapshot live (created if missing).
    pub dir: PathBuf,
    /// The voters of the quorum, every controller with the same set (as
    /// Kafka's `controller.quorum.voters`).
    pub voters: BTreeMap<NodeId, BasicNode>,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long [`Controller::propose`] waits for a commit before giving up
    /// with [`ProposeError::Timeout`].
    pub propose_timeout: Duration,
    /// A snapshot is taken after this many entries (and the log purged
    /// behind it).
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot (for followers that
    /// are a little behind).
    pub keep_behind_snapshot: u64,
    pub segment_bytes: u64,
}

impl ControllerConfig {
    /// Defaults in the spirit of KRaft's (`controller.quorum.election.timeout.ms`
    /// 1000, `fetch.timeout.ms` 2000), scaled to a heartbeat of 100 ms.
    pub fn new(node_id: NodeId, dir: PathBuf, voters: BTreeMap<NodeId, BasicNode>) -> Self {
        ControllerConfig {
            node_id,
            dir,
            voters,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            propose_timeout: Duration::from_secs(5),
            snapshot_every: 10_000,
            keep_behind_snapshot: 1000,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// Why a controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid Raft configuration: {0}")]
    Config(String),
    #[error("Raft failed to start: {0}")]
    Raft(String),
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This controller is not the active one; `leader` is the one it knows of.
    #[error("not the active controller (the leader is {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// Committed, and refused by the state machine: nothing changed.
    #[error("refused: {0}")]
    Rejected(ApplyError),
    /// No commit within the timeout (no quorum reachable, say). The outcome
    /// is unknown: the proposal may still commit later.
    #[error("no commit within {0:?}: the outcome is unknown")]
    Timeout(Duration),
    /// The controller could not decide the records.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// The Raft node stopped (shut down, or a storage failure).
    #[error("the controller stopped: {0}")]
    Stopped(String),
}

/// One member of the metadata quorum.
pub struct Controller {
    node_id: NodeId,
    raft: Raft,
    image: watch::Receiver<Arc<MetadataImage>>,
    log: LogStore,
    propose_timeout: Duration,
    voters: BTreeMap<NodeId, BasicNode>,
    liveness: Mutex<Liveness>,
    /// The last AppendEntries accepted from a leader (its RPC server
    /// records it).
    heard: LastHeard,
    /// A voter's lease on its leader (openraft's: the maximum election
    /// timeout): it refuses to vote for another while it heard from its
    /// leader within this.
    lease: Duration,
    /// The leader's heartbeat interval.
    raft_heartbeat: Duration,
    /// An election is scheduled by [`Controller::leader_unreachable`].
    elect_pending: Arc<AtomicBool>,
}

/// Broker liveness as the active controller sees it (not replicated).
struct Liveness {
    /// The Raft term the tracker was started in, and whether this node led
    /// it then: a new term (a new active controller, or this one again)
    /// starts every broker afresh.
    term: (u64, bool),
    /// Milliseconds are counted from here.
    base: Instant,
    since_ms: u64,
    tracker: HeartbeatTracker,
}

impl Controller {
    /// Opens the controller's directory and starts its Raft node over
    /// `transport`. It takes part in elections at once; a quorum that never
    /// started is bootstrapped by [`Controller::initialize`].
    pub async fn open<T: Transport>(
        config: ControllerConfig,
        transport: Arc<T>,
    ) -> Result<Self, OpenError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| StoreError::io(&config.dir, e))?;
        let log = LogStore::open(&config.dir, config.segment_bytes)?;
        let sm = StateMachine::open(&config.dir)?;
        let image = sm.subscribe();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let raft_config = openraft::Config {
            cluster_name: "ottla-meta".into(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_behind_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Config(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(transport),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| OpenError::Raft(e.to_string()))?;
        Ok(Controller {
            node_id: config.node_id,
            raft,
            image,
            log,
            propose_timeout: config.propose_timeout,
            voters: config.voters,
            heard: LastHeard::default(),
            lease: config.election_timeout_max,
            raft_heartbeat: config.heartbeat_interval,
            elect_pending: Arc::new(AtomicBool::new(false)),
            liveness: Mutex::new(Liveness {
                term: (0, false),
                base: Instant::now(),
                since_ms: 0,
                tracker: HeartbeatTracker::default(),
            }),
        })
    }

    /// Bootstraps the quorum with the configured voters if this node has
    /// never been part of one (no vote, no log); a no-op otherwise. Every
    /// voter may call it: they all write the same first entry.
    pub async fn initialize(&self) -> Result<(), ProposeError> {
        match self.raft.initialize(self.voters.clone()).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The current metadata image (as applied on this node).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// A receiver that sees every new image (brokers learn of changes here).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.clone()
    }

    /// The leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// openraft's handle (metrics, triggers), for tests and diagnostics.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The log store (for tests and diagnostics).
    pub fn log_store(&self) -> &LogStore {
        &self.log
    }

    /// The handler of Raft requests addressed to this controller: a transport
    /// hands it the bytes it received.
    pub fn rpc_server(&self) -> RpcServer {
        RpcServer::new(self.raft.clone(), self.heard.clone())
    }

    /// Proposes records, applied all or nothing once committed: the offset
    /// and epoch they landed at, or why not.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<Applied, ProposeError> {
        let write = self.raft.client_write(Proposal { records });
        match tokio::time::timeout(self.propose_timeout, write).await {
            Err(_) => Err(ProposeError::Timeout(self.propose_timeout)),
            Ok(Ok(resp)) => resp.data.map_err(ProposeError::Rejected),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// Registers a broker process (a new `incarnation_id` at every start) and
    /// returns its broker epoch. It starts fenced; it is unfenced
    /// ([`Controller::unfence_broker`]) once it has caught up.
    pub async fn register_broker(
        &self,
        broker_id: BrokerId,
        incarnation_id: [u8; 16],
        listeners: Vec<Endpoint>,
        rack: Option<String>,
    ) -> Result<u64, ProposeError> {
        let record = MetadataRecord::RegisterBroker {
            broker_id,
            incarnation_id,
            listeners,
            rack,
        };
        // A new incarnation of a broker the image still has (a process
        // restarted within its session, before it was fenced): what the old
        // process led moves to in-sync replicas first, as fencing it would,
        // in the same proposal; the registration then takes it out of every
        // in-sync set. Without the elections its partitions would stay
        // leaderless while their other in-sync replicas are alive.
        self.decide_and_propose(|img| {
            let mut records = match img.brokers.get(&broker_id) {
                Some(old) if old.incarnation_id != incarnation_id => {
                    decide::on_broker_fenced(img, broker_id)?
                }
                _ => Vec::new(),
            };
            records.push(record.clone());
            Ok(records)
        })
        .await?;
        // The epoch is the offset of the record that created this
        // incarnation's registration (an earlier one if this was a repeat).
        match self.image().brokers.get(&broker_id) {
            Some(b) if b.incarnation_id == incarnation_id => Ok(b.broker_epoch),
            // Replaced by a newer incarnation meanwhile.
            _ => Err(ProposeError::Rejected(ApplyError::UnknownBroker(broker_id))),
        }
    }

    /// Creates a topic: `partitions` partitions of `replication_factor`
    /// replicas placed over the unfenced brokers
    /// ([`decide::assign_replicas`]).
    pub async fn create_topic(
        &self,
        name: &str,
        topic_id: TopicId,
        partitions: i32,
        replication_factor: usize,
        configs: BTreeMap<String, String>,
    ) -> Result<Applied, ProposeError> {
        self.decide_and_propose(|img| {
            Ok(vec![MetadataRecord::CreateTopic {
                name: name.to_string(),
                topic_id,
                partitions: decide::assign_replicas(img, partitions, replication_factor)?,
                configs: configs.clone(),
            }])
        })
        .await
    }

    /// Adds partitions to a topic, up to `count` ([`decide::add_partitions`]).
    pub async fn create_partitions(
        &self,
        topic_id: TopicId,
        count: i32,
    ) -> Result<Applied, ProposeError> {
        self.decide_and_propose(|img| decide::add_partitions(img, topic_id, count))
            .await
    }

    /// Makes `node` (at controller address `address`) a learner of the
    /// quorum, if it is not a member yet: it is sent the metadata log and
    /// follows it without voting (a broker-only node, as KRaft's brokers
    /// follow the metadata log). Only the active controller can.
    pub async fn add_learner(&self, node: NodeId, address: &str) -> Result<(), ProposeError> {
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node)
            .is_some_and(|n| n.addr == address);
        if known {
            return Ok(());
        }
        match self
            .raft
            .add_learner(node, BasicNode::new(address), false)
            .await
        {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ProposeError::Stopped(e.to_string())),
        }
    }

    /// The controller address of every member of the quorum (voters and
    /// learners), as the replicated membership records them.
    pub fn member_addresses(&self) -> Vec<(NodeId, String)> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// Fences `broker_id`, moving its leaderships to in-sync followers
    /// ([`decide::on_broker_fenced`]), decided on the leader's image.
    pub async fn fence_broker(&self, broker_id: BrokerId) -> Result<Applied, ProposeError> {
        self.decide_and_propose(|img| decide::on_broker_fenced(img, broker_id))
            .await
    }

    /// Unfences `broker_id` and gives it the partitions left without a
    /// leader that it is in sync for ([`decide::on_broker_unfenced`]).
    pub async fn unfence_broker(&self, broker_id: BrokerId) -> Result<Applied, ProposeError> {
        self.decide_and_propose(|img| decide::on_broker_unfenced(img, broker_id))
            .await
    }

    /// Starts (`Some(target)`) or cancels (`None`) reassignments
    /// ([`decide::reassign`]), all decided on one image and proposed in one
    /// entry: each partition's outcome, in the order asked.
    pub async fn reassign(
        &self,
        requests: &[(TopicId, i32, Option<Vec<BrokerId>>)],
    ) -> Result<Vec<Result<(), PartitionError>>, ProposeError> {
        let results = Mutex::new(Vec::new());
        self.decide_and_propose(|img| {
            let mut records = Vec::new();
            let mut outcome = Vec::new();
            for (topic_id, partition, target) in requests {
                match decide::reassign(img, *topic_id, *partition, target.as_deref()) {
                    Ok(Some(r)) => {
                        records.push(r);
                        outcome.push(Ok(()));
                    }
                    Ok(None) => outcome.push(Ok(())),
                    Err(e) => outcome.push(Err(e)),
                }
            }
            *results.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
            Ok(records)
        })
        .await?;
        Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Elects leaders (Kafka's ElectLeaders, [`decide::elect_leader`]) of
    /// the partitions given, in one entry: each partition's outcome.
    pub async fn elect_leaders(
        &self,
        kind: ElectionType,
        partitions: &[(TopicId, i32)],
    ) -> Result<Vec<Result<(), PartitionError>>, ProposeError> {
        let results = Mutex::new(Vec::new());
        self.decide_and_propose(|img| {
            let mut records = Vec::new();
            let mut outcome = Vec::new();
            for (topic_id, partition) in partitions {
                match decide::elect_leader(img, *topic_id, *partition, kind) {
                    Ok(r) => {
                        records.push(r);
                        outcome.push(Ok(()));
                    }
                    Err(e) => outcome.push(Err(e)),
                }
            }
            *results.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
            Ok(records)
        })
        .await?;
        Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    /// Completes the reassignments that can complete now
    /// ([`decide::complete_reassignments`]); proposes nothing when none can.
    pub async fn complete_reassignments(&self) -> Result<Option<Applied>, ProposeError> {
        if decide::complete_reassignments(&self.image()).is_empty() {
            return Ok(None);
        }
        self.decide_and_propose(|img| Ok(decide::complete_reassignments(img)))
            .await
            .map(Some)
    }

    /// Removes a broker from the cluster (Kafka's UnregisterBroker): its
    /// registration goes (refused while it holds a replica), and a node
    /// that is not a voter stops being a learner of the quorum.
    pub async fn unregister_broker(&self, broker_id: BrokerId) -> Result<Applied, ProposeError> {
        let applied = self
            .propose(vec![MetadataRecord::UnregisterBroker { broker_id }])
            .await?;
        let node = NodeId::from(broker_id.unsigned_abs());
        let learner = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            membership.get_node(&node).is_some() && !membership.voter_ids().any(|v| v == node)
        };
        if learner {
            let remove =
                openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([node]));
            // Best effort: a learner left in the membership is only sent the
            // log; the registration is gone either way.
            let _ = self.raft.change_membership(remove, false).await;
        }
        Ok(applied)
    }

    /// Decides records on the active controller's up-to-date image with
    /// `decide` (called again if the image moved) and proposes them: for
    /// changes whose decision is the caller's (the broker's ACL filters and
    /// SCRAM checks), as KRaft's `AclControlManager` and
    /// `ScramControlManager` decide on the controller. No records: nothing
    /// is proposed, and the image's offset is returned.
    pub async fn propose_decided<F>(&self, decide: F) -> Result<Applied, ProposeError>
    where
        F: Fn(&MetadataImage) -> Result<Vec<MetadataRecord>, DecideError>,
    {
        self.decide_and_propose(decide).await
    }

    /// Decides on the current image and proposes; a decision refused as
    /// stale (the image moved meanwhile) is decided again, a few times.
    async fn decide_and_propose<F>(&self, decide: F) -> Result<Applied, ProposeError>
    where
        F: Fn(&MetadataImage) -> Result<Vec<MetadataRecord>, DecideError>,
    {
        let mut attempts = 0;
        loop {
            // The leader's image includes everything committed before its
            // term once its first (blank) entry is applied.
            self.raft.ensure_linearizable().await.map_err(|e| match e {
                RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                    ProposeError::NotLeader {
                        leader: f.leader_id,
                    }
                }
                other => ProposeError::Stopped(other.to_string()),
            })?;
            let image = self.image();
            let records = decide(&image)?;
            if records.is_empty() {
                // Nothing to change (every partition of an election needs
                // none, say): no empty entry in the metadata log.
                return Ok(Applied {
                    offset: image.offset,
                    epoch: image.epoch,
                });
            }
            match self.propose(records).await {
                Err(ProposeError::Rejected(ApplyError::StalePartitionEpoch { .. }))
                    if attempts < 3 =>
                {
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    /// Liveness state, reset when the term changed since it was last used.
    ///
    /// A new active controller gives every broker a whole session from now
    /// (as KRaft does), except the previous active controller's: that one
    /// is counted from the last AppendEntries this node accepted from it,
    /// its last proof of life (a leader that died with its broker would
    /// otherwise keep its partitions for the election and a whole session
    /// more). A live one that was only slow is fenced at worst, which moves
    /// its leaderships to in-sync replicas; its next heartbeat unfences it.
    fn liveness(&self) -> (std::sync::MutexGuard<'_, Liveness>, u64) {
        let (term, leading) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.current_term,
                m.state == ServerState::Leader && m.current_leader == Some(self.node_id),
            )
        };
        let mut g = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        let now_ms = millis_since(g.base, Instant::now());
        if g.term != (term, leading) {
            g.term = (term, leading);
            g.since_ms = now_ms;
            let image = self.image();
            g.tracker.reset(&image, now_ms);
            if leading {
                let previous = self.heard.take().filter(|h| h.leader != self.node_id);
                if let Some(h) = previous {
                    if let Ok(broker) = BrokerId::try_from(h.leader) {
                        let at_ms = millis_since(g.base, h.at).min(now_ms);
                        g.tracker.last_heard_at(broker, at_ms);
                    }
                }
            }
        }
        (g, now_ms)
    }

    /// The leader `leader`'s process is gone (its controller listener
    /// refused a connection: nobody listens there). A follower that voted
    /// for it elects as soon as the leader's lease on the other voters has
    /// run out (when openraft's own timer would only start counting its
    /// election timeout), if it has heard nothing from that leader since:
    /// the same vote a timeout would start, earlier. The voters take turns
    /// by id, a heartbeat interval apart, so that they do not split the
    /// vote; the lease itself still stops any election while the leader
    /// is heard from. Returns whether an election was scheduled.
    pub fn leader_unreachable(&self, leader: NodeId) -> bool {
        let (voters, current) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (voters, (m.current_leader, m.state))
        };
        if leader == self.node_id
            || current != (Some(leader), ServerState::Follower)
            || !voters.contains(&self.node_id)
        {
            return false;
        }
        let Some(heard) = self.heard.get().filter(|h| h.leader == leader) else {
            return false;
        };
        // My turn among the voters other than the leader.
        let turn = voters
            .iter()
            .filter(|v| **v != leader && **v < self.node_id)
            .count();
        let turn = u32::try_from(turn).unwrap_or(u32::MAX);
        let at = heard.at + self.lease + self.raft_heartbeat.saturating_mul(turn.saturating_add(1));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.elect_pending.swap(true, Ordering::AcqRel) {
            return false;
        }
        let (raft, last, pending, me) = (
            self.raft.clone(),
            self.heard.clone(),
            self.elect_pending.clone(),
            self.node_id,
        );
        runtime.spawn(async move {
            tokio::time::sleep_until(at).await;
            let still = {
                let m = raft.metrics();
                let m = m.borrow();
                m.current_leader == Some(leader) && m.state == ServerState::Follower
            };
            // Heard from it meanwhile: alive after all.
            let silent = last.get() == Some(heard);
            if still && silent && me != leader {
                // A stopped Raft node has nothing to elect.
                let _ = raft.trigger().elect().await;
            }
            pending.store(false, Ordering::Release);
        });
        true
    }

    /// Records a heartbeat of `broker_id` (the broker's heartbeat request,
    /// handled by the active controller).
    pub fn broker_heartbeat(&self, broker_id: BrokerId) {
        let (mut g, now_ms) = self.liveness();
        g.tracker.heartbeat(broker_id, now_ms);
    }

    /// Fences the unfenced brokers not heard from for longer than
    /// `session_timeout` (Kafka's `broker.session.timeout.ms`), each with its
    /// leaderships moved ([`Controller::fence_broker`]); returns the ones
    /// fenced. Only the active controller does this (`NotLeader` otherwise);
    /// a new one gives every broker a whole session first, except the
    /// previous active controller's (see `liveness`).
    pub async fn fence_expired(
        &self,
        session_timeout: Duration,
    ) -> Result<Vec<BrokerId>, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        }
        let expired = {
            let (g, now_ms) = self.liveness();
            let timeout_ms = u64::try_from(session_timeout.as_millis()).unwrap_or(u64::MAX);
            g.tracker
                .expired(&self.image(), now_ms, g.since_ms, timeout_ms)
        };
        for b in &expired {
            self.fence_broker(*b).await?;
        }
        Ok(expired)
    }

    /// When this node last accepted an AppendEntries, and from which leader.
    pub fn last_heard(&self) -> Option<crate::heard::Heard> {
        self.heard.get()
    }

    /// Stops the Raft node (its files stay as they are, ready to reopen).
    pub async fn shutdown(&self) {
        // A join error means a Raft task panicked: nothing left to stop.
        let _ = self.raft.shutdown().await;
    }
}
