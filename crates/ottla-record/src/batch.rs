//! Kafka record batch v2 (magic 2): the unit ottla stores, serves and reads.
//!
//! ```text
//! baseOffset:int64 batchLength:int32 partitionLeaderEpoch:int32 magic:int8
//! crc:uint32 attributes:int16 lastOffsetDelta:int32 baseTimestamp:int64
//! maxTimestamp:int64 producerId:int64 producerEpoch:int16 baseSequence:int32
//! recordsCount:int32 records...
//! ```
//!
//! The CRC-32C covers everything from `attributes` to the end, so the log can
//! stamp `baseOffset` and `partitionLeaderEpoch` on append without touching the
//! checksum, which is what lets a batch go from producer to disk to consumer
//! byte for byte.

use super::varint::{
    get_varint, get_varlong, put_varint, put_varlong, varlong_len, write_varlong, MAX_VARLONG_LEN,
};

pub const BASE_OFFSET: usize = 0;
pub const BATCH_LENGTH: usize = 8;
pub const LEADER_EPOCH: usize = 12;
pub const MAGIC: usize = 16;
pub const CRC: usize = 17;
pub const ATTRIBUTES: usize = 21;
pub const LAST_OFFSET_DELTA: usize = 23;
pub const BASE_TIMESTAMP: usize = 27;
pub const MAX_TIMESTAMP: usize = 35;
pub const PRODUCER_ID: usize = 43;
pub const PRODUCER_EPOCH: usize = 51;
pub const BASE_SEQUENCE: usize = 53;
pub const RECORDS_COUNT: usize = 57;
/// Size of the batch header; records start here.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
pub const CURRENT_MAGIC: i8 = 2;

pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
pub const CONTROL_FLAG: i16 = 0x20;

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The fixed-size fields at the front of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parse the header from the front of `buf`; `None` if `buf` is shorter
    /// than a header. No field is validated here: see [`check_batch`].
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET),
            batch_length: be_i32(buf, BATCH_LENGTH),
            leader_epoch: be_i32(buf, LEADER_EPOCH),
            magic: buf[MAGIC] as i8,
            crc: be_i32(buf, CRC) as u32,
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: be_i32(buf, RECORDS_COUNT),
        })
    }

    /// Bytes the whole batch occupies in the log.
    #[inline]
    pub fn total_size(&self) -> usize {
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }
    /// Saturates rather than overflows: a header read without
    /// [`check_batch`] (to step through a segment) may hold any base offset,
    /// and a validated one never comes near the limit.
    #[inline]
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }
    #[inline]
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
    #[inline]
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
    #[inline]
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
    #[inline]
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
    #[inline]
    pub fn log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
}

/// Read only the batch length prefix: the bytes the batch at the front of
/// `buf` occupies, or `None` when fewer than [`LOG_OVERHEAD`] bytes remain.
#[inline]
pub fn peek_total_size(buf: &[u8]) -> Option<i64> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    Some(be_i32(buf, BATCH_LENGTH) as i64 + LOG_OVERHEAD as i64)
}

/// CRC-32C of the checksummed part of a whole batch.
#[inline]
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Validate one whole batch (exactly `batch.len()` bytes): structure, magic
/// and checksum. This is what stands between a torn write and a reader.
pub fn check_batch(batch: &[u8]) -> Result<BatchHeader, String> {
    let h = BatchHeader::parse(batch)
        .ok_or_else(|| format!("batch of {} bytes is shorter than its header", batch.len()))?;
    if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(format!("batch length {} is too small", h.batch_length));
    }
    if h.total_size() != batch.len() {
        return Err(format!(
            "batch length {} does not match the {} bytes present",
            h.total_size(),
            batch.len()
        ));
    }
    if h.magic != CURRENT_MAGIC {
        return Err(format!(
            "unsupported magic {} (only 2 is supported)",
            h.magic
        ));
    }
    let crc = compute_crc(batch);
    if crc != h.crc {
        return Err(format!(
            "CRC-32C mismatch: stored {:#010x}, computed {crc:#010x}",
            h.crc
        ));
    }
    if h.last_offset_delta < 0 || h.records_count < 0 {
        return Err("negative record count".into());
    }
    // The base offset is outside the CRC: a damaged one must not make the
    // offsets of this batch, or the next offset after it, overflow.
    if h.base_offset
        .checked_add(h.last_offset_delta as i64 + 1)
        .is_none()
    {
        return Err(format!(
            "base offset {} with last offset delta {} overflows",
            h.base_offset, h.last_offset_delta
        ));
    }
    Ok(h)
}

/// One record header as stored: a UTF-8 key and an optional value.
pub type HeaderRef<'a> = (&'a [u8], Option<&'a [u8]>);

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
        let crc = compute_crc(&self.buf);
        self.buf[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
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

#[inline]
fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

/// Set the base offset of a finished batch (not covered by the CRC).
#[inline]
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

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

/// Walk whole batches laid back to back (as a log read returns them).
/// Stops at the first incomplete batch.
pub struct Batches<'a> {
    buf: &'a [u8],
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Batches<'a> {
        Batches { buf }
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = (BatchHeader, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let total = peek_total_size(self.buf)?;
        if total < HEADER_LEN as i64 || total as usize > self.buf.len() {
            return None;
        }
        let (batch, rest) = self.buf.split_at(total as usize);
        self.buf = rest;
        Some((BatchHeader::parse(batch)?, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Rec<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

    fn build(records: &[Rec<'_>]) -> Vec<u8> {
        let mut b = BatchBuilder::with_capacity(256);
        for (ts, k, v) in records {
            b.append(*ts, *k, *v, &[(b"h1", Some(b"v1")), (b"h2", None)]);
        }
        b.finish().to_vec()
    }

    #[test]
    fn build_and_decode_round_trip() {
        let mut bytes = build(&[
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
    fn crc_is_kafka_crc32c() {
        // CRC-32C check value from RFC 3720 (iSCSI): "123456789" -> 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn detects_every_single_byte_flip_in_checksummed_part() {
        let bytes = build(&[(1, Some(b"k"), Some(b"v"))]);
        for i in ATTRIBUTES..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(check_batch(&bad).is_err(), "flip at {i} went unnoticed");
        }
        // base offset and leader epoch are outside the CRC on purpose
        let mut moved = bytes.clone();
        set_base_offset(&mut moved, 9);
        assert!(check_batch(&moved).is_ok());
    }

    #[test]
    fn rejects_truncated_batches() {
        let bytes = build(&[(1, Some(b"k"), Some(b"v"))]);
        for n in 0..bytes.len() {
            assert!(check_batch(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let bytes = build(&[(1, Some(b"key"), Some(b"value")), (2, None, None)]);
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
