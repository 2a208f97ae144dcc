//! Turning a stored batch into records, whatever codec the producer used.

use super::batch::{BatchHeader, RecordIter, HEADER_LEN};
use crate::error::{Error, Result};

/// Records of one whole batch (`batch` includes the header).
pub fn records<'a>(header: &BatchHeader, batch: &'a [u8]) -> Result<RecordIter<'a>> {
    match header.compression() {
        0 => {
            let body = batch.get(HEADER_LEN..).ok_or_else(|| {
                Error::InvalidRecord(format!("batch of {} bytes has no header", batch.len()))
            })?;
            Ok(RecordIter::new(*header, body))
        }
        codec => Err(Error::UnsupportedCompression(codec)),
    }
}
