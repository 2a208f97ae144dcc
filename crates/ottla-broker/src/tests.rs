//! Broker tests that need the Rust side: connection limits with short
//! timeouts, and the group coordinator's state machine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::coordinator::group::{GroupCoordinator, JoinOutcome, JoinRequest, MemberRef, Pending};
use super::errors::code;
use super::{Broker, BrokerConfig};
use ottla_storage::store::Store;

fn start(config: BrokerConfig) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let broker = Broker::start(store, config).expect("start");
    (dir, broker)
}

fn api_versions_ok(addr: std::net::SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // size, api key 18, version 0, correlation 9, null client id
    let mut req = vec![0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 9, 0xff, 0xff];
    req[3] = (req.len() - 4) as u8;
    s.write_all(&req).expect("write");
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).is_ok() && body[..4] == [0, 0, 0, 9] && body[4..6] == [0, 0]
}

/// True if the peer closes within `within` (a read timeout means it did not).
fn closes(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn a_client_stopping_mid_frame_is_cut_off_after_the_frame_timeout() {
    let (_d, mut broker) = start(BrokerConfig {
        frame_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let addr = broker.local_addr();
    let mut stuck = TcpStream::connect(addr).expect("connect");
    stuck.write_all(&[0, 0, 0, 50, 0, 3]).expect("write");
    assert!(api_versions_ok(addr), "other clients are served meanwhile");
    assert!(closes(&mut stuck, Duration::from_secs(5)));
    // An idle connection (no frame started) is left alone.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_millis(600)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let r = idle.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "{r:?}"
    );
    broker.close();
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn an_oversized_frame_is_refused_before_reading_it() {
    let (_d, broker) = start(BrokerConfig {
        max_request_bytes: 1000,
        ..Default::default()
    });
    let mut s = TcpStream::connect(broker.local_addr()).expect("connect");
    s.write_all(&1001u32.to_be_bytes()).expect("write");
    assert!(closes(&mut s, Duration::from_secs(5)));
    assert!(api_versions_ok(broker.local_addr()));
}

fn join(c: &GroupCoordinator, member: &str, session_ms: i32) -> Pending<JoinOutcome> {
    c.join(JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        instance_id: None,
        client_id: "test".into(),
        host: "/127.0.0.1".into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: session_ms,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: false,
    })
}

fn outcome(p: Pending<JoinOutcome>) -> JoinOutcome {
    match p {
        Pending::Ready(o) => o,
        Pending::Wait(mut rx) => {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match rx.try_recv() {
                    Ok(o) => return o,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                        if Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("join never completed: {e:?}"),
                }
            }
        }
    }
}

fn coordinator() -> (tempfile::TempDir, GroupCoordinator) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    (dir, GroupCoordinator::new(store))
}

#[test]
fn members_join_sync_and_a_silent_member_expires() {
    let (_d, c) = coordinator();
    let a = outcome(join(&c, "", 200));
    assert_eq!(a.error, code::NONE);
    assert_eq!(a.leader, a.member_id, "the first member leads");
    assert_eq!(a.members.len(), 1);
    // A second member starts a rebalance; the first learns of it by heartbeat.
    let pending_b = join(&c, "", 200);
    assert_eq!(
        c.heartbeat("g", a.generation, MemberRef::dynamic(&a.member_id)),
        code::REBALANCE_IN_PROGRESS
    );
    let a2 = outcome(join(&c, &a.member_id, 200));
    let b = outcome(pending_b);
    assert_eq!(a2.generation, b.generation);
    assert_eq!(a2.members.len(), 2, "the leader sees both subscriptions");
    assert!(b.members.is_empty());
    // The follower's SyncGroup waits for the leader's assignment.
    let Pending::Wait(mut follower) =
        c.sync("g", b.generation, MemberRef::dynamic(&b.member_id), vec![])
    else {
        panic!("follower should wait for the leader");
    };
    let assignments = vec![
        (a2.member_id.clone(), Bytes::from_static(b"A")),
        (b.member_id.clone(), Bytes::from_static(b"B")),
    ];
    match c.sync(
        "g",
        a2.generation,
        MemberRef::dynamic(&a2.member_id),
        assignments,
    ) {
        Pending::Ready((e, mine)) => assert_eq!((e, &mine[..]), (code::NONE, &b"A"[..])),
        Pending::Wait(_) => panic!("the leader's sync completes the round"),
    }
    assert_eq!(
        follower.try_recv().expect("assigned"),
        (code::NONE, Bytes::from_static(b"B"))
    );
    assert_eq!(c.describe("g").map(|g| g.state), Some("Stable"));
    // b stops heartbeating; a keeps going. b's session runs out.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.tick();
        let hb = c.heartbeat("g", a2.generation, MemberRef::dynamic(&a2.member_id));
        if hb == code::REBALANCE_IN_PROGRESS {
            break;
        }
        assert!(Instant::now() < deadline, "b never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    // While the group prepares a rebalance, the current generation may still
    // commit what it processed.
    assert_eq!(
        c.check_commit("g", a2.generation, MemberRef::dynamic(&a2.member_id)),
        code::NONE
    );
    let a3 = outcome(join(&c, &a2.member_id, 200));
    assert_eq!(
        c.check_commit("g", a3.generation, MemberRef::dynamic(&a3.member_id)),
        code::REBALANCE_IN_PROGRESS,
        "no commits between join and sync"
    );
    let _ = c.sync(
        "g",
        a3.generation,
        MemberRef::dynamic(&a3.member_id),
        vec![],
    );
    assert_eq!(a3.members.len(), 1, "only a is left");
    assert_eq!(
        c.heartbeat("g", b.generation, MemberRef::dynamic(&b.member_id)),
        code::UNKNOWN_MEMBER_ID
    );
    // Offsets may be committed only by a current member of the current generation.
    assert_eq!(
        c.check_commit("g", a2.generation, MemberRef::dynamic(&a2.member_id)),
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        c.check_commit("g", a3.generation, MemberRef::dynamic(&a3.member_id)),
        code::NONE
    );
    assert_eq!(
        c.leave("g", &[MemberRef::dynamic(&a3.member_id)]),
        vec![code::NONE]
    );
    assert!(c.describe("g").is_none());
    assert_eq!(
        c.check_commit("g", -1, MemberRef::dynamic("")),
        code::NONE,
        "simple commit on an empty group"
    );
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let (_d, c) = coordinator();
    let a = outcome(join(&c, "", 300));
    let pending_b = join(&c, "", 300);
    // a never rejoins; the round completes without it once the timeout passes.
    let deadline = Instant::now() + Duration::from_secs(5);
    let b = loop {
        c.tick();
        if let Some(d) = c.describe("g") {
            if d.state == "CompletingRebalance" {
                break outcome(pending_b);
            }
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(b.leader, b.member_id);
    assert_eq!(b.members.len(), 1);
    assert_eq!(
        c.heartbeat("g", a.generation, MemberRef::dynamic(&a.member_id)),
        code::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn protocols_must_overlap_and_unknown_members_are_refused() {
    let (_d, c) = coordinator();
    let _a = outcome(join(&c, "", 10_000));
    let other = c.join(JoinRequest {
        group: "g".into(),
        member_id: String::new(),
        instance_id: None,
        client_id: "x".into(),
        host: String::new(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("roundrobin".into(), Bytes::new())],
        require_known_member_id: false,
    });
    assert_eq!(outcome(other).error, code::INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(
        outcome(join(&c, "ghost", 10_000)).error,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        outcome(join(&c, "", 0)).error,
        code::INVALID_SESSION_TIMEOUT
    );
}

#[test]
fn embedded_members_holding_the_claim_keep_the_broker_out() {
    use std::os::fd::AsRawFd;
    let (d, c) = coordinator();
    let door = d.path().join(".ottla").join("groups").join("g.door");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&door)
        .expect("claim file");
    // An embedded member's shared OFD lock on byte 0.
    // SAFETY: `flock` is plain data; all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = 0;
    fl.l_len = 1;
    // SAFETY: plain fcntl on a valid descriptor with an initialised struct.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(rc, 0);
    assert_eq!(
        outcome(join(&c, "", 10_000)).error,
        code::INCONSISTENT_GROUP_PROTOCOL
    );
    drop(f);
    let a = outcome(join(&c, "", 10_000));
    assert_eq!(a.error, code::NONE);
    // While the broker coordinates, an embedded member cannot take it shared.
    let g = std::fs::File::open(&door).expect("claim file");
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(g.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(rc, -1);
    // Once the group is empty here, the claim is free again.
    c.leave("g", &[MemberRef::dynamic(&a.member_id)]);
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(g.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(rc, 0);
}

fn api_versions_request(correlation: i32) -> Vec<u8> {
    // size, api key 18, version 0, correlation, null client id
    let mut req = vec![0, 0, 0, 10, 0, 18, 0, 0];
    req.extend_from_slice(&correlation.to_be_bytes());
    req.extend_from_slice(&[0xff, 0xff]);
    req
}

fn correlation_of_next_response(s: &mut TcpStream) -> i32 {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).expect("response body");
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

#[test]
fn pipelined_and_split_frames_are_answered_in_order() {
    let (_dir, broker) = start(BrokerConfig::default());
    let mut s = TcpStream::connect(broker.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    // Three whole requests in one write (one read on the broker's side)...
    let mut burst = Vec::new();
    for c in 1..=3 {
        burst.extend(api_versions_request(c));
    }
    // ...and a fourth whose size prefix arrives with them, the rest later.
    let fourth = api_versions_request(4);
    burst.extend_from_slice(&fourth[..2]);
    s.write_all(&burst).expect("write");
    for c in 1..=3 {
        assert_eq!(correlation_of_next_response(&mut s), c);
    }
    for b in &fourth[2..] {
        std::thread::sleep(Duration::from_millis(2));
        s.write_all(std::slice::from_ref(b)).expect("write");
    }
    assert_eq!(correlation_of_next_response(&mut s), 4);
    // A frame larger than one read chunk gets its own buffer; it is still
    // read whole (an unknown API: the broker closes only this connection).
    let mut big = vec![0u8; 4 + 200 * 1024];
    let n = (big.len() - 4) as u32;
    big[..4].copy_from_slice(&n.to_be_bytes());
    big[4..6].copy_from_slice(&999i16.to_be_bytes());
    s.write_all(&big).expect("write");
    assert!(closes(&mut s, Duration::from_secs(5)));
    assert!(api_versions_ok(broker.local_addr()));
}

/// A whole request frame: size, header v1, body.
fn request<T: kafka_protocol::protocol::Encodable>(
    api: kafka_protocol::messages::ApiKey,
    version: i16,
    correlation: i32,
    body: &T,
) -> Vec<u8> {
    use bytes::BufMut;
    use kafka_protocol::protocol::Encodable;
    let mut header = kafka_protocol::messages::RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = correlation;
    let mut buf = bytes::BytesMut::new();
    buf.put_i32(0);
    header
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let n = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&n.to_be_bytes());
    buf.to_vec()
}

/// The next response: (frame size, correlation id, body).
fn response<T: kafka_protocol::protocol::Decodable>(
    s: &mut TcpStream,
    api: kafka_protocol::messages::ApiKey,
    version: i16,
) -> (usize, i32, T) {
    use kafka_protocol::protocol::Decodable;
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let n = 4 + body.len();
    let header = kafka_protocol::messages::ResponseHeader::decode(
        &mut body,
        api.response_header_version(version),
    )
    .expect("response header");
    (
        n,
        header.correlation_id,
        T::decode(&mut body, version).expect("response body"),
    )
}

/// A Fetch v4 of `partitions` [(partition, offset)] of `topic`, in that order.
fn fetch_request(
    topic: &str,
    partitions: &[(i32, i64)],
    max_bytes: i32,
    partition_max_bytes: i32,
    max_wait_ms: i32,
) -> Vec<u8> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, TopicName};
    let mut t = FetchTopic::default();
    t.topic = TopicName(topic.to_string().into());
    for &(p, offset) in partitions {
        let mut fp = FetchPartition::default();
        fp.partition = p;
        fp.fetch_offset = offset;
        fp.partition_max_bytes = partition_max_bytes;
        t.partitions.push(fp);
    }
    let mut req = FetchRequest::default();
    req.replica_id = (-1).into();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = max_bytes;
    req.topics.push(t);
    request(ApiKey::Fetch, 4, 7, &req)
}

/// Sizes of the whole batches in `records` (panics on a partial one).
fn batch_sizes(records: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let len = &records[at + 8..at + 12];
        let n = 12 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        assert!(at + n <= records.len(), "a partial batch");
        out.push(n);
        at += n;
    }
    out
}

#[test]
fn only_the_first_batch_of_a_fetch_response_may_exceed_its_limits() {
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    use ottla_client::producer::{Producer, ProducerConfig};
    const PARTITIONS: u32 = 4;
    const VALUE: usize = 400_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let p = Producer::new(
        store.clone(),
        ProducerConfig {
            num_partitions: PARTITIONS,
            ..Default::default()
        },
    )
    .expect("producer");
    // Three batches of one 400 kB record in each partition.
    let value = vec![7u8; VALUE];
    for part in 0..PARTITIONS {
        for _ in 0..3 {
            p.send("big", None, Some(&value), &[], Some(part), None)
                .expect("send");
            for c in p.flush() {
                assert!(c.error().is_none(), "{:?}", c.error());
                c.run();
            }
        }
    }
    let broker = Broker::start(store, BrokerConfig::default()).expect("start");
    let mut s = TcpStream::connect(broker.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut fetch = |parts: &[(i32, i64)], max_bytes: i32, partition_max: i32| {
        s.write_all(&fetch_request("big", parts, max_bytes, partition_max, 0))
            .expect("write");
        let (size, _, r): (usize, i32, FetchResponse) = response(&mut s, ApiKey::Fetch, 4);
        let got: Vec<(i32, usize, usize)> = r.responses[0]
            .partitions
            .iter()
            .map(|pd| {
                assert_eq!(pd.error_code, code::NONE);
                let records = pd.records.clone().unwrap_or_default();
                let sizes = batch_sizes(&records);
                (pd.partition_index, sizes.len(), records.len())
            })
            .collect();
        (size, got)
    };
    let all: Vec<(i32, i64)> = (0..PARTITIONS as i32).map(|p| (p, 0)).collect();
    let batches = |got: &[(i32, usize, usize)]| -> Vec<(i32, usize)> {
        got.iter().map(|&(p, n, _)| (p, n)).collect()
    };

    // Two batches fit the first partition; the others' next batch does not
    // fit what is left of the response.
    let (size, got) = fetch(&all, 1_000_000, 1_000_000);
    assert_eq!(batches(&got), [(0, 2), (1, 0), (2, 0), (3, 0)]);
    assert!(got.iter().map(|g| g.2).sum::<usize>() <= 1_000_000);
    assert!(size <= 1_000_000 + 1024, "{size}");
    // A partition limit below one batch: only the response's first batch exceeds it.
    let (_, got) = fetch(&all, 50_000_000, 100_000);
    assert_eq!(batches(&got), [(0, 1), (1, 0), (2, 0), (3, 0)]);
    // A response limit below one batch: the first batch alone, whole.
    let (_, got) = fetch(&all, 100_000, 1_000_000);
    assert_eq!(batches(&got), [(0, 1), (1, 0), (2, 0), (3, 0)]);
    // The first partition with records, in request order, gets the exception.
    let (_, got) = fetch(&[(0, 3), (3, 0), (1, 0)], 100_000, 100_000);
    assert_eq!(batches(&got), [(0, 0), (3, 1), (1, 0)]);
}

#[test]
fn a_stopping_broker_answers_the_request_in_hand_then_closes() {
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    let (_dir, mut broker) = start(BrokerConfig::default());
    // A long poll on an empty partition: in the broker's hands once parked.
    let (mut s, shared) = parked_fetch(&broker);
    drop(shared);
    // Answered (with nothing), not cut off, then the connection closes.
    broker.close();
    let (_, correlation, r): (usize, i32, FetchResponse) = response(&mut s, ApiKey::Fetch, 4);
    assert_eq!(correlation, 7);
    assert_eq!(r.responses[0].partitions[0].error_code, code::NONE);
    assert!(closes(&mut s, Duration::from_secs(5)));
}

/// A Fetch of an empty partition, parked: the client's socket, and the
/// broker's shared state.
fn parked_fetch(broker: &Broker) -> (TcpStream, Arc<super::Shared>) {
    let mut s = TcpStream::connect(broker.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let shared = broker.shared.clone().expect("running");
    shared
        .store
        .topic_or_create("idle", true, 1)
        .expect("topic");
    s.write_all(&fetch_request(
        "idle",
        &[(0, 0)],
        1_000_000,
        1_000_000,
        60_000,
    ))
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.replicas.waiting_fetches() == 0 {
        assert!(Instant::now() < deadline, "the fetch never parked");
        std::thread::sleep(Duration::from_millis(5));
    }
    (s, shared)
}

#[test]
fn a_closed_connection_drops_its_parked_fetch_at_once() {
    let (_dir, broker) = start(BrokerConfig::default());
    let (s, shared) = parked_fetch(&broker);
    drop(s);
    // Not after its max_wait_ms (a minute).
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.replicas.waiting_fetches() != 0 {
        assert!(
            Instant::now() < deadline,
            "a fetch of a closed connection stayed parked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(api_versions_ok(broker.local_addr()));
}

#[test]
fn requests_pipelined_behind_a_parked_fetch_are_answered_after_it() {
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    let (_dir, broker) = start(BrokerConfig::default());
    let (mut s, shared) = parked_fetch(&broker);
    // Read ahead by the broker while the fetch waits, kept for later.
    s.write_all(&api_versions_request(21)).expect("write");
    s.write_all(&api_versions_request(22)[..5]).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&api_versions_request(22)[5..]).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        shared.replicas.waiting_fetches(),
        1,
        "the fetch was dropped"
    );
    let p = ottla_client::producer::Producer::new(shared.store.clone(), Default::default())
        .expect("producer");
    p.send("idle", None, Some(b"v"), &[], Some(0), None)
        .expect("send");
    for c in p.flush() {
        assert!(c.error().is_none(), "{:?}", c.error());
        c.run();
    }
    let (_, correlation, r): (usize, i32, FetchResponse) = response(&mut s, ApiKey::Fetch, 4);
    assert_eq!(correlation, 7);
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|b| !b.is_empty()));
    assert_eq!(correlation_of_next_response(&mut s), 21);
    assert_eq!(correlation_of_next_response(&mut s), 22);
}

/// Run one API handler on the broker's runtime (handlers use
/// `block_in_place`, which needs a worker thread).
fn on_broker<T: Send + 'static>(
    broker: &Broker,
    f: impl FnOnce(Arc<super::Shared>) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
        + Send
        + 'static,
) -> T {
    let shared = broker.shared.clone().expect("running");
    let rt = broker.runtime.as_ref().expect("runtime");
    rt.block_on(rt.spawn(f(shared))).expect("handler")
}

fn session() -> super::dispatch::Session {
    super::dispatch::Session::new(([127, 0, 0, 1], 0).into())
}

fn simple_commit(broker: &Broker, group: &str, offset: i64) -> i16 {
    simple_commit_with(broker, group, offset, "")
}

fn simple_commit_with(broker: &Broker, group: &str, offset: i64, metadata: &str) -> i16 {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_metadata = Some(super::api::s(metadata));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = super::api::topic_name("t");
    t.partitions = vec![p];
    let mut req = kafka_protocol::messages::OffsetCommitRequest::default();
    req.group_id = super::api::s(group).into();
    req.generation_id_or_member_epoch = -1;
    req.topics = vec![t];
    let resp = on_broker(broker, move |shared| {
        Box::pin(async move { super::api::offsets::commit(&shared, &mut session(), req, 8).await })
    });
    resp.topics[0].partitions[0].error_code
}

/// Kafka answers a commit from outside an active group with
/// UNKNOWN_MEMBER_ID; a group whose members are embedded is active too.
#[test]
fn a_simple_commit_is_refused_while_embedded_members_are_live() {
    use ottla_client::consumer::{Consumer, ConsumerConfig};
    let (dir, broker) = start(BrokerConfig::default());
    let store = Store::open(dir.path()).expect("store");
    store.create_topic("t", 1, &[]).expect("create");
    let member = Consumer::new(
        store.clone(),
        ConsumerConfig {
            group_id: Some("g".into()),
            enable_auto_commit: false,
            ..Default::default()
        },
    )
    .expect("consumer");
    member.subscribe(&["t".into()]).expect("join");
    member
        .commit(Some(&[("t".into(), 0, 0, String::new())]))
        .expect("member commits");
    assert_eq!(simple_commit(&broker, "g", 5), code::UNKNOWN_MEMBER_ID);
    let committed = || {
        store
            .offsets()
            .and_then(|o| o.committed("g", "t", 0))
            .expect("committed")
            .map(|c| c.offset)
    };
    assert_eq!(committed(), Some(0));
    member.close(false).expect("leave");
    assert_eq!(simple_commit(&broker, "g", 5), code::NONE);
    assert_eq!(committed(), Some(5));
}

/// Internal topics cannot be deleted, created by users, or given a config
/// that drops their records; `__`-names that are not Kafka's internal ones
/// are ordinary topics.
#[test]
fn internal_topics_are_protected_on_the_wire() {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{AlterConfigsRequest, CreateTopicsRequest, DeleteTopicsRequest};
    let (dir, broker) = start(BrokerConfig::default());
    let store = Store::open(dir.path()).expect("store");
    store.offsets().expect("offsets topic");
    let delete = |name: &'static str| {
        let mut req = DeleteTopicsRequest::default();
        req.topic_names = vec![super::api::topic_name(name)];
        on_broker(&broker, move |shared| {
            Box::pin(
                async move { super::api::topics::delete(&shared, &mut session(), req, 4).await },
            )
        })
        .responses[0]
            .error_code
    };
    let create = |name: &'static str| {
        let mut t = CreatableTopic::default();
        t.name = super::api::topic_name(name);
        t.num_partitions = 1;
        t.replication_factor = 1;
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        on_broker(&broker, move |shared| {
            Box::pin(
                async move { super::api::topics::create(&shared, &mut session(), req, 4).await },
            )
        })
        .topics[0]
            .error_code
    };
    assert_eq!(delete("__consumer_offsets"), code::INVALID_TOPIC_EXCEPTION);
    assert_eq!(create("__transaction_state"), code::INVALID_TOPIC_EXCEPTION);
    assert_eq!(create("__evil"), code::NONE);
    assert_eq!(delete("__evil"), code::NONE);
    for (k, v) in [("cleanup.policy", "delete"), ("retention.ms", "1")] {
        let mut c = AlterableConfig::default();
        c.name = super::api::s(k);
        c.value = Some(super::api::s(v));
        let mut r = AlterConfigsResource::default();
        r.resource_type = 2;
        r.resource_name = super::api::s("__consumer_offsets");
        r.configs = vec![c];
        let mut req = AlterConfigsRequest::default();
        req.resources = vec![r];
        let resp = on_broker(&broker, move |shared| {
            Box::pin(
                async move { super::api::configs::alter(&shared, &mut session(), req, 1).await },
            )
        });
        assert_eq!(
            resp.responses[0].error_code,
            code::INVALID_CONFIG,
            "{k}={v}"
        );
    }
    let t = store.require_topic("__consumer_offsets").expect("kept");
    assert_eq!(
        t.config.cleanup_policy,
        ottla_storage::config::CleanupPolicy::Compact
    );
}

/// Kafka checks a commit's metadata size (OFFSET_METADATA_TOO_LARGE), not
/// its offset: -5 and 2^62 are stored as given.
#[test]
fn commits_are_checked_as_kafka_checks_them() {
    let (dir, broker) = start(BrokerConfig::default());
    let store = Store::open(dir.path()).expect("store");
    store.create_topic("t", 1, &[]).expect("create");
    assert_eq!(
        simple_commit_with(&broker, "g", 1, &"m".repeat(4097)),
        code::OFFSET_METADATA_TOO_LARGE
    );
    let committed = || {
        store
            .offsets()
            .and_then(|o| o.committed("g", "t", 0))
            .expect("committed")
            .map(|c| c.offset)
    };
    assert_eq!(committed(), None);
    for offset in [-5, 1 << 62] {
        assert_eq!(simple_commit(&broker, "g", offset), code::NONE);
        assert_eq!(committed(), Some(offset));
    }
}

/// Replica placements no client library sends, answered as Kafka's
/// controller answers them; nothing is created.
#[test]
fn hostile_replica_placements_are_refused_as_kafka_refuses_them() {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::{BrokerId, CreateTopicsRequest};
    let (dir, broker) = start(BrokerConfig::default());
    let create = |name: &str, partitions: i32, rf: i16, lists: &[(i32, &[i32])]| {
        let mut t = CreatableTopic::default();
        t.name = super::api::topic_name(name);
        t.num_partitions = partitions;
        t.replication_factor = rf;
        t.assignments = lists
            .iter()
            .map(|(p, ids)| {
                let mut a = CreatableReplicaAssignment::default();
                a.partition_index = *p;
                a.broker_ids = ids.iter().map(|i| BrokerId(*i)).collect();
                a
            })
            .collect();
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        let r = on_broker(&broker, move |shared| {
            Box::pin(
                async move { super::api::topics::create(&shared, &mut session(), req, 5).await },
            )
        });
        let t = &r.topics[0];
        (
            t.error_code,
            t.error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default(),
        )
    };
    let refused = [
        (
            create("a", 1, i16::MIN, &[]),
            code::INVALID_REPLICATION_FACTOR,
            "larger than 0",
        ),
        (
            create("b", 1, i16::MAX, &[]),
            code::INVALID_REPLICATION_FACTOR,
            "of 32767 cannot",
        ),
        (
            create("c", 0, 1, &[]),
            code::INVALID_PARTITIONS,
            "non-positive",
        ),
        (
            create("d", -1, 1, &[(0, &[0])]),
            code::INVALID_REQUEST,
            "replication factor",
        ),
        (
            create("e", 1, -1, &[(0, &[0])]),
            code::INVALID_REQUEST,
            "numPartitions",
        ),
        (
            create("f", -1, -1, &[(0, &[0]), (0, &[0])]),
            code::INVALID_REPLICA_ASSIGNMENT,
            "multiple",
        ),
        (
            create("g", -1, -1, &[(0, &[])]),
            code::INVALID_REPLICA_ASSIGNMENT,
            "empty replica list",
        ),
        (
            create("h", -1, -1, &[(0, &[0, 0])]),
            code::INVALID_REPLICA_ASSIGNMENT,
            "more than once",
        ),
        (
            create("i", -1, -1, &[(0, &[-1])]),
            code::INVALID_REPLICA_ASSIGNMENT,
            "broker -1",
        ),
        (
            create("j", -1, -1, &[(0, &[0]), (2, &[0])]),
            code::INVALID_REPLICA_ASSIGNMENT,
            "consecutive",
        ),
    ];
    for ((c, message), want, text) in refused {
        assert_eq!(c, want, "{message}");
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
    assert_eq!(create("k", -1, -1, &[(1, &[0]), (0, &[0])]).0, code::NONE);
    // Kafka checks existence before placement: "create if absent" with a
    // replication factor of 3 learns that the topic is there.
    assert_eq!(create("k", 1, 3, &[]).0, code::TOPIC_ALREADY_EXISTS);
    assert_eq!(
        create("bad name!", 1, 3, &[]).0,
        code::INVALID_TOPIC_EXCEPTION
    );
    let store = Store::open(dir.path()).expect("store");
    assert_eq!(
        store.list_topics(false).expect("topics"),
        vec!["k".to_string()]
    );
}
