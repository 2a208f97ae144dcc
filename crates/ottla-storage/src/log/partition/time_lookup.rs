//! Offsets by time (Kafka's `ListOffsets` by timestamp): the first record
//! at or after a timestamp, found through each segment's time index and a
//! scan of the batches from the entry it gives; and the record with the
//! largest timestamp (KIP-734's max-timestamp query).
//!
//! Takes no lock, like a read: it works from one head snapshot and the
//! segments listed for it, reads the active segment only below the
//! snapshot's `active_size`, and answers only with offsets at or above its
//! log start.

use super::PartitionLog;
use crate::error::{Error, Result};
use ottla_record::batch::check_batch;

impl PartitionLog {
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

    /// The record with the largest timestamp in the partition, as
    /// (offset, timestamp); `None` for a partition without records.
    ///
    /// Kafka's answer (`UnifiedLog.fetchOffsetByTimestamp`, MAX_TIMESTAMP):
    /// the first segment holding the largest timestamp (each segment knows
    /// its own: the head for the active one, the last time index entry for
    /// a closed one), in it the first batch whose largest timestamp that
    /// is, and in that batch the first record carrying it. Ties go to the
    /// earliest offset throughout. A cleaned segment keeps the largest
    /// timestamp of what it held; if the cleaner removed that record the
    /// answer is `None`, as Kafka's is.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>> {
        let st = self.read_state()?;
        let segs = self.segments_for(&st)?;
        // (timestamp, the last offset of the batch that first reached it,
        // base of its segment)
        let mut best: Option<(i64, i64, i64)> = None;
        for (base, seg) in &segs.map {
            let found = if *base == st.active_base {
                (st.active_size > 0 && st.offset_of_max_timestamp >= 0)
                    .then_some((st.max_timestamp, st.offset_of_max_timestamp))
            } else {
                let idx = seg.indexes()?.read();
                idx.time.last(idx.time.closed_entries())
            };
            if let Some((ts, offset)) = found {
                let better = match best {
                    Some((b, _, _)) => ts > b,
                    None => true,
                };
                if better && offset >= st.log_start_offset {
                    best = Some((ts, offset, *base));
                }
            }
        }
        let Some((target, offset, base)) = best else {
            return Ok(None);
        };
        let Some(seg) = segs.map.get(&base) else {
            return Ok(None);
        };
        let (limit, entries) = if base == st.active_base {
            (st.active_size, st.index_entries)
        } else {
            (
                seg.closed_size(),
                seg.indexes()?.read().offset.closed_entries(),
            )
        };
        // From the batch the head or the index names; a scan from the
        // segment's start if the index cannot place it.
        let Some((mut pos, _)) = seg.find_position(offset, entries, limit)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        while let Some(h) = seg.header_at(pos, limit)? {
            if h.max_timestamp == target && h.last_offset() >= st.log_start_offset {
                buf.resize(h.total_size(), 0);
                seg.read_at(pos, &mut buf)?;
                let h = check_batch(&buf).map_err(|r| Error::corrupt(seg.path(), pos, r))?;
                for rec in ottla_record::decode::records(&h, &buf)?.iter() {
                    let rec = rec.map_err(|r| Error::corrupt(seg.path(), pos, r))?;
                    if rec.timestamp == target && rec.offset >= st.log_start_offset {
                        return Ok(Some((rec.offset, rec.timestamp)));
                    }
                }
                return Ok(None);
            }
            pos += h.total_size() as u64;
        }
        Ok(None)
    }
}
