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
    /// KIP-890's verification guards: producer id -> its last offset in
    /// the partition when the coordinator confirmed that its open
    /// transaction has this partition. A transactional batch that would
    /// open a transaction here is appended only against a guard still at
    /// that offset (no marker ended the transaction meanwhile), and uses
    /// it up.
    guards: HashMap<i64, Option<i64>>,
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

    /// Whether a transactional batch of `producer_id` would open a
    /// transaction in this partition (none of its is open here).
    pub fn opens_txn(&self, producer_id: i64) -> bool {
        self.state.txn_first_offset(producer_id).is_none()
    }

    /// Before asking the coordinator about `producer_id`: `None` when its
    /// transaction is open here already (nothing to verify), else where the
    /// producer stands, to hand to [`PartitionProducers::verified`].
    pub fn verification_start(&self, producer_id: i64) -> Option<Option<i64>> {
        self.opens_txn(producer_id)
            .then(|| self.state.last_offset_of(producer_id))
    }

    /// The coordinator confirmed the transaction of `producer_id`, asked
    /// when it stood at `at`: keep a guard, unless a marker ended a
    /// transaction of its here meanwhile (then false: not verified).
    pub fn verified(&mut self, producer_id: i64, at: Option<i64>) -> bool {
        if self.state.last_offset_of(producer_id) != at {
            return false;
        }
        self.guards.insert(producer_id, at);
        true
    }

    /// Use up `producer_id`'s guard to open a transaction: true if there
    /// was one and no marker came since it was taken.
    pub fn take_guard(&mut self, producer_id: i64) -> bool {
        self.guards
            .remove(&producer_id)
            .is_some_and(|at| at == self.state.last_offset_of(producer_id))
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
    fn a_marker_voids_a_transactions_verification() {
        use ottla_record::batch::ControlType;
        let tx = |first| BatchSeq {
            transactional: true,
            ..b(first, 1)
        };
        let mut p = PartitionProducers::default();
        // Opening a transaction needs a guard, used up by the append.
        let at = p.verification_start(7).expect("opens a transaction");
        assert!(!p.take_guard(7), "no guard before the coordinator's word");
        assert!(p.verified(7, at));
        assert!(p.take_guard(7));
        assert!(!p.take_guard(7), "a guard serves once");
        p.record(&tx(0), 10);
        assert_eq!(p.verification_start(7), None, "open here: nothing to ask");
        p.state.complete_txn(7, 0, ControlType::Commit, 0, 11, 0);

        // A marker between the question and the answer: not verified.
        let at = p.verification_start(7).expect("closed again");
        p.state.complete_txn(7, 0, ControlType::Abort, 0, 12, 0);
        assert!(!p.verified(7, at));
        assert!(!p.take_guard(7));

        // A marker between the answer and the append: the guard is void.
        let at = p.verification_start(7).expect("closed");
        assert!(p.verified(7, at));
        p.state.complete_txn(7, 0, ControlType::Abort, 0, 13, 0);
        assert!(!p.take_guard(7));
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
