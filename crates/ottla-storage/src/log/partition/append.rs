//! The append path: stamping offsets on whole batches and writing them at
//! the log end (rolling first when the active segment is full or too old),
//! and how far toward the disk the bytes are pushed (`Durability`, `flush`).
//!
//! Every write holds the process's `writer` mutex and then the
//! cross-process append lock, and works on the head as re-read under that
//! lock: one writer at a time, across processes, writing at the head's
//! `active_size`. Bytes reach the file first (preallocated ahead), index
//! entries next, the head last: a reader in any process, holding no lock,
//! sees a batch only once the head has published it, and then whole. A
//! write that fails is cut off again before the locks are released; bytes a
//! killed writer left past `active_size` are never published, and the next
//! roll or loader cuts them. The head is marked in use (no longer clean)
//! before the first byte changes, durably for an fsync'd append, so the
//! first opener after a crash knows to cut what was not published.

use super::{log_end_offset, now_ms, PartitionLog, SegmentMap};
use crate::error::{Error, IoContext, Result};
use crate::log::head::HeadState;
use crate::log::segment::account_batch;
use ottla_record::batch::{
    set_base_offset, BatchHeader, CURRENT_MAGIC, HEADER_LEN, LEADER_EPOCH, LOG_OVERHEAD,
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

impl PartitionLog {
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
        let lock = self.lock()?;
        let _g = lock.lock_append()?;
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
        let (st_rolled, segs, active, rolled) = self.active_for_append(st, len, &cfg, now)?;
        st = st_rolled;
        let base_offset = log_end_offset(&st);
        // A new epoch's first batch: its cache entry is on disk before the
        // batch is, so the file never lags the log (recovery cuts an entry
        // whose batch never made it; see `epochs`).
        let epoch = self.epoch_for_append_locked(&mut st, base_offset)?;
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
            // The leader stamps its epoch into every batch it appends, as
            // Kafka's does: outside the CRC, like the base offset.
            batches[at + LEADER_EPOCH..at + LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
            let h = BatchHeader {
                base_offset: next,
                leader_epoch: epoch,
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
            // The index entries go through a mapping whose pages are
            // allocated first (`IndexFile::put`): on a full disk that is an
            // error here, before the head publishes anything. The append
            // then fails as a failed write does, cut off whole (`st` is
            // dropped half-updated; entries written past the published
            // counts are no reader's): nothing acknowledged depends on the
            // missing entry, and the next append writes it once space is
            // freed.
            let at = st.active_size;
            let accounted = active
                .indexes_for_append(cfg.segment_index_bytes)
                .and_then(|idx| {
                    let mut idx = idx.write();
                    headers.iter().try_for_each(|(pos, h)| {
                        account_batch(&mut idx, &mut st, *pos, h, cfg.index_interval_bytes)
                    })
                });
            if let Err(e) = accounted {
                let _ = active.truncate(at);
                return Err(e);
            }
        }
        if durability == Durability::Fsync {
            self.sync_locked(&segs, &mut st)?;
        }
        self.head.write(&st);
        let info = AppendInfo {
            base_offset,
            last_offset: log_end_offset(&st) - 1,
            log_start_offset: st.log_start_offset,
        };
        drop(_g);
        drop(_w);
        self.beacon.notify_append();
        if rolled {
            self.enforce_retention()?;
            crate::log::cleaner::clean_on_roll(self);
        }
        Ok(info)
    }

    /// Caller holds the append lock and `st` is fresh.
    pub(super) fn index_nearly_full(
        &self,
        segs: &SegmentMap,
        st: &HeadState,
        max_bytes: u64,
    ) -> Result<bool> {
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
    pub(super) fn sync_locked(&self, segs: &SegmentMap, st: &mut HeadState) -> Result<()> {
        let first = segs
            .map
            .range(..=st.recovery_point)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for (_, seg) in segs.map.range(first..) {
            seg.sync()?;
        }
        self.sync_epochs_locked(st)?;
        st.recovery_point = log_end_offset(st);
        st.flushed_size = st.active_size;
        Ok(())
    }

    /// Flush the log to disk (for `fsync="interval"` and clean close).
    pub fn flush(&self) -> Result<()> {
        let _w = self.writer.lock();
        let lock = self.lock()?;
        let _g = lock.lock_append()?;
        self.check_live()?;
        let mut st = match self.head.read() {
            Some(st) => st,
            None => self.repair_locked()?,
        };
        if st.recovery_point >= log_end_offset(&st)
            && st.flushed_size >= st.active_size
            && st.epochs_dirty == 0
        {
            return Ok(());
        }
        let segs = self.segments_for(&st)?;
        self.sync_locked(&segs, &mut st)?;
        self.head.write(&st);
        self.head.flush().ctx("flush head", &self.dir)?;
        Ok(())
    }
}

/// What `account_batch` does to the head for a batch that gets no index
/// entry (it lies within `index.interval.bytes` of a segment start with no
/// entries): the largest timestamp, the next offset and the size.
pub(super) fn account_unindexed(st: &mut HeadState, pos: u64, h: &BatchHeader) {
    if h.max_timestamp > st.max_timestamp {
        st.max_timestamp = h.max_timestamp;
        st.offset_of_max_timestamp = h.last_offset();
    }
    st.next_offset = h.next_offset();
    st.active_size = pos + h.total_size() as u64;
}
