//! The transport: sockets in, whole request frames out to `dispatch`, response
//! frames back, and nothing else (no request is interpreted here beyond its
//! header). TLS and the SASL handshake will plug in here, between accepting a
//! socket and handing its first request on.
//!
//! ```text
//! listener    accept loop, one task per connection, shutdown
//! connection  size-prefixed frames in, responses out, in order; limits and timeouts
//! budget      the bound on request bytes in hand across connections
//! frame       request header decode, response header + body encode
//! ```

pub mod budget;
pub mod connection;
pub mod frame;
pub mod listener;
