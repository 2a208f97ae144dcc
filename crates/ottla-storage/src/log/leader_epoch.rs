//! The leader-epoch cache (Kafka's `LeaderEpochFileCache`): for each leader
//! epoch the partition's log has seen, the first offset written in it; and
//! its file, `leader-epoch-checkpoint`, in Kafka's checkpoint format:
//!
//! ```text
//! 0              <- version
//! 2              <- number of entries
//! 0 0            <- epoch, start offset
//! 3 1500
//! ```
//!
//! Entries are ascending in both epoch and start offset. The cache answers
//! what KIP-101 and KIP-320 ask of it: the end offset of an epoch
//! (`end_offset_for`, OffsetForLeaderEpoch), the epoch of an offset
//! (`epoch_for_offset`), and it follows the log as the log is cut at
//! either end (`truncate_from_end` after a torn tail is cut off,
//! `truncate_from_start` when the log start moves).
//!
//! This module is the data structure and its file only: no locks, no
//! partition. `log::partition::epochs` keeps one per partition, in step
//! across processes, and decides when the file is written.

use std::fmt;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::fsutil::write_replace;

/// The per-partition file holding the leader-epoch cache.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The only version of the checkpoint format.
const VERSION: &str = "0";

/// One epoch and the first offset written in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Why a checkpoint file could not be read: its line (1-based) and what is
/// wrong with it. The partition rebuilds the cache from the log's batch
/// headers then (see `log::partition::epochs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedCheckpoint {
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for MalformedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for MalformedCheckpoint {}

/// What reading a partition's checkpoint found.
#[derive(Debug)]
pub enum Checkpoint {
    /// No file: a partition from before leader epochs, or a new one.
    Missing,
    Malformed(MalformedCheckpoint),
    Read(LeaderEpochCache),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// Ascending in epoch and in start offset.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn new() -> LeaderEpochCache {
        LeaderEpochCache::default()
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    pub fn earliest(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// Record that `epoch` starts at `start_offset` (Kafka's `assign`).
    /// Nothing changes when the latest entry already is this epoch starting
    /// at or before the offset. Otherwise every entry that the new one would
    /// put out of order (an epoch at or above it, or a start at or past its
    /// start) is dropped first: a leader that assigns an epoch at an offset
    /// has no records past it in older epochs. Negative values are ignored
    /// (a batch without an epoch). Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(last) = self.latest() {
            if last.epoch == epoch && last.start_offset <= start_offset {
                return false;
            }
        }
        while let Some(last) = self.entries.last() {
            if last.epoch >= epoch || last.start_offset >= start_offset {
                self.entries.pop();
            } else {
                break;
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// The log was cut to end at `end_offset`: drop the epochs that start
    /// at or past it (Kafka's `truncateFromEnd`). Returns whether the cache
    /// changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 {
            return false;
        }
        let keep = self
            .entries
            .iter()
            .take_while(|e| e.start_offset < end_offset)
            .count();
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start_offset`: drop the epochs that start at
    /// or below it, and keep the last of them, starting at `start_offset`
    /// (the epoch of the log's first record; Kafka's `truncateFromStart`).
    /// Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .iter()
            .take_while(|e| e.start_offset <= start_offset)
            .count();
        let Some(last_below) = below.checked_sub(1).map(|i| self.entries[i]) else {
            return false;
        };
        if below == 1 && last_below.start_offset == start_offset {
            return false;
        }
        self.entries.drain(..below);
        self.entries.insert(
            0,
            EpochEntry {
                epoch: last_below.epoch,
                start_offset,
            },
        );
        true
    }

    /// Kafka's `endOffsetFor`: (epoch, end offset) for a requested epoch,
    /// as OffsetForLeaderEpoch answers it.
    /// * `UNDEFINED_EPOCH` asked: (-1, -1).
    /// * the latest epoch: the log end offset, which it is still being
    ///   written up to.
    /// * an older epoch: the start of the first later epoch, with the
    ///   largest known epoch at or below the one asked for; if there is none
    ///   (asked below every known epoch, its records gone with the log
    ///   start), the requested epoch itself with the first entry's start.
    /// * above every known epoch: (-1, -1).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest().is_some_and(|e| e.epoch == requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            None => (requested, higher.start_offset),
        }
    }

    /// The epoch `offset` was written in (Kafka's `epochForOffset`): the
    /// entry starting exactly there, else the last one starting before it;
    /// `None` below the first entry.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.entries
            .iter()
            .take_while(|e| e.start_offset <= offset)
            .last()
            .map(|e| e.epoch)
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut s = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        s
    }

    /// Parse a checkpoint file's text. Strict, as Kafka's reader is: the
    /// version, a count matching the entries, two numbers a line, no
    /// negative value. Entries out of order are taken through `assign`, as
    /// Kafka loads them, so the cache is ordered whatever the file says.
    pub fn parse(text: &str) -> std::result::Result<LeaderEpochCache, MalformedCheckpoint> {
        let bad = |line: usize, reason: &'static str| MalformedCheckpoint { line, reason };
        let mut lines = text.lines();
        match lines.next() {
            Some(v) if v.trim() == VERSION => {}
            Some(_) => return Err(bad(1, "unknown version")),
            None => return Err(bad(1, "empty file")),
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| bad(2, "no entry count"))?;
        let mut cache = LeaderEpochCache::new();
        let mut seen = 0usize;
        for (i, line) in lines.enumerate() {
            let n = i + 3;
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let epoch: i32 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| bad(n, "not an epoch"))?;
            let start: i64 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| bad(n, "not an offset"))?;
            if fields.next().is_some() {
                return Err(bad(n, "more than two fields"));
            }
            if epoch < 0 || start < 0 {
                return Err(bad(n, "negative epoch or offset"));
            }
            seen += 1;
            if seen > count {
                return Err(bad(n, "more entries than the count says"));
            }
            cache.assign(epoch, start);
        }
        if seen != count {
            return Err(bad(2, "fewer entries than the count says"));
        }
        Ok(cache)
    }

    /// Read `dir`'s checkpoint.
    pub fn read(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(LEADER_EPOCH_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    return Ok(Checkpoint::Malformed(MalformedCheckpoint {
                        line: 1,
                        reason: "not text",
                    }));
                };
                Ok(match LeaderEpochCache::parse(text) {
                    Ok(c) => Checkpoint::Read(c),
                    Err(m) => Checkpoint::Malformed(m),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::Missing),
            Err(e) => Err(e).ctx("read leader epochs", &path),
        }
    }

    /// Replace `dir`'s checkpoint with this cache: a temporary file renamed
    /// into place, so readers in any process see the old file or the new
    /// one, never a mix. Not fsync'd here: see [`LeaderEpochCache::sync`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_replace(&dir.join(LEADER_EPOCH_FILE), self.encode().as_bytes())
    }

    /// fsync `dir`'s checkpoint and the directory (its rename), if there is
    /// one: once this returns the file survives a power cut.
    pub fn sync(dir: &Path) -> Result<()> {
        let path = dir.join(LEADER_EPOCH_FILE);
        match std::fs::File::open(&path) {
            Ok(f) => f.sync_all().ctx("fsync leader epochs", &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx("open leader epochs", &path),
        }
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx("fsync partition directory", dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::new();
        for &(e, o) in entries {
            assert!(c.assign(e, o), "assign {e} {o}");
        }
        c
    }

    fn pairs(c: &LeaderEpochCache) -> Vec<(i32, i64)> {
        c.entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    #[test]
    fn assign_keeps_epochs_and_offsets_ascending() {
        let mut c = LeaderEpochCache::new();
        assert!(c.assign(0, 0));
        // The same epoch again, later: nothing to record.
        assert!(!c.assign(0, 5));
        assert!(c.assign(2, 10));
        assert!(c.assign(4, 20));
        assert_eq!(pairs(&c), [(0, 0), (2, 10), (4, 20)]);
        // A lower epoch at a later offset drops the epochs above it.
        assert!(c.assign(3, 25));
        assert_eq!(pairs(&c), [(0, 0), (2, 10), (3, 25)]);
        // The same epoch at an earlier offset moves its start back.
        assert!(c.assign(3, 15));
        assert_eq!(pairs(&c), [(0, 0), (2, 10), (3, 15)]);
        // A higher epoch at an offset below later starts drops them.
        assert!(c.assign(5, 10));
        assert_eq!(pairs(&c), [(0, 0), (5, 10)]);
        // Batches without an epoch record nothing.
        assert!(!c.assign(-1, 30));
        assert!(!c.assign(6, -1));
        assert_eq!(pairs(&c), [(0, 0), (5, 10)]);
    }

    #[test]
    fn truncate_from_end_drops_epochs_starting_at_or_past_the_end() {
        let mut c = cache(&[(0, 0), (1, 10), (2, 20)]);
        assert!(!c.truncate_from_end(21));
        assert!(c.truncate_from_end(20));
        assert_eq!(pairs(&c), [(0, 0), (1, 10)]);
        assert!(c.truncate_from_end(5));
        assert_eq!(pairs(&c), [(0, 0)]);
        assert!(c.truncate_from_end(0));
        assert!(c.is_empty());
        assert!(!c.truncate_from_end(-1));
    }

    #[test]
    fn truncate_from_start_clamps_the_epoch_of_the_new_first_offset() {
        let mut c = cache(&[(0, 0), (1, 10), (2, 20)]);
        // Exclusive: an entry at the new start is kept as it is.
        assert!(c.truncate_from_start(10));
        assert_eq!(pairs(&c), [(1, 10), (2, 20)]);
        assert!(!c.truncate_from_start(10));
        assert!(!c.truncate_from_start(5));
        assert!(c.truncate_from_start(15));
        assert_eq!(pairs(&c), [(1, 15), (2, 20)]);
        assert!(c.truncate_from_start(25));
        assert_eq!(pairs(&c), [(2, 25)]);
        let mut e = LeaderEpochCache::new();
        assert!(!e.truncate_from_start(7));
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let c = cache(&[(1, 10), (3, 20), (5, 30)]);
        let leo = 42;
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, leo), (-1, -1));
        // The latest epoch ends at the log end.
        assert_eq!(c.end_offset_for(5, leo), (5, leo));
        // An epoch with an entry ends where the next one starts.
        assert_eq!(c.end_offset_for(1, leo), (1, 20));
        assert_eq!(c.end_offset_for(3, leo), (3, 30));
        // An epoch between two known ones: the one below it, and where
        // the one above starts.
        assert_eq!(c.end_offset_for(2, leo), (1, 20));
        assert_eq!(c.end_offset_for(4, leo), (3, 30));
        // Below every known epoch: the requested epoch, and the first start.
        assert_eq!(c.end_offset_for(0, leo), (0, 10));
        // Above every known epoch: undefined.
        assert_eq!(c.end_offset_for(6, leo), (-1, -1));
        // Nothing known: undefined.
        assert_eq!(LeaderEpochCache::new().end_offset_for(0, leo), (-1, -1));
    }

    #[test]
    fn epoch_for_offset_is_the_epoch_starting_at_or_before_it() {
        let c = cache(&[(1, 10), (3, 20)]);
        assert_eq!(c.epoch_for_offset(9), None);
        assert_eq!(c.epoch_for_offset(10), Some(1));
        assert_eq!(c.epoch_for_offset(19), Some(1));
        assert_eq!(c.epoch_for_offset(20), Some(3));
        assert_eq!(c.epoch_for_offset(1 << 40), Some(3));
    }

    #[test]
    fn the_file_round_trips_in_kafkas_format() {
        let c = cache(&[(0, 0), (3, 1500)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n3 1500\n");
        assert_eq!(LeaderEpochCache::parse(&c.encode()), Ok(c.clone()));
        assert_eq!(
            LeaderEpochCache::parse("0\n0\n"),
            Ok(LeaderEpochCache::new())
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            LeaderEpochCache::read(dir.path()),
            Ok(Checkpoint::Missing)
        ));
        c.write(dir.path()).expect("write");
        LeaderEpochCache::sync(dir.path()).expect("sync");
        match LeaderEpochCache::read(dir.path()) {
            Ok(Checkpoint::Read(r)) => assert_eq!(r, c),
            other => panic!("{other:?}"),
        }
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [LEADER_EPOCH_FILE]);
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let cases: &[(&str, usize)] = &[
            ("", 1),
            ("1\n0\n", 1),
            ("0\n", 2),
            ("0\nx\n", 2),
            ("0\n1\n", 2),
            ("0\n1\n0 0\n1 5\n", 4),
            ("0\n1\nzero 0\n", 3),
            ("0\n1\n0\n", 3),
            ("0\n1\n0 0 0\n", 3),
            ("0\n1\n-1 0\n", 3),
            ("0\n1\n0 -4\n", 3),
        ];
        for (text, line) in cases {
            match LeaderEpochCache::parse(text) {
                Err(m) => assert_eq!(m.line, *line, "{text:?}: {m}"),
                Ok(c) => panic!("{text:?} parsed as {c:?}"),
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(LEADER_EPOCH_FILE), [0xff, 0xfe]).expect("write");
        assert!(matches!(
            LeaderEpochCache::read(dir.path()),
            Ok(Checkpoint::Malformed(_))
        ));
    }

    #[test]
    fn entries_out_of_order_in_a_file_load_as_kafka_assigns_them() {
        let c = LeaderEpochCache::parse("0\n3\n0 0\n4 20\n2 30\n").expect("parse");
        assert_eq!(pairs(&c), [(0, 0), (2, 30)]);
    }
}
