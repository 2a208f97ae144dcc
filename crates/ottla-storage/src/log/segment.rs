//! `LogSegment`: one `<base offset>.log` file of whole record batches with
//! its `.index` and `.timeindex`. A segment holds offsets from its base up to
//! the next segment's base; only the partition's last (active) segment grows.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use super::head::HeadState;
use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use crate::error::{Error, IoContext, Result};
use crate::fd_budget::{self, Slot};
use ottla_record::batch::{check_batch, peek_total_size, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

/// The operation named by the error of a segment file that is gone.
const REOPEN_OP: &str = "reopen segment";

/// Whether `e` says a segment's file was gone when its descriptor, closed
/// by the open-file budget, was reopened (see `LogSegment::file`).
pub fn is_segment_gone(e: &Error) -> bool {
    matches!(e, Error::Io { op, source, .. }
        if *op == REOPEN_OP && source.kind() == std::io::ErrorKind::NotFound)
}

pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// A segment smaller than this is never preallocated: small partitions
/// (a directory of hundreds of them) keep exactly their bytes on disk.
pub const PREALLOCATE_FROM: u64 = 1 << 20;
/// How far ahead of the write position [`LogSegment::preallocate`] reserves
/// blocks: one `fallocate` per 8 MiB appended.
pub const PREALLOCATE_STEP: u64 = 8 << 20;
const NO_PREALLOCATION: u64 = u64::MAX;

pub struct Indexes {
    pub offset: OffsetIndex,
    pub time: TimeIndex,
}

impl Indexes {
    /// The indexes of a closed segment, beside its `.log` file.
    fn open_readonly(log_path: &Path, base_offset: i64) -> Result<Indexes> {
        Ok(Indexes {
            offset: OffsetIndex::open_readonly(&log_path.with_extension("index"), base_offset)?,
            time: TimeIndex::open_readonly(&log_path.with_extension("timeindex"), base_offset)?,
        })
    }

    /// No entries: lookups start at the segment's first byte.
    fn empty(log_path: &Path, base_offset: i64) -> Indexes {
        Indexes {
            offset: OffsetIndex::empty(&log_path.with_extension("index"), base_offset),
            time: TimeIndex::empty(&log_path.with_extension("timeindex"), base_offset),
        }
    }

    /// The active segment's indexes as they are, never created or resized.
    fn open_existing(log_path: &Path, base_offset: i64) -> Result<Indexes> {
        Ok(Indexes {
            offset: OffsetIndex::open_existing(&log_path.with_extension("index"), base_offset)?,
            time: TimeIndex::open_existing(&log_path.with_extension("timeindex"), base_offset)?,
        })
    }

    /// The active segment's indexes, created or grown to `max_bytes`.
    fn open_writable(log_path: &Path, base_offset: i64, max_bytes: u64) -> Result<Indexes> {
        Ok(Indexes {
            offset: OffsetIndex::open_writable(
                &log_path.with_extension("index"),
                base_offset,
                max_bytes,
            )?,
            time: TimeIndex::open_writable(
                &log_path.with_extension("timeindex"),
                base_offset,
                max_bytes,
            )?,
        })
    }
}

pub struct LogSegment {
    pub base_offset: i64,
    path: PathBuf,
    /// The `.log`'s descriptor, in the process's open-file budget: closed
    /// when others need the room, reopened (and checked to be the same
    /// file, see `file_id`) by the next use.
    file: Slot<File>,
    /// Size of the file when opened; the size of a closed segment.
    opened_size: u64,
    /// Whether the indexes are mapped writable (the segment was active when
    /// opened).
    active: bool,
    /// (device, inode) of the `.log` file this segment reads: the log
    /// cleaner replaces a segment's files by rename, so the file behind the
    /// path can change while this descriptor still reads the old one.
    file_id: (u64, u64),
    /// Opened from a cleaner's committed `.log.swap` file: its indexes are
    /// not in place yet, so none are used (see `log::cleaner`).
    unindexed: bool,
    /// How far past its start this process has reserved the file's blocks
    /// with `fallocate(FALLOC_FL_KEEP_SIZE)` ([`LogSegment::preallocate`]);
    /// [`NO_PREALLOCATION`] once the filesystem refused.
    preallocated: AtomicU64,
    /// Mapped on first use (see [`LogSegment::indexes`]): opening a
    /// partition then touches only its `.log`, and a consumer reading from
    /// a segment's start never maps them at all.
    indexes: OnceLock<RwLock<Indexes>>,
}

impl LogSegment {
    /// Open (creating if absent) the segment at `base_offset` in `dir`.
    /// `active` maps the indexes writable at `index_max_bytes`.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        active: bool,
        index_max_bytes: u64,
    ) -> Result<LogSegment> {
        let path = dir.join(log_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open segment", &path)?;
        let meta = file.metadata().ctx("stat segment", &path)?;
        let opened_size = meta.len();
        let indexes = if active {
            Indexes::open_writable(&path, base_offset, index_max_bytes)?
        } else {
            Indexes::open_readonly(&path, base_offset)?
        };
        Ok(LogSegment {
            base_offset,
            path,
            file: Slot::with(fd_budget::global(), false, file),
            opened_size,
            active,
            file_id: (meta.dev(), meta.ino()),
            unindexed: false,
            preallocated: AtomicU64::new(0),
            indexes: OnceLock::from(RwLock::new(indexes)),
        })
    }

    /// Open a segment that already exists, creating, growing or trimming no
    /// file: for building a view of the segments from a head snapshot that
    /// may already be stale (see `PartitionLog::segments_for`), and for
    /// opening a partition whose head is trusted. Only the `.log` is opened
    /// here; the indexes are mapped on first use, with the same no-resize
    /// rule. A missing `.log` is an `Io` error of kind `NotFound`.
    pub fn open_existing(dir: &Path, base_offset: i64, active: bool) -> Result<LogSegment> {
        Self::open_file(
            dir.join(log_file_name(base_offset)),
            base_offset,
            active,
            false,
        )
    }

    /// Open the cleaned replacement of the closed segment at `base_offset`
    /// that a cleaner committed (`<base>.log.swap`) but did not finish
    /// putting in place: read it, without indexes, instead of the old file.
    pub fn open_swapped(dir: &Path, base_offset: i64) -> Result<LogSegment> {
        let path = dir.join(format!("{}.swap", log_file_name(base_offset)));
        Self::open_file(path, base_offset, false, true)
    }

    fn open_file(
        path: PathBuf,
        base_offset: i64,
        active: bool,
        unindexed: bool,
    ) -> Result<LogSegment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open segment", &path)?;
        let meta = file.metadata().ctx("stat segment", &path)?;
        Ok(LogSegment {
            base_offset,
            path,
            file: Slot::with(fd_budget::global(), false, file),
            opened_size: meta.len(),
            active,
            file_id: (meta.dev(), meta.ino()),
            unindexed,
            preallocated: AtomicU64::new(0),
            indexes: OnceLock::new(),
        })
    }

    /// The `.log`'s descriptor, reopened if the budget closed it. A file
    /// that is no longer at its path (deleted by retention, replaced by the
    /// cleaner since this segment was opened) is an `Io` error of kind
    /// `NotFound` ([`is_segment_gone`]): a reader's snapshot was stale, and
    /// reading again from a fresh one settles it.
    #[inline]
    fn file(&self) -> Result<Arc<File>> {
        self.file.get(|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|e| Error::io(REOPEN_OP, &self.path, e))?;
            let meta = file.metadata().ctx("stat segment", &self.path)?;
            if (meta.dev(), meta.ino()) != self.file_id {
                return Err(Error::io(
                    REOPEN_OP,
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the segment was replaced since it was opened",
                    ),
                ));
            }
            Ok(file)
        })
    }

    /// Whether the segment's descriptor is open now (tests).
    #[cfg(test)]
    pub(crate) fn file_is_open(&self) -> bool {
        self.file.is_open()
    }

    /// Close the segment's descriptor now; the next use reopens it (tests).
    #[cfg(test)]
    pub(crate) fn close_file(&self) -> bool {
        self.file.close()
    }

    /// (device, inode) of the file this segment reads.
    pub fn file_id(&self) -> (u64, u64) {
        self.file_id
    }

    /// Whether this segment reads without indexes (a pending swap).
    pub fn is_unindexed(&self) -> bool {
        self.unindexed
    }

    /// Whether the index files beside this segment's path belong to the
    /// `.log` this segment reads. The cleaner renames a segment's cleaned
    /// `.index` and `.timeindex` into place before its `.log`, and commits
    /// to doing so by creating `<base>.log.swap` first; so an index mapped
    /// while no swap file exists and the path still names our file, checked
    /// before and after mapping, is our file's index. (An inode cannot be
    /// reused while our descriptor keeps the file alive.)
    fn indexes_match_file(&self) -> bool {
        if self.unindexed {
            return false;
        }
        let swap = self.path.with_extension("log.swap");
        if swap.exists() {
            return false;
        }
        std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file_id)
    }

    /// The segment's indexes, mapping them on first use: writable at their
    /// current size if the segment was opened active, read-only otherwise.
    /// Never creates or resizes a file, so it is safe from any thread and
    /// process whatever the head says now (a segment that was active when
    /// opened may have been closed and its indexes trimmed since: mapping
    /// the trimmed files is what a reader of it needs).
    pub fn indexes(&self) -> Result<&RwLock<Indexes>> {
        if let Some(i) = self.indexes.get() {
            return Ok(i);
        }
        let idx = if !self.indexes_match_file() {
            Indexes::empty(&self.path, self.base_offset)
        } else if self.active {
            Indexes::open_existing(&self.path, self.base_offset)?
        } else {
            Indexes::open_readonly(&self.path, self.base_offset)?
        };
        // Replaced while we mapped: these entries may be the new file's.
        let idx = if self.indexes_match_file() {
            idx
        } else {
            Indexes::empty(&self.path, self.base_offset)
        };
        // Another thread may have won the race; its mapping is as good.
        Ok(self.indexes.get_or_init(|| RwLock::new(idx)))
    }

    /// The indexes for appending to this, the active segment: as
    /// [`LogSegment::indexes`], except that a first mapping also creates
    /// missing index files and grows short ones to `max_bytes`. Only the
    /// append-lock holder may call this, after checking in the head that
    /// the segment is still the active one (growing a closed segment's
    /// trimmed index would make its garbage tail look like entries).
    ///
    /// A mapping a reader made earlier is grown the same way if it is short
    /// of `max_bytes` (the files were missing or short, or
    /// `segment.index.bytes` was raised), as opening the segment for
    /// appending always did.
    pub fn indexes_for_append(&self, max_bytes: u64) -> Result<&RwLock<Indexes>> {
        let Some(cell) = self.indexes.get() else {
            let idx = Indexes::open_writable(&self.path, self.base_offset, max_bytes)?;
            return Ok(self.indexes.get_or_init(|| RwLock::new(idx)));
        };
        let short = |i: &Indexes| i.offset.is_short_of(max_bytes) || i.time.is_short_of(max_bytes);
        if short(&cell.read()) {
            let mut w = cell.write();
            if short(&w) {
                *w = Indexes::open_writable(&self.path, self.base_offset, max_bytes)?;
            }
        }
        Ok(cell)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn closed_size(&self) -> u64 {
        self.opened_size
    }

    pub fn file_len(&self) -> Result<u64> {
        Ok(self
            .file()?
            .metadata()
            .ctx("stat segment", &self.path)?
            .len())
    }

    pub fn write_at(&self, pos: u64, data: &[u8]) -> Result<()> {
        self.file()?
            .write_all_at(data, pos)
            .ctx("append to segment", &self.path)
    }

    /// Write `parts` back to back at `pos` with `pwritev`: a batch whose
    /// value stays in the caller's buffer reaches the page cache without
    /// being gathered into one buffer first.
    pub fn write_vectored_at(&self, pos: u64, parts: &[&[u8]]) -> Result<()> {
        use std::os::fd::AsRawFd;
        let file = self.file()?;
        let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
        let mut pos = pos;
        let mut first = 0;
        while first < parts.len() {
            let iov: Vec<libc::iovec> = parts[first..]
                .iter()
                .map(|p| libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                })
                .collect();
            let count = iov.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
            // SAFETY: every iovec points into a live slice borrowed for the
            // duration of the call; pwritev only reads from them.
            let n =
                unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), count, pos as libc::off_t) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("append to segment", &self.path, e));
            }
            if n == 0 {
                return Err(Error::io(
                    "append to segment",
                    &self.path,
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ));
            }
            // A short write: skip what went out and go on with the rest.
            pos += n as u64;
            let mut left = n as usize;
            while left > 0 && first < parts.len() {
                let l = parts[first].len();
                if left >= l {
                    left -= l;
                    first += 1;
                } else {
                    parts[first] = &parts[first][left..];
                    left = 0;
                }
            }
        }
        Ok(())
    }

    /// Reserve disk blocks for a write of `start..end` and ahead of it, up to
    /// [`PREALLOCATE_STEP`] bytes past it (never past `limit`, the size at
    /// which the segment rolls), once the segment holds at least
    /// [`PREALLOCATE_FROM`] bytes.
    ///
    /// Why: appending into unallocated file space makes ext4 reserve
    /// delayed-allocation space, look up and insert extent-status entries
    /// and charge quota for every new page, which cost about a third of the
    /// kernel's time per appended byte (`perf`: `ext4_da_write_begin` 28%
    /// against 16% for the copy itself); into preallocated blocks the write
    /// finds its mapping ready (measured: 25% less kernel CPU per MiB,
    /// `fallocate` calls included).
    ///
    /// `FALLOC_FL_KEEP_SIZE` leaves the file's size alone, so nothing that
    /// reads the file sees a difference: readers, recovery and the loader
    /// still find the end where the last write ended, and a crash leaves
    /// at most the reserved blocks past the end (freed when the segment
    /// rolls, see [`LogSegment::release_preallocation`], or reused by the
    /// next append). Only a hint: a filesystem without the call turns it
    /// off for this segment, and other errors (such as ENOSPC) are left for
    /// the write itself to report.
    pub fn preallocate(&self, start: u64, end: u64, limit: u64) {
        use std::os::fd::AsRawFd;
        let done = self.preallocated.load(Ordering::Relaxed);
        if end <= done || end < PREALLOCATE_FROM || done == NO_PREALLOCATION {
            return;
        }
        // Not below the write: bytes already written are in the page cache
        // (or on disk) with space reserved for them.
        let from = done.max(start);
        let to = end.saturating_add(PREALLOCATE_STEP).min(limit.max(end));
        let Ok(file) = self.file() else {
            return; // a hint: the write reports the error
        };
        // SAFETY: a plain syscall on our own descriptor; no memory passed.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                (to - from) as libc::off_t,
            )
        };
        if r == 0 {
            self.preallocated.fetch_max(to, Ordering::Relaxed);
        } else if matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        ) {
            self.preallocated.store(NO_PREALLOCATION, Ordering::Relaxed);
        }
    }

    /// Free the blocks [`LogSegment::preallocate`] reserved past `size`
    /// (the segment's end) when the segment is closed by a roll: a closed
    /// segment never grows, so they would only waste disk. Truncating to
    /// the same size changes no byte and no size; it only drops the
    /// reservation past the end. Best effort, like the reservation: a
    /// failure costs disk space, never the roll. Blocks another process
    /// reserved in this segment stay until the segment is deleted.
    pub fn release_preallocation(&self, size: u64) {
        let done = self.preallocated.load(Ordering::Relaxed);
        if done == 0 || done == NO_PREALLOCATION {
            return;
        }
        if self.file().is_ok_and(|f| f.set_len(size).is_ok()) {
            self.preallocated.store(0, Ordering::Relaxed);
        }
    }

    /// Ask the kernel to start writing `len` bytes at `pos` back to the
    /// disk now, without waiting (`sync_file_range` with
    /// `SYNC_FILE_RANGE_WRITE`): the fsync that follows then finds part of
    /// the work done. Only a hint: durability still comes from the fsync,
    /// so a failure here is ignored.
    pub fn start_writeback(&self, pos: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let Ok(file) = self.file() else {
            return; // a hint: the fsync reports the error
        };
        // SAFETY: a plain syscall on our own descriptor; no memory passed.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                pos as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let file = self.file()?;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read segment", &self.path, e)),
            }
        }
        Ok(done)
    }

    /// Append up to `len` bytes read at `pos` to `out`, without zero-filling
    /// them first (a consumer's fetch reads a MiB at a time: the fill cost
    /// ~110 instructions per 100-byte record). Returns the bytes read.
    pub fn read_appending(&self, pos: u64, len: usize, out: &mut Vec<u8>) -> Result<usize> {
        use std::os::fd::AsRawFd;
        let file = self.file()?;
        out.reserve(len);
        let start = out.len();
        let mut done = 0;
        while done < len {
            let spare = &mut out.spare_capacity_mut()[done..len];
            // SAFETY: `spare` is `len - done` bytes of capacity owned by
            // `out`; pread writes at most that many and reports how many.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    (pos + done as u64) as libc::off_t,
                )
            };
            match n {
                0 => break,
                n if n > 0 => done += n as usize,
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(Error::io("read segment", &self.path, e));
                    }
                }
            }
        }
        // SAFETY: pread initialised the first `done` bytes past `start`.
        unsafe { out.set_len(start + done) };
        Ok(done)
    }

    pub fn truncate(&self, size: u64) -> Result<()> {
        self.file()?
            .set_len(size)
            .ctx("truncate segment", &self.path)?;
        // Truncating frees the blocks reserved past `size` too: reserve them
        // again when the file next grows past it.
        let _ = self
            .preallocated
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                (d != NO_PREALLOCATION && d > size).then_some(size)
            });
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file()?.sync_data().ctx("fsync segment", &self.path)
    }

    /// Header of the batch at `pos`, if a whole header lies below `limit`.
    pub fn header_at(&self, pos: u64, limit: u64) -> Result<Option<BatchHeader>> {
        if pos + HEADER_LEN as u64 > limit {
            return Ok(None);
        }
        let mut buf = [0u8; HEADER_LEN];
        let n = self.read_at(pos, &mut buf)?;
        if n < HEADER_LEN {
            return Ok(None);
        }
        let h = BatchHeader::parse(&buf)
            .ok_or_else(|| Error::corrupt(&self.path, pos, "short header"))?;
        if h.total_size() < HEADER_LEN || pos + h.total_size() as u64 > limit {
            return Err(Error::corrupt(
                &self.path,
                pos,
                format!(
                    "batch length {} runs past the end of the segment",
                    h.batch_length
                ),
            ));
        }
        Ok(Some(h))
    }

    /// Position of the batch holding `offset` (or the first batch after it),
    /// searching from an index hint; `None` when it lies at or past `limit`.
    pub fn find_position(
        &self,
        offset: i64,
        index_entries: u64,
        limit: u64,
    ) -> Result<Option<(u64, BatchHeader)>> {
        // Without entries, or for the segment's first offset, the index can
        // only say "position 0": skip mapping it.
        let (hint, mut pos) = if index_entries == 0 || offset <= self.base_offset {
            (self.base_offset, 0)
        } else {
            let idx = self.indexes()?.read();
            let (o, p) = idx.offset.lookup(offset, index_entries);
            (o, p as u64)
        };
        // The index has no checksum: an entry is used only if the batch it
        // points at is the one it names (entries hold a batch's last
        // offset), else the walk starts from the segment's first batch.
        let mut next = if pos > limit {
            Ok(None)
        } else {
            self.header_at(pos, limit)
        };
        if pos > 0 && !matches!(&next, Ok(Some(h)) if h.last_offset() == hint) {
            pos = 0;
            next = self.header_at(0, limit);
        }
        while let Some(h) = next? {
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_size() as u64;
            next = self.header_at(pos, limit);
        }
        Ok(None)
    }

    /// Largest timestamp in a closed segment (its last time index entry).
    pub fn closed_max_timestamp(&self) -> Result<Option<i64>> {
        let idx = self.indexes()?.read();
        Ok(idx.time.last(idx.time.closed_entries()).map(|(ts, _)| ts))
    }
}

/// Account for one batch written at `pos` of the active segment: advance the
/// running state and add index entries by Kafka's rule (an offset entry once
/// `interval` bytes have passed since the last one, with a time entry beside
/// it when the largest timestamp so far has grown). Shared by the append path
/// and recovery so that both build identical indexes.
///
/// An index entry whose page cannot be allocated (a full disk) is an error,
/// not an entry skipped: `st` is then half-updated and the caller must
/// drop it (publish nothing). Skipping would keep the lookup correct (the
/// index is sparse) but not the time index, whose last entry is a closed
/// segment's largest timestamp for retention; and an append that fails
/// here is cut off whole, so nothing acknowledged depends on it and the
/// next append retries the entry once space is freed.
pub fn account_batch(
    idx: &mut Indexes,
    st: &mut HeadState,
    pos: u64,
    h: &BatchHeader,
    interval: u64,
) -> Result<()> {
    if h.max_timestamp > st.max_timestamp {
        st.max_timestamp = h.max_timestamp;
        st.offset_of_max_timestamp = h.last_offset();
    }
    let last_index_pos = match st.index_entries {
        0 => 0,
        n => idx.offset.entry(n - 1).map_or(0, |(_, p)| p as u64),
    };
    if pos >= last_index_pos + interval.max(1) && pos <= u32::MAX as u64 {
        if idx
            .offset
            .put(st.index_entries, h.last_offset(), pos as u32)?
        {
            st.index_entries += 1;
        }
        let last_ts = idx
            .time
            .last(st.time_entries)
            .map_or(i64::MIN, |(ts, _)| ts);
        if st.max_timestamp > last_ts
            && idx.time.put(
                st.time_entries,
                st.max_timestamp,
                st.offset_of_max_timestamp,
            )?
        {
            st.time_entries += 1;
        }
    }
    st.next_offset = h.next_offset();
    st.active_size = pos + h.total_size() as u64;
    Ok(())
}

/// Validate every batch of `seg` from the start (checksums, and offsets that
/// never go backwards from `expected_base`), rewriting its indexes as it
/// goes. Used by recovery. Returns the state after the last valid batch and,
/// if the scan stopped before the end of the file, where.
///
/// Each batch must start exactly where the previous one ended, except that
/// a gap ending at or below `gaps_until` is allowed: only the cleaner makes
/// gaps, and it records how far they may reach (`cleaner::read_gap_end`)
/// before it swaps in a segment with any. Base offsets sit outside the CRC,
/// so this is the only check that catches a damaged one; accepting it would
/// publish a gap that every later read stops at.
pub fn scan(
    seg: &LogSegment,
    expected_base: i64,
    index_interval: u64,
    gaps_until: i64,
) -> Result<(HeadState, Option<u64>)> {
    let file_len = seg.file_len()?;
    let mut st = HeadState {
        next_offset: expected_base,
        active_base: seg.base_offset,
        max_timestamp: i64::MIN,
        offset_of_max_timestamp: -1,
        ..Default::default()
    };
    let mut idx = seg.indexes()?.write();
    let mut reader = ChunkReader::new(seg, file_len);
    let mut pos = 0u64;
    while pos < file_len {
        let total = match reader.slice(pos, LOG_OVERHEAD)?.and_then(peek_total_size) {
            Some(t) if t >= HEADER_LEN as i64 && pos + t as u64 <= file_len => t as usize,
            _ => return Ok((st, Some(pos))),
        };
        let header = match reader.slice(pos, total)?.map(check_batch) {
            Some(Ok(h))
                if h.base_offset == st.next_offset
                    || (h.base_offset > st.next_offset && h.base_offset <= gaps_until) =>
            {
                h
            }
            _ => return Ok((st, Some(pos))),
        };
        account_batch(&mut idx, &mut st, pos, &header, index_interval)?;
        pos += total as u64;
    }
    Ok((st, None))
}

/// Call `f` with the header of each batch of `seg` below `limit`, in
/// order, reading through a window rather than a syscall per header.
/// Stops at the first header that is not whole or not plausible: the
/// caller's `limit` is the head's, below which every batch is whole.
/// For rebuilding what the headers alone give (the leader-epoch cache).
pub fn for_each_header(
    seg: &LogSegment,
    limit: u64,
    mut f: impl FnMut(&BatchHeader),
) -> Result<()> {
    let limit = limit.min(seg.file_len()?);
    let mut reader = ChunkReader::new(seg, limit);
    let mut pos = 0u64;
    while pos < limit {
        let Some(h) = reader.slice(pos, HEADER_LEN)?.and_then(BatchHeader::parse) else {
            break;
        };
        if h.total_size() < HEADER_LEN || pos + h.total_size() as u64 > limit {
            break;
        }
        f(&h);
        pos += h.total_size() as u64;
    }
    Ok(())
}

/// Reads a file through a 1 MiB window, so scanning costs one syscall per
/// window rather than two per batch.
struct ChunkReader<'a> {
    seg: &'a LogSegment,
    file_len: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> ChunkReader<'a> {
    const WINDOW: usize = 1 << 20;

    fn new(seg: &'a LogSegment, file_len: u64) -> Self {
        ChunkReader {
            seg,
            file_len,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// `len` bytes at `pos`, or `None` past the end of the file.
    fn slice(&mut self, pos: u64, len: usize) -> Result<Option<&[u8]>> {
        if pos + len as u64 > self.file_len {
            return Ok(None);
        }
        let covered = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !covered {
            let want = len.max(Self::WINDOW).min((self.file_len - pos) as usize);
            self.buf.resize(want, 0);
            let n = self.seg.read_at(pos, &mut self.buf)?;
            self.buf.truncate(n);
            self.start = pos;
            if n < len {
                return Ok(None);
            }
        }
        let at = (pos - self.start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }
}
