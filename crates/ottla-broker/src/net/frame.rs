//! Request headers in, response frames out.
//!
//! The API key, version and correlation id sit at fixed places at the front
//! of every request, so they are read by hand first: that is enough to answer
//! an ApiVersions request of a version we do not know (the client then
//! retries with one we do) and to refuse anything else without handing a
//! malformed header to the decoder.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// The fixed prefix of a request header.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

pub fn prefix(frame: &[u8]) -> Option<Prefix> {
    if frame.len() < 8 {
        return None;
    }
    Some(Prefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decode the whole header of a request whose API and version are known to be
/// supported, leaving `frame` at the start of the body.
pub fn header(api: ApiKey, version: i16, frame: &mut Bytes) -> Result<RequestHeader, String> {
    let hv = api.request_header_version(version);
    RequestHeader::decode(frame, hv).map_err(|e| format!("bad request header: {e}"))
}

/// Decode a request body.
pub fn body<T: Decodable>(frame: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(frame, version).map_err(|e| format!("bad request body: {e}"))
}

/// Encode a whole response frame: size, header, body.
pub fn response<T: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, String> {
    let hv = api.response_header_version(version);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let size = header
        .compute_size(hv)
        .and_then(|h| body.compute_size(version).map(|b| h + b))
        .map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(0);
    header
        .encode(&mut buf, hv)
        .and_then(|_| body.encode(&mut buf, version))
        .map_err(|e| format!("{api:?} v{version} response: {e}"))?;
    let n = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&n.to_be_bytes());
    Ok(buf)
}
