//! Numbers for the metadata quorum, printed (never asserted): time to elect
//! a first leader, time to fail over after the leader stops, and the commit
//! latency of sequential proposals (each fsync'd on a majority), on three
//! in-process controllers over temp directories.
//!
//! `cargo run --release -p ottla-meta --example quorum_bench [-- DIR]` (DIR: where the
//! temp directories go; the system temp dir by default)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ottla_meta::records::{ConfigResource, MetadataRecord};
use ottla_meta::testing::Router;
use ottla_meta::types::BasicNode;
use ottla_meta::{Controller, ControllerConfig, NodeId};

struct Quorum {
    router: Router,
    nodes: BTreeMap<NodeId, Controller>,
    configs: BTreeMap<NodeId, ControllerConfig>,
}

impl Quorum {
    async fn start(dir: &std::path::Path, tune: impl Fn(&mut ControllerConfig)) -> Quorum {
        let voters: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|i| {
                (
                    i,
                    BasicNode {
                        addr: format!("controller-{i}"),
                    },
                )
            })
            .collect();
        let router = Router::new();
        let mut nodes = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for id in 1..=3 {
            let mut cfg = ControllerConfig::new(id, dir.join(format!("n{id}")), voters.clone());
            tune(&mut cfg);
            let node = Controller::open(cfg.clone(), router.transport(id))
                .await
                .expect("open");
            router.register(id, node.rpc_server());
            nodes.insert(id, node);
            configs.insert(id, cfg);
        }
        for node in nodes.values() {
            node.initialize().await.expect("initialize");
        }
        Quorum {
            router,
            nodes,
            configs,
        }
    }

    async fn leader(&self) -> NodeId {
        loop {
            if let Some(id) = self
                .nodes
                .values()
                .find(|n| n.is_leader())
                .map(Controller::node_id)
            {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(label: &str, base: &std::path::Path, tune: impl Fn(&mut ControllerConfig) + Copy) {
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let t0 = Instant::now();
    let mut q = Quorum::start(dir.path(), tune).await;
    let mut leader = q.leader().await;
    let elect = t0.elapsed();

    let mut lat = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let rec = MetadataRecord::ConfigChange {
            resource: ConfigResource::Cluster,
            key: format!("k{}", i % 50),
            value: Some(i.to_string()),
        };
        let t = Instant::now();
        // Every node initializes, so a second election may follow the first.
        while let Err(e) = q.nodes[&leader].propose(vec![rec.clone()]).await {
            match e {
                ottla_meta::ProposeError::NotLeader { .. } => leader = q.leader().await,
                e => panic!("propose: {e}"),
            }
        }
        lat.push(t.elapsed());
    }
    lat.sort();

    // Failover: the leader stops; time until another one leads.
    let t1 = Instant::now();
    q.router.unregister(leader);
    if let Some(n) = q.nodes.remove(&leader) {
        n.shutdown().await;
    }
    let new = q.leader().await;
    let failover = t1.elapsed();
    let cfg = &q.configs[&new];
    println!(
        "{label}: election timeout {:?}..{:?}, heartbeat {:?}\n  first election {:.0} ms; \
         failover after the leader stops {:.0} ms\n  commit latency over 1000 sequential \
         proposals: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        cfg.election_timeout_min,
        cfg.election_timeout_max,
        cfg.heartbeat_interval,
        elect.as_secs_f64() * 1e3,
        failover.as_secs_f64() * 1e3,
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
    );
    for n in q.nodes.values() {
        n.shutdown().await;
    }
}

#[tokio::main]
async fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!("directories under {}", base.display());
    run("defaults", &base, |_| {}).await;
    run("fast", &base, |c| {
        c.heartbeat_interval = Duration::from_millis(20);
        c.election_timeout_min = Duration::from_millis(100);
        c.election_timeout_max = Duration::from_millis(200);
    })
    .await;
}
