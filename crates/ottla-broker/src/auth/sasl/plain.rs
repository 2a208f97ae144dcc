//! PLAIN (RFC 4616): `authzid NUL authcid NUL password` in one message.
//!
//! The password is checked against the user's stored SCRAM credential (the
//! salted password derived again with its salt and iterations), so PLAIN
//! and SCRAM share one set of users and no password is stored. PLAIN sends
//! the password itself: use it over TLS (SASL_SSL) only.

use super::{Authenticated, Step};
use crate::auth::credentials::{CredentialStore, ScramMechanism};
use crate::auth::principal::Principal;

const INVALID: &str = "Authentication failed: Invalid username or password";

pub fn authenticate(token: &[u8], creds: &CredentialStore) -> Result<Step, String> {
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    let user = std::str::from_utf8(user)
        .map_err(|_| "Invalid SASL/PLAIN response: username is not UTF-8".to_string())?;
    if user.is_empty() {
        return Err("Authentication failed: username not specified".into());
    }
    if password.is_empty() {
        return Err("Authentication failed: password not specified".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(
            "Authentication failed: Client requested an authorization id that is different from username"
                .into(),
        );
    }
    let users = creds.users().map_err(|e| {
        crate::errors::warn(&format!("SCRAM credentials unreadable: {e}"));
        INVALID.to_string()
    })?;
    // Any of the user's credentials tells the password; the cheaper first.
    let cred = users.get(user).and_then(|m| {
        ScramMechanism::ALL
            .into_iter()
            .find_map(|mech| m.get(&mech).map(|c| (mech, c)))
    });
    match cred {
        Some((mech, c)) if c.matches_password(mech, password) => Ok(Step::Done(
            Vec::new(),
            Authenticated {
                principal: Principal::user(user),
                credential_expiry_ms: None,
            },
        )),
        _ => Err(INVALID.into()),
    }
}
