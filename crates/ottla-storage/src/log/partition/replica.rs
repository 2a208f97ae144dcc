//! What a follower replica needs from the log (issue 14; Kafka's
//! `UnifiedLog.appendAsFollower`, `truncateTo` and the
//! `replication-offset-checkpoint`):
//!
//! * [`PartitionLog::append_as_follower`]: batches appended **as the
//!   leader sent them**: base offsets, leader epochs, producer ids and
//!   timestamps kept, nothing stamped. Each batch's CRC is checked, and the
//!   offsets must continue the log exactly (the first base offset is the log
//!   end, each next batch starts where the previous one ended): a fetch
//!   answered for another position is `UnexpectedAppendOffset`, never a gap
//!   or an overlap. A batch in a new leader epoch starts a new entry of the
//!   leader-epoch cache, written before the batch (the file never lags the
//!   log); indexes, the head and the beacon move as for any append, so
//!   long polls and readers in every process see the records.
//! * [`PartitionLog::truncate_to`]: everything at and after an offset
//!   dropped (a follower cutting an unreplicated tail after a leader
//!   change). Crash-safe, and safe for readers in other processes: the head
//!   is published first, describing only what stays (a segment that was
//!   closed becomes the active one, with no index entries counted, so
//!   readers walk it from its start), so no reader takes the tail for
//!   valid bytes from then on; then the leader-epoch entries past the new
//!   end are cut, the later segments unlinked and the file cut; last the
//!   kept segment's indexes are rebuilt and published. A `kill -9` at any
//!   step leaves a head of this boot that is not clean, and the loader
//!   (`loader::trust`) removes segments past the active one, cuts the
//!   active one to the head's size and drops epochs past the end: the same
//!   log as a finished truncation.
//! * The high watermark: with replication it is not the log end any more
//!   but what the replica manager says (the lowest log end offset of the
//!   in-sync replicas on a leader; the leader's on a follower). It is held
//!   in memory ([`PartitionLog::set_high_watermark`]; unset, the high
//!   watermark is the log end as for a log with one replica), never read
//!   above the log end, and checkpointed to the partition's
//!   `replication-offset-checkpoint` (written whole, fsync'd, renamed:
//!   `fsutil::write_atomic`) by [`PartitionLog::checkpoint_high_watermark`],
//!   read back with [`PartitionLog::read_high_watermark_checkpoint`].
//!
//! Readers (`read`) stop at the high watermark; the leader serving a
//! follower reads to the log end (`read_to_log_end`).

use std::sync::atomic::Ordering;

use super::append::account_unindexed;
use super::{log_end_offset, now_ms, remove_segment_files, segment_path, AppendInfo, PartitionLog};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;
use crate::log::head::HeadState;
use crate::log::segment::{account_batch, for_each_header, scan};
use ottla_record::batch::{check_batch, peek_total_size, BatchHeader, HEADER_LEN};

/// The per-partition file holding the last high watermark checkpointed
/// (Kafka's `replication-offset-checkpoint`, one line for this partition).
pub const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";

/// The in-memory high watermark's "not set": the log end is the high
/// watermark (a log with one replica).
pub(super) const HW_UNSET: i64 = i64::MIN;

/// The crash tests' hook for truncation: `OTTLA_TRUNCATE_CRASH_AT=published|unlinked`
/// kills the process once the head describes the truncated log, or once the
/// tail's files are gone, before the indexes are rebuilt.
const TRUNCATE_CRASH_AT: &str = "OTTLA_TRUNCATE_CRASH_AT";

impl PartitionLog {
    /// Append batches a leader sent, as they are (see the module docs).
    /// `batches` is whole batches back to back; an empty slice appends
    /// nothing. Returns the offsets they hold.
    pub fn append_as_follower(&self, batches: &[u8]) -> Result<AppendInfo> {
        // Checked before any lock: CRCs and framing of the whole set, and
        // the offsets continuing each other. Where they start is checked
        // against the log end under the lock.
        let mut headers: Vec<(usize, BatchHeader)> = Vec::new();
        let mut at = 0usize;
        while at < batches.len() {
            let total = peek_total_size(&batches[at..])
                .filter(|t| *t >= HEADER_LEN as i64 && at as i64 + *t <= batches.len() as i64)
                .ok_or_else(|| Error::InvalidRecord(format!("truncated batch at byte {at}")))?;
            let h = check_batch(&batches[at..at + total as usize])
                .map_err(|reason| Error::InvalidRecord(format!("batch at byte {at}: {reason}")))?;
            if let Some((_, prev)) = headers.last() {
                if h.base_offset != prev.next_offset() {
                    return Err(self.unexpected_offset(prev.next_offset(), h.base_offset));
                }
            }
            if h.last_offset_delta < 0 || h.records_count < 0 {
                return Err(Error::InvalidRecord(format!(
                    "batch at byte {at}: last offset delta {}, {} records",
                    h.last_offset_delta, h.records_count
                )));
            }
            headers.push((at, h));
            at += h.total_size();
        }
        let (Some((_, first)), Some((_, last))) = (headers.first(), headers.last()) else {
            let st = self.read_state()?;
            return Ok(AppendInfo {
                base_offset: log_end_offset(&st),
                last_offset: log_end_offset(&st) - 1,
                log_start_offset: st.log_start_offset,
            });
        };
        let (first_base, end) = (first.base_offset, last.next_offset());
        let _w = self.writer.lock();
        let lock = self.lock()?;
        let _g = lock.lock_append()?;
        self.check_live()?;
        self.head.mark_in_use();
        let mut st = match self.head.read() {
            Some(st) => st,
            None => self.repair_locked()?,
        };
        if first_base != log_end_offset(&st) {
            return Err(self.unexpected_offset(log_end_offset(&st), first_base));
        }
        let cfg = self.config();
        let now = now_ms();
        let len = batches.len() as u64;
        let (st_rolled, _, active, rolled) = self.active_for_append(st, len, &cfg, now)?;
        st = st_rolled;
        // Each new epoch's entry before its first batch: the cache's file
        // never lags the log (recovery cuts entries past the end).
        for (_, h) in &headers {
            self.assign_follower_epoch_locked(&mut st, h.leader_epoch, h.base_offset)?;
        }
        active.preallocate(st.active_size, st.active_size + len, cfg.segment_bytes);
        if let Err(e) = active.write_at(st.active_size, batches) {
            let _ = active.truncate(st.active_size);
            return Err(e);
        }
        let base_pos = st.active_size;
        if st.index_entries == 0
            && headers
                .iter()
                .all(|(pos, _)| base_pos + (*pos as u64) < cfg.index_interval_bytes.max(1))
        {
            for (pos, h) in &headers {
                account_unindexed(&mut st, base_pos + *pos as u64, h);
            }
        } else {
            let accounted = active
                .indexes_for_append(cfg.segment_index_bytes)
                .and_then(|idx| {
                    let mut idx = idx.write();
                    headers.iter().try_for_each(|(pos, h)| {
                        account_batch(
                            &mut idx,
                            &mut st,
                            base_pos + *pos as u64,
                            h,
                            cfg.index_interval_bytes,
                        )
                    })
                });
            if let Err(e) = accounted {
                let _ = active.truncate(base_pos);
                return Err(e);
            }
        }
        debug_assert_eq!(st.next_offset, end);
        self.head.write(&st);
        let info = AppendInfo {
            base_offset: first_base,
            last_offset: end - 1,
            log_start_offset: st.log_start_offset,
        };
        drop(_g);
        drop(_w);
        self.beacon.notify_append();
        if rolled {
            self.enforce_retention()?;
            crate::log::cleaner::clean_on_roll(self);
        }
        Ok(info)
    }

    fn unexpected_offset(&self, expected: i64, first: i64) -> Error {
        Error::UnexpectedAppendOffset {
            topic: self.topic.to_string(),
            partition: self.partition,
            expected,
            first,
        }
    }

    /// Drop every record at and after `offset` (a batch holding `offset`
    /// goes whole, as in Kafka's `LogSegment.truncateTo`), with the
    /// leader-epoch entries starting past the new end. Returns the log end
    /// offset after the call. An offset at or past the log end changes
    /// nothing; one at or below the log start empties the log, which then
    /// starts at `offset` (Kafka's `truncateFullyAndStartAt`). The high
    /// watermark set in memory is cut to the new end too.
    pub fn truncate_to(&self, offset: i64) -> Result<i64> {
        if offset < 0 {
            return Err(Error::InvalidRecord(format!(
                "cannot truncate {}-{} to a negative offset ({offset})",
                self.topic, self.partition
            )));
        }
        let end = {
            let _w = self.writer.lock();
            let lock = self.lock()?;
            let _g = lock.lock_append()?;
            self.check_live()?;
            let st = match self.head.read() {
                Some(st) => st,
                None => self.repair_locked()?,
            };
            if offset >= log_end_offset(&st) {
                return Ok(log_end_offset(&st));
            }
            // Durably in use before any file changes: after a power cut the
            // next opener must not trust an older clean head.
            self.head
                .mark_in_use_durably()
                .ctx("flush head", &self.dir)?;
            let end = if offset <= st.log_start_offset {
                self.truncate_fully_locked(st, offset)?
            } else {
                self.truncate_within_locked(st, offset)?
            };
            drop(_g);
            end
        };
        self.replica_hw.fetch_min(end, Ordering::AcqRel);
        // Wake long polls: their end moved (backwards).
        self.beacon.notify_append();
        Ok(end)
    }

    /// Empty the log and start it again at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): a follower whose log end is below the
    /// leader's log start. Returns `offset`.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<i64> {
        if offset < 0 {
            return Err(Error::InvalidRecord(format!(
                "cannot start {}-{} at a negative offset ({offset})",
                self.topic, self.partition
            )));
        }
        {
            let _w = self.writer.lock();
            let lock = self.lock()?;
            let _g = lock.lock_append()?;
            self.check_live()?;
            let st = match self.head.read() {
                Some(st) => st,
                None => self.repair_locked()?,
            };
            self.head
                .mark_in_use_durably()
                .ctx("flush head", &self.dir)?;
            self.truncate_fully_locked(st, offset)?;
        }
        self.replica_hw.fetch_min(offset, Ordering::AcqRel);
        self.beacon.notify_append();
        Ok(offset)
    }

    /// `truncate_to` for an offset above the log start. Caller holds the
    /// append lock and marked the head in use.
    fn truncate_within_locked(&self, old: HeadState, offset: i64) -> Result<i64> {
        let segs = self.segments_for(&old)?;
        let Some((&base, seg)) = segs.map.range(..=offset).next_back() else {
            return Err(Error::IllegalState(format!(
                "{}-{}: no segment holds offset {offset} above the log start {}",
                self.topic, self.partition, old.log_start_offset
            )));
        };
        let seg = seg.clone();
        let limit = if base == old.active_base {
            old.active_size
        } else {
            seg.closed_size()
        };
        // The batch holding `offset` goes whole: the log ends where the
        // last batch kept ends (at its base, in a log without compaction
        // gaps).
        let pos = match seg.find_position(offset, 0, limit)? {
            Some((pos, _)) => pos,
            None => limit,
        };
        // 1. The head describes only what stays, with no index entry
        // counted (readers walk the segment from its start): from here on
        // no reader in any process reads the tail.
        let mut st = old;
        st.active_base = base;
        st.active_size = pos;
        st.next_offset = base;
        st.index_entries = 0;
        st.time_entries = 0;
        st.max_timestamp = i64::MIN;
        st.offset_of_max_timestamp = -1;
        for_each_header(&seg, pos, |h| {
            if h.max_timestamp > st.max_timestamp {
                st.max_timestamp = h.max_timestamp;
                st.offset_of_max_timestamp = h.last_offset();
            }
            st.next_offset = h.next_offset();
        })?;
        let new_end = st.next_offset;
        st.flushed_size = if base == old.active_base {
            old.flushed_size.min(pos)
        } else {
            0
        };
        st.recovery_point = old.recovery_point.min(new_end);
        st.segments_gen = st.segments_gen.wrapping_add(1);
        self.head.write(&st);
        super::crash_point(TRUNCATE_CRASH_AT, "published");
        // 2. Epochs starting at or past the new end.
        self.truncate_epochs_locked(&mut st, true)?;
        // 3. The tail's files.
        for stray in self.list_bases()? {
            if stray > base {
                remove_segment_files(&segment_path(&self.dir, stray));
            }
        }
        drop(segs);
        drop(seg);
        let seg = self.open_segment(base, true)?;
        seg.truncate(pos)?;
        super::crash_point(TRUNCATE_CRASH_AT, "unlinked");
        // 4. The kept segment's indexes rebuilt from its batches (it may
        // have been closed, its index files trimmed), then published.
        let gaps_until = crate::log::cleaner::read_gap_end(&self.dir).unwrap_or(i64::MIN);
        let interval = self.config().index_interval_bytes;
        let (scanned, stopped) = scan(&seg, base, interval, gaps_until)?;
        if stopped.is_some() || scanned.active_size != pos || scanned.next_offset != new_end {
            // The batches below the cut did not scan as the head said:
            // leave the rest to recovery, which re-validates them.
            drop(seg);
            let st = crate::log::loader::recover(self, base)?;
            return Ok(log_end_offset(&st));
        }
        st.index_entries = scanned.index_entries;
        st.time_entries = scanned.time_entries;
        st.max_timestamp = scanned.max_timestamp;
        st.offset_of_max_timestamp = scanned.offset_of_max_timestamp;
        st.segments_gen = st.segments_gen.wrapping_add(1);
        self.head.write(&st);
        // 5. Durable: the files as cut, the epoch file, then the head.
        let segs = self.segments_for(&st)?;
        self.sync_locked(&segs, &mut st)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.head.write(&st);
        self.head.flush().ctx("flush head", &self.dir)?;
        Ok(new_end)
    }

    /// `truncate_to` at or below the log start: every segment goes, the log
    /// restarts empty at `offset`. Caller holds the append lock and marked
    /// the head in use.
    fn truncate_fully_locked(&self, old: HeadState, offset: i64) -> Result<i64> {
        // A segment based at `offset` may exist (and be read): it is cut
        // only once the head says it is empty.
        let seg = self.open_segment(offset, true)?;
        let mut st = old;
        st.active_base = offset;
        st.active_size = 0;
        st.flushed_size = 0;
        st.next_offset = offset;
        st.log_start_offset = offset;
        st.index_entries = 0;
        st.time_entries = 0;
        st.max_timestamp = i64::MIN;
        st.offset_of_max_timestamp = -1;
        st.recovery_point = offset;
        st.active_created_ms = now_ms();
        st.segments_gen = st.segments_gen.wrapping_add(1);
        // The log start checkpoint may hold a larger start: replaced first,
        // so recovery never takes the log start back above the end.
        let text = format!("0\n1\n{} {} {offset}\n", self.topic, self.partition);
        write_atomic(&self.dir.join(super::LOG_START_FILE), text.as_bytes())?;
        self.head.write(&st);
        super::crash_point(TRUNCATE_CRASH_AT, "published");
        seg.truncate(0)?;
        self.truncate_epochs_locked(&mut st, true)?;
        for stray in self.list_bases()? {
            if stray != offset {
                remove_segment_files(&segment_path(&self.dir, stray));
            }
        }
        drop(seg);
        let segs = self.segments_for(&st)?;
        self.sync_locked(&segs, &mut st)?;
        self.head.write(&st);
        self.head.flush().ctx("flush head", &self.dir)?;
        Ok(offset)
    }

    /// Set the high watermark (replication: the replica manager's). Read
    /// back never above the log end. `None` returns to a log with one
    /// replica: the high watermark is the log end.
    pub fn set_high_watermark(&self, hw: Option<i64>) {
        let old = self
            .replica_hw
            .swap(hw.unwrap_or(HW_UNSET), Ordering::AcqRel);
        if old != hw.unwrap_or(HW_UNSET) {
            // Parked consumers compare the high watermark: let them look.
            self.beacon.notify_append();
        }
    }

    /// Whether the high watermark is set apart from the log end.
    pub fn has_replicated_high_watermark(&self) -> bool {
        self.replica_hw.load(Ordering::Acquire) != HW_UNSET
    }

    /// The high watermark in `st`: the replica manager's, never above the
    /// log end; the log end when it set none.
    pub(super) fn hw_in(&self, st: &HeadState) -> i64 {
        let end = log_end_offset(st);
        match self.replica_hw.load(Ordering::Acquire) {
            HW_UNSET => end,
            hw => hw.clamp(st.log_start_offset.min(end), end),
        }
    }

    /// Write `hw` to the partition's `replication-offset-checkpoint`
    /// (fsync'd, renamed into place).
    pub fn checkpoint_high_watermark(&self, hw: i64) -> Result<()> {
        let text = format!("0\n1\n{} {} {hw}\n", self.topic, self.partition);
        write_atomic(&self.dir.join(HIGH_WATERMARK_FILE), text.as_bytes())
    }

    /// The high watermark last checkpointed, never above the log end (a
    /// truncation may have cut the log below it); `None` without a readable
    /// checkpoint.
    pub fn read_high_watermark_checkpoint(&self) -> Result<Option<i64>> {
        let Some(hw) = read_checkpoint(&self.dir.join(HIGH_WATERMARK_FILE)) else {
            return Ok(None);
        };
        let st = self.read_state()?;
        Ok(Some(hw.min(log_end_offset(&st)).max(st.log_start_offset)))
    }
}

/// The one offset of a partition's checkpoint file (Kafka's format:
/// version 0, one entry, `topic partition offset`), if readable.
fn read_checkpoint(path: &std::path::Path) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let _count = lines.next()?;
    let v: i64 = lines.next()?.split_whitespace().last()?.parse().ok()?;
    (v >= 0).then_some(v)
}
