//! What the log cleaner does with transactions (Kafka's
//! `CleanedTransactionMetadata` and the batch rules of `LogCleaner`):
//!
//! * the cleanable range stops at the **first unstable offset** (the first
//!   offset of the earliest open transaction): an open transaction's
//!   batches are never cleaned, whatever they turn out to be;
//! * the batches of an **aborted** transaction (from its first batch to its
//!   ABORT marker, as the aborted-transaction index has it) are removed
//!   whole, and their keys stay out of the offset map, so an aborted record
//!   never supersedes a committed one;
//! * a **committed** transactional batch is compacted record by record like
//!   any other (its producer id, epoch, base sequence and transactional bit
//!   kept);
//! * a **marker** (control batch) stays while the pass read a batch of its
//!   transaction: a transaction's batches all precede its marker, and every
//!   pass reads every closed segment from the log start, so a marker whose
//!   pass read none of them has no record left below it. The first such
//!   pass stamps it with a delete horizon (KIP-534: attribute bit 6, now +
//!   `delete.retention.ms` in `baseTimestamp`), a pass after the horizon
//!   removes it;
//! * each producer's **last batch** is kept (emptied if need be): its last
//!   data batch, or, when a marker of a newer epoch started its sequences
//!   over, its markers of the current epoch, kept whole. A producer state
//!   rebuilt from the cleaned log (compacted partitions keep no snapshots:
//!   theirs is always rebuilt by a scan) then still knows every producer's
//!   epoch and last sequence.
//!
//! **The read_committed invariant.** A read_committed reader drops a
//! transactional batch when the aborted-transaction index (rebuilt from the
//! ABORT markers in the log) covers it. Aborted batches go in the pass that
//! first cleans them, and their marker in a later pass (one that read none
//! of them), so no state rebuilt from the log ever lacks the entry for an
//! aborted batch still in it. Likewise a COMMIT marker outlives its
//! transaction's batches, so a rebuilt state never takes a committed batch
//! for the start of an open transaction (which would hold the last stable
//! offset back forever).

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::log::producer_state::ProducerStateManager;
use crate::log::PartitionLog;
use ottla_record::batch::BatchHeader;

/// What one pass knows of the partition's transactions before it cleans:
/// read from the whole log (the producer state's rebuild), so markers in
/// the uncleanable part count too.
pub(super) struct TxnPlan {
    /// Aborted transactions by producer: (first offset, ABORT marker offset).
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    /// Each producer's last data batch (base offset) and epoch.
    last: HashMap<i64, (Option<i64>, i16)>,
    /// The first offset of the earliest open transaction.
    pub first_unstable: Option<i64>,
}

impl TxnPlan {
    pub fn build(log: &PartitionLog) -> Result<TxnPlan> {
        let st = ProducerStateManager::rebuild_from_log(log)?;
        let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for a in st.aborted_txns(i64::MIN, i64::MAX) {
            aborted
                .entry(a.producer_id)
                .or_default()
                .push((a.first_offset, a.last_offset));
        }
        Ok(TxnPlan {
            aborted,
            last: st.last_records(),
            first_unstable: st.first_unstable_offset(),
        })
    }

    /// Whether `h` is a data batch of an aborted transaction.
    pub fn is_aborted(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && self.aborted.get(&h.producer_id).is_some_and(|v| {
                v.iter()
                    .any(|(first, marker)| *first <= h.base_offset && h.base_offset < *marker)
            })
    }

    /// Whether `h` holds its producer's last state (see the module docs):
    /// kept, emptied of its records if need be.
    pub fn is_last_of_producer(&self, h: &BatchHeader) -> bool {
        h.producer_id >= 0
            && self
                .last
                .get(&h.producer_id)
                .is_some_and(|(data, epoch)| match data {
                    Some(base) => !h.is_control() && h.base_offset == *base,
                    None => h.is_control() && h.producer_epoch == *epoch,
                })
    }
}

/// The producers whose current transaction the pass has read a batch of
/// (Kafka's ongoing committed and aborted transactions), across the pass's
/// groups, in offset order.
#[derive(Default)]
pub(super) struct TxnTracker {
    open: HashSet<i64>,
}

impl TxnTracker {
    /// A data batch was read.
    pub fn on_data(&mut self, h: &BatchHeader) {
        if h.is_transactional() && h.producer_id >= 0 {
            self.open.insert(h.producer_id);
        }
    }

    /// A marker was read: whether its transaction has no batch left (the
    /// marker may then be stamped with a horizon, and removed past it).
    pub fn on_marker(&mut self, h: &BatchHeader) -> bool {
        !self.open.remove(&h.producer_id)
    }
}
