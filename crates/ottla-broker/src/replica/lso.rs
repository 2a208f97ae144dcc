//! The last stable offset (KIP-98) and what a read_committed reader sees:
//! batches below the LSO (the first offset of the partition's earliest
//! open transaction, or the high watermark when none is open), and the
//! aborted transactions overlapping them, so the consumer can drop their
//! records. The producer state behind both is `idempotence`'s.

use super::read::Cursors;
use super::{ReadResult, ReplicaManager};
use crate::errors::{code, kafka_code};
use ottla_storage::log::txn_index::{stable_prefix, AbortedTxn};
use ottla_storage::store::Topic;

/// Kafka's isolation levels (Fetch, ListOffsets).
pub const READ_COMMITTED: i8 = 1;

/// What a read_committed Fetch of one partition adds to its answer.
pub struct Stable {
    pub last_stable_offset: i64,
    pub aborted: Vec<AbortedTxn>,
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
            let (keep, next) = stable_prefix(records, lso);
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
