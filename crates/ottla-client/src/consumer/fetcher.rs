//! Handing out records (Kafka's `Fetcher`): whole batches are read from a
//! partition's log into one buffer, a compressed batch's records are
//! inflated once, and records are walked in place and handed to the
//! caller's function as borrowed views, round-robin over the unpaused
//! assigned partitions.
//!
//! Invariants: a partition's position is the offset after the last record
//! handed out (or a batch's end, when offsets skip); a record the caller
//! refuses is not handed out and the position stays on it; records handed
//! out before an error reach the caller, and the error waits in the
//! partition's fetch for the next call. `next_in_batch` is exactly
//! `drain(1, ..)` restricted to the case of a record in the middle of a
//! batch, and moves no state when it declines.

use std::sync::atomic::Ordering;

use ottla_record::batch::{BatchHeader, RecordIter, RecordView, HEADER_LEN};
use ottla_record::decode::inflate;
use ottla_storage::error::{Error, Result};
use ottla_storage::log::producer_state::ProducerStateManager;
use ottla_storage::log::txn_index::{in_aborted, stable_prefix, AbortedTxn};
use ottla_storage::log::PartitionLog;

use super::subscription::Assigned;
use super::{Consumer, Inner, TopicPartition};

/// The batch being handed out, and how far into it we are.
pub(super) struct Fetch {
    pub(super) data: Vec<u8>,
    /// Start of the current batch in `data`.
    pub(super) batch_at: usize,
    pub(super) header: Option<BatchHeader>,
    pub(super) iter_state: (usize, i32),
    /// The current batch's records, inflated, when its producer compressed it.
    pub(super) inflated: Option<Vec<u8>>,
    /// Error met after the fetched bytes (corruption), raised when reached.
    pub(super) error: Option<Error>,
    /// read_committed: the aborted transactions among the fetched batches.
    pub(super) aborted: Vec<AbortedTxn>,
}

impl Fetch {
    /// Nothing left to hand out but `error`, raised when the partition is
    /// next drained.
    fn failed(error: Error) -> Fetch {
        Fetch {
            data: Vec::new(),
            batch_at: 0,
            header: None,
            iter_state: (0, 0),
            inflated: None,
            error: Some(error),
            aborted: Vec::new(),
        }
    }
}

impl Consumer {
    /// Hand out up to `max` records to `f`, round-robin over partitions,
    /// without waiting. Returns how many were handed out.
    pub fn drain(
        &self,
        max: usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>),
    ) -> Result<usize> {
        self.drain_while(max, &mut |tp, rec| {
            f(tp, rec);
            true
        })
    }

    /// Like [`Consumer::drain`], but `f` may refuse a record (return
    /// false): the call then ends, and the refused record is not handed
    /// out: its partition's position stays on it, so the next call (or a
    /// commit) starts there. This is how a caller bounds a result by bytes
    /// or stops at an offset without losing a record.
    pub fn drain_while(
        &self,
        max: usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>) -> bool,
    ) -> Result<usize> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        // Moved with `inner` locked (see `next_in_batch`).
        self.polls
            .store(self.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.group_needs_attention(&inner) {
            drop(inner);
            self.group_step()?;
            inner = self.inner.lock();
            Self::check_open(&inner)?;
        }
        self.refresh_subscription(&mut inner)?;
        self.check_assigned_live(&mut inner)?;
        self.maybe_auto_commit(&mut inner)?;
        let n = inner.assignment.len();
        let mut count = 0;
        let start = inner.next_rr;
        for i in 0..n {
            if count >= max {
                break;
            }
            let idx = (start + i) % n;
            let a = &mut inner.assignment[idx];
            if a.paused {
                continue;
            }
            let refused = match self.drain_partition(a, max, &mut count, f) {
                Ok(refused) => refused,
                // Records already handed out in this call must reach the
                // caller (their positions have moved past them): the error
                // waits in the partition's fetch and is raised by the next
                // call, unless a seek or reassignment makes it moot.
                // The next call starts after the failing partition, so
                // one bad batch cannot starve the others.
                Err(e) if count > 0 => {
                    a.fetch = Some(Fetch::failed(e));
                    inner.next_rr = (idx + 1) % n;
                    return Ok(count);
                }
                Err(e) => {
                    inner.next_rr = (idx + 1) % n;
                    return Err(e);
                }
            };
            if count >= max || refused {
                // Fairness: resume with this partition next time only to
                // finish a batch it was reached in the middle of this call;
                // a partition that had the whole call hands over, so one
                // with a deep backlog (or a busy producer) cannot starve the
                // others. Its fetch is kept, so nothing is lost or re-read.
                let mid_batch = inner.assignment[idx]
                    .fetch
                    .as_ref()
                    .is_some_and(|f| f.header.is_some() && f.iter_state.1 > 0);
                inner.next_rr = if mid_batch && idx != start {
                    idx
                } else {
                    (idx + 1) % n
                };
                return Ok(count);
            }
        }
        inner.next_rr = (start + 1) % n.max(1);
        Ok(count)
    }

    /// The per-record path of iteration: hand `f` the next record when it
    /// is simply the next one of the batch that the partition whose turn it
    /// is stands in the middle of, and return what `f` returned. `Ok(None)`
    /// means "not that simple" (a batch or fetch boundary, group work, a
    /// changed subscription, a record to skip or a decoding error, nothing
    /// to read): nothing was handed out and no state moved, so the caller
    /// falls back to [`Consumer::drain`], which does all of that.
    ///
    /// Exactly equivalent to `drain(1, f)` when it hands a record out: the
    /// same record, the same position afterwards (the record's offset + 1,
    /// or the batch's end after its last record), and the same next
    /// partition in the round-robin. It only skips what `drain` would find
    /// there is nothing to do for (no refetch, no batch change).
    pub fn next_in_batch<R>(
        &self,
        f: impl FnOnce(&TopicPartition, &RecordView<'_>) -> R,
    ) -> Result<Option<R>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        Self::check_open(inner)?;
        // Moved with `inner` locked, so a plain load and store (no locked
        // read-modify-write) loses no step; and the watchdog only looks
        // for change, which a lost step could not hide.
        self.polls
            .store(self.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.group_needs_attention(inner)
            || !self.subscription_current(inner)
            || !self.assignment_checked(inner)
        {
            return Ok(None);
        }
        self.maybe_auto_commit(inner)?;
        let n = inner.assignment.len();
        let idx = inner.next_rr;
        let Some(a) = inner.assignment.get_mut(idx) else {
            return Ok(None);
        };
        let (false, Some(position), Some(fetch)) = (a.paused, a.position, a.fetch.as_mut()) else {
            return Ok(None);
        };
        // A batch being walked; control batches and batches already behind
        // the position are stepped over by `drain` with `iter_state.1 == 0`.
        let Some(h) = fetch.header.filter(|_| fetch.iter_state.1 > 0) else {
            return Ok(None);
        };
        let body = match &fetch.inflated {
            Some(inflated) => inflated.as_slice(),
            None => match fetch
                .data
                .get(fetch.batch_at + HEADER_LEN..fetch.batch_at + h.total_size())
            {
                Some(body) => body,
                None => return Ok(None),
            },
        };
        let mut it = RecordIter::resume(h, body, fetch.iter_state);
        let rec = match it.next() {
            Some(Ok(rec)) if rec.offset >= position => rec,
            // A record below the position (skipped by `drain`) or a
            // decoding error (raised by `drain`, after the same walk).
            _ => return Ok(None),
        };
        let out = f(&a.tp, &rec);
        let mut position = rec.offset + 1;
        fetch.iter_state = it.state();
        if fetch.iter_state.1 <= 0 {
            // Offsets may skip (compaction): the batch's end is authoritative.
            position = position.max(h.next_offset());
        }
        a.position = Some(position);
        // As `drain` leaves it after one record taken from the partition it
        // started at: the turn passes on.
        inner.next_rr = if idx + 1 < n { idx + 1 } else { 0 };
        Ok(Some(out))
    }

    /// Hand out records of one partition until `*count` (the call's total)
    /// reaches `max`. Returns whether `f` refused a record. On an error,
    /// `a.position` is the offset after the last record handed out.
    fn drain_partition(
        &self,
        a: &mut Assigned,
        max: usize,
        count: &mut usize,
        f: &mut dyn FnMut(&TopicPartition, &RecordView<'_>) -> bool,
    ) -> Result<bool> {
        let mut position = self.resolve(a)?;
        let mut refetched = false;
        while *count < max {
            if a.fetch.is_none() {
                if refetched {
                    break;
                }
                refetched = true;
                let lso = if self.config.read_committed {
                    let lso = Self::last_stable_offset(a)?;
                    if position >= lso {
                        break;
                    }
                    Some(lso)
                } else {
                    None
                };
                let mut fetched = match a.log.read(
                    position,
                    self.config.max_partition_fetch_bytes,
                    &mut a.cursor,
                    self.config.check_crcs,
                ) {
                    Ok(f) => f,
                    Err(e @ Error::OffsetOutOfRange { .. }) => {
                        position = self.reset_position(a, Some(e))?;
                        refetched = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut aborted = Vec::new();
                if let (Some(lso), Some(st)) = (lso, a.producers.as_ref()) {
                    // Only whole batches below the last stable offset; the
                    // cursor moved past what is kept, so it is dropped.
                    let (keep, next) = stable_prefix(&fetched.bytes, lso);
                    if keep < fetched.bytes.len() {
                        fetched.bytes.truncate(keep);
                        fetched.error = None;
                        a.cursor = None;
                    }
                    if let Some(upper) = next {
                        aborted = st.aborted_txns(position, upper.min(lso));
                    }
                }
                if fetched.bytes.is_empty() {
                    if let Some(e) = fetched.error {
                        return Err(e);
                    }
                    break;
                }
                a.fetch = Some(Fetch {
                    data: fetched.bytes,
                    batch_at: 0,
                    header: None,
                    iter_state: (0, 0),
                    inflated: None,
                    error: fetched.error,
                    aborted,
                });
            }
            let Some(fetch) = a.fetch.as_mut() else { break };
            // Move to the next batch when the current one is used up.
            if fetch.header.is_none() || fetch.iter_state.1 <= 0 {
                if let Some(h) = fetch.header.take() {
                    fetch.batch_at += h.total_size();
                }
                if fetch.batch_at + HEADER_LEN > fetch.data.len() {
                    let err = fetch.error.take();
                    a.fetch = None;
                    if let Some(e) = err {
                        // With records handed out, the caller defers it.
                        return Err(e);
                    }
                    continue;
                }
                let Some(h) = BatchHeader::parse(&fetch.data[fetch.batch_at..]) else {
                    a.fetch = None;
                    continue;
                };
                if h.is_control() || h.next_offset() <= position || in_aborted(&fetch.aborted, &h) {
                    fetch.header = Some(h);
                    fetch.iter_state = (0, 0);
                    position = position.max(h.next_offset());
                    a.position = Some(position);
                    continue;
                }
                let end = fetch.batch_at + h.total_size();
                let Some(batch) = fetch.data.get(fetch.batch_at..end) else {
                    a.fetch = None;
                    continue;
                };
                fetch.inflated = inflate(&h, batch).map_err(|e| match Error::from(e) {
                    Error::InvalidRecord(why) => Error::InvalidRecord(format!(
                        "{}-{} batch at offset {}: {why}",
                        a.tp.topic, a.tp.partition, h.base_offset
                    )),
                    other => other,
                })?;
                fetch.header = Some(h);
                fetch.iter_state = (0, h.records_count);
            }
            let Some(h) = fetch.header else { continue };
            let batch = &fetch.data[fetch.batch_at..fetch.batch_at + h.total_size()];
            let body = match &fetch.inflated {
                Some(inflated) => inflated.as_slice(),
                None => &batch[HEADER_LEN..],
            };
            let mut it = RecordIter::resume(h, body, fetch.iter_state);
            while *count < max {
                let before = it.state();
                match it.next() {
                    None => break,
                    Some(Err(reason)) => {
                        fetch.iter_state = before;
                        a.position = Some(position);
                        return Err(Error::InvalidRecord(format!(
                            "{}-{} batch at offset {}: {reason}",
                            a.tp.topic, a.tp.partition, h.base_offset
                        )));
                    }
                    Some(Ok(rec)) => {
                        if rec.offset < position {
                            continue;
                        }
                        if !f(&a.tp, &rec) {
                            // Not handed out: the walk and the position stay on it.
                            fetch.iter_state = before;
                            a.position = Some(position);
                            return Ok(true);
                        }
                        position = rec.offset + 1;
                        *count += 1;
                    }
                }
            }
            fetch.iter_state = it.state();
            if fetch.iter_state.1 <= 0 {
                // Offsets may skip (compaction): the batch's end is authoritative.
                position = position.max(h.next_offset());
            }
            a.position = Some(position);
        }
        Ok(false)
    }

    /// The last stable offset of an assigned partition, its producer state
    /// caught up with the log first (built from the log on first use).
    pub(super) fn last_stable_offset(a: &mut Assigned) -> Result<i64> {
        lso_of(&mut a.producers, &a.log)
    }

    /// True if any assigned, unpaused partition has records past its position.
    pub(super) fn has_data(&self, inner: &mut Inner) -> Result<bool> {
        for a in inner.assignment.iter_mut() {
            if a.paused {
                continue;
            }
            if a.fetch.is_some() {
                return Ok(true);
            }
            let pos = self.resolve(a)?;
            let (start, mut end) = a.log.offsets()?;
            if self.config.read_committed && pos < end && pos >= start {
                end = Self::last_stable_offset(a)?;
            }
            if pos < end || pos < start {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The last stable offset of `log`, the producer state in `producers`
/// caught up with the log first (built from the log, or its snapshot, on
/// first use).
pub(super) fn lso_of(
    producers: &mut Option<ProducerStateManager>,
    log: &PartitionLog,
) -> Result<i64> {
    let st = match producers {
        Some(st) => {
            st.catch_up(log)?;
            st
        }
        None => producers.insert(ProducerStateManager::rebuild(log)?),
    };
    let (start, _) = log.offsets()?;
    st.truncate_below(start);
    Ok(st.last_stable_offset(log.high_watermark()?))
}
