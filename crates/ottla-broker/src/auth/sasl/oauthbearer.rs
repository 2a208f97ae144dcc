//! OAUTHBEARER (RFC 7628) with Kafka's unsecured-JWT validator
//! (`OAuthBearerUnsecuredValidatorCallbackHandler`): the token's header must
//! say `"alg":"none"` and carry no signature, its `sub` names the principal,
//! its `exp` (seconds, required) bounds the session, `iat` (if present) may
//! not be after `exp`. It checks the token's shape, not who made it: anyone
//! can claim any name. For tests and development only; the broker warns
//! when it is enabled.
//!
//! A refused token is answered as RFC 7628 §3.2.2 says: an error challenge
//! (`{"status":"invalid_token"}`), to which the client replies `%x01`, and
//! then the failure (SASL_AUTHENTICATION_FAILED with the reason).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;

use super::{Authenticated, Step};
use crate::auth::principal::Principal;

enum State {
    Initial,
    /// The error challenge was sent; the client's `%x01` ends the exchange.
    Failed(String),
    Done,
}

pub struct OAuthBearerServer {
    state: State,
}

impl Default for OAuthBearerServer {
    fn default() -> Self {
        OAuthBearerServer::new()
    }
}

impl OAuthBearerServer {
    pub fn new() -> OAuthBearerServer {
        OAuthBearerServer {
            state: State::Initial,
        }
    }

    pub fn step(&mut self, token: &[u8], now_ms: i64) -> Result<Step, String> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Initial => match validate(token, now_ms) {
                Ok(done) => Ok(Step::Done(Vec::new(), done)),
                Err(why) => {
                    self.state = State::Failed(why);
                    Ok(Step::Challenge(br#"{"status":"invalid_token"}"#.to_vec()))
                }
            },
            State::Failed(why) => Err(format!("Authentication failed: {why}")),
            State::Done => Err("Unexpected OAUTHBEARER message: the exchange is over".into()),
        }
    }
}

/// The client's initial response: `n,[a=authzid],%x01auth=Bearer TOKEN%x01[k=v%x01]*%x01`.
fn bearer_token(msg: &str) -> Result<&str, String> {
    let bad = |why: &str| format!("Invalid OAUTHBEARER initial response: {why}");
    let rest = msg.strip_prefix("n,").ok_or_else(|| bad("no GS2 header"))?;
    let (_authzid, rest) = rest.split_once(',').ok_or_else(|| bad("no GS2 header"))?;
    let kv = rest
        .strip_prefix('\x01')
        .and_then(|r| r.strip_suffix("\x01\x01"))
        .ok_or_else(|| bad("bad key-value separators"))?;
    let auth = kv
        .split('\x01')
        .find_map(|p| p.strip_prefix("auth="))
        .ok_or_else(|| bad("no auth value"))?;
    let (scheme, token) = auth.split_once(' ').ok_or_else(|| bad("bad auth value"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(bad("not a bearer token"));
    }
    Ok(token.trim())
}

fn validate(msg: &[u8], now_ms: i64) -> Result<Authenticated, String> {
    let msg = std::str::from_utf8(msg).map_err(|_| "initial response is not UTF-8".to_string())?;
    let token = bearer_token(msg)?;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a compact JWS (three dot-separated parts)".into());
    };
    if !sig.is_empty() {
        return Err("an unsecured token must have no signature".into());
    }
    let json =
        |part: &str, what: &str| -> Result<serde_json::Map<String, serde_json::Value>, String> {
            let bytes = B64URL
                .decode(part.trim_end_matches('='))
                .map_err(|_| format!("the token's {what} is not base64url"))?;
            match serde_json::from_slice(&bytes) {
                Ok(serde_json::Value::Object(m)) => Ok(m),
                _ => Err(format!("the token's {what} is not a JSON object")),
            }
        };
    let header = json(header, "header")?;
    if header.get("alg").and_then(|v| v.as_str()) != Some("none") {
        return Err("an unsecured token's alg must be \"none\"".into());
    }
    let claims = json(payload, "payload")?;
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or("the token has no principal (sub claim)")?;
    let seconds = |name: &str| -> Result<Option<f64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| format!("the token's {name} claim is not a number")),
        }
    };
    let exp = seconds("exp")?.ok_or("the token has no exp claim")?;
    let exp_ms = (exp * 1000.0) as i64;
    if exp_ms <= now_ms {
        return Err("the token has expired".into());
    }
    if let Some(iat) = seconds("iat")? {
        if iat > exp {
            return Err("the token's iat is after its exp".into());
        }
    }
    Ok(Authenticated {
        principal: Principal::user(sub),
        credential_expiry_ms: Some(exp_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, payload: &str) -> Vec<u8> {
        format!(
            "n,,\x01auth=Bearer {}.{}.\x01\x01",
            B64URL.encode(header),
            B64URL.encode(payload)
        )
        .into_bytes()
    }

    #[test]
    fn librdkafka_style_token_accepted() {
        let now = 1_700_000_000_000;
        let t = token(
            r#"{"alg":"none"}"#,
            r#"{"sub":"alice","iat":1700000000.000,"exp":1700003600.000}"#,
        );
        let Step::Done(_, a) = OAuthBearerServer::new().step(&t, now).expect("ok") else {
            panic!("not done")
        };
        assert_eq!(a.principal.to_string(), "User:alice");
        assert_eq!(a.credential_expiry_ms, Some(1_700_003_600_000));
    }

    #[test]
    fn bad_tokens_get_the_error_challenge_then_fail() {
        let now = 1_700_000_000_000;
        for t in [
            token(r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":1800000000}"#),
            token(r#"{"alg":"none"}"#, r#"{"exp":1800000000}"#),
            token(r#"{"alg":"none"}"#, r#"{"sub":"a"}"#),
            token(r#"{"alg":"none"}"#, r#"{"sub":"a","exp":1600000000}"#),
            token(r#"{"alg":"none"}"#, r#"{"sub":"a","exp":"soon"}"#),
            token(r#"{"alg":"none"}"#, r#"[1]"#),
            b"n,,\x01auth=Bearer a.b.c\x01\x01".to_vec(),
            b"n,,auth=Bearer x".to_vec(),
            b"".to_vec(),
            vec![0xff, 0xfe],
        ] {
            let mut s = OAuthBearerServer::new();
            match s.step(&t, now) {
                Ok(Step::Challenge(c)) => assert_eq!(c, br#"{"status":"invalid_token"}"#),
                other => panic!("{t:?}: {other:?}"),
            }
            assert!(s.step(b"\x01", now).is_err());
        }
    }
}
