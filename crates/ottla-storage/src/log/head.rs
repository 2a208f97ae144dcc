//! The partition head: a small memory-mapped file (`partition.head`) that
//! holds the state every process appending to or reading from one partition
//! must agree on.
//!
//! Invariants (enforced by [`PartitionLog`](super::PartitionLog)):
//! * Only the holder of the append lock writes the head, and only after the
//!   bytes and index entries it describes are in the files. So a reader that
//!   sees `active_size = n` can read the first `n` bytes of the active segment
//!   and find whole, checksummed batches; and a writer killed before it
//!   updates the head has appended nothing anyone will read.
//! * Updates go through a seqlock (`seq` odd while writing). A seq that stays
//!   odd means the writer died mid-update; the next lock holder repairs the
//!   head from the files.
//! * `boot_id` is the kernel boot the head was last written in. A head from
//!   this boot survived any process crash intact in the page cache and is
//!   trusted; one from an earlier boot may predate a power loss, so the log is
//!   re-validated from `recovery_point`.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::error::{IoContext, Result};

const MAGIC: u64 = u64::from_be_bytes(*b"OTTLAHD1");
pub const HEAD_FILE_SIZE: u64 = 4096;

// Field slots, 8 bytes each.
const F_MAGIC: usize = 0;
const F_SEQ: usize = 1;
const F_NEXT_OFFSET: usize = 2;
const F_ACTIVE_BASE: usize = 3;
const F_ACTIVE_SIZE: usize = 4;
const F_INDEX_ENTRIES: usize = 5;
const F_TIME_ENTRIES: usize = 6;
const F_MAX_TS: usize = 7;
const F_OFFSET_OF_MAX_TS: usize = 8;
const F_LOG_START: usize = 9;
const F_SEGMENTS_GEN: usize = 10;
const F_RECOVERY_POINT: usize = 11;
const F_CLEAN: usize = 12;
const F_DELETED: usize = 13;
const F_ACTIVE_CREATED_MS: usize = 14;
const F_BOOT_ID: usize = 15;
const F_FLUSHED_SIZE: usize = 16;
/// 1 once the head's "in use" mark (`F_CLEAN` = 0) is known to be on disk
/// (msync'd); see [`Head::mark_in_use_durably`].
const F_IN_USE_SYNCED: usize = 17;
const F_EPOCHS_GEN: usize = 18;
const F_EPOCHS_DIRTY: usize = 19;
const NUM_FIELDS: usize = 20;

/// A consistent copy of the head's fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadState {
    pub next_offset: i64,
    pub active_base: i64,
    pub active_size: u64,
    pub index_entries: u64,
    pub time_entries: u64,
    /// Largest timestamp in the active segment (i64::MIN if empty).
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    pub log_start_offset: i64,
    /// Bumped whenever the set of segments changes (roll, delete, recovery).
    pub segments_gen: u64,
    /// Every offset below this is known to be on stable storage.
    pub recovery_point: i64,
    pub active_created_ms: i64,
    /// Bytes of the active segment known to be fsync'd.
    pub flushed_size: u64,
    /// Bumped whenever `leader-epoch-checkpoint` is replaced: each process
    /// keeps the leader-epoch cache in memory and reads the file again
    /// when this moves (see `log::partition::epochs`). Heads written before
    /// leader epochs hold 0 here.
    pub epochs_gen: u64,
    /// 1 while `leader-epoch-checkpoint` was replaced without an fsync:
    /// the next flush of the log (`sync_locked`) fsyncs it with the
    /// segments, so it is on disk no later than the records it describes.
    pub epochs_dirty: u64,
}

pub struct Head {
    map: MmapMut,
}

/// How the head looked when a process opened it.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadCondition {
    /// No valid head: new partition or unreadable file.
    Missing,
    /// The last process closed the log cleanly.
    Clean,
    /// A process crashed in this boot; the head is intact.
    CrashedThisBoot,
    /// A writer died between the two halves of a head update.
    TornUpdate,
    /// Last written in an earlier boot without a clean close.
    EarlierBoot,
}

impl Head {
    pub fn open(path: &Path) -> Result<Head> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx("open head", path)?;
        let len = file.metadata().ctx("stat head", path)?.len();
        if len < HEAD_FILE_SIZE {
            file.set_len(HEAD_FILE_SIZE).ctx("size head", path)?;
        }
        // Every store to the head goes through the mapping: its page must
        // have its blocks before the first one, or a full disk is SIGBUS at
        // that store instead of an error here. Already allocated (any head
        // written before), this needs no space. A filesystem without
        // `fallocate` is left as it was: the page is allocated by the first
        // store, as before.
        if let Err(e) = crate::log::index_file::fallocate_keep_size(&file, 0, HEAD_FILE_SIZE) {
            if !crate::log::index_file::is_unsupported(&e) {
                return Err(crate::Error::io("allocate head", path, e));
            }
        }
        // SAFETY: the head is only accessed through atomics (see `slot`), so
        // concurrent writes by other processes are not undefined behaviour.
        // The length is given so the map needs no second stat of the file.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(HEAD_FILE_SIZE as usize)
                .map_mut(&file)
        }
        .ctx("mmap head", path)?;
        Ok(Head { map })
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < NUM_FIELDS);
        // SAFETY: the map is page-aligned and HEAD_FILE_SIZE long, so slot i
        // is in bounds and 8-byte aligned; AtomicU64 has u64's layout.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const AtomicU64) }
    }

    #[inline]
    fn get(&self, i: usize) -> u64 {
        self.slot(i).load(Ordering::Relaxed)
    }

    pub fn condition(&self) -> HeadCondition {
        if self.get(F_MAGIC) != MAGIC {
            return HeadCondition::Missing;
        }
        if self.slot(F_SEQ).load(Ordering::Acquire) & 1 == 1 {
            return HeadCondition::TornUpdate;
        }
        if self.get(F_CLEAN) == 1 {
            return HeadCondition::Clean;
        }
        if self.get(F_BOOT_ID) == boot_id() {
            HeadCondition::CrashedThisBoot
        } else {
            HeadCondition::EarlierBoot
        }
    }

    pub fn is_valid(&self) -> bool {
        self.get(F_MAGIC) == MAGIC
    }

    /// Read a consistent snapshot; `None` if a writer seems to have died
    /// mid-update (the seq stayed odd), which the caller repairs under the
    /// append lock.
    pub fn read(&self) -> Option<HeadState> {
        for spin in 0..20_000u32 {
            let s1 = self.slot(F_SEQ).load(Ordering::Acquire);
            if s1 & 1 == 1 {
                if spin > 100 {
                    std::thread::yield_now();
                }
                continue;
            }
            let st = self.read_fields();
            fence(Ordering::Acquire);
            if self.slot(F_SEQ).load(Ordering::Relaxed) == s1 {
                return Some(st);
            }
        }
        None
    }

    /// Read without the seqlock, for the append-lock holder (the only writer).
    pub fn read_locked(&self) -> HeadState {
        self.read_fields()
    }

    fn read_fields(&self) -> HeadState {
        HeadState {
            next_offset: self.get(F_NEXT_OFFSET) as i64,
            active_base: self.get(F_ACTIVE_BASE) as i64,
            active_size: self.get(F_ACTIVE_SIZE),
            index_entries: self.get(F_INDEX_ENTRIES),
            time_entries: self.get(F_TIME_ENTRIES),
            max_timestamp: self.get(F_MAX_TS) as i64,
            offset_of_max_timestamp: self.get(F_OFFSET_OF_MAX_TS) as i64,
            log_start_offset: self.get(F_LOG_START) as i64,
            segments_gen: self.get(F_SEGMENTS_GEN),
            recovery_point: self.get(F_RECOVERY_POINT) as i64,
            active_created_ms: self.get(F_ACTIVE_CREATED_MS) as i64,
            flushed_size: self.get(F_FLUSHED_SIZE),
            epochs_gen: self.get(F_EPOCHS_GEN),
            epochs_dirty: self.get(F_EPOCHS_DIRTY),
        }
    }

    /// Publish a new state. Caller holds the append lock.
    pub fn write(&self, st: &HeadState) {
        // A clean head promises that everything it describes is on disk and
        // nothing else in the files matters; any change ends that promise
        // first (callers that change files before publishing mark it
        // themselves, earlier: see `PartitionLog::append`).
        self.mark_in_use();
        let seq = self.slot(F_SEQ);
        let s = seq.load(Ordering::Relaxed);
        // Leave an odd seq: readers retry, and a crash here is detectable.
        // The counter wraps (a damaged head may hold any value); wrapping
        // keeps parity because 2^64 is even.
        let s = if s & 1 == 1 { s.wrapping_add(1) } else { s };
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        let set = |i: usize, v: u64| self.slot(i).store(v, Ordering::Relaxed);
        set(F_NEXT_OFFSET, st.next_offset as u64);
        set(F_ACTIVE_BASE, st.active_base as u64);
        set(F_ACTIVE_SIZE, st.active_size);
        set(F_INDEX_ENTRIES, st.index_entries);
        set(F_TIME_ENTRIES, st.time_entries);
        set(F_MAX_TS, st.max_timestamp as u64);
        set(F_OFFSET_OF_MAX_TS, st.offset_of_max_timestamp as u64);
        set(F_LOG_START, st.log_start_offset as u64);
        set(F_SEGMENTS_GEN, st.segments_gen);
        set(F_RECOVERY_POINT, st.recovery_point as u64);
        set(F_ACTIVE_CREATED_MS, st.active_created_ms as u64);
        set(F_FLUSHED_SIZE, st.flushed_size);
        set(F_EPOCHS_GEN, st.epochs_gen);
        set(F_EPOCHS_DIRTY, st.epochs_dirty);
        seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Stamp magic and boot id after recovery or creation.
    pub fn init(&self, st: &HeadState) {
        self.set_clean(false);
        self.write(st);
        self.slot(F_BOOT_ID).store(boot_id(), Ordering::Relaxed);
        self.slot(F_MAGIC).store(MAGIC, Ordering::Release);
    }

    pub fn set_clean(&self, clean: bool) {
        if !clean {
            self.slot(F_BOOT_ID).store(boot_id(), Ordering::Relaxed);
        }
        self.slot(F_IN_USE_SYNCED).store(0, Ordering::Relaxed);
        self.slot(F_CLEAN).store(clean as u64, Ordering::Release);
    }

    pub fn is_clean(&self) -> bool {
        self.slot(F_CLEAN).load(Ordering::Acquire) == 1
    }

    /// Take the clean mark back before the first change to the log (its
    /// files or the head). Opening a partition leaves a clean head clean, so
    /// a process that only reads writes nothing to the head (no page fault
    /// on it, nothing to recover if it dies). Caller holds the append lock.
    /// Returns whether the mark changed.
    #[inline]
    pub fn mark_in_use(&self) -> bool {
        if self.get(F_CLEAN) == 0 {
            return false;
        }
        self.set_clean(false);
        true
    }

    /// Make sure the disk holds a head that is not marked clean, before a
    /// durable append is acknowledged. Otherwise a power loss could leave
    /// the disk with the previous clean head (the head is a mapped page the
    /// kernel writes back whenever it likes, while the segment was
    /// fsync'd), and the next boot would trust it and miss the fsync'd
    /// records after it. One msync per clean-to-in-use change. Caller holds
    /// the append lock.
    pub fn mark_in_use_durably(&self) -> std::io::Result<()> {
        self.mark_in_use();
        if self.get(F_IN_USE_SYNCED) == 1 {
            return Ok(());
        }
        self.map.flush_range(0, NUM_FIELDS * 8)?;
        self.slot(F_IN_USE_SYNCED).store(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn is_deleted(&self) -> bool {
        self.slot(F_DELETED).load(Ordering::Acquire) != 0
    }

    pub fn mark_deleted(&self) {
        self.slot(F_DELETED).store(1, Ordering::Release);
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}

/// A 64-bit digest of the kernel's boot id, read once per process.
pub fn boot_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let raw = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        // FNV-1a: any stable digest works; 0 means "unknown boot" and never
        // matches, which only costs a full recovery.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in raw.trim().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        if raw.trim().is_empty() {
            0
        } else {
            h | 1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_conditions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("partition.head");
        let h = Head::open(&p).expect("open");
        assert_eq!(h.condition(), HeadCondition::Missing);
        let st = HeadState {
            next_offset: 10,
            active_size: 1234,
            max_timestamp: -5,
            ..Default::default()
        };
        h.init(&st);
        assert_eq!(h.read(), Some(st));
        assert_eq!(h.condition(), HeadCondition::CrashedThisBoot);
        h.set_clean(true);
        let h2 = Head::open(&p).expect("reopen");
        assert_eq!(h2.condition(), HeadCondition::Clean);
        assert_eq!(h2.read(), Some(st));
    }

    #[test]
    fn torn_update_is_detected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Head::open(&dir.path().join("partition.head")).expect("open");
        h.init(&HeadState::default());
        h.slot(F_SEQ).fetch_add(1, Ordering::SeqCst);
        assert_eq!(h.condition(), HeadCondition::TornUpdate);
        assert_eq!(h.read(), None);
        h.write(&HeadState::default());
        assert!(h.read().is_some());
    }
}
