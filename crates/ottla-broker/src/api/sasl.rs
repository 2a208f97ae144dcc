//! SaslHandshake (17) and SaslAuthenticate (36): the SASL exchange on a SASL
//! listener, and re-authentication (KIP-368).
//!
//! As Kafka's `SaslServerAuthenticator` answers:
//! - a mechanism not enabled: UNSUPPORTED_SASL_MECHANISM (33) with the
//!   enabled ones, then the connection closes;
//! - wrong credentials or a malformed token: SASL_AUTHENTICATION_FAILED
//!   (58) with the reason, after `FAILED_AUTHENTICATION_DELAY` (Kafka's
//!   `connection.failed.authentication.delay.ms`, which slows password
//!   guessing), then the connection closes;
//! - a SASL request out of order: ILLEGAL_SASL_STATE (34); during an
//!   authentication the connection then closes, on an authenticated (or
//!   non-SASL) connection it stays open, as Kafka's request handlers answer;
//! - success: SaslAuthenticate v1+ carries the session's lifetime, the
//!   shorter of `connections.max.reauth.ms` and the credential's own
//!   (an OAUTHBEARER token's `exp`); 0 when neither bounds it. A
//!   re-authentication must keep the mechanism and the principal.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use tokio::time::Instant;

use super::s;
use crate::auth::principal::Principal;
use crate::auth::sasl::{Context, Exchange, Mechanism, Step};
use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

/// Kafka's `connection.failed.authentication.delay.ms` default.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

/// Where a connection is in SASL (see `net::gate`).
#[derive(Default)]
pub enum SaslState {
    /// Waiting for SaslHandshake (non-SASL listeners stay here and never
    /// look at it).
    #[default]
    Handshake,
    /// SaslHandshake accepted; SaslAuthenticate tokens until done, or,
    /// after a SaslHandshake v0 (`raw`), bare size-prefixed SASL tokens
    /// outside Kafka's request framing (see [`raw_token`]).
    Authenticating {
        mech: Mechanism,
        exchange: Box<Exchange>,
        raw: bool,
    },
    /// Authenticated; `expires`: the session's end, if it has one.
    Authenticated {
        mech: Mechanism,
        expires: Option<Instant>,
    },
}

/// A connection's SASL state, and what a re-authentication must keep.
#[derive(Default)]
pub struct SaslSession {
    pub state: SaslState,
    /// The first authentication's mechanism and principal (KIP-368: a
    /// re-authentication may change neither).
    pub first: Option<(Mechanism, Principal)>,
    /// Successful authentications on this connection (re-authentications
    /// included).
    pub authentications: u32,
}

pub async fn handshake(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: SaslHandshakeRequest,
    v: i16,
) -> SaslHandshakeResponse {
    let mut r = SaslHandshakeResponse::default();
    let enabled = &shared.config.sasl_enabled_mechanisms;
    if !session.protocol().uses_sasl() {
        // Kafka's request handler: SASL on a listener without it.
        r.error_code = code::ILLEGAL_SASL_STATE;
        return r;
    }
    r.mechanisms = enabled.iter().map(|m| s(m.name())).collect();
    let reauth_mech = match &session.sasl.state {
        SaslState::Handshake => None,
        SaslState::Authenticated { mech, .. } => Some(*mech),
        SaslState::Authenticating { .. } => {
            r.error_code = code::ILLEGAL_SASL_STATE;
            session.close_after_reply = Some("SaslHandshake during SASL authentication".into());
            return r;
        }
    };
    let asked = req.mechanism.as_str();
    let Some(mech) = Mechanism::parse(asked).filter(|m| enabled.contains(m)) else {
        r.error_code = code::UNSUPPORTED_SASL_MECHANISM;
        session.close_after_reply = Some(format!("unsupported SASL mechanism {asked:?}"));
        return r;
    };
    if reauth_mech.is_some() && v == 0 {
        // KIP-368: re-authentication is SaslAuthenticate's (handshake v1+).
        r.error_code = code::ILLEGAL_SASL_STATE;
        session.close_after_reply = Some("re-authentication with SaslHandshake v0".into());
        return r;
    }
    if reauth_mech.is_some_and(|m| m != mech) {
        r.error_code = code::SASL_AUTHENTICATION_FAILED;
        session.close_after_reply = Some(format!(
            "re-authentication may not change the SASL mechanism (to {asked})"
        ));
        return r;
    }
    session.sasl.state = SaslState::Authenticating {
        mech,
        exchange: Box::new(Exchange::new(mech)),
        raw: v == 0,
    };
    r
}

/// Whether the connection's next frame is a bare SASL token (after a
/// SaslHandshake v0), not a Kafka request.
pub fn expects_raw_token(session: &Session) -> bool {
    matches!(
        session.sasl.state,
        SaslState::Authenticating { raw: true, .. }
    )
}

/// A bare SASL token after SaslHandshake v0 (Kafka's legacy exchange, as
/// its `SaslServerAuthenticator` runs it without SaslAuthenticate): the
/// same steps as SaslAuthenticate; the answer is the server's token,
/// size-prefixed and without a response header. A failure has no way to
/// be told in this framing: `Err` and the connection closes (after Kafka's
/// delay), as Kafka closes it.
pub async fn raw_token(
    shared: &Arc<Shared>,
    session: &mut Session,
    token: bytes::Bytes,
) -> Result<Vec<u8>, String> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(token);
    let r = authenticate(shared, session, req, 0).await;
    if r.error_code != code::NONE {
        return Err(format!(
            "SASL authentication (handshake v0) failed: {}",
            r.error_message.as_deref().unwrap_or("")
        ));
    }
    let mut out = Vec::with_capacity(4 + r.auth_bytes.len());
    let len = i32::try_from(r.auth_bytes.len()).map_err(|_| "SASL token too large".to_string())?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&r.auth_bytes);
    Ok(out)
}

pub async fn authenticate(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: SaslAuthenticateRequest,
    v: i16,
) -> SaslAuthenticateResponse {
    let mut r = SaslAuthenticateResponse::default();
    let illegal = |r: &mut SaslAuthenticateResponse, why: &str| {
        r.error_code = code::ILLEGAL_SASL_STATE;
        r.error_message = Some(s(why));
    };
    let (mech, mut exchange, raw) = match std::mem::take(&mut session.sasl.state) {
        SaslState::Authenticating {
            mech,
            exchange,
            raw,
        } => (mech, exchange, raw),
        other => {
            let before_handshake = matches!(other, SaslState::Handshake);
            session.sasl.state = other;
            if !session.protocol().uses_sasl() || !before_handshake {
                illegal(
                    &mut r,
                    "SaslAuthenticate request received after successful authentication",
                );
            } else {
                illegal(
                    &mut r,
                    "SaslAuthenticate request received before SaslHandshake",
                );
                session.close_after_reply = Some("SaslAuthenticate before SaslHandshake".into());
            }
            return r;
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // PBKDF2 (PLAIN) and file reads: off the runtime's worker.
    let step = crate::blocking(|| {
        exchange.step(
            &req.auth_bytes,
            &Context {
                credentials: &shared.credentials,
                now_ms,
            },
        )
    });
    match step {
        Ok(Step::Challenge(bytes)) => {
            r.auth_bytes = bytes.into();
            session.sasl.state = SaslState::Authenticating {
                mech,
                exchange,
                raw,
            };
        }
        Ok(Step::Done(bytes, done)) => {
            if let Some((_, first)) = &session.sasl.first {
                if *first != done.principal {
                    return fail(
                        session,
                        r,
                        mech,
                        format!(
                            "Cannot change principals during re-authentication from {first}: {}",
                            done.principal
                        ),
                    )
                    .await;
                }
            }
            let lifetime_ms = session_lifetime_ms(
                shared.config.connections_max_reauth_ms,
                done.credential_expiry_ms,
                now_ms,
            );
            if lifetime_ms < 0 {
                return fail(session, r, mech, "the credential has expired".into()).await;
            }
            r.auth_bytes = bytes.into();
            if v >= 1 {
                r.session_lifetime_ms = lifetime_ms;
            }
            let expires = (lifetime_ms > 0)
                .then(|| Instant::now() + Duration::from_millis(lifetime_ms as u64));
            crate::errors::debug(&format!(
                "{}: authenticated as {} ({}){}",
                session.peer,
                done.principal,
                mech.name(),
                if session.sasl.first.is_some() {
                    ", again"
                } else {
                    ""
                }
            ));
            session.principal = done.principal.clone();
            session.sasl.first.get_or_insert((mech, done.principal));
            session.sasl.authentications += 1;
            session.sasl.state = SaslState::Authenticated { mech, expires };
        }
        Err(why) => return fail(session, r, mech, why).await,
    }
    r
}

/// SASL_AUTHENTICATION_FAILED, after Kafka's delay; the connection then closes.
async fn fail(
    session: &mut Session,
    mut r: SaslAuthenticateResponse,
    mech: Mechanism,
    why: String,
) -> SaslAuthenticateResponse {
    tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
    crate::errors::debug(&format!(
        "{}: {} authentication failed: {why}",
        session.peer,
        mech.name()
    ));
    r.error_code = code::SASL_AUTHENTICATION_FAILED;
    r.error_message = Some(s(&why));
    r.auth_bytes = Default::default();
    session.close_after_reply = Some(format!("authentication failed: {why}"));
    r
}

/// Kafka's `ReauthInfo.calcCompletionTimesAndReturnSessionLifetimeMs`: the
/// shorter of `connections.max.reauth.ms` (if positive) and the time left
/// on the credential (if it has an expiry); 0 for no bound; negative if the
/// credential has already expired.
pub fn session_lifetime_ms(
    max_reauth_ms: u64,
    credential_expiry_ms: Option<i64>,
    now_ms: i64,
) -> i64 {
    let max = (max_reauth_ms > 0).then(|| i64::try_from(max_reauth_ms).unwrap_or(i64::MAX));
    match (credential_expiry_ms.map(|e| e - now_ms), max) {
        (None, None) => 0,
        (None, Some(m)) => m,
        (Some(left), None) => left,
        (Some(left), Some(m)) => left.min(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_is_the_shorter_bound() {
        assert_eq!(session_lifetime_ms(0, None, 0), 0);
        assert_eq!(session_lifetime_ms(5000, None, 0), 5000);
        assert_eq!(session_lifetime_ms(0, Some(9000), 1000), 8000);
        assert_eq!(session_lifetime_ms(5000, Some(9000), 1000), 5000);
        assert_eq!(session_lifetime_ms(10_000, Some(3000), 1000), 2000);
        assert!(session_lifetime_ms(10_000, Some(500), 1000) < 0);
    }
}
