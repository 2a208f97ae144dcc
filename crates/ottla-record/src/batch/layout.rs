//! The fixed layout of a record batch v2 (magic 2): where each header field
//! sits, the attribute bits, and the checks a batch passes before anything
//! reads its records.
//!
//! ```text
//! offset  field                  type    in the CRC
//!      0  baseOffset             int64   no: stamped by the log on append
//!      8  batchLength            int32   no: bytes after this field
//!     12  partitionLeaderEpoch   int32   no: stamped by the log on append
//!     16  magic                  int8    no
//!     17  crc                    uint32  (the checksum itself)
//!     21  attributes             int16   yes
//!     23  lastOffsetDelta        int32   yes
//!     27  baseTimestamp          int64   yes
//!     35  maxTimestamp           int64   yes
//!     43  producerId             int64   yes
//!     51  producerEpoch          int16   yes
//!     53  baseSequence           int32   yes
//!     57  recordsCount           int32   yes
//!     61  records...                     yes
//! ```
//!
//! Integers are big-endian. `attributes` bits: 0-2 the codec, 3 log-append
//! time, 4 transactional, 5 control, 6 the delete horizon (KIP-534, set by
//! the cleaner).
//!
//! Invariants: the CRC-32C covers `attributes` to the end of the batch, so
//! the log can stamp `baseOffset` and `partitionLeaderEpoch` without touching
//! the checksum, which is what lets a batch go from producer to disk to
//! consumer byte for byte. A header is only trusted after [`check_batch`]:
//! length matching the bytes present, magic 2, the CRC, non-negative counts
//! and offsets that cannot overflow. [`BatchHeader::parse`] alone validates
//! nothing, so stepping through a segment with it must saturate, not
//! overflow.

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
/// Attribute bit 6 (KIP-534): `baseTimestamp` holds the delete horizon,
/// after which the batch's tombstones may be removed. Record timestamps stay
/// `baseTimestamp + delta`, so readers unaware of the flag decode them
/// unchanged.
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

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
    /// The delete horizon (KIP-534) the log cleaner stamped on this batch:
    /// `baseTimestamp` when attribute bit 6 is set. Past it, the cleaner
    /// removes the batch's tombstones, or the batch itself when it is a
    /// transaction marker whose transaction has no records left.
    #[inline]
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_FLAG != 0).then_some(self.base_timestamp)
    }

    /// Write every field into the front of `batch`, the inverse of
    /// [`BatchHeader::parse`]; `crc` is written as it is, so a header for
    /// new records is followed by [`seal_crc`]. Panics if `batch` is shorter
    /// than a header.
    pub fn write(&self, batch: &mut [u8]) {
        let h = &mut batch[..HEADER_LEN];
        h[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&self.base_offset.to_be_bytes());
        h[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&self.batch_length.to_be_bytes());
        h[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&self.leader_epoch.to_be_bytes());
        h[MAGIC] = self.magic as u8;
        h[CRC..CRC + 4].copy_from_slice(&self.crc.to_be_bytes());
        h[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&self.attributes.to_be_bytes());
        h[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        h[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&self.base_timestamp.to_be_bytes());
        h[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&self.max_timestamp.to_be_bytes());
        h[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&self.producer_id.to_be_bytes());
        h[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&self.producer_epoch.to_be_bytes());
        h[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&self.base_sequence.to_be_bytes());
        h[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&self.records_count.to_be_bytes());
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

/// Compute the CRC-32C of a whole batch and store it in its `crc` field:
/// the last step of writing a batch, after every field it covers.
#[inline]
pub fn seal_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
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

/// Set the base offset of a finished batch (not covered by the CRC).
#[inline]
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
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
    use super::super::test_batch;
    use super::*;

    #[test]
    fn crc_is_kafka_crc32c() {
        // CRC-32C check value from RFC 3720 (iSCSI): "123456789" -> 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn detects_every_single_byte_flip_in_checksummed_part() {
        let bytes = test_batch(&[(1, Some(b"k"), Some(b"v"))]);
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
    fn the_delete_horizon_is_the_base_timestamp_under_bit_6() {
        let bytes = test_batch(&[(1, Some(b"k"), None)]);
        let mut h = BatchHeader::parse(&bytes).expect("header");
        assert_eq!(h.delete_horizon(), None);
        h.attributes |= DELETE_HORIZON_FLAG;
        h.base_timestamp = 1_700_000_000_000;
        assert_eq!(h.delete_horizon(), Some(1_700_000_000_000));
    }

    #[test]
    fn rejects_truncated_batches() {
        let bytes = test_batch(&[(1, Some(b"k"), Some(b"v"))]);
        for n in 0..bytes.len() {
            assert!(check_batch(&bytes[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn write_is_the_inverse_of_parse() {
        let h = BatchHeader {
            base_offset: 0x0102_0304_0506_0708,
            batch_length: 0x1112_1314,
            leader_epoch: -2,
            magic: CURRENT_MAGIC,
            crc: 0xdead_beef,
            attributes: TRANSACTIONAL_FLAG | 0x04,
            last_offset_delta: 0x2122_2324,
            base_timestamp: -3,
            max_timestamp: i64::MAX,
            producer_id: 0x3132_3334_3536_3738,
            producer_epoch: 0x4142,
            base_sequence: -1,
            records_count: 0x5152_5354,
        };
        let mut buf = [0u8; HEADER_LEN];
        h.write(&mut buf);
        assert_eq!(BatchHeader::parse(&buf), Some(h));
        // The header a builder writes reads back and writes the same bytes.
        let batch = test_batch(&[(5, Some(b"k"), Some(b"v"))]);
        let parsed = BatchHeader::parse(&batch).expect("header");
        parsed.write(&mut buf);
        assert_eq!(buf[..], batch[..HEADER_LEN]);
    }

    #[test]
    fn seal_crc_makes_a_batch_pass_its_check() {
        let mut batch = test_batch(&[(5, Some(b"k"), Some(b"v"))]);
        batch[RECORDS_COUNT - 1] ^= 1; // a timestamp bit: covered by the CRC
        assert!(check_batch(&batch).is_err());
        seal_crc(&mut batch);
        assert!(check_batch(&batch).is_ok());
    }
}
