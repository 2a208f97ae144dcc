//! Zig-zag variable-length integers, as Kafka's record format v2 uses for
//! every per-record field (protobuf's encoding: 7 bits a byte, low bits first).

/// Longest encoding of a 64-bit varint.
pub const MAX_VARLONG_LEN: usize = 10;

#[inline]
pub fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes the zig-zag encoding of `v` takes.
#[inline]
pub fn varlong_len(v: i64) -> usize {
    let z = zigzag64(v) | 1;
    (70 - z.leading_zeros() as usize) / 7
}

#[inline]
pub fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Write the zig-zag encoding of `v` at the front of `out`; returns the
/// bytes written. `out` must have room for [`varlong_len`]`(v)` bytes
/// (callers pass a stack buffer sized for [`MAX_VARLONG_LEN`]). The bulk
/// encoder assembles a record's header in a stack buffer with this, so it
/// pays one `Vec` length update per field group instead of one per byte.
#[inline]
pub fn write_varlong(out: &mut [u8], v: i64) -> usize {
    let mut z = zigzag64(v);
    let mut n = 0;
    while z >= 0x80 {
        out[n] = (z as u8) | 0x80;
        z >>= 7;
        n += 1;
    }
    out[n] = z as u8;
    n + 1
}

#[inline]
pub fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_varlong(buf, v as i64)
}

/// A bytes field of a record: the length as a varint (-1 for null), then
/// the bytes.
#[inline]
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

/// Decode a zig-zag varlong at `*pos`, advancing it. `None` when the input
/// ends early or the encoding runs past ten bytes.
#[inline(always)]
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    // Most fields of a record fit one byte (attributes, deltas, the header
    // count) or two (lengths up to 8 KiB): decode those without the loop
    // or a call.
    let b = *buf.get(*pos)?;
    if b < 0x80 {
        *pos += 1;
        return Some(unzigzag64(b as u64));
    }
    if let Some(&b1) = buf.get(*pos + 1) {
        if b1 < 0x80 {
            *pos += 2;
            return Some(unzigzag64((b & 0x7f) as u64 | (b1 as u64) << 7));
        }
    }
    get_varlong_long(buf, pos)
}

#[inline(never)]
fn get_varlong_long(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut result: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        result |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(unzigzag64(result));
        }
        shift += 7;
        if shift >= 64 {
            return None;
        }
    }
}

/// Like [`get_varlong`] but rejects values outside `i32`.
#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            300,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf.len(), varlong_len(v), "len of {v}");
            let mut pos = 0;
            assert_eq!(get_varlong(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
            let mut fixed = [0u8; MAX_VARLONG_LEN];
            let n = write_varlong(&mut fixed, v);
            assert_eq!(&fixed[..n], &buf[..], "write_varlong of {v}");
        }
    }

    #[test]
    fn matches_kafka_known_encodings() {
        // Values from Kafka's ByteUtilsTest: zig-zag maps 0,-1,1,-2 to 0,1,2,3.
        let cases: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (150, &[0xac, 0x02]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            put_varlong(&mut buf, *v);
            assert_eq!(&buf[..], *bytes, "encoding of {v}");
        }
    }

    #[test]
    fn short_forms_decode_as_the_general_loop_does() {
        // Every one- and two-byte input (and a truncated second byte), at an
        // offset, through the inlined short path and the loop alone.
        for b0 in 0..=255u8 {
            for b1 in (0..=255u8).map(Some).chain([None]) {
                let buf: Vec<u8> = [7u8, b0].into_iter().chain(b1).collect();
                let (mut p, mut q) = (1, 1);
                assert_eq!(
                    (get_varlong(&buf, &mut p), p),
                    (get_varlong_long(&buf, &mut q), q),
                    "{buf:?}"
                );
            }
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut pos = 0;
        assert_eq!(get_varlong(&[0x80, 0x80], &mut pos), None);
        let mut pos = 0;
        assert_eq!(get_varlong(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        let mut buf = Vec::new();
        put_varlong(&mut buf, i64::from(i32::MAX) + 1);
        assert_eq!(get_varint(&buf, &mut pos), None);
    }
}
