//! Idempotent producers: de-duplication of retried batches by (producer id,
//! epoch, sequence) per partition (Kafka's ProducerStateManager, which also
//! lives beside the log).
//!
//! A client with `enable.idempotence` numbers its batches per partition. A
//! batch whose sequence range matches one of the last few appended for that
//! producer is a retry of a batch already in the log: it is acknowledged with
//! the original offset and not stored again. A gap in the numbering is
//! refused (OUT_OF_ORDER_SEQUENCE_NUMBER) so the client can react.
//!
//! The state lives in the broker's memory. The ids themselves come from
//! `coordinator::producer_id`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::errors::code;

/// How many recent batches per producer are remembered (Kafka keeps five,
/// the most a client has in flight).
const RECENT: usize = 5;

/// The producer fields of one batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchSeq {
    pub producer_id: i64,
    pub epoch: i16,
    pub first: i32,
    pub count: i32,
}

impl BatchSeq {
    fn last(&self) -> i32 {
        ((self.first as i64 + self.count as i64 - 1) % (i32::MAX as i64 + 1)) as i32
    }
}

#[derive(Clone, Debug)]
struct Entry {
    epoch: i16,
    last_seq: i32,
    /// When the last batch was appended (ms), for DescribeProducers.
    last_timestamp: i64,
    /// (first sequence, last sequence, base offset) of recent batches.
    recent: VecDeque<(i32, i32, i64)>,
}

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
    by_id: HashMap<i64, Entry>,
}

impl PartitionProducers {
    pub fn check(&self, b: &BatchSeq) -> Verdict {
        if b.producer_id < 0 {
            return Verdict::Append;
        }
        let Some(e) = self.by_id.get(&b.producer_id) else {
            return Verdict::Append;
        };
        if b.epoch < e.epoch {
            return Verdict::Reject(code::INVALID_PRODUCER_EPOCH);
        }
        if b.epoch > e.epoch {
            return if b.first == 0 {
                Verdict::Append
            } else {
                Verdict::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some((_, _, off)) = e
            .recent
            .iter()
            .find(|(f, l, _)| *f == b.first && *l == b.last())
        {
            return Verdict::Duplicate(*off);
        }
        let next = ((e.last_seq as i64 + 1) % (i32::MAX as i64 + 1)) as i32;
        if b.first == next {
            Verdict::Append
        } else {
            Verdict::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        }
    }

    /// Remember an appended batch.
    pub fn record(&mut self, b: &BatchSeq, base_offset: i64) {
        if b.producer_id < 0 {
            return;
        }
        let e = self.by_id.entry(b.producer_id).or_insert(Entry {
            epoch: b.epoch,
            last_seq: -1,
            last_timestamp: -1,
            recent: VecDeque::new(),
        });
        if b.epoch != e.epoch {
            e.epoch = b.epoch;
            e.recent.clear();
        }
        e.last_seq = b.last();
        e.last_timestamp = ottla_storage::log::now_ms();
        e.recent.push_back((b.first, b.last(), base_offset));
        while e.recent.len() > RECENT {
            e.recent.pop_front();
        }
    }
}

/// One producer's state as DescribeProducers shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSnapshot {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// When its last batch was appended (ms; Kafka shows the batch's
    /// largest timestamp, which a producer's clock sets).
    pub last_timestamp: i64,
}

impl PartitionProducers {
    fn snapshot(&self) -> Vec<ProducerSnapshot> {
        let mut out: Vec<ProducerSnapshot> = self
            .by_id
            .iter()
            .map(|(id, e)| ProducerSnapshot {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_seq,
                last_timestamp: e.last_timestamp,
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
    }
}

type SharedProducers = Arc<Mutex<PartitionProducers>>;

/// Every partition's producers.
#[derive(Default)]
pub struct ProducerTable {
    partitions: Mutex<HashMap<(String, u32), SharedProducers>>,
}

impl ProducerTable {
    pub fn partition(&self, topic: &str, partition: u32) -> Arc<Mutex<PartitionProducers>> {
        self.partitions
            .lock()
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// Forget a deleted topic's producers.
    pub fn forget_topic(&self, topic: &str) {
        self.partitions.lock().retain(|(t, _), _| t != topic);
    }

    /// The producers of a partition, by id (none for one never appended to).
    pub fn snapshot(&self, topic: &str, partition: u32) -> Vec<ProducerSnapshot> {
        let found = self
            .partitions
            .lock()
            .get(&(topic.to_string(), partition))
            .cloned();
        found.map_or_else(Vec::new, |p| p.lock().snapshot())
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
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut p = PartitionProducers::default();
        assert_eq!(p.check(&b(0, 3)), Verdict::Append);
        p.record(&b(0, 3), 100);
        assert_eq!(p.check(&b(0, 3)), Verdict::Duplicate(100));
        assert_eq!(p.check(&b(3, 2)), Verdict::Append);
        p.record(&b(3, 2), 103);
        assert_eq!(p.check(&b(3, 2)), Verdict::Duplicate(103));
        assert_eq!(p.check(&b(0, 3)), Verdict::Duplicate(100));
        assert_eq!(
            p.check(&b(9, 1)),
            Verdict::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let old = BatchSeq {
            epoch: -1,
            ..b(5, 1)
        };
        assert_eq!(p.check(&old), Verdict::Reject(code::INVALID_PRODUCER_EPOCH));
        let bumped = BatchSeq {
            epoch: 1,
            ..b(0, 1)
        };
        assert_eq!(p.check(&bumped), Verdict::Append);
        // Sequences wrap at i32::MAX.
        let mut w = PartitionProducers::default();
        w.record(&b(i32::MAX - 1, 2), 5);
        assert_eq!(w.check(&b(0, 1)), Verdict::Append);
        // Non-idempotent batches are never checked.
        let plain = BatchSeq {
            producer_id: -1,
            ..b(0, 1)
        };
        assert_eq!(p.check(&plain), Verdict::Append);
    }
}
