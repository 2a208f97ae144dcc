//! The Raft log on disk, with the vote and the purge mark: openraft's
//! [`RaftLogStorage`].
//!
//! The log is a directory of append-only segment files named by the index of
//! their first entry. A segment is an 8-byte header (`OTML`, version 1, three
//! zero bytes) and frames `len u32 LE | crc32c(payload) u32 LE | payload`,
//! the payload an openraft entry in postcard. An append is fsync'd
//! (`fdatasync`) before openraft hears it is durable. The entries since the
//! last purge are also kept in memory (the metadata log is small, and the
//! snapshots purge it), so reads never touch the disk.
//!
//! On open, a frame that does not check in the last segment, with no whole
//! frame after it, is a torn tail (an append cut by a crash, never
//! acknowledged): the segment is truncated there. A bad frame anywhere else,
//! or followed by good frames, or a gap in the indexes, is
//! [`StoreError::Corrupt`]: acknowledged entries are damaged, and the node
//! must not guess.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use super::file::{read_if_exists, sync_dir, unframe, write_atomic};
use super::{decode, encode, StoreError};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const SEGMENT_MAGIC: &[u8; 4] = b"OTML";
const SEGMENT_HEADER: u64 = 8;
const FRAME_HEADER: usize = 8;
/// No entry is larger (a frame claiming more is damage, not an entry).
const MAX_FRAME: usize = 64 << 20;
const VOTE_MAGIC: &[u8; 4] = b"OTMV";
const PURGED_MAGIC: &[u8; 4] = b"OTMP";

/// The default size at which a new segment is started.
pub const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;

struct Stored {
    entry: Entry,
    /// The first index of the segment the entry is in, and its byte offset.
    segment: u64,
    pos: u64,
}

struct Segment {
    path: PathBuf,
    len: u64,
}

struct Inner {
    root: PathBuf,
    log_dir: PathBuf,
    entries: BTreeMap<u64, Stored>,
    segments: BTreeMap<u64, Segment>,
    /// The last segment, open for appending.
    active: Option<File>,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    segment_bytes: u64,
}

/// The log store (and log reader: clones share the same state).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// Parses the frame at `pos`: the entry and the position after it, or why
/// it does not check.
fn parse_frame(bytes: &[u8], pos: usize, path: &Path) -> Result<(Entry, usize), String> {
    let rest = &bytes[pos..];
    if rest.len() < FRAME_HEADER {
        return Err(format!("{} bytes, shorter than a frame header", rest.len()));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 || len > MAX_FRAME {
        return Err(format!("frame length {len}"));
    }
    if rest.len() - FRAME_HEADER < len {
        return Err(format!("frame of {len} bytes runs past the end"));
    }
    let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
    if crc32c::crc32c(payload) != crc {
        return Err("frame CRC mismatch".into());
    }
    let entry: Entry = decode(payload, path, pos as u64).map_err(|e| e.to_string())?;
    Ok((entry, pos + FRAME_HEADER + len))
}

/// Whether a whole, checking frame starts anywhere in `bytes[from..]`: the
/// difference between a torn tail (nothing good after the damage) and a
/// damaged entry in the middle.
fn good_frame_after(bytes: &[u8], from: usize, path: &Path) -> bool {
    (from..bytes.len().saturating_sub(FRAME_HEADER)).any(|p| parse_frame(bytes, p, path).is_ok())
}

impl LogStore {
    /// Opens (creating if needed) the log under `root`, recovering the vote,
    /// the purge mark and the entries, and truncating a torn tail.
    pub fn open(root: &Path, segment_bytes: u64) -> Result<LogStore, StoreError> {
        let log_dir = root.join("log");
        fs::create_dir_all(&log_dir).map_err(|e| StoreError::io(&log_dir, e))?;
        let vote_path = root.join("vote");
        let vote = match read_if_exists(&vote_path)? {
            Some(b) => Some(decode::<Vote>(
                unframe(VOTE_MAGIC, &b, &vote_path)?,
                &vote_path,
                16,
            )?),
            None => None,
        };
        let purged_path = root.join("purged");
        let last_purged = match read_if_exists(&purged_path)? {
            Some(b) => Some(decode::<LogId>(
                unframe(PURGED_MAGIC, &b, &purged_path)?,
                &purged_path,
                16,
            )?),
            None => None,
        };

        let mut firsts = Vec::new();
        for dirent in fs::read_dir(&log_dir).map_err(|e| StoreError::io(&log_dir, e))? {
            let dirent = dirent.map_err(|e| StoreError::io(&log_dir, e))?;
            let name = dirent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(".log") else {
                continue;
            };
            if stem.len() == 20 {
                if let Ok(first) = stem.parse::<u64>() {
                    firsts.push(first);
                }
            }
        }
        firsts.sort_unstable();

        let mut entries = BTreeMap::new();
        let mut segments = BTreeMap::new();
        let mut next_index: Option<u64> = None;
        for (i, &first) in firsts.iter().enumerate() {
            let is_last = i + 1 == firsts.len();
            let path = log_dir.join(segment_name(first));
            let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            if bytes.len() < SEGMENT_HEADER as usize {
                if is_last {
                    // A segment whose creation was cut short: nothing in it
                    // was ever acknowledged.
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                    continue;
                }
                return Err(StoreError::corrupt(
                    &path,
                    0,
                    "segment shorter than its header",
                ));
            }
            if &bytes[0..4] != SEGMENT_MAGIC {
                return Err(StoreError::corrupt(&path, 0, "bad segment magic"));
            }
            if bytes[4] != 1 {
                return Err(StoreError::UnknownVersion {
                    path,
                    version: bytes[4],
                });
            }
            let mut pos = SEGMENT_HEADER as usize;
            let mut count = 0u64;
            while pos < bytes.len() {
                match parse_frame(&bytes, pos, &path) {
                    Ok((entry, next)) => {
                        let index = entry.log_id.index;
                        let expected = next_index.unwrap_or(first);
                        if index != expected {
                            return Err(StoreError::corrupt(
                                &path,
                                pos as u64,
                                format!("entry {index} where {expected} was expected"),
                            ));
                        }
                        next_index = Some(index + 1);
                        entries.insert(
                            index,
                            Stored {
                                entry,
                                segment: first,
                                pos: pos as u64,
                            },
                        );
                        count += 1;
                        pos = next;
                    }
                    Err(reason) => {
                        if !is_last || good_frame_after(&bytes, pos + 1, &path) {
                            return Err(StoreError::corrupt(&path, pos as u64, reason));
                        }
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|e| StoreError::io(&path, e))?;
                        f.set_len(pos as u64)
                            .and_then(|()| f.sync_all())
                            .map_err(|e| StoreError::io(&path, e))?;
                        break;
                    }
                }
            }
            if count == 0 && is_last {
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                continue;
            }
            segments.insert(
                first,
                Segment {
                    path,
                    len: pos as u64,
                },
            );
        }
        let last_loaded = entries.keys().next_back().copied();
        if let Some(p) = last_purged {
            entries.retain(|i, _| *i > p.index);
            if let Some(first) = entries.keys().next() {
                if *first != p.index + 1 {
                    return Err(StoreError::corrupt(
                        &log_dir,
                        0,
                        format!("log resumes at {first}, after the purge mark {}", p.index),
                    ));
                }
            }
        }
        let mut inner = Inner {
            root: root.to_path_buf(),
            log_dir,
            entries,
            segments,
            active: None,
            vote,
            last_purged,
            segment_bytes: segment_bytes.max(SEGMENT_HEADER + 1),
        };
        if let Some(p) = last_purged {
            // A purge cut short after its mark was written: finish it, so
            // that no segment of purged entries is appended to.
            inner.drop_segments_upto(p.index, last_loaded)?;
        }
        sync_dir(&inner.log_dir)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while holding it; the state is
        // still consistent (every method updates memory after the disk).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current vote (for tests and diagnostics).
    pub fn vote(&self) -> Option<Vote> {
        self.lock().vote
    }

    /// The index range of the entries held (for tests and diagnostics).
    pub fn indexes(&self) -> Option<(u64, u64)> {
        let g = self.lock();
        Some((*g.entries.keys().next()?, *g.entries.keys().next_back()?))
    }
}

impl Inner {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|s| s.entry.log_id)
            .or(self.last_purged)
    }

    fn append(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(last) = self.last_log_id() {
                if index != last.index + 1 {
                    return Err(StoreError::corrupt(
                        &self.log_dir,
                        0,
                        format!("append of entry {index} after {}", last.index),
                    ));
                }
            }
            let payload = encode(&entry)?;
            let len = u32::try_from(payload.len())
                .ok()
                .filter(|l| (*l as usize) <= MAX_FRAME)
                .ok_or(StoreError::TooLarge { len: payload.len() })?;
            let roll = match self.segments.values().next_back() {
                None => true,
                Some(s) => s.len >= self.segment_bytes,
            };
            if roll {
                self.roll(index)?;
            }
            let (&first, seg) =
                self.segments.iter_mut().next_back().ok_or_else(|| {
                    StoreError::corrupt(&self.log_dir, 0, "no segment after rolling")
                })?;
            if self.active.is_none() {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| StoreError::io(&seg.path, e))?;
                self.active = Some(f);
            }
            let Some(f) = self.active.as_mut() else {
                return Err(StoreError::corrupt(&seg.path, 0, "segment not open"));
            };
            let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            frame.extend_from_slice(&payload);
            f.write_all(&frame)
                .map_err(|e| StoreError::io(&seg.path, e))?;
            let pos = seg.len;
            seg.len += frame.len() as u64;
            self.entries.insert(
                index,
                Stored {
                    entry,
                    segment: first,
                    pos,
                },
            );
        }
        if let (Some(f), Some(seg)) = (self.active.as_ref(), self.segments.values().next_back()) {
            f.sync_data().map_err(|e| StoreError::io(&seg.path, e))?;
        }
        Ok(())
    }

    /// Starts a new segment whose first entry is `first`.
    fn roll(&mut self, first: u64) -> Result<(), StoreError> {
        if let (Some(f), Some(seg)) = (self.active.take(), self.segments.values().next_back()) {
            f.sync_data().map_err(|e| StoreError::io(&seg.path, e))?;
        }
        let path = self.log_dir.join(segment_name(first));
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        f.set_len(0).map_err(|e| StoreError::io(&path, e))?;
        f.write_all(&[b'O', b'T', b'M', b'L', 1, 0, 0, 0])
            .and_then(|()| f.sync_data())
            .map_err(|e| StoreError::io(&path, e))?;
        sync_dir(&self.log_dir)?;
        self.segments.insert(
            first,
            Segment {
                path,
                len: SEGMENT_HEADER,
            },
        );
        self.active = Some(f);
        Ok(())
    }

    /// Removes the entries from `index` on.
    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        let Some(at) = self.entries.get(&index) else {
            return Ok(());
        };
        let (segment, pos) = (at.segment, at.pos);
        self.active = None;
        let later: Vec<u64> = self
            .segments
            .range(segment + 1..)
            .map(|(f, _)| *f)
            .collect();
        for first in later {
            if let Some(s) = self.segments.remove(&first) {
                fs::remove_file(&s.path).map_err(|e| StoreError::io(&s.path, e))?;
            }
        }
        if pos == SEGMENT_HEADER {
            if let Some(s) = self.segments.remove(&segment) {
                fs::remove_file(&s.path).map_err(|e| StoreError::io(&s.path, e))?;
            }
        } else if let Some(s) = self.segments.get_mut(&segment) {
            let f = OpenOptions::new()
                .write(true)
                .open(&s.path)
                .map_err(|e| StoreError::io(&s.path, e))?;
            f.set_len(pos)
                .and_then(|()| f.sync_all())
                .map_err(|e| StoreError::io(&s.path, e))?;
            s.len = pos;
        }
        sync_dir(&self.log_dir)?;
        self.entries.split_off(&index);
        Ok(())
    }

    /// Deletes the segments whose entries are all at or below `index`
    /// (`last_index`: the last entry in the segments).
    fn drop_segments_upto(
        &mut self,
        index: u64,
        last_index: Option<u64>,
    ) -> Result<(), StoreError> {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for (i, first) in firsts.iter().enumerate() {
            // The segment's last entry is just before the next segment's first.
            let seg_last = match firsts.get(i + 1) {
                Some(next) => Some(next - 1),
                None => last_index,
            };
            if !matches!(seg_last, Some(l) if l > index) {
                if i + 1 == firsts.len() {
                    self.active = None;
                }
                if let Some(s) = self.segments.remove(first) {
                    fs::remove_file(&s.path).map_err(|e| StoreError::io(&s.path, e))?;
                }
            }
        }
        Ok(())
    }

    /// Forgets the entries up to `log_id` (a snapshot holds them): the mark
    /// first, then the segments wholly at or below it.
    fn purge(&mut self, log_id: LogId) -> Result<(), StoreError> {
        write_atomic(
            &self.root,
            "purged",
            &super::file::frame(PURGED_MAGIC, &encode(&log_id)?)?,
        )?;
        let last_index = self.entries.keys().next_back().copied();
        self.last_purged = Some(log_id);
        self.drop_segments_upto(log_id.index, last_index)?;
        sync_dir(&self.log_dir)?;
        self.entries = self.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let g = self.lock();
        Ok(g.entries
            .range(range)
            .map(|(_, s)| s.entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let g = self.lock();
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: g.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut g = self.lock();
        let bytes = encode(vote)
            .and_then(|p| super::file::frame(VOTE_MAGIC, &p))
            .and_then(|b| write_atomic(&g.root, "vote", &b))
            .map_err(|e| e.to_raft(ErrorSubject::Vote, ErrorVerb::Write));
        bytes?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self.lock().append(entries);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.to_raft(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock()
            .truncate(log_id.index)
            .map_err(|e| e.to_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.lock()
            .purge(log_id)
            .map_err(|e| e.to_raft(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom};

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::records::{MetadataRecord, Proposal};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Proposal {
                records: vec![MetadataRecord::UnregisterBroker {
                    broker_id: index as i32,
                }],
            }),
        }
    }

    fn append(store: &LogStore, from: u64, to: u64) {
        store
            .lock()
            .append((from..to).map(entry).collect())
            .unwrap();
    }

    fn last_segment(dir: &Path) -> PathBuf {
        let mut v: Vec<_> = fs::read_dir(dir.join("log"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect();
        v.sort();
        v.pop().unwrap()
    }

    #[test]
    fn reopen_recovers_entries_vote_and_rolls_segments() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), 200).unwrap();
        append(&store, 0, 30);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let vote = Vote::new(3, 2);
        rt.block_on(store.clone().save_vote(&vote)).unwrap();
        drop(store);
        let n_segments = fs::read_dir(dir.path().join("log")).unwrap().count();
        assert!(n_segments > 1, "{n_segments} segments");
        let store = LogStore::open(dir.path(), 200).unwrap();
        assert_eq!(store.indexes(), Some((0, 29)));
        assert_eq!(store.vote(), Some(vote));
    }

    #[test]
    fn torn_tail_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        append(&store, 0, 10);
        drop(store);
        let seg = last_segment(dir.path());
        let good_len = fs::metadata(&seg).unwrap().len();
        // Garbage after the last entry: a half-written frame.
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0x30, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
        drop(f);
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(store.indexes(), Some((0, 9)));
        assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
        // And appending continues where the log ends.
        append(&store, 10, 12);
        drop(store);
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(store.indexes(), Some((0, 11)));
    }

    #[test]
    fn corrupt_middle_entry_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        append(&store, 0, 10);
        let pos = store.lock().entries[&4].pos;
        drop(store);
        let seg = last_segment(dir.path());
        let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.seek(SeekFrom::Start(pos + FRAME_HEADER as u64 + 1))
            .unwrap();
        f.write_all(&[0xff, 0xee]).unwrap();
        drop(f);
        match LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, pos),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a damaged entry in the middle was accepted"),
        }
    }

    #[test]
    fn corrupt_vote_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap());
        fs::write(dir.path().join("vote"), b"OTMV\x01\0\0\0garbage!").unwrap();
        assert!(matches!(
            LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn purge_cut_short_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        append(&store, 0, 10);
        // The mark is written, then the process dies before the segments go
        // (here: a snapshot from the leader, past the local log).
        let mark = LogId::new(CommittedLeaderId::new(1, 0), 20);
        let framed = super::super::file::frame(PURGED_MAGIC, &encode(&mark).unwrap()).unwrap();
        write_atomic(dir.path(), "purged", &framed).unwrap();
        drop(store);
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(store.indexes(), None);
        append(&store, 21, 25);
        drop(store);
        let store = LogStore::open(dir.path(), DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(store.indexes(), Some((21, 24)));
    }

    #[test]
    fn truncate_and_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), 200).unwrap();
        append(&store, 0, 40);
        store.lock().truncate(25).unwrap();
        append(&store, 25, 30);
        store
            .lock()
            .purge(LogId::new(CommittedLeaderId::new(1, 0), 12))
            .unwrap();
        drop(store);
        let store = LogStore::open(dir.path(), 200).unwrap();
        assert_eq!(store.indexes(), Some((13, 29)));
        // A purge past the end (a snapshot installed from the leader).
        store
            .lock()
            .purge(LogId::new(CommittedLeaderId::new(1, 0), 50))
            .unwrap();
        append(&store, 51, 53);
        drop(store);
        let store = LogStore::open(dir.path(), 200).unwrap();
        assert_eq!(store.indexes(), Some((51, 52)));
    }
}
