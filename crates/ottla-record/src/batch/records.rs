//! Decoding the records of an uncompressed batch without copying them:
//! [`RecordIter`] hands out [`RecordView`]s that borrow key, value and
//! headers from the batch bytes (Kafka's `DefaultRecordBatch` iterator and
//! `DefaultRecord.readFrom`). The record layout is drawn in
//! [`super::builder`].
//!
//! Invariants enforced per record, since the batch CRC proves only that the
//! bytes are the ones written, not that the writer framed them right: the
//! length covers exactly the fields it frames, no field runs past the record
//! nor the record past the batch, header keys are non-null, and the offset
//! delta lies within `0..=lastOffsetDelta`, so no record claims an offset of
//! another batch. The first framing error ends the walk. A record's
//! timestamp is `baseTimestamp + delta`, or the batch's `maxTimestamp` under
//! log-append time.

use super::layout::BatchHeader;
use crate::varint::{get_varint, get_varlong};

/// One record header as stored: a UTF-8 key and an optional value.
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// A decoded record, borrowing from the batch bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: u32,
    /// The encoded headers; walk them with [`RecordView::headers`].
    pub headers_raw: &'a [u8],
}

impl<'a> RecordView<'a> {
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers_raw,
            pos: 0,
            left: self.header_count,
        }
    }
}

pub struct HeaderIter<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = HeaderRef<'a>;
    fn next(&mut self) -> Option<HeaderRef<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Headers were validated when the record was decoded (keys non-null).
        let key = get_bytes(self.buf, &mut self.pos).ok()??;
        let value = get_bytes(self.buf, &mut self.pos).ok()?;
        Some((key, value))
    }
}

#[inline(always)]
fn get_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, &'static str> {
    let len = get_varint(buf, pos).ok_or("bad length varint")?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos.checked_add(len as usize).ok_or("length overflow")?;
    let b = buf.get(*pos..end).ok_or("field runs past the record")?;
    *pos = end;
    Ok(Some(b))
}

/// Iterates the records of one uncompressed batch, validating each record's
/// framing as it goes (the CRC has already been checked by the caller).
pub struct RecordIter<'a> {
    header: BatchHeader,
    buf: &'a [u8],
    pos: usize,
    left: i32,
}

impl<'a> RecordIter<'a> {
    /// `records` is the part of the batch after the header (uncompressed).
    pub fn new(header: BatchHeader, records: &'a [u8]) -> RecordIter<'a> {
        RecordIter {
            header,
            buf: records,
            pos: 0,
            left: header.records_count,
        }
    }

    /// Continue a walk saved with [`RecordIter::state`].
    pub fn resume(header: BatchHeader, records: &'a [u8], state: (usize, i32)) -> RecordIter<'a> {
        RecordIter {
            header,
            buf: records,
            pos: state.0,
            left: state.1,
        }
    }

    /// Where the walk stands: (byte position, records left).
    pub fn state(&self) -> (usize, i32) {
        (self.pos, self.left)
    }

    #[inline(always)]
    fn decode(&mut self) -> Result<RecordView<'a>, &'static str> {
        let len = get_varint(self.buf, &mut self.pos).ok_or("bad record length")?;
        if len < 0 {
            return Err("negative record length");
        }
        let end = self
            .pos
            .checked_add(len as usize)
            .filter(|e| *e <= self.buf.len())
            .ok_or("record runs past the batch")?;
        let rec = &self.buf[..end];
        let mut p = self.pos + 1; // attributes
        let ts_delta = get_varlong(rec, &mut p).ok_or("bad timestamp delta")?;
        let offset_delta = get_varint(rec, &mut p).ok_or("bad offset delta")?;
        let key = get_bytes(rec, &mut p)?;
        let value = get_bytes(rec, &mut p)?;
        let header_count = get_varint(rec, &mut p).ok_or("bad header count")?;
        if header_count < 0 {
            return Err("negative header count");
        }
        let headers_start = p;
        for _ in 0..header_count {
            // Kafka's header keys are non-null strings; reading a null one
            // as "" would hand out a header that was never written.
            get_bytes(rec, &mut p)?.ok_or("null header key")?;
            get_bytes(rec, &mut p)?;
        }
        if p != end {
            return Err("record length does not match its fields");
        }
        // Records of a batch hold offsets base..=base+lastOffsetDelta; any
        // other delta would put a record under another batch's offset.
        if offset_delta < 0 || offset_delta > self.header.last_offset_delta {
            return Err("record offset delta outside its batch");
        }
        let offset = self
            .header
            .base_offset
            .checked_add(offset_delta as i64)
            .ok_or("record offset overflows")?;
        self.pos = end;
        let timestamp = if self.header.log_append_time() {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(ts_delta)
        };
        Ok(RecordView {
            offset,
            timestamp,
            key,
            value,
            header_count: header_count as u32,
            headers_raw: &rec[headers_start..end],
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, &'static str>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 {
            return None;
        }
        self.left -= 1;
        let r = self.decode();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{check_batch, set_base_offset, HEADER_LEN};
    use super::super::test_batch;
    use super::*;

    #[test]
    fn build_and_decode_round_trip() {
        let mut bytes = test_batch(&[
            (1000, Some(b"k1"), Some(b"value-1")),
            (1005, None, Some(b"value-2")),
            (999, Some(b""), None),
        ]);
        set_base_offset(&mut bytes, 42);
        let h = check_batch(&bytes).expect("valid batch");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(h.producer_id, -1);
        let recs: Vec<_> = RecordIter::new(h, &bytes[HEADER_LEN..])
            .collect::<Result<_, _>>()
            .expect("records decode");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].offset, 42);
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[0].value, Some(&b"value-1"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp, 1005);
        assert_eq!(recs[2].key, Some(&b""[..]));
        assert_eq!(recs[2].value, None);
        assert_eq!(recs[2].timestamp, 999);
        let hs: Vec<_> = recs[2].headers().collect();
        assert_eq!(hs, vec![(&b"h1"[..], Some(&b"v1"[..])), (&b"h2"[..], None)]);
    }
    #[test]
    fn malformed_records_are_errors_not_panics() {
        let bytes = test_batch(&[(1, Some(b"key"), Some(b"value")), (2, None, None)]);
        let h = BatchHeader::parse(&bytes).expect("header");
        for i in HEADER_LEN..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                // Must never panic, whatever it returns.
                let _ = RecordIter::new(h, &bad[HEADER_LEN..]).count();
            }
        }
    }
}
