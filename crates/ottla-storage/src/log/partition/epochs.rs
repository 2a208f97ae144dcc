//! Leader epochs of a partition (KIP-101, KIP-320): the epoch the log
//! stamps into every batch it appends, and the partition's
//! [`LeaderEpochCache`] kept in step with the log and across processes.
//!
//! The epoch is the log's, as in Kafka's `UnifiedLog.appendAsLeader`: one
//! broker (or an embedded producer) leading the partition alone writes in
//! [`INITIAL_LEADER_EPOCH`] from the first append on. Replication raises it
//! on each leader change ([`PartitionLog::set_leader_epoch`]).
//!
//! The cache's file is written only under the append lock, before the head
//! publishes anything that depends on it: a new epoch's entry before the
//! first batch of that epoch (so the file is never behind the log it
//! describes), a cut after the log start moved (retention, DeleteRecords),
//! a cut of epochs starting past the end after recovery cut a torn tail.
//! Each replacement is a rename (atomic for every process) and is fsync'd
//! with the log's next flush (`sync_locked`: an fsync'd append, `flush`,
//! the last close), not on its own: the first append to each new partition
//! would otherwise pay two more fsyncs. A power cut before that flush can
//! lose the replacement only with records the flush did not make durable
//! either, and recovery then assigns again the epochs of the batches it
//! re-validates (Kafka's `LogSegment.recover`), or rebuilds a file it
//! cannot read.
//! Each write bumps the head's `epochs_gen`; every process holds the cache
//! in memory with the generation it read it at and reads the file again
//! when the head's has moved. The file is replaced by rename, so a reader
//! taking no lock reads a whole one, and one at least as new as the
//! generation it saw (the file is renamed into place before the head moves).
//!
//! A missing or unreadable file is rebuilt from the log: the epoch in each
//! batch header, from the log start on (a log written before leader epochs
//! has none, -1, and rebuilds empty). An empty cache is not an error: the
//! current epoch then counts as starting at the log end, as a Kafka leader
//! assigns it when elected.

use parking_lot::MutexGuard;

use super::{log_end_offset, PartitionLog};
use crate::error::Result;
use crate::log::head::HeadState;
use crate::log::leader_epoch::{Checkpoint, LeaderEpochCache};

/// The leader epoch of a partition led by one process alone: Kafka's first
/// epoch, that of a partition whose leader was never replaced.
pub const INITIAL_LEADER_EPOCH: i32 = 0;

/// One process's copy of the cache, with the head's `epochs_gen` it is
/// current for (`None`: not read yet).
#[derive(Default)]
pub(crate) struct EpochState {
    gen: u64,
    cache: Option<LeaderEpochCache>,
}

/// The leader epochs of a partition at one moment, with the offsets they
/// are answered against: what OffsetForLeaderEpoch, ListOffsets and Fetch
/// need, read once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderEpochs {
    /// The epoch the log appends in now: this process's, or a later one
    /// another process already appended in.
    pub current: i32,
    /// The cache, starting no lower than the log start, with the current
    /// epoch starting at the log end when no record was written in it yet.
    pub cache: LeaderEpochCache,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

impl LeaderEpochs {
    /// (epoch, end offset) of `requested`: see
    /// [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for(&self, requested: i32) -> (i32, i64) {
        self.cache.end_offset_for(requested, self.log_end_offset)
    }

    /// The epoch the record at `offset` was written in, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.cache.epoch_for_offset(offset)
    }

    /// The epoch of the log's first record, as ListOffsets answers it for
    /// the earliest offset: the first entry's, if it starts at or below the
    /// log start (records written before leader epochs have none).
    pub fn epoch_at_log_start(&self) -> Option<i32> {
        self.cache
            .earliest()
            .filter(|e| e.start_offset <= self.log_start_offset)
            .map(|e| e.epoch)
    }
}

impl PartitionLog {
    /// The epoch this process appends in.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Append in `epoch` from now on (a new leader's). Epochs only move up:
    /// a lower one is ignored. The cache records it at the first batch
    /// appended in it.
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch
            .fetch_max(epoch, std::sync::atomic::Ordering::AcqRel);
    }

    /// The partition's leader epochs now. Takes no lock unless the cache's
    /// file must be rebuilt from the log.
    pub fn leader_epochs(&self) -> Result<LeaderEpochs> {
        let st = self.read_state()?;
        let cached = {
            let g = self.epochs.lock();
            g.cache.clone().filter(|_| g.gen == st.epochs_gen)
        };
        let mut cache = match cached {
            Some(c) => c,
            None => match LeaderEpochCache::read(&self.dir)? {
                Checkpoint::Read(c) => {
                    // Read after `st`: at least as new as its generation.
                    let mut g = self.epochs.lock();
                    *g = EpochState {
                        gen: st.epochs_gen,
                        cache: Some(c.clone()),
                    };
                    c
                }
                Checkpoint::Missing if log_end_offset(&st) == st.log_start_offset => {
                    LeaderEpochCache::new()
                }
                Checkpoint::Missing | Checkpoint::Malformed(_) => {
                    let _w = self.writer.lock();
                    let lock = self.lock()?;
                    let _g = lock.lock_append()?;
                    self.check_live()?;
                    let mut st = match self.head.read() {
                        Some(st) => st,
                        None => self.repair_locked()?,
                    };
                    let g = self.epochs_locked(&mut st)?;
                    g.cache.clone().unwrap_or_default()
                }
            },
        };
        cache.truncate_from_start(st.log_start_offset);
        // The epoch the next append is stamped with (see
        // `epoch_for_append_locked`).
        let own = self.leader_epoch();
        let current = cache.latest().map_or(own, |e| e.epoch.max(own));
        let end = log_end_offset(&st);
        if !cache.latest().is_some_and(|e| e.epoch >= current) {
            cache.assign(current, end);
        }
        Ok(LeaderEpochs {
            current,
            cache,
            log_start_offset: st.log_start_offset,
            log_end_offset: end,
            high_watermark: self.hw_in(&st),
        })
    }

    /// The cache, current with `st` (the head as read under the append
    /// lock, which the caller holds): read again if another process
    /// replaced the file, rebuilt from the log if the file is missing or
    /// unreadable, cut to the log start.
    pub(super) fn epochs_locked(&self, st: &mut HeadState) -> Result<MutexGuard<'_, EpochState>> {
        let mut g = self.epochs.lock();
        if g.cache.is_some() && g.gen == st.epochs_gen {
            return Ok(g);
        }
        let (mut cache, mut dirty) = match LeaderEpochCache::read(&self.dir)? {
            Checkpoint::Read(c) => (c, false),
            Checkpoint::Missing if log_end_offset(st) == st.log_start_offset => {
                (LeaderEpochCache::new(), false)
            }
            Checkpoint::Missing | Checkpoint::Malformed(_) => (self.rebuild_epochs(st)?, true),
        };
        dirty |= cache.truncate_from_start(st.log_start_offset);
        if dirty {
            self.publish_epochs(st, &cache)?;
        }
        *g = EpochState {
            gen: st.epochs_gen,
            cache: Some(cache),
        };
        Ok(g)
    }

    /// Write the cache's file and move the head's generation (published at
    /// once: `st` is otherwise the head as it is). Caller holds the append
    /// lock.
    fn publish_epochs(&self, st: &mut HeadState, cache: &LeaderEpochCache) -> Result<()> {
        cache.write(&self.dir)?;
        st.epochs_gen = st.epochs_gen.wrapping_add(1);
        st.epochs_dirty = 1;
        self.head.write(st);
        Ok(())
    }

    /// The flush path (`sync_locked`): the checkpoint on disk with the
    /// segments, if it was replaced since the last flush. Caller holds the
    /// append lock and publishes `st`.
    pub(super) fn sync_epochs_locked(&self, st: &mut HeadState) -> Result<()> {
        if st.epochs_dirty != 0 {
            LeaderEpochCache::sync(&self.dir)?;
            st.epochs_dirty = 0;
        }
        Ok(())
    }

    /// Recovery (the loader, which runs alone, or a torn head's repair):
    /// the cache made to match the log recovered. Epochs starting at or
    /// past its end are dropped; the batches re-validated from `from_base`
    /// on are assigned again, as Kafka's `LogSegment.recover` does, so an
    /// epoch whose records reached the disk while the file's last
    /// replacement did not (a power cut before the flush that would have
    /// synced both) is recorded again.
    pub(crate) fn recover_epochs_locked(&self, st: &mut HeadState, from_base: i64) -> Result<()> {
        let mut g = self.epochs_locked(st)?;
        let Some(cache) = g.cache.as_ref() else {
            return Ok(());
        };
        let mut next = cache.clone();
        let mut changed = next.truncate_from_end(log_end_offset(st));
        let segs = self.segments_for(st)?;
        for (base, seg) in segs.map.range(from_base..) {
            let limit = if *base == st.active_base {
                st.active_size
            } else {
                seg.closed_size()
            };
            crate::log::segment::for_each_header(seg, limit, |h| {
                if h.last_offset() >= st.log_start_offset {
                    changed |= next.assign(h.leader_epoch, h.base_offset);
                }
            })?;
        }
        changed |= next.truncate_from_start(st.log_start_offset);
        if changed {
            self.publish_epochs(st, &next)?;
            *g = EpochState {
                gen: st.epochs_gen,
                cache: Some(next),
            };
        }
        Ok(())
    }

    /// The append path: the epoch to stamp into batches appended at
    /// `start_offset` (the log end), recorded in the cache (on disk before
    /// the batches are) if it is new. That is this process's epoch, or the
    /// log's latest if another process already appended in a later one: a
    /// log's epochs never go back, whichever process writes (Kafka fences
    /// a stale leader instead; processes sharing a directory all lead it).
    /// Caller holds the append lock; `st` is the head it read.
    pub(super) fn epoch_for_append_locked(
        &self,
        st: &mut HeadState,
        start_offset: i64,
    ) -> Result<i32> {
        let own = self.leader_epoch();
        let mut g = self.epochs_locked(st)?;
        let Some(cache) = g.cache.as_mut() else {
            return Ok(own);
        };
        let latest = cache.latest().map(|e| e.epoch);
        if latest.is_some_and(|e| e >= own) {
            return Ok(latest.unwrap_or(own));
        }
        let mut next = cache.clone();
        if next.assign(own, start_offset) {
            self.publish_epochs(st, &next)?;
            *g = EpochState {
                gen: st.epochs_gen,
                cache: Some(next),
            };
        }
        Ok(own)
    }

    /// A follower's append (`append_as_follower`): a batch in an epoch
    /// above the cache's latest starts an entry at its base offset, on disk
    /// before the batch is. Epochs are the leader's, kept as sent. Caller
    /// holds the append lock; `st` is the head it read.
    pub(super) fn assign_follower_epoch_locked(
        &self,
        st: &mut HeadState,
        epoch: i32,
        base: i64,
    ) -> Result<()> {
        if epoch < 0 {
            return Ok(());
        }
        let mut g = self.epochs_locked(st)?;
        let Some(cache) = g.cache.as_ref() else {
            return Ok(());
        };
        if cache.latest().is_some_and(|e| e.epoch >= epoch) {
            return Ok(());
        }
        let mut next = cache.clone();
        if next.assign(epoch, base) {
            self.publish_epochs(st, &next)?;
            *g = EpochState {
                gen: st.epochs_gen,
                cache: Some(next),
            };
        }
        Ok(())
    }

    /// Cut the cache to the log `st` describes: epochs starting below the
    /// log start clamped to it (after retention or DeleteRecords moved it)
    /// and, with `cut_end`, those starting at or past the log end dropped
    /// (after recovery cut a tail: their records are gone, or were never
    /// published). Caller holds the append lock.
    pub(crate) fn truncate_epochs_locked(&self, st: &mut HeadState, cut_end: bool) -> Result<()> {
        let mut g = self.epochs_locked(st)?;
        let Some(cache) = g.cache.as_ref() else {
            return Ok(());
        };
        let mut next = cache.clone();
        let cut_end = cut_end && next.truncate_from_end(log_end_offset(st));
        let cut_start = next.truncate_from_start(st.log_start_offset);
        if cut_end || cut_start {
            self.publish_epochs(st, &next)?;
            *g = EpochState {
                gen: st.epochs_gen,
                cache: Some(next),
            };
        }
        Ok(())
    }

    /// The cache as the log's batch headers give it, from the log start
    /// on. Caller holds the append lock.
    fn rebuild_epochs(&self, st: &HeadState) -> Result<LeaderEpochCache> {
        let mut cache = LeaderEpochCache::new();
        let segs = self.segments_for(st)?;
        for (base, seg) in &segs.map {
            let limit = if *base == st.active_base {
                st.active_size
            } else {
                seg.closed_size()
            };
            crate::log::segment::for_each_header(seg, limit, |h| {
                if h.last_offset() >= st.log_start_offset {
                    cache.assign(h.leader_epoch, h.base_offset);
                }
            })?;
        }
        cache.truncate_from_start(st.log_start_offset);
        Ok(cache)
    }
}
