//! Partition replication between real brokers in this process (issue 14):
//! each test starts 2-3 brokers on free ports, each on its own directory,
//! turns cluster mode on and hands them assignments by hand through the
//! control plane's interface (`enable_cluster`, `apply_assignments`), with
//! a small stand-in controller answering AlterPartition. Clients speak
//! Kafka's protocol over TCP (`fetcher::PeerConnection`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use super::fetcher::PeerConnection;
use super::partition_state::{
    AlterPartitionFuture, BrokerId, ClusterLink, IsrChannel, PartitionAssignment, PeerDirectory,
};
use crate::errors::code;
use crate::{Broker, BrokerConfig};
use ottla_record::batch::Batches;
use ottla_storage::store::Store;

const TOPIC: &str = "t";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Peers(Mutex<HashMap<BrokerId, SocketAddr>>);

impl PeerDirectory for Peers {
    fn address(&self, broker: BrokerId) -> Option<SocketAddr> {
        self.0.lock().get(&broker).copied()
    }
}

/// The stand-in controller: the partitions' assignments, changed by
/// AlterPartition as KRaft's would (epochs checked, partition epoch bumped).
struct Controller {
    /// Partition 0's assignment (the tests of one partition use it).
    a: Mutex<PartitionAssignment>,
    /// Partitions 1 and up.
    more: Mutex<Vec<PartitionAssignment>>,
    alters: Mutex<Vec<Vec<BrokerId>>>,
}

impl IsrChannel for Controller {
    fn alter_partition(
        &self,
        _topic_id: uuid::Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> AlterPartitionFuture {
        let r = {
            let mut first = self.a.lock();
            let mut more = self.more.lock();
            let a = if partition == 0 {
                &mut *first
            } else {
                match more.iter_mut().find(|a| a.partition == partition) {
                    Some(a) => a,
                    None => return Box::pin(async { Err(code::UNKNOWN_TOPIC_OR_PARTITION) }),
                }
            };
            if leader_epoch != a.leader_epoch {
                Err(code::FENCED_LEADER_EPOCH)
            } else if partition_epoch != a.partition_epoch {
                Err(108) // INVALID_UPDATE_VERSION
            } else {
                a.isr = isr.clone();
                a.partition_epoch += 1;
                self.alters.lock().push(isr);
                Ok(a.partition_epoch)
            }
        };
        Box::pin(async move { r })
    }
}

struct Cluster {
    peers: Arc<Peers>,
    ctl: Arc<Controller>,
    lag_ms: u64,
    configs: HashMap<String, BTreeMap<String, String>>,
    /// Before `dirs`: brokers close (and checkpoint) before the
    /// directories go.
    brokers: HashMap<BrokerId, Broker>,
    dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// `n` brokers (ids 1..=n), partition 0 of "t" led by 1 in epoch 1 on
    /// replicas 1..=n, all in sync; nothing applied yet.
    fn new(n: i32, lag_ms: u64, min_isr: &str) -> Cluster {
        let replicas: Vec<BrokerId> = (1..=n).collect();
        let a = PartitionAssignment {
            topic: TOPIC.into(),
            topic_id: uuid::Uuid::from_bytes([7; 16]),
            partition: 0,
            leader: Some(1),
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: replicas.clone(),
            isr: replicas,
        };
        let mut cfg = BTreeMap::new();
        cfg.insert("min.insync.replicas".to_string(), min_isr.to_string());
        let mut c = Cluster {
            peers: Arc::new(Peers::default()),
            ctl: Arc::new(Controller {
                a: Mutex::new(a),
                more: Mutex::new(Vec::new()),
                alters: Mutex::new(Vec::new()),
            }),
            lag_ms,
            configs: HashMap::from([(TOPIC.to_string(), cfg)]),
            brokers: HashMap::new(),
            dirs: (0..n)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
        };
        for id in 1..=n {
            c.start(id);
        }
        c
    }

    fn dir(&self, id: BrokerId) -> &Path {
        self.dirs[(id - 1) as usize].path()
    }

    fn start(&mut self, id: BrokerId) {
        let store = Store::open(self.dir(id)).expect("store");
        let broker = Broker::start(store, BrokerConfig::default()).expect("start");
        self.peers.0.lock().insert(id, broker.local_addr());
        broker
            .shared()
            .expect("running")
            .replicas
            .enable_cluster(ClusterLink {
                local: id,
                peers: self.peers.clone(),
                isr: self.ctl.clone(),
                replica_lag_time_max_ms: self.lag_ms,
                source_ip: None,
            });
        self.brokers.insert(id, broker);
    }

    fn stop(&mut self, id: BrokerId) {
        if let Some(mut b) = self.brokers.remove(&id) {
            b.close();
        }
        self.peers.0.lock().remove(&id);
    }

    fn addr(&self, id: BrokerId) -> SocketAddr {
        self.brokers[&id].local_addr()
    }

    /// The controller's assignment, handed to broker `id` (nothing, if it
    /// is not a replica).
    fn push_to(&self, id: BrokerId) {
        let mut all = vec![self.ctl.a.lock().clone()];
        all.extend(self.ctl.more.lock().iter().cloned());
        let mine: Vec<PartitionAssignment> = all
            .into_iter()
            .filter(|a| a.replicas.contains(&id))
            .collect();
        self.brokers[&id]
            .shared()
            .expect("running")
            .replicas
            .apply_assignments(mine, &self.configs, &[]);
    }

    fn push(&self) {
        let mut ids: Vec<BrokerId> = self.brokers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.push_to(id);
        }
    }

    fn set(&self, change: impl FnOnce(&mut PartitionAssignment)) {
        let mut a = self.ctl.a.lock();
        change(&mut a);
        a.partition_epoch += 1;
    }

    /// Every byte of broker `id`'s log of t-0, start to end.
    fn log_bytes(&self, id: BrokerId) -> Vec<u8> {
        self.log_bytes_of(id, 0)
    }

    /// Every byte of broker `id`'s log of t-`partition`, start to end.
    fn log_bytes_of(&self, id: BrokerId, partition: u32) -> Vec<u8> {
        let store = Store::open(self.dir(id)).expect("store");
        let log = store.partition_by_name(TOPIC, partition).expect("log");
        let end = log.log_end_offset().expect("end");
        let mut next = log.offsets().expect("offsets").0;
        let mut out = Vec::new();
        let mut cursor = None;
        while next < end {
            let f = log
                .read_to_log_end(next, 1 << 20, &mut cursor, true)
                .expect("read");
            let Some((h, _)) = Batches::new(&f.bytes).last() else {
                break;
            };
            next = h.next_offset();
            out.extend_from_slice(&f.bytes);
        }
        out
    }

    fn log_end(&self, id: BrokerId) -> i64 {
        let store = Store::open(self.dir(id)).expect("store");
        store
            .partition_by_name(TOPIC, 0)
            .and_then(|l| l.log_end_offset())
            .unwrap_or(-1)
    }

    /// (ISR, high watermark) of t-0 on broker `id`.
    fn state(&self, id: BrokerId) -> (Vec<BrokerId>, i64) {
        let s = self.brokers[&id]
            .shared()
            .expect("running")
            .replicas
            .partition_states();
        s.first().map_or((Vec::new(), -1), |p| (p.4.clone(), p.5))
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client_call<Req, Resp>(addr: SocketAddr, api: ApiKey, version: i16, req: &Req) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = PeerConnection::connect(addr, None).await.expect("connect");
        c.call(api, version, req).await.expect("call")
    })
}

/// Produce `n` one-record batches to t-0, one request each: the last
/// answer's (error code, base offset).
fn produce(addr: SocketAddr, n: usize, acks: i16, timeout_ms: i32) -> (i16, i64) {
    produce_to(addr, 0, n, acks, timeout_ms)
}

/// [`produce`] to t-`partition`.
fn produce_to(
    addr: SocketAddr,
    partition: i32,
    n: usize,
    acks: i16,
    timeout_ms: i32,
) -> (i16, i64) {
    let mut last = (0, -1);
    for i in 0..n {
        let mut b = ottla_record::BatchBuilder::with_capacity(256);
        b.append(
            ottla_storage::log::now_ms(),
            None,
            Some(format!("value-{i}").as_bytes()),
            &[],
        );
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(Bytes::copy_from_slice(b.finish()));
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_static_str(TOPIC));
        td.partition_data.push(pd);
        let mut req = ProduceRequest::default();
        req.acks = acks;
        req.timeout_ms = timeout_ms;
        req.topic_data.push(td);
        let resp: ProduceResponse = client_call(addr, ApiKey::Produce, 9, &req);
        let p = &resp.responses[0].partition_responses[0];
        last = (p.error_code, p.base_offset);
        if p.error_code != code::NONE {
            return last;
        }
    }
    last
}

/// A Fetch of t-0 from `offset` as `replica` (-1: a consumer): (error
/// code, high watermark, offsets of the records returned).
fn fetch(addr: SocketAddr, offset: i64, replica: i32) -> (i16, i64, Vec<i64>) {
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = offset;
    fp.partition_max_bytes = 1 << 20;
    fp.current_leader_epoch = -1;
    fp.last_fetched_epoch = -1;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(StrBytes::from_static_str(TOPIC));
    ft.partitions.push(fp);
    let mut req = FetchRequest::default();
    req.replica_id = WireBrokerId(replica);
    req.max_wait_ms = 0;
    req.min_bytes = 0;
    req.max_bytes = 1 << 20;
    req.session_epoch = -1;
    req.topics.push(ft);
    let resp: FetchResponse = client_call(addr, ApiKey::Fetch, 12, &req);
    let p = &resp.responses[0].partitions[0];
    let offsets = p
        .records
        .as_ref()
        .map(|r| {
            Batches::new(r)
                .flat_map(|(h, _)| h.base_offset..=h.last_offset())
                .collect()
        })
        .unwrap_or_default();
    (p.error_code, p.high_watermark, offsets)
}

#[test]
fn produced_data_is_replicated_byte_for_byte_and_the_high_watermark_follows() {
    let c = Cluster::new(3, 10_000, "2");
    // Broker 3 holds an older topic of the same name (another id), with a
    // record: it is replaced by the cluster's, not adopted.
    {
        let store = Store::open(c.dir(3)).expect("store");
        let old = store.create_topic(TOPIC, 1, &[]).expect("old topic");
        let mut b = ottla_record::BatchBuilder::with_capacity(64);
        b.append(0, None, Some(b"stale"), &[]);
        let mut bytes = b.finish().to_vec();
        store
            .partition(&old, 0)
            .expect("log")
            .append(&mut bytes, ottla_storage::log::Durability::PageCache)
            .expect("append");
    }
    c.push();
    let store3 = Store::open(c.dir(3)).expect("store");
    let t = store3.topic(TOPIC).expect("topic").expect("exists");
    assert_eq!(t.id.0, [7; 16], "the cluster's topic id");
    assert_eq!(c.log_end(3), 0, "the older topic's record is gone");
    let (err, base) = produce(c.addr(1), 20, -1, 10_000);
    assert_eq!((err, base), (code::NONE, 19));
    // acks=all answered: every ISR member has every record already.
    assert_eq!(c.log_end(2), 20);
    assert_eq!(c.log_end(3), 20);
    assert_eq!(c.state(1), (vec![1, 2, 3], 20));
    let leader = c.log_bytes(1);
    assert!(!leader.is_empty());
    assert_eq!(c.log_bytes(2), leader, "byte-identical follower log");
    assert_eq!(c.log_bytes(3), leader, "byte-identical follower log");
    // Followers learn the high watermark from their next fetch.
    wait_until("the followers' high watermark", || {
        c.state(2).1 == 20 && c.state(3).1 == 20
    });
    // A consumer reads everything from the leader; a follower refuses it,
    // as it refuses Produce; a broker that is no replica may not fetch as
    // one.
    let (err, hw, offsets) = fetch(c.addr(1), 0, -1);
    assert_eq!((err, hw), (code::NONE, 20));
    assert_eq!(offsets, (0..20).collect::<Vec<_>>());
    assert_eq!(fetch(c.addr(2), 0, -1).0, code::NOT_LEADER_OR_FOLLOWER);
    // v16+ (KIP-951): the answer names the leader and its listener.
    {
        let mut fp = FetchPartition::default();
        fp.partition = 0;
        fp.current_leader_epoch = -1;
        fp.last_fetched_epoch = -1;
        fp.partition_max_bytes = 1 << 20;
        let mut ft = FetchTopic::default();
        ft.topic_id = uuid::Uuid::from_bytes([7; 16]);
        ft.partitions.push(fp);
        let mut req = FetchRequest::default();
        req.replica_state.replica_id = WireBrokerId(-1);
        req.max_bytes = 1 << 20;
        req.session_epoch = -1;
        req.topics.push(ft);
        let resp: FetchResponse = client_call(c.addr(2), ApiKey::Fetch, 16, &req);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, code::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(
            (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
            (1, 1)
        );
        assert_eq!(resp.node_endpoints.len(), 1);
        assert_eq!(resp.node_endpoints[0].node_id.0, 1);
        assert_eq!(i32::from(c.addr(1).port()), resp.node_endpoints[0].port);
    }
    assert_eq!(
        produce(c.addr(3), 1, 1, 1000).0,
        code::NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(fetch(c.addr(1), 0, 9).0, code::NOT_LEADER_OR_FOLLOWER);
    let follower = &c.brokers[&2].shared().expect("running").replicas;
    assert_eq!(
        follower.list_offset(TOPIC, 0, -1, None),
        Err(code::NOT_LEADER_OR_FOLLOWER)
    );
    assert_eq!(
        follower.leader_epochs(TOPIC, 0, None).map(|e| e.current),
        Err(code::NOT_LEADER_OR_FOLLOWER)
    );
    assert_eq!(
        c.brokers[&1]
            .shared()
            .expect("running")
            .replicas
            .list_offset(TOPIC, 0, -1, None),
        Ok((-1, 20, 1))
    );
    // DeleteRecords on the leader reaches the followers' log start.
    let leader = &c.brokers[&1].shared().expect("running").replicas;
    assert_eq!(leader.delete_records(TOPIC, 0, 5), Ok(5));
    assert_eq!(
        c.brokers[&2]
            .shared()
            .expect("running")
            .replicas
            .delete_records(TOPIC, 0, 5),
        Err(code::NOT_LEADER_OR_FOLLOWER)
    );
    assert_eq!(produce(c.addr(1), 1, -1, 10_000).0, code::NONE);
    let log_start = |id: BrokerId| {
        let store = Store::open(c.dir(id)).expect("store");
        let log = store.partition_by_name(TOPIC, 0).expect("log");
        log.offsets().expect("offsets").0
    };
    wait_until("the followers' log start", || {
        log_start(2) == 5 && log_start(3) == 5
    });
}

#[test]
fn partitions_led_by_different_brokers_replicate_each_way() {
    let c = Cluster::new(3, 10_000, "3");
    // t-1 led by broker 2, t-2 by broker 3; all on the three brokers.
    {
        let first = c.ctl.a.lock().clone();
        let mut more = c.ctl.more.lock();
        for (p, leader) in [(1, 2), (2, 3)] {
            more.push(PartitionAssignment {
                partition: p,
                leader: Some(leader),
                ..first.clone()
            });
        }
    }
    c.push();
    for (p, leader) in [(0, 1), (1, 2), (2, 3)] {
        let (err, base) = produce_to(c.addr(leader), p, 7 + p as usize, -1, 10_000);
        assert_eq!((err, base), (code::NONE, 6 + i64::from(p)), "t-{p}");
        assert_eq!(
            produce_to(c.addr(leader % 3 + 1), p, 1, 1, 1000).0,
            code::NOT_LEADER_OR_FOLLOWER
        );
    }
    for p in 0..3u32 {
        let leader_bytes = c.log_bytes_of(p as i32 + 1, p);
        assert!(!leader_bytes.is_empty());
        for id in 1..=3 {
            assert_eq!(c.log_bytes_of(id, p), leader_bytes, "t-{p} on broker {id}");
        }
    }
}

#[test]
fn acks_all_waits_for_the_isr_and_consumers_stop_at_the_high_watermark() {
    let mut c = Cluster::new(2, 60_000, "2");
    // Only the leader knows its assignment: the follower does not fetch.
    c.push_to(1);
    let (err, _) = produce(c.addr(1), 1, -1, 300);
    assert_eq!(err, code::REQUEST_TIMED_OUT, "no follower, no acks=all");
    // The record is on the leader, above the high watermark: consumers do
    // not see it.
    assert_eq!(c.log_end(1), 1);
    let (err, hw, offsets) = fetch(c.addr(1), 0, -1);
    assert_eq!((err, hw), (code::NONE, 0));
    assert!(offsets.is_empty(), "a record above the high watermark");
    // The follower starts: acks=all is answered once it has the records.
    c.push_to(2);
    assert_eq!(produce(c.addr(1), 5, -1, 10_000).0, code::NONE);
    assert_eq!(c.log_end(2), 6);
    let (_, hw, offsets) = fetch(c.addr(1), 0, -1);
    assert_eq!(hw, 6);
    assert_eq!(offsets, (0..6).collect::<Vec<_>>());
    // The ISR shrinks below min.insync.replicas: acks=all is refused
    // before the append, acks=1 still appends.
    c.set(|a| a.isr = vec![1]);
    c.push();
    assert_eq!(produce(c.addr(1), 1, -1, 1000).0, code::NOT_ENOUGH_REPLICAS);
    assert_eq!(c.log_end(1), 6, "refused before the append");
    assert_eq!(produce(c.addr(1), 1, 1, 1000).0, code::NONE);
    // Waiting for a follower that stopped fetching, the ISR shrinks under
    // min.insync.replicas: replicated to the (smaller) ISR, but
    // NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    c.set(|a| a.isr = vec![1, 2]);
    c.push_to(1);
    c.brokers[&2]
        .shared()
        .expect("running")
        .replicas
        .apply_assignments(Vec::new(), &c.configs, &[]);
    let before = c.log_end(1);
    let addr = c.addr(1);
    let waiting = std::thread::spawn(move || produce(addr, 1, -1, 10_000).0);
    wait_until("the append", || c.log_end(1) == before + 1);
    c.set(|a| a.isr = vec![1]);
    c.push_to(1);
    assert_eq!(
        waiting.join().expect("producer"),
        code::NOT_ENOUGH_REPLICAS_AFTER_APPEND
    );
    // The cluster lowers min.insync.replicas: the next assignment carries
    // it to the local topic, and acks=all passes with the ISR of one.
    c.configs
        .get_mut(TOPIC)
        .expect("config")
        .insert("min.insync.replicas".into(), "1".into());
    c.push_to(1);
    assert_eq!(produce(c.addr(1), 1, -1, 10_000).0, code::NONE);
    c.stop(2);
}

#[test]
fn a_stopped_follower_leaves_the_isr_after_the_lag_and_rejoins() {
    let mut c = Cluster::new(2, 300, "1");
    c.push();
    assert_eq!(produce(c.addr(1), 3, -1, 10_000).0, code::NONE);
    wait_until("the follower's high watermark", || c.state(2).1 == 3);
    c.stop(2);
    // Closing saved the high watermark for the restart.
    let saved = std::fs::read_to_string(
        c.dir(2)
            .join("t-0")
            .join(ottla_storage::log::partition::HIGH_WATERMARK_FILE),
    )
    .expect("checkpoint");
    assert_eq!(saved, "0\n1\nt 0 3\n");
    assert_eq!(produce(c.addr(1), 4, 1, 10_000).0, code::NONE);
    wait_until("the ISR to shrink", || c.state(1).0 == vec![1]);
    assert_eq!(c.ctl.a.lock().isr, vec![1], "asked of the controller");
    // ISR {1} meets min.insync.replicas=1: acks=all answers at once, and
    // the high watermark is the leader's log end again.
    assert_eq!(produce(c.addr(1), 1, -1, 10_000).0, code::NONE);
    assert_eq!(c.state(1).1, 8);
    // Meanwhile the leader's log start passes the follower's log end
    // (DeleteRecords): the follower's fetch is out of range, and it starts
    // its log again at the leader's start.
    assert_eq!(
        c.brokers[&1]
            .shared()
            .expect("running")
            .replicas
            .delete_records(TOPIC, 0, 6),
        Ok(6)
    );
    // The follower comes back on its directory, catches up, and is asked
    // back into the ISR by the leader.
    c.start(2);
    c.push();
    wait_until("the follower to rejoin the ISR", || {
        c.state(1).0 == vec![1, 2]
    });
    assert_eq!(c.ctl.a.lock().isr, vec![1, 2]);
    assert_eq!(c.log_bytes(2), c.log_bytes(1));
    let store = Store::open(c.dir(2)).expect("store");
    let log = store.partition_by_name(TOPIC, 0).expect("log");
    assert_eq!(
        log.offsets().expect("offsets").0,
        6,
        "restarted at the leader's start"
    );
    let alters = c.ctl.alters.lock().clone();
    assert!(alters.contains(&vec![1]), "{alters:?}");
    assert_eq!(alters.last(), Some(&vec![1, 2]), "shrunk, then expanded");
}

#[test]
fn a_new_leader_truncates_the_old_leaders_unreplicated_tail() {
    let c = Cluster::new(2, 60_000, "1");
    c.push();
    assert_eq!(produce(c.addr(1), 10, -1, 10_000).0, code::NONE);
    // Broker 2 stops following (it is told it is no replica here), and
    // broker 1 takes 5 more records with acks=1: above the high watermark,
    // never replicated.
    c.brokers[&2]
        .shared()
        .expect("running")
        .replicas
        .apply_assignments(Vec::new(), &c.configs, &[]);
    assert_eq!(produce(c.addr(1), 5, 1, 10_000).0, code::NONE);
    assert_eq!(c.log_end(1), 15);
    // A fetch broker 2 had in flight when it stopped may have taken the
    // first of them (its fetcher stops between rounds).
    let kept = c.log_end(2);
    assert!(kept == 10 || kept == 11, "broker 2 has {kept}");
    let (_, hw, offsets) = fetch(c.addr(1), 10, -1);
    assert_eq!(hw, 10, "the high watermark waits for broker 2");
    assert!(offsets.is_empty(), "consumers never see above it");
    // Leadership moves to broker 2 (epoch 2), which writes 3 records.
    c.set(|a| {
        a.leader = Some(2);
        a.leader_epoch = 2;
        a.isr = vec![2];
    });
    c.push_to(2);
    // A stale view (epoch 1) reaching broker 2 late changes nothing.
    let mut stale = c.ctl.a.lock().clone();
    stale.leader = Some(1);
    stale.leader_epoch = 1;
    c.brokers[&2]
        .shared()
        .expect("running")
        .replicas
        .apply_assignments(vec![stale], &c.configs, &[]);
    assert_eq!(produce(c.addr(2), 3, 1, 10_000).0, code::NONE);
    // Broker 1 has not heard yet: a stale leader still takes acks=1
    // records (acks=all would wait for the ISR it can no longer grow).
    assert_eq!(produce(c.addr(1), 1, 1, 1000).0, code::NONE);
    assert_eq!(c.log_end(1), 16);
    // Broker 1 follows broker 2 now: its 5 unreplicated records go, broker
    // 2's 3 take their place.
    c.push_to(1);
    wait_until("broker 1 to catch up", || c.log_end(1) == kept + 3);
    assert_eq!(
        produce(c.addr(1), 1, 1, 1000).0,
        code::NOT_LEADER_OR_FOLLOWER
    );
    assert_eq!(
        c.log_bytes(1),
        c.log_bytes(2),
        "byte-identical after truncation"
    );
    let store = Store::open(c.dir(1)).expect("store");
    let log = store.partition_by_name(TOPIC, 0).expect("log");
    let epochs: Vec<(i32, i64)> = log
        .leader_epochs()
        .expect("epochs")
        .cache
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(epochs, vec![(1, 0), (2, kept)]);
    wait_until("broker 1 back in the ISR", || c.state(2).0 == vec![2, 1]);
}

/// Numbers for docs/design/replication.md, not a test of behaviour:
/// `cargo test --release -p ottla-broker acks_latency -- --ignored --nocapture`.
/// Sequential one-record Produce requests on one connection to the leader
/// of a partition with 3 replicas, acks=1 then acks=all.
#[test]
#[ignore]
fn acks_latency_numbers() {
    let c = Cluster::new(3, 10_000, "2");
    c.push();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = c.addr(1);
    for acks in [1i16, -1] {
        let mut took: Vec<Duration> = rt.block_on(async {
            let mut conn = PeerConnection::connect(addr, None).await.expect("connect");
            let mut took = Vec::new();
            for i in 0..2000 {
                let mut b = ottla_record::BatchBuilder::with_capacity(256);
                b.append(0, None, Some(format!("value-{i}").as_bytes()), &[]);
                let mut pd = PartitionProduceData::default();
                pd.records = Some(Bytes::copy_from_slice(b.finish()));
                let mut td = TopicProduceData::default();
                td.name = TopicName(StrBytes::from_static_str(TOPIC));
                td.partition_data.push(pd);
                let mut req = ProduceRequest::default();
                req.acks = acks;
                req.timeout_ms = 10_000;
                req.topic_data.push(td);
                let t = Instant::now();
                let resp: ProduceResponse =
                    conn.call(ApiKey::Produce, 9, &req).await.expect("produce");
                took.push(t.elapsed());
                assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
            }
            took
        });
        took.sort();
        let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "acks={acks}: p50 {:?}, p99 {:?}, max {:?}",
            at(0.5),
            at(0.99),
            took[took.len() - 1]
        );
    }
}

#[test]
fn an_acks_all_wait_ends_when_leadership_moves() {
    let c = Cluster::new(2, 60_000, "2");
    // The follower does not fetch: acks=all waits.
    c.push_to(1);
    let addr = c.addr(1);
    let waiting = std::thread::spawn(move || produce(addr, 1, -1, 30_000).0);
    wait_until("the append", || c.log_end(1) == 1);
    c.set(|a| {
        a.leader = Some(2);
        a.leader_epoch = 2;
    });
    c.push_to(1);
    assert_eq!(
        waiting.join().expect("producer"),
        code::NOT_LEADER_OR_FOLLOWER
    );
}

#[test]
fn after_the_leader_stops_the_next_in_sync_replica_leads_and_the_old_one_returns() {
    let mut c = Cluster::new(3, 10_000, "2");
    c.push();
    assert_eq!(produce(c.addr(1), 10, -1, 10_000).0, code::NONE);
    c.stop(1);
    // The controller's election: the next in-sync replica, a new epoch.
    c.set(|a| {
        a.leader = Some(2);
        a.leader_epoch = 2;
        a.isr = vec![2, 3];
    });
    c.push();
    assert_eq!(produce(c.addr(2), 5, -1, 10_000).0, code::NONE);
    assert_eq!(c.log_end(3), 15, "acks=all: broker 3 has them");
    assert_eq!(c.log_bytes(3), c.log_bytes(2));
    // The old leader comes back as a follower and rejoins.
    c.start(1);
    c.push();
    wait_until("broker 1 back in the ISR", || c.state(2).0 == vec![2, 3, 1]);
    assert_eq!(c.log_bytes(1), c.log_bytes(2));
    let (err, hw, offsets) = fetch(c.addr(2), 0, -1);
    assert_eq!((err, hw), (code::NONE, 15));
    assert_eq!(offsets, (0..15).collect::<Vec<_>>());
}

const CHILD_DIR: &str = "OTTLA_TEST_FOLLOWER_DIR";
const CHILD_LEADER: &str = "OTTLA_TEST_LEADER_ADDR";

/// Not a test of its own: the body of the follower process that
/// [`a_follower_killed_mid_replication_restarts_from_its_directory`]
/// starts and kills (it does nothing when run by the test harness directly).
#[test]
fn child_follower() {
    let (Some(dir), Some(leader)) = (
        std::env::var_os(CHILD_DIR),
        std::env::var(CHILD_LEADER).ok(),
    ) else {
        return;
    };
    let leader: SocketAddr = leader.parse().expect("leader address");
    let peers = Arc::new(Peers::default());
    peers.0.lock().insert(1, leader);
    let ctl = Arc::new(Controller {
        a: Mutex::new(PartitionAssignment {
            topic: TOPIC.into(),
            topic_id: uuid::Uuid::from_bytes([7; 16]),
            partition: 0,
            leader: Some(1),
            leader_epoch: 1,
            partition_epoch: 1,
            replicas: vec![1, 2],
            isr: vec![1, 2],
        }),
        more: Mutex::new(Vec::new()),
        alters: Mutex::new(Vec::new()),
    });
    let store = Store::open(Path::new(&dir)).expect("store");
    let broker = Broker::start(store, BrokerConfig::default()).expect("start");
    let replicas = &broker.shared().expect("running").replicas;
    replicas.enable_cluster(ClusterLink {
        local: 2,
        peers,
        isr: ctl.clone(),
        replica_lag_time_max_ms: 60_000,
        source_ip: None,
    });
    let a = ctl.a.lock().clone();
    let configs = HashMap::new();
    replicas.apply_assignments(vec![a], &configs, &[]);
    // Replicates until killed.
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

#[test]
fn a_follower_killed_mid_replication_restarts_from_its_directory() {
    let mut c = Cluster::new(2, 60_000, "1");
    c.stop(2);
    c.push_to(1);
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "replica::replication_tests::child_follower",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_DIR, c.dir(2))
        .env(CHILD_LEADER, c.addr(1).to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("follower process");
    // Records flow while the follower process copies them; it is killed
    // once it has some, most likely in the middle of an append.
    let addr = c.addr(1);
    let producing = std::thread::spawn(move || produce(addr, 300, 1, 10_000).0);
    wait_until("the follower process to copy records", || c.log_end(2) > 20);
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert_eq!(producing.join().expect("producer"), code::NONE);
    // Restarted on its directory (in this process), it catches up.
    c.start(2);
    c.push();
    wait_until("the restarted follower to catch up", || c.log_end(2) == 300);
    assert_eq!(c.log_bytes(2), c.log_bytes(1));
    assert_eq!(produce(c.addr(1), 1, -1, 10_000).0, code::NONE);
}

/// One idempotent batch: producer 42, epoch 0, sequence `seq`.
fn idempotent_batch(seq: i32) -> Bytes {
    use ottla_record::batch::{BASE_SEQUENCE, PRODUCER_EPOCH, PRODUCER_ID};
    let mut b = ottla_record::BatchBuilder::with_capacity(256);
    b.append(0, None, Some(format!("seq-{seq}").as_bytes()), &[]);
    let mut bytes = b.finish().to_vec();
    bytes[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&42i64.to_be_bytes());
    bytes[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&0i16.to_be_bytes());
    bytes[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    ottla_record::batch::seal_crc(&mut bytes);
    Bytes::from(bytes)
}

/// Produce `records` to t-0 as they are: (error code, base offset).
fn produce_raw(addr: SocketAddr, records: Bytes) -> (i16, i64) {
    let mut pd = PartitionProduceData::default();
    pd.records = Some(records);
    let mut td = TopicProduceData::default();
    td.name = TopicName(StrBytes::from_static_str(TOPIC));
    td.partition_data.push(pd);
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = 10_000;
    req.topic_data.push(td);
    let resp: ProduceResponse = client_call(addr, ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[test]
fn a_new_leader_recognises_an_idempotent_retry_it_copied_as_follower() {
    let c = Cluster::new(2, 60_000, "1");
    c.push();
    assert_eq!(produce(c.addr(1), 3, -1, 10_000).0, code::NONE);
    assert_eq!(produce_raw(c.addr(1), idempotent_batch(0)), (code::NONE, 3));
    assert_eq!(produce_raw(c.addr(1), idempotent_batch(1)), (code::NONE, 4));
    // Leadership moves; the producer, which never saw its answer for
    // sequence 1, sends it again to the new leader.
    c.set(|a| {
        a.leader = Some(2);
        a.leader_epoch = 2;
    });
    c.push();
    assert_eq!(
        produce_raw(c.addr(2), idempotent_batch(1)),
        (code::NONE, 4),
        "a duplicate, answered with its offset"
    );
    assert_eq!(c.log_end(2), 5, "not stored twice");
    assert_eq!(produce_raw(c.addr(2), idempotent_batch(2)), (code::NONE, 5));
}
