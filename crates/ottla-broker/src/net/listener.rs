//! The accept loop: one task per connection until shutdown.
//!
//! Connections are limited as Kafka limits them (`max.connections`,
//! `max.connections.per.ip`): past either limit a new connection is
//! accepted and closed at once, so the client sees its connection end
//! instead of waiting in the backlog, and the connections already served
//! go on. A slot is taken before the connection's task starts and given
//! back when the task ends, whatever ended it.
//!
//! Out of descriptors (EMFILE, ENFILE), `accept` fails until some close:
//! the loop waits and tries again, and says so once per such stretch, not
//! once per try.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::connection::Connection;
use crate::Shared;

/// How long the loop waits after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

pub async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let limits = Arc::new(ConnectionLimits::new(
        shared.config.max_connections,
        shared.config.max_connections_per_ip,
    ));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    // EMFILE and friends: back off briefly instead of
                    // spinning, and tell the operator once.
                    Err(e) => {
                        if !failing {
                            failing = true;
                            crate::errors::warn(&format!(
                                "cannot accept connections: {e} (open connections: {}; \
                                 raise the open-file limit, `ulimit -n`, or lower \
                                 max_connections); retrying",
                                limits.open()
                            ));
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if failing {
                    failing = false;
                    crate::errors::warn("accepting connections again");
                }
                let slot = match limits.try_acquire(peer.ip()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        crate::errors::debug(&format!("{peer}: connection refused: {why}"));
                        drop(socket);
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let conn = Connection::new(socket, peer, shared.clone(), shutdown.clone(), done.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    conn.run().await;
                });
            }
        }
    }
}

/// Open connections, in total and per client address, against their limits.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection's place in [`ConnectionLimits`], given back on drop.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().0
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, String> {
        let mut open = self.open.lock();
        if open.0 >= self.max_total {
            return Err(format!(
                "{} connections open, max_connections is {}",
                open.0, self.max_total
            ));
        }
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(format!(
                "{from_ip} connections open from {ip}, max_connections_per_ip is {}",
                self.max_per_ip
            ));
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_in_total_and_per_address_and_free_on_drop() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = limits.try_acquire(a).expect("a1");
        let _a2 = limits.try_acquire(a).expect("a2");
        assert!(limits.try_acquire(a).is_err(), "third from one address");
        let _b1 = limits.try_acquire(b).expect("b1");
        assert!(limits.try_acquire(b).is_err(), "fourth in total");
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.try_acquire(a).expect("a slot freed");
    }
}
