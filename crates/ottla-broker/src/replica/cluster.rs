//! Cluster mode of the replica manager (issue 14): what the control plane
//! calls ([`ReplicaManager::enable_cluster`],
//! [`ReplicaManager::apply_assignments`]) and what the data path asks of
//! it: who leads a partition here, a follower's fetch recorded on the
//! leader (its position, the ISR growing, the high watermark moving),
//! acks=all waiting for the ISR, and the timer that shrinks the ISR and
//! checkpoints high watermarks.
//!
//! Without `enable_cluster` none of this runs: every partition is led by
//! this broker alone and the high watermark is the log end, as before.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::fetcher::{self, FetcherContext, Followed, FollowedSet, PeerReach};
use super::isr;
use super::partition_state::{
    fresh_follower, BrokerId, ClusterLink, Partition, PartitionAssignment, PartitionState, Role,
};
use super::ReplicaManager;
use crate::errors::{code, debug, warn, Refusal};
use ottla_storage::log::PartitionLog;
use ottla_storage::store::Topic;
use ottla_storage::topic::TopicId;

/// How often high watermarks are checkpointed (Kafka's
/// `replica.high.watermark.checkpoint.interval.ms`).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

type Key = (String, i32);

/// A running fetcher: the partitions it fetches and its stop switch.
struct FetcherHandle {
    partitions: FollowedSet,
    stop: watch::Sender<bool>,
}

/// The replica manager's state in cluster mode.
pub struct Cluster {
    pub link: ClusterLink,
    partitions: RwLock<HashMap<Key, Arc<Partition>>>,
    fetchers: Mutex<HashMap<BrokerId, FetcherHandle>>,
    /// Serialises `apply_assignments` calls.
    applying: Mutex<()>,
    /// Leaders the fetchers found gone (see `fetcher::PeerReach`).
    reach: Arc<PeerReach>,
}

impl Cluster {
    fn partition(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    fn lag(&self) -> Duration {
        Duration::from_millis(self.link.replica_lag_time_max_ms)
    }
}

impl ReplicaManager {
    /// Turn on cluster mode (before any assignment); without it the broker
    /// is a single node as today. Starts the task that shrinks the ISR of
    /// the partitions this broker leads and checkpoints high watermarks.
    pub fn enable_cluster(&self, link: ClusterLink) {
        let cluster = Arc::new(Cluster {
            link,
            partitions: RwLock::new(HashMap::new()),
            fetchers: Mutex::new(HashMap::new()),
            applying: Mutex::new(()),
            reach: Arc::new(PeerReach::default()),
        });
        *self.cluster.write() = Some(cluster.clone());
        let mut stopping = self.stopping.clone();
        let runtime = self.runtime.clone();
        let tick = (cluster.lag() / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        self.runtime.spawn(async move {
            let mut last_checkpoint = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stopping.changed() => {}
                }
                if *stopping.borrow() {
                    // `Broker::close` checkpoints before it stops.
                    return;
                }
                maybe_shrink_isr(&cluster, &runtime);
                if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                    last_checkpoint = Instant::now();
                    let c = cluster.clone();
                    let _ = tokio::task::spawn_blocking(move || checkpoint_all(&c)).await;
                }
            }
        });
    }

    /// Write every served partition's high watermark to its checkpoint
    /// file if it moved since the last one (the timer does so every 5 s;
    /// the broker on close). Nothing outside cluster mode.
    pub fn checkpoint_high_watermarks(&self) {
        // Blocking file work, called outside the runtime's tasks (close).
        if let Some(c) = self.cluster() {
            checkpoint_all(&c);
        }
    }

    pub(crate) fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.read().clone()
    }

    /// Whether cluster mode is on.
    pub fn is_cluster(&self) -> bool {
        self.cluster.read().is_some()
    }

    /// The cluster's current view of every partition this broker is a
    /// replica of (full set, idempotent: called after each metadata change
    /// with all of them). Creates missing local logs (with the topic id and
    /// the topic's configs from `configs`, by topic name), becomes leader or
    /// follower as told, starts and stops fetchers, and stops serving
    /// partitions absent from the list (their logs are deleted only if
    /// their topic id is in `deleted_topics`). Blocking (files): call it
    /// from a blocking context or a multi-threaded runtime's task.
    pub fn apply_assignments(
        &self,
        assignments: Vec<PartitionAssignment>,
        configs: &HashMap<String, BTreeMap<String, String>>,
        deleted_topics: &[uuid::Uuid],
    ) {
        let Some(cluster) = self.cluster() else {
            warn("apply_assignments before enable_cluster: ignored");
            return;
        };
        crate::blocking(|| self.apply_locked(&cluster, assignments, configs, deleted_topics));
    }

    /// Kafka's stray replica deletion (3.7+): called once, with the first
    /// assignments of a caught-up image, before they are applied. Every
    /// local topic the image does not assign here under the same id (see
    /// [`crate::cluster::assignments::strays`]) was deleted, or moved away
    /// from this broker, while it was down: its copy is deleted, with a
    /// line on stderr for each.
    pub fn delete_strays(&self, assignments: &[PartitionAssignment]) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        crate::blocking(|| {
            let _one = cluster.applying.lock();
            let names = match self.store.list_topics(true) {
                Ok(names) => names,
                Err(e) => {
                    warn(&format!("looking for stray replicas: {e}"));
                    return;
                }
            };
            let mut local = Vec::new();
            for name in names {
                match self.store.topic(&name) {
                    Ok(Some(t)) => local.push((name, uuid::Uuid::from_bytes(t.id.0))),
                    Ok(None) => {}
                    Err(e) => warn(&format!("looking for stray replicas: topic {name}: {e}")),
                }
            }
            for (name, id) in crate::cluster::assignments::strays(assignments, &local) {
                self.stop_serving_topic(&cluster, &name);
                match self.store.delete_topic_keeping_offsets(&name) {
                    Ok(()) => warn(&format!(
                        "deleted the stray replica of topic {name} (id {id}): \
                         the metadata assigns this broker none of its partitions"
                    )),
                    Err(e) => warn(&format!("deleting the stray replica of topic {name}: {e}")),
                }
                self.forget_topic(&name);
            }
        });
    }

    fn apply_locked(
        &self,
        cluster: &Arc<Cluster>,
        assignments: Vec<PartitionAssignment>,
        configs: &HashMap<String, BTreeMap<String, String>>,
        deleted_topics: &[uuid::Uuid],
    ) {
        let _one = cluster.applying.lock();
        let local = cluster.link.local;
        // Deleted topics: stop serving, then delete the local copy.
        if !deleted_topics.is_empty() {
            if let Ok(names) = self.store.list_topics(true) {
                for name in names {
                    let Ok(Some(t)) = self.store.topic(&name) else {
                        continue;
                    };
                    if deleted_topics.contains(&uuid::Uuid::from_bytes(t.id.0)) {
                        self.stop_serving_topic(cluster, &name);
                        if let Err(e) = self.store.delete_topic_keeping_offsets(&name) {
                            warn(&format!("deleting topic {name}: {e}"));
                        }
                        self.forget_topic(&name);
                    }
                }
            }
        }
        // The local topics, made to match the cluster's.
        let mut wanted: BTreeMap<&str, (uuid::Uuid, u32)> = BTreeMap::new();
        for a in &assignments {
            if a.partition < 0 {
                continue;
            }
            let e = wanted.entry(a.topic.as_str()).or_insert((a.topic_id, 0));
            e.1 = e.1.max(a.partition as u32 + 1);
        }
        let mut topics: HashMap<String, Topic> = HashMap::new();
        for (name, (id, partitions)) in wanted {
            match self.local_topic(cluster, name, id, partitions, configs.get(name)) {
                Ok(t) => {
                    topics.insert(name.to_string(), t);
                }
                Err(e) => warn(&format!("replica of topic {name}: {e}")),
            }
        }
        let mut keep: Vec<Key> = Vec::new();
        for a in assignments {
            let Some(topic) = topics.get(&a.topic) else {
                continue;
            };
            let key = (a.topic.clone(), a.partition);
            let log = match self.store.partition(topic, a.partition as u32) {
                Ok(l) => l,
                Err(e) => {
                    warn(&format!("replica {}-{}: {e}", a.topic, a.partition));
                    continue;
                }
            };
            keep.push(key.clone());
            let existing = cluster.partition(&a.topic, a.partition);
            let role = if a.leader == Some(local) {
                Role::Leader
            } else {
                Role::Follower
            };
            if let Some(p) = &existing {
                // A stale view (an older leader epoch than the one this
                // broker acts in) is ignored, as Kafka's LeaderAndIsr is.
                if Arc::ptr_eq(&p.log, &log)
                    && a.leader_epoch < p.state.lock().assignment.leader_epoch
                {
                    continue;
                }
                if Arc::ptr_eq(&p.log, &log) {
                    let mut st = p.state.lock();
                    let same = st.role == role
                        && st.assignment.leader == a.leader
                        && st.assignment.leader_epoch == a.leader_epoch;
                    if same {
                        if a.partition_epoch >= st.assignment.partition_epoch {
                            let isr_changed = st.assignment.isr != a.isr;
                            st.assignment.isr = a.isr.clone();
                            st.assignment.replicas = a.replicas.clone();
                            st.assignment.partition_epoch = a.partition_epoch;
                            if st
                                .pending_isr
                                .as_ref()
                                .is_some_and(|pending| *pending == a.isr)
                            {
                                st.pending_isr = None;
                            }
                            if role == Role::Leader {
                                let now = Instant::now();
                                for r in &a.replicas {
                                    if *r != local {
                                        st.followers
                                            .entry(*r)
                                            .or_insert_with(|| fresh_follower(now));
                                    }
                                }
                                if let Ok(leo) = log.log_end_offset() {
                                    if let Some(hw) = st.advance_high_watermark(local, leo) {
                                        log.set_high_watermark(Some(hw));
                                    }
                                }
                            }
                            drop(st);
                            if isr_changed {
                                p.notify();
                            }
                        }
                        continue;
                    }
                }
            }
            // New here, or a new leader or epoch: start over in the role,
            // once the old one's appends and fetches in flight are done.
            if let Some(old) = &existing {
                old.retire();
            }
            deactivate_followed(cluster, &key);
            let state = self.become_(cluster, &log, &a, role, existing.as_deref());
            let part = Arc::new(Partition::new(log.clone(), state));
            cluster.partitions.write().insert(key.clone(), part.clone());
        }
        // Partitions no longer assigned here: not served any more.
        let gone: Vec<Arc<Partition>> = {
            let mut map = cluster.partitions.write();
            let keys: Vec<Key> = map.keys().filter(|k| !keep.contains(k)).cloned().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for p in gone {
            p.retire();
            let st = p.state.lock();
            let key = (st.assignment.topic.clone(), st.assignment.partition);
            drop(st);
            deactivate_followed(cluster, &key);
        }
        self.sync_fetchers(cluster);
    }

    /// The local topic `name` as the cluster has it: created with its id,
    /// grown to `partitions`, or made again if the local one is an older
    /// topic of that name (another id).
    fn local_topic(
        &self,
        cluster: &Arc<Cluster>,
        name: &str,
        id: uuid::Uuid,
        partitions: u32,
        config: Option<&BTreeMap<String, String>>,
    ) -> ottla_storage::error::Result<Topic> {
        let wanted = config;
        let config: Vec<(String, String)> = config
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let tid = TopicId(*id.as_bytes());
        if let Some(mut t) = self.store.topic(name)? {
            if t.id == tid {
                if t.partitions < partitions {
                    t = self.store.create_partitions(name, partitions)?;
                }
                // The cluster's configs, when given, replace the local ones.
                if let Some(wanted) = wanted {
                    let mut changes: Vec<(String, Option<String>)> = Vec::new();
                    for (k, v) in wanted {
                        if t.config.overrides.get(k) != Some(v) {
                            changes.push((k.clone(), Some(v.clone())));
                        }
                    }
                    for k in t.config.overrides.keys() {
                        if !wanted.contains_key(k) {
                            changes.push((k.clone(), None));
                        }
                    }
                    if !changes.is_empty() {
                        t = self.store.alter_topic_config(name, &changes)?;
                    }
                }
                return Ok(t);
            }
            // An older incarnation of the name: gone from the cluster.
            self.stop_serving_topic(cluster, name);
            self.store.delete_topic_keeping_offsets(name)?;
            self.forget_topic(name);
        }
        match self
            .store
            .create_topic_with_id(name, partitions, &config, tid)
        {
            Err(ottla_storage::error::Error::TopicAlreadyExists(_)) => {
                self.store.require_topic(name)
            }
            other => other,
        }
    }

    fn stop_serving_topic(&self, cluster: &Arc<Cluster>, name: &str) {
        let gone: Vec<Arc<Partition>> = {
            let mut map = cluster.partitions.write();
            let keys: Vec<Key> = map.keys().filter(|k| k.0 == name).cloned().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for p in gone {
            p.retire();
            let st = p.state.lock();
            let key = (st.assignment.topic.clone(), st.assignment.partition);
            drop(st);
            deactivate_followed(cluster, &key);
        }
        self.sync_fetchers(cluster);
    }

    /// The state of a partition taking `role` in `a`'s epoch.
    fn become_(
        &self,
        cluster: &Cluster,
        log: &Arc<PartitionLog>,
        a: &PartitionAssignment,
        role: Role,
        previous: Option<&Partition>,
    ) -> PartitionState {
        let local = cluster.link.local;
        let leo = log.log_end_offset().unwrap_or(0);
        let (start, _) = log.offsets().unwrap_or((0, 0));
        // Where the high watermark starts: what this broker knew (it never
        // goes above the log end), else the checkpoint, else the log start.
        let known = previous
            .map(|p| p.log.high_watermark().unwrap_or(start))
            .or_else(|| {
                if log.has_replicated_high_watermark() {
                    log.high_watermark().ok()
                } else {
                    log.read_high_watermark_checkpoint().ok().flatten()
                }
            })
            .unwrap_or(start)
            .min(leo);
        log.set_high_watermark(Some(known));
        let mut state = PartitionState {
            assignment: a.clone(),
            role,
            followers: HashMap::new(),
            epoch_start_offset: leo,
            high_watermark: known,
            pending_isr: None,
            checkpointed: -1,
        };
        if role == Role::Leader {
            // The log appends in the new epoch from now on.
            log.set_leader_epoch(a.leader_epoch);
            let now = Instant::now();
            for r in &a.replicas {
                if *r != local {
                    state.followers.insert(*r, fresh_follower(now));
                }
            }
            if let Some(hw) = state.advance_high_watermark(local, leo) {
                log.set_high_watermark(Some(hw));
            }
        }
        debug(&format!(
            "broker {local}: {}-{} {:?} in epoch {} (leader {:?}, isr {:?}, hw {})",
            a.topic, a.partition, role, a.leader_epoch, a.leader, a.isr, state.high_watermark
        ));
        state
    }

    /// Fetchers made to match the followed partitions: one per leader.
    fn sync_fetchers(&self, cluster: &Arc<Cluster>) {
        let mut by_leader: HashMap<BrokerId, Vec<(Key, Arc<Partition>)>> = HashMap::new();
        for (k, p) in cluster.partitions.read().iter() {
            let st = p.state.lock();
            if st.role != Role::Follower {
                continue;
            }
            if let Some(l) = st.assignment.leader.filter(|l| *l != cluster.link.local) {
                by_leader.entry(l).or_default().push((k.clone(), p.clone()));
            }
        }
        let mut fetchers = cluster.fetchers.lock();
        fetchers.retain(|leader, h| {
            let keep = by_leader.contains_key(leader);
            if !keep {
                h.stop.send_replace(true);
            }
            keep
        });
        for (leader, parts) in by_leader {
            let handle = fetchers.entry(leader).or_insert_with(|| {
                let partitions: FollowedSet = Arc::new(Mutex::new(HashMap::new()));
                let (stop, stop_rx) = watch::channel(false);
                let ctx = FetcherContext {
                    local: cluster.link.local,
                    leader,
                    peers: cluster.link.peers.clone(),
                    source_ip: cluster.link.source_ip,
                    partitions: partitions.clone(),
                    producers: self.producers.clone(),
                    max_wait_ms: i32::try_from(cluster.link.replica_lag_time_max_ms / 2)
                        .unwrap_or(i32::MAX)
                        .clamp(1, fetcher::FETCH_MAX_WAIT_MS),
                    reach: cluster.reach.clone(),
                };
                let mut stopping = self.stopping.clone();
                self.runtime.spawn(async move {
                    tokio::select! {
                        _ = fetcher::run(ctx, stop_rx) => {}
                        _ = stopping.wait_for(|s| *s) => {}
                    }
                });
                FetcherHandle { partitions, stop }
            });
            let mut set = handle.partitions.lock();
            let mut next: HashMap<Key, Arc<Followed>> = HashMap::new();
            for (k, p) in parts {
                let epoch = p.state.lock().assignment.leader_epoch;
                let reuse = set
                    .get(&k)
                    .filter(|f| {
                        f.leader_epoch == epoch && Arc::ptr_eq(&f.log, &p.log) && *f.active.lock()
                    })
                    .cloned();
                let f = reuse.unwrap_or_else(|| {
                    Arc::new(Followed {
                        topic: k.0.clone(),
                        partition: k.1,
                        log: p.log.clone(),
                        leader_epoch: epoch,
                        needs_truncation: AtomicBool::new(true),
                        active: Mutex::new(true),
                    })
                });
                next.insert(k, f);
            }
            *set = next;
        }
    }

    /// Cluster mode: the partition, if this broker leads it
    /// (NOT_LEADER_OR_FOLLOWER otherwise). `Ok(None)` outside cluster mode.
    pub(crate) fn leader_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Arc<Partition>>, i16> {
        let Some(cluster) = self.cluster() else {
            return Ok(None);
        };
        match cluster.partition(topic, partition) {
            Some(p) if !p.is_retired() && p.state.lock().role == Role::Leader => Ok(Some(p)),
            _ => Err(code::NOT_LEADER_OR_FOLLOWER),
        }
    }

    /// Cluster mode: the leader of a partition this broker is a replica
    /// of, as last assigned: (leader, leader epoch, its listener if
    /// known). For KIP-951's answers to a client that asked the wrong
    /// broker.
    pub fn current_leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Option<(BrokerId, i32, Option<std::net::SocketAddr>)> {
        let cluster = self.cluster()?;
        let p = cluster.partition(topic, partition)?;
        let st = p.state.lock();
        let leader = st.assignment.leader?;
        Some((
            leader,
            st.assignment.leader_epoch,
            cluster.link.peers.address(leader),
        ))
    }

    /// Cluster mode: whether `leader`, another broker, is taken for gone:
    /// a fetcher's connection to it was refused or reset (its process
    /// died) less than `window` ago and nothing reached it since (see
    /// `fetcher::PeerReach`). Metadata then answers its partitions
    /// LEADER_NOT_AVAILABLE: librdkafka asks again at once and every
    /// `topic.metadata.refresh.fast.interval.ms` while a leader is
    /// unknown, whereas a leader it is told of, dead or not, it asks about
    /// again only at its once-a-second scan.
    pub fn leader_suspected(&self, leader: BrokerId, window: Duration) -> bool {
        self.cluster().is_some_and(|c| {
            leader != c.link.local && c.reach.suspected(leader, Instant::now(), window)
        })
    }

    /// Before an acks=all append: Kafka's check that the ISR is at least
    /// `min.insync.replicas` (NOT_ENOUGH_REPLICAS otherwise). A single
    /// broker is its partitions' only in-sync replica.
    pub fn check_enough_replicas(
        &self,
        topic: &str,
        partition: i32,
        min_insync_replicas: i32,
        local_id: i32,
    ) -> Result<(), Refusal> {
        let isr: Vec<BrokerId> = match self.leader_partition(topic, partition) {
            Ok(None) => vec![local_id],
            Ok(Some(p)) => p.state.lock().assignment.isr.clone(),
            Err(c) => return Err(c.into()),
        };
        if isr.len() as i64 >= i64::from(min_insync_replicas) {
            return Ok(());
        }
        let live: Vec<String> = isr.iter().map(|b| b.to_string()).collect();
        Err(Refusal {
            code: code::NOT_ENOUGH_REPLICAS,
            message: Some(format!(
                "The size of the current ISR : {} is insufficient to satisfy the min.isr \
                 requirement of {min_insync_replicas} for partition {topic}-{partition}, live \
                 replica(s) broker.id are : [{}]",
                isr.len(),
                live.join(", ")
            )),
            record_errors: Vec::new(),
        })
    }

    /// After an append on a leader: the high watermark may move (an ISR of
    /// the leader alone follows its log end).
    pub(crate) fn after_leader_append(&self, partition: &Partition) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let Ok(leo) = partition.log.log_end_offset() else {
            return;
        };
        let moved = {
            let mut st = partition.state.lock();
            st.advance_high_watermark(cluster.link.local, leo)
        };
        if let Some(hw) = moved {
            partition.log.set_high_watermark(Some(hw));
            partition.notify();
        }
        // The followers' parked fetches wait for this append (and
        // consumers' for a high watermark that moved): woken from here,
        // not through the wake thread (see `wake`).
        self.watches.wake_partition(&partition.log);
    }

    /// A follower's Fetch on the leader: `replica` fetches `partition` at
    /// `fetch_offset`, its log end. Records its position, asks the
    /// controller to add it to the ISR once it caught up, and moves the high
    /// watermark. NOT_LEADER_OR_FOLLOWER for a broker that is not a replica.
    pub(crate) fn on_follower_fetch(
        &self,
        partition: &Arc<Partition>,
        replica: BrokerId,
        fetch_offset: i64,
    ) -> Result<(), i16> {
        let Some(cluster) = self.cluster() else {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        };
        let local = cluster.link.local;
        let leo = partition
            .log
            .log_end_offset()
            .map_err(|e| crate::errors::kafka_code(&e))?;
        let mut st = partition.state.lock();
        if st.role != Role::Leader || replica == local || !st.assignment.replicas.contains(&replica)
        {
            return Err(code::NOT_LEADER_OR_FOLLOWER);
        }
        if fetch_offset > leo {
            // Answered OFFSET_OUT_OF_RANGE by the read: not a position.
            return Ok(());
        }
        let now = Instant::now();
        let f = st
            .followers
            .entry(replica)
            .or_insert_with(|| fresh_follower(now));
        isr::record_fetch(f, fetch_offset, leo, now);
        let follower_leo = f.log_end_offset;
        let moved = st.advance_high_watermark(local, leo);
        let alter = if !st.assignment.isr.contains(&replica)
            && st.pending_isr.is_none()
            && isr::may_join(follower_leo, st.high_watermark, st.epoch_start_offset)
        {
            let next = isr::with(&st.assignment.isr, replica);
            Some(prepare_alter(&mut st, next))
        } else {
            None
        };
        drop(st);
        if let Some(req) = alter {
            send_alter(&cluster, &self.runtime, partition, req);
        }
        if let Some(hw) = moved {
            partition.log.set_high_watermark(Some(hw));
            partition.notify();
            // Consumers parked on the high watermark (see `wake`).
            self.watches.wake_partition(&partition.log);
        }
        Ok(())
    }

    /// acks=all: wait until each `(topic, partition, end)` is replicated to
    /// the whole ISR (the high watermark reached `end`), answering per
    /// partition as Kafka's DelayedProduce: NONE, NOT_ENOUGH_REPLICAS_AFTER_APPEND
    /// (replicated, but the ISR shrank below `min.insync.replicas`),
    /// NOT_LEADER_OR_FOLLOWER (leadership moved), or REQUEST_TIMED_OUT.
    pub async fn wait_for_replication(
        &self,
        waits: Vec<(String, i32, i64)>,
        timeout: Duration,
    ) -> Vec<i16> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(waits.len());
        for (topic, partition, end) in waits {
            out.push(self.wait_one(&topic, partition, end, deadline).await);
        }
        out
    }

    async fn wait_one(
        &self,
        topic: &str,
        partition: i32,
        end: i64,
        deadline: tokio::time::Instant,
    ) -> i16 {
        let mut stopping = self.stopping.clone();
        loop {
            let p = match self.leader_partition(topic, partition) {
                Ok(Some(p)) => p,
                Ok(None) => return code::NONE,
                Err(c) => return c,
            };
            let mut changed = p.changed.subscribe();
            {
                let st = p.state.lock();
                if st.role != Role::Leader {
                    return code::NOT_LEADER_OR_FOLLOWER;
                }
                if st.high_watermark >= end {
                    let min_isr = p.log.config().min_insync_replicas;
                    return if (st.assignment.isr.len() as i64) < i64::from(min_isr) {
                        code::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    } else {
                        code::NONE
                    };
                }
            }
            // A partition replaced in the map (a new epoch) notifies the
            // old one: looked up again then.
            tokio::select! {
                r = changed.changed() => { if r.is_err() { continue; } }
                _ = tokio::time::sleep_until(deadline) => return code::REQUEST_TIMED_OUT,
                _ = stopping.wait_for(|s| *s) => return code::NOT_LEADER_OR_FOLLOWER,
            }
        }
    }

    /// The partitions this broker serves in cluster mode, with their state
    /// (tests, diagnostics): (topic, partition, role, leader epoch, ISR,
    /// high watermark).
    pub fn partition_states(&self) -> Vec<(String, i32, Role, i32, Vec<BrokerId>, i64)> {
        let Some(cluster) = self.cluster() else {
            return Vec::new();
        };
        let map = cluster.partitions.read();
        let mut out: Vec<_> = map
            .iter()
            .map(|(k, p)| {
                let st = p.state.lock();
                let hw = p.log.high_watermark().unwrap_or(-1);
                (
                    k.0.clone(),
                    k.1,
                    st.role,
                    st.assignment.leader_epoch,
                    st.assignment.isr.clone(),
                    hw,
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }
}

/// Stop every fetcher applying answers for `key` (it changes role or
/// epoch, or leaves): waits for an answer being applied now.
fn deactivate_followed(cluster: &Cluster, key: &Key) {
    let handles: Vec<Arc<Followed>> = cluster
        .fetchers
        .lock()
        .values()
        .filter_map(|h| h.partitions.lock().get(key).cloned())
        .collect();
    for f in handles {
        f.deactivate();
    }
}

/// How long an AlterPartition may stay unanswered before the leader
/// forgets it and may ask again.
const ALTER_TIMEOUT: Duration = Duration::from_secs(10);

/// An ISR change to ask the controller for.
struct AlterRequest {
    topic: String,
    topic_id: uuid::Uuid,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: Vec<BrokerId>,
}

/// Mark `next` as the ISR asked for (one change in flight per partition)
/// and say what to send. Caller holds the partition's state lock, and
/// sends after letting it go ([`send_alter`]): the control plane's
/// `alter_partition` may take locks of its own, or apply assignments.
fn prepare_alter(st: &mut PartitionState, next: Vec<BrokerId>) -> AlterRequest {
    st.pending_isr = Some(next.clone());
    let a = &st.assignment;
    AlterRequest {
        topic: a.topic.clone(),
        topic_id: a.topic_id,
        partition: a.partition,
        leader_epoch: a.leader_epoch,
        partition_epoch: a.partition_epoch,
        isr: next,
    }
}

/// Ask the controller for `req`; the answer is applied when it comes (if
/// nothing superseded the request meanwhile: a new assignment, a new
/// epoch). Unanswered after `ALTER_TIMEOUT`, it is forgotten.
fn send_alter(
    cluster: &Arc<Cluster>,
    runtime: &tokio::runtime::Handle,
    partition: &Arc<Partition>,
    req: AlterRequest,
) {
    let local = cluster.link.local;
    debug(&format!(
        "broker {local}: {}-{} asks for ISR {:?} (epoch {})",
        req.topic, req.partition, req.isr, req.leader_epoch
    ));
    let fut = cluster.link.isr.alter_partition(
        req.topic_id,
        req.partition,
        req.leader_epoch,
        req.partition_epoch,
        req.isr.clone(),
    );
    let part = partition.clone();
    runtime.spawn(async move {
        let answer = tokio::time::timeout(ALTER_TIMEOUT, fut)
            .await
            .unwrap_or(Err(code::REQUEST_TIMED_OUT));
        let next = req.isr;
        let moved = {
            let mut st = part.state.lock();
            if st.pending_isr.as_ref() != Some(&next)
                || st.assignment.leader_epoch != req.leader_epoch
            {
                return; // superseded by an assignment
            }
            st.pending_isr = None;
            match answer {
                Ok(pe) if pe > st.assignment.partition_epoch => {
                    st.assignment.isr = next;
                    st.assignment.partition_epoch = pe;
                }
                Ok(_) => {}
                Err(c) => debug(&format!(
                    "broker {local}: {}-{}: AlterPartition refused ({c})",
                    st.assignment.topic, st.assignment.partition
                )),
            }
            let leo = part.log.log_end_offset().unwrap_or(-1);
            st.advance_high_watermark(local, leo)
        };
        if let Some(hw) = moved {
            part.log.set_high_watermark(Some(hw));
        }
        part.notify();
    });
}

/// The timer's ISR pass: members of a led partition's ISR that have not
/// caught up within the lag time are asked out.
fn maybe_shrink_isr(cluster: &Arc<Cluster>, runtime: &tokio::runtime::Handle) {
    let local = cluster.link.local;
    let lag = cluster.lag();
    let parts: Vec<Arc<Partition>> = cluster.partitions.read().values().cloned().collect();
    let now = Instant::now();
    for p in parts {
        let Ok(leo) = p.log.log_end_offset() else {
            continue;
        };
        let mut st = p.state.lock();
        if st.role != Role::Leader || st.pending_isr.is_some() {
            continue;
        }
        let out = isr::out_of_sync(
            &st.assignment.isr,
            local,
            leo,
            |b| st.followers.get(&b).copied(),
            now,
            lag,
        );
        if out.is_empty() {
            continue;
        }
        let next = isr::without(&st.assignment.isr, &out);
        let req = prepare_alter(&mut st, next);
        drop(st);
        send_alter(cluster, runtime, &p, req);
    }
}

/// Write each served partition's high watermark to its checkpoint file if
/// it moved since the last one.
fn checkpoint_all(cluster: &Arc<Cluster>) {
    let parts: Vec<Arc<Partition>> = cluster.partitions.read().values().cloned().collect();
    for p in parts {
        let Ok(hw) = p.log.high_watermark() else {
            continue;
        };
        if p.state.lock().checkpointed == hw {
            continue;
        }
        match p.log.checkpoint_high_watermark(hw) {
            Ok(()) => p.state.lock().checkpointed = hw,
            Err(e) => warn(&format!("high watermark checkpoint: {e}")),
        }
    }
}
