//! The follower's fetcher (Kafka's `ReplicaFetcherThread`): one tokio task
//! per leader this broker follows partitions of, fetching them all with one
//! Fetch request at a time over one connection.
//!
//! Each round: partitions that just became followers (a new leader or
//! leader epoch) are first truncated to where their log and the leader's
//! agree, by OffsetForLeaderEpoch (KIP-101/KIP-279: the follower sends the
//! epoch of its last record, the leader answers where that epoch (or the
//! largest one it knows below it) ends on its log, and the follower
//! truncates to the lower of that and its own end of the epoch). No record
//! is fetched into a log before its truncation is done. Then a Fetch (v12:
//! `replica_id` = this broker, `last_fetched_epoch` = the epoch of the last
//! record) from each partition's log end; the answer is applied per
//! partition:
//! * records: appended as they are (`PartitionLog::append_as_follower`,
//!   which refuses anything that does not start at the log end);
//! * a diverging epoch (the leader's check of `last_fetched_epoch`):
//!   truncate to the lower of the leader's end of that epoch and ours;
//! * OFFSET_OUT_OF_RANGE: below the leader's log start, start the log again
//!   there; past its end, truncate to it; otherwise (the leader knows no
//!   epoch of our last record) truncate again by epoch;
//! * the high watermark: the leader's, never above this log's end; the log
//!   start: the leader's (moved by DeleteRecords), up to the high watermark;
//! * NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH and the like: back
//!   off, the controller's next assignment will say what changed.
//!
//! A connection that fails is dropped and made again after a back-off; a
//! leader that moved is the assignment's business (`apply_assignments`
//! moves the partition to another fetcher).
//!
//! A leader whose connection was reset or refused (its process is gone, as
//! after `kill -9`) is noted in [`PeerReach`] until a request to it
//! succeeds again: Metadata answers its partitions LEADER_NOT_AVAILABLE for
//! a while (see [`PeerReach::suspected`]), so clients keep asking for the
//! new leader instead of waiting on a broker that is not there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId as WireBrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use super::idempotence::ProducerTable;
use super::partition_state::{BrokerId, PeerDirectory};
use crate::errors::{code, debug};
use ottla_storage::error::Error;
use ottla_storage::log::PartitionLog;

/// The Fetch version followers send: the first with `last_fetched_epoch`
/// and diverging epochs (KIP-320/595), topics still by name.
pub const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch v4 (flexible; `replica_id` since v3).
pub const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// How long the leader may hold a follower's Fetch (Kafka's
/// `replica.fetch.wait.max.ms`).
pub const FETCH_MAX_WAIT_MS: i32 = 500;
/// Bytes per partition per Fetch (Kafka's `replica.fetch.max.bytes`).
pub const FETCH_PARTITION_MAX_BYTES: i32 = 1 << 20;
/// Bytes per Fetch response (Kafka's `replica.fetch.response.max.bytes`).
pub const FETCH_RESPONSE_MAX_BYTES: i32 = 10 << 20;
/// The pause after an error before the next round (Kafka's
/// `replica.fetch.backoff.ms` is 1000; shorter here, for failover time).
pub const BACKOFF: Duration = Duration::from_millis(100);
/// The most a request may take before the connection is given up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response frame accepted from a leader.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A client connection to another broker: Kafka frames out, responses in,
/// one request at a time; over TLS and authenticated with SASL when the
/// inter-broker listener is (`auth::peer::peer_security`).
pub struct PeerConnection {
    stream: Box<dyn crate::auth::peer::Io>,
    correlation: i32,
    client_id: StrBytes,
}

/// The last warning about a peer refusing this broker (`warn_limited`).
static REFUSED_WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PeerConnection {
    /// Connect to `addr`, from `source` when given, with the process's
    /// inter-broker security: TLS (the broker's certificate as the client
    /// certificate, the CA as trust) and SASL as the inter-broker listener
    /// asks. An authentication failure is an error whose message says why
    /// (and a warning on stderr, at most every 5 s).
    pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<Self> {
        let security = crate::auth::peer::peer_security();
        let tcp = Self::tcp(addr, source).await?;
        let stream: Box<dyn crate::auth::peer::Io> =
            match security.as_ref().and_then(|s| s.tls.as_ref()) {
                Some(tls) => crate::auth::peer::tls_connect(tcp, tls, &addr.ip().to_string())
                    .await
                    .map_err(|e| refused(addr, &format!("TLS: {e}")))?,
                None => Box::new(tcp),
            };
        let mut c = PeerConnection {
            stream,
            correlation: 0,
            client_id: StrBytes::from_static_str("ottla-replica-fetcher"),
        };
        if let Some(sasl) = security.as_ref().and_then(|s| s.sasl.as_ref()) {
            c.authenticate(sasl)
                .await
                .map_err(|e| refused(addr, &format!("SASL {}: {e}", sasl.mechanism)))?;
        }
        Ok(c)
    }

    /// SaslHandshake v1 and SaslAuthenticate v2 as a Kafka client does.
    async fn authenticate(
        &mut self,
        sasl: &crate::auth::peer::SaslCredentials,
    ) -> Result<(), String> {
        use kafka_protocol::messages::{
            SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
            SaslHandshakeResponse,
        };
        let mut hs = SaslHandshakeRequest::default();
        hs.mechanism = StrBytes::from_string(sasl.mechanism.clone());
        let r: SaslHandshakeResponse = self
            .call(ApiKey::SaslHandshake, 1, &hs)
            .await
            .map_err(|e| e.to_string())?;
        if r.error_code != code::NONE {
            return Err(format!(
                "mechanism refused (error {}; the listener offers {:?})",
                r.error_code,
                r.mechanisms.iter().map(|m| m.as_str()).collect::<Vec<_>>()
            ));
        }
        let step = |bytes: Vec<u8>| {
            let mut a = SaslAuthenticateRequest::default();
            a.auth_bytes = Bytes::from(bytes);
            a
        };
        let check = |r: &SaslAuthenticateResponse| {
            if r.error_code == code::NONE {
                Ok(())
            } else {
                Err(format!(
                    "authentication failed (error {}): {}",
                    r.error_code,
                    r.error_message.as_deref().unwrap_or("")
                ))
            }
        };
        if sasl.mechanism == "PLAIN" {
            let token = format!("\0{}\0{}", sasl.username, sasl.password).into_bytes();
            let r: SaslAuthenticateResponse = self
                .call(ApiKey::SaslAuthenticate, 2, &step(token))
                .await
                .map_err(|e| e.to_string())?;
            return check(&r);
        }
        let mech = crate::auth::credentials::ScramMechanism::parse(&sasl.mechanism)
            .ok_or_else(|| format!("unknown mechanism {}", sasl.mechanism))?;
        let mut client = crate::auth::peer::ScramClient::new(mech, &sasl.username, &sasl.password)?;
        let r: SaslAuthenticateResponse = self
            .call(ApiKey::SaslAuthenticate, 2, &step(client.first()))
            .await
            .map_err(|e| e.to_string())?;
        check(&r)?;
        let fin = client.finish(&r.auth_bytes)?;
        let r: SaslAuthenticateResponse = self
            .call(ApiKey::SaslAuthenticate, 2, &step(fin))
            .await
            .map_err(|e| e.to_string())?;
        check(&r)?;
        client.verify(&r.auth_bytes)
    }

    /// A TCP connection to `addr`, from `source` when given.
    async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Send `req` as `api` version `version` and read its response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.call_inner(api, version, req))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    async fn call_inner<Req: Encodable, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> std::io::Result<Resp> {
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        self.correlation = self.correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(self.client_id.clone());
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .map_err(|e| bad(format!("encode header: {e}")))?;
        req.encode(&mut buf, version)
            .map_err(|e| bad(format!("encode {api:?}: {e}")))?;
        let n = i32::try_from(buf.len() - 4).map_err(|_| bad("request too large".into()))?;
        buf[..4].copy_from_slice(&n.to_be_bytes());
        self.stream.write_all(&buf).await?;
        let size = self.stream.read_u32().await? as usize;
        if size > MAX_RESPONSE_BYTES {
            return Err(bad(format!("response of {size} bytes")));
        }
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let h = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| bad(format!("decode response header: {e}")))?;
        if h.correlation_id != self.correlation {
            return Err(bad(format!(
                "correlation id {} where {} was sent",
                h.correlation_id, self.correlation
            )));
        }
        let resp =
            Resp::decode(&mut body, version).map_err(|e| bad(format!("decode {api:?}: {e}")))?;
        if body.has_remaining() {
            debug(&format!(
                "{} bytes after a {api:?} response",
                body.remaining()
            ));
        }
        Ok(resp)
    }
}

/// A peer refused this broker: the error, said on stderr too (limited).
fn refused(addr: SocketAddr, why: &str) -> std::io::Error {
    let msg = format!("cannot connect to the broker at {addr} as the inter-broker client: {why}");
    crate::auth::peer::warn_limited(&REFUSED_WARNED, &msg);
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)
}

/// The leaders this broker's fetchers found gone: since when each has
/// refused or reset the connection, until a request to it succeeds again.
#[derive(Default)]
pub struct PeerReach {
    gone: Mutex<HashMap<BrokerId, Instant>>,
}

impl PeerReach {
    /// A request to `peer` failed with `e`: noted when the error says the
    /// peer's process is not there (refused, reset, closed), not for a
    /// timeout or a protocol error (a slow or confused peer is alive).
    pub fn failed(&self, peer: BrokerId, e: &std::io::Error, now: Instant) {
        if peer_gone(e.kind()) {
            self.gone.lock().entry(peer).or_insert(now);
        }
    }

    /// A request to `peer` succeeded.
    pub fn reached(&self, peer: BrokerId) {
        self.gone.lock().remove(&peer);
    }

    /// Whether `peer` is taken for gone at `now`: its connection failed so,
    /// and not longer ago than `window` (the controller fences a broker
    /// that stopped heartbeating within about a session: past that, the
    /// peer is alive and only unreachable from here, and its leaderships
    /// are answered as the metadata has them again).
    pub fn suspected(&self, peer: BrokerId, now: Instant, window: Duration) -> bool {
        self.gone
            .lock()
            .get(&peer)
            .is_some_and(|since| now.saturating_duration_since(*since) <= window)
    }
}

/// Whether an I/O error of a connection to a peer says its process is gone.
pub fn peer_gone(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// A partition a fetcher fetches.
pub struct Followed {
    pub topic: String,
    pub partition: i32,
    pub log: Arc<PartitionLog>,
    pub leader_epoch: i32,
    /// Set on becoming a follower: truncate (OffsetForLeaderEpoch) before
    /// fetching.
    pub needs_truncation: AtomicBool,
    /// False once the partition left this fetcher (a new role or epoch):
    /// held while an answer is applied, so nothing fetched lands after.
    pub active: Mutex<bool>,
}

impl Followed {
    /// Stop applying answers for this partition; waits for one being
    /// applied now.
    pub fn deactivate(&self) {
        *self.active.lock() = false;
    }
}

pub type FollowedSet = Arc<Mutex<HashMap<(String, i32), Arc<Followed>>>>;

/// What a fetcher task needs of the cluster.
pub struct FetcherContext {
    pub local: BrokerId,
    pub leader: BrokerId,
    pub peers: Arc<dyn PeerDirectory>,
    pub source_ip: Option<IpAddr>,
    pub partitions: FollowedSet,
    /// The broker's producer state: a follower records the idempotent
    /// producers' batches it copies (as Kafka's follower does), so that
    /// as leader it recognises their retries.
    pub producers: Arc<ProducerTable>,
    /// How long the leader may hold a Fetch: `FETCH_MAX_WAIT_MS`, or half
    /// the lag time if that is shorter (a follower parked longer than the
    /// lag time would look out of sync the moment a record arrives).
    pub max_wait_ms: i32,
    /// Where a leader found gone is noted (see [`PeerReach`]).
    pub reach: Arc<PeerReach>,
}

/// The fetcher's task: runs until `stop` turns true (or is dropped).
pub async fn run(ctx: FetcherContext, mut stop: watch::Receiver<bool>) {
    let mut conn: Option<PeerConnection> = None;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let parts: Vec<Arc<Followed>> = ctx.partitions.lock().values().cloned().collect();
        let pause = if parts.is_empty() {
            true
        } else {
            match round(&ctx, &mut conn, &parts).await {
                Ok(progress) => {
                    ctx.reach.reached(ctx.leader);
                    !progress
                }
                Err(e) => {
                    ctx.reach.failed(ctx.leader, &e, Instant::now());
                    debug(&format!(
                        "replica fetcher {} -> {}: {e}",
                        ctx.local, ctx.leader
                    ));
                    conn = None;
                    true
                }
            }
        };
        if pause {
            tokio::select! {
                _ = tokio::time::sleep(BACKOFF) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// One round: truncations due, then one Fetch. `Ok(false)` when every
/// partition answered with an error (the caller backs off).
async fn round(
    ctx: &FetcherContext,
    conn: &mut Option<PeerConnection>,
    parts: &[Arc<Followed>],
) -> std::io::Result<bool> {
    let c = match conn {
        Some(c) => c,
        None => {
            let addr = ctx.peers.address(ctx.leader).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no address for broker {}", ctx.leader),
                )
            })?;
            conn.insert(PeerConnection::connect(addr, ctx.source_ip).await?)
        }
    };
    let due: Vec<&Arc<Followed>> = parts
        .iter()
        .filter(|p| p.needs_truncation.load(Ordering::Acquire))
        .collect();
    if !due.is_empty() {
        truncate_by_epoch(c, ctx.local, &ctx.producers, &due).await?;
    }
    let ready: Vec<&Arc<Followed>> = parts
        .iter()
        .filter(|p| !p.needs_truncation.load(Ordering::Acquire))
        .collect();
    if ready.is_empty() {
        return Ok(false);
    }
    let req = crate::blocking(|| fetch_request(ctx.local, ctx.max_wait_ms, &ready));
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_VERSION, &req).await?;
    let mut progress = false;
    crate::blocking(|| {
        for t in &resp.responses {
            for pd in &t.partitions {
                let key = (t.topic.as_str().to_string(), pd.partition_index);
                let Some(p) = ready.iter().find(|p| (p.topic.clone(), p.partition) == key) else {
                    continue;
                };
                let active = p.active.lock();
                if !*active {
                    continue;
                }
                match apply(p, pd, &ctx.producers) {
                    Ok(ok) => progress |= ok,
                    Err(e) => debug(&format!(
                        "replica fetcher {}: {}-{}: {e}",
                        ctx.local, p.topic, p.partition
                    )),
                }
            }
        }
    });
    Ok(progress)
}

/// The epoch of the last record of `log`, -1 if it has none (what
/// `last_fetched_epoch` and OffsetForLeaderEpoch send: Kafka's follower
/// cache holds only epochs of records it appended).
fn last_record_epoch(log: &PartitionLog) -> Result<i32, Error> {
    let epochs = log.leader_epochs()?;
    if epochs.log_end_offset <= epochs.log_start_offset {
        return Ok(-1);
    }
    Ok(epochs
        .epoch_for_offset(epochs.log_end_offset - 1)
        .unwrap_or(-1))
}

fn fetch_request(local: BrokerId, max_wait_ms: i32, parts: &[&Arc<Followed>]) -> FetchRequest {
    let mut req = FetchRequest::default();
    req.replica_id = WireBrokerId(local);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = FETCH_RESPONSE_MAX_BYTES;
    req.session_id = 0;
    req.session_epoch = -1;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for p in parts {
        let Ok(offset) = p.log.log_end_offset() else {
            continue;
        };
        let mut fp = FetchPartition::default();
        fp.partition = p.partition;
        fp.current_leader_epoch = p.leader_epoch;
        fp.fetch_offset = offset;
        fp.last_fetched_epoch = last_record_epoch(&p.log).unwrap_or(-1);
        fp.log_start_offset = p.log.offsets().map_or(-1, |(start, _)| start);
        fp.partition_max_bytes = FETCH_PARTITION_MAX_BYTES;
        match topics.iter_mut().find(|t| t.topic.as_str() == p.topic) {
            Some(t) => t.partitions.push(fp),
            None => {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(p.topic.clone()));
                t.partitions.push(fp);
                topics.push(t);
            }
        }
    }
    req.topics = topics;
    req
}

/// Apply one partition's answer; `Ok(true)` when it was not an error.
fn apply(p: &Followed, pd: &PartitionData, producers: &ProducerTable) -> Result<bool, Error> {
    let log = &p.log;
    match pd.error_code {
        code::NONE => {}
        code::OFFSET_OUT_OF_RANGE => {
            // Our broker answers an out-of-range fetch with its log start
            // and log end (in the high watermark's field).
            let end = log.log_end_offset()?;
            if pd.log_start_offset >= 0 && end < pd.log_start_offset {
                log.truncate_fully_and_start_at(pd.log_start_offset)?;
                forget_producers(producers, p);
            } else if pd.high_watermark >= 0 && end > pd.high_watermark {
                log.truncate_to(pd.high_watermark)?;
                forget_producers(producers, p);
            } else {
                // The leader knows no epoch of our last record: ask again
                // with OffsetForLeaderEpoch (which falls back to the high
                // watermark, as Kafka's follower does).
                p.needs_truncation.store(true, Ordering::Release);
            }
            return Ok(false);
        }
        _ => return Ok(false),
    }
    if pd.diverging_epoch.epoch >= 0 && pd.diverging_epoch.end_offset >= 0 {
        let (epoch, ours) = log
            .leader_epochs()?
            .end_offset_for(pd.diverging_epoch.epoch);
        let target = if epoch >= 0 && ours >= 0 {
            ours.min(pd.diverging_epoch.end_offset)
        } else {
            pd.diverging_epoch.end_offset
        };
        log.truncate_to(target)?;
        forget_producers(producers, p);
        return Ok(true);
    }
    if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
        // Whole batches only: a response cut at its byte limit may end in
        // part of one (Kafka's leaders send such), fetched again next time.
        let whole = whole_batches(records);
        match log.append_as_follower(&records[..whole]) {
            Ok(_) => record_producers(producers, p, &records[..whole]),
            // A stale answer (the log moved meanwhile): fetched again.
            Err(Error::UnexpectedAppendOffset { .. }) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    if pd.high_watermark >= 0 {
        let end = log.log_end_offset()?;
        let hw = pd.high_watermark.min(end);
        log.set_high_watermark(Some(hw));
        // The leader's log start (its DeleteRecords), as far as this log
        // has committed records: Kafka's follower does the same.
        let (start, _) = log.offsets()?;
        if pd.log_start_offset > start && start < hw {
            if let Err(e) = log.delete_records(pd.log_start_offset.min(hw)) {
                debug(&format!("{}-{}: log start: {e}", p.topic, p.partition));
            }
        }
    }
    Ok(true)
}

/// The producer state of `batches` (just appended), remembered as the
/// leader remembered it (idempotent sequences, open transactions, markers),
/// when this broker has loaded the partition's producers; otherwise the
/// first use rebuilds them from the log, these batches included.
fn record_producers(producers: &ProducerTable, p: &Followed, batches: &[u8]) {
    let Ok(partition) = u32::try_from(p.partition) else {
        return;
    };
    let Some(table) = producers.loaded(&p.topic, partition) else {
        return;
    };
    let mut table = table.lock();
    for (h, batch) in ottla_record::batch::Batches::new(batches) {
        table.state.replay(&h, batch);
    }
}

/// After a truncation the partition's producer state may describe batches
/// that are gone: forgotten, to be rebuilt from the log on next use.
fn forget_producers(producers: &ProducerTable, p: &Followed) {
    if let Ok(partition) = u32::try_from(p.partition) {
        producers.forget_partition(&p.topic, partition);
    }
}

/// The length of the whole batches at the start of `records`.
fn whole_batches(records: &[u8]) -> usize {
    let mut at = 0usize;
    while let Some(total) = ottla_record::batch::peek_total_size(&records[at..]) {
        let Ok(total) = usize::try_from(total) else {
            break;
        };
        if total == 0 || at + total > records.len() {
            break;
        }
        at += total;
    }
    at
}

/// Truncate `parts` to where they agree with the leader's log
/// (OffsetForLeaderEpoch); each done is marked so.
async fn truncate_by_epoch(
    c: &mut PeerConnection,
    local: BrokerId,
    producers: &ProducerTable,
    parts: &[&Arc<Followed>],
) -> std::io::Result<()> {
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = WireBrokerId(local);
    let mut asked: Vec<(&Arc<Followed>, i32)> = Vec::new();
    for p in parts {
        let epoch = match crate::blocking(|| last_record_epoch(&p.log)) {
            Ok(e) => e,
            Err(_) => continue,
        };
        if epoch < 0 {
            // Nothing on the log: nothing to disagree about.
            p.needs_truncation.store(false, Ordering::Release);
            continue;
        }
        let mut op = OffsetForLeaderPartition::default();
        op.partition = p.partition;
        op.current_leader_epoch = p.leader_epoch;
        op.leader_epoch = epoch;
        match req.topics.iter_mut().find(|t| t.topic.as_str() == p.topic) {
            Some(t) => t.partitions.push(op),
            None => {
                let mut t = OffsetForLeaderTopic::default();
                t.topic = TopicName(StrBytes::from_string(p.topic.clone()));
                t.partitions.push(op);
                req.topics.push(t);
            }
        }
        asked.push((p, epoch));
    }
    if asked.is_empty() {
        return Ok(());
    }
    let resp: OffsetForLeaderEpochResponse = c
        .call(
            ApiKey::OffsetForLeaderEpoch,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            &req,
        )
        .await?;
    crate::blocking(|| {
        for t in &resp.topics {
            for e in &t.partitions {
                let Some((p, _)) = asked
                    .iter()
                    .find(|(p, _)| p.topic == t.topic.as_str() && p.partition == e.partition)
                else {
                    continue;
                };
                if e.error_code != code::NONE {
                    continue; // asked again next round
                }
                let active = p.active.lock();
                if !*active {
                    continue;
                }
                let target = if e.leader_epoch < 0 || e.end_offset < 0 {
                    // The leader knows no epoch at or below ours: keep what
                    // is committed (Kafka's fallback, the high watermark).
                    p.log.high_watermark()
                } else {
                    p.log.leader_epochs().map(|ours| {
                        let (epoch, end) = ours.end_offset_for(e.leader_epoch);
                        if epoch >= 0 && end >= 0 {
                            end.min(e.end_offset)
                        } else {
                            e.end_offset
                        }
                    })
                };
                match target.and_then(|t| p.log.truncate_to(t)) {
                    Ok(_) => {
                        forget_producers(producers, p);
                        p.needs_truncation.store(false, Ordering::Release)
                    }
                    Err(err) => debug(&format!(
                        "truncating {}-{} failed: {err}",
                        p.topic, p.partition
                    )),
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};
    use std::time::{Duration, Instant};

    #[test]
    fn a_refused_or_reset_peer_is_suspected_for_a_window_until_reached() {
        let reach = super::PeerReach::default();
        let t0 = Instant::now();
        let window = Duration::from_millis(400);
        // Slow or confused peers are alive.
        reach.failed(2, &Error::from(ErrorKind::TimedOut), t0);
        reach.failed(2, &Error::from(ErrorKind::InvalidData), t0);
        assert!(!reach.suspected(2, t0, window));
        reach.failed(2, &Error::from(ErrorKind::ConnectionReset), t0);
        // Refused again later: still gone since the first failure.
        reach.failed(2, &Error::from(ErrorKind::ConnectionRefused), t0 + window);
        assert!(reach.suspected(2, t0 + window, window));
        assert!(!reach.suspected(3, t0, window));
        assert!(
            !reach.suspected(2, t0 + window + Duration::from_millis(1), window),
            "past the window the metadata's answer stands"
        );
        reach.reached(2);
        assert!(!reach.suspected(2, t0, window));
        reach.failed(3, &Error::from(ErrorKind::UnexpectedEof), t0);
        assert!(reach.suspected(3, t0, window));
    }

    #[test]
    fn a_cut_last_batch_is_left_for_the_next_fetch() {
        let mut b = ottla_record::BatchBuilder::with_capacity(256);
        b.append(0, None, Some(b"v"), &[]);
        let one = b.finish().to_vec();
        let two = [one.clone(), one.clone()].concat();
        assert_eq!(super::whole_batches(&two), two.len());
        assert_eq!(super::whole_batches(&two[..two.len() - 3]), one.len());
        assert_eq!(super::whole_batches(&two[..5]), 0);
        assert_eq!(super::whole_batches(&[]), 0);
    }
}
