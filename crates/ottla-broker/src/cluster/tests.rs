//! Clusters of in-process brokers on free loopback ports, each with its
//! own directory and runtime: election, registration, the Metadata every
//! node answers, topics through the controller, fencing after a stop, and
//! a broker-only node following the metadata as a learner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest,
    MetadataResponse, TopicName,
};

use super::{parse_voters, ClusterConfig};
use crate::api::s;
use crate::errors::code;
use crate::{Broker, BrokerConfig, Shared};
use ottla_storage::store::Store;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Cluster {
    dirs: BTreeMap<i32, tempfile::TempDir>,
    brokers: BTreeMap<i32, Broker>,
    voters: String,
    controller_ports: BTreeMap<i32, u16>,
}

fn config(id: i32, controller_port: u16, voters: &str) -> BrokerConfig {
    let mut cc = ClusterConfig::new(
        id,
        &format!("127.0.0.1:{controller_port}"),
        parse_voters(voters).expect("voters"),
    );
    cc.default_replication_factor = 3;
    BrokerConfig {
        cluster: Some(cc),
        ..Default::default()
    }
}

impl Cluster {
    /// `voters` voters (ids 1..), plus `learners` broker-only nodes after them.
    fn start(voters: i32, learners: i32) -> Cluster {
        let controller_ports: BTreeMap<i32, u16> = (1..=voters + learners)
            .map(|id| (id, free_port()))
            .collect();
        let voter_list = (1..=voters)
            .map(|id| format!("{id}@127.0.0.1:{}", controller_ports[&id]))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dirs: BTreeMap::new(),
            brokers: BTreeMap::new(),
            voters: voter_list,
            controller_ports,
        };
        for id in 1..=voters + learners {
            c.dirs.insert(id, tempfile::tempdir().expect("tempdir"));
            c.restart(id);
        }
        c
    }

    fn restart(&mut self, id: i32) {
        // The controller port was free when it was picked, but while a node
        // is down an outgoing connection of a test running beside this one
        // may hold it as its local port for a moment: try again then.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let store = Store::open(self.dirs[&id].path()).expect("store");
            match Broker::start(store, config(id, self.controller_ports[&id], &self.voters)) {
                Ok(broker) => {
                    self.brokers.insert(id, broker);
                    return;
                }
                Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("node {id} does not start: {e}"),
            }
        }
    }

    fn shared(&self, id: i32) -> Arc<Shared> {
        self.brokers[&id].shared.clone().expect("running")
    }

    /// Runs a request handler on broker `id`'s runtime.
    fn on<T: Send + 'static>(
        &self,
        id: i32,
        f: impl FnOnce(Arc<Shared>) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
            + Send
            + 'static,
    ) -> T {
        let broker = &self.brokers[&id];
        let rt = broker.runtime.as_ref().expect("runtime");
        rt.block_on(rt.spawn(f(self.shared(id)))).expect("handler")
    }

    fn metadata(&self, id: i32, topics: Option<&[&str]>) -> MetadataResponse {
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|t| {
            t.iter()
                .map(|n| {
                    let mut m = MetadataRequestTopic::default();
                    m.name = Some(TopicName(s(n)));
                    m
                })
                .collect()
        });
        req.allow_auto_topic_creation = true;
        self.on(id, move |shared| {
            Box::pin(async move {
                let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
                crate::api::metadata::handle(&shared, &mut session, req, 12).await
            })
        })
    }

    fn unfenced(&self, id: i32) -> Vec<i32> {
        let node = self.brokers[&id].cluster().expect("cluster node");
        let image = node.image();
        image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.broker_id)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for b in self.brokers.values_mut() {
            b.close();
        }
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_topic(
    c: &Cluster,
    via: i32,
    name: &str,
    partitions: i32,
    rf: i16,
) -> (i16, Option<String>) {
    let mut req = CreateTopicsRequest::default();
    let mut t = CreatableTopic::default();
    t.name = TopicName(s(name));
    t.num_partitions = partitions;
    t.replication_factor = rf;
    req.topics.push(t);
    let r = c.on(via, move |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            crate::api::topics::create(&shared, &mut session, req, 7).await
        })
    });
    let t = &r.topics[0];
    (
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// (leader, leader epoch, replicas, isr) of each partition of `topic` as
/// broker `id`'s Metadata answers.
fn partitions(c: &Cluster, id: i32, topic: &str) -> Vec<(i32, i32, Vec<i32>, Vec<i32>)> {
    let r = c.metadata(id, Some(&[topic]));
    r.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.leader_id.0,
                p.leader_epoch,
                p.replica_nodes.iter().map(|b| b.0).collect(),
                p.isr_nodes.iter().map(|b| b.0).collect(),
            )
        })
        .collect()
}

#[test]
fn three_nodes_elect_a_controller_register_and_list_every_broker() {
    let c = Cluster::start(3, 0);
    for id in 1..=3 {
        wait_until("every node sees three unfenced brokers", || {
            c.unfenced(id) == vec![1, 2, 3]
        });
    }
    let leaders: Vec<Option<i32>> = (1..=3)
        .map(|id| c.brokers[&id].cluster().expect("node").controller_id())
        .collect();
    assert!(leaders[0].is_some());
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    for id in 1..=3 {
        let r = c.metadata(id, None);
        let mut listed: Vec<(i32, i32)> = r.brokers.iter().map(|b| (b.node_id.0, b.port)).collect();
        listed.sort_unstable();
        let expected: Vec<(i32, i32)> = (1..=3)
            .map(|b| (b, i32::from(c.brokers[&b].local_addr().port())))
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(Some(r.controller_id.0), leaders[0]);
    }
    // FindCoordinator for a group creates `__consumer_offsets` (RF 3,
    // compacted) and names its partition's leader, the same from every
    // node, and that broker loads the groups; transactions are refused
    // with a message (markers to other brokers' partitions are not written
    // yet).
    let find = |id: i32, key_type: i8| {
        c.on(id, move |shared| {
            Box::pin(async move {
                let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
                let mut req = kafka_protocol::messages::FindCoordinatorRequest::default();
                req.key_type = key_type;
                req.coordinator_keys = vec![s("k")];
                crate::api::groups::find_coordinator(&shared, &mut session, req, 4).await
            })
        })
    };
    let first = find(2, 0);
    let found = &first.coordinators[0];
    assert_eq!(found.error_code, code::NONE);
    let leader = found.node_id.0;
    let parts = partitions(&c, 2, "__consumer_offsets");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].0, leader);
    assert_eq!(parts[0].2.len(), 3, "replicated on every broker");
    for id in 1..=3 {
        // Every node gives the same answer once its image has the topic's
        // leader (before, COORDINATOR_NOT_AVAILABLE, which clients retry).
        wait_until("every node names the coordinator", || {
            let r = find(id, 0);
            (r.coordinators[0].error_code, r.coordinators[0].node_id.0) == (code::NONE, leader)
        });
        let expected = if id == leader {
            code::NONE
        } else {
            code::NOT_COORDINATOR
        };
        wait_until("the coordinator loaded its groups", || {
            crate::coordinator::placement::group_check(&c.shared(id)) == expected
        });
    }
    // A transactional id: the leader of `__transaction_state`, created on
    // this first FindCoordinator (coordinator::txn_placement).
    let r = find(3, 1);
    assert_eq!(r.coordinators[0].error_code, code::NONE);
    assert!((1..=3).contains(&r.coordinators[0].node_id.0));
    // The offsets topic is internal: not deleted through the controller.
    let mut req = DeleteTopicsRequest::default();
    req.topic_names.push(TopicName(s("__consumer_offsets")));
    let r = c.on(3, move |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            crate::api::topics::delete(&shared, &mut session, req, 4).await
        })
    });
    assert_eq!(r.responses[0].error_code, code::INVALID_TOPIC_EXCEPTION);
    assert_eq!(partitions(&c, 1, "__consumer_offsets").len(), 1);
}

#[test]
fn topics_are_created_grown_and_deleted_through_the_controller() {
    let c = Cluster::start(3, 0);
    for id in 1..=3 {
        wait_until("three unfenced brokers", || c.unfenced(id).len() == 3);
    }
    assert_eq!(create_topic(&c, 2, "orders", 3, 3).0, code::NONE);
    assert_eq!(
        create_topic(&c, 3, "orders", 3, 3).0,
        code::TOPIC_ALREADY_EXISTS
    );
    let (err, message) = create_topic(&c, 1, "wide", 1, 4);
    assert_eq!(err, code::INVALID_REPLICATION_FACTOR, "{message:?}");
    for id in 1..=3 {
        wait_until("the topic is in every image", || {
            partitions(&c, id, "orders").len() == 3
        });
        let parts = partitions(&c, id, "orders");
        let leaders: Vec<i32> = parts.iter().map(|p| p.0).collect();
        assert_eq!(leaders, vec![1, 2, 3], "leaders spread");
        for (leader, epoch, replicas, isr) in &parts {
            assert_eq!(*epoch, 0);
            assert_eq!(replicas.len(), 3);
            assert_eq!(isr.len(), 3);
            assert_eq!(replicas[0], *leader);
        }
        let node = c.brokers[&id].cluster().expect("node");
        wait_until("the replica manager was given the partitions", || {
            node.assigned()
                .iter()
                .filter(|a| a.topic == "orders")
                .count()
                == 3
        });
    }
    // DescribeTopicPartitions answers from the image too.
    let mut req = kafka_protocol::messages::DescribeTopicPartitionsRequest::default();
    let mut t =
        kafka_protocol::messages::describe_topic_partitions_request::TopicRequest::default();
    t.name = TopicName(s("orders"));
    req.topics.push(t);
    req.response_partition_limit = 100;
    let r = c.on(2, move |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            crate::api::metadata::describe_topic_partitions(&shared, &mut session, req, 0).await
        })
    });
    let described: Vec<(i32, usize)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.leader_id.0, p.replica_nodes.len()))
        .collect();
    assert_eq!(described, vec![(1, 3), (2, 3), (3, 3)]);
    // Auto-created by a Metadata request, with default.replication.factor.
    let r = c.metadata(3, Some(&["auto"]));
    assert_eq!(r.topics[0].error_code, code::NONE);
    assert_eq!(r.topics[0].partitions[0].replica_nodes.len(), 3);
    // CreatePartitions and DeleteTopics.
    let mut req = CreatePartitionsRequest::default();
    let mut t =
        kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default();
    t.name = TopicName(s("orders"));
    t.count = 5;
    req.topics.push(t);
    let r = c.on(1, move |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            crate::api::topics::create_partitions(&shared, &mut session, req, 1).await
        })
    });
    assert_eq!(
        r.results[0].error_code,
        code::NONE,
        "{:?}",
        r.results[0].error_message
    );
    assert_eq!(partitions(&c, 1, "orders").len(), 5);
    let mut req = DeleteTopicsRequest::default();
    req.topic_names.push(TopicName(s("orders")));
    let r = c.on(3, move |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            crate::api::topics::delete(&shared, &mut session, req, 4).await
        })
    });
    assert_eq!(r.responses[0].error_code, code::NONE);
    for id in 1..=3 {
        wait_until("the topic left every image", || {
            c.brokers[&id]
                .cluster()
                .expect("node")
                .image()
                .topic_by_name("orders")
                .is_none()
        });
    }
    let r = c.metadata(2, Some(&["orders"]));
    // Auto-creation brings it back; without it, unknown.
    assert!(matches!(r.topics[0].error_code, code::NONE), "{r:?}");
}

#[test]
fn a_stopped_broker_is_fenced_and_its_leaderships_move() {
    let mut c = Cluster::start(3, 0);
    for id in 1..=3 {
        wait_until("three unfenced brokers", || c.unfenced(id).len() == 3);
    }
    assert_eq!(create_topic(&c, 1, "t", 3, 3).0, code::NONE);
    // Broker 3 leads partition 2. Stopped as by kill -9: no controlled
    // shutdown; fenced after its session timeout.
    let controller = c.brokers[&1].cluster().expect("node").controller_id();
    let victim = if controller == Some(3) { 2 } else { 3 };
    let before = partitions(&c, 1, "t");
    let led: Vec<usize> = (0..3).filter(|&p| before[p].0 == victim).collect();
    assert_eq!(led.len(), 1);
    c.brokers.get_mut(&victim).expect("victim").stop_abruptly();
    let alive: Vec<i32> = (1..=3).filter(|b| *b != victim).collect();
    for &id in &alive {
        wait_until("the stopped broker is fenced", || {
            !c.unfenced(id).contains(&victim)
        });
    }
    for &id in &alive {
        let parts = partitions(&c, id, "t");
        for &p in &led {
            assert_ne!(parts[p].0, victim, "leadership moved");
            assert!(parts[p].0 > 0);
            assert_eq!(parts[p].1, before[p].1 + 1, "leader epoch bumped");
            assert!(!parts[p].3.contains(&victim), "out of the ISR");
        }
        // Listed for a few seconds more if this node listed it live
        // before (see `api::metadata::with_just_fenced`), then not.
        wait_until("the fenced broker is no longer listed", || {
            let r = c.metadata(id, None);
            r.brokers.iter().all(|b| b.node_id.0 != victim)
        });
    }
    // Restarted: a new incarnation registers, is unfenced, listed again.
    c.restart(victim);
    for &id in &alive {
        wait_until("the restarted broker is unfenced", || {
            c.unfenced(id).contains(&victim)
        });
    }
    // A graceful stop moves its leaderships at once (controlled shutdown).
    let node = c.brokers[&victim].cluster().expect("node");
    wait_until("registered", || {
        node.broker_epoch().is_some() && !node.is_fenced()
    });
    assert_eq!(create_topic(&c, 1, "u", 3, 3).0, code::NONE);
    let leads_u = partitions(&c, 1, "u")
        .iter()
        .filter(|p| p.0 == victim)
        .count();
    assert!(leads_u > 0);
    c.brokers.get_mut(&victim).expect("victim").close();
    let other = alive[0];
    let parts = partitions(&c, other, "u");
    assert!(
        parts.iter().all(|p| p.0 != victim),
        "moved before close returned: {parts:?}"
    );
}

#[test]
fn a_broker_only_node_follows_the_metadata_as_a_learner() {
    let c = Cluster::start(3, 1);
    for id in 1..=4 {
        wait_until("four unfenced brokers everywhere", || {
            c.unfenced(id) == vec![1, 2, 3, 4]
        });
    }
    let node4 = c.brokers[&4].cluster().expect("node");
    assert!(!node4.config.is_voter());
    assert_eq!(create_topic(&c, 4, "all", 4, 4).0, code::NONE);
    let parts = partitions(&c, 4, "all");
    assert_eq!(parts.len(), 4);
    assert!(parts.iter().all(|p| p.2.len() == 4));
    // The learner is not a voter, and never the controller.
    assert!(node4.controller_id().is_some_and(|l| l != 4));
}

#[test]
fn a_directory_keeps_its_node_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let voters = format!("1@127.0.0.1:{port}");
    let store = Store::open(dir.path()).expect("store");
    let mut b = Broker::start(store.clone(), config(1, port, &voters)).expect("start");
    b.close();
    drop(b);
    let voters2 = format!("2@127.0.0.1:{port}");
    let err = Broker::start(store, config(2, port, &voters2))
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("belongs to cluster node 1"),
        "{err}"
    );
    assert!(super::node::marker_path(dir.path()).exists());
    // Nor is it served by a broker alone.
    let err = Broker::start(
        Store::open(dir.path()).expect("store"),
        BrokerConfig::default(),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("--node-id 1"), "{err}");
}

#[test]
fn a_partition_is_reassigned_onto_a_new_broker_and_leadership_follows() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
        ListPartitionReassignmentsRequest, UnregisterBrokerRequest,
    };
    let c = Cluster::start(3, 1);
    for id in 1..=4 {
        wait_until("four unfenced brokers", || c.unfenced(id).len() == 4);
    }
    assert_eq!(create_topic(&c, 1, "r", 1, 3).0, code::NONE);
    let before = partitions(&c, 1, "r")[0].clone();
    assert_eq!(before.2, vec![1, 2, 3]);
    assert_eq!(before.0, 1);
    let reassign = |targets: Vec<(i32, Option<Vec<i32>>)>| {
        let mut req = AlterPartitionReassignmentsRequest::default();
        let mut t = ReassignableTopic::default();
        t.name = TopicName(s("r"));
        for (p, r) in targets {
            let mut rp = ReassignablePartition::default();
            rp.partition_index = p;
            rp.replicas = r.map(|r| r.into_iter().map(BrokerId).collect());
            t.partitions.push(rp);
        }
        req.topics.push(t);
        c.on(2, move |shared| {
            Box::pin(async move {
                let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
                crate::api::reassign::alter_reassignments(&shared, &mut session, req, 0).await
            })
        })
    };
    // Kafka's errors: an unknown broker, an unknown partition, no
    // reassignment to cancel.
    let r = reassign(vec![(0, Some(vec![1, 9])), (5, Some(vec![1])), (0, None)]);
    let codes: Vec<i16> = r.responses[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![39, 3, code::INVALID_REQUEST]);
    let r = reassign(vec![(0, None)]);
    assert_eq!(r.responses[0].partitions[0].error_code, 85);
    // Broker 1 (the leader) replaced by broker 4.
    let r = reassign(vec![(0, Some(vec![4, 2, 3]))]);
    assert_eq!(r.responses[0].partitions[0].error_code, code::NONE);
    for id in 1..=4 {
        wait_until("the reassignment completed", || {
            let p = &partitions(&c, id, "r")[0];
            p.2 == vec![4, 2, 3] && p.0 != 1 && p.0 > 0
        });
    }
    let after = partitions(&c, 2, "r")[0].clone();
    assert!(after.1 > before.1, "a new leader epoch: {after:?}");
    assert!(!after.3.contains(&1), "the removed replica left the ISR");
    // Broker 1 holds nothing of the topic: its copy is deleted.
    let store1 = c.shared(1).store.clone();
    wait_until("broker 1 deleted its replica", || {
        store1.topic("r").ok().flatten().is_none()
    });
    // Nothing in progress any more.
    let listed = c.on(3, |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            let req = ListPartitionReassignmentsRequest::default();
            crate::api::reassign::list_reassignments(&shared, &mut session, req, 0).await
        })
    });
    assert!(listed.topics.is_empty());
    // The preferred leader is broker 4.
    let elect = || {
        let mut req = ElectLeadersRequest::default();
        req.election_type = 0;
        let mut tp = TopicPartitions::default();
        tp.topic = TopicName(s("r"));
        tp.partitions = vec![0];
        req.topic_partitions = Some(vec![tp]);
        c.on(1, move |shared| {
            Box::pin(async move {
                let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
                crate::api::reassign::elect_leaders(&shared, &mut session, req, 2).await
            })
        })
    };
    let first = elect().replica_election_results[0].partition_result[0].error_code;
    assert!(first == code::NONE || first == 84, "{first}");
    wait_until("broker 4 leads", || partitions(&c, 3, "r")[0].0 == 4);
    let again = elect();
    assert_eq!(
        again.replica_election_results[0].partition_result[0].error_code,
        84
    );
    let unregister = |id: i32| {
        let mut req = UnregisterBrokerRequest::default();
        req.broker_id = BrokerId(id);
        c.on(3, move |shared| {
            Box::pin(async move {
                let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
                crate::api::reassign::unregister_broker(&shared, &mut session, req, 0).await
            })
        })
    };
    assert_eq!(unregister(9).error_code, 102);
    assert_eq!(unregister(2).error_code, code::INVALID_REQUEST);
}

/// Kafka's stray replicas (3.7+): a broker that was down while its replica
/// of a partition was moved away, or while a topic it held was deleted and
/// created again, deletes those local copies once it has caught up with
/// the metadata after its restart.
#[test]
fn a_restarted_broker_deletes_the_replicas_moved_or_deleted_while_it_was_down() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::{AlterPartitionReassignmentsRequest, BrokerId};
    let mut c = Cluster::start(3, 1);
    for id in 1..=4 {
        wait_until("four unfenced brokers", || c.unfenced(id).len() == 4);
    }
    assert_eq!(create_topic(&c, 1, "moved", 1, 4).0, code::NONE);
    assert_eq!(create_topic(&c, 1, "gone", 1, 4).0, code::NONE);
    assert_eq!(create_topic(&c, 1, "kept", 2, 4).0, code::NONE);
    let store4 = c.shared(4).store.clone();
    wait_until("broker 4 holds its replicas", || {
        ["moved", "gone", "kept"]
            .iter()
            .all(|t| store4.topic(t).ok().flatten().is_some())
    });
    let old_gone = store4.topic("gone").ok().flatten().expect("gone").id;
    drop(store4);
    // Broker 4 (a broker-only node) down, as by kill -9.
    c.brokers.get_mut(&4).expect("broker 4").stop_abruptly();
    wait_until("broker 4 is fenced", || !c.unfenced(1).contains(&4));
    // While it is down: moved-0 and kept-0 moved off it, "gone" deleted
    // and created again (another id, on the live brokers).
    let reassign = |topic: &str, partition: i32, replicas: Vec<i32>| {
        let mut req = AlterPartitionReassignmentsRequest::default();
        let mut t = ReassignableTopic::default();
        t.name = TopicName(s(topic));
        let mut rp = ReassignablePartition::default();
        rp.partition_index = partition;
        rp.replicas = Some(replicas.into_iter().map(BrokerId).collect());
        t.partitions.push(rp);
        req.topics.push(t);
        let r = c.on(2, move |shared| {
            Box::pin(async move {
                let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
                crate::api::reassign::alter_reassignments(&shared, &mut session, req, 0).await
            })
        });
        r.responses[0].partitions[0].error_code
    };
    assert_eq!(reassign("moved", 0, vec![1, 2, 3]), code::NONE);
    assert_eq!(reassign("kept", 0, vec![1, 2, 3]), code::NONE);
    for (topic, p) in [("moved", 0), ("kept", 0)] {
        wait_until("the reassignment completed", || {
            partitions(&c, 1, topic)[p].2 == vec![1, 2, 3]
        });
    }
    let mut req = DeleteTopicsRequest::default();
    req.topic_names.push(TopicName(s("gone")));
    let r = c.on(3, move |shared| {
        Box::pin(async move {
            let mut session = crate::dispatch::Session::new(([127, 0, 0, 1], 0).into());
            crate::api::topics::delete(&shared, &mut session, req, 4).await
        })
    });
    assert_eq!(r.responses[0].error_code, code::NONE);
    wait_until("the topic left the image", || {
        let node = c.brokers[&1].cluster().expect("node");
        node.image().topic_by_name("gone").is_none()
    });
    assert_eq!(create_topic(&c, 1, "gone", 1, 3).0, code::NONE);
    // Restarted: once caught up, its stray copies are deleted.
    c.restart(4);
    let store4 = c.shared(4).store.clone();
    let dir4 = c.dirs[&4].path().to_path_buf();
    let on_disk = |prefix: &str| {
        std::fs::read_dir(&dir4)
            .expect("data dir")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
    };
    wait_until("broker 4 deleted the replica moved away", || {
        store4.topic("moved").ok().flatten().is_none() && !on_disk("moved-")
    });
    wait_until("broker 4 deleted the old incarnation of the topic", || {
        store4
            .topic("gone")
            .ok()
            .flatten()
            .is_none_or(|t| t.id != old_gone)
    });
    // Held here under the new id only if the new topic is placed here.
    let new_gone = partitions(&c, 1, "gone");
    if !new_gone[0].2.contains(&4) {
        assert!(!on_disk("gone-"), "the deleted topic's directory is gone");
    }
    // A topic of which broker 4 still holds a partition is kept whole
    // (the store deletes topics, not partitions); kept-1 is still served.
    assert!(store4.topic("kept").ok().flatten().is_some());
    let node4 = c.brokers[&4].cluster().expect("node");
    wait_until("kept-1 is assigned to broker 4", || {
        node4
            .assigned()
            .iter()
            .any(|a| a.topic == "kept" && a.partition == 1)
    });
}

/// The stray sweep is for a node restarted on its own directory: a
/// directory a broker alone used, started as a cluster node for the first
/// time, keeps its topics (they were never the cluster's replicas).
#[test]
fn a_first_start_as_a_node_keeps_the_topics_of_a_standalone_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store
        .create_topic("mine", 1, &[])
        .expect("a standalone topic");
    drop(store);
    let port = free_port();
    let mut c = Cluster {
        dirs: BTreeMap::from([(1, dir)]),
        brokers: BTreeMap::new(),
        voters: format!("1@127.0.0.1:{port}"),
        controller_ports: BTreeMap::from([(1, port)]),
    };
    c.restart(1);
    wait_until("unfenced", || c.unfenced(1) == vec![1]);
    // Images applied since the first (the sweep would have run by then).
    assert_eq!(create_topic(&c, 1, "other", 1, 1).0, code::NONE);
    let store = c.shared(1).store.clone();
    wait_until("the new topic is applied", || {
        store.topic("other").ok().flatten().is_some()
    });
    assert!(store.topic("mine").ok().flatten().is_some(), "kept");
}
