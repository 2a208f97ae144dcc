//! Kafka record batch v2 (magic 2): the unit ottla stores, serves and reads.
//!
//! A batch is a fixed 61-byte header and its records, one after another:
//!
//! ```text
//! baseOffset:int64 batchLength:int32 partitionLeaderEpoch:int32 magic:int8
//! crc:uint32 attributes:int16 lastOffsetDelta:int32 baseTimestamp:int64
//! maxTimestamp:int64 producerId:int64 producerEpoch:int16 baseSequence:int32
//! recordsCount:int32 records...
//! ```
//!
//! Split as Kafka splits it:
//! * [`layout`]: the header's byte offsets and attribute bits,
//!   [`BatchHeader`], and [`check_batch`] (length, magic, CRC-32C);
//! * [`builder`]: [`BatchBuilder`], which encodes records in place;
//! * [`control`]: the COMMIT/ABORT markers of transactions;
//! * [`records`]: [`RecordIter`] and [`RecordView`], zero-copy decoding of a
//!   batch's records.
//!
//! Everything is re-exported here, so `batch::X` names one item whichever
//! file holds it.

pub mod builder;
pub mod control;
pub mod layout;
pub mod records;

pub use builder::{put_record_view, BatchBuilder, FillStop};
pub use control::{marker_batch, parse_marker, ControlType, Marker};
pub use layout::{
    check_batch, compute_crc, peek_total_size, seal_crc, set_base_offset, BatchHeader, Batches,
    ATTRIBUTES, BASE_OFFSET, BASE_SEQUENCE, BASE_TIMESTAMP, BATCH_LENGTH, COMPRESSION_MASK,
    CONTROL_FLAG, CRC, CURRENT_MAGIC, DELETE_HORIZON_FLAG, HEADER_LEN, LAST_OFFSET_DELTA,
    LEADER_EPOCH, LOG_OVERHEAD, MAGIC, MAX_TIMESTAMP, PRODUCER_EPOCH, PRODUCER_ID, RECORDS_COUNT,
    TIMESTAMP_TYPE_LOG_APPEND, TRANSACTIONAL_FLAG,
};
pub use records::{HeaderIter, HeaderRef, RecordIter, RecordView};

/// A test record: timestamp, key, value.
#[cfg(test)]
type TestRecord<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// A finished batch of `records`, each with the same two headers, base
/// offset 0.
#[cfg(test)]
fn test_batch(records: &[TestRecord<'_>]) -> Vec<u8> {
    let mut b = BatchBuilder::with_capacity(256);
    for (ts, k, v) in records {
        b.append(*ts, *k, *v, &[(b"h1", Some(b"v1")), (b"h2", None)]);
    }
    b.finish().to_vec()
}
