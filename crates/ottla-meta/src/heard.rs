//! When this node last heard from the quorum's leader: the instant the last
//! AppendEntries it accepted arrived, and from whom (recorded by the
//! [`crate::network::RpcServer`]).
//!
//! Two uses, both on the controller ([`crate::Controller`]): a new active
//! controller counts the previous one's broker session from that instant
//! rather than from its own election (the quorum's heartbeats were that
//! broker's proof of life), and a follower told that the leader's process is
//! gone elects as soon as the leader's lease, counted from that instant, has
//! run out.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::types::NodeId;

/// The last AppendEntries accepted from a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub leader: NodeId,
    pub at: Instant,
}

/// Shared between a controller and its RPC server.
#[derive(Debug, Clone, Default)]
pub struct LastHeard(Arc<Mutex<Option<Heard>>>);

impl LastHeard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Heard>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An AppendEntries from `leader`, which arrived at `at`, was accepted.
    pub fn record(&self, leader: NodeId, at: Instant) {
        let mut g = self.lock();
        match *g {
            // Two requests handled out of order: keep the later arrival.
            Some(h) if h.leader == leader && h.at >= at => {}
            _ => *g = Some(Heard { leader, at }),
        }
    }

    pub fn get(&self) -> Option<Heard> {
        *self.lock()
    }

    /// The record, cleared: a new active controller uses it once, so that a
    /// later term of its own does not count an older leader's silence.
    pub fn take(&self) -> Option<Heard> {
        self.lock().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keeps_the_latest_and_is_taken_once() {
        let t0 = Instant::now();
        let h = LastHeard::default();
        assert_eq!(h.get(), None);
        h.record(1, t0 + Duration::from_millis(10));
        h.record(1, t0);
        assert_eq!(h.get().map(|h| h.at), Some(t0 + Duration::from_millis(10)));
        h.record(2, t0 + Duration::from_millis(5));
        assert_eq!(h.get().map(|h| h.leader), Some(2));
        assert!(h.take().is_some());
        assert_eq!(h.take(), None);
    }
}
