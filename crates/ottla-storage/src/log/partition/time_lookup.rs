//! Offsets by time (Kafka's `ListOffsets` by timestamp): the first record
//! at or after a timestamp, found through each segment's time index and a
//! scan of the batches from the entry it gives.
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
}
