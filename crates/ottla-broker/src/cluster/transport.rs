//! TCP for the controller listener: outgoing calls to other nodes (a small
//! pool of connections per node, reconnects with backoff, every step under
//! a timeout, bound to the node's own address when it listens on one), the
//! quorum's [`Transport`] on top, the broker→controller client that finds
//! the active controller, and the accept loop of the listener.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use ottla_meta::network::{Transport, TransportError};
use ottla_meta::NodeId;

use super::wire::{self, ControlReply, ControlRequest};
use crate::auth::peer::{self, Io};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A call with no deadline of its own (Raft's come with one) gives up after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per node.
const POOL: usize = 4;
/// Reconnect backoff: doubled after each failure, up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// An accepted connection idle longer than this is closed.
const SERVER_IDLE: Duration = Duration::from_secs(120);
/// A started frame must arrive in full within this.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the other nodes' controller listeners are, and the connections to
/// them.
pub struct Peers {
    addresses: RwLock<HashMap<NodeId, String>>,
    /// Outgoing connections bind here first (the `--listen` host, when it is
    /// a specific address), so a test harness can cut a node off by its
    /// source address.
    source_ip: Option<IpAddr>,
    idle: Mutex<HashMap<NodeId, Vec<Box<dyn Io>>>>,
    /// The controller listener's TLS client (the node's certificate, the
    /// CA as trust): `None` on a PLAINTEXT controller listener.
    tls: RwLock<Option<Arc<rustls::ClientConfig>>>,
    /// Per node: no new connection attempt before the instant; the backoff
    /// to use after the next failure.
    backoff: Mutex<HashMap<NodeId, (Instant, Duration)>>,
    /// Told of every node whose controller listener refused a connection
    /// (nobody listens there: its process is gone).
    on_refused: RwLock<Option<RefusedHook>>,
}

/// See [`Peers::on_refused`].
pub type RefusedHook = Arc<dyn Fn(NodeId) + Send + Sync>;

impl Peers {
    pub fn new(addresses: HashMap<NodeId, String>, source_ip: Option<IpAddr>) -> Arc<Peers> {
        Arc::new(Peers {
            addresses: RwLock::new(addresses),
            source_ip,
            idle: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            tls: RwLock::new(None),
            on_refused: RwLock::new(None),
        })
    }

    /// Calls `hook` with a node whenever a connection to its controller
    /// listener is refused (the node's own controller then elects early if
    /// that node was its leader: `Controller::leader_unreachable`).
    pub fn on_refused(&self, hook: RefusedHook) {
        *self.on_refused.write() = Some(hook);
    }

    /// Connect to the other nodes' controller listeners over mutual TLS
    /// (`--controller-listener-security-protocol SSL`).
    pub fn set_tls(&self, client: Option<Arc<rustls::ClientConfig>>) {
        *self.tls.write() = client;
        self.idle.lock().clear();
    }

    /// Learns (or changes) a node's controller address.
    pub fn set_address(&self, node: NodeId, address: &str) {
        let mut a = self.addresses.write();
        if a.get(&node).map(String::as_str) != Some(address) {
            a.insert(node, address.to_string());
            self.idle.lock().remove(&node);
        }
    }

    pub fn address(&self, node: NodeId) -> Option<String> {
        self.addresses.read().get(&node).cloned()
    }

    async fn connect(&self, node: NodeId) -> Result<Box<dyn Io>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { node, reason };
        if let Some((not_before, _)) = self.backoff.lock().get(&node) {
            if Instant::now() < *not_before {
                return Err(unreachable("reconnecting after a failure (backoff)".into()));
            }
        }
        let address = self
            .address(node)
            .ok_or_else(|| unreachable("no known controller address".into()))?;
        let result = tokio::time::timeout(CONNECT_TIMEOUT, self.connect_to(&address)).await;
        if matches!(&result, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
            let hook = self.on_refused.read().clone();
            if let Some(hook) = hook {
                hook(node);
            }
        }
        let mut backoff = self.backoff.lock();
        match result {
            Ok(Ok(stream)) => {
                backoff.remove(&node);
                Ok(stream)
            }
            failed => {
                let next = backoff
                    .get(&node)
                    .map_or(BACKOFF_MIN, |(_, b)| (*b * 2).min(BACKOFF_MAX));
                backoff.insert(node, (Instant::now() + next, next));
                Err(unreachable(match failed {
                    Ok(Err(e)) => format!("{address}: {e}"),
                    _ => format!("{address}: connect timed out"),
                }))
            }
        }
    }

    async fn connect_to(&self, address: &str) -> std::io::Result<Box<dyn Io>> {
        let mut last = None;
        for addr in tokio::net::lookup_host(address).await? {
            match connect_from(self.source_ip, addr).await {
                Ok(s) => {
                    let tls = self.tls.read().clone();
                    return match tls {
                        None => Ok(Box::new(s)),
                        Some(config) => {
                            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
                            peer::tls_connect(s, &config, host).await
                        }
                    };
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address resolved")
        }))
    }

    /// Sends one message to `node` and returns its reply, within `timeout`.
    pub async fn call(
        &self,
        node: NodeId,
        message: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let pooled = self.idle.lock().get_mut(&node).and_then(Vec::pop);
        let mut stream = match pooled {
            Some(s) => s,
            None => self.connect(node).await?,
        };
        match tokio::time::timeout(timeout, exchange(&mut stream, message)).await {
            Ok(Ok(reply)) => {
                let mut idle = self.idle.lock();
                let pool = idle.entry(node).or_default();
                if pool.len() < POOL {
                    pool.push(stream);
                }
                Ok(reply)
            }
            // The connection is dropped: its state is unknown.
            Ok(Err(e)) => Err(TransportError::Unreachable {
                node,
                reason: e.to_string(),
            }),
            Err(_) => Err(TransportError::Timeout { node }),
        }
    }
}

/// A TCP connection from `source` (when given) to `to`.
pub async fn connect_from(source: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        if ip.is_ipv4() == to.is_ipv4() {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
    }
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn write_frame<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n as usize <= wire::MAX_FRAME)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(body);
    stream.write_all(&buf).await
}

async fn read_body<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    prefix: [u8; 4],
) -> std::io::Result<Vec<u8>> {
    let n = wire::frame_len(prefix)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; n];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    message: &[u8],
) -> std::io::Result<Vec<u8>> {
    write_frame(stream, message).await?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    read_body(stream, prefix).await
}

/// The quorum's transport: Raft bytes in a [`ControlRequest::Raft`].
pub struct RaftTransport {
    pub peers: Arc<Peers>,
}

impl Transport for RaftTransport {
    fn call(
        &self,
        target: NodeId,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let peers = self.peers.clone();
        async move {
            let message = wire::encode(&ControlRequest::Raft(request));
            // openraft puts its own deadline around the call.
            let reply = peers.call(target, &message, CALL_TIMEOUT).await?;
            match wire::decode::<ControlReply>(&reply) {
                Ok(ControlReply::Raft(bytes)) => Ok(bytes),
                Ok(other) => Err(TransportError::Unreachable {
                    node: target,
                    reason: format!("unexpected reply {other:?}"),
                }),
                Err(e) => Err(TransportError::Unreachable {
                    node: target,
                    reason: e,
                }),
            }
        }
    }
}

/// Why a broker→controller request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No active controller answered before the deadline.
    Unavailable(String),
    /// The controller refused it: Kafka's code and message.
    Refused { code: i16, message: String },
}

/// The broker side of broker→controller requests: sent to the active
/// controller, found by asking the voters (a `NotController { leader }`
/// answer names it; the request is retried there).
pub struct ControllerClient {
    peers: Arc<Peers>,
    voters: Vec<NodeId>,
    leader: Mutex<Option<NodeId>>,
}

impl ControllerClient {
    pub fn new(peers: Arc<Peers>, voters: Vec<NodeId>) -> ControllerClient {
        ControllerClient {
            peers,
            voters,
            leader: Mutex::new(None),
        }
    }

    /// Sends `request` to the active controller, retrying (other voters,
    /// backoff) until `deadline` passes. Refusals come back as
    /// [`ClientError::Refused`]; only definite answers are returned.
    pub async fn call(
        &self,
        request: &ControlRequest,
        deadline: Duration,
    ) -> Result<ControlReply, ClientError> {
        let message = wire::encode(request);
        let until = Instant::now() + deadline;
        let mut next_voter = 0usize;
        let mut pause = BACKOFF_MIN;
        let mut last = String::from("no controller answered");
        loop {
            let hinted = *self.leader.lock();
            let target = match hinted {
                Some(l) => l,
                None => {
                    if self.voters.is_empty() {
                        return Err(ClientError::Unavailable("no controller voters".into()));
                    }
                    next_voter = (next_voter + 1) % self.voters.len();
                    self.voters[next_voter]
                }
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Unavailable(last));
            }
            let mut redirected = false;
            match self
                .peers
                .call(target, &message, left.min(CALL_TIMEOUT))
                .await
            {
                Ok(bytes) => match wire::decode::<ControlReply>(&bytes) {
                    Ok(ControlReply::NotController { leader }) => {
                        last = format!("node {target} is not the active controller");
                        let known = leader.filter(|l| *l != target);
                        *self.leader.lock() = known;
                        redirected = known.is_some();
                    }
                    Ok(ControlReply::Error { code, message }) => {
                        return Err(ClientError::Refused { code, message })
                    }
                    Ok(reply) => {
                        *self.leader.lock() = Some(target);
                        return Ok(reply);
                    }
                    Err(e) => {
                        last = format!("node {target}: {e}");
                        *self.leader.lock() = None;
                    }
                },
                Err(e) => {
                    last = e.to_string();
                    *self.leader.lock() = None;
                }
            }
            if !redirected {
                let left = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// What answers the requests a controller listener receives.
pub trait ControlHandler: Send + Sync + 'static {
    fn handle(&self, request: ControlRequest) -> impl Future<Output = ControlReply> + Send;
}

/// The controller listener's accept loop: one task per connection, each
/// reading a frame, answering it, and waiting for the next, until `stopping`.
pub async fn serve<H: ControlHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    stopping: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    serve_with(listener, handler, None, stopping, done).await
}

/// The last warning about a refused controller-listener peer.
static REFUSED_WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`serve`], over mutual TLS when `tls` is given: a peer that does not
/// complete the handshake with a certificate chaining to the CA is dropped
/// before any frame is read (and said on stderr, at most every 5 s).
pub async fn serve_with<H: ControlHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopping: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let Ok((stream, peer_addr)) = accepted else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let stopping = stopping.clone();
        let done = done.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(peer::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            peer::warn_limited(
                                &REFUSED_WARNED,
                                &format!("controller listener: refused {peer_addr}: TLS: {e}"),
                            );
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            connection(stream, handler, stopping).await;
            drop(done);
        });
    }
}

async fn connection<H: ControlHandler>(
    mut stream: Box<dyn Io>,
    handler: Arc<H>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let mut prefix = [0u8; 4];
        let read = tokio::select! {
            r = tokio::time::timeout(SERVER_IDLE, stream.read_exact(&mut prefix)) => r,
            _ = stopping.wait_for(|s| *s) => return,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let body = match tokio::time::timeout(FRAME_TIMEOUT, read_body(&mut stream, prefix)).await {
            Ok(Ok(b)) => b,
            _ => return,
        };
        let reply = match wire::decode::<ControlRequest>(&body) {
            Ok(request) => handler.handle(request).await,
            Err(e) => ControlReply::Error {
                code: crate::errors::code::INVALID_REQUEST,
                message: format!("undecodable control request: {e}"),
            },
        };
        drop(body);
        let bytes = wire::encode(&reply);
        match tokio::time::timeout(FRAME_TIMEOUT, write_frame(&mut stream, &bytes)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn calls_leave_from_the_source_address_and_time_out() {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let source: IpAddr = "127.0.0.12".parse().expect("ip");
            let peers = Peers::new(HashMap::from([(7, addr.to_string())]), Some(source));
            // A peer that accepts, reads the request and never answers.
            let server = tokio::spawn(async move {
                let (mut s, from) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                from
            });
            let started = Instant::now();
            let r = peers.call(7, b"x", Duration::from_millis(200)).await;
            assert!(
                matches!(r, Err(TransportError::Timeout { node: 7 })),
                "{r:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(3));
            server.abort();
            // An unknown node and a refused connection are errors too.
            assert!(peers.call(8, b"x", CALL_TIMEOUT).await.is_err());
            let from = {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                peers.set_address(7, &listener.local_addr().expect("addr").to_string());
                let call = peers.call(7, b"x", Duration::from_millis(100));
                let (accepted, _) = tokio::join!(listener.accept(), call);
                accepted.expect("accept").1
            };
            assert_eq!(from.ip(), source);
        });
    }

    #[test]
    fn a_refused_connection_is_reported_and_a_timeout_is_not() {
        runtime().block_on(async {
            // A port nobody listens on any more (its process is gone).
            let closed = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr")
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let open = listener.local_addr().expect("addr");
            let peers = Peers::new(
                HashMap::from([(3, closed.to_string()), (4, open.to_string())]),
                None,
            );
            let told = Arc::new(Mutex::new(Vec::new()));
            let t = told.clone();
            peers.on_refused(Arc::new(move |node| t.lock().push(node)));
            assert!(peers
                .call(3, b"x", Duration::from_millis(200))
                .await
                .is_err());
            assert_eq!(*told.lock(), vec![3]);
            // A node that accepts and does not answer is not reported.
            let r = peers.call(4, b"x", Duration::from_millis(100)).await;
            assert!(
                matches!(r, Err(TransportError::Timeout { node: 4 })),
                "{r:?}"
            );
            assert_eq!(*told.lock(), vec![3]);
            drop(listener);
        });
    }

    #[test]
    fn an_oversized_or_empty_frame_closes_the_connection() {
        struct Echo;
        impl ControlHandler for Echo {
            async fn handle(&self, _r: ControlRequest) -> ControlReply {
                ControlReply::ShutdownDone
            }
        }
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (_stop, stopping) = watch::channel(false);
            let (done, _done_rx) = mpsc::channel(1);
            tokio::spawn(serve(listener, Arc::new(Echo), stopping, done));
            // A good request is answered; garbage in a good frame too.
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let ok = wire::encode(&ControlRequest::DeleteTopic { name: "t".into() });
            let reply = exchange(&mut s, &ok).await.expect("reply");
            assert!(matches!(
                wire::decode(&reply),
                Ok(ControlReply::ShutdownDone)
            ));
            let reply = exchange(&mut s, &[1, 0xff, 0xff]).await.expect("reply");
            assert!(matches!(
                wire::decode(&reply),
                Ok(ControlReply::Error { code: 42, .. })
            ));
            for prefix in [[0xff, 0xff, 0xff, 0xff], [0, 0, 0, 0]] {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.write_all(&prefix).await.expect("write");
                let mut buf = [0u8; 8];
                let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .expect("closed in time");
                assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
            }
        });
    }
}
