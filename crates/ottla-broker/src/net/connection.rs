//! One client connection: on a TLS listener the TLS handshake first (within
//! `frame_timeout`; a failed one ends the connection before any request),
//! then size-prefixed request frames in, responses out,
//! strictly in order (Kafka clients rely on it; a long-polling Fetch holds
//! back the requests behind it, as in Kafka).
//!
//! Limits, enforced here before anything else sees the bytes:
//! - a size prefix that is negative or above `max_request_bytes` closes the
//!   connection before a buffer of that size is allocated (on a SASL
//!   listener before authentication, above 512 KiB: Kafka's
//!   `sasl.server.max.receive.size`);
//! - a frame larger than one read chunk takes its size from the broker's
//!   request budget (`queued_max_request_bytes`, see `net::budget`) before
//!   its buffer is allocated, and holds it until its request is handled;
//!   while the budget is spent the connection waits without reading;
//! - once a frame has started, the rest must arrive within `frame_timeout`;
//!   between frames a connection may idle for `idle_timeout`;
//! - any error (malformed request, unknown API, encode failure) closes this
//!   connection only;
//! - on a SASL listener, requests pass the SASL gate (`net::gate`) first;
//!   a failed authentication is answered, then the connection closed as
//!   when the broker stops (the client reads the reason);
//! - a client that closes while its Fetch is parked (a long poll) ends the
//!   Fetch at once; other requests run to their end.
//!
//! When the broker stops, a connection takes no new request (not even one
//! already read), lets the request in hand finish and writes its response,
//! then closes without a reset. Invariant: a request taken is answered, and
//! the answer can be read, before the connection closes. A Produce may be
//! appended by then; a client that loses its response retries it, and
//! without idempotence the records are written twice. So the close:
//! - lingers until `CLOSE_LINGER` after the last response, reading and
//!   dropping what the client still sends (requests that are never
//!   appended): a client may drop responses that arrive together with the
//!   end of the stream (kafka-python discards the data of a read that
//!   also meets EOF), so the end comes after the client has had time to
//!   read them;
//! - then sends FIN, and reads and drops until the client closes or
//!   `CLOSE_LINGER` passes again: closing a socket with unread bytes sends
//!   a reset, and a client that meets one (a broken pipe on its next write)
//!   fails every request in flight, answered or not, and retries them.
//!
//! The client sees its unanswered requests fail with the connection and
//! retries them on the next broker; none of them was appended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::budget::Held;
use super::listener::ListenerInfo;
use super::stream::Stream;
use crate::auth::principal::Principal;
use crate::dispatch::{self, Reply, Session};
use crate::net::{frame, gate};
use crate::Shared;

/// The least a read asks the socket for; frames above it are read into a
/// buffer of their own.
const READ_CHUNK: usize = 64 * 1024;

/// Kafka's `sasl.server.max.receive.size` default: the largest frame a
/// SASL listener takes before its client has authenticated.
const SASL_MAX_RECEIVE: usize = 512 * 1024;

/// How many bytes a connection reads ahead while a Fetch is in progress
/// (see `peer_gone`).
const WATCH_AHEAD: usize = 16 * 1024;

/// How long a stopping broker leaves a client to read its last responses,
/// and then to close (both within `Broker::close`'s own bound).
const CLOSE_LINGER: Duration = Duration::from_secs(1);

pub struct Connection {
    socket: Stream,
    session: Session,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    /// Bytes read from the socket and not yet handed on as a frame.
    rbuf: BytesMut,
    /// When the last response was written (see `close_gracefully`).
    last_reply: Option<Instant>,
    /// The request budget taken for the frame being read or handled; given
    /// back once the request is handled (before its response is written, so
    /// a client that does not read cannot pin it), when the next frame is
    /// asked for, or when the connection ends.
    held: Option<Held>,
    /// Held until the connection ends; the broker's close() waits for all of them.
    _done: mpsc::Sender<()>,
}

impl Connection {
    /// The connection of an accepted socket, after the TLS handshake on a
    /// TLS listener; `None` if the handshake failed (an untrusted or
    /// missing client certificate, a client that is not speaking TLS, one
    /// that took longer than `frame_timeout`) or the broker is stopping.
    pub async fn accept(
        socket: TcpStream,
        peer: SocketAddr,
        listener: Arc<ListenerInfo>,
        shared: Arc<Shared>,
        mut shutdown: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
    ) -> Option<Connection> {
        let mut principal = Principal::anonymous();
        let socket = match &listener.tls {
            None => Stream::Plain(socket),
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(shared.config.frame_timeout, acceptor.accept(socket));
                let tls = tokio::select! {
                    r = handshake => r,
                    _ = shutdown.changed() => return None,
                };
                let tls = match tls {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        crate::errors::debug(&format!("{peer}: TLS handshake failed: {e}"));
                        return None;
                    }
                    Err(_) => {
                        crate::errors::debug(&format!("{peer}: TLS handshake timed out"));
                        return None;
                    }
                };
                // A verified client certificate names the principal (mTLS);
                // on SASL_SSL the SASL user replaces it.
                if let Some(p) = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(crate::auth::tls::principal_of)
                {
                    crate::errors::debug(&format!("{peer}: TLS client certificate: {p}"));
                    principal = p;
                }
                Stream::Tls(Box::new(tls))
            }
        };
        let mut session = Session::new(peer);
        session.listener = Some(listener);
        session.principal = principal;
        Some(Connection::with_session(
            socket, session, shared, shutdown, done,
        ))
    }

    fn with_session(
        socket: Stream,
        session: Session,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
    ) -> Connection {
        Connection {
            socket,
            session,
            shared,
            shutdown,
            rbuf: BytesMut::new(),
            last_reply: None,
            held: None,
            _done: done,
        }
    }

    pub async fn run(mut self) {
        if let Err(why) = self.serve().await {
            crate::errors::debug(&format!("{}: connection closed: {why}", self.session.peer));
        }
    }

    async fn serve(&mut self) -> Result<(), String> {
        loop {
            // Stopping: no new request, even one already read.
            if *self.shutdown.borrow() {
                return self.close_gracefully().await;
            }
            let Some(frame) = self.read_frame().await? else {
                if *self.shutdown.borrow() {
                    return self.close_gracefully().await;
                }
                return Ok(());
            };
            if crate::api::sasl::expects_raw_token(&self.session) {
                // After SaslHandshake v0: a bare SASL token, no header.
                let answer =
                    crate::api::sasl::raw_token(&self.shared, &mut self.session, frame).await?;
                self.send(&answer).await?;
                continue;
            }
            let api_key = frame::prefix(&frame).map(|p| p.api_key);
            if let Some(key) = api_key {
                gate::admit(&self.session, key)?;
            }
            // Not raced against shutdown: a request taken is answered (see
            // the module's invariant); requests that wait end early on their
            // own when the broker stops.
            let reply = if api_key == Some(ApiKey::Fetch as i16) {
                // A Fetch may park for up to max_wait_ms (300 s): raced
                // against the client going away, so a closed connection
                // lets go of its fetch (and its registrations) at once. Only
                // a Fetch: it writes nothing, so nobody is owed its answer;
                // anything else runs to its end (see the module's invariant).
                let handling = dispatch::handle(&self.shared, &mut self.session, frame);
                tokio::select! {
                    reply = handling => reply,
                    why = peer_gone(&mut self.socket, &mut self.rbuf) => return Err(why),
                }
            } else {
                dispatch::handle(&self.shared, &mut self.session, frame).await
            };
            match reply {
                Reply::Send(buf) => self.send(&buf).await?,
                Reply::Nothing => {}
                Reply::Close(why) => return Err(why),
            }
            // A failed authentication: answered, then closed so the client
            // can read the answer (as when the broker stops).
            if let Some(why) = self.session.close_after_reply.take() {
                crate::errors::debug(&format!("{}: closing: {why}", self.session.peer));
                return self.close_gracefully().await;
            }
        }
    }

    /// Writes an answer. The request was handled, so its bytes are freed
    /// and its budget goes back before a write a client can stall.
    async fn send(&mut self, buf: &[u8]) -> Result<(), String> {
        self.held = None;
        self.socket
            .write_all(buf)
            .await
            .map_err(|e| format!("write: {e}"))?;
        // TLS holds written bytes until flushed.
        self.socket
            .flush()
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.last_reply = Some(Instant::now());
        Ok(())
    }

    /// Every response is written: let the client read them, send FIN, and
    /// let the client close first (see the module comment).
    async fn close_gracefully(&mut self) -> Result<(), String> {
        if let Some(at) = self.last_reply {
            if self.discard_until(at + CLOSE_LINGER).await {
                return Ok(());
            }
        }
        self.socket
            .shutdown()
            .await
            .map_err(|e| format!("shutdown: {e}"))?;
        self.discard_until(Instant::now() + CLOSE_LINGER).await;
        Ok(())
    }

    /// Read and drop what the client sends until `deadline`; true if the
    /// client closed (or the socket failed) first.
    async fn discard_until(&mut self, deadline: Instant) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.socket.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// The next whole frame (without its size prefix), or `None` on a clean
    /// close between frames or on shutdown.
    ///
    /// Reads go into one growing buffer as large as the socket offers, so a
    /// small request usually costs one `read` (not one for the size, one for
    /// the rest), pipelined requests arrive together, and the frame handed
    /// on is a zero-copy slice of that buffer (no zero-filled body buffer).
    ///
    /// A frame that needs a buffer of its own first takes its size from the
    /// request budget (see `net::budget`), waiting, without reading, while it
    /// is spent; the bytes are held until the request is handled (see
    /// `held`), the next call, or the end of the connection.
    async fn read_frame(&mut self) -> Result<Option<Bytes>, String> {
        // The previous request is handled and answered (or needed no answer).
        self.held = None;
        let mut charged = false;
        let cfg = &self.shared.config;
        // Before a SASL client has authenticated, Kafka's
        // `sasl.server.max.receive.size` bounds its frames, so an unknown
        // client cannot make the broker hold max_request_bytes.
        let max_bytes = if self.session.sasl_pending() {
            cfg.max_request_bytes.min(SASL_MAX_RECEIVE)
        } else {
            cfg.max_request_bytes
        };
        // Set once the first byte of this frame is in.
        let mut deadline =
            (!self.rbuf.is_empty()).then(|| tokio::time::Instant::now() + cfg.frame_timeout);
        loop {
            if self.rbuf.len() >= 4 {
                let n =
                    i32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
                // Invariant: nothing is allocated for a frame before its size
                // is known to be within the limit.
                if n < 0 || n as usize > max_bytes {
                    return Err(format!(
                        "read: request of {n} bytes exceeds max_request_bytes ({max_bytes}{})",
                        if max_bytes < cfg.max_request_bytes {
                            " before SASL authentication"
                        } else {
                            ""
                        }
                    ));
                }
                let whole = 4 + n as usize;
                if whole > READ_CHUNK && !charged {
                    // Invariant: a frame with a buffer of its own is charged
                    // its size (at most max_request_bytes, so within the
                    // budget) before the buffer exists. Waiting is not the
                    // client's delay: its frame clock starts again after.
                    let budget = &self.shared.request_budget;
                    let took = tokio::select! {
                        held = budget.take(n as usize) => held,
                        _ = self.shutdown.changed() => return Ok(None),
                    };
                    self.held = took;
                    charged = true;
                    deadline = Some(tokio::time::Instant::now() + cfg.frame_timeout);
                }
                if self.rbuf.len() >= whole {
                    let mut frame = self.rbuf.split_to(whole);
                    if self.rbuf.capacity() == 0 {
                        // Nothing left to read into; let go of the frame's
                        // allocation so the frame is its sole owner.
                        self.rbuf = BytesMut::new();
                    }
                    let _ = frame.split_to(4);
                    return Ok(Some(frame.freeze()));
                }
                if whole > READ_CHUNK && self.rbuf.capacity() < whole {
                    // A large frame gets an allocation of its own, exactly its
                    // size: reads then cannot run into the next frame, and
                    // the frame is the only owner of its bytes, so Produce
                    // can stamp offsets in place instead of copying.
                    let mut own = BytesMut::with_capacity(whole);
                    own.extend_from_slice(&self.rbuf);
                    self.rbuf = own;
                } else {
                    // Room for the rest of this frame, plus the start of the next.
                    self.rbuf.reserve(whole - self.rbuf.len() + READ_CHUNK);
                }
            } else if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK {
                self.rbuf.reserve(READ_CHUNK);
            }
            let read = match deadline {
                // Between frames a client may idle as long as idle_timeout.
                None => tokio::select! {
                    r = tokio::time::timeout(cfg.idle_timeout, self.socket.read_buf(&mut self.rbuf)) => r,
                    _ = self.shutdown.changed() => return Ok(None),
                },
                Some(at) => tokio::select! {
                    r = tokio::time::timeout_at(at, self.socket.read_buf(&mut self.rbuf)) => r,
                    _ = self.shutdown.changed() => return Ok(None),
                },
            };
            match read {
                Err(_) if deadline.is_none() => return Err("idle timeout".into()),
                Err(_) => return Err("client stopped in the middle of a frame".into()),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Ok(Ok(0)) if self.rbuf.is_empty() => return Ok(None),
                Ok(Ok(0)) => return Err("read: connection closed in the middle of a frame".into()),
                Ok(Ok(_)) => {}
            }
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + cfg.frame_timeout);
        }
    }
}

/// Returns once the client has closed the connection (end of stream) or the
/// socket failed, saying which; for a request in progress that need not
/// outlive its client. Meanwhile what the client sends (pipelined requests)
/// is appended to `rbuf`, where `read_frame` takes it as if it had read it
/// itself; past `WATCH_AHEAD` bytes more it stops reading (and returns
/// only with the request), so a client cannot queue more than that this way.
///
/// Cancel-safe (dropped when the Fetch finishes first): a read that has not
/// completed has taken no bytes, on TCP and TLS alike.
async fn peer_gone(socket: &mut Stream, rbuf: &mut BytesMut) -> String {
    let cap = rbuf.len() + WATCH_AHEAD;
    let mut chunk = [0u8; 4096];
    loop {
        let room = cap.saturating_sub(rbuf.len()).min(chunk.len());
        if room == 0 {
            return std::future::pending().await;
        }
        match socket.read(&mut chunk[..room]).await {
            Ok(0) => return "client closed the connection during a Fetch".into(),
            Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
            Err(e) => return format!("read: {e}"),
        }
    }
}
