//! The log cleaner: compaction of `cleanup.policy=compact` (and
//! `compact,delete`) topics, as Kafka's `LogCleaner` does it.
//!
//! A compacted partition's closed segments are split at the **clean end**
//! (the cleaner's checkpoint, Kafka's "first dirty offset", kept in
//! `cleaner-offset-checkpoint`): below it the **clean section**, already
//! compacted, from it the **dirty section**, written since. The dirty section
//! stops before the active segment, which is never cleaned, and before the
//! first segment holding a record younger than `min.compaction.lag.ms`.
//!
//! A pass (run when a roll leaves the **cleanable dirty ratio**, dirty bytes
//! over clean plus dirty bytes, above `min.cleanable.dirty.ratio`, or the
//! dirty section's first record older than `max.compaction.lag.ms`, on open,
//! and on `Admin.compact`):
//! 1. builds an offset map, key -> offset of its latest record, over the
//!    dirty section;
//! 2. rewrites the clean and dirty sections, group by group (consecutive
//!    segments whose sizes add up to at most `segment.bytes`), into one
//!    cleaned segment per group named after the group's first base offset,
//!    keeping a record when no later record of its key exists in the map.
//!    A tombstone (null value) survives its first cleaning, which stamps its
//!    batch with a delete horizon (now + `delete.retention.ms`, Kafka's
//!    KIP-534 batch attribute), and is dropped by the first pass after the
//!    horizon. Offsets never change: a batch keeps its base offset and last
//!    offset delta, records keep their offset deltas, producer id, epoch and
//!    base sequence, and gaps are left where records went. A group's last
//!    batch is always kept (empty if need be), so a cleaned segment still
//!    ends where its group ended: that is how recovery knows which old
//!    segments a cleaned one replaces;
//! 3. puts each cleaned segment in place with the swap protocol below, then
//!    advances the checkpoint. The **gap end** (`cleaner-gap-end`), which
//!    readers use to tell compaction gaps from damage, is moved to the
//!    pass's clean end before its first swap.
//!
//! Transactions ([`txn`], Kafka's rules): the pass stops before the first
//! open transaction; aborted transactions' batches are removed whole (their
//! keys stay out of the map); committed transactional batches are compacted
//! like any other; a marker stays while its transaction has a batch in the
//! log, then gets a delete horizon like a tombstone and goes after it; each
//! producer's last batch is kept, emptied if need be.
//!
//! Batches whose codec `record::decode` cannot read are kept whole (their
//! keys stay out of the map, so nothing they supersede is dropped: less
//! compaction, never a lost latest value). Batches the cleaner rewrites are
//! written uncompressed.
//!
//! ## The swap protocol (crash and multi-process safety)
//!
//! * The **cleaner lock** (byte 2 of `partition.lock`) admits one cleaner per
//!   partition across processes; a second one skips its pass.
//! * `<base>.log.cleaned`, `.index.cleaned` and `.timeindex.cleaned` are
//!   written and fsync'd without any other lock: they are invisible to
//!   readers and to recovery, which deletes them.
//! * Under the writer mutex, the **append lock**, the segment map's write
//!   lock and the **swap lock** (byte 3, exclusive), after checking that
//!   retention has not deleted the group meanwhile:
//!   1. rename the two `.index.cleaned`/`.timeindex.cleaned` to `.swap`,
//!      then `.log.cleaned` to `.log.swap`, fsync the directory. **`<base>.log.swap` existing is the commit**: from here a
//!      crash is completed forward, before it rolled back;
//!   2. rename the index `.swap` files over the group's first segment's
//!      indexes, delete the group's other segments, rename `.log.swap` over
//!      its `.log`, fsync the directory;
//!   3. bump the head's segments generation, so every process re-lists.
//! * Readers list segment files under the swap lock held shared, so a live
//!   swap is seen all or nothing. After a crash mid-swap (the lock died with
//!   the cleaner) a listing that meets `<base>.log.swap` reads that file,
//!   without indexes, instead of `<base>.log`; old segments it covers that
//!   are still there overlap it with the same, uncompacted records, which
//!   reads correctly. `LogSegment::indexes` maps a segment's indexes only
//!   while no swap file exists and the path still names the file it reads.
//! * `complete_swaps` finishes a committed swap (rebuilding the cleaned
//!   segment's indexes from its log, which does not depend on the order in
//!   which a power loss kept the renames) and removes uncommitted files; the loader runs it when a process first opens the partition,
//!   and every cleaner pass before it starts.
//!
//! Readers in other processes keep reading replaced files through their
//! open descriptors (a renamed-over or unlinked file stays readable) until
//! the generation moves and they re-list; a read cursor remembers the file
//! it points into, so a position is never applied to the wrong file.
//!
//! `OTTLA_CLEANER_CRASH_AT=cleaned|swap|index|deleted` makes the cleaning
//! process kill itself (SIGKILL) at that step of the first swap: the crash
//! tests' hook.

mod txn;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::head::HeadState;
use super::offset_index::OffsetIndex;
use super::partition::{now_ms, remove_segment_files, segment_path, PartitionLog};
use super::segment::{account_batch, log_file_name, Indexes, LogSegment};
use super::time_index::TimeIndex;
use crate::config::{CleanupPolicy, TopicConfig};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;
use ottla_record::batch::{
    check_batch, peek_total_size, put_record_view, seal_crc, BatchHeader, RecordView,
    COMPRESSION_MASK, CURRENT_MAGIC, DELETE_HORIZON_FLAG, HEADER_LEN, LOG_OVERHEAD,
};

pub const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// The highest clean end any pass has started to swap towards: below it a
/// segment may be a cleaned one, with gaps. At or above the checkpoint.
pub const GAP_END_FILE: &str = "cleaner-gap-end";

/// What one cleaning pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanerStats {
    /// Segments read and rewritten, and the cleaned segments they became.
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_before: u64,
    pub records_after: u64,
    pub tombstones_removed: u64,
    /// Records of aborted transactions removed.
    pub aborted_records_removed: u64,
    /// Transaction markers removed (past their delete horizon).
    pub markers_removed: u64,
    /// Dirty bytes over clean plus dirty bytes when the pass started.
    pub dirty_ratio: f64,
    /// The checkpoint after the pass.
    pub clean_end: i64,
}

/// The cleaner's checkpoint (first dirty offset) of the partition in `dir`,
/// in Kafka's checkpoint file format (version, count, `topic partition
/// offset` lines), if there is a readable one.
pub fn read_checkpoint(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let _count = lines.next()?;
    lines.next()?.split_whitespace().last()?.parse().ok()
}

/// Offsets below this may have compaction gaps (see `GAP_END_FILE`).
pub fn read_gap_end(dir: &Path) -> Option<i64> {
    let gap = std::fs::read_to_string(dir.join(GAP_END_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    match (gap, read_checkpoint(dir)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn write_checkpoint(log: &PartitionLog, offset: i64) -> Result<()> {
    let text = format!("0\n1\n{} {} {offset}\n", log.topic(), log.partition());
    write_atomic(&log.dir().join(CHECKPOINT_FILE), text.as_bytes())
}

/// The cleaning pass a roll (or an open) triggers: only past the dirty
/// ratio. The append that rolled has already succeeded, so a failure here
/// leaves the old segments and is not the appender's error;
/// `Admin.compact` reports it.
pub(crate) fn clean_on_roll(log: &PartitionLog) {
    if log.config().cleanup_policy == CleanupPolicy::Delete {
        return;
    }
    match log.head().read() {
        Some(st) if st.log_start_offset < st.active_base => {}
        _ => return,
    }
    let _ = clean(log, false);
}

/// One cleaning pass. `force` cleans whatever is cleanable, below the dirty
/// ratio too. `None` when the topic is not compacted or another cleaner
/// holds the partition.
pub(crate) fn clean(log: &PartitionLog, force: bool) -> Result<Option<CleanerStats>> {
    let cfg = log.config();
    if cfg.cleanup_policy == CleanupPolicy::Delete {
        return Ok(None);
    }
    let lock = log.lock()?;
    let Some(_cleaner) = lock.try_lock_cleaner()? else {
        return Ok(None);
    };
    finish_leftovers(log)?;
    let st = log.state()?;
    let segs = log.segments_at(&st)?;
    let now = now_ms();

    // The closed segments holding live offsets, each with where it ends.
    let bases: Vec<i64> = segs.map.keys().copied().collect();
    let mut closed: Vec<(Arc<LogSegment>, i64)> = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        if *base >= st.active_base {
            break;
        }
        let end = bases.get(i + 1).copied().unwrap_or(st.active_base);
        if end <= st.log_start_offset {
            continue;
        }
        if let Some(seg) = segs.map.get(base) {
            closed.push((seg.clone(), end));
        }
    }
    // The cleanable part stops before the first segment with a record
    // younger than min.compaction.lag.ms.
    if cfg.min_compaction_lag_ms > 0 {
        let horizon = now.saturating_sub(cfg.min_compaction_lag_ms);
        if let Some(i) = closed.iter().position(|(s, _)| {
            s.closed_max_timestamp()
                .ok()
                .flatten()
                .map_or(true, |ts| ts > horizon)
        }) {
            closed.truncate(i);
        }
    }
    if closed.is_empty() {
        return Ok(None);
    }
    let first_dirty = read_checkpoint(log.dir())
        .unwrap_or(st.log_start_offset)
        .max(st.log_start_offset);
    let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
    for (seg, end) in &closed {
        if *end <= first_dirty {
            clean_bytes += seg.closed_size();
        } else {
            dirty_bytes += seg.closed_size();
        }
    }
    let total = clean_bytes + dirty_bytes;
    let ratio = if total == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total as f64
    };
    // max.compaction.lag.ms (Kafka's KIP-354): a dirty section whose first
    // record is older than the lag is cleaned whatever the ratio.
    let overdue = || -> Result<bool> {
        if cfg.max_compaction_lag_ms == i64::MAX {
            return Ok(false);
        }
        let Some((seg, _)) = closed.iter().find(|(_, end)| *end > first_dirty) else {
            return Ok(false);
        };
        let first_ts = seg
            .header_at(0, seg.closed_size())?
            .map(|h| h.max_timestamp)
            .filter(|ts| *ts > 0);
        Ok(first_ts.is_some_and(|ts| ts < now.saturating_sub(cfg.max_compaction_lag_ms)))
    };
    if !force && (dirty_bytes == 0 || (ratio <= cfg.min_cleanable_dirty_ratio && !overdue()?)) {
        return Ok(None);
    }

    // The partition's transactions, from the whole log; nothing at or past
    // the first open transaction is cleaned (Kafka stops at the last stable
    // offset).
    let plan = txn::TxnPlan::build(log)?;
    if let Some(fu) = plan.first_unstable {
        if let Some(i) = closed.iter().position(|(_, end)| *end > fu) {
            closed.truncate(i);
        }
    }
    let Some(dirty_end) = closed.last().map(|(_, end)| *end) else {
        return Ok(None);
    };

    // 1. The offset map over the dirty section, without aborted records.
    let mut map: HashMap<Vec<u8>, i64> = HashMap::new();
    for (seg, end) in &closed {
        if *end <= first_dirty {
            continue;
        }
        for_each_batch(seg, |pos, h, batch| {
            if h.is_control() || plan.is_aborted(&h) {
                return Ok(());
            }
            let Ok(records) = ottla_record::decode::records(&h, batch) else {
                return Ok(()); // kept whole: see the module docs
            };
            for rec in records.iter() {
                let rec = rec.map_err(|r| Error::corrupt(seg.path(), pos, r))?;
                if let Some(k) = rec.key {
                    match map.get_mut(k) {
                        Some(o) => *o = (*o).max(rec.offset),
                        None => {
                            map.insert(k.to_vec(), rec.offset);
                        }
                    }
                }
            }
            Ok(())
        })?;
    }

    // The gap end moves before the first swap: a process that re-lists
    // after a swap must already allow that segment's gaps. The checkpoint
    // moves only after the last swap, so a pass that dies in between is
    // redone from the same first dirty offset.
    let clean_end = first_dirty.max(dirty_end);
    if read_gap_end(log.dir()).map_or(true, |g| g < clean_end) {
        write_atomic(
            &log.dir().join(GAP_END_FILE),
            format!("{clean_end}\n").as_bytes(),
        )?;
    }
    log.set_clean_end(clean_end);

    // 2 and 3. Rewrite group by group, swapping each in.
    let mut stats = CleanerStats {
        dirty_ratio: ratio,
        clean_end,
        ..Default::default()
    };
    let ctx = PassContext {
        map: &map,
        plan: &plan,
        now,
        cfg: &cfg,
    };
    let mut tracker = txn::TxnTracker::default();
    let mut first_swap = true;
    for group in group_by_size(&closed, cfg.segment_bytes) {
        let (cleaned, g) = write_cleaned(log, &group, &ctx, &mut tracker)?;
        if swap_in(log, &group, &cleaned, first_swap)? {
            first_swap = false;
            stats.segments_before += group.len();
            stats.segments_after += 1;
            stats.bytes_before += g.bytes_before;
            stats.bytes_after += g.bytes_after;
            stats.records_before += g.records_before;
            stats.records_after += g.records_after;
            stats.tombstones_removed += g.tombstones_removed;
            stats.aborted_records_removed += g.aborted_records_removed;
            stats.markers_removed += g.markers_removed;
        } else {
            cleaned.remove();
        }
    }
    write_checkpoint(log, clean_end)?;
    Ok(Some(stats))
}

struct PassContext<'a> {
    map: &'a HashMap<Vec<u8>, i64>,
    plan: &'a txn::TxnPlan,
    now: i64,
    cfg: &'a TopicConfig,
}

/// Consecutive segments whose sizes add up to at most `max_bytes` (one at
/// least), and whose offsets fit the indexes' 32-bit relative offsets.
fn group_by_size(
    closed: &[(Arc<LogSegment>, i64)],
    max_bytes: u64,
) -> Vec<Vec<(Arc<LogSegment>, i64)>> {
    let mut groups: Vec<Vec<(Arc<LogSegment>, i64)>> = Vec::new();
    let mut size = 0u64;
    for (seg, end) in closed {
        let fits = groups.last().is_some_and(|g| {
            size + seg.closed_size() <= max_bytes && end - g[0].0.base_offset <= i32::MAX as i64
        });
        if fits {
            size += seg.closed_size();
            if let Some(g) = groups.last_mut() {
                g.push((seg.clone(), *end));
            }
        } else {
            size = seg.closed_size();
            groups.push(vec![(seg.clone(), *end)]);
        }
    }
    groups
}

/// Call `f(position, header, batch)` for every batch of a closed segment,
/// checking each one's CRC and that offsets never go backwards.
fn for_each_batch(
    seg: &LogSegment,
    mut f: impl FnMut(u64, BatchHeader, &[u8]) -> Result<()>,
) -> Result<()> {
    const WINDOW: usize = 1 << 20;
    let limit = seg.closed_size();
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = 0u64;
    let mut pos = 0u64;
    let mut next = i64::MIN;
    while pos < limit {
        let have = |buf: &Vec<u8>, start: u64, pos: u64, len: usize| {
            pos >= start && pos + len as u64 <= start + buf.len() as u64
        };
        if !have(&buf, buf_start, pos, LOG_OVERHEAD) {
            buf.resize(WINDOW.min((limit - pos) as usize), 0);
            let n = seg.read_at(pos, &mut buf)?;
            buf.truncate(n);
            buf_start = pos;
        }
        let at = (pos - buf_start) as usize;
        let total = match peek_total_size(&buf[at..]) {
            Some(t) if t >= HEADER_LEN as i64 && pos + t as u64 <= limit => t as usize,
            _ => {
                return Err(Error::corrupt(
                    seg.path(),
                    pos,
                    "batch does not fit the segment",
                ))
            }
        };
        if !have(&buf, buf_start, pos, total) {
            buf.resize(total.max(WINDOW).min((limit - pos) as usize), 0);
            let n = seg.read_at(pos, &mut buf)?;
            buf.truncate(n);
            buf_start = pos;
            if n < total {
                return Err(Error::corrupt(
                    seg.path(),
                    pos,
                    "batch cut short by end of file",
                ));
            }
        }
        let at = (pos - buf_start) as usize;
        let batch = &buf[at..at + total];
        let h = check_batch(batch).map_err(|r| Error::corrupt(seg.path(), pos, r))?;
        if h.base_offset < next {
            return Err(Error::corrupt(
                seg.path(),
                pos,
                format!("batch at offset {} goes back before {next}", h.base_offset),
            ));
        }
        next = h.next_offset();
        f(pos, h, batch)?;
        pos += total as u64;
    }
    Ok(())
}

/// The `.cleaned` files of one group.
struct Cleaned {
    log: PathBuf,
    index: PathBuf,
    timeindex: PathBuf,
}

impl Cleaned {
    fn new(dir: &Path, base: i64) -> Cleaned {
        let log = dir.join(log_file_name(base));
        Cleaned {
            log: suffixed(&log, "log.cleaned"),
            index: suffixed(&log, "index.cleaned"),
            timeindex: suffixed(&log, "timeindex.cleaned"),
        }
    }

    fn remove(&self) {
        for p in [&self.log, &self.index, &self.timeindex] {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn suffixed(log_path: &Path, ext: &str) -> PathBuf {
    log_path.with_extension(ext)
}

#[derive(Default)]
struct GroupStats {
    bytes_before: u64,
    bytes_after: u64,
    records_before: u64,
    records_after: u64,
    tombstones_removed: u64,
    aborted_records_removed: u64,
    markers_removed: u64,
}

/// Write the cleaned segment of `group` as `.cleaned` files, fsync'd.
fn write_cleaned(
    log: &PartitionLog,
    group: &[(Arc<LogSegment>, i64)],
    ctx: &PassContext<'_>,
    tracker: &mut txn::TxnTracker,
) -> Result<(Cleaned, GroupStats)> {
    let base = group[0].0.base_offset;
    let cleaned = Cleaned::new(log.dir(), base);
    cleaned.remove();
    let result = write_cleaned_files(&cleaned, base, group, ctx, tracker);
    if result.is_err() {
        cleaned.remove();
    }
    result.map(|g| (cleaned, g))
}

fn write_cleaned_files(
    cleaned: &Cleaned,
    base: i64,
    group: &[(Arc<LogSegment>, i64)],
    ctx: &PassContext<'_>,
    tracker: &mut txn::TxnTracker,
) -> Result<GroupStats> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&cleaned.log)
        .ctx("create cleaned segment", &cleaned.log)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let max_index = ctx.cfg.segment_index_bytes;
    let mut idx = Indexes {
        offset: OffsetIndex::open_writable(&cleaned.index, base, max_index)?,
        time: TimeIndex::open_writable(&cleaned.timeindex, base, max_index)?,
    };
    let mut st = HeadState {
        next_offset: base,
        active_base: base,
        max_timestamp: i64::MIN,
        offset_of_max_timestamp: -1,
        ..Default::default()
    };
    let mut g = GroupStats::default();
    // The group's largest timestamp, kept in the time index even if its
    // record goes, so time retention of compact,delete sees the same age.
    let (mut orig_max_ts, mut orig_max_off) = (i64::MIN, -1);
    let mut encoded: Vec<u8> = Vec::new();
    // The last batch read, if it was dropped: the group's last batch is
    // kept (empty) so the cleaned segment ends where the group did.
    let mut dropped_last: Option<BatchHeader> = None;
    let interval = ctx.cfg.index_interval_bytes;
    for (seg, _) in group {
        g.bytes_before += seg.closed_size();
        for_each_batch(seg, |p, h, batch| {
            if h.max_timestamp > orig_max_ts {
                orig_max_ts = h.max_timestamp;
                orig_max_off = h.last_offset();
            }
            g.records_before += h.records_count.max(0) as u64;
            dropped_last = None;
            let must_keep = ctx.plan.is_last_of_producer(&h);
            if h.is_control() {
                let bytes = match marker_action(&h, tracker.on_marker(&h), must_keep, ctx) {
                    MarkerAction::Keep => batch,
                    MarkerAction::Remove => {
                        g.markers_removed += 1;
                        dropped_last = Some(h);
                        return Ok(());
                    }
                    MarkerAction::SetHorizon(hz) => {
                        match ottla_record::decode::records(&h, batch) {
                            Ok(records) => {
                                let recs = records
                                    .iter()
                                    .collect::<std::result::Result<Vec<_>, _>>()
                                    .map_err(|r| Error::corrupt(seg.path(), p, r))?;
                                encode_batch(&mut encoded, &h, &recs, Some(hz));
                                &encoded
                            }
                            Err(_) => batch,
                        }
                    }
                };
                g.records_after += h.records_count.max(0) as u64;
                return put_batch(&mut out, &mut idx, &mut st, bytes, interval, &cleaned.log);
            }
            tracker.on_data(&h);
            if ctx.plan.is_aborted(&h) {
                g.aborted_records_removed += h.records_count.max(0) as u64;
                if !must_keep {
                    dropped_last = Some(h);
                    return Ok(());
                }
                // Its producer's last batch: kept, empty.
                encode_batch(&mut encoded, &h, &[], h.delete_horizon());
                return put_batch(
                    &mut out,
                    &mut idx,
                    &mut st,
                    &encoded,
                    interval,
                    &cleaned.log,
                );
            }
            let records = ottla_record::decode::records(&h, batch).ok();
            let bytes: &[u8] = match records {
                None => {
                    g.records_after += h.records_count.max(0) as u64;
                    batch
                }
                Some(records) => {
                    let horizon = h.delete_horizon();
                    let mut tombstones_kept = false;
                    let mut all = true;
                    let mut local: Vec<RecordView<'_>> = Vec::new();
                    for rec in records.iter() {
                        let rec = rec.map_err(|r| Error::corrupt(seg.path(), p, r))?;
                        let latest = rec
                            .key
                            .map_or(true, |k| ctx.map.get(k).map_or(true, |o| rec.offset >= *o));
                        let expired =
                            rec.value.is_none() && horizon.is_some_and(|hz| hz <= ctx.now);
                        if latest && !expired {
                            tombstones_kept |= rec.value.is_none();
                            local.push(rec);
                        } else {
                            if rec.value.is_none() {
                                g.tombstones_removed += 1;
                            }
                            all = false;
                        }
                    }
                    g.records_after += local.len() as u64;
                    let needs_horizon = tombstones_kept && horizon.is_none();
                    if all && !needs_horizon && h.compression() == 0 {
                        batch
                    } else if local.is_empty() && !must_keep {
                        dropped_last = Some(h);
                        return Ok(());
                    } else {
                        let hz = horizon.or(needs_horizon
                            .then(|| ctx.now.saturating_add(ctx.cfg.delete_retention_ms)));
                        encode_batch(&mut encoded, &h, &local, hz);
                        &encoded
                    }
                }
            };
            put_batch(&mut out, &mut idx, &mut st, bytes, interval, &cleaned.log)
        })?;
    }
    if let Some(h) = dropped_last {
        encode_batch(&mut encoded, &h, &[], None);
        put_batch(
            &mut out,
            &mut idx,
            &mut st,
            &encoded,
            interval,
            &cleaned.log,
        )?;
    }
    g.bytes_after = st.active_size;
    let file = out
        .into_inner()
        .map_err(|e| Error::io("write cleaned segment", &cleaned.log, e.into_error()))?;
    file.sync_all().ctx("fsync cleaned segment", &cleaned.log)?;
    // Seal the indexes as a roll does: a last time entry with the largest
    // timestamp, both trimmed to their entries, then fsync'd.
    if orig_max_ts > st.max_timestamp {
        st.max_timestamp = orig_max_ts;
        st.offset_of_max_timestamp = orig_max_off;
    }
    let mut time_entries = st.time_entries;
    let last_ts = idx.time.last(time_entries).map_or(i64::MIN, |(ts, _)| ts);
    if st.max_timestamp > last_ts
        && st.offset_of_max_timestamp >= base
        && idx
            .time
            .put(time_entries, st.max_timestamp, st.offset_of_max_timestamp)?
    {
        time_entries += 1;
    }
    idx.offset.trim(st.index_entries)?;
    idx.time.trim(time_entries)?;
    drop(idx);
    for p in [&cleaned.index, &cleaned.timeindex] {
        File::open(p)
            .and_then(|f| f.sync_all())
            .ctx("fsync cleaned index", p)?;
    }
    Ok(g)
}

/// What becomes of a marker (control batch).
enum MarkerAction {
    Keep,
    /// Stamp it with this delete horizon.
    SetHorizon(i64),
    Remove,
}

/// Kafka's rule for markers: one whose transaction has no batch left is
/// stamped with a delete horizon on its first cleaning and removed by the
/// first pass after it; a producer's last marker (see [`txn`]) stays.
fn marker_action(
    h: &BatchHeader,
    txn_empty: bool,
    last_of_producer: bool,
    ctx: &PassContext<'_>,
) -> MarkerAction {
    if last_of_producer || !txn_empty {
        return MarkerAction::Keep;
    }
    match h.delete_horizon() {
        Some(hz) if hz <= ctx.now => MarkerAction::Remove,
        Some(_) => MarkerAction::Keep,
        None => MarkerAction::SetHorizon(ctx.now.saturating_add(ctx.cfg.delete_retention_ms)),
    }
}

/// Write one batch at the end of the cleaned segment and index it.
fn put_batch(
    out: &mut std::io::BufWriter<File>,
    idx: &mut Indexes,
    st: &mut HeadState,
    bytes: &[u8],
    interval: u64,
    path: &Path,
) -> Result<()> {
    let h = BatchHeader::parse(bytes)
        .ok_or_else(|| Error::InvalidRecord("cleaned batch too short".into()))?;
    out.write_all(bytes).ctx("write cleaned segment", path)?;
    // `active_size` is where this batch starts: the bytes written so far.
    account_batch(idx, st, st.active_size, &h, interval)
}

/// Encode `records` (a subset of the batch `h`) as a v2 batch with `h`'s
/// base offset, last offset delta, producer fields and leader epoch,
/// uncompressed, CRC-32C computed.
fn encode_batch(
    out: &mut Vec<u8>,
    h: &BatchHeader,
    records: &[RecordView<'_>],
    horizon: Option<i64>,
) {
    out.clear();
    out.resize(HEADER_LEN, 0);
    let log_append = h.log_append_time();
    let base_ts =
        horizon.unwrap_or_else(|| records.first().map_or(h.base_timestamp, |r| r.timestamp));
    let max_ts = if log_append || records.is_empty() {
        h.max_timestamp
    } else {
        records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(h.max_timestamp)
    };
    for r in records {
        let timestamp_delta = if log_append {
            0
        } else {
            r.timestamp.wrapping_sub(base_ts)
        };
        put_record_view(out, timestamp_delta, (r.offset - h.base_offset) as i32, r);
    }
    let mut attributes = h.attributes & !COMPRESSION_MASK;
    if horizon.is_some() {
        attributes |= DELETE_HORIZON_FLAG;
    }
    let header = BatchHeader {
        base_offset: h.base_offset,
        batch_length: (out.len() - LOG_OVERHEAD) as i32,
        leader_epoch: h.leader_epoch,
        magic: CURRENT_MAGIC,
        crc: 0, // sealed below, once every field it covers is written
        attributes,
        last_offset_delta: h.last_offset_delta,
        base_timestamp: base_ts,
        max_timestamp: max_ts,
        producer_id: h.producer_id,
        producer_epoch: h.producer_epoch,
        base_sequence: h.base_sequence,
        records_count: records.len() as i32,
    };
    header.write(out);
    seal_crc(out);
}

/// The crash tests' hook (see the module docs), armed for the first swap.
fn crash_point(step: &str, armed: bool) {
    if armed {
        super::partition::crash_point("OTTLA_CLEANER_CRASH_AT", step);
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).ctx("rename", from)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Put a group's cleaned segment in place (the swap protocol in the module
/// docs). False, touching nothing, when retention deleted the group first
/// or the partition was deleted.
fn swap_in(
    log: &PartitionLog,
    group: &[(Arc<LogSegment>, i64)],
    cleaned: &Cleaned,
    first: bool,
) -> Result<bool> {
    let _w = log.writer().lock();
    let lock = log.lock()?;
    let _g = lock.lock_append()?;
    if log.is_deleted() {
        return Ok(false);
    }
    let Some(mut st) = log.head().read() else {
        return Ok(false);
    };
    let base = group[0].0.base_offset;
    let dir = log.dir();
    let target = segment_path(dir, base);
    // Retention deletes whole segments from the front: if the group's first
    // file is still the one we read, the whole group is.
    let same = std::fs::metadata(&target).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino()) == group[0].0.file_id()
    });
    if !same || base >= st.active_base {
        return Ok(false);
    }
    let swap = |ext: &str| suffixed(&target, ext);
    {
        let _map = log.segments_lock().write();
        let _swap = lock.lock_swap(true)?;
        // No change under a clean mark (ARCHITECTURE, "When the head is
        // marked in use"); the loader finishes a swap on open either way.
        log.head().mark_in_use();
        crash_point("cleaned", first);
        rename(&cleaned.index, &swap("index.swap"))?;
        rename(&cleaned.timeindex, &swap("timeindex.swap"))?;
        rename(&cleaned.log, &swap("log.swap"))?;
        sync_dir(dir)?;
        crash_point("swap", first);
        rename(&swap("index.swap"), &swap("index"))?;
        rename(&swap("timeindex.swap"), &swap("timeindex"))?;
        crash_point("index", first);
        for (seg, _) in &group[1..] {
            remove_segment_files(seg.path());
        }
        crash_point("deleted", first);
        rename(&swap("log.swap"), &target)?;
        sync_dir(dir)?;
        st.segments_gen = st.segments_gen.wrapping_add(1);
        log.head().write(&st);
    }
    Ok(true)
}

/// Finish a cleaner's leftovers from a live process: under the cleaner
/// lock (no cleaner is at work) with the append, map and swap locks.
fn finish_leftovers(log: &PartitionLog) -> Result<()> {
    if !has_leftovers(log.dir())? {
        return Ok(());
    }
    let _w = log.writer().lock();
    let lock = log.lock()?;
    let _g = lock.lock_append()?;
    let _map = log.segments_lock().write();
    let _swap = lock.lock_swap(true)?;
    log.head().mark_in_use();
    if complete_swaps(log)? {
        if let Some(mut st) = log.head().read() {
            st.segments_gen = st.segments_gen.wrapping_add(1);
            log.head().write(&st);
        }
    }
    Ok(())
}

fn has_leftovers(dir: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(dir).ctx("list partition", dir)? {
        let entry = entry.ctx("list partition", dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".cleaned") || name.ends_with(".swap") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Roll back uncommitted cleaner output (`.cleaned` files, index `.swap`
/// files without their `.log.swap`) and complete committed swaps. The
/// caller excludes cleaners and appenders (the loader as the sole opener
/// holding the append lock; a cleaner with the locks of
/// `finish_leftovers`). Returns whether a swap was completed.
pub(crate) fn complete_swaps(log: &PartitionLog) -> Result<bool> {
    let dir = log.dir();
    let mut log_swaps = Vec::new();
    let mut index_swaps = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list partition", dir)? {
        let entry = entry.ctx("list partition", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = dir.join(name);
        if name.ends_with(".cleaned") {
            let _ = std::fs::remove_file(&path);
        } else if let Some(stem) = name.strip_suffix(".log.swap") {
            if let Ok(b) = stem.parse::<i64>() {
                log_swaps.push(b);
            }
        } else if let Some(stem) = name
            .strip_suffix(".index.swap")
            .or_else(|| name.strip_suffix(".timeindex.swap"))
        {
            if let Ok(b) = stem.parse::<i64>() {
                index_swaps.push((b, path));
            }
        }
    }
    for (b, path) in &index_swaps {
        if !log_swaps.contains(b) {
            let _ = std::fs::remove_file(path); // not committed
        }
    }
    log_swaps.sort_unstable();
    for base in &log_swaps {
        let target = segment_path(dir, *base);
        let swap_log = suffixed(&target, "log.swap");
        let end = end_offset(&swap_log)?.max(*base);
        for ext in ["index", "timeindex"] {
            let s = suffixed(&target, &format!("{ext}.swap"));
            if s.exists() {
                rename(&s, &suffixed(&target, ext))?;
            }
        }
        for b in log.list_bases()? {
            if b > *base && b < end {
                remove_segment_files(&segment_path(dir, b));
            }
        }
        rename(&swap_log, &target)?;
        // Rebuild its indexes from the log rather than trust whichever
        // index files a power loss left in place: the log was fsync'd
        // before the commit, the renames of its indexes may not have been.
        let cfg = log.config();
        let seg = LogSegment::open(dir, *base, true, cfg.segment_index_bytes)?;
        // The cleaner's own fsync'd output: its gaps are the point.
        let (st, _) = super::segment::scan(&seg, *base, cfg.index_interval_bytes, i64::MAX)?;
        super::loader::finalize_closed(&seg, &st)?;
        seg.sync()?;
    }
    if !log_swaps.is_empty() {
        sync_dir(dir)?;
    }
    Ok(!log_swaps.is_empty())
}

/// The offset after the last batch of a (cleaned, fsync'd) segment file.
fn end_offset(path: &Path) -> Result<i64> {
    let file = File::open(path).ctx("open swap segment", path)?;
    let len = file.metadata().ctx("stat swap segment", path)?.len();
    let mut pos = 0u64;
    let mut end = i64::MIN;
    let mut buf = [0u8; HEADER_LEN];
    use std::os::unix::fs::FileExt;
    while pos + HEADER_LEN as u64 <= len {
        file.read_exact_at(&mut buf, pos)
            .ctx("read swap segment", path)?;
        let Some(h) = BatchHeader::parse(&buf) else {
            break;
        };
        if h.total_size() < HEADER_LEN || pos + h.total_size() as u64 > len {
            break;
        }
        end = h.next_offset();
        pos += h.total_size() as u64;
    }
    Ok(end)
}
