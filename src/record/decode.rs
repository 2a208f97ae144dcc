//! Turning a stored batch into records, whatever codec the producer used.

use super::batch::{BatchHeader, RecordIter, HEADER_LEN};
use crate::error::{Error, Result};

/// Records of one whole batch (`batch` includes the header).
pub fn records<'a>(header: &BatchHeader, batch: &'a [u8]) -> Result<RecordIter<'a>> {
    match header.compression() {
        0 => Ok(RecordIter::new(*header, &batch[HEADER_LEN..])),
        codec => Err(Error::UnsupportedCompression(codec)),
    }
}
