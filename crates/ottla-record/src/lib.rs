//! Kafka's record format v2: record batches, varints and compression codecs.
//!
//! Bytes in, bytes out: nothing here touches a file or a socket, so the
//! storage engine, the broker and the fuzzers share one definition of the
//! format. The byte layout is drawn in docs/FORMAT.md.

pub mod batch;
pub mod compression;
pub mod decode;
pub mod error;
pub mod single;
pub mod varint;

pub use batch::{
    check_batch, BatchBuilder, BatchHeader, HeaderRef, RecordIter, RecordView, HEADER_LEN,
    LOG_OVERHEAD,
};
pub use error::{Error, Result};
