//! Kafka's `KafkaPrincipal`: a type and a name, written `User:alice`.
//!
//! Every connection has one from its first request on: `User:ANONYMOUS` on
//! PLAINTEXT (and on SSL without a client certificate), the SASL user once
//! a SASL listener's client has authenticated, the certificate subject's
//! distinguished name on SSL with a client certificate (Kafka's default
//! principal builder, `ssl.principal.mapping.rules=DEFAULT`). ACLs will
//! match on it.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// `User` for every principal this broker makes (Kafka's `USER_TYPE`).
    pub kind: String,
    pub name: String,
}

pub const ANONYMOUS: &str = "ANONYMOUS";

impl Principal {
    pub fn user(name: impl Into<String>) -> Principal {
        Principal {
            kind: "User".into(),
            name: name.into(),
        }
    }

    pub fn anonymous() -> Principal {
        Principal::user(ANONYMOUS)
    }

    pub fn is_anonymous(&self) -> bool {
        self.kind == "User" && self.name == ANONYMOUS
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_kafka_writes_it() {
        assert_eq!(Principal::user("alice").to_string(), "User:alice");
        assert_eq!(Principal::anonymous().to_string(), "User:ANONYMOUS");
        assert!(Principal::anonymous().is_anonymous());
    }
}
