//! Who a connection is (issue 18): listeners' security protocols, TLS,
//! SASL, stored SCRAM credentials, and the principal every request of an
//! authenticated connection carries.
//!
//! ```text
//! principal    `User:alice`, `User:ANONYMOUS`: what the authorizer will see
//! tls          rustls server settings from PEM files; mTLS principals from the
//!              client certificate's subject (ssl.client.auth)
//! sasl/        the SASL servers: PLAIN, SCRAM-SHA-256/512, OAUTHBEARER
//!              (unsecured JWTs), one exchange per connection at a time
//! credentials  SCRAM credentials, salted and hashed, in the data directory
//! authorizer   the home of ACL checks (the next step of issue 18)
//! ```
//!
//! The transport (`net::connection`) wraps accepted sockets in TLS and keeps
//! every request but ApiVersions, SaslHandshake and SaslAuthenticate away
//! from `dispatch` until a SASL listener's client has authenticated
//! (`net::gate`); `api::sasl` runs the exchanges. Nothing here knows the
//! storage engine beyond the data directory's path.

pub mod authorizer;
pub mod credentials;
pub mod principal;
pub mod sasl;
pub mod tls;

use std::fmt;

/// Kafka's `security.protocol` of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<SecurityProtocol> {
        match name.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
