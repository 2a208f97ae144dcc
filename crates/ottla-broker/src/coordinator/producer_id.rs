//! Producer ids for idempotent and transactional producers (Kafka's
//! ProducerIdManager; there, part of the transaction coordinator, which
//! answers InitProducerId).
//!
//! Ids live in the broker's memory only, so each is made of the time, the
//! node and a counter: `[milliseconds: 41 bits][node: 10 bits][counter: 12 bits]`.
//! A restarted broker never hands out an id a previous run used (its clock
//! moved on), and two nodes of a cluster never hand out the same id (their
//! node ids differ), without asking the controller. 4,096 ids a millisecond
//! a node; past that the next millisecond is taken early. What a partition
//! remembers of each producer is `replica::idempotence`'s.
//!
//! Kafka instead has the controller hand out blocks of ids
//! (AllocateProducerIds, KIP-730); node ids here are therefore limited to
//! 0..=1023 (`MAX_NODE_ID`), which `cluster::ClusterConfig::check` enforces.

use parking_lot::Mutex;

/// The largest node id whose producer ids stay apart from every other node's.
pub const MAX_NODE_ID: i32 = (1 << NODE_BITS) - 1;

const NODE_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;

#[derive(Default)]
pub struct ProducerIdManager {
    node: i64,
    /// The millisecond the ids are made in, and the next counter in it.
    next: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// The producer ids of node `node` (0 for a broker alone); `node` is
    /// taken modulo 1024 (ClusterConfig::check refuses larger ones).
    pub fn for_node(node: i32) -> Self {
        ProducerIdManager {
            node: i64::from(node) & i64::from(MAX_NODE_ID),
            next: Mutex::new((0, 0)),
        }
    }

    /// A producer id no other node, and no earlier run of this node, handed
    /// out.
    pub fn new_producer_id(&self) -> i64 {
        self.new_id_at(ottla_storage::log::now_ms())
    }

    fn new_id_at(&self, now_ms: i64) -> i64 {
        let mut next = self.next.lock();
        let (ms, counter) = *next;
        let (ms, counter) = if now_ms > ms {
            (now_ms, 0)
        } else if counter < (1 << COUNTER_BITS) {
            (ms, counter)
        } else {
            (ms + 1, 0)
        };
        *next = (ms, counter + 1);
        ((ms & ((1 << 41) - 1)) << (NODE_BITS + COUNTER_BITS))
            | (self.node << COUNTER_BITS)
            | counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn producer_ids_are_unique_and_positive() {
        let t = ProducerIdManager::default();
        let a = t.new_producer_id();
        let b = t.new_producer_id();
        assert!(a > 0 && b > a);
    }

    #[test]
    fn two_nodes_in_the_same_millisecond_hand_out_different_ids() {
        let one = ProducerIdManager::for_node(1);
        let two = ProducerIdManager::for_node(2);
        let now = 1_764_720_000_000;
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(one.new_id_at(now)));
            assert!(seen.insert(two.new_id_at(now)));
        }
        assert!(seen.iter().all(|id| *id > 0));
    }

    #[test]
    fn a_burst_past_the_counter_runs_ahead_and_a_restart_later_does_not_repeat() {
        let t = ProducerIdManager::for_node(3);
        let now = 1_764_720_000_000;
        let ids: Vec<i64> = (0..3 * 4096).map(|_| t.new_id_at(now)).collect();
        assert!(ids.windows(2).all(|w| w[1] > w[0]));
        // The burst used three milliseconds; a run restarted after them
        // starts above every id.
        let again = ProducerIdManager::for_node(3);
        assert!(again.new_id_at(now + 3) > *ids.last().unwrap_or(&0));
    }
}
