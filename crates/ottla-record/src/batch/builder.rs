//! [`BatchBuilder`]: encoding records into an uncompressed batch in place,
//! Kafka's `MemoryRecordsBuilder` for the producer's one case (no codec, no
//! producer id).
//!
//! A record, after the batch header, as Kafka's `DefaultRecord` writes it
//! (`varint` and `varlong` are zig-zag, see [`crate::varint`]; a bytes field
//! is a varint length, -1 for null, then the bytes):
//!
//! ```text
//! length:varint attributes:int8 timestampDelta:varlong offsetDelta:varint
//! keyLength:varint key valueLength:varint value
//! headersCount:varint [headerKeyLength:varint headerKey
//!                      headerValueLength:varint headerValue]...
//! ```
//!
//! Invariants: the first record's timestamp is the batch's base timestamp,
//! and record `n` (from 0) has offset delta `n`, so a finished batch has
//! `lastOffsetDelta = recordsCount - 1`. The header is written only by
//! [`BatchBuilder::finish`], with base offset 0 for the log to stamp. Every
//! way in ([`BatchBuilder::append`], [`BatchBuilder::append_sized`],
//! [`BatchBuilder::append_values`], [`put_record_view`]) writes the same
//! bytes for the same record, which the tests below check; the sizes
//! [`BatchBuilder::size_here`] predicts are the bytes these write.

use super::layout::{
    seal_crc, ATTRIBUTES, BASE_OFFSET, BASE_SEQUENCE, BASE_TIMESTAMP, BATCH_LENGTH, CURRENT_MAGIC,
    HEADER_LEN, LAST_OFFSET_DELTA, LEADER_EPOCH, LOG_OVERHEAD, MAGIC, MAX_TIMESTAMP,
    PRODUCER_EPOCH, PRODUCER_ID, RECORDS_COUNT,
};
use super::records::{HeaderRef, RecordView};
use crate::varint::{
    put_bytes, put_varint, put_varlong, varlong_len, write_varlong, MAX_VARLONG_LEN,
};

/// Room for a key-less record header: length, attributes, timestamp delta,
/// offset delta, null key and value length, at their widest.
const HEADER_TEMPLATE_LEN: usize = 4 * MAX_VARLONG_LEN + 8;

/// Why [`BatchBuilder::append_values`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillStop {
    /// The batch is full: seal it and continue in a new one.
    Full,
    /// The next record alone makes a batch of `size` bytes, over the limit.
    TooLarge { size: usize },
}

/// Builds an uncompressed v2 batch in place, one record at a time, so the
/// producer never materialises a per-record object.
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn with_capacity(capacity: usize) -> BatchBuilder {
        let mut buf = Vec::with_capacity(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Like [`BatchBuilder::with_capacity`], reusing `buf`'s allocation
    /// (the producer recycles the buffers of appended batches, so a large
    /// batch is not a fresh, page-faulting allocation every time).
    pub fn with_buffer(mut buf: Vec<u8>, capacity: usize) -> BatchBuilder {
        buf.clear();
        buf.reserve(capacity.max(HEADER_LEN));
        buf.resize(HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// The builder's buffer, for reuse by [`BatchBuilder::with_buffer`].
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    #[inline]
    pub fn count(&self) -> u32 {
        self.count
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes the batch would take if finished now.
    #[inline]
    pub fn size_in_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes one record takes in a batch, length prefix included.
    pub fn record_size(
        timestamp_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let body = Self::body_size(timestamp_delta, offset_delta, key, value, headers);
        varlong_len(body as i64) + body
    }

    /// The body size of a record with zero timestamp and offset deltas: what
    /// [`BatchBuilder::size_here`] widens for a given batch.
    #[inline]
    pub fn record_body_size(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        Self::body_size(0, 0, key, value, headers)
    }

    /// Bytes a record whose zero-delta body is `body_alone` bytes (see
    /// [`BatchBuilder::record_body_size`]) takes if appended to this batch
    /// now: exact, with its real timestamp and offset deltas, which
    /// [`BatchBuilder::record_size`] with zero deltas can undercount.
    #[inline]
    pub fn size_here(&self, timestamp: i64, body_alone: usize) -> usize {
        let body = if self.count == 0 {
            body_alone
        } else {
            // Each delta field takes one byte when zero.
            body_alone + varlong_len(timestamp.wrapping_sub(self.base_timestamp)) - 1
                + varlong_len(self.count as i64)
                - 1
        };
        varlong_len(body as i64) + body
    }

    #[inline]
    fn body_size(
        timestamp_delta: i64,
        offset_delta: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> usize {
        let bytes_field = |b: Option<&[u8]>| match b {
            None => 1,
            Some(b) => varlong_len(b.len() as i64) + b.len(),
        };
        let mut size = 1
            + varlong_len(timestamp_delta)
            + varlong_len(offset_delta as i64)
            + bytes_field(key)
            + bytes_field(value)
            + varlong_len(headers.len() as i64);
        for (k, v) in headers {
            size += bytes_field(Some(k)) + bytes_field(*v);
        }
        size
    }

    /// Append a record; returns its offset delta within the batch.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
    ) -> u32 {
        let body_alone = Self::record_body_size(key, value, headers);
        self.append_sized(timestamp, key, value, headers, body_alone)
    }

    /// [`BatchBuilder::append`] for a caller that already has the record's
    /// zero-delta body size (`record_body_size`, which the producer computes
    /// for its size checks): the body is widened by the deltas' extra bytes
    /// instead of walking key, value and headers again.
    pub fn append_sized(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[HeaderRef<'_>],
        body_alone: usize,
    ) -> u32 {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        let delta = self.count;
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        // Each delta field takes one byte when zero (see `size_here`).
        let body = body_alone + varlong_len(ts_delta) - 1 + varlong_len(delta as i64) - 1;
        debug_assert_eq!(
            body,
            Self::body_size(ts_delta, delta as i32, key, value, headers)
        );
        let buf = &mut self.buf;
        buf.reserve(body + 5);
        put_varlong(buf, body as i64);
        buf.push(0); // record attributes: unused in v2
        put_varlong(buf, ts_delta);
        put_varint(buf, delta as i32);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i32);
        for (k, v) in headers {
            put_bytes(buf, Some(k));
            put_bytes(buf, *v);
        }
        self.count += 1;
        if timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
        delta
    }

    /// Append key-less, header-less records that all carry `timestamp`, in
    /// one pass (the bulk `send_many` path): the timestamp delta is encoded
    /// once for the call and each record's header is assembled in a stack
    /// buffer, so a record costs two copies into the batch and no per-field
    /// `Vec` bookkeeping. The records are byte for byte what
    /// [`BatchBuilder::append`] would write.
    ///
    /// Stops before a record that would take the batch past `limit` bytes
    /// (an empty batch always takes its first record), after the record that
    /// reaches `limit`, or before a record whose batch of one would exceed
    /// `max_batch_bytes`. Returns how many records went in and why it
    /// stopped, if it did: `Full` also when the last record filled the batch.
    pub fn append_values(
        &mut self,
        timestamp: i64,
        values: &[Option<&[u8]>],
        limit: usize,
        max_batch_bytes: usize,
    ) -> (usize, Option<FillStop>) {
        if values.is_empty() {
            return (0, None);
        }
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        let mut ts_field = [0u8; MAX_VARLONG_LEN];
        let ts_len = write_varlong(&mut ts_field, timestamp.wrapping_sub(self.base_timestamp));
        // A record header is `length, attributes, timestamp delta, offset
        // delta, key (null), value length`; only the offset delta changes
        // from record to record as long as the value length and the offset
        // delta's width stay the same, so the header is kept as a template
        // and rebuilt only when one of those two changes.
        const NO_VALUE: usize = usize::MAX;
        let mut h = [0u8; HEADER_TEMPLATE_LEN];
        let mut h_len = 0; // bytes of the template in use
        let mut delta_at = 0; // where the offset delta goes
        let mut size = 0; // bytes of the whole record
        let mut t_value = NO_VALUE - 1; // value length the template is for
        let mut t_delta_len = 0; // offset-delta width the template is for
        let mut stop = None;
        let mut done = 0;
        // The offset delta's width, re-derived only when the count reaches
        // the next width boundary (zig-zag doubles it: `L` bytes hold
        // counts below 2^(7L - 1)).
        let mut delta_len = 0;
        let mut widen_at = 0u64;
        for v in values {
            let value_len = v.map_or(NO_VALUE, <[u8]>::len);
            if self.count as u64 >= widen_at {
                delta_len = varlong_len(self.count as i64);
                widen_at = 1u64 << (7 * delta_len - 1);
            }
            if value_len != t_value || delta_len != t_delta_len {
                let value_field = match v {
                    None => 1,
                    Some(b) => varlong_len(b.len() as i64) + b.len(),
                };
                // attributes + timestamp delta + offset delta + null key
                // + value + header count (0)
                let body = 1 + ts_len + delta_len + 1 + value_field + 1;
                size = varlong_len(body as i64) + body;
                let mut n = write_varlong(&mut h, body as i64);
                h[n] = 0; // record attributes: unused in v2
                n += 1;
                h[n..n + ts_len].copy_from_slice(&ts_field[..ts_len]);
                n += ts_len;
                delta_at = n;
                n += delta_len;
                h[n] = 1; // key: null
                n += 1;
                n += write_varlong(&mut h[n..], v.map_or(-1, |b| b.len() as i64));
                h_len = n;
                t_value = value_len;
                t_delta_len = delta_len;
                // `size` changes only here, so this is checked for every
                // record that has it.
                if size + HEADER_LEN > max_batch_bytes {
                    stop = Some(FillStop::TooLarge {
                        size: size + HEADER_LEN,
                    });
                    break;
                }
            }
            if self.count > 0 && self.buf.len() + size > limit {
                stop = Some(FillStop::Full);
                break;
            }
            // The offset delta, with the one- and two-byte widths (every
            // batch under 8192 records) written without the varint loop.
            let z = (self.count as u64) << 1;
            match delta_len {
                1 => h[delta_at] = z as u8,
                2 => {
                    h[delta_at] = (z as u8) | 0x80;
                    h[delta_at + 1] = (z >> 7) as u8;
                }
                _ => {
                    write_varlong(&mut h[delta_at..], self.count as i64);
                }
            }
            let at = self.buf.len();
            self.buf.reserve(size + HEADER_TEMPLATE_LEN);
            let value = v.unwrap_or(&[]);
            debug_assert_eq!(h_len + value.len() + 1, size);
            // SAFETY: `reserve` made room for `size + HEADER_TEMPLATE_LEN`
            // bytes past `at`; the whole fixed-size template is copied (a
            // few vector moves, no memcpy call), then the value right after
            // the template's used part, then the header count, so every
            // byte below the new length `at + size` is initialised.
            unsafe {
                let dst = self.buf.as_mut_ptr().add(at);
                std::ptr::copy_nonoverlapping(h.as_ptr(), dst, HEADER_TEMPLATE_LEN);
                std::ptr::copy_nonoverlapping(value.as_ptr(), dst.add(h_len), value.len());
                *dst.add(h_len + value.len()) = 0; // header count
                self.buf.set_len(at + size);
            }
            self.count += 1;
            done += 1;
            if self.buf.len() >= limit {
                stop = Some(FillStop::Full);
                break;
            }
        }
        if done > 0 && timestamp > self.max_timestamp {
            self.max_timestamp = timestamp;
        }
        (done, stop)
    }

    /// Write the header and checksum; the batch is `self.bytes()` until the
    /// next [`BatchBuilder::reset`]. The base offset is left 0 for the log to
    /// stamp on append.
    pub fn finish(&mut self) -> &[u8] {
        let len = self.buf.len();
        let h = &mut self.buf[..HEADER_LEN];
        h[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&0i64.to_be_bytes());
        h[BATCH_LENGTH..BATCH_LENGTH + 4]
            .copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
        h[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&0i32.to_be_bytes());
        h[MAGIC] = CURRENT_MAGIC as u8;
        h[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&0i16.to_be_bytes());
        h[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(self.count.saturating_sub(1) as i32).to_be_bytes());
        h[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        let max_ts = if self.count == 0 {
            self.base_timestamp
        } else {
            self.max_timestamp
        };
        h[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_be_bytes());
        h[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
        h[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_be_bytes());
        h[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
        h[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&(self.count as i32).to_be_bytes());
        seal_crc(&mut self.buf);
        &self.buf
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The finished batch, mutable so the log can stamp its base offset.
    pub fn finish_mut(&mut self) -> &mut [u8] {
        self.finish();
        &mut self.buf
    }

    pub fn reset(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.count = 0;
        self.max_timestamp = i64::MIN;
    }
}

/// Append `record`, decoded from another batch, to the records section `out`
/// with new timestamp and offset deltas: the bytes [`BatchBuilder::append`]
/// writes for it, its headers copied as they were encoded. The log cleaner
/// rewrites the records it keeps with this.
pub fn put_record_view(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i32,
    record: &RecordView<'_>,
) {
    let bytes_field = |b: Option<&[u8]>| match b {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    };
    let header_count = record.header_count as i32;
    let body = 1
        + varlong_len(timestamp_delta)
        + varlong_len(offset_delta as i64)
        + bytes_field(record.key)
        + bytes_field(record.value)
        + varlong_len(header_count as i64)
        + record.headers_raw.len();
    out.reserve(body + MAX_VARLONG_LEN);
    put_varlong(out, body as i64);
    out.push(0); // record attributes: unused in v2
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_bytes(out, record.key);
    put_bytes(out, record.value);
    put_varint(out, header_count);
    out.extend_from_slice(record.headers_raw);
}

#[cfg(test)]
mod tests {
    use super::super::layout::{check_batch, set_base_offset};
    use super::super::records::RecordIter;
    use super::super::test_batch;
    use super::*;

    /// Values whose lengths cross every varint width the encoder meets.
    fn bulk_values() -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        for i in 0..300usize {
            let len = match i % 7 {
                0 => 0,
                1 => 63,
                2 => 64,
                3 => 100,
                4 => 8191,
                5 => 8192,
                _ => i,
            };
            out.push(if i % 11 == 5 {
                None
            } else {
                Some((0..len).map(|b| (b * 31 + i) as u8).collect())
            });
        }
        out
    }

    #[test]
    fn append_values_writes_what_append_writes() {
        let owned = bulk_values();
        let values: Vec<Option<&[u8]>> = owned.iter().map(|v| v.as_deref()).collect();
        // An existing batch with another timestamp: a non-zero delta, and
        // offset deltas that start past the first varint width boundary.
        for (pre, ts) in [(0usize, 1_700_000_000_000i64), (70, 1_700_000_000_123)] {
            let mut a = BatchBuilder::with_capacity(64);
            let mut b = BatchBuilder::with_capacity(64);
            for i in 0..pre {
                a.append(1_700_000_000_000, Some(b"k"), Some(&[i as u8; 3]), &[]);
                b.append(1_700_000_000_000, Some(b"k"), Some(&[i as u8; 3]), &[]);
            }
            for v in &values {
                a.append(ts, None, *v, &[]);
            }
            let (n, stop) = b.append_values(ts, &values, usize::MAX, usize::MAX);
            assert_eq!((n, stop), (values.len(), None));
            assert_eq!(a.count(), b.count());
            assert_eq!(a.finish(), b.finish(), "pre-filled with {pre}");
        }
    }

    /// Past 8192 records the offset delta takes three bytes: the bulk
    /// encoder's width tracking must follow it exactly.
    #[test]
    fn append_values_matches_append_across_offset_delta_widths() {
        let values: Vec<Option<&[u8]>> = (0..9000).map(|i| Some(&b"xy"[..i % 3])).collect();
        let mut a = BatchBuilder::with_capacity(64);
        let mut b = BatchBuilder::with_capacity(64);
        for v in &values {
            a.append(5, None, *v, &[]);
        }
        // In uneven calls, so widths change inside and between calls.
        let mut at = 0;
        for step in [1usize, 62, 1, 8000, 936].iter().cycle() {
            if at == values.len() {
                break;
            }
            let end = (at + step).min(values.len());
            let (n, stop) = b.append_values(5, &values[at..end], usize::MAX, usize::MAX);
            assert_eq!((n, stop), (end - at, None));
            at = end;
        }
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn append_values_stops_at_the_limit_and_at_oversized_records() {
        let v = [7u8; 100];
        let values: Vec<Option<&[u8]>> = vec![Some(&v[..]); 50];
        let size = BatchBuilder::record_size(0, 0, None, Some(&v), &[]);
        // Room for exactly 10 records: stops after the 10th (Full).
        let limit = HEADER_LEN + 10 * size;
        let mut b = BatchBuilder::with_capacity(64);
        assert_eq!(
            b.append_values(5, &values, limit, usize::MAX),
            (10, Some(FillStop::Full))
        );
        assert_eq!(b.size_in_bytes(), limit);
        // Full batch: nothing more goes in.
        assert_eq!(
            b.append_values(5, &values, limit, usize::MAX),
            (0, Some(FillStop::Full))
        );
        // An empty batch always takes its first record, however small the limit.
        let mut b = BatchBuilder::with_capacity(64);
        assert_eq!(
            b.append_values(5, &values, 1, usize::MAX),
            (1, Some(FillStop::Full))
        );
        // A record over the batch size limit stops the run before it.
        let big = [1u8; 1000];
        let mixed: Vec<Option<&[u8]>> = vec![Some(&v[..]), None, Some(&big[..]), Some(&v[..])];
        let mut b = BatchBuilder::with_capacity(64);
        let (n, stop) = b.append_values(5, &mixed, usize::MAX, 500);
        assert_eq!(n, 2);
        let big_size = BatchBuilder::record_size(0, 2, None, Some(&big), &[]) + HEADER_LEN;
        assert_eq!(stop, Some(FillStop::TooLarge { size: big_size }));
        let mut bytes = b.finish().to_vec();
        set_base_offset(&mut bytes, 0);
        let h = check_batch(&bytes).expect("valid batch");
        let recs: Vec<_> = RecordIter::new(h, &bytes[HEADER_LEN..])
            .collect::<Result<_, _>>()
            .expect("records decode");
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].value, Some(&v[..]));
        assert_eq!((recs[1].key, recs[1].value), (None, None));
        assert_eq!(b.append_values(5, &[], 1, 1), (0, None));
    }

    #[test]
    fn a_recycled_buffer_builds_the_same_batch() {
        let mut used = BatchBuilder::with_capacity(64);
        used.append(7, Some(b"old"), Some(&[9u8; 500]), &[(b"h", None)]);
        used.finish();
        let mut fresh = BatchBuilder::with_capacity(64);
        let mut reused = BatchBuilder::with_buffer(used.into_buffer(), 64);
        for b in [&mut fresh, &mut reused] {
            b.append(1000, None, Some(b"v1"), &[]);
            b.append(1001, Some(b"k"), None, &[]);
        }
        assert_eq!(fresh.finish(), reused.finish());
    }

    #[test]
    fn size_here_is_the_exact_encoded_size() {
        let mut b = BatchBuilder::with_capacity(64);
        let v = [3u8; 50];
        for (i, ts) in [1000i64, 1000, 1063, 999, 1_000_000_000, 1000]
            .iter()
            .cycle()
            .take(200)
            .enumerate()
        {
            let body = BatchBuilder::record_body_size(None, Some(&v[..i % 50]), &[]);
            let expect = b.size_here(*ts, body);
            let before = b.size_in_bytes();
            b.append(*ts, None, Some(&v[..i % 50]), &[]);
            assert_eq!(b.size_in_bytes() - before, expect, "record {i}");
        }
    }

    #[test]
    fn record_size_matches_encoding() {
        let mut b = BatchBuilder::with_capacity(64);
        let before = b.size_in_bytes();
        let hs: [HeaderRef<'_>; 1] = [(b"a", Some(b"bcd"))];
        let expect = BatchBuilder::record_size(0, 0, Some(b"key"), Some(&[7u8; 300]), &hs);
        b.append(5, Some(b"key"), Some(&[7u8; 300]), &hs);
        assert_eq!(b.size_in_bytes() - before, expect);
    }

    #[test]
    fn put_record_view_writes_what_append_writes() {
        let mut bytes = test_batch(&[
            (1000, Some(b"k1"), Some(b"value-1")),
            (1005, None, Some(&[9u8; 300])),
            (999, Some(b""), None),
        ]);
        set_base_offset(&mut bytes, 7);
        let h = check_batch(&bytes).expect("valid batch");
        let mut out = Vec::new();
        for r in RecordIter::new(h, &bytes[HEADER_LEN..]) {
            let r = r.expect("record decodes");
            put_record_view(
                &mut out,
                r.timestamp - h.base_timestamp,
                (r.offset - h.base_offset) as i32,
                &r,
            );
        }
        assert!(out[..] == bytes[HEADER_LEN..]);
    }
}
