//! The log loader: what a process does when it is the first to open a
//! partition. A clean head is trusted as is. A head left by a process that
//! crashed in this boot is intact (the page cache survived), so only the
//! unacknowledged tail past it is cut off. Anything else (no head, a torn
//! head update, or a head from before a reboot that may have lost unflushed
//! pages) is recovered from the files: every batch from the recovery point
//! on is re-validated, the log is truncated at the first torn or corrupt
//! batch, later segments are removed, and the indexes are rebuilt.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::head::{HeadCondition, HeadState};
use super::offset_index::ENTRY_SIZE as OFFSET_ENTRY;
use super::partition::{now_ms, read_log_start, remove_segment_files, segment_path, PartitionLog};
use super::segment::{scan, LogSegment};
use super::time_index::ENTRY_SIZE as TIME_ENTRY;
use crate::error::{Error, Result};
use ottla_record::batch::{BatchHeader, HEADER_LEN};

pub(crate) fn load(log: &PartitionLog) -> Result<HeadState> {
    let head = log.head();
    // A log cleaner that died mid-swap: finish or discard its files first.
    // A cleanly closed log that starts at its active segment has no closed
    // segment a swap could concern (skips listing the directory).
    let st = head.read_locked();
    if !(head.condition() == HeadCondition::Clean && st.log_start_offset == st.active_base) {
        super::cleaner::complete_swaps(log)?;
    }
    match head.condition() {
        HeadCondition::Clean => trust(log, false),
        HeadCondition::CrashedThisBoot => trust(log, true),
        HeadCondition::Missing => recover(log, i64::MIN),
        HeadCondition::TornUpdate | HeadCondition::EarlierBoot => {
            let st = head.read_locked();
            recover(log, st.recovery_point.min(st.active_base))
        }
    }
}

/// Open the segments the head describes without reading them.
fn trust(log: &PartitionLog, crashed: bool) -> Result<HeadState> {
    let mut st = log.head().read_locked();
    if crashed {
        // `delete_records` writes its checkpoint before the head: a crash
        // between the two left the file ahead (see `partition::log_start`).
        if let Some(start) = read_log_start(log.dir()) {
            if start > st.log_start_offset && start <= st.next_offset {
                st.log_start_offset = start;
                log.head().write(&st);
            }
        }
    }
    // A cleanly closed log that starts at its active segment has no other
    // segment holding live offsets, and no leftovers of an interrupted roll
    // or retention pass to clean up (those need a crash, which leaves the
    // head unclean): skip listing the directory. Any older file there is
    // below the log start, which nothing reads.
    let bases = if !crashed && st.log_start_offset == st.active_base {
        vec![st.active_base]
    } else {
        log.list_bases()?
    };
    if !bases.contains(&st.active_base) {
        return recover(log, st.recovery_point.min(st.active_base));
    }
    let mut map = BTreeMap::new();
    for (i, &base) in bases.iter().enumerate() {
        if base > st.active_base {
            // Created by a roll that never published: nothing acknowledged is in it.
            remove_segment_files(&segment_path(log.dir(), base));
            continue;
        }
        let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
        if next_base <= st.log_start_offset {
            // Left behind by a retention pass that died between steps.
            remove_segment_files(&segment_path(log.dir(), base));
            continue;
        }
        // Only the `.log` is opened; indexes are mapped on first use (the
        // appender maps the active one, creating or growing it if needed).
        match LogSegment::open_existing(log.dir(), base, base == st.active_base) {
            Ok(seg) => {
                map.insert(base, Arc::new(seg));
            }
            // The head names a segment that is not there: re-validate.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return recover(log, st.recovery_point.min(st.active_base));
            }
            Err(e) => return Err(e),
        }
    }
    let Some(active) = map.get(&st.active_base) else {
        return recover(log, st.active_base);
    };
    // Its size as just opened: we hold the append lock, so it is current.
    let len = active.closed_size();
    if len < st.active_size {
        // The head promises bytes the file does not have: re-validate.
        return recover(log, st.recovery_point.min(st.active_base));
    }
    if !fits_files(&st, active)? {
        // A damaged head: none of its fields can be believed, so neither
        // can its recovery point. Re-validate everything rather than cut
        // the active segment at a size the head made up.
        drop(map);
        return recover(log, i64::MIN);
    }
    if len > st.active_size {
        // Bytes of an append that never published its head: never acknowledged.
        debug_assert!(crashed || len > st.active_size);
        active.truncate(st.active_size)?;
    }
    log.install_segments(st.segments_gen, st.active_base, map);
    if crashed {
        // An append that died after recording a new epoch, before its
        // batch was published, left an entry at the log end.
        log.truncate_epochs_locked(&mut st, true)?;
    }
    Ok(st)
}

/// Whether a head's fields agree with the files. The head has no checksum
/// and a trusted one is used unchecked (its size is what the active segment
/// gets cut to), so it must describe these files: offsets in order, index
/// counts the index files can hold, and a batch ending exactly at
/// `active_size` whose next offset is `next_offset`. A head written by
/// the engine always passes. Walks at most one index interval of headers.
fn fits_files(st: &HeadState, active: &LogSegment) -> Result<bool> {
    let ordered = 0 <= st.active_base
        && st.active_base <= st.next_offset
        && 0 <= st.log_start_offset
        && st.log_start_offset <= st.next_offset
        && st.flushed_size <= st.active_size;
    if !ordered {
        return Ok(false);
    }
    let (mut pos, mut hint) = if st.index_entries == 0 && st.time_entries == 0 {
        // Nothing to check against the indexes: leave them unmapped.
        (0, None)
    } else {
        match last_index_entry(st, active)? {
            IndexTail::Unusable => (0, None),
            IndexTail::TooShort => return Ok(false),
            IndexTail::Entry(e) => e.map_or((0, None), |(off, p)| (u64::from(p), Some(off))),
        }
    };
    let mut end = st.active_base;
    let mut headers = HeaderWalk::new(active, st.active_size);
    while pos < st.active_size {
        let Some(h) = headers.at(pos)? else {
            return Ok(false);
        };
        if let Some(off) = hint.take() {
            if h.last_offset() != off {
                return Ok(false);
            }
        }
        end = h.next_offset();
        pos += h.total_size() as u64;
    }
    Ok(pos == st.active_size && end == st.next_offset)
}

/// What the index files say about a head, for `fits_files`.
enum IndexTail {
    /// Missing or empty index files (or a segment whose indexes are not
    /// to be used): reads scan without them and the first append recreates
    /// them, so the walk starts at the segment's first batch.
    Unusable,
    /// The head counts more entries than a file can hold.
    TooShort,
    /// The offset index's last entry the head counts (offset, position).
    Entry(Option<(i64, u32)>),
}

/// The offset index entry the walk starts from, read with one `pread`
/// instead of mapping both index files (`LogSegment::indexes`: twelve
/// syscalls, a page fault and an `munmap` at close for a partition that is
/// only read, or whose appender maps them anyway). Checks the same as the
/// mapping did: entry counts that fit the files' sizes. A wrong entry
/// cannot do harm: the walk checks it against the batch it names.
fn last_index_entry(st: &HeadState, active: &LogSegment) -> Result<IndexTail> {
    use std::os::unix::fs::FileExt;
    if active.is_unindexed() {
        return Ok(IndexTail::Unusable);
    }
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let tpath = active.path().with_extension("timeindex");
    let time_cap = match std::fs::metadata(&tpath) {
        Ok(m) => m.len() / TIME_ENTRY as u64,
        Err(e) if not_found(&e) => 0,
        Err(e) => return Err(Error::io("stat index", &tpath, e)),
    };
    let ipath = active.path().with_extension("index");
    let file = match std::fs::File::open(&ipath) {
        Ok(f) => f,
        Err(e) if not_found(&e) => return Ok(IndexTail::Unusable),
        Err(e) => return Err(Error::io("open index", &ipath, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat index", &ipath, e))?
        .len();
    let offset_cap = len / OFFSET_ENTRY as u64;
    if offset_cap == 0 || time_cap == 0 {
        return Ok(IndexTail::Unusable);
    }
    if st.index_entries > offset_cap || st.time_entries > time_cap {
        return Ok(IndexTail::TooShort);
    }
    let Some(last) = st.index_entries.checked_sub(1) else {
        return Ok(IndexTail::Entry(None));
    };
    let mut e = [0u8; OFFSET_ENTRY];
    file.read_exact_at(&mut e, last * OFFSET_ENTRY as u64)
        .map_err(|err| Error::io("read index", &ipath, err))?;
    let rel = i32::from_be_bytes([e[0], e[1], e[2], e[3]]);
    let pos = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
    Ok(IndexTail::Entry(
        active
            .base_offset
            .checked_add(i64::from(rel))
            .map(|off| (off, pos)),
    ))
}

/// Batch headers of the active segment read for `fits_files`, a chunk at a
/// time: the walk covers up to one index interval (4 KiB by default) of
/// small batches, and one `pread` per header made it the largest part of
/// opening a partition with many small batches (a 100 x 8 directory with
/// ~20 batches per partition: ~20 syscalls per partition).
struct HeaderWalk<'a> {
    seg: &'a LogSegment,
    limit: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
}

/// Bytes read at once: covers a default index interval of headers plus the
/// last batch's header, without growing with `segment.bytes`.
const WALK_CHUNK: u64 = 8 * 1024;

impl<'a> HeaderWalk<'a> {
    fn new(seg: &'a LogSegment, limit: u64) -> Self {
        HeaderWalk {
            seg,
            limit,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The header at `pos`, or `None` when no whole, plausible batch starts
    /// there below the limit (the head does not fit the file). The same
    /// checks as `LogSegment::header_at`.
    fn at(&mut self, pos: u64) -> Result<Option<BatchHeader>> {
        let hl = HEADER_LEN as u64;
        if pos + hl > self.limit {
            return Ok(None);
        }
        let in_buf = pos >= self.start && pos + hl <= self.start + self.buf.len() as u64;
        if !in_buf {
            let want = (self.limit - pos).min(WALK_CHUNK.max(hl)) as usize;
            self.buf.resize(want, 0);
            let n = self.seg.read_at(pos, &mut self.buf)?;
            self.buf.truncate(n);
            self.start = pos;
            if n < HEADER_LEN {
                return Ok(None);
            }
        }
        let at = (pos - self.start) as usize;
        let Some(h) = BatchHeader::parse(&self.buf[at..]) else {
            return Ok(None);
        };
        if h.total_size() < HEADER_LEN || pos + h.total_size() as u64 > self.limit {
            return Ok(None);
        }
        Ok(Some(h))
    }
}

/// Rebuild the log's state from its files, re-validating from the segment
/// holding offset `from`.
pub(crate) fn recover(log: &PartitionLog, from: i64) -> Result<HeadState> {
    let head = log.head();
    let valid = head.is_valid();
    let old = head.read_locked();
    let mut bases = log.list_bases()?;
    if bases.is_empty() {
        let base = if valid { old.next_offset.max(0) } else { 0 };
        log.open_segment(base, true)?;
        bases.push(base);
    }
    let from_base = bases
        .iter()
        .rev()
        .find(|b| **b <= from)
        .copied()
        .unwrap_or(bases[0]);
    let config = log.config();
    let interval = config.index_interval_bytes;
    // Only the cleaner leaves gaps between batches, and only below the gap
    // end it recorded (the same rule as the read path), whatever
    // `cleanup.policy` says now.
    let gaps_until = super::cleaner::read_gap_end(log.dir()).unwrap_or(i64::MIN);
    let mut map = BTreeMap::new();
    let mut active: Option<HeadState> = None;
    let mut prev_next = i64::MIN;
    for (i, &base) in bases.iter().enumerate() {
        if active.is_some() {
            // Past a truncation point: these offsets no longer follow on.
            remove_segment_files(&segment_path(log.dir(), base));
            continue;
        }
        if base < from_base {
            map.insert(base, Arc::new(log.open_segment(base, false)?));
            continue;
        }
        let seg = log.open_segment(base, true)?;
        let (st, stopped) = scan(&seg, base.max(prev_next), interval, gaps_until)?;
        if let Some(pos) = stopped {
            seg.truncate(pos)?;
        }
        prev_next = st.next_offset;
        if stopped.is_some() || i + 1 == bases.len() {
            seg.sync()?;
            map.insert(base, Arc::new(seg));
            active = Some(st);
        } else {
            finalize_closed(&seg, &st)?;
            seg.sync()?;
            drop(seg);
            map.insert(base, Arc::new(log.open_segment(base, false)?));
        }
    }
    let mut st = active.unwrap_or_default();
    let first = bases[0];
    // The larger of the head's and the checkpoint's (`delete_records`),
    // never past the end recovered: records lost with a reboot take the
    // start back with them.
    let checkpoint = read_log_start(log.dir()).unwrap_or(i64::MIN);
    let kept = if valid {
        old.log_start_offset.max(checkpoint)
    } else {
        checkpoint
    };
    st.log_start_offset = kept.max(first).min(st.next_offset.max(first));
    st.segments_gen = if valid {
        old.segments_gen.wrapping_add(1)
    } else {
        1
    };
    st.recovery_point = st.next_offset;
    st.flushed_size = st.active_size;
    st.active_created_ms = now_ms();
    // Every process reads the leader-epoch cache again: it is cut below.
    st.epochs_gen = if valid {
        old.epochs_gen.wrapping_add(1)
    } else {
        1
    };
    head.init(&st);
    log.install_segments(st.segments_gen, st.active_base, map);
    // Epochs starting past the end recovered went with the tail; those of
    // the batches re-validated are assigned again.
    log.recover_epochs_locked(&mut st, from_base)?;
    Ok(st)
}

/// Seal a segment that stops being active: a last time index entry holding
/// its largest timestamp, and indexes trimmed to their valid entries.
pub(crate) fn finalize_closed(seg: &LogSegment, st: &HeadState) -> Result<()> {
    let mut idx = seg.indexes()?.write();
    let mut time_entries = st.time_entries;
    let last_ts = idx.time.last(time_entries).map_or(i64::MIN, |(ts, _)| ts);
    if st.max_timestamp > last_ts
        && idx
            .time
            .put(time_entries, st.max_timestamp, st.offset_of_max_timestamp)?
    {
        time_entries += 1;
    }
    idx.offset.trim(st.index_entries)?;
    idx.time.trim(time_entries)?;
    Ok(())
}
