//! Retention (`cleanup.policy` `delete`): deleting the oldest closed
//! segments once they pass `retention.ms` or the log passes
//! `retention.bytes`, and the active segment too (rolled first) once every
//! record in it has expired. `compact` hands the other policy to
//! `log::cleaner`.
//!
//! Whatever the policy, closed segments wholly below the log start offset
//! (moved by hand with `delete_records`, see `log_start`) go too, as
//! Kafka's `deleteLogStartOffsetBreachedSegments`.
//!
//! Only whole segments go, from the front, under the append lock, and the
//! head publishes the new log start offset before any file is unlinked: a
//! reader in another process sees the offsets gone before it could miss
//! their files, and a read that finds a segment missing reads the head
//! again (see `read_as_of`). Runs on open, after each roll, on a config
//! change, every `retention_check_interval_ms` from a running
//! `retention_checker`, and when called directly; not on every append.

use super::{log_end_offset, now_ms, remove_segment_files, PartitionLog};
use crate::error::Result;

impl PartitionLog {
    /// Compact the log now (`cleanup.policy` must include `compact`),
    /// whatever its dirty ratio: see `log::cleaner`. `None` when the topic
    /// is not compacted or another process's cleaner is at work.
    pub fn compact(&self) -> Result<Option<crate::log::cleaner::CleanerStats>> {
        crate::log::cleaner::clean(self, true)
    }

    /// Delete closed segments past the topic's retention (time and size), and
    /// the active segment too once every record in it has expired. Returns
    /// the number of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        let cfg = self.config();
        let by_retention =
            cfg.deletes_by_retention() && (cfg.retention_ms >= 0 || cfg.retention_bytes >= 0);
        let now = now_ms();
        let expired = |max_ts: Option<i64>| {
            by_retention
                && cfg.retention_ms >= 0
                && max_ts.is_some_and(|ts| ts < now.saturating_sub(cfg.retention_ms))
        };
        // Closed segments whose records are all below the log start: the
        // next segment starts at or below it.
        let below_start = |st: &super::HeadState, next_base: Option<&i64>| {
            next_base.is_some_and(|b| *b <= st.log_start_offset) && st.log_start_offset > 0
        };
        // Without the lock first: a log that is only its active segment, not
        // all expired, has nothing to delete (the common case on open, which
        // then skips two lock calls). A stale snapshot can only postpone a
        // deletion to the next pass, which every roll triggers.
        if let Some(st) = self.head.read() {
            let segs = self.segments.read();
            if segs.gen == st.segments_gen
                && segs.active_base == st.active_base
                && !(st.active_size > 0 && expired(Some(st.max_timestamp)))
                && (segs.map.len() <= 1
                    || (!by_retention && !below_start(&st, segs.map.keys().nth(1))))
            {
                return Ok(0);
            }
        }
        let _w = self.writer.lock();
        let lock = self.lock()?;
        let _g = lock.lock_append()?;
        if self.head.is_deleted() {
            return Ok(0);
        }
        let mut st = match self.head.read() {
            Some(st) => st,
            None => self.repair_locked()?,
        };
        if st.active_size > 0 && expired(Some(st.max_timestamp)) {
            st = self.roll_locked(st, now)?;
        }
        let segs = self.segments_for(&st)?;
        let mut total: u64 = segs.total_bytes(&st);
        let mut doomed = Vec::new();
        let mut bases = segs.map.keys().skip(1);
        for (base, seg) in &segs.map {
            let next_base = bases.next();
            if *base == st.active_base {
                break;
            }
            if below_start(&st, next_base) {
                total = total.saturating_sub(seg.closed_size());
                doomed.push(seg.clone());
                continue;
            }
            let by_size = by_retention
                && cfg.retention_bytes >= 0
                && total.saturating_sub(seg.closed_size()) >= cfg.retention_bytes as u64
                && total > cfg.retention_bytes as u64;
            if by_size || expired(seg.closed_max_timestamp()?) {
                total -= seg.closed_size();
                doomed.push(seg.clone());
            } else {
                break;
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let new_start = segs
            .map
            .range(doomed[doomed.len() - 1].base_offset + 1..)
            .next()
            .map_or(log_end_offset(&st), |(b, _)| *b);
        st.log_start_offset = st.log_start_offset.max(new_start);
        st.segments_gen += 1;
        // Publish the new start before unlinking, so a reader in any process
        // sees the offsets gone before it could miss the files.
        self.head.write(&st);
        for seg in &doomed {
            remove_segment_files(seg.path());
        }
        let _ = self.segments_for(&st)?;
        // Epochs below the new start go with their records.
        self.truncate_epochs_locked(&mut st, false)?;
        Ok(doomed.len())
    }
}
