//! Brokers as clients of each other: the inter-broker listener's security
//! (Kafka's `inter.broker.listener.name` and the broker's own client
//! settings for it) and the controller listener's mutual TLS.
//!
//! - TLS client settings from the broker's own files, as a Kafka broker uses
//!   its keystore and truststore as a client: the configured CA
//!   (`ssl_cafile`) is the trust, the broker's certificate and key
//!   (`ssl_certfile`, `ssl_keyfile`) its client certificate (mTLS), and the
//!   peer's certificate must name the address connected to (an IP address
//!   SAN for `127.0.0.1`, a DNS name otherwise).
//! - SASL client credentials (PLAIN, SCRAM-SHA-256/512) for a SASL
//!   inter-broker listener; the SCRAM client side of RFC 5802 is here
//!   ([`ScramClient`]), over the same primitives the server uses.
//! - [`PeerSecurity`]: what `replica::fetcher::PeerConnection::connect`
//!   applies to every connection to another broker's Kafka listener; a
//!   cluster node sets the process's one ([`set_peer_security`]) before its
//!   fetchers start, as `ottla serve` runs one node per process.
//! - [`ControlTls`]: both sides of the controller listener: a server that
//!   requires a client certificate chaining to the CA (a peer without one is
//!   dropped before any Raft byte is read) and a client that presents the
//!   node's certificate.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::credentials::{constant_time_eq, random_bytes, ScramMechanism};
use super::tls::{certs, ClientAuth, TlsConfig};
use super::SecurityProtocol;

/// A connection's bytes, plain or TLS, for the broker-to-broker clients.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a TLS handshake with a peer may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// SASL credentials a broker authenticates to other brokers with.
#[derive(Clone)]
pub struct SaslCredentials {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "SaslCredentials({}, {})", self.mechanism, self.username)
    }
}

impl SaslCredentials {
    pub fn check(&self) -> Result<(), String> {
        if !matches!(
            self.mechanism.as_str(),
            "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
        ) {
            return Err(format!(
                "inter-broker SASL mechanism {:?}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                self.mechanism
            ));
        }
        if self.username.is_empty() {
            return Err("the inter-broker SASL user name is empty".into());
        }
        Ok(())
    }
}

/// How this broker connects to other brokers' Kafka listeners.
#[derive(Clone, Debug)]
pub struct PeerSecurity {
    pub protocol: SecurityProtocol,
    pub tls: Option<Arc<ClientConfig>>,
    pub sasl: Option<SaslCredentials>,
}

impl PeerSecurity {
    /// The client side of `protocol` from the broker's TLS files and the
    /// inter-broker SASL credentials.
    pub fn new(
        protocol: SecurityProtocol,
        tls: Option<&TlsConfig>,
        sasl: Option<SaslCredentials>,
    ) -> Result<PeerSecurity, String> {
        let tls = if protocol.uses_tls() {
            let cfg = tls.ok_or_else(|| {
                format!("the {protocol} inter-broker listener needs ssl_certfile and ssl_keyfile")
            })?;
            Some(client_config(cfg)?)
        } else {
            None
        };
        let sasl = if protocol.uses_sasl() {
            let s = sasl.ok_or_else(|| {
                format!(
                    "the {protocol} inter-broker listener needs inter_broker_sasl_mechanism, \
                     inter_broker_sasl_username and a password"
                )
            })?;
            s.check()?;
            Some(s)
        } else {
            None
        };
        Ok(PeerSecurity {
            protocol,
            tls,
            sasl,
        })
    }
}

static PEER_SECURITY: RwLock<Option<Arc<PeerSecurity>>> = RwLock::new(None);

/// Sets how this process's brokers connect to other brokers (`None`:
/// PLAINTEXT, no authentication).
pub fn set_peer_security(security: Option<PeerSecurity>) {
    *PEER_SECURITY.write() = security.map(Arc::new);
}

/// How to connect to other brokers now.
pub fn peer_security() -> Option<Arc<PeerSecurity>> {
    PEER_SECURITY.read().clone()
}

/// The TLS client settings of a broker connecting to another: trust the
/// CA file, present the broker's own certificate.
pub fn client_config(cfg: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let ca = cfg.cafile.as_ref().ok_or_else(|| {
        "TLS between brokers needs a CA file (ssl_cafile) to check the other broker's certificate"
            .to_string()
    })?;
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let chain = certs(&cfg.certfile)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.keyfile)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", cfg.keyfile.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} and {}: {e}",
                cfg.certfile.display(),
                cfg.keyfile.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// The name a peer's certificate must carry: its IP address, or host name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}

/// TLS over `stream` to a peer known as `host`.
pub async fn tls_connect(
    stream: TcpStream,
    config: &Arc<ClientConfig>,
    host: &str,
) -> std::io::Result<Box<dyn Io>> {
    let name =
        server_name(host).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    Ok(Box::new(tls))
}

/// Both sides of the controller listener's mutual TLS.
#[derive(Clone)]
pub struct ControlTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlTls")
    }
}

impl ControlTls {
    /// From the node's certificate, key and CA: the server requires a
    /// client certificate that chains to the CA.
    pub fn new(cfg: &TlsConfig) -> Result<ControlTls, String> {
        if cfg.cafile.is_none() {
            return Err(
                "the SSL controller listener needs ssl_cafile: both sides check the other's certificate"
                    .into(),
            );
        }
        let server = super::tls::server_config(&TlsConfig {
            client_auth: ClientAuth::Required,
            ..cfg.clone()
        })?;
        Ok(ControlTls {
            acceptor: tokio_rustls::TlsAcceptor::from(server),
            client: client_config(cfg)?,
        })
    }
}

/// Completes a cluster node's settings from its bound listeners before it
/// starts: every listener as an endpoint to register, the inter-broker
/// listener (Kafka's `inter.broker.listener.name`, default the first) and
/// this process's client side of it, and the controller listener's TLS.
pub fn prepare_cluster(
    cc: &mut crate::cluster::ClusterConfig,
    listeners: &[&crate::net::listener::ListenerInfo],
    tls: Option<&TlsConfig>,
) -> Result<(), String> {
    cc.endpoints = listeners
        .iter()
        .map(|l| ottla_meta::records::Endpoint {
            name: l.name.clone(),
            host: l.advertised_host.clone(),
            port: l.advertised_port,
            security_protocol: l.protocol.name().into(),
        })
        .collect();
    let inter = match &cc.inter_broker_listener_name {
        Some(name) => listeners
            .iter()
            .find(|l| l.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!(
                    "inter-broker listener {name:?} is not one of the listeners ({})",
                    listeners
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        None => listeners
            .first()
            .ok_or_else(|| "a cluster node needs a listener".to_string())?,
    };
    cc.inter_broker_listener_name = Some(inter.name.clone());
    let security = match inter.protocol {
        SecurityProtocol::Plaintext => None,
        p => Some(PeerSecurity::new(p, tls, cc.inter_broker_sasl.clone())?),
    };
    set_peer_security(security);
    if cc.controller_ssl {
        let tls = tls.ok_or_else(|| {
            "the SSL controller listener needs ssl_certfile, ssl_keyfile and ssl_cafile".to_string()
        })?;
        cc.controller_tls = Some(ControlTls::new(tls)?);
    }
    Ok(())
}

/// A warning at most every 5 s per `key` slot (a peer refusing us is
/// retried every 100 ms: say why, without flooding the log).
pub fn warn_limited(slot: &AtomicU64, msg: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 5_001;
    let last = slot.load(Ordering::Relaxed);
    if now.saturating_sub(last) > 5_000
        && slot
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        crate::errors::warn(msg);
    }
}

/// The client side of a SCRAM exchange (RFC 5802): `first()`, then
/// `finish(server_first)`, then `verify(server_final)`.
pub struct ScramClient {
    mech: ScramMechanism,
    username: String,
    password: String,
    nonce: String,
    auth_message: String,
    server_key: Vec<u8>,
}

impl ScramClient {
    pub fn new(mech: ScramMechanism, username: &str, password: &str) -> Result<Self, String> {
        Ok(ScramClient {
            mech,
            username: username.replace('=', "=3D").replace(',', "=2C"),
            password: password.to_string(),
            nonce: B64.encode(random_bytes(24)?),
            auth_message: String::new(),
            server_key: Vec::new(),
        })
    }

    fn bare(&self) -> String {
        format!("n={},r={}", self.username, self.nonce)
    }

    /// The client-first message.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare()).into_bytes()
    }

    /// The client-final message, from the server-first one.
    pub fn finish(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first not UTF-8")?;
        let field = |k: &str| {
            text.split(',')
                .find_map(|f| f.strip_prefix(k))
                .ok_or_else(|| format!("server-first without {k}"))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = B64
            .decode(field("s=")?)
            .map_err(|_| "server-first salt not base64")?;
        let iterations: u32 = field("i=")?
            .parse()
            .map_err(|_| "server-first iterations not a number")?;
        // Kafka's bounds: a peer cannot make this broker spend more.
        if !(super::credentials::MIN_ITERATIONS..=super::credentials::MAX_ITERATIONS)
            .contains(&iterations)
        {
            return Err(format!("{iterations} SCRAM iterations"));
        }
        let salted = self
            .mech
            .salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = self.mech.hmac(&salted, b"Client Key");
        let stored_key = self.mech.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{text},{without_proof}", self.bare());
        let signature = self.mech.hmac(&stored_key, self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_key = self.mech.hmac(&salted, b"Server Key");
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server knew our keys.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("the server refused: {e}"));
        }
        let v = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or("server-final without a signature")?;
        let expected = self
            .mech
            .hmac(&self.server_key, self.auth_message.as_bytes());
        if constant_time_eq(&v, &expected) {
            Ok(())
        } else {
            Err("the server's signature is wrong (it does not hold our credential)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credentials::{CredentialStore, ScramCredential};
    use crate::auth::sasl::scram::ScramServer;

    #[test]
    fn the_client_logs_in_to_our_server_and_a_wrong_password_does_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = CredentialStore::new(dir.path());
        let mech = ScramMechanism::Sha512;
        let cred = ScramCredential::from_password(mech, "s3cret", 4096).expect("cred");
        store
            .update(|u| {
                u.entry("broker".into()).or_default().insert(mech, cred);
                Ok(())
            })
            .expect("update");
        for (password, ok) in [("s3cret", true), ("wrong", false)] {
            let mut client = ScramClient::new(mech, "broker", password).expect("client");
            let mut server = ScramServer::new(mech);
            let first = server.step(&client.first(), &store).expect("first");
            let crate::auth::sasl::Step::Challenge(challenge) = first else {
                panic!("expected a challenge");
            };
            let fin = client.finish(&challenge).expect("final");
            match server.step(&fin, &store) {
                Ok(crate::auth::sasl::Step::Done(response, _)) => {
                    assert!(ok);
                    client.verify(&response).expect("server signature");
                }
                Err(_) => assert!(!ok),
                Ok(crate::auth::sasl::Step::Challenge(_)) => panic!("unexpected step"),
            }
        }
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
    }
}
