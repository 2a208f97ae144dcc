//! TLS listeners on rustls (the `ring` provider): the server certificate
//! chain and key from PEM files, and Kafka's `ssl.client.auth`.
//!
//! With `required`, a client without a certificate signed by the CA file is
//! refused during the handshake; with `requested`, one without a
//! certificate is served as `User:ANONYMOUS` (one with a bad certificate is
//! still refused); with `none` (the default) no certificate is asked for.
//! A client certificate's subject becomes the connection's principal, as
//! Kafka's default principal builder makes it: the distinguished name in
//! RFC 2253's form, most specific first (`User:CN=alice,OU=eng,O=acme`). On a
//! SASL_SSL listener the SASL user is the principal instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::principal::Principal;

/// Kafka's `ssl.client.auth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Option<ClientAuth> {
        match s {
            "none" => Some(ClientAuth::None),
            "requested" => Some(ClientAuth::Requested),
            "required" => Some(ClientAuth::Required),
            _ => None,
        }
    }
}

/// The TLS settings every TLS listener of the broker shares (Kafka's
/// `ssl.*` settings, as PEM files: `ssl.keystore.*` and `ssl.truststore.*`
/// with `type=PEM`).
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first.
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    /// CA certificates client certificates must chain to (mTLS).
    pub cafile: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// The PEM certificates of `path` (at least one), or why not.
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The rustls server settings, or why the files do not make one.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&cfg.certfile)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.keyfile)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", cfg.keyfile.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match (cfg.client_auth, &cfg.cafile) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(
                "ssl_client_auth 'required' or 'requested' needs a CA file (ssl_cafile) to check client certificates against"
                    .into(),
            )
        }
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == ClientAuth::Requested {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("TLS: {e}"))?)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{} and {}: {e}",
            cfg.certfile.display(),
            cfg.keyfile.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// The principal of a verified client certificate: its subject, in RFC
/// 2253's form (see the module comment); `None` if it cannot be parsed
/// (rustls verified it, so that is unexpected; the caller then treats the
/// client as anonymous).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(Principal::user(rfc2253(parsed.subject())))
}

fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.6" => "C",
                        "2.5.4.7" => "L",
                        "2.5.4.8" => "ST",
                        "2.5.4.9" => "STREET",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        _ => oid.as_str(),
                    }
                    .to_string();
                    let value = atv.as_str().map(escape).unwrap_or_else(|_| {
                        // Not a string: RFC 2253's #hex of the value's bytes.
                        let hex: String = atv
                            .attr_value()
                            .data
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        format!("#{hex}")
                    });
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // RFC 2253 writes the most specific RDN (the last in the certificate) first.
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_in_rfc2253_order_and_escaped() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "NL");
        dn.push(rcgen::DnType::OrganizationName, "acme, inc");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let p = principal_of(cert.der()).expect("parsed");
        assert_eq!(p.to_string(), "User:CN=alice,O=acme\\, inc,C=NL");
    }

    #[test]
    fn missing_or_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let cfg = TlsConfig {
            certfile: empty.clone(),
            keyfile: empty,
            cafile: None,
            client_auth: ClientAuth::None,
        };
        let e = server_config(&cfg).expect_err("no cert");
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
