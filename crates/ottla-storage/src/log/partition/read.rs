//! Reading batches by offset (`read`, `read_as_of`), the `ReadCursor` that
//! lets sequential reads skip the index lookup, and the continuity rule
//! that tells a compaction gap from a damaged base offset.
//!
//! Readers take no lock, in this process or across processes. They work
//! from a head snapshot, stale by any amount, and read only bytes below
//! its `active_size` (a closed segment: its length), which are whole and
//! final: an append in progress is never seen. What can change under a
//! reader is the set of segments (rolls, retention and the cleaner of any
//! process); `read_as_of` says how each case is settled. A read reports
//! the high watermark and ends there (the log end, in a log with one
//! replica); a leader serving a follower reads to the log end
//! (`read_to_log_end`, see `replica`).

use std::sync::atomic::Ordering;

use super::{log_end_offset, PartitionLog, CLEAN_END_UNKNOWN};
use crate::error::{Error, Result};
use crate::log::head::HeadState;
use crate::log::segment::{is_segment_gone, LogSegment};
use ottla_record::batch::{check_batch, peek_total_size, BatchHeader};

/// Where the batch holding `offset` starts, so sequential reads skip the
/// index lookup.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadCursor {
    segment_base: i64,
    /// The file the position is in: a cleaned segment replaces the file
    /// under the same base offset, and positions do not carry over.
    file_id: (u64, u64),
    position: u64,
    offset: i64,
}

/// Whole batches read from the log.
#[derive(Debug, Default)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// A corrupt batch met after the bytes returned; raised once those are consumed.
    pub error: Option<Error>,
}

impl PartitionLog {
    /// Offsets below this may have gaps left by compaction.
    fn clean_end(&self) -> i64 {
        let v = self.clean_end.load(Ordering::Acquire);
        if v != CLEAN_END_UNKNOWN {
            return v;
        }
        let v = crate::log::cleaner::read_gap_end(&self.dir).unwrap_or(-1);
        self.clean_end.store(v, Ordering::Release);
        v
    }

    /// Whether a batch starting at `base` may follow a compaction gap: it
    /// starts at or below the gap end. The cached gap end can be stale: a
    /// thread that read the file before a cleaner (in any process) moved it
    /// can store that value after `segments_for` reset the cache for a
    /// listing that already shows the cleaner's segments. So before a gap is
    /// refused (and reported as corruption) the file is read again; the
    /// gap end only grows.
    fn gap_allowed(&self, base: i64) -> bool {
        if base <= self.clean_end() {
            return true;
        }
        let v = crate::log::cleaner::read_gap_end(&self.dir).unwrap_or(-1);
        self.clean_end.fetch_max(v, Ordering::AcqRel);
        base <= v
    }
    /// Read whole batches starting with the one holding `offset`, about
    /// `max_bytes` of them (always at least one whole batch if any exists).
    /// With `verify`, checksums are checked and a corrupt batch ends the data
    /// with an error naming its file and position.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
    ) -> Result<Fetched> {
        let st = self.read_state()?;
        self.read_as_of(st, offset, max_bytes, cursor, verify)
    }

    /// [`PartitionLog::read`] past the high watermark, up to the log end:
    /// what a leader sends a follower (replication).
    pub fn read_to_log_end(
        &self,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
    ) -> Result<Fetched> {
        let st = self.read_state()?;
        self.read_upto(st, offset, max_bytes, cursor, verify, true)
    }

    /// [`PartitionLog::read`] from the head snapshot `st`, which may be
    /// stale by any amount: readers hold no lock, so rolls and retention
    /// passes of other processes can happen between taking it and reading.
    ///
    /// The race this settles: retention publishes a new log start, then
    /// unlinks the segments below it. A reader whose snapshot predates the
    /// new start but whose directory listing (`segments_for`) follows the
    /// unlink finds no segment holding `offset`; reading on from the next
    /// segment it does find would take that segment's first batch for a
    /// gap in the log and report it as corrupt. So a read that meets a hole
    /// in the segments (none at or below the offset, a next segment starting
    /// past it, or no way to reach the active segment) reads the head
    /// again: if the log start has passed `offset` the answer is Kafka's
    /// `OffsetOutOfRange` (the consumer resets as `auto_offset_reset` says);
    /// if the segments changed meanwhile, it reads again from the fresh
    /// snapshot. Only a hole the head cannot explain (the same segments
    /// generation before and after the listing) is read as before: a
    /// compaction gap, or a damaged directory reported as corruption.
    pub(crate) fn read_as_of(
        &self,
        st: HeadState,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
    ) -> Result<Fetched> {
        self.read_upto(st, offset, max_bytes, cursor, verify, false)
    }

    /// [`PartitionLog::read_as_of`], to the log end with `to_log_end`,
    /// else to the high watermark.
    fn read_upto(
        &self,
        mut st: HeadState,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
        to_log_end: bool,
    ) -> Result<Fetched> {
        // Each retry needs another roll or retention pass to have happened
        // during the previous one; the bound only stops a livelock.
        for _ in 0..8 {
            match self.read_segments(&st, offset, max_bytes, cursor, verify, false, to_log_end) {
                Ok(Some(out)) => return Ok(out),
                Ok(None) => {}
                // A segment whose descriptor the open-file budget closed
                // was deleted or replaced before it was reopened: the
                // same race as a hole, settled the same way.
                Err(e) if is_segment_gone(&e) => {}
                Err(e) => return Err(e),
            }
            // Topic deletion flags the head, then removes the files.
            self.check_live()?;
            let fresh = self.read_state()?;
            if offset < fresh.log_start_offset {
                return Err(self.out_of_range(offset, &fresh));
            }
            if fresh.segments_gen == st.segments_gen {
                break;
            }
            st = fresh;
        }
        self.read_segments(&st, offset, max_bytes, cursor, verify, true, to_log_end)
            .map(Option::unwrap_or_default)
    }

    /// One attempt of [`PartitionLog::read_as_of`] over the segments listed
    /// for `st`. Without `holes_allowed`, `None` when the segments show a
    /// hole at or after `offset` before the active segment (see there).
    /// Batches end before the high watermark, or the log end with
    /// `to_log_end`; an offset between the two reads nothing, as Kafka
    /// answers a consumer fetching there.
    #[allow(clippy::too_many_arguments)]
    fn read_segments(
        &self,
        st: &HeadState,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
        holes_allowed: bool,
        to_log_end: bool,
    ) -> Result<Option<Fetched>> {
        let hw = self.hw_in(st);
        let mut out = Fetched {
            high_watermark: hw,
            log_start_offset: st.log_start_offset,
            ..Default::default()
        };
        let log_end = log_end_offset(st);
        if offset < st.log_start_offset || offset > log_end {
            return Err(self.out_of_range(offset, st));
        }
        let upto = if to_log_end { log_end } else { hw };
        if offset >= upto {
            return Ok(Some(out));
        }
        let segs = self.segments_for(st)?;
        let mut target = offset;
        // Invariant: the segment holding the log start has a base at or
        // below it (retention starts the log at a segment's base,
        // `delete_records` inside a segment it keeps; recovery and the
        // cleaner keep bases), so a segment at or below `offset`
        // exists unless it was deleted after `st` was read.
        let mut seg_iter = segs.map.range(..=target).next_back().map(|(b, _)| *b);
        if seg_iter.is_none() {
            if !holes_allowed {
                return Ok(None);
            }
            seg_iter = segs.map.keys().next().copied();
        }
        while let Some(base) = seg_iter {
            let Some(seg) = segs.map.get(&base) else {
                break;
            };
            let active = base == st.active_base;
            let (limit, entries) = if active {
                (st.active_size, st.index_entries)
            } else {
                (
                    seg.closed_size(),
                    seg.indexes()?.read().offset.closed_entries(),
                )
            };
            let pos = match cursor {
                Some(c)
                    if c.segment_base == base
                        && c.file_id == seg.file_id()
                        && c.offset == target
                        && c.position <= limit =>
                {
                    Some(c.position)
                }
                _ => seg.find_position(target, entries, limit)?.map(|(p, _)| p),
            };
            if let Some(pos) = pos.filter(|p| *p < limit) {
                let (n, next, err) = self.read_batches(
                    seg,
                    pos,
                    limit,
                    max_bytes,
                    (target, upto),
                    verify,
                    &mut out.bytes,
                )?;
                out.error = err;
                if n > 0 {
                    *cursor = Some(ReadCursor {
                        segment_base: base,
                        file_id: seg.file_id(),
                        position: pos + n as u64,
                        offset: next,
                    });
                }
                if n > 0 || out.error.is_some() {
                    return Ok(Some(out));
                }
            }
            if active {
                return Ok(Some(out));
            }
            // Segments of a healthy log are contiguous: the next one starts
            // where this one's last batch ends, so `target`, which is past
            // all of this one, is at or past its base. A next segment
            // starting further on means the ones between were deleted after
            // `st` was read; none means the active one was.
            seg_iter = segs.map.range(base + 1..).next().map(|(b, _)| *b);
            match seg_iter {
                Some(b) if b > target && !holes_allowed => return Ok(None),
                None if !holes_allowed => return Ok(None),
                Some(b) => target = target.max(b),
                None => {}
            }
        }
        Ok(Some(out))
    }

    /// Read batches at `pos` into `out`; returns (bytes, next offset, error).
    ///
    /// `expected` is the offset the first batch must hold, `upto` the offset
    /// no batch returned may start at (the high watermark or the log end).
    /// Base offsets sit outside the CRC, so this continuity check is what
    /// catches a damaged one instead of handing out records under the wrong
    /// offsets. The rule: batches never overlap or go backwards, and a gap
    /// (a batch starting after the offset the log has reached) is
    /// legitimate only if it ends at or below the clean end (the cleaner's
    /// gap end): only the log cleaner removes offsets, and only below
    /// it. A read starting at an offset the cleaner removed continues at
    /// the next surviving one, as in Kafka.
    #[allow(clippy::too_many_arguments)]
    fn read_batches(
        &self,
        seg: &LogSegment,
        pos: u64,
        limit: u64,
        max_bytes: usize,
        (expected, upto): (i64, i64),
        verify: bool,
        out: &mut Vec<u8>,
    ) -> Result<(usize, i64, Option<Error>)> {
        let want = (max_bytes as u64)
            .min(limit - pos)
            .max(ottla_record::HEADER_LEN as u64) as usize;
        let want = want.min((limit - pos) as usize);
        let start = out.len();
        seg.read_appending(pos, want, out)?;
        let mut at = 0usize;
        let mut next = -1;
        let mut err = None;
        loop {
            let rest = &out[start + at..];
            let Some(total) = peek_total_size(rest) else {
                break;
            };
            let bpos = pos + at as u64;
            if total < ottla_record::HEADER_LEN as i64 || bpos + total as u64 > limit {
                err = Some(Error::corrupt(
                    seg.path(),
                    bpos,
                    format!("batch length {total} does not fit the segment"),
                ));
                break;
            }
            let total = total as usize;
            if total > rest.len() {
                if at == 0 {
                    // The first batch is larger than max_bytes: return it whole.
                    out.resize(start + total, 0);
                    let m = seg.read_at(pos, &mut out[start..start + total])?;
                    if m < total {
                        err = Some(Error::corrupt(
                            seg.path(),
                            bpos,
                            "batch cut short by end of file",
                        ));
                        out.truncate(start);
                        break;
                    }
                    continue;
                }
                break;
            }
            let batch = &rest[..total];
            let h = if verify {
                match check_batch(batch) {
                    Ok(h) => h,
                    Err(reason) => {
                        err = Some(Error::corrupt(seg.path(), bpos, reason));
                        break;
                    }
                }
            } else {
                match BatchHeader::parse(batch) {
                    Some(h) => h,
                    None => break,
                }
            };
            let follows = if at == 0 {
                h.last_offset() >= expected
                    && (h.base_offset <= expected || self.gap_allowed(h.base_offset))
            } else {
                // The clean end is read (from a file) only when a gap needs it.
                h.base_offset == next || (h.base_offset > next && self.gap_allowed(h.base_offset))
            };
            if !follows || h.last_offset_delta < 0 {
                let want = if at == 0 { expected } else { next };
                err = Some(Error::corrupt(
                    seg.path(),
                    bpos,
                    format!(
                        "batch offsets {}..={} do not continue the log at offset {want}",
                        h.base_offset,
                        h.last_offset()
                    ),
                ));
                break;
            }
            // At the high watermark (a replicated log): the rest is not
            // committed yet. Checked after continuity, so a damaged base
            // offset is still reported, not taken for the end.
            if h.base_offset >= upto {
                break;
            }
            next = h.next_offset();
            at += total;
        }
        out.truncate(start + at);
        Ok((at, next, err))
    }

    fn out_of_range(&self, offset: i64, st: &HeadState) -> Error {
        Error::OffsetOutOfRange {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            start: st.log_start_offset,
            end: log_end_offset(st),
        }
    }
}
