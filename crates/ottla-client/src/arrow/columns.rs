//! [`RecordColumns`]: records appended to Arrow-layout columns as the
//! consumer walks them.

use std::sync::Arc;

use crate::consumer::TopicPartition;
use ottla_record::RecordView;

/// Largest byte length an `int32`-offset binary column can hold.
const MAX_BINARY_BYTES: usize = i32::MAX as usize;

/// Most rows [`RecordColumns::reserve_like_so_far`] reserves at once.
const MAX_RESERVE_ROWS: usize = 1 << 22;

/// A validity bitmap, created at the first null (a column without nulls
/// exports none). Bit `i` set = row `i` is valid, least significant bit first.
#[derive(Default)]
pub struct Validity {
    pub bits: Option<Vec<u8>>,
    pub null_count: usize,
}

impl Validity {
    #[inline]
    fn push(&mut self, row: usize, valid: bool) {
        if valid && self.bits.is_none() {
            return;
        }
        let bits = self.bits.get_or_insert_with(|| {
            // Every earlier row was valid.
            let mut b = vec![0xFFu8; row.div_ceil(8)];
            b.reserve(64);
            b
        });
        if row % 8 == 0 && bits.len() <= row / 8 {
            bits.push(0);
        }
        let mask = 1u8 << (row % 8);
        if valid {
            bits[row / 8] |= mask;
        } else {
            bits[row / 8] &= !mask;
            self.null_count += 1;
        }
    }
}

/// A `binary` or `utf8` column: validity, `len + 1` offsets, one data buffer.
pub struct BinaryColumn {
    pub validity: Validity,
    pub offsets: Vec<i32>,
    pub data: Vec<u8>,
}

impl BinaryColumn {
    fn with_capacity(rows: usize, bytes: usize) -> BinaryColumn {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        BinaryColumn {
            validity: Validity::default(),
            offsets,
            data: Vec::with_capacity(bytes),
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `extra` more bytes keep every offset within `int32`.
    #[inline]
    fn has_room(&self, extra: usize) -> bool {
        self.data.len() + extra <= MAX_BINARY_BYTES
    }

    /// Append a value (`None` is a null). The caller checked [`Self::has_room`].
    #[inline]
    fn push(&mut self, value: Option<&[u8]>) {
        let row = self.len();
        match value {
            Some(v) => {
                self.data.extend_from_slice(v);
                self.validity.push(row, true);
            }
            None => self.validity.push(row, false),
        }
        self.offsets.push(self.data.len() as i32);
    }

    /// The byte slice of row `i` (`None` if null).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        if let Some(bits) = &self.validity.bits {
            if bits[i / 8] & (1 << (i % 8)) == 0 {
                return None;
            }
        }
        Some(&self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }
}

/// Records in Kafka's shape, as Arrow columns:
///
/// | column | Arrow type |
/// |---|---|
/// | `topic` | `dictionary<int32, utf8>` |
/// | `partition` | `int32` |
/// | `offset` | `int64` |
/// | `timestamp` | `timestamp[ms, UTC]` |
/// | `key`, `value` | `binary`, nullable |
/// | `headers` | `list<struct<key: utf8, value: binary (nullable)>>`, empty when none |
///
/// Invariant: every column has [`RecordColumns::len`] rows, and every
/// offset fits in `int32` ([`RecordColumns::fits`] is asked before a push).
pub struct RecordColumns {
    /// The topic dictionary, in order of first appearance.
    pub topics: Vec<Arc<str>>,
    /// The last topic seen and its dictionary index: records come in runs.
    last_topic: Option<(Arc<str>, i32)>,
    pub topic: Vec<i32>,
    pub partition: Vec<i32>,
    pub offset: Vec<i64>,
    pub timestamp: Vec<i64>,
    pub key: BinaryColumn,
    pub value: BinaryColumn,
    /// `len + 1` offsets into the header entries.
    pub headers: Vec<i32>,
    pub header_key: BinaryColumn,
    pub header_value: BinaryColumn,
    /// Key, value and encoded header bytes taken so far (what `max_bytes` bounds).
    payload: usize,
}

/// The bytes of a record that count against a byte budget: its key, value
/// and (encoded) headers.
#[inline]
pub fn payload_size(rec: &RecordView<'_>) -> usize {
    rec.key.map_or(0, <[u8]>::len) + rec.value.map_or(0, <[u8]>::len) + rec.headers_raw.len()
}

impl RecordColumns {
    /// Columns with room for `rows` records of about `row_bytes` payload each.
    pub fn with_capacity(rows: usize, row_bytes: usize) -> RecordColumns {
        let mut headers = Vec::with_capacity(rows + 1);
        headers.push(0);
        RecordColumns {
            topics: Vec::new(),
            last_topic: None,
            topic: Vec::with_capacity(rows),
            partition: Vec::with_capacity(rows),
            offset: Vec::with_capacity(rows),
            timestamp: Vec::with_capacity(rows),
            key: BinaryColumn::with_capacity(rows, 0),
            value: BinaryColumn::with_capacity(rows, rows.saturating_mul(row_bytes)),
            headers,
            header_key: BinaryColumn::with_capacity(0, 0),
            header_value: BinaryColumn::with_capacity(0, 0),
            payload: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }

    /// Key, value and encoded header bytes held.
    pub fn payload_bytes(&self) -> usize {
        self.payload
    }

    /// Whether `rec` can be appended without an `int32` offset overflowing.
    /// (A header key that is not UTF-8 is stored with replacement
    /// characters, up to three bytes per byte.)
    #[inline]
    pub fn fits(&self, rec: &RecordView<'_>) -> bool {
        let h = rec.headers_raw.len();
        self.key.has_room(rec.key.map_or(0, <[u8]>::len))
            && self.value.has_room(rec.value.map_or(0, <[u8]>::len))
            && self.header_key.has_room(3 * h)
            && self.header_value.has_room(h)
    }

    /// Append one record. The caller checked [`RecordColumns::fits`].
    #[inline]
    pub fn push(&mut self, tp: &TopicPartition, rec: &RecordView<'_>) {
        let topic = match &self.last_topic {
            Some((t, i)) if Arc::ptr_eq(t, &tp.topic) => *i,
            _ => self.topic_index(&tp.topic),
        };
        self.topic.push(topic);
        // Kafka's partition numbers are int32.
        self.partition.push(tp.partition as i32);
        self.offset.push(rec.offset);
        self.timestamp.push(rec.timestamp);
        self.key.push(rec.key);
        self.value.push(rec.value);
        if rec.header_count > 0 {
            for (k, v) in rec.headers() {
                match std::str::from_utf8(k) {
                    Ok(_) => self.header_key.push(Some(k)),
                    // The utf8 column must hold UTF-8, as `poll()` decodes keys.
                    Err(_) => self
                        .header_key
                        .push(Some(String::from_utf8_lossy(k).as_bytes())),
                }
                self.header_value.push(v);
            }
        }
        self.headers.push(self.header_key.len() as i32);
        self.payload += payload_size(rec);
    }

    /// Make room for about `rows` more records sized like those held so
    /// far, bounded by `max_payload` more payload bytes, so the buffers grow
    /// once instead of doubling (each doubling copies what is there). Only
    /// address space is reserved: pages are touched when written.
    pub fn reserve_like_so_far(&mut self, rows: usize, max_payload: usize) {
        let n = self.len();
        if n == 0 || self.payload == 0 {
            return;
        }
        let by_bytes = max_payload / (self.payload / n).max(1) + 1;
        let rows = rows.min(by_bytes).min(MAX_RESERVE_ROWS);
        for v in [&mut self.topic, &mut self.partition] {
            v.reserve(rows);
        }
        for v in [&mut self.offset, &mut self.timestamp] {
            v.reserve(rows);
        }
        self.headers.reserve(rows);
        for c in [&mut self.key, &mut self.value] {
            c.offsets.reserve(rows);
            let want = rows.saturating_mul(c.data.len() / n);
            c.data
                .reserve(want.min(MAX_BINARY_BYTES.saturating_sub(c.data.len())));
        }
    }

    fn topic_index(&mut self, name: &Arc<str>) -> i32 {
        let i = match self.topics.iter().position(|t| **t == **name) {
            Some(i) => i,
            None => {
                self.topics.push(name.clone());
                self.topics.len() - 1
            }
        } as i32;
        self.last_topic = Some((name.clone(), i));
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        offset: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        headers_raw: &'a [u8],
        header_count: u32,
    ) -> RecordView<'a> {
        RecordView {
            offset,
            timestamp: 1_700_000_000_000 + offset,
            key,
            value,
            header_count,
            headers_raw,
        }
    }

    #[test]
    fn columns_hold_records_in_arrow_layout() {
        let a = TopicPartition::new(Arc::from("a"), 0);
        let b = TopicPartition::new(Arc::from("b"), 3);
        let mut c = RecordColumns::with_capacity(2, 8);
        // One header: key "h" (varint 2 = len 1), value "xy" (varint 4 = len 2).
        let hdr = [2u8, b'h', 4, b'x', b'y'];
        for i in 0..10i64 {
            let tp = if i % 3 == 0 { &b } else { &a };
            let key = if i % 2 == 0 { None } else { Some(&b"k"[..]) };
            let value = if i == 9 { None } else { Some(&b"vv"[..]) };
            let (raw, n) = if i == 4 { (&hdr[..], 1) } else { (&[][..], 0) };
            let r = view(i, key, value, raw, n);
            assert!(c.fits(&r));
            c.push(tp, &r);
        }
        assert_eq!(c.len(), 10);
        assert_eq!(c.topics.len(), 2);
        assert_eq!(c.topic[0], 0); // "b" came first
        assert_eq!(c.topic[1], 1);
        assert_eq!(c.partition[0], 3);
        assert_eq!(c.key.validity.null_count, 5);
        assert_eq!(c.key.get(0), None);
        assert_eq!(c.key.get(1), Some(&b"k"[..]));
        assert_eq!(c.key.offsets.len(), 11);
        assert_eq!(c.value.validity.null_count, 1);
        assert_eq!(c.value.get(9), None);
        assert_eq!(c.value.get(8), Some(&b"vv"[..]));
        assert_eq!(c.headers, vec![0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
        assert_eq!(c.header_key.get(0), Some(&b"h"[..]));
        assert_eq!(c.header_value.get(0), Some(&b"xy"[..]));
        // five 1-byte keys, nine 2-byte values, one encoded header
        assert_eq!(c.payload_bytes(), 5 + 9 * 2 + hdr.len());
    }

    #[test]
    fn validity_starts_at_the_first_null_with_earlier_rows_valid() {
        let mut v = Validity::default();
        for row in 0..20 {
            v.push(row, row != 17);
        }
        let bits = v.bits.expect("a null was pushed");
        assert_eq!(bits.len(), 3);
        assert_eq!(bits[0], 0xFF);
        assert_eq!(bits[1], 0xFF);
        assert_eq!(bits[2] & 0b1111, 0b1101);
        assert_eq!(v.null_count, 1);
    }

    #[test]
    fn reserve_follows_the_records_so_far_within_the_budget() {
        let tp = TopicPartition::new(Arc::from("t"), 0);
        let v = [7u8; 100];
        let fill = |c: &mut RecordColumns| {
            for i in 0..10 {
                c.push(&tp, &view(i, None, Some(&v), &[], 0));
            }
        };
        let mut c = RecordColumns::with_capacity(10, 0);
        fill(&mut c);
        c.reserve_like_so_far(1000, usize::MAX);
        assert!(c.value.data.capacity() >= 100 * 1010);
        assert!(c.offset.capacity() >= 1010);
        let mut c = RecordColumns::with_capacity(10, 0);
        fill(&mut c);
        c.reserve_like_so_far(1000, 500); // room for ~6 more by bytes
        assert!(c.value.data.capacity() < 100 * 100);
        let mut empty = RecordColumns::with_capacity(0, 0);
        empty.reserve_like_so_far(1 << 40, usize::MAX); // nothing to go by: no-op
        assert_eq!(empty.value.data.capacity(), 0);
    }

    #[test]
    fn header_keys_that_are_not_utf8_are_made_utf8() {
        let tp = TopicPartition::new(Arc::from("t"), 0);
        let mut c = RecordColumns::with_capacity(1, 0);
        let hdr = [2u8, 0xFF, 1]; // key [0xFF], null value
        let r = view(0, None, None, &hdr, 1);
        c.push(&tp, &r);
        assert_eq!(c.header_key.get(0), Some("\u{FFFD}".as_bytes()));
        assert_eq!(c.header_value.get(0), None);
    }
}
