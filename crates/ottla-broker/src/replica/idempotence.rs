//! Per-partition producer state for Produce: de-duplication of retried
//! batches by (producer id, epoch, sequence), epoch fencing, and the open
//! transactions that hold back the last stable offset. The state itself is
//! the engine's (`ottla_storage::log::producer_state`, Kafka's
//! ProducerStateManager); this module keeps one per partition and turns its
//! refusals into Kafka error codes.
//!
//! A partition's state is rebuilt from its log the first time the broker
//! needs it (a Produce with a producer id, a marker, a read_committed
//! Fetch), so a restarted
//! broker still recognises a retried batch, still fences a zombie and
//! still knows which transactions are open. There are no snapshots yet:
//! the rebuild reads the partition from its log start. The ids themselves
//! come from `coordinator::producer_id`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::errors::code;
use ottla_storage::error::Result;
use ottla_storage::log::producer_state::{self, ProducerStateManager, SeqError};
use ottla_storage::log::PartitionLog;

pub use ottla_storage::log::producer_state::{BatchSeq, ProducerSnapshot};

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already in the log at this base offset.
    Duplicate(i64),
    Reject(i16),
}

/// The producers of one partition. Lock it across check + append + record.
#[derive(Clone, Default)]
pub struct PartitionProducers {
    pub state: ProducerStateManager,
    loaded: bool,
}

impl PartitionProducers {
    pub fn check(&self, b: &BatchSeq) -> Verdict {
        match self.state.check(b) {
            producer_state::Verdict::Append => Verdict::Append,
            producer_state::Verdict::Duplicate(o) => Verdict::Duplicate(o),
            producer_state::Verdict::Reject(SeqError::StaleEpoch) => {
                Verdict::Reject(code::INVALID_PRODUCER_EPOCH)
            }
            producer_state::Verdict::Reject(SeqError::OutOfOrder) => {
                Verdict::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
            }
        }
    }

    /// Remember an appended batch.
    pub fn record(&mut self, b: &BatchSeq, base_offset: i64) {
        self.state
            .record(b, base_offset, ottla_storage::log::now_ms());
    }
}

type SharedProducers = Arc<Mutex<PartitionProducers>>;

/// A partition's producers, and whether they are loaded: readable without
/// the producers' lock, which a rebuild holds while it reads the log.
#[derive(Clone, Default)]
struct Slot {
    producers: SharedProducers,
    loaded: Arc<AtomicBool>,
}

/// Every partition's producers.
#[derive(Default)]
pub struct ProducerTable {
    partitions: Mutex<HashMap<(String, u32), Slot>>,
}

impl ProducerTable {
    fn slot(&self, topic: &str, partition: u32) -> Slot {
        self.partitions
            .lock()
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// The producers of `log`'s partition, rebuilt from the log on first
    /// use. Blocking (the rebuild reads the log); the table itself is not
    /// locked meanwhile, so other partitions are not held up.
    pub fn partition(&self, log: &PartitionLog) -> Result<SharedProducers> {
        let slot = self.slot(log.topic(), log.partition());
        {
            // Caught up on every use: embedded producers in other
            // processes may append to the partition (and end transactions
            // in it) too.
            let mut p = slot.producers.lock();
            if !p.loaded {
                p.state = ProducerStateManager::rebuild(log)?;
                p.loaded = true;
                slot.loaded.store(true, Ordering::Release);
            } else {
                p.state.catch_up(log)?;
            }
        }
        Ok(slot.producers)
    }

    /// The producers Produce checks `log`'s batches against: the
    /// partition's (loaded if need be) when a batch has a producer id or
    /// they are loaded already; otherwise an empty state of its own. Plain
    /// batches (no producer id) neither need nor change producer state, so
    /// a plain producer never pays for reading the partition.
    pub fn for_append(&self, log: &PartitionLog, with_producer: bool) -> Result<SharedProducers> {
        if with_producer {
            return self.partition(log);
        }
        Ok(self
            .loaded(log.topic(), log.partition())
            .unwrap_or_default())
    }

    /// The producers of a partition if the broker has loaded them.
    pub fn loaded(&self, topic: &str, partition: u32) -> Option<SharedProducers> {
        let slot = self
            .partitions
            .lock()
            .get(&(topic.to_string(), partition))
            .cloned()?;
        slot.loaded
            .load(Ordering::Acquire)
            .then_some(slot.producers)
    }

    /// Forget one partition's producers (its log was truncated): the next
    /// use rebuilds them from the log.
    pub fn forget_partition(&self, topic: &str, partition: u32) {
        self.partitions
            .lock()
            .remove(&(topic.to_string(), partition));
    }

    /// Forget a deleted topic's producers.
    pub fn forget_topic(&self, topic: &str) {
        self.partitions.lock().retain(|(t, _), _| t != topic);
    }

    /// The producers of a partition, by id (none before it is loaded).
    pub fn snapshot(&self, topic: &str, partition: u32) -> Vec<ProducerSnapshot> {
        self.loaded(topic, partition)
            .map_or_else(Vec::new, |p| p.lock().state.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, count: i32) -> BatchSeq {
        BatchSeq {
            producer_id: 7,
            epoch: 0,
            first,
            count,
            transactional: false,
        }
    }

    #[test]
    fn refusals_are_kafka_codes() {
        let mut p = PartitionProducers::default();
        assert_eq!(p.check(&b(0, 3)), Verdict::Append);
        p.record(&b(0, 3), 100);
        assert_eq!(p.check(&b(0, 3)), Verdict::Duplicate(100));
        assert_eq!(
            p.check(&b(4, 2)),
            Verdict::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        p.record(
            &BatchSeq {
                epoch: 1,
                ..b(0, 1)
            },
            103,
        );
        assert_eq!(
            p.check(&b(3, 1)),
            Verdict::Reject(code::INVALID_PRODUCER_EPOCH)
        );
        // Non-idempotent batches are never checked.
        let plain = BatchSeq {
            producer_id: -1,
            ..b(0, 1)
        };
        assert_eq!(p.check(&plain), Verdict::Append);
    }
}
