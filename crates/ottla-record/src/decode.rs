//! Turning a stored batch into records, whatever codec the producer used.
//!
//! Batches are stored as their producer sent them, so a batch a Kafka client
//! compressed stays compressed on disk; its records are inflated here, when
//! they are read, and never written back.

use std::borrow::Cow;

use super::batch::{BatchHeader, RecordIter, HEADER_LEN};
use super::compression::{decompress, MAX_DECOMPRESSED};
use crate::error::{Error, Result};

/// The records section of one batch, inflated if it was compressed.
pub struct Records<'a> {
    header: BatchHeader,
    data: Cow<'a, [u8]>,
}

impl Records<'_> {
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter::new(self.header, &self.data)
    }
}

/// Records of one whole batch (`batch` includes the header).
pub fn records<'a>(header: &BatchHeader, batch: &'a [u8]) -> Result<Records<'a>> {
    let body = body(batch)?;
    let data = match header.compression() {
        0 => Cow::Borrowed(body),
        codec => Cow::Owned(decompress(codec, body, MAX_DECOMPRESSED)?),
    };
    Ok(Records {
        header: *header,
        data,
    })
}

/// The inflated records section of a compressed batch, or `None` when the
/// batch is uncompressed and its bytes can be walked in place.
pub fn inflate(header: &BatchHeader, batch: &[u8]) -> Result<Option<Vec<u8>>> {
    match header.compression() {
        0 => Ok(None),
        codec => decompress(codec, body(batch)?, MAX_DECOMPRESSED).map(Some),
    }
}

/// The records section after the batch header; a typed error for a slice
/// too short to hold the header (the caller's framing was wrong).
fn body(batch: &[u8]) -> Result<&[u8]> {
    batch.get(HEADER_LEN..).ok_or_else(|| {
        Error::InvalidRecord(format!("batch of {} bytes has no header", batch.len()))
    })
}
