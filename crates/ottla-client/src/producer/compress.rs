//! A topic's `compression.type` for batches an embedded producer writes.
//!
//! The producer builds uncompressed batches; a topic whose
//! `compression.type` names a codec (`gzip`, `snappy`, `lz4`, `zstd`) has
//! each batch's records section compressed just before the append, as a
//! Kafka broker would store what a producer sent it: the batch on disk is
//! the one a Kafka client with that codec would have written, and readers
//! (embedded or over the wire) inflate it. `producer` and `uncompressed`
//! store batches as built. The levels come from
//! `compression.gzip.level` / `compression.zstd.level`.

use ottla_record::compression::{recompress_batch, NONE};
use ottla_storage::config::{TopicCompression, TopicConfig};
use ottla_storage::error::{Error, Result};

/// The codec and level batches of a topic with `cfg` are stored with, or
/// `None` when they are stored as built (uncompressed).
pub(super) fn codec_for(cfg: &TopicConfig) -> Option<(u8, i32)> {
    let codec = cfg.compression.codec().filter(|c| *c != NONE)?;
    let level = match cfg.compression {
        TopicCompression::Gzip => cfg.gzip_level,
        _ => cfg.zstd_level,
    };
    Some((codec, level))
}

/// `batch` (one whole, sealed, uncompressed batch) re-encoded with
/// `codec` at `level`.
pub(super) fn compress(batch: &[u8], (codec, level): (u8, i32)) -> Result<Vec<u8>> {
    recompress_batch(batch, codec, level).map_err(|e| Error::InvalidRecord(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ottla_record::batch::{check_batch, BatchBuilder};
    use ottla_record::compression::{LZ4, ZSTD};

    #[test]
    fn only_a_named_codec_compresses() {
        let cfg = |v: &str| TopicConfig::from_overrides([("compression.type", v)]).expect("valid");
        assert_eq!(codec_for(&cfg("producer")), None);
        assert_eq!(codec_for(&cfg("uncompressed")), None);
        assert_eq!(codec_for(&cfg("lz4")).map(|c| c.0), Some(LZ4));
        assert_eq!(codec_for(&cfg("zstd")), Some((ZSTD, 3)));
        let mut b = BatchBuilder::with_capacity(4096);
        for _ in 0..50 {
            b.append(1, None, Some(&[b'a'; 100][..]), &[]);
        }
        let plain = b.finish().to_vec();
        let packed = compress(&plain, (ZSTD, 3)).expect("compress");
        assert_eq!(check_batch(&packed).expect("sealed").compression(), ZSTD);
        assert!(packed.len() < plain.len() / 4);
    }
}
