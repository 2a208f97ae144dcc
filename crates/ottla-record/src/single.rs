//! A record batch of one record whose value is not copied: the batch is the
//! bytes before the value (batch header and record prefix, built here), the
//! caller's value, and the bytes after it (the record headers). The log
//! writes the three parts with one `pwritev`, so a large value goes from the
//! caller's buffer to the page cache in a single copy, the kernel's.
//!
//! The bytes are exactly those of a [`BatchBuilder`]
//! batch holding the same one record (tested below), CRC-32C included: it is
//! computed over the parts in order with `crc32c_append`.

use super::batch::{
    HeaderRef, ATTRIBUTES, BASE_SEQUENCE, BASE_TIMESTAMP, BATCH_LENGTH, CRC, CURRENT_MAGIC,
    HEADER_LEN, LAST_OFFSET_DELTA, LEADER_EPOCH, LOG_OVERHEAD, MAGIC, MAX_TIMESTAMP,
    PRODUCER_EPOCH, PRODUCER_ID, RECORDS_COUNT,
};
use super::varint::{put_bytes, put_varint, put_varlong};
use super::BatchBuilder;

pub struct SingleRecordBatch<'a> {
    /// Batch header, then the record up to and including the value's length.
    prefix: Vec<u8>,
    value: &'a [u8],
    /// The record's header count and headers.
    suffix: Vec<u8>,
}

impl<'a> SingleRecordBatch<'a> {
    /// The batch of one record with timestamp `timestamp` (also the batch's
    /// base and max timestamp), base offset 0 for the log to stamp.
    pub fn new(
        timestamp: i64,
        key: Option<&[u8]>,
        value: &'a [u8],
        headers: &[HeaderRef<'_>],
    ) -> SingleRecordBatch<'a> {
        let mut batch = SingleRecordBatch::new_inner(timestamp, key, value, headers);
        batch.seal();
        batch
    }

    fn new_inner(
        timestamp: i64,
        key: Option<&[u8]>,
        value: &'a [u8],
        headers: &[HeaderRef<'_>],
    ) -> SingleRecordBatch<'a> {
        let body = BatchBuilder::record_body_size(key, Some(value), headers);
        let mut prefix = Vec::with_capacity(HEADER_LEN + 32 + key.map_or(0, <[u8]>::len));
        prefix.resize(HEADER_LEN, 0);
        put_varlong(&mut prefix, body as i64);
        prefix.push(0); // record attributes: unused in v2
        put_varlong(&mut prefix, 0); // timestamp delta
        put_varint(&mut prefix, 0); // offset delta
        put_bytes(&mut prefix, key);
        put_varlong(&mut prefix, value.len() as i64);
        let mut suffix = Vec::new();
        put_varint(&mut suffix, headers.len() as i32);
        for (k, v) in headers {
            put_bytes(&mut suffix, Some(k));
            put_bytes(&mut suffix, *v);
        }
        let total = prefix.len() + value.len() + suffix.len();
        let h = &mut prefix[..HEADER_LEN];
        // Base offset (0) and leader epoch (0) are already zero.
        h[BATCH_LENGTH..BATCH_LENGTH + 4]
            .copy_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
        h[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&0i32.to_be_bytes());
        h[MAGIC] = CURRENT_MAGIC as u8;
        h[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&0i16.to_be_bytes());
        h[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&0i32.to_be_bytes());
        h[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
        h[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
        h[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
        h[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_be_bytes());
        h[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
        h[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&1i32.to_be_bytes());
        SingleRecordBatch {
            prefix,
            value,
            suffix,
        }
    }

    /// The batch without its CRC-32C yet (the field is 0): the log can
    /// write the value first and checksum it while the disk writes it back,
    /// then [`SingleRecordBatch::seal_first_part`] the header.
    pub fn new_unsealed(
        timestamp: i64,
        key: Option<&[u8]>,
        value: &'a [u8],
        headers: &[HeaderRef<'_>],
    ) -> SingleRecordBatch<'a> {
        let mut batch = SingleRecordBatch::new_inner(timestamp, key, value, headers);
        batch.prefix[CRC..CRC + 4].fill(0);
        batch
    }

    fn seal(&mut self) {
        let crc = checksum(&self.prefix, self.value, &self.suffix);
        self.prefix[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// Write the CRC-32C into `first`, the first part of a batch whose other
    /// parts are `rest` (as [`SingleRecordBatch::parts_mut`] gives them).
    pub fn seal_first_part(first: &mut [u8], rest: &[&[u8]]) {
        let mut crc = crc32c::crc32c(&first[ATTRIBUTES..]);
        for r in rest {
            crc = crc32c::crc32c_append(crc, r);
        }
        first[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// Bytes of the whole batch.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.value.len() + self.suffix.len()
    }

    /// Never empty (a batch has its header); for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The batch as (its first part, which holds the whole batch header and
    /// is mutable so the log can stamp the base offset; the rest, in order).
    pub fn parts_mut(&mut self) -> (&mut [u8], [&[u8]; 2]) {
        (&mut self.prefix, [self.value, &self.suffix])
    }
}

fn checksum(prefix: &[u8], value: &[u8], suffix: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&prefix[ATTRIBUTES..]);
    let crc = crc32c::crc32c_append(crc, value);
    crc32c::crc32c_append(crc, suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::check_batch;

    fn joined(b: &mut SingleRecordBatch<'_>) -> Vec<u8> {
        let (first, rest) = b.parts_mut();
        let mut out = first.to_vec();
        for r in rest {
            out.extend_from_slice(r);
        }
        out
    }

    #[test]
    fn bytes_match_the_batch_builder() {
        let big = vec![0x5Au8; 300_000];
        let values: [&[u8]; 4] = [b"", b"v", &big[..200], &big];
        let keys: [Option<&[u8]>; 3] = [None, Some(b""), Some(b"a key")];
        let hv: &[u8] = b"hv";
        let header_sets: [&[HeaderRef<'_>]; 3] = [
            &[],
            &[(b"h1", Some(hv))],
            &[(b"h1", None), (b"h2", Some(&big[..1000]))],
        ];
        for ts in [0i64, 1_700_000_000_123, -1] {
            for v in values {
                for k in keys {
                    for hs in header_sets {
                        let mut expected = BatchBuilder::with_capacity(v.len() + 200);
                        expected.append(ts, k, Some(v), hs);
                        let expected = expected.finish().to_vec();
                        let mut single = SingleRecordBatch::new(ts, k, v, hs);
                        assert_eq!(single.len(), expected.len());
                        let got = joined(&mut single);
                        assert!(got == expected, "ts {ts} value {} key {k:?}", v.len());
                        let h = check_batch(&got).expect("valid batch");
                        assert_eq!(h.records_count, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn sealing_later_gives_the_same_bytes() {
        let value = vec![7u8; 100_000];
        let hs: &[HeaderRef<'_>] = &[(b"h", None)];
        let mut sealed = SingleRecordBatch::new(9, Some(b"k"), &value, hs);
        let mut later = SingleRecordBatch::new_unsealed(9, Some(b"k"), &value, hs);
        assert_ne!(joined(&mut later), joined(&mut sealed));
        let (first, rest) = later.parts_mut();
        SingleRecordBatch::seal_first_part(first, &rest);
        assert!(joined(&mut later) == joined(&mut sealed));
    }

    #[test]
    fn first_part_holds_the_whole_header() {
        let mut b = SingleRecordBatch::new(5, None, &[1, 2, 3], &[]);
        let (first, rest) = b.parts_mut();
        assert!(first.len() > HEADER_LEN);
        assert_eq!(rest[0], &[1, 2, 3]);
    }
}
