//! The aborted-transaction index of a partition (Kafka's `TransactionIndex`,
//! the `.txnindex` beside each segment): for every aborted transaction, the
//! producer id, its first offset, the offset of its ABORT marker, and the
//! last stable offset when it was aborted. A read_committed Fetch returns
//! the entries that overlap the range it returns, and the consumer drops
//! those producers' records from each entry's first offset until the
//! marker.
//!
//! Kept in memory and rebuilt with the producer state when a partition is
//! first used (`producer_state::ProducerStateManager::rebuild`: from the
//! `.txnindex` files of a partition's segments, Kafka's, then the log after
//! its snapshot; compacted partitions keep none and scan the log). The log
//! cleaner removes an aborted transaction's batches before its ABORT marker
//! (`log::cleaner::txn`), so a rebuilt index covers every aborted batch
//! still in the log.

use ottla_record::batch::{peek_total_size, BatchHeader};

/// The prefix of `bytes` made of whole batches ending below `lso`, and the
/// offset after its last batch (`None` when it has none): what a
/// read_committed reader may see of a read (Fetch in the broker, the
/// embedded consumer's fetcher).
pub fn stable_prefix(bytes: &[u8], lso: i64) -> (usize, Option<i64>) {
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

/// Whether the data batch `h` belongs to one of the `aborted` transactions
/// (its producer's, from the transaction's first offset to its marker): a
/// read_committed reader drops it, as Kafka's consumer does.
pub fn in_aborted(aborted: &[AbortedTxn], h: &BatchHeader) -> bool {
    h.is_transactional()
        && !h.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.base_offset < a.last_offset
        })
}

/// One aborted transaction (Kafka's `AbortedTxn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of the ABORT marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the abort completed.
    pub last_stable_offset: i64,
}

/// The aborted transactions of one partition, in marker order.
#[derive(Clone, Debug, Default)]
pub struct TxnIndex {
    entries: Vec<AbortedTxn>,
}

impl TxnIndex {
    pub fn push(&mut self, a: AbortedTxn) {
        self.entries.push(a);
    }

    /// Every aborted transaction that overlaps `[fetch_offset, upper)`
    /// (Kafka's `collectAbortedTxns`): its marker at or after the fetch
    /// offset and its first record below the upper bound.
    pub fn collect(&self, fetch_offset: i64, upper: i64) -> Vec<AbortedTxn> {
        // Markers are in offset order: skip the ones before the fetch.
        let from = self
            .entries
            .partition_point(|a| a.last_offset < fetch_offset);
        self.entries[from..]
            .iter()
            .filter(|a| a.first_offset < upper)
            .copied()
            .collect()
    }

    /// Forget transactions wholly below the log start (deleted by
    /// retention or DeleteRecords).
    pub fn truncate_below(&mut self, log_start: i64) {
        self.entries.retain(|a| a.last_offset >= log_start);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn collect_returns_the_transactions_overlapping_the_range() {
        let mut ix = TxnIndex::default();
        ix.push(a(1, 0, 10));
        ix.push(a(2, 5, 20));
        ix.push(a(3, 30, 40));
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(ix.collect(0, 100)), vec![1, 2, 3]);
        // A fetch from 11 no longer sees the first one (its marker is before).
        assert_eq!(pids(ix.collect(11, 100)), vec![2, 3]);
        // Nor one that starts at or past the end of what is returned.
        assert_eq!(pids(ix.collect(11, 30)), vec![2]);
        assert_eq!(pids(ix.collect(41, 100)), Vec::<i64>::new());
        ix.truncate_below(15);
        assert_eq!(pids(ix.collect(0, 100)), vec![2, 3]);
        assert_eq!(ix.len(), 2);
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;
    use ottla_record::batch::set_base_offset;

    fn batches(bases: &[i64]) -> Vec<u8> {
        let mut out = Vec::new();
        for base in bases {
            let mut b = ottla_record::BatchBuilder::with_capacity(128);
            b.append(1, None, Some(b"a"), &[]);
            b.append(1, None, Some(b"b"), &[]);
            let mut v = b.finish().to_vec();
            set_base_offset(&mut v, *base);
            out.extend_from_slice(&v);
        }
        out
    }

    #[test]
    fn only_whole_batches_below_the_lso_are_kept() {
        let b = batches(&[0, 2, 4]);
        let one = b.len() / 3;
        assert_eq!(stable_prefix(&b, 100), (b.len(), Some(6)));
        assert_eq!(stable_prefix(&b, 4), (2 * one, Some(4)));
        assert_eq!(stable_prefix(&b, 3), (one, Some(2)));
        assert_eq!(stable_prefix(&b, 0), (0, None));
        assert_eq!(stable_prefix(&[], 5), (0, None));
    }
}
