//! The SASL servers: one exchange of tokens per authentication, driven by
//! SaslAuthenticate requests (`api::sasl`).
//!
//! ```text
//! plain        RFC 4616: one message, checked against the SCRAM credentials
//! scram        RFC 5802/7677: client-first, server-first, client-final, server-final
//! oauthbearer  RFC 7628 with Kafka's unsecured-JWT validator (tests and development)
//! ```
//!
//! Every failure is an `Err` with the message the client is told
//! (SASL_AUTHENTICATION_FAILED); nothing here panics on what a client sent.
//! The exchanges are pure over their inputs (credentials, the time, random
//! bytes), so the fuzzing oracle drives them without a connection.

pub mod oauthbearer;
pub mod plain;
pub mod scram;

use super::credentials::{CredentialStore, ScramMechanism};
use super::principal::Principal;

/// A SASL mechanism this broker serves (Kafka's `sasl.enabled.mechanisms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
    OAuthBearer,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
        Mechanism::OAuthBearer,
    ];

    /// The names clients send in SaslHandshake (case-sensitive, as in Kafka).
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanisms enabled unless told otherwise: those checked against
    /// stored credentials. OAUTHBEARER's unsecured validator believes any
    /// token, so it is enabled only by name.
    pub fn defaults() -> Vec<Mechanism> {
        vec![
            Mechanism::Plain,
            Mechanism::Scram(ScramMechanism::Sha256),
            Mechanism::Scram(ScramMechanism::Sha512),
        ]
    }
}

/// A finished authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub principal: Principal,
    /// When the credential itself stops being valid (an OAUTHBEARER token's
    /// `exp`), in Unix milliseconds; the session ends there at the latest.
    pub credential_expiry_ms: Option<i64>,
}

/// What a step of an exchange gives back.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes and wait for the client's next token.
    Challenge(Vec<u8>),
    /// Done: send these bytes (maybe empty), and the client is who it says.
    Done(Vec<u8>, Authenticated),
}

/// What an exchange needs from outside.
pub struct Context<'a> {
    pub credentials: &'a CredentialStore,
    /// The time now, in Unix milliseconds (tokens' validity).
    pub now_ms: i64,
}

/// One authentication in progress.
pub enum Exchange {
    Plain,
    Scram(scram::ScramServer),
    OAuthBearer(oauthbearer::OAuthBearerServer),
}

impl Exchange {
    pub fn new(mech: Mechanism) -> Exchange {
        match mech {
            Mechanism::Plain => Exchange::Plain,
            Mechanism::Scram(m) => Exchange::Scram(scram::ScramServer::new(m)),
            Mechanism::OAuthBearer => Exchange::OAuthBearer(oauthbearer::OAuthBearerServer::new()),
        }
    }

    /// The server's answer to the client's next token, or the reason the
    /// authentication failed (the exchange is over then).
    pub fn step(&mut self, token: &[u8], ctx: &Context<'_>) -> Result<Step, String> {
        match self {
            Exchange::Plain => plain::authenticate(token, ctx.credentials),
            Exchange::Scram(s) => s.step(token, ctx.credentials),
            Exchange::OAuthBearer(s) => s.step(token, ctx.now_ms),
        }
    }
}
