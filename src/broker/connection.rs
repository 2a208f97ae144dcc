//! One client connection: size-prefixed request frames in, responses out,
//! strictly in order (Kafka clients rely on it; a long-polling Fetch holds
//! back the requests behind it, as in Kafka).
//!
//! Limits, enforced here before anything else sees the bytes:
//! - a size prefix that is negative or above `max_request_bytes` closes the
//!   connection before a buffer of that size is allocated;
//! - once a frame has started, the rest must arrive within `frame_timeout`;
//!   between frames a connection may idle for `idle_timeout`;
//! - any error (malformed request, unknown API, encode failure) closes this
//!   connection only.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use super::dispatch::{self, Reply, Session};
use super::Shared;

pub struct Connection {
    socket: TcpStream,
    session: Session,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    /// Held until the connection ends; the broker's close() waits for all of them.
    _done: mpsc::Sender<()>,
}

impl Connection {
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
    ) -> Connection {
        Connection {
            socket,
            session: Session::new(peer),
            shared,
            shutdown,
            _done: done,
        }
    }

    pub async fn run(mut self) {
        if let Err(why) = self.serve().await {
            super::errors::debug(&format!("{}: connection closed: {why}", self.session.peer));
        }
    }

    async fn serve(&mut self) -> Result<(), String> {
        loop {
            let Some(frame) = self.read_frame().await? else {
                return Ok(());
            };
            let reply = tokio::select! {
                r = dispatch::handle(&self.shared, &mut self.session, frame) => r,
                _ = self.shutdown.changed() => return Ok(()),
            };
            match reply {
                Reply::Send(buf) => self
                    .socket
                    .write_all(&buf)
                    .await
                    .map_err(|e| format!("write: {e}"))?,
                Reply::Nothing => {}
                Reply::Close(why) => return Err(why),
            }
        }
    }

    /// The next whole frame (without its size prefix), or `None` on a clean
    /// close between frames or on shutdown.
    async fn read_frame(&mut self) -> Result<Option<Bytes>, String> {
        let cfg = &self.shared.config;
        let mut size = [0u8; 4];
        // The first byte may take as long as an idle client likes.
        let first = tokio::select! {
            r = tokio::time::timeout(cfg.idle_timeout, self.socket.read(&mut size[..1])) => r,
            _ = self.shutdown.changed() => return Ok(None),
        };
        match first {
            Err(_) => return Err("idle timeout".into()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
        let deadline = tokio::time::Instant::now() + cfg.frame_timeout;
        let rest = async {
            self.socket.read_exact(&mut size[1..]).await?;
            let n = i32::from_be_bytes(size);
            // Invariant: nothing is allocated for a frame before its size is
            // known to be within the limit.
            if n < 0 || n as usize > cfg.max_request_bytes {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "request of {n} bytes exceeds max_request_bytes ({})",
                        cfg.max_request_bytes
                    ),
                ));
            }
            let mut buf = vec![0u8; n as usize];
            self.socket.read_exact(&mut buf).await?;
            Ok(buf)
        };
        let body = tokio::select! {
            r = tokio::time::timeout_at(deadline, rest) => r,
            _ = self.shutdown.changed() => return Ok(None),
        };
        match body {
            Err(_) => Err("client stopped in the middle of a frame".into()),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Ok(Ok(buf)) => Ok(Some(Bytes::from(buf))),
        }
    }
}
