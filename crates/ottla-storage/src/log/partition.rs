//! `PartitionLog`: one partition's log, shared by every thread of a process
//! (one instance per partition per process, see `Store`) and coordinated with
//! other processes through the partition head and lock file.
//!
//! This module holds the type, opening and closing, and what every path
//! shares: the head snapshot (`read_state`, repairing a torn head), the
//! segment map matching a snapshot (`segments_for`), and the two ends of the
//! log that readers and writers work to (`log_end_offset`,
//! `high_watermark`: one number unless replication sets the high
//! watermark, see `replica`). The paths, as Kafka's log splits them:
//! * `append`: stamping and writing batches, durability and `flush`;
//! * `read`: batches by offset, and the compaction-gap rule;
//! * `roll`: closing the active segment and starting the next;
//! * `retention`: deleting segments by time and size, and below the log start;
//! * `log_start`: the log start offset moved by hand (`delete_records`);
//! * `time_lookup`: the first offset at or after a timestamp;
//! * `epochs`: the leader epoch stamped into appended batches, and the
//!   leader-epoch cache kept in step with the log;
//! * `replica`: a follower's appends (the leader's batches as sent),
//!   truncation, and the high watermark apart from the log end.
//!
//! Writers: in-process mutex, then the cross-process append lock, then
//! re-read the head (another process may have appended or rolled), write the
//! batches at `active_size`, add index entries, publish the head, wake
//! waiters. Readers take no lock: they read a head snapshot and read bytes
//! below its `active_size`, which are whole and final.

mod append;
mod epochs;
mod log_start;
mod read;
mod replica;
mod retention;
mod roll;
mod time_lookup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use super::head::{Head, HeadState};
use super::lockfile::LockFile;
use super::segment::{log_file_name, LogSegment};
use crate::beacon::Beacon;
use crate::config::TopicConfig;
use crate::error::{Error, IoContext, Result};
use crate::fd_budget::{self, Slot};

pub use append::{AppendInfo, Durability, SealFn};
pub use epochs::{LeaderEpochs, INITIAL_LEADER_EPOCH};
pub(crate) use log_start::read_log_start;
pub use log_start::LOG_START_FILE;
pub use read::{Fetched, ReadCursor};
pub use replica::HIGH_WATERMARK_FILE;

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
    /// `partition.lock`, in the open-file budget (`crate::fd_budget`),
    /// closed only while no lock is held through it: see
    /// [`PartitionLog::lock`].
    lock: Slot<LockFile>,
    head: Head,
    beacon: Arc<Beacon>,
    config: RwLock<Arc<TopicConfig>>,
    segments: RwLock<Arc<SegmentMap>>,
    writer: Mutex<()>,
    /// The cleaner's gap end (`log::cleaner::read_gap_end`) as last read,
    /// or `CLEAN_END_UNKNOWN`: below it compaction may have left offset gaps.
    clean_end: AtomicI64,
    /// The epoch appended batches are stamped with (see `epochs`).
    leader_epoch: AtomicI32,
    /// This process's copy of the leader-epoch cache (see `epochs`).
    epochs: Mutex<epochs::EpochState>,
    /// The high watermark the replica manager set, or `replica::HW_UNSET`
    /// (a log with one replica: the log end). See `replica`.
    replica_hw: AtomicI64,
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
        Self::open_in(dir, topic, partition, config, beacon, true)
    }

    /// Open the partition in `dir`, which must exist: an `Io` error of
    /// kind `NotFound` otherwise. A `Store` makes partition directories
    /// only under its metadata lock (see `store::log_dirs`), so that a
    /// directory never outlives its topic unnoticed.
    pub fn open_existing(
        dir: &Path,
        topic: Arc<str>,
        partition: u32,
        config: Arc<TopicConfig>,
        beacon: Arc<Beacon>,
    ) -> Result<PartitionLog> {
        Self::open_in(dir, topic, partition, config, beacon, false)
    }

    fn open_in(
        dir: &Path,
        topic: Arc<str>,
        partition: u32,
        config: Arc<TopicConfig>,
        beacon: Arc<Beacon>,
        create: bool,
    ) -> Result<PartitionLog> {
        // The directory usually exists: create it only when the lock file
        // cannot be opened for want of it (saves a mkdir and a stat per
        // partition on open).
        let lock_path = dir.join("partition.lock");
        let lock = match LockFile::open(&lock_path) {
            Err(Error::Io { source, .. })
                if create && source.kind() == std::io::ErrorKind::NotFound =>
            {
                std::fs::create_dir_all(dir).ctx("create partition directory", dir)?;
                LockFile::open(&lock_path)?
            }
            other => other?,
        };
        let log = PartitionLog {
            topic,
            partition,
            dir: dir.to_path_buf(),
            lock: Slot::with(fd_budget::global(), true, lock),
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
            leader_epoch: AtomicI32::new(INITIAL_LEADER_EPOCH),
            epochs: Mutex::new(epochs::EpochState::default()),
            replica_hw: AtomicI64::new(replica::HW_UNSET),
        };
        {
            let lock = log.lock()?;
            let _g = lock.lock_append()?;
            if lock.try_presence_exclusive()? {
                // A clean head stays clean until the first change (see
                // `Head::mark_in_use`): opening only to read writes nothing.
                super::loader::load(&log)?;
            } else if log.head.read().is_none() || !log.head.is_valid() {
                log.repair_locked()?;
            }
            lock.hold_presence_shared()?;
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

    /// The partition's lock file, opened again if the open-file budget
    /// closed it. Closing it released the presence lock too, so this
    /// process counted as gone from the partition meanwhile: reopening
    /// takes the presence lock shared again, and nothing else is needed.
    /// The process changed nothing while the file was closed (the budget
    /// closes it only while no lock is held through it), the head it reads
    /// is the shared one, and its segment map is checked against the head
    /// on every use; another process that opened the partition alone
    /// meanwhile ran the loader on a head whose state is whole (ours are
    /// published before the append lock is released), which cuts off only
    /// bytes past the head.
    ///
    /// Every caller keeps the returned `Arc` while it holds a lock through
    /// it: the budget closes the file only while the slot's reference is
    /// the only one, so all threads of the process share one open file
    /// description, as OFD locks need.
    pub(crate) fn lock(&self) -> Result<Arc<LockFile>> {
        self.lock
            .get(|| {
                let lock = LockFile::open(&self.dir.join("partition.lock"))?;
                lock.hold_presence_shared()?;
                Ok(lock)
            })
            .map_err(|e| match e {
                // A deleted topic's directory is renamed, then removed:
                // say what happened, as a descriptor kept open would have.
                Error::Io { ref source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound && self.is_deleted() =>
                {
                    Error::UnknownTopicOrPartition {
                        topic: self.topic.to_string(),
                        partition: self.partition as i64,
                    }
                }
                e => e,
            })
    }

    /// Descriptors of this partition open now: the lock file's and its
    /// segments' (tests).
    #[cfg(test)]
    pub(crate) fn open_descriptors(&self) -> usize {
        let segs = self.segments.read().clone();
        usize::from(self.lock.is_open()) + segs.map.values().filter(|s| s.file_is_open()).count()
    }

    /// Close every descriptor the open-file budget could close (tests).
    #[cfg(test)]
    pub(crate) fn close_descriptors(&self) {
        self.lock.close();
        let segs = self.segments.read().clone();
        for s in segs.map.values() {
            s.close_file();
        }
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
        let lock = self.lock()?;
        let _swap = lock.lock_swap(false)?;
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
        let lock = self.lock()?;
        let _g = lock.lock_append()?;
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

    /// The log end offset: the offset the next appended record gets.
    pub fn log_end_offset(&self) -> Result<i64> {
        Ok(log_end_offset(&self.read_state()?))
    }

    /// The high watermark: the offset consumers read up to. With one
    /// replica it is the log end offset; with replication, the one the
    /// replica manager set (`set_high_watermark`), never above the log end.
    pub fn high_watermark(&self) -> Result<i64> {
        Ok(self.hw_in(&self.read_state()?))
    }

    /// The offsets a consumer may read: (log start offset, high watermark).
    pub fn offsets(&self) -> Result<(i64, i64)> {
        let st = self.read_state()?;
        Ok((st.log_start_offset, self.hw_in(&st)))
    }

    /// Bytes on disk across segments.
    pub fn size_bytes(&self) -> Result<u64> {
        let st = self.read_state()?;
        let segs = self.segments_for(&st)?;
        Ok(segs.total_bytes(&st))
    }

    /// The base offsets of the segments, oldest first (producer-state
    /// snapshots and transaction indexes are laid out by them).
    pub fn segment_bases(&self) -> Result<Vec<i64>> {
        let st = self.read_state()?;
        Ok(self.segments_for(&st)?.map.keys().copied().collect())
    }

    /// The base offset of the active segment (a read of the head).
    pub fn active_base(&self) -> Result<i64> {
        Ok(self.read_state()?.active_base)
    }

    pub fn segment_count(&self) -> Result<usize> {
        let st = self.read_state()?;
        Ok(self.segments_for(&st)?.map.len())
    }

    /// The directory's beacon: wait on it for this log (or any other) to grow.
    pub fn beacon(&self) -> &Arc<Beacon> {
        &self.beacon
    }

    /// Mark deleted so every process stops appending; the caller removes files.
    pub fn mark_deleted(&self) {
        let _w = self.writer.lock();
        if let Ok(lock) = self.lock() {
            if let Ok(_g) = lock.lock_append() {
                self.head.mark_in_use();
                self.head.mark_deleted();
            }
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
        // A clean head saw no change since it was marked: checked before
        // the lock file, which the open-file budget may have closed.
        if self.head.is_deleted() || self.head.is_clean() {
            return;
        }
        let _w = self.writer.lock();
        let Ok(lock) = self.lock() else {
            return;
        };
        let Ok(_g) = lock.lock_append() else {
            return;
        };
        // The last process out flushes and leaves the clean-shutdown marker;
        // a head still clean saw no change since it was marked, so there is
        // nothing to flush.
        if self.head.is_clean() {
            return;
        }
        if let Ok(true) = lock.try_presence_exclusive() {
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

/// The log end offset in `st`: the offset the next appended record gets,
/// one past the last record written. Appends, rolls, flushes and retention
/// work to it.
#[inline]
fn log_end_offset(st: &HeadState) -> i64 {
    st.next_offset
}

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
    for ext in ["log", "index", "timeindex", "txnindex"] {
        let _ = std::fs::remove_file(log_path.with_extension(ext));
    }
}

pub(crate) fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(log_file_name(base))
}
