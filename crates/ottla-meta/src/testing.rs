//! Test infrastructure, not for production: an in-process [`Transport`] that
//! routes requests to the controllers of one test through tokio (no
//! sockets), and can cut, delay and lossily drop the links between them.
//! Compiled for this crate's tests and, with the `testing` feature, for
//! other crates' tests and the benchmark example.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::network::{RpcServer, Transport, TransportError};
use crate::types::NodeId;

#[derive(Default)]
struct State {
    servers: BTreeMap<NodeId, RpcServer>,
    /// Cut links, each as (smaller id, larger id): both directions.
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: Duration,
    /// Drop one request in `drop_one_in` (0: never), decided by `rng`.
    drop_one_in: u64,
    rng: u64,
}

/// The switchboard between a test's controllers.
#[derive(Clone, Default)]
pub struct Router {
    state: Arc<Mutex<State>>,
}

/// A controller's end of the [`Router`].
pub struct LocalTransport {
    from: NodeId,
    router: Router,
}

fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The transport node `from` sends through.
    pub fn transport(&self, from: NodeId) -> Arc<LocalTransport> {
        Arc::new(LocalTransport {
            from,
            router: self.clone(),
        })
    }

    /// Node `id` answers requests with `server` (from now on).
    pub fn register(&self, id: NodeId, server: RpcServer) {
        self.lock().servers.insert(id, server);
    }

    /// Node `id` is down: requests to it fail.
    pub fn unregister(&self, id: NodeId) {
        self.lock().servers.remove(&id);
    }

    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.lock().cut.insert(link(a, b));
    }

    pub fn heal(&self, a: NodeId, b: NodeId) {
        self.lock().cut.remove(&link(a, b));
    }

    /// Cuts `id` off from every node in `others`.
    pub fn isolate(&self, id: NodeId, others: impl IntoIterator<Item = NodeId>) {
        let mut g = self.lock();
        for o in others {
            if o != id {
                g.cut.insert(link(id, o));
            }
        }
    }

    pub fn heal_all(&self) {
        self.lock().cut.clear();
    }

    /// Every request waits `delay` before it is delivered.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Drops one request in `n` (0: none), pseudo-randomly from `seed`.
    pub fn set_drops(&self, n: u64, seed: u64) {
        let mut g = self.lock();
        g.drop_one_in = n;
        g.rng = seed | 1;
    }

    /// Whether a request from `from` to `to` gets through now, and to whom.
    fn route(&self, from: NodeId, to: NodeId) -> Result<(RpcServer, Duration), TransportError> {
        let mut g = self.lock();
        if g.cut.contains(&link(from, to)) {
            return Err(TransportError::Unreachable {
                node: to,
                reason: "link cut".into(),
            });
        }
        if g.drop_one_in > 0 {
            // xorshift64
            let mut x = g.rng;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g.rng = x;
            if x % g.drop_one_in == 0 {
                return Err(TransportError::Unreachable {
                    node: to,
                    reason: "dropped".into(),
                });
            }
        }
        let server = g
            .servers
            .get(&to)
            .cloned()
            .ok_or(TransportError::Unreachable {
                node: to,
                reason: "node down".into(),
            })?;
        Ok((server, g.delay))
    }
}

impl Transport for LocalTransport {
    async fn call(&self, target: NodeId, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let (server, delay) = self.router.route(self.from, target)?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let reply = server.handle(&request).await;
        // The reply travels back over the same link: lost if it was cut
        // (or the sender went down) meanwhile.
        self.router.route(target, self.from)?;
        Ok(reply)
    }
}
