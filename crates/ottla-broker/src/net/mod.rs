//! The transport: sockets in, whole request frames out to `dispatch`, response
//! frames back, and nothing else (no request is interpreted here beyond its
//! header, and the SASL gate's look at its API key).
//!
//! ```text
//! listener    listeners (NAME://HOST:PORT), accept loops, one task per connection
//! connection  TLS handshake; size-prefixed frames in, responses out, in order;
//!             limits and timeouts
//! stream      the socket, plain or TLS, as one byte stream
//! gate        on SASL listeners, what may be handled before authentication
//! budget      the bound on request bytes in hand across connections
//! frame       request header decode, response header + body encode
//! ```

pub mod budget;
pub mod connection;
pub mod frame;
pub mod gate;
pub mod listener;
pub mod stream;
