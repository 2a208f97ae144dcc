//! The last stable offset (KIP-98) and what a read_committed reader sees:
//! batches below the LSO (the first offset of the partition's earliest
//! open transaction, or the high watermark when none is open), and the
//! aborted transactions overlapping them, so the consumer can drop their
//! records. The producer state behind both is `idempotence`'s.

use bytes::Bytes;

use super::read::Cursors;
use super::{ReadResult, ReplicaManager};
use crate::errors::{code, kafka_code};
use ottla_record::batch::{peek_total_size, BatchHeader};
use ottla_storage::log::txn_index::AbortedTxn;
use ottla_storage::store::Topic;

/// Kafka's isolation levels (Fetch, ListOffsets).
pub const READ_COMMITTED: i8 = 1;

/// What a read_committed Fetch of one partition adds to its answer.
pub struct Stable {
    pub last_stable_offset: i64,
    pub aborted: Vec<AbortedTxn>,
}

/// The prefix of `bytes` made of whole batches ending below `lso`, and the
/// offset after its last batch (`None` when it has none).
fn below(bytes: &Bytes, lso: i64) -> (usize, Option<i64>) {
    let mut at = 0usize;
    let mut next = None;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let (Some(size), Some(h)) = (peek_total_size(rest), BatchHeader::parse(rest)) else {
            break;
        };
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if h.last_offset() >= lso || size > rest.len() {
            break;
        }
        at += size;
        next = Some(h.next_offset());
    }
    (at, next)
}

impl ReplicaManager {
    /// A partition's last stable offset for a high watermark of `hw`, when
    /// its producer state is loaded; `hw` otherwise (a read_uncommitted
    /// Fetch does not load it: that would read the whole partition).
    pub fn peek_last_stable_offset(&self, topic: &str, partition: i32, hw: i64) -> i64 {
        u32::try_from(partition)
            .ok()
            .and_then(|p| self.producers.loaded(topic, p))
            .map_or(hw, |s| s.lock().state.last_stable_offset(hw))
    }

    /// The last stable offset of a partition (ListOffsets latest under
    /// read_committed), loading its producer state if needed. Blocking.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<i64, i16> {
        let p = u32::try_from(partition).map_err(|_| code::UNKNOWN_TOPIC_OR_PARTITION)?;
        let log = self
            .store
            .partition_by_name(topic, p)
            .map_err(|e| kafka_code(&e))?;
        let hw = log.high_watermark().map_err(|e| kafka_code(&e))?;
        let state = self.producers.partition(&log).map_err(|e| kafka_code(&e))?;
        let lso = state.lock().state.last_stable_offset(hw);
        Ok(lso)
    }

    /// Cut a read of `topic`-`partition` from `fetch_offset` to what a
    /// read_committed consumer may see, and find the aborted transactions
    /// in it. A cut read forgets the connection's read cursor (it moved
    /// past what was returned). Blocking.
    pub fn read_committed(
        &self,
        cursors: &mut Cursors,
        topic: &Topic,
        name: &str,
        partition: i32,
        fetch_offset: i64,
        read: &mut ReadResult,
    ) -> Option<Stable> {
        let (_, hw) = read.offsets?;
        if read.error != code::NONE {
            return None;
        }
        let log = self.store.partition(topic, u32::try_from(partition).ok()?);
        let state = match log.and_then(|l| self.producers.partition(&l)) {
            Ok(s) => s,
            Err(e) => {
                *read = ReadResult::error(kafka_code(&e));
                return None;
            }
        };
        let state = state.lock();
        let lso = state.state.last_stable_offset(hw);
        let mut upper = None;
        if let Some(records) = &read.records {
            let (keep, next) = below(records, lso);
            if keep < records.len() {
                read.records = Some(records.slice(..keep));
                if let Some((_, cursor)) = cursors.get_mut(&(name.to_string(), partition as u32)) {
                    *cursor = None;
                }
            }
            upper = next;
        }
        let aborted = upper
            .map(|u| state.state.aborted_txns(fetch_offset, u.min(lso)))
            .unwrap_or_default();
        Some(Stable {
            last_stable_offset: lso,
            aborted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ottla_record::batch::set_base_offset;

    fn batches(bases: &[i64]) -> Bytes {
        let mut out = Vec::new();
        for base in bases {
            let mut b = ottla_record::BatchBuilder::with_capacity(128);
            b.append(1, None, Some(b"a"), &[]);
            b.append(1, None, Some(b"b"), &[]);
            let mut v = b.finish().to_vec();
            set_base_offset(&mut v, *base);
            out.extend_from_slice(&v);
        }
        Bytes::from(out)
    }

    #[test]
    fn only_whole_batches_below_the_lso_are_kept() {
        let b = batches(&[0, 2, 4]);
        let one = b.len() / 3;
        assert_eq!(below(&b, 100), (b.len(), Some(6)));
        assert_eq!(below(&b, 4), (2 * one, Some(4)));
        assert_eq!(below(&b, 3), (one, Some(2)));
        assert_eq!(below(&b, 0), (0, None));
        assert_eq!(below(&Bytes::new(), 5), (0, None));
    }
}
