//! Quorums of three controllers on temp directories, wired by the in-process
//! [`Router`], under tokio's paused clock (timeouts pass instantly when
//! nothing else runs, so elections take no wall time).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use crate::controller::{Controller, ControllerConfig, ProposeError};
use crate::image::{Applied, ApplyError, MetadataImage};
use crate::records::{Endpoint, MetadataRecord, PartitionAssignment, TopicId};
use crate::testing::Router;
use crate::types::{BasicNode, NodeId};

const BOUND: Duration = Duration::from_secs(30);

struct TestCluster {
    dir: tempfile::TempDir,
    router: Router,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Controller>,
    tune: fn(&mut ControllerConfig),
}

fn fast(_: &mut ControllerConfig) {}

impl TestCluster {
    async fn start_all(n: u64, tune: fn(&mut ControllerConfig)) -> Self {
        let mut c = TestCluster {
            dir: tempfile::tempdir().unwrap(),
            router: Router::new(),
            ids: (1..=n).collect(),
            nodes: BTreeMap::new(),
            tune,
        };
        for id in c.ids.clone() {
            c.start(id).await;
        }
        for node in c.nodes.values() {
            node.initialize().await.unwrap();
        }
        c
    }

    fn config(&self, id: NodeId) -> ControllerConfig {
        let voters = self
            .ids
            .iter()
            .map(|i| {
                (
                    *i,
                    BasicNode {
                        addr: format!("controller-{i}"),
                    },
                )
            })
            .collect();
        let mut cfg = ControllerConfig::new(id, self.dir.path().join(format!("n{id}")), voters);
        cfg.heartbeat_interval = Duration::from_millis(50);
        cfg.election_timeout_min = Duration::from_millis(300);
        cfg.election_timeout_max = Duration::from_millis(600);
        cfg.propose_timeout = Duration::from_secs(3);
        (self.tune)(&mut cfg);
        cfg
    }

    async fn start(&mut self, id: NodeId) {
        let node = Controller::open(self.config(id), self.router.transport(id))
            .await
            .unwrap();
        self.router.register(id, node.rpc_server());
        self.nodes.insert(id, node);
    }

    async fn stop(&mut self, id: NodeId) {
        self.router.unregister(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// A node of `among` that is leader, waiting up to [`BOUND`].
    async fn wait_leader(&self, among: &[NodeId]) -> NodeId {
        let t0 = Instant::now();
        loop {
            for id in among {
                if self.nodes.get(id).is_some_and(Controller::is_leader) {
                    return *id;
                }
            }
            assert!(t0.elapsed() < BOUND, "no leader among {among:?}");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes through whichever node leads, following leader hints and
    /// retrying while there is none.
    async fn propose(&self, records: Vec<MetadataRecord>) -> Result<Applied, ProposeError> {
        let t0 = Instant::now();
        loop {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let leader = self.wait_leader(&ids).await;
            match self.nodes[&leader].propose(records.clone()).await {
                Err(ProposeError::NotLeader { .. }) if t0.elapsed() < BOUND => {
                    sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until every running node's image is the same, at `offset` or later.
    async fn converged(&self, offset: u64) -> Arc<MetadataImage> {
        let t0 = Instant::now();
        loop {
            let images: Vec<Arc<MetadataImage>> =
                self.nodes.values().map(Controller::image).collect();
            if images[0].offset >= offset && images.iter().all(|i| **i == *images[0]) {
                return images[0].clone();
            }
            assert!(
                t0.elapsed() < BOUND,
                "images did not converge at {offset}: {:?}",
                images.iter().map(|i| i.offset).collect::<Vec<_>>()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Registers and unfences brokers 1..=3 (so that topics can be placed).
    async fn brokers(&self) {
        for b in 1..=3 {
            self.propose(vec![MetadataRecord::RegisterBroker {
                broker_id: b,
                incarnation_id: [b as u8; 16],
                listeners: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + b as u16,
                    security_protocol: "PLAINTEXT".into(),
                }],
                rack: None,
            }])
            .await
            .unwrap();
        }
        let leader = self
            .wait_leader(&self.nodes.keys().copied().collect::<Vec<_>>())
            .await;
        for b in 1..=3 {
            self.nodes[&leader].unfence_broker(b).await.unwrap();
        }
    }

    fn any_image(&self) -> Arc<MetadataImage> {
        self.nodes
            .values()
            .map(Controller::image)
            .max_by_key(|i| i.offset)
            .unwrap()
    }

    async fn close(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

fn topic_id(i: u64) -> TopicId {
    let mut id = [0xab; 16];
    id[..8].copy_from_slice(&(i + 1).to_be_bytes());
    TopicId(id)
}

fn create_topic(i: u64) -> MetadataRecord {
    MetadataRecord::CreateTopic {
        name: format!("t{i}"),
        topic_id: topic_id(i),
        partitions: vec![PartitionAssignment {
            partition: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: Some(1 + (i % 3) as i32),
        }],
        configs: BTreeMap::new(),
    }
}

fn topic_names(img: &MetadataImage) -> BTreeSet<String> {
    img.topic_ids.keys().cloned().collect()
}

#[tokio::test(start_paused = true)]
async fn three_nodes_elect_commit_and_agree() {
    let c = TestCluster::start_all(3, fast).await;
    let leader = c.wait_leader(&c.ids).await;
    let mut watch = c.nodes[&(leader % 3 + 1)].subscribe();
    c.brokers().await;
    let mut last = 0;
    for i in 0..20 {
        last = c.propose(vec![create_topic(i)]).await.unwrap().offset;
    }
    // A follower refuses to propose, and says who leads.
    let follower = c.ids.iter().copied().find(|i| *i != leader).unwrap();
    assert_eq!(
        c.nodes[&follower].propose(vec![create_topic(99)]).await,
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
    // A record that does not fit is refused, the same everywhere.
    assert_eq!(
        c.propose(vec![create_topic(3)]).await,
        Err(ProposeError::Rejected(ApplyError::TopicExists("t3".into())))
    );
    let img = c.converged(last).await;
    assert_eq!(img.topics.len(), 20);
    assert_eq!(img.brokers.len(), 3);
    assert!(img.brokers.values().all(|b| !b.fenced));
    // The watcher saw the changes.
    timeout(BOUND, watch.wait_for(|i| i.offset >= last))
        .await
        .unwrap()
        .unwrap();
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn leader_loss_elects_another_and_keeps_commits() {
    let mut c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    for i in 0..10 {
        c.propose(vec![create_topic(i)]).await.unwrap();
    }
    let old = c.wait_leader(&c.ids).await;
    let t0 = Instant::now();
    c.stop(old).await;
    let rest: Vec<NodeId> = c.ids.iter().copied().filter(|i| *i != old).collect();
    let new = c.wait_leader(&rest).await;
    let elected_in = t0.elapsed();
    assert_ne!(new, old);
    assert!(elected_in < BOUND);
    assert_eq!(
        topic_names(&c.nodes[&new].image()).len(),
        10,
        "committed records lost"
    );
    let last = c.propose(vec![create_topic(10)]).await.unwrap().offset;
    // The old leader comes back as a follower and catches up.
    c.start(old).await;
    let img = c.converged(last).await;
    assert_eq!(img.topics.len(), 11);
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn restarted_node_recovers_its_log_and_vote_and_catches_up() {
    let mut c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    for i in 0..5 {
        c.propose(vec![create_topic(i)]).await.unwrap();
    }
    let leader = c.wait_leader(&c.ids).await;
    let f = c.ids.iter().copied().find(|i| *i != leader).unwrap();
    c.converged(c.any_image().offset).await;
    let vote = c.nodes[&f].log_store().vote().unwrap();
    let (_, last_index) = c.nodes[&f].log_store().indexes().unwrap();
    c.stop(f).await;
    let mut last = 0;
    for i in 5..15 {
        last = c.propose(vec![create_topic(i)]).await.unwrap().offset;
    }
    c.start(f).await;
    // Recovered from its directory before hearing from anyone.
    let store = c.nodes[&f].log_store();
    assert!(store.vote().unwrap() >= vote);
    assert!(store.indexes().unwrap().1 >= last_index);
    let img = c.converged(last).await;
    assert_eq!(img.topics.len(), 15);
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn minority_leader_cannot_commit_and_majority_moves_on() {
    let mut c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    c.propose(vec![create_topic(0)]).await.unwrap();
    let old = c.wait_leader(&c.ids).await;
    c.router.isolate(old, c.ids.clone());
    // The cut-off leader cannot commit: a typed timeout, not a success.
    match c.nodes[&old].propose(vec![create_topic(1)]).await {
        Err(ProposeError::Timeout(_)) | Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("an isolated leader answered {other:?}"),
    }
    let rest: Vec<NodeId> = c.ids.iter().copied().filter(|i| *i != old).collect();
    let new = c.wait_leader(&rest).await;
    assert_ne!(new, old);
    let last = c.nodes[&new]
        .propose(vec![create_topic(2)])
        .await
        .unwrap()
        .offset;
    c.router.heal_all();
    let img = c.converged(last).await;
    // The minority's proposal never committed; it is gone everywhere.
    assert_eq!(
        topic_names(&img),
        ["t0", "t2"].iter().map(|s| s.to_string()).collect()
    );
    assert!(!c.nodes[&old].is_leader());
    // Its overwritten suffix is gone from its disk too: it reopens and agrees.
    c.stop(old).await;
    c.start(old).await;
    let last = c.propose(vec![create_topic(3)]).await.unwrap().offset;
    c.converged(last).await;
    c.close().await;
}

fn snapshot_often(cfg: &mut ControllerConfig) {
    cfg.snapshot_every = 10;
    cfg.keep_behind_snapshot = 0;
    cfg.segment_bytes = 512;
}

#[tokio::test(start_paused = true)]
async fn lagging_node_receives_a_snapshot_after_the_log_was_purged() {
    let mut c = TestCluster::start_all(3, snapshot_often).await;
    c.brokers().await;
    let leader = c.wait_leader(&c.ids).await;
    let f = c.ids.iter().copied().find(|i| *i != leader).unwrap();
    c.stop(f).await;
    let mut last = 0;
    for i in 0..60 {
        last = c.propose(vec![create_topic(i)]).await.unwrap().offset;
    }
    // The leader snapshotted and purged its log past what `f` has.
    let t0 = Instant::now();
    loop {
        let first = c.nodes[&leader]
            .log_store()
            .indexes()
            .map(|r| r.0)
            .unwrap_or(u64::MAX);
        if first > 30 {
            break;
        }
        assert!(
            t0.elapsed() < BOUND,
            "the leader never purged its log (first index {first})"
        );
        sleep(Duration::from_millis(20)).await;
    }
    c.start(f).await;
    let img = c.converged(last).await;
    assert_eq!(img.topics.len(), 60);
    let snap = c.nodes[&f].raft().metrics().borrow().snapshot;
    assert!(
        snap.is_some_and(|s| s.index > 30),
        "no snapshot installed: {snap:?}"
    );
    // And it survives a restart from the installed snapshot.
    c.stop(f).await;
    c.start(f).await;
    assert!(c.nodes[&f].image().topics.len() >= 40);
    c.converged(last).await;
    c.close().await;
}

/// A few hundred operations with random link cuts, heals, lossy and slow
/// links, and restarts (of the leader too); every
/// acknowledged proposal must be in the final image, exactly the acknowledged
/// ones, and all nodes must agree.
async fn randomized(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut c = TestCluster::start_all(3, snapshot_often).await;
    c.brokers().await;
    let mut acked = BTreeSet::new();
    let mut timeouts = 0;
    let mut faults = 0;
    let mut topic = 0u64;
    for _ in 0..300 {
        match next(20) {
            0..=12 => {
                // Propose through some running node; retry an unknown
                // outcome with the same record until it is definite.
                let rec = create_topic(topic);
                let name = format!("t{topic}");
                topic += 1;
                let t0 = Instant::now();
                loop {
                    let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
                    let id = ids[next(ids.len() as u64) as usize];
                    match c.nodes[&id].propose(vec![rec.clone()]).await {
                        Ok(_) | Err(ProposeError::Rejected(ApplyError::TopicExists(_))) => {
                            acked.insert(name);
                            break;
                        }
                        Err(ProposeError::Timeout(_)) => timeouts += 1,
                        Err(ProposeError::NotLeader { .. }) => {
                            sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("seed {seed}: {e}"),
                    }
                    if t0.elapsed() > BOUND {
                        // A partition that lasts: heal, so the test ends.
                        c.router.heal_all();
                        c.router.set_drops(0, 0);
                    }
                }
            }
            13..=14 => {
                let a = c.ids[next(3) as usize];
                let b = c.ids[next(3) as usize];
                c.router.cut(a, b);
                faults += 1;
            }
            15 => c.router.heal_all(),
            16 => {
                // Lossy, slow links for a while (or back to clean ones).
                if next(2) == 0 {
                    c.router.set_drops(2 + next(10), seed);
                    c.router.set_delay(Duration::from_millis(next(30)));
                    faults += 1;
                } else {
                    c.router.set_drops(0, 0);
                    c.router.set_delay(Duration::ZERO);
                }
            }
            17 => {
                let id = c.ids[next(3) as usize];
                c.stop(id).await;
                c.start(id).await;
                faults += 1;
            }
            18 => {
                let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
                if let Some(l) = ids.iter().copied().find(|i| c.nodes[i].is_leader()) {
                    c.stop(l).await;
                    sleep(Duration::from_millis(next(1000))).await;
                    c.start(l).await;
                    faults += 1;
                }
            }
            _ => sleep(Duration::from_millis(next(500))).await,
        }
    }
    c.router.set_drops(0, 0);
    c.router.set_delay(Duration::ZERO);
    c.router.heal_all();
    let last = c.propose(vec![create_topic(topic)]).await.unwrap().offset;
    acked.insert(format!("t{topic}"));
    let img = c.converged(last).await;
    assert_eq!(topic_names(&img), acked, "seed {seed}");
    for (name, id) in &img.topic_ids {
        let i: u64 = name[1..].parse().unwrap();
        assert_eq!(*id, topic_id(i), "seed {seed}: {name}");
    }
    eprintln!(
        "seed {seed}: {} acknowledged, {faults} faults, {timeouts} timeouts",
        acked.len()
    );
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn randomized_faults_seed_1() {
    randomized(1).await;
}

#[tokio::test(start_paused = true)]
async fn randomized_faults_seed_2() {
    randomized(2).await;
}

#[tokio::test(start_paused = true)]
async fn randomized_faults_seed_3() {
    randomized(3).await;
}

#[tokio::test(start_paused = true)]
async fn fencing_a_broker_moves_its_leaderships_on_every_node() {
    let c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    for i in 0..6 {
        c.propose(vec![create_topic(i)]).await.unwrap();
    }
    let leader = c.wait_leader(&c.ids).await;
    let before = c.nodes[&leader].image();
    let applied = c.nodes[&leader].fence_broker(1).await.unwrap();
    let img = c.converged(applied.offset).await;
    assert!(img.brokers[&1].fenced);
    for (id, topic) in &img.topics {
        let p = &topic.partitions[&0];
        let old = before.partition(*id, 0).unwrap();
        assert_ne!(p.leader, Some(1));
        assert!(
            p.leader.is_some(),
            "{}: no leader although two replicas are in sync",
            topic.name
        );
        assert!(!p.isr.contains(&1));
        let moved = old.leader == Some(1);
        assert_eq!(p.leader_epoch, old.leader_epoch + i32::from(moved));
        assert_eq!(p.partition_epoch, old.partition_epoch + 1);
    }
    // Unfencing gives it nothing back (it is not in sync); a broker that does
    // not exist is a typed refusal.
    c.nodes[&leader].unfence_broker(1).await.unwrap();
    assert!(matches!(
        c.nodes[&leader].fence_broker(42).await,
        Err(ProposeError::Decide(
            crate::decide::DecideError::UnknownBroker(42)
        ))
    ));
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn majority_loss_refuses_writes_until_it_returns() {
    let mut c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    let leader = c.wait_leader(&c.ids).await;
    let followers: Vec<NodeId> = c.ids.iter().copied().filter(|i| *i != leader).collect();
    for f in &followers {
        c.stop(*f).await;
    }
    match c.nodes[&leader].propose(vec![create_topic(0)]).await {
        Err(ProposeError::Timeout(_)) | Err(ProposeError::NotLeader { .. }) => {}
        other => panic!("a controller without a majority answered {other:?}"),
    }
    for f in &followers {
        c.start(*f).await;
    }
    // The unknown outcome resolves either way; a retry is definite.
    let r = c.propose(vec![create_topic(0)]).await;
    assert!(
        matches!(
            r,
            Ok(_) | Err(ProposeError::Rejected(ApplyError::TopicExists(_)))
        ),
        "{r:?}"
    );
    let img = c.converged(c.any_image().offset).await;
    assert_eq!(topic_names(&img).len(), 1);
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn whole_quorum_restarts_from_its_directories() {
    let mut c = TestCluster::start_all(3, snapshot_often).await;
    c.brokers().await;
    for i in 0..25 {
        c.propose(vec![create_topic(i)]).await.unwrap();
    }
    let before = c.converged(c.any_image().offset).await;
    for id in c.ids.clone() {
        c.stop(id).await;
    }
    for id in c.ids.clone() {
        c.start(id).await;
        // Initializing again is a no-op on a node that has a log.
        c.nodes[&id].initialize().await.unwrap();
    }
    // Snapshot plus log replay, once a new leader commits in its term.
    let last = c.propose(vec![create_topic(25)]).await.unwrap().offset;
    let img = c.converged(last).await;
    assert_eq!(img.topics.len(), 26);
    assert_eq!(img.brokers, before.brokers);
    // (openraft lets a leader whose vote a quorum granted resume its term.)
    assert!(img.epoch >= before.epoch);
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_broker_that_stops_heartbeating_is_fenced() {
    let c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    for i in 0..3 {
        c.propose(vec![create_topic(i)]).await.unwrap();
    }
    let leader = c.wait_leader(&c.ids).await;
    let ctl = &c.nodes[&leader];
    let session = Duration::from_millis(900);
    // Brokers 2 and 3 heartbeat every 300 ms; broker 1 has stopped.
    let mut fenced = Vec::new();
    for _ in 0..10 {
        ctl.broker_heartbeat(2);
        ctl.broker_heartbeat(3);
        fenced.extend(ctl.fence_expired(session).await.unwrap());
        sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(fenced, vec![1]);
    let img = c.converged(ctl.image().offset).await;
    assert!(img.brokers[&1].fenced && !img.brokers[&2].fenced && !img.brokers[&3].fenced);
    assert!(img
        .topics
        .values()
        .all(|t| t.partitions[&0].leader.is_some_and(|l| l != 1)));
    // A follower does not fence anyone.
    let f = c.ids.iter().copied().find(|i| *i != leader).unwrap();
    assert!(matches!(
        c.nodes[&f].fence_expired(session).await,
        Err(ProposeError::NotLeader { .. })
    ));
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn brokers_register_and_topics_are_placed_by_the_controller() {
    let c = TestCluster::start_all(3, fast).await;
    let leader = c.wait_leader(&c.ids).await;
    let ctl = &c.nodes[&leader];
    let mut epochs = Vec::new();
    for b in 1..=3 {
        let epoch = ctl
            .register_broker(b, [b as u8; 16], vec![], None)
            .await
            .unwrap();
        // Registering the same process again keeps its epoch.
        assert_eq!(
            ctl.register_broker(b, [b as u8; 16], vec![], None)
                .await
                .unwrap(),
            epoch
        );
        epochs.push(epoch);
    }
    // Fenced brokers hold no replica yet.
    assert!(matches!(
        ctl.create_topic("x", topic_id(0), 3, 2, BTreeMap::new())
            .await,
        Err(ProposeError::Decide(
            crate::decide::DecideError::NotEnoughBrokers { .. }
        ))
    ));
    for b in 1..=3 {
        ctl.unfence_broker(b).await.unwrap();
    }
    let applied = ctl
        .create_topic("x", topic_id(0), 3, 2, BTreeMap::new())
        .await
        .unwrap();
    let img = c.converged(applied.offset).await;
    let t = img.topic_by_name("x").unwrap();
    assert_eq!(t.partitions.len(), 3);
    assert!(t
        .partitions
        .values()
        .all(|p| p.replicas.len() == 2 && p.isr == p.replicas));
    let led_by_2: Vec<i32> = t
        .partitions
        .iter()
        .filter(|(_, p)| p.leader == Some(2))
        .map(|(n, _)| *n)
        .collect();
    assert!(!led_by_2.is_empty());
    // A restarted broker process (new incarnation) gets a new epoch, fenced;
    // what the old process led moves to another in-sync replica at once
    // (it was never fenced: it came back within its session).
    let epoch = ctl
        .register_broker(2, [0x22; 16], vec![], None)
        .await
        .unwrap();
    assert!(epoch > epochs[1]);
    let img = ctl.image();
    assert!(img.brokers[&2].fenced);
    let t = img.topic_by_name("x").unwrap();
    for n in led_by_2 {
        let p = &t.partitions[&n];
        assert!(
            p.leader.is_some_and(|l| l != 2 && p.isr.contains(&l)),
            "partition {n}: leader {:?}, isr {:?}",
            p.leader,
            p.isr
        );
        assert!(!p.isr.contains(&2));
    }
    c.close().await;
}

/// For `run`, every 20 ms: the brokers in `alive` heartbeat to whichever
/// node leads, and it fences the expired ones (`session`), as the broker's
/// fencing timer does. Every fence, with its instant.
async fn drive_liveness(
    c: &TestCluster,
    alive: &[i32],
    session: Duration,
    run: Duration,
) -> Vec<(i32, Instant)> {
    let t0 = Instant::now();
    let mut fenced = Vec::new();
    while t0.elapsed() < run {
        for ctl in c.nodes.values().filter(|n| n.is_leader()) {
            for b in alive {
                ctl.broker_heartbeat(*b);
            }
            if let Ok(bs) = ctl.fence_expired(session).await {
                fenced.extend(bs.into_iter().map(|b| (b, Instant::now())));
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    fenced
}

#[tokio::test(start_paused = true)]
async fn a_new_controller_counts_the_dead_one_from_its_last_raft_heartbeat() {
    let mut c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    let session = Duration::from_millis(1000);
    assert!(
        drive_liveness(&c, &[1, 2, 3], session, Duration::from_secs(2))
            .await
            .is_empty()
    );
    let old = c.wait_leader(&c.ids).await;
    let old_broker = i32::try_from(old).unwrap();
    let rest: Vec<NodeId> = c.ids.iter().copied().filter(|i| *i != old).collect();
    // The active controller dies with its broker.
    let t0 = Instant::now();
    c.stop(old).await;
    let new = c.wait_leader(&rest).await;
    let elected = t0.elapsed();
    let heard = c.nodes[&new].last_heard().unwrap();
    assert_eq!(heard.leader, old);
    let alive: Vec<i32> = rest.iter().map(|i| i32::try_from(*i).unwrap()).collect();
    let fenced = drive_liveness(&c, &alive, session, Duration::from_secs(3)).await;
    assert_eq!(
        fenced.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![old_broker]
    );
    // Fenced a session after the quorum last heard it (or at once, if the
    // election took longer), not a whole session after the election.
    let at = fenced[0].1;
    let due = (heard.at + session).max(t0 + elected);
    assert!(
        at <= due + Duration::from_millis(100),
        "fenced {:?} after the kill, elected after {elected:?}",
        at - t0
    );
    assert!(
        at - t0 < elected + session,
        "a whole session after the election"
    );
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn live_brokers_are_never_fenced_in_steady_state() {
    // A property over seeds and lossy links: while every broker heartbeats
    // within its session, the active controller (the same node throughout,
    // whose broker is the one the new rule is about) fences nobody.
    for seed in 1..=3 {
        let c = TestCluster::start_all(3, fast).await;
        c.brokers().await;
        let leader = c.wait_leader(&c.ids).await;
        let term = c.nodes[&leader].raft().metrics().borrow().current_term;
        c.router.set_drops(10, seed);
        let fenced = drive_liveness(
            &c,
            &[1, 2, 3],
            Duration::from_millis(200),
            Duration::from_secs(10),
        )
        .await;
        c.router.set_drops(0, 0);
        assert!(fenced.is_empty(), "seed {seed}: fenced {fenced:?}");
        let after = c.nodes[&leader].raft().metrics().borrow().current_term;
        assert_eq!(after, term, "seed {seed}: the leader changed");
        c.close().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_leader_is_replaced_once_its_lease_is_over() {
    let mut c = TestCluster::start_all(3, fast).await;
    c.brokers().await;
    let old = c.wait_leader(&c.ids).await;
    let rest: Vec<NodeId> = c.ids.iter().copied().filter(|i| *i != old).collect();
    // While the leader is alive, a refusal (a restarting listener, say)
    // changes nothing: it is heard from again before the lease runs out.
    for id in &rest {
        assert!(c.nodes[id].leader_unreachable(old));
    }
    sleep(Duration::from_secs(2)).await;
    assert_eq!(c.wait_leader(&c.ids).await, old);
    let term = c.nodes[&old].raft().metrics().borrow().current_term;
    assert!(rest.iter().all(|id| c.nodes[id].leader() == Some(old)));
    assert_eq!(
        c.nodes[&rest[0]].raft().metrics().borrow().current_term,
        term
    );
    // It dies; both followers are told at once.
    let t0 = Instant::now();
    c.stop(old).await;
    for id in &rest {
        assert!(c.nodes[id].leader_unreachable(old));
        // One election scheduled at a time.
        assert!(!c.nodes[id].leader_unreachable(old));
    }
    let new = c.wait_leader(&rest).await;
    let elected = t0.elapsed();
    // The lease (600 ms, the maximum election timeout) and a heartbeat
    // interval (50 ms); openraft's own timer would wait the lease and an
    // election timeout (300-600 ms) more.
    assert!(
        elected < Duration::from_millis(800),
        "elected after {elected:?}"
    );
    // The first in turn (the smaller id) won, without a split vote.
    assert_eq!(new, rest[0]);
    c.close().await;
}
