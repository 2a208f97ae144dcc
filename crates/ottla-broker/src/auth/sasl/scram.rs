//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), as Kafka's
//! `ScramSaslServer`: no channel binding (`n,,`), an authorization id only
//! if it names the user, extensions accepted and ignored except
//! `tokenauth=true` (delegation tokens, which this broker does not issue).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::{Authenticated, Step};
use crate::auth::credentials::{
    constant_time_eq, random_bytes, CredentialStore, ScramCredential, ScramMechanism,
};
use crate::auth::principal::Principal;

enum State {
    ReceiveClientFirst,
    ReceiveClientFinal {
        user: String,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        cred: ScramCredential,
    },
    Done,
}

pub struct ScramServer {
    mech: ScramMechanism,
    state: State,
}

impl ScramServer {
    pub fn new(mech: ScramMechanism) -> ScramServer {
        ScramServer {
            mech,
            state: State::ReceiveClientFirst,
        }
    }

    fn invalid(&self) -> String {
        format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            self.mech.name()
        )
    }

    pub fn step(&mut self, token: &[u8], creds: &CredentialStore) -> Result<Step, String> {
        let msg = std::str::from_utf8(token)
            .map_err(|_| "Invalid SCRAM message: not UTF-8".to_string())?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::ReceiveClientFirst => self.client_first(msg, creds),
            State::ReceiveClientFinal {
                user,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
                cred,
            } => {
                let ok = client_final(
                    self.mech,
                    msg,
                    &gs2_header,
                    &client_first_bare,
                    &server_first,
                    &nonce,
                    &cred,
                )?;
                match ok {
                    Some(server_final) => Ok(Step::Done(
                        server_final.into_bytes(),
                        Authenticated {
                            principal: Principal::user(user),
                            credential_expiry_ms: None,
                        },
                    )),
                    None => Err(self.invalid()),
                }
            }
            State::Done => Err("Unexpected SCRAM message: the exchange is over".into()),
        }
    }

    fn client_first(&mut self, msg: &str, creds: &CredentialStore) -> Result<Step, String> {
        let bad = |why: &str| format!("Invalid SCRAM client first message: {why}");
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg.split_once(',').ok_or_else(|| bad("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(bad("channel binding is not supported")),
            _ => return Err(bad("bad channel-binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or_else(|| bad("no GS2 header"))?;
        let gs2_header = format!("{flag},{authzid},");
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or_else(|| bad("no user name"))?;
        let user = decode_saslname(user).ok_or_else(|| bad("bad user name"))?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or_else(|| bad("no nonce"))?;
        for ext in fields {
            if ext == "tokenauth=true" {
                return Err("Authentication failed: delegation tokens are not supported".into());
            }
        }
        if let Some(a) = authzid.strip_prefix("a=") {
            if decode_saslname(a).as_deref() != Some(user.as_str()) {
                return Err(
                    "Authentication failed: Client requested an authorization id that is different from username"
                        .into(),
                );
            }
        } else if !authzid.is_empty() {
            return Err(bad("bad authorization id"));
        }
        let cred = creds
            .get(&user, self.mech)
            .map_err(|e| {
                crate::errors::warn(&format!("SCRAM credentials unreadable: {e}"));
                self.invalid()
            })?
            .ok_or_else(|| self.invalid())?;
        let server_nonce = random_bytes(24)?;
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&cred.salt),
            cred.iterations
        );
        self.state = State::ReceiveClientFinal {
            user,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            cred,
        };
        Ok(Step::Challenge(server_first.into_bytes()))
    }
}

/// `v=ServerSignature` if the client's proof is right, `None` if wrong, an
/// error if the message is malformed.
fn client_final(
    mech: ScramMechanism,
    msg: &str,
    gs2_header: &str,
    client_first_bare: &str,
    server_first: &str,
    nonce: &str,
    cred: &ScramCredential,
) -> Result<Option<String>, String> {
    let bad = |why: &str| format!("Invalid SCRAM client final message: {why}");
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or_else(|| bad("no proof"))?;
    let mut fields = without_proof.split(',');
    let cbind = fields
        .next()
        .and_then(|f| f.strip_prefix("c="))
        .ok_or_else(|| bad("no channel binding"))?;
    if B64.decode(cbind).ok().as_deref() != Some(gs2_header.as_bytes()) {
        return Err(bad("channel binding does not match the GS2 header"));
    }
    let got_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or_else(|| bad("no nonce"))?;
    // RFC 5802: the nonce the server sent, echoed. librdkafka up to 2.x
    // (2.0 seen: kcat on Debian 12) sends its own nonce again in front of
    // it; Kafka long accepted that (`endsWith`). Accepted here in exactly
    // that form (the client's nonce, then the nonce), not any suffix
    // match; the proof covers the message as sent either way.
    let client_nonce = client_first_bare
        .split(',')
        .find_map(|f| f.strip_prefix("r="))
        .unwrap_or_default();
    let librdkafka_form =
        !client_nonce.is_empty() && got_nonce.strip_suffix(nonce) == Some(client_nonce);
    if got_nonce != nonce && !librdkafka_form {
        return Err(bad("nonce does not match"));
    }
    let proof = B64.decode(proof).map_err(|_| bad("proof is not base64"))?;
    if proof.len() != mech.hash_len() {
        return Ok(None);
    }
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let client_signature = mech.hmac(&cred.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(&client_signature)
        .map(|(a, b)| a ^ b)
        .collect();
    if !constant_time_eq(&mech.hash(&client_key), &cred.stored_key) {
        return Ok(None);
    }
    let server_signature = mech.hmac(&cred.server_key, auth_message.as_bytes());
    Ok(Some(format!("v={}", B64.encode(server_signature))))
}

/// RFC 5802's saslname: `=2C` is `,`, `=3D` is `=`; any other `=` is an error.
fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3)?;
        match esc {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side of the exchange, for the tests: RFC 5802 from the
    /// client's end.
    fn client_final_for(
        mech: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce_prefix: &str,
    ) -> String {
        let mut salt = None;
        let mut iters = 0;
        let mut nonce = "";
        for f in server_first.split(',') {
            if let Some(v) = f.strip_prefix("s=") {
                salt = Some(B64.decode(v).expect("salt"));
            } else if let Some(v) = f.strip_prefix("i=") {
                iters = v.parse().expect("iters");
            } else if let Some(v) = f.strip_prefix("r=") {
                nonce = v;
            }
        }
        let salt = salt.expect("salt");
        let salted = mech.salted_password(password.as_bytes(), &salt, iters);
        let client_key = mech.hmac(&salted, b"Client Key");
        let stored = mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce_prefix}{nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = mech.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn store_with(user: &str, password: &str) -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = CredentialStore::new(dir.path());
        store
            .update(|u| {
                for m in ScramMechanism::ALL {
                    let c = ScramCredential::from_password(m, password, 4096)?;
                    u.entry(user.into()).or_default().insert(m, c);
                }
                Ok(())
            })
            .expect("update");
        (dir, store)
    }

    fn run(
        mech: ScramMechanism,
        store: &CredentialStore,
        user: &str,
        pw: &str,
    ) -> Result<Step, String> {
        let mut s = ScramServer::new(mech);
        let bare = format!("n={user},r=fyko+d2lbbFgONRv9qkxdawL");
        let Step::Challenge(first) = s.step(format!("n,,{bare}").as_bytes(), store)? else {
            panic!("expected a challenge");
        };
        let first = String::from_utf8(first).expect("utf8");
        assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL"));
        let fin = client_final_for(mech, pw, &bare, &first, "");
        s.step(fin.as_bytes(), store)
    }

    #[test]
    fn right_password_authenticates_wrong_one_fails() {
        let (_d, store) = store_with("ali,ce", "s3cret");
        for m in ScramMechanism::ALL {
            match run(m, &store, "ali=2Cce", "s3cret").expect("ok") {
                Step::Done(v, a) => {
                    assert!(v.starts_with(b"v="));
                    assert_eq!(a.principal.to_string(), "User:ali,ce");
                }
                Step::Challenge(_) => panic!("not done"),
            }
            let e = run(m, &store, "ali=2Cce", "wrong").expect_err("wrong password");
            assert!(e.contains("invalid credentials"), "{e}");
            let e = run(m, &store, "bob", "s3cret").expect_err("unknown user");
            assert!(e.contains("invalid credentials"), "{e}");
        }
    }

    /// librdkafka 2.0's client-final names its nonce again before the
    /// server's (`r=<client nonce><client nonce><server nonce>`): accepted,
    /// as Kafka accepts it; any other prefix is not.
    #[test]
    fn librdkafkas_repeated_client_nonce_is_accepted_nothing_else() {
        let (_d, store) = store_with("alice", "pw");
        let mech = ScramMechanism::Sha256;
        for (prefix, ok) in [("cnonce", true), ("other", false), ("cnon", false)] {
            let mut s = ScramServer::new(mech);
            let bare = "n=alice,r=cnonce";
            let Ok(Step::Challenge(first)) = s.step(format!("n,,{bare}").as_bytes(), &store) else {
                panic!("expected a challenge");
            };
            let first = String::from_utf8(first).expect("utf8");
            // The proof is over the message as sent, quirky nonce included.
            let fin = client_final_for(mech, "pw", bare, &first, prefix);
            let got = s.step(fin.as_bytes(), &store);
            assert_eq!(got.is_ok(), ok, "{prefix}: {:?}", got.err());
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let (_d, store) = store_with("alice", "pw");
        for first in [
            "",
            "n",
            "n,",
            "x,,n=alice,r=abc",
            "p=tls-unique,,n=alice,r=abc",
            "n,,r=abc",
            "n,,n=alice",
            "n,,n=alice,r=",
            "n,a=bob,n=alice,r=abc",
            "n,,n=al=ZZice,r=abc",
            "n,,n=alice,r=abc,tokenauth=true",
        ] {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            assert!(s.step(first.as_bytes(), &store).is_err(), "{first:?}");
        }
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        s.step(b"n,,n=alice,r=abc", &store).expect("first");
        for fin in [
            "",
            "c=biws",
            "c=xxxx,r=abc,p=AAAA",
            "c=biws,r=other,p=AAAA",
            "c=biws,r=abc,p=!!",
        ] {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            s.step(b"n,,n=alice,r=abc", &store).expect("first");
            assert!(s.step(fin.as_bytes(), &store).is_err(), "{fin:?}");
        }
    }
}
