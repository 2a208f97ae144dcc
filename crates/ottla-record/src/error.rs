//! The record format's errors: a batch that does not decode, or a codec
//! that cannot encode. The storage engine wraps them with the file and
//! position they were read from.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),

    #[error("unsupported compression codec {0} in record batch")]
    UnsupportedCompression(u8),

    #[error("compressed record batch inflates past {limit} bytes")]
    DecompressedTooLarge { limit: usize },
}
