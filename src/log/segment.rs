//! `LogSegment`: one `<base offset>.log` file of whole record batches with
//! its `.index` and `.timeindex`. A segment holds offsets from its base up to
//! the next segment's base; only the partition's last (active) segment grows.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use super::head::HeadState;
use super::offset_index::OffsetIndex;
use super::time_index::TimeIndex;
use crate::error::{Error, IoContext, Result};
use crate::record::batch::{check_batch, peek_total_size, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

pub fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

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
}

pub struct LogSegment {
    pub base_offset: i64,
    path: PathBuf,
    file: File,
    /// Size of the file when opened; the size of a closed segment.
    opened_size: u64,
    pub indexes: RwLock<Indexes>,
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
        let opened_size = file.metadata().ctx("stat segment", &path)?.len();
        let (idx_path, time_path) = (
            path.with_extension("index"),
            path.with_extension("timeindex"),
        );
        let indexes = if active {
            Indexes {
                offset: OffsetIndex::open_writable(&idx_path, base_offset, index_max_bytes)?,
                time: TimeIndex::open_writable(&time_path, base_offset, index_max_bytes)?,
            }
        } else {
            Indexes::open_readonly(&path, base_offset)?
        };
        Ok(LogSegment {
            base_offset,
            path,
            file,
            opened_size,
            indexes: RwLock::new(indexes),
        })
    }

    /// Open a segment that already exists, creating, growing or trimming no
    /// file: for building a view of the segments from a head snapshot that
    /// may already be stale (see `PartitionLog::segments_for`). A missing
    /// `.log` is an `Io` error of kind `NotFound`.
    pub fn open_existing(dir: &Path, base_offset: i64, active: bool) -> Result<LogSegment> {
        let path = dir.join(log_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open segment", &path)?;
        let opened_size = file.metadata().ctx("stat segment", &path)?.len();
        let indexes = if active {
            Indexes {
                offset: OffsetIndex::open_existing(&path.with_extension("index"), base_offset)?,
                time: TimeIndex::open_existing(&path.with_extension("timeindex"), base_offset)?,
            }
        } else {
            Indexes::open_readonly(&path, base_offset)?
        };
        Ok(LogSegment {
            base_offset,
            path,
            file,
            opened_size,
            indexes: RwLock::new(indexes),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn closed_size(&self) -> u64 {
        self.opened_size
    }

    pub fn file_len(&self) -> Result<u64> {
        Ok(self.file.metadata().ctx("stat segment", &self.path)?.len())
    }

    pub fn write_at(&self, pos: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, pos)
            .ctx("append to segment", &self.path)
    }

    pub fn read_at(&self, pos: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read segment", &self.path, e)),
            }
        }
        Ok(done)
    }

    pub fn truncate(&self, size: u64) -> Result<()> {
        self.file.set_len(size).ctx("truncate segment", &self.path)
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().ctx("fsync segment", &self.path)
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
        let (hint, mut pos) = {
            let idx = self.indexes.read();
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
    pub fn closed_max_timestamp(&self) -> Option<i64> {
        let idx = self.indexes.read();
        idx.time.last(idx.time.closed_entries()).map(|(ts, _)| ts)
    }
}

/// Account for one batch written at `pos` of the active segment: advance the
/// running state and add index entries by Kafka's rule (an offset entry once
/// `interval` bytes have passed since the last one, with a time entry beside
/// it when the largest timestamp so far has grown). Shared by the append path
/// and recovery so that both build identical indexes.
pub fn account_batch(
    idx: &mut Indexes,
    st: &mut HeadState,
    pos: u64,
    h: &BatchHeader,
    interval: u64,
) {
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
            .put(st.index_entries, h.last_offset(), pos as u32)
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
            )
        {
            st.time_entries += 1;
        }
    }
    st.next_offset = h.next_offset();
    st.active_size = pos + h.total_size() as u64;
}

/// Validate every batch of `seg` from the start (checksums, and offsets that
/// never go backwards from `expected_base`), rewriting its indexes as it
/// goes. Used by recovery. Returns the state after the last valid batch and,
/// if the scan stopped before the end of the file, where.
///
/// With `contiguous` (every log but a compacted one), each batch must start
/// exactly where the previous one ended. Base offsets sit outside the CRC, so
/// this is the only check that catches a damaged one; accepting it would
/// publish a gap that every later read stops at.
pub fn scan(
    seg: &LogSegment,
    expected_base: i64,
    index_interval: u64,
    contiguous: bool,
) -> Result<(HeadState, Option<u64>)> {
    let file_len = seg.file_len()?;
    let mut st = HeadState {
        next_offset: expected_base,
        active_base: seg.base_offset,
        max_timestamp: i64::MIN,
        offset_of_max_timestamp: -1,
        ..Default::default()
    };
    let mut idx = seg.indexes.write();
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
                    || (!contiguous && h.base_offset > st.next_offset) =>
            {
                h
            }
            _ => return Ok((st, Some(pos))),
        };
        account_batch(&mut idx, &mut st, pos, &header, index_interval);
        pos += total as u64;
    }
    Ok((st, None))
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
