//! Kafka's record format v2: varints and record batches.

pub mod batch;
pub mod compression;
pub mod decode;
pub mod varint;

pub use batch::{
    check_batch, BatchBuilder, BatchHeader, HeaderRef, RecordIter, RecordView, HEADER_LEN,
    LOG_OVERHEAD,
};
pub mod single;
