//! The SASL gate: on a SASL listener, which requests may reach `dispatch`
//! before (and between) authentications. Kafka's `SaslServerAuthenticator`
//! rules:
//! - before a SaslHandshake: ApiVersions and SaslHandshake only (anything
//!   else closes the connection, unanswered);
//! - between SaslHandshake and the end of the exchange: SaslAuthenticate
//!   (and a SaslHandshake, answered ILLEGAL_SASL_STATE before the close);
//! - once authenticated: everything; a SaslHandshake starts a
//!   re-authentication (KIP-368), after which SaslAuthenticate only until
//!   it ends;
//! - past the session's lifetime (`connections.max.reauth.ms`, a token's
//!   expiry) anything but a SaslHandshake closes the connection.
//!
//! The handlers (`api::sasl`) run the exchanges and answer out-of-order
//! SASL requests with ILLEGAL_SASL_STATE; this gate only decides what may
//! be handled at all.

use kafka_protocol::messages::ApiKey;
use tokio::time::Instant;

use crate::api::sasl::SaslState;
use crate::dispatch::Session;

/// `Err(why)` if the connection must close instead of handling a request
/// with API key `api`.
pub fn admit(session: &Session, api: i16) -> Result<(), String> {
    if !session.protocol().uses_sasl() {
        return Ok(());
    }
    let is = |k: ApiKey| api == k as i16;
    let sasl_api = is(ApiKey::SaslHandshake) || is(ApiKey::SaslAuthenticate);
    match &session.sasl.state {
        SaslState::Handshake if sasl_api || is(ApiKey::ApiVersions) => Ok(()),
        SaslState::Handshake => Err(format!(
            "unexpected request (API key {api}) during the SASL handshake"
        )),
        SaslState::Authenticating { .. } if sasl_api => Ok(()),
        SaslState::Authenticating { .. } => Err(format!(
            "unexpected request (API key {api}) during SASL authentication"
        )),
        SaslState::Authenticated { expires, .. } => {
            if is(ApiKey::SaslHandshake) {
                return Ok(());
            }
            match expires {
                Some(at) if Instant::now() >= *at => Err(
                    "the SASL session expired (connections.max.reauth.ms or the credential's lifetime) \
                     and the client did not re-authenticate"
                        .into(),
                ),
                _ => Ok(()),
            }
        }
    }
}
