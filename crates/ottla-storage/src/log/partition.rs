//! `PartitionLog`: one partition's log, shared by every thread of a process
//! (one instance per partition per process, see `Store`) and coordinated with
//! other processes through the partition head and lock file.
//!
//! Writers: in-process mutex, then the cross-process append lock, then
//! re-read the head (another process may have appended or rolled), write the
//! batches at `active_size`, add index entries, publish the head, wake
//! waiters. Readers take no lock: they read a head snapshot and read bytes
//! below its `active_size`, which are whole and final.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use super::head::{Head, HeadState};
use super::lockfile::LockFile;
use super::segment::{account_batch, log_file_name, LogSegment};
use crate::beacon::Beacon;
use crate::config::TopicConfig;
use crate::error::{Error, IoContext, Result};
use ottla_record::batch::{
    check_batch, peek_total_size, set_base_offset, BatchHeader, CURRENT_MAGIC, HEADER_LEN,
    LOG_OVERHEAD,
};

/// Writes a batch's CRC into its first part, given the other parts (see
/// [`PartitionLog::append_parts`]).
pub type SealFn = fn(&mut [u8], &[&[u8]]);

/// How hard an append pushes its bytes toward the disk before returning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Page cache only: survives the process, not the machine.
    PageCache,
    /// fsync before returning: survives power loss.
    Fsync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

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

pub(crate) struct SegmentMap {
    gen: u64,
    active_base: i64,
    pub(crate) map: BTreeMap<i64, Arc<LogSegment>>,
}

impl SegmentMap {
    /// Bytes across segments, the active one counted to the head's size.
    fn total_bytes(&self, st: &HeadState) -> u64 {
        self.map
            .values()
            .map(|s| {
                if s.base_offset == st.active_base {
                    st.active_size
                } else {
                    s.closed_size()
                }
            })
            .sum()
    }
}

pub struct PartitionLog {
    topic: Arc<str>,
    partition: u32,
    dir: PathBuf,
    lock: LockFile,
    head: Head,
    beacon: Arc<Beacon>,
    config: RwLock<Arc<TopicConfig>>,
    segments: RwLock<Arc<SegmentMap>>,
    writer: Mutex<()>,
    /// The cleaner's gap end (`log::cleaner::read_gap_end`) as last read,
    /// or `CLEAN_END_UNKNOWN`: below it compaction may have left offset gaps.
    clean_end: AtomicI64,
}

const CLEAN_END_UNKNOWN: i64 = i64::MIN;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Open (creating if needed) the partition in `dir`, recovering it if the
    /// last process to use it did not close it cleanly.
    pub fn open(
        dir: &Path,
        topic: Arc<str>,
        partition: u32,
        config: Arc<TopicConfig>,
        beacon: Arc<Beacon>,
    ) -> Result<PartitionLog> {
        // The directory usually exists: create it only when the lock file
        // cannot be opened for want of it (saves a mkdir and a stat per
        // partition on open).
        let lock_path = dir.join("partition.lock");
        let lock = match LockFile::open(&lock_path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).ctx("create partition directory", dir)?;
                LockFile::open(&lock_path)?
            }
            other => other?,
        };
        let log = PartitionLog {
            topic,
            partition,
            dir: dir.to_path_buf(),
            lock,
            head: Head::open(&dir.join("partition.head"))?,
            beacon,
            config: RwLock::new(config),
            segments: RwLock::new(Arc::new(SegmentMap {
                gen: u64::MAX,
                active_base: -1,
                map: BTreeMap::new(),
            })),
            writer: Mutex::new(()),
            clean_end: AtomicI64::new(CLEAN_END_UNKNOWN),
        };
        {
            let _g = log.lock.lock_append()?;
            if log.lock.try_presence_exclusive()? {
                // A clean head stays clean until the first change (see
                // `Head::mark_in_use`): opening only to read writes nothing.
                super::loader::load(&log)?;
            } else if log.head.read().is_none() || !log.head.is_valid() {
                log.repair_locked()?;
            }
            log.lock.hold_presence_shared()?;
        }
        log.enforce_retention()?;
        // Cheap when there is nothing to do: a compacted log that is only
        // its active segment, or below the dirty ratio, is not rewritten.
        super::cleaner::clean_on_roll(&log);
        Ok(log)
    }

    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }
    pub fn partition(&self) -> u32 {
        self.partition
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub(crate) fn head(&self) -> &Head {
        &self.head
    }
    pub fn config(&self) -> Arc<TopicConfig> {
        self.config.read().clone()
    }
    pub fn set_config(&self, config: Arc<TopicConfig>) {
        *self.config.write() = config;
    }

    fn index_max_bytes(&self) -> u64 {
        self.config.read().segment_index_bytes
    }

    pub(crate) fn open_segment(&self, base: i64, active: bool) -> Result<LogSegment> {
        LogSegment::open(&self.dir, base, active, self.index_max_bytes())
    }

    /// Segment base offsets on disk, ascending.
    pub(crate) fn list_bases(&self) -> Result<Vec<i64>> {
        Ok(self.list_segment_files()?.0)
    }

    /// Segment base offsets on disk, ascending, and the bases that have a
    /// cleaner's committed `<base>.log.swap` (left by a cleaner that died
    /// mid-swap; see `log::cleaner`).
    pub(crate) fn list_segment_files(&self) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut bases = Vec::new();
        let mut swaps = Vec::new();
        for entry in std::fs::read_dir(&self.dir).ctx("list partition", &self.dir)? {
            let entry = entry.ctx("list partition", &self.dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let (stem, out) = if let Some(stem) = name.strip_suffix(".log") {
                (stem, &mut bases)
            } else if let Some(stem) = name.strip_suffix(".log.swap") {
                (stem, &mut swaps)
            } else {
                continue;
            };
            // Digits only: `parse` would also take a sign, and no segment of
            // ours has a negative base offset.
            if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(b) = stem.parse::<i64>() {
                    out.push(b);
                }
            }
        }
        for b in &swaps {
            if !bases.contains(b) {
                bases.push(*b);
            }
        }
        bases.sort_unstable();
        swaps.sort_unstable();
        Ok((bases, swaps))
    }

    pub(crate) fn lock(&self) -> &LockFile {
        &self.lock
    }

    pub(crate) fn writer(&self) -> &Mutex<()> {
        &self.writer
    }

    /// The in-process side of the swap lock: the cleaner holds this write
    /// lock around its renames, as `segments_for` does around listing.
    pub(crate) fn segments_lock(&self) -> &RwLock<Arc<SegmentMap>> {
        &self.segments
    }

    /// A head snapshot for the cleaner; repairs a torn head.
    pub(crate) fn state(&self) -> Result<HeadState> {
        self.read_state()
    }

    /// Segments matching `st` (see `segments_for`), for the cleaner.
    pub(crate) fn segments_at(&self, st: &HeadState) -> Result<Arc<SegmentMap>> {
        self.segments_for(st)
    }

    /// Offsets below this may have gaps left by compaction.
    fn clean_end(&self) -> i64 {
        let v = self.clean_end.load(Ordering::Acquire);
        if v != CLEAN_END_UNKNOWN {
            return v;
        }
        let v = super::cleaner::read_gap_end(&self.dir).unwrap_or(-1);
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
        let v = super::cleaner::read_gap_end(&self.dir).unwrap_or(-1);
        self.clean_end.fetch_max(v, Ordering::AcqRel);
        base <= v
    }

    pub(crate) fn set_clean_end(&self, v: i64) {
        self.clean_end.store(v, Ordering::Release);
    }

    pub(crate) fn install_segments(
        &self,
        gen: u64,
        active_base: i64,
        map: BTreeMap<i64, Arc<LogSegment>>,
    ) {
        *self.segments.write() = Arc::new(SegmentMap {
            gen,
            active_base,
            map,
        });
    }

    /// The segment map matching `st`, re-listing the directory if another
    /// process rolled or deleted segments since we last looked.
    fn segments_for(&self, st: &HeadState) -> Result<Arc<SegmentMap>> {
        {
            let cur = self.segments.read();
            if cur.gen == st.segments_gen && cur.active_base == st.active_base {
                return Ok(cur.clone());
            }
        }
        let mut cur = self.segments.write();
        if cur.gen == st.segments_gen && cur.active_base == st.active_base {
            return Ok(cur.clone());
        }
        // Listing and opening under the swap lock (shared; `cur` keeps the
        // other threads of this process out): a cleaner's renames are seen
        // all or nothing.
        let _swap = self.lock.lock_swap(false)?;
        let compacted = self.config.read().cleanup_policy != crate::config::CleanupPolicy::Delete;
        let (bases, swaps) = self.list_segment_files()?;
        // A new listing may show segments another process cleaned.
        self.clean_end.store(CLEAN_END_UNKNOWN, Ordering::Release);
        let mut map = BTreeMap::new();
        for base in bases {
            if base > st.active_base {
                continue; // created by a roll not yet published
            }
            let active = base == st.active_base;
            let swapped = swaps.binary_search(&base).is_ok() && !active;
            // A closed segment we already have open keeps its handles,
            // unless the cleaner replaced its file since; the one that was
            // active when we opened it must be reopened to see its final
            // (trimmed) index.
            if let Some(seg) = cur.map.get(&base) {
                if !active && !swapped && base < cur.active_base && !seg.is_unindexed() {
                    // Only the cleaner replaces files, and only of compacted
                    // topics: a delete topic skips the stat. (A file
                    // replaced before a switch to delete and still cached
                    // reads its older, uncompacted records: stale, never
                    // wrong; positions and indexes check their file.)
                    let same = !compacted
                        || std::fs::metadata(seg.path()).is_ok_and(|m| {
                            use std::os::unix::fs::MetadataExt;
                            (m.dev(), m.ino()) == seg.file_id()
                        });
                    if same {
                        map.insert(base, seg.clone());
                        continue;
                    }
                }
            }
            // Never create or grow files here: `st` may be stale (readers
            // hold no lock), so the segment it calls active may have been
            // closed and its index trimmed meanwhile, or deleted by
            // retention. Segments are created only under the append lock.
            let opened = if swapped {
                LogSegment::open_swapped(&self.dir, base)
            } else {
                LogSegment::open_existing(&self.dir, base, active)
            };
            match opened {
                Ok(seg) => {
                    map.insert(base, Arc::new(seg));
                }
                // Deleted by retention since we listed the directory. Even
                // the segment `st` calls active can be, if `st` is stale
                // enough: closed by a roll, then deleted; the head's
                // segments generation has moved on then. The map is left
                // without it, a hole `read_as_of` resolves.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && (base < st.log_start_offset
                            || !active
                            || self
                                .head
                                .read()
                                .is_some_and(|h| h.segments_gen != st.segments_gen)) => {}
                Err(e) => return Err(e),
            }
        }
        let fresh = Arc::new(SegmentMap {
            gen: st.segments_gen,
            active_base: st.active_base,
            map,
        });
        *cur = fresh.clone();
        Ok(fresh)
    }

    /// A head snapshot, repairing the head if its last writer died mid-update.
    fn read_state(&self) -> Result<HeadState> {
        if let Some(st) = self.head.read() {
            return Ok(st);
        }
        let _w = self.writer.lock();
        let _g = self.lock.lock_append()?;
        match self.head.read() {
            Some(st) => Ok(st),
            None => self.repair_locked(),
        }
    }

    /// Rebuild the head from the files, from the active segment on. Caller
    /// holds the append lock.
    ///
    /// A head torn under a live process was torn in this boot (a head torn
    /// before a reboot is repaired by the first opener's loader, which runs
    /// alone), so the page cache kept every byte: the segments below the
    /// active one (whichever of the old and new values the torn head holds)
    /// are whole and sealed, and are not touched. Re-validating them from the
    /// recovery point would reopen them for appending, growing their index
    /// files to full size for a while; a reader in another process mapping
    /// one then would keep a zero-padded index whose last time entry (0)
    /// makes the segment look expired to retention.
    fn repair_locked(&self) -> Result<HeadState> {
        let st = self.head.read_locked();
        let from = if self.head.is_valid() {
            st.active_base
        } else {
            0
        };
        super::loader::recover(self, from)
    }

    fn check_live(&self) -> Result<()> {
        if self.head.is_deleted() {
            return Err(Error::UnknownTopicOrPartition {
                topic: self.topic.to_string(),
                partition: self.partition as i64,
            });
        }
        Ok(())
    }

    pub fn is_deleted(&self) -> bool {
        self.head.is_deleted()
    }

    /// Append whole, already-validated batches (one or more, back to back),
    /// stamping their offsets. Returns the offsets assigned.
    pub fn append(&self, batches: &mut [u8], durability: Durability) -> Result<AppendInfo> {
        self.append_parts(batches, &[], durability, None)
    }

    /// [`PartitionLog::append`] for batches given in parts, written with one
    /// `pwritev`: `batches` holds whole batches and then (at least) the
    /// whole header of the last one, whose remaining bytes are `rest`, in
    /// order. Lets a large value be written from the caller's buffer.
    ///
    /// With `seal` (which writes the CRC into `batches`, given `rest`), the
    /// CRC is computed late: `rest` is written first and, for an fsync'd
    /// append, its writeback to the disk started, then `seal` runs while
    /// the disk works and `batches` is written last. The batch is whole
    /// before the head publishes it either way.
    pub fn append_parts(
        &self,
        batches: &mut [u8],
        rest: &[&[u8]],
        durability: Durability,
        seal: Option<SealFn>,
    ) -> Result<AppendInfo> {
        if batches.is_empty() {
            return Err(Error::InvalidRecord("empty append".into()));
        }
        let total = batches.len() + rest.iter().map(|r| r.len()).sum::<usize>();
        let _w = self.writer.lock();
        let _g = self.lock.lock_append()?;
        self.check_live()?;
        // Before any byte changes: a crash from here on leaves a head that
        // is not clean, so the next opener cuts what we did not publish.
        if durability == Durability::Fsync {
            self.head
                .mark_in_use_durably()
                .ctx("flush head", &self.dir)?;
        } else {
            self.head.mark_in_use();
        }
        let mut st = match self.head.read() {
            Some(st) => st,
            None => self.repair_locked()?,
        };
        let cfg = self.config();
        let now = now_ms();
        let len = total as u64;
        let mut segs = self.segments_for(&st)?;
        let must_roll = st.active_size > 0
            && (st.active_size + len > cfg.segment_bytes
                || st.active_size + len > u32::MAX as u64
                || now.saturating_sub(st.active_created_ms) >= cfg.segment_ms
                || self.index_nearly_full(&segs, &st, cfg.segment_index_bytes)?);
        if must_roll {
            st = self.roll_locked(st, now)?;
            segs = self.segments_for(&st)?;
        }
        let active = segs.map.get(&st.active_base).cloned().ok_or_else(|| {
            Error::IllegalState(format!("active segment {} missing", st.active_base))
        })?;
        let base_offset = st.next_offset;
        let mut headers: Vec<(u64, BatchHeader)> = Vec::new();
        let mut at = 0usize;
        let mut next = base_offset;
        while at < batches.len() {
            // The CRC is the caller's to check (the producer made it; the
            // broker verifies what clients send), but the framing and offsets
            // are checked here, before anything is stamped: a batch that
            // does not fit, or whose offsets run backwards, would break the
            // offset order every reader and recovery relies on.
            let h = BatchHeader::parse(&batches[at..])
                .filter(|h| {
                    h.batch_length >= (HEADER_LEN - LOG_OVERHEAD) as i32
                        && at + h.total_size() <= total
                })
                .ok_or_else(|| Error::InvalidRecord("truncated batch in append".into()))?;
            if h.magic != CURRENT_MAGIC || h.last_offset_delta < 0 || h.records_count < 0 {
                return Err(Error::InvalidRecord(format!(
                    "batch at byte {at} of the append: magic {}, last offset delta {}, {} records",
                    h.magic, h.last_offset_delta, h.records_count
                )));
            }
            set_base_offset(&mut batches[at..], next);
            let h = BatchHeader {
                base_offset: next,
                ..h
            };
            headers.push((st.active_size + at as u64, h));
            next = h.next_offset();
            at += h.total_size();
        }
        if at != total {
            return Err(Error::InvalidRecord(
                "batch parts do not end with a whole batch".into(),
            ));
        }
        active.preallocate(st.active_size, st.active_size + len, cfg.segment_bytes);
        let written = if let Some(seal) = seal {
            let at = st.active_size + batches.len() as u64;
            active.write_vectored_at(at, rest).and_then(|()| {
                if durability == Durability::Fsync {
                    // From the first page boundary past the header's bytes:
                    // where the disk needs stable pages, rewriting a page
                    // under writeback would wait for it.
                    let end = st.active_size + total as u64;
                    let from = at.next_multiple_of(4096);
                    if from < end {
                        active.start_writeback(from, end - from);
                    }
                }
                seal(batches, rest);
                active.write_at(st.active_size, batches)
            })
        } else if rest.is_empty() {
            active.write_at(st.active_size, batches)
        } else {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(rest.len() + 1);
            parts.push(batches);
            parts.extend_from_slice(rest);
            active.write_vectored_at(st.active_size, &parts)
        };
        if let Err(e) = written {
            // Give back what a partial write used; the head still ends before it.
            let _ = active.truncate(st.active_size);
            return Err(e);
        }
        // A segment with no index entry yet gets its first one only at a
        // batch `index.interval.bytes` into it: below that, no entry is
        // written, so the indexes are not mapped (the first append to each
        // of a directory's small partitions skipped two file opens and two
        // `segment.index.bytes` mappings).
        if st.index_entries == 0
            && headers
                .iter()
                .all(|(pos, _)| *pos < cfg.index_interval_bytes.max(1))
        {
            for (pos, h) in &headers {
                account_unindexed(&mut st, *pos, h);
            }
        } else {
            let mut idx = active.indexes_for_append(cfg.segment_index_bytes)?.write();
            for (pos, h) in &headers {
                account_batch(&mut idx, &mut st, *pos, h, cfg.index_interval_bytes);
            }
        }
        if durability == Durability::Fsync {
            self.sync_locked(&segs, &mut st)?;
        }
        self.head.write(&st);
        let info = AppendInfo {
            base_offset,
            last_offset: st.next_offset - 1,
            log_start_offset: st.log_start_offset,
        };
        drop(_g);
        drop(_w);
        self.beacon.notify_append();
        if must_roll {
            self.enforce_retention()?;
            super::cleaner::clean_on_roll(self);
        }
        Ok(info)
    }

    /// Caller holds the append lock and `st` is fresh.
    fn index_nearly_full(&self, segs: &SegmentMap, st: &HeadState, max_bytes: u64) -> Result<bool> {
        if st.index_entries == 0 && st.time_entries == 0 {
            // Indexes mapped for appending are grown to `segment.index.bytes`
            // (at least 64, see config), room for one entry of each: no need
            // to map them to know that.
            return Ok(false);
        }
        let Some(s) = segs.map.get(&st.active_base) else {
            return Ok(false);
        };
        let idx = s.indexes_for_append(max_bytes)?.read();
        Ok(idx.offset.is_full(st.index_entries + 1) || idx.time.is_full(st.time_entries + 1))
    }

    /// fsync everything from the recovery point to the end of the log.
    fn sync_locked(&self, segs: &SegmentMap, st: &mut HeadState) -> Result<()> {
        let first = segs
            .map
            .range(..=st.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for (_, seg) in segs.map.range(first..) {
            seg.sync()?;
        }
        st.recovery_point = st.next_offset;
        st.flushed_size = st.active_size;
        Ok(())
    }

    /// Compact the log now (`cleanup.policy` must include `compact`),
    /// whatever its dirty ratio: see `log::cleaner`. `None` when the topic
    /// is not compacted or another process's cleaner is at work.
    pub fn compact(&self) -> Result<Option<super::cleaner::CleanerStats>> {
        super::cleaner::clean(self, true)
    }

    /// Flush the log to disk (for `fsync="interval"` and clean close).
    pub fn flush(&self) -> Result<()> {
        let _w = self.writer.lock();
        let _g = self.lock.lock_append()?;
        self.check_live()?;
        let mut st = match self.head.read() {
            Some(st) => st,
            None => self.repair_locked()?,
        };
        if st.recovery_point >= st.next_offset && st.flushed_size >= st.active_size {
            return Ok(());
        }
        let segs = self.segments_for(&st)?;
        self.sync_locked(&segs, &mut st)?;
        self.head.write(&st);
        self.head.flush().ctx("flush head", &self.dir)?;
        Ok(())
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
    fn roll_locked(&self, mut st: HeadState, now: i64) -> Result<HeadState> {
        self.head.mark_in_use();
        let segs = self.segments_for(&st)?;
        let base = st.next_offset;
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
            super::loader::finalize_closed(active, &st)?;
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

    /// Delete closed segments past the topic's retention (time and size), and
    /// the active segment too once every record in it has expired. Returns
    /// the number of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        let cfg = self.config();
        if !cfg.deletes_by_retention() || (cfg.retention_ms < 0 && cfg.retention_bytes < 0) {
            return Ok(0);
        }
        let now = now_ms();
        let expired = |max_ts: Option<i64>| {
            cfg.retention_ms >= 0
                && max_ts.is_some_and(|ts| ts < now.saturating_sub(cfg.retention_ms))
        };
        // Without the lock first: a log that is only its active segment, not
        // all expired, has nothing to delete (the common case on open, which
        // then skips two lock calls). A stale snapshot can only postpone a
        // deletion to the next pass, which every roll triggers.
        if let Some(st) = self.head.read() {
            let segs = self.segments.read();
            if segs.gen == st.segments_gen
                && segs.active_base == st.active_base
                && segs.map.len() <= 1
                && !(st.active_size > 0 && expired(Some(st.max_timestamp)))
            {
                return Ok(0);
            }
        }
        let _w = self.writer.lock();
        let _g = self.lock.lock_append()?;
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
        for (base, seg) in &segs.map {
            if *base == st.active_base {
                break;
            }
            let by_size = cfg.retention_bytes >= 0
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
            .map_or(st.next_offset, |(b, _)| *b);
        st.log_start_offset = st.log_start_offset.max(new_start);
        st.segments_gen += 1;
        // Publish the new start before unlinking, so a reader in any process
        // sees the offsets gone before it could miss the files.
        self.head.write(&st);
        for seg in &doomed {
            remove_segment_files(seg.path());
        }
        let _ = self.segments_for(&st)?;
        Ok(doomed.len())
    }

    /// Current offsets: (log start, log end / high watermark).
    pub fn offsets(&self) -> Result<(i64, i64)> {
        let st = self.read_state()?;
        Ok((st.log_start_offset, st.next_offset))
    }

    /// Bytes on disk across segments.
    pub fn size_bytes(&self) -> Result<u64> {
        let st = self.read_state()?;
        let segs = self.segments_for(&st)?;
        Ok(segs.total_bytes(&st))
    }

    pub fn segment_count(&self) -> Result<usize> {
        let st = self.read_state()?;
        Ok(self.segments_for(&st)?.map.len())
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
        mut st: HeadState,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
    ) -> Result<Fetched> {
        // Each retry needs another roll or retention pass to have happened
        // during the previous one; the bound only stops a livelock.
        for _ in 0..8 {
            if let Some(out) = self.read_segments(&st, offset, max_bytes, cursor, verify, false)? {
                return Ok(out);
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
        self.read_segments(&st, offset, max_bytes, cursor, verify, true)
            .map(Option::unwrap_or_default)
    }

    /// One attempt of [`PartitionLog::read_as_of`] over the segments listed
    /// for `st`. Without `holes_allowed`, `None` when the segments show a
    /// hole at or after `offset` before the active segment (see there).
    fn read_segments(
        &self,
        st: &HeadState,
        offset: i64,
        max_bytes: usize,
        cursor: &mut Option<ReadCursor>,
        verify: bool,
        holes_allowed: bool,
    ) -> Result<Option<Fetched>> {
        let mut out = Fetched {
            high_watermark: st.next_offset,
            log_start_offset: st.log_start_offset,
            ..Default::default()
        };
        if offset < st.log_start_offset || offset > st.next_offset {
            return Err(self.out_of_range(offset, st));
        }
        if offset == st.next_offset {
            return Ok(Some(out));
        }
        let segs = self.segments_for(st)?;
        let mut target = offset;
        // Invariant: the segment holding the log start has a base at or
        // below it (retention starts the log at a segment's base; recovery
        // and the cleaner keep bases), so a segment at or below `offset`
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
                let (n, next, err) =
                    self.read_batches(seg, pos, limit, max_bytes, target, verify, &mut out.bytes)?;
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
    /// `expect` is (the offset the first batch must hold, the clean end).
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
        expected: i64,
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
            end: st.next_offset,
        }
    }

    /// The earliest offset whose record timestamp is >= `timestamp`, with
    /// that timestamp; `None` if every record is older.
    pub fn offset_for_time(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let st = self.read_state()?;
        let segs = self.segments_for(&st)?;
        for (base, seg) in &segs.map {
            let active = *base == st.active_base;
            let (limit, entries, time_entries, max_ts) = if active {
                (
                    st.active_size,
                    st.index_entries,
                    st.time_entries,
                    st.max_timestamp,
                )
            } else {
                let idx = seg.indexes()?.read();
                let te = idx.time.closed_entries();
                (
                    seg.closed_size(),
                    idx.offset.closed_entries(),
                    te,
                    idx.time.last(te).map_or(i64::MAX, |(ts, _)| ts),
                )
            };
            if max_ts < timestamp {
                continue;
            }
            let start = seg
                .indexes()?
                .read()
                .time
                .offset_before(timestamp, time_entries);
            let Some((mut pos, _)) =
                seg.find_position(start.max(st.log_start_offset), entries, limit)?
            else {
                continue;
            };
            let mut buf = Vec::new();
            while let Some(h) = seg.header_at(pos, limit)? {
                if h.max_timestamp >= timestamp && h.last_offset() >= st.log_start_offset {
                    buf.resize(h.total_size(), 0);
                    seg.read_at(pos, &mut buf)?;
                    let h = check_batch(&buf).map_err(|r| Error::corrupt(seg.path(), pos, r))?;
                    for rec in ottla_record::decode::records(&h, &buf)?.iter() {
                        let rec = rec.map_err(|r| Error::corrupt(seg.path(), pos, r))?;
                        if rec.timestamp >= timestamp && rec.offset >= st.log_start_offset {
                            return Ok(Some((rec.offset, rec.timestamp)));
                        }
                    }
                }
                pos += h.total_size() as u64;
            }
        }
        Ok(None)
    }

    /// Block until the log may have grown or `timeout` passes.
    pub fn beacon(&self) -> &Arc<Beacon> {
        &self.beacon
    }

    /// Mark deleted so every process stops appending; the caller removes files.
    pub fn mark_deleted(&self) {
        let _w = self.writer.lock();
        if let Ok(_g) = self.lock.lock_append() {
            self.head.mark_in_use();
            self.head.mark_deleted();
        }
        self.beacon.notify_append();
    }

    /// Sleep on the directory beacon (used by waiting consumers).
    pub fn wait_for_append(&self, seen: u32, timeout: Duration) {
        self.beacon.wait(seen, timeout)
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        if self.head.is_deleted() {
            return;
        }
        let _w = self.writer.lock();
        let Ok(_g) = self.lock.lock_append() else {
            return;
        };
        // The last process out flushes and leaves the clean-shutdown marker;
        // a head still clean saw no change since it was marked, so there is
        // nothing to flush.
        if self.head.is_clean() {
            return;
        }
        if let Ok(true) = self.lock.try_presence_exclusive() {
            if let Some(mut st) = self.head.read() {
                if let Ok(segs) = self.segments_for(&st) {
                    if self.sync_locked(&segs, &mut st).is_ok() {
                        self.head.write(&st);
                        self.head.set_clean(true);
                        let _ = self.head.flush();
                    }
                }
            }
        }
    }
}

const ROLL_CRASH_AT: &str = "OTTLA_ROLL_CRASH_AT";

/// The crash tests' hook: when the environment variable `var` names
/// `step`, the process kills itself here (SIGKILL, as `kill -9`).
/// `OTTLA_ROLL_CRASH_AT=finalized|created` stops a roll once the closing
/// segment's indexes are trimmed, or once the new segment's files exist,
/// before the head publishes the roll; the cleaner has its own variable
/// (see its module docs). Read at each step: rolls and cleans are rare.
pub(crate) fn crash_point(var: &str, step: &str) {
    if std::env::var_os(var).is_some_and(|v| v == step) {
        // SAFETY: a plain syscall; the process ends here.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

pub(crate) fn remove_segment_files(log_path: &Path) {
    for ext in ["log", "index", "timeindex"] {
        let _ = std::fs::remove_file(log_path.with_extension(ext));
    }
}

pub(crate) fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(log_file_name(base))
}

/// What `account_batch` does to the head for a batch that gets no index
/// entry (it lies within `index.interval.bytes` of a segment start with no
/// entries): the largest timestamp, the next offset and the size.
fn account_unindexed(st: &mut HeadState, pos: u64, h: &BatchHeader) {
    if h.max_timestamp > st.max_timestamp {
        st.max_timestamp = h.max_timestamp;
        st.offset_of_max_timestamp = h.last_offset();
    }
    st.next_offset = h.next_offset();
    st.active_size = pos + h.total_size() as u64;
}
