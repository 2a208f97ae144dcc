//! Record batch compression codecs, as Kafka clients write them.
//!
//! A compressed v2 batch keeps its 61-byte header in the clear and
//! compresses only the records section, with the codec named by the low
//! three bits of `attributes`: 1 gzip, 2 snappy, 3 lz4 (frame format), 4 zstd.
//!
//! Snappy comes in two shapes: librdkafka and most clients write one raw
//! snappy block, while the Java client writes xerial's framing (an 8-byte
//! magic, two version words, then length-prefixed raw blocks). Both are read.
//!
//! Every decoder is bounded: it never produces more than `limit` bytes,
//! whatever the input claims, so a tiny "decompression bomb" costs a typed
//! error instead of the process's memory.

use std::io::{Read, Write};

use crate::error::{Error, Result};

pub const NONE: u8 = 0;
pub const GZIP: u8 = 1;
pub const SNAPPY: u8 = 2;
pub const LZ4: u8 = 3;
pub const ZSTD: u8 = 4;

/// The most a batch's records may inflate to. Clients cap a batch at about
/// 1 MiB compressed (`batch.size`, `message.max.bytes`); real data rarely
/// compresses more than 100:1, so this leaves room while keeping a hostile
/// batch from taking more than this much memory.
pub const MAX_DECOMPRESSED: usize = 128 << 20;

const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic plus the version and minimum-compatible-version words.
const XERIAL_HEADER_LEN: usize = 16;

/// Kafka's name for a codec id (for messages and configs).
pub fn codec_name(codec: u8) -> &'static str {
    match codec {
        NONE => "none",
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "unknown",
    }
}

/// Inflate `data` (a batch's records section) written with `codec`, producing
/// at most `limit` bytes.
pub fn decompress(codec: u8, data: &[u8], limit: usize) -> Result<Vec<u8>> {
    match codec {
        NONE => bounded_copy(data, limit),
        GZIP => read_bounded(flate2::read::MultiGzDecoder::new(data), codec, limit),
        SNAPPY => snappy_decompress(data, limit),
        LZ4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), codec, limit),
        ZSTD => {
            let dec = zstd::stream::read::Decoder::new(data).map_err(|e| corrupt(codec, &e))?;
            read_bounded(dec, codec, limit)
        }
        other => Err(Error::UnsupportedCompression(other)),
    }
}

/// Compress `data` with `codec`, in the form Kafka clients write (raw
/// snappy, lz4 frames). Used by tests and tools that build compressed batches.
pub fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::InvalidRecord(format!("compress: {e}"));
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).map_err(io)?;
            enc.finish().map_err(io)
        }
        SNAPPY => snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(|e| Error::InvalidRecord(format!("compress: {e}"))),
        LZ4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(io)?;
            enc.finish()
                .map_err(|e| Error::InvalidRecord(format!("compress: {e}")))
        }
        ZSTD => zstd::stream::encode_all(data, 3).map_err(io),
        other => Err(Error::UnsupportedCompression(other)),
    }
}

/// Re-encode a whole uncompressed batch with its records section compressed
/// by `codec`, fixing up length, attributes and CRC: the batch a Kafka client
/// with `compression.type=<codec>` would have sent.
pub fn compress_batch(batch: &[u8], codec: u8) -> Result<Vec<u8>> {
    use super::batch::{
        check_batch, seal_crc, ATTRIBUTES, BATCH_LENGTH, COMPRESSION_MASK, HEADER_LEN, LOG_OVERHEAD,
    };
    let h = check_batch(batch).map_err(Error::InvalidRecord)?;
    if h.compression() != NONE {
        return Err(Error::InvalidRecord("batch is already compressed".into()));
    }
    let packed = compress(codec, &batch[HEADER_LEN..])?;
    let mut out = Vec::with_capacity(HEADER_LEN + packed.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out.extend_from_slice(&packed);
    let length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| Error::InvalidRecord("compressed batch too large".into()))?;
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = (h.attributes & !COMPRESSION_MASK) | codec as i16;
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    seal_crc(&mut out);
    Ok(out)
}

/// Compress `data` with `codec` at `level` (Kafka's `compression.<codec>.level`):
/// gzip takes 1..=9, or -1 for zlib's default (6); zstd any level it
/// supports; lz4 and snappy are written at their one level here.
pub fn compress_level(codec: u8, data: &[u8], level: i32) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::InvalidRecord(format!("compress: {e}"));
    match codec {
        GZIP => {
            let level = if (1..=9).contains(&level) {
                flate2::Compression::new(level as u32)
            } else {
                flate2::Compression::default()
            };
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
            enc.write_all(data).map_err(io)?;
            enc.finish().map_err(io)
        }
        ZSTD => zstd::stream::encode_all(data, level).map_err(io),
        other => compress(other, data),
    }
}

/// Re-encode a whole batch, compressed or not, with its records section in
/// `codec` (at `level`, see [`compress_level`]), fixing up length,
/// attributes and CRC; every other field is kept. What a Kafka broker
/// stores when a topic's `compression.type` differs from the producer's.
pub fn recompress_batch(batch: &[u8], codec: u8, level: i32) -> Result<Vec<u8>> {
    use super::batch::{
        check_batch, seal_crc, ATTRIBUTES, BATCH_LENGTH, COMPRESSION_MASK, HEADER_LEN, LOG_OVERHEAD,
    };
    let h = check_batch(batch).map_err(Error::InvalidRecord)?;
    let body = &batch[HEADER_LEN..];
    let plain;
    let raw = match h.compression() {
        NONE => body,
        from => {
            plain = decompress(from, body, MAX_DECOMPRESSED)?;
            &plain[..]
        }
    };
    let mut out = Vec::with_capacity(HEADER_LEN + raw.len() / 2);
    out.extend_from_slice(&batch[..HEADER_LEN]);
    if codec == NONE {
        out.extend_from_slice(raw);
    } else {
        out.extend_from_slice(&compress_level(codec, raw, level)?);
    }
    let length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| Error::InvalidRecord("batch too large".into()))?;
    out[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = (h.attributes & !COMPRESSION_MASK) | codec as i16;
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    seal_crc(&mut out);
    Ok(out)
}

fn corrupt(codec: u8, e: &dyn std::fmt::Display) -> Error {
    Error::InvalidRecord(format!("{} data does not decode: {e}", codec_name(codec)))
}

fn too_large(limit: usize) -> Error {
    Error::DecompressedTooLarge { limit }
}

fn bounded_copy(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    if data.len() > limit {
        return Err(too_large(limit));
    }
    Ok(data.to_vec())
}

/// Read a streaming decoder to its end, refusing to go past `limit`. The
/// buffer grows with the data actually produced, never by a claimed size.
fn read_bounded(reader: impl Read, codec: u8, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut capped = reader.take(limit as u64 + 1);
    capped
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, &e))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    if data.len() >= XERIAL_HEADER_LEN && data.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(corrupt(SNAPPY, &"xerial block length cut short"));
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let block = rest
                .get(4..4 + len)
                .ok_or_else(|| corrupt(SNAPPY, &"xerial block runs past the data"))?;
            snappy_block(block, limit - out.len(), &mut out)?;
            rest = &rest[4 + len..];
        }
        Ok(out)
    } else {
        let mut out = Vec::new();
        snappy_block(data, limit, &mut out)?;
        Ok(out)
    }
}

/// Append one raw snappy block to `out`. The block states its inflated size
/// up front; that claim is checked against the budget before allocating.
fn snappy_block(block: &[u8], budget: usize, out: &mut Vec<u8>) -> Result<()> {
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt(SNAPPY, &e))?;
    if n > budget {
        return Err(too_large(out.len() + budget));
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(SNAPPY, &e))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let packed = compress(codec, &data).expect("compress");
            let back = decompress(codec, &packed, MAX_DECOMPRESSED).expect("decompress");
            assert_eq!(back, data, "{}", codec_name(codec));
        }
    }

    #[test]
    fn recompress_batch_changes_only_the_codec() {
        use crate::batch::{check_batch, BatchBuilder};
        use crate::decode::records;
        let mut b = BatchBuilder::with_capacity(1 << 16);
        for i in 0..200u32 {
            let v = format!("value {i} {}", "x".repeat(64));
            b.append(1000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        let plain = b.finish().to_vec();
        let read = |batch: &[u8]| -> Vec<(i64, i64, Vec<u8>)> {
            let h = check_batch(batch).expect("valid batch");
            let rs = records(&h, batch).expect("records");
            rs.iter()
                .map(|r| {
                    let r = r.expect("record");
                    (r.offset, r.timestamp, r.value.unwrap_or_default().to_vec())
                })
                .collect()
        };
        let want = read(&plain);
        for (codec, level) in [
            (GZIP, -1),
            (GZIP, 9),
            (ZSTD, 3),
            (ZSTD, 19),
            (LZ4, 9),
            (SNAPPY, 0),
        ] {
            let packed = recompress_batch(&plain, codec, level).expect("recompress");
            let h = check_batch(&packed).expect("sealed");
            assert_eq!(h.compression(), codec);
            assert!(packed.len() < plain.len() / 4, "{}", codec_name(codec));
            assert_eq!(read(&packed), want);
            // And back: any codec to any other, or to none.
            let back = recompress_batch(&packed, NONE, 0).expect("inflate");
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let data = sample();
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for chunk in data.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new()
                .compress_vec(chunk)
                .expect("compress");
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        assert_eq!(
            decompress(SNAPPY, &framed, MAX_DECOMPRESSED).expect("xerial"),
            data
        );
        // A block length pointing past the end is an error, not a panic.
        let mut bad = framed.clone();
        bad[XERIAL_HEADER_LEN..XERIAL_HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decompress(SNAPPY, &bad, MAX_DECOMPRESSED),
            Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn bombs_are_refused_with_a_typed_error() {
        let zeros = vec![0u8; 4 << 20];
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            let packed = compress(codec, &zeros).expect("compress");
            assert!(packed.len() < zeros.len() / 20, "{}", codec_name(codec));
            match decompress(codec, &packed, 1 << 20) {
                Err(Error::DecompressedTooLarge { limit }) => assert_eq!(limit, 1 << 20),
                other => panic!("{}: {other:?}", codec_name(codec)),
            }
        }
    }

    #[test]
    fn snappy_size_claim_is_checked_before_allocating() {
        // A raw block whose varint preamble claims ~4 GiB but carries nothing.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            decompress(SNAPPY, &claim, 1 << 20),
            Err(Error::DecompressedTooLarge { .. }) | Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        let junk = b"definitely not compressed data at all";
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            assert!(
                matches!(
                    decompress(codec, junk, MAX_DECOMPRESSED),
                    Err(Error::InvalidRecord(_))
                ),
                "{}",
                codec_name(codec)
            );
        }
        assert!(matches!(
            decompress(7, junk, MAX_DECOMPRESSED),
            Err(Error::UnsupportedCompression(7))
        ));
    }
}
