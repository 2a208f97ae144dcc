//! Rolling: closing the active segment (cut to the head's size, its
//! indexes trimmed to their entries) and starting a new one based at the
//! log end offset.
//!
//! Runs under the append lock, from an append that found the active
//! segment full or too old, or from retention once the active segment has
//! expired. Readers in other processes hold no lock and may look at any
//! step: the head publishes the new active segment only at the end, a
//! segment file past the head's active one is not listed (see
//! `segments_for`), and the segments generation moves before the closing
//! segment's indexes are trimmed, so a process that mapped them re-lists.

use std::sync::Arc;

use super::{
    crash_point, log_end_offset, remove_segment_files, segment_path, PartitionLog, SegmentMap,
};
use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::log::head::HeadState;
use crate::log::segment::LogSegment;

const ROLL_CRASH_AT: &str = "OTTLA_ROLL_CRASH_AT";

impl PartitionLog {
    /// The head, the segments and the active segment an append of `len`
    /// bytes goes to (the leader's and the follower's alike), the active
    /// segment rolled first when the append would overflow it, when it is
    /// older than `segment.ms`, or when its index is nearly full (the
    /// last element says whether it rolled). Under the append lock.
    pub(super) fn active_for_append(
        &self,
        mut st: HeadState,
        len: u64,
        cfg: &TopicConfig,
        now: i64,
    ) -> Result<(HeadState, Arc<SegmentMap>, Arc<LogSegment>, bool)> {
        let mut segs = self.segments_for(&st)?;
        let must_roll = st.active_size > 0
            && (st.active_size + len > cfg.segment_bytes
                || st.active_size + len > u32::MAX as u64
                || now.saturating_sub(st.active_created_ms) >= cfg.max_segment_ms()
                || self.index_nearly_full(&segs, &st, cfg.segment_index_bytes)?);
        if must_roll {
            st = self.roll_locked(st, now)?;
            segs = self.segments_for(&st)?;
        }
        let active = segs.map.get(&st.active_base).cloned().ok_or_else(|| {
            Error::IllegalState(format!("active segment {} missing", st.active_base))
        })?;
        Ok((st, segs, active, must_roll))
    }

    /// Close the active segment and start a new one at the log end.
    ///
    /// Other processes may have died in the middle of an append or of a
    /// roll while this one (and readers) kept the partition open, so no
    /// loader cleaned up after them. Before the segment is closed:
    /// * it is cut to the head's `active_size`: bytes a killed appender
    ///   wrote past it were never published, and a closed segment is read
    ///   to its file length (readers would report them as a corrupt batch);
    /// * segment files past the active one, left by a roll that died before
    ///   publishing, are removed: the active segment may have been appended
    ///   to since, past such a file's base, and once this roll publishes a
    ///   later active segment readers would take the stray for the segment
    ///   holding those offsets;
    /// * the segments generation moves once, before the indexes are trimmed:
    ///   if this roll dies after trimming them, the next appender re-lists
    ///   and maps the (still active) segment's indexes afresh, growing them
    ///   back, instead of writing entries past their end through a mapping
    ///   made before the trim (SIGBUS, or entries lost).
    pub(super) fn roll_locked(&self, mut st: HeadState, now: i64) -> Result<HeadState> {
        self.head.mark_in_use();
        let segs = self.segments_for(&st)?;
        let base = log_end_offset(&st);
        for stray in self.list_bases()? {
            if stray > st.active_base && stray != base {
                remove_segment_files(&segment_path(&self.dir, stray));
            }
        }
        if let Some(active) = segs.map.get(&st.active_base) {
            if active.file_len()? > st.active_size {
                active.truncate(st.active_size)?;
            }
            st.segments_gen += 1;
            self.head.write(&st);
            crate::log::loader::finalize_closed(active, &st)?;
            active.release_preallocation(st.active_size);
            crash_point(ROLL_CRASH_AT, "finalized");
        }
        if base != st.active_base {
            let seg = self.open_segment(base, true)?;
            // A file left by a roll that crashed before publishing: start clean.
            seg.truncate(0)?;
            crash_point(ROLL_CRASH_AT, "created");
        }
        st.active_base = base;
        st.active_size = 0;
        st.flushed_size = 0;
        st.index_entries = 0;
        st.time_entries = 0;
        st.max_timestamp = i64::MIN;
        st.offset_of_max_timestamp = -1;
        st.active_created_ms = now;
        st.segments_gen += 1;
        self.head.write(&st);
        Ok(st)
    }
}
