//! The listeners (Kafka's `listeners`: `NAME://HOST:PORT`, each with its
//! security protocol) and their accept loops: one task per connection until
//! shutdown.
//!
//! Each listener tells its clients its own advertised address (Metadata,
//! FindCoordinator): a client that came in over SASL_SSL is sent back to the
//! SASL_SSL port. A listener bound to 0.0.0.0 or :: advertises the
//! machine's host name, as Kafka does, not 127.0.0.1, which would send
//! remote clients to themselves; `advertised` overrides it.
//!
//! Connections are limited as Kafka limits them (`max.connections`,
//! `max.connections.per.ip`): past either limit a new connection is
//! accepted and closed at once, so the client sees its connection end
//! instead of waiting in the backlog, and the connections already served
//! go on. A slot is taken before the connection's task starts and given
//! back when the task ends, whatever ended it.
//!
//! Out of descriptors (EMFILE, ENFILE), `accept` fails until some close:
//! the loop waits and tries again, and says so once per such stretch, not
//! once per try.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::connection::Connection;
use crate::auth::sasl::Mechanism;
use crate::auth::SecurityProtocol;
use crate::{BrokerConfig, Shared};
use ottla_storage::error::{Error, Result};

/// One entry of Kafka's `listeners`, with its `advertised.listeners` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The listener's name; one of the security protocols' names (Kafka's
    /// default `listener.security.protocol.map`).
    pub name: String,
    pub protocol: SecurityProtocol,
    pub host: String,
    pub port: u16,
    /// The address clients are told for this listener; `None`: the bound
    /// address (the host name for 0.0.0.0 and ::). Port 0: the bound port.
    pub advertised: Option<(String, u16)>,
}

impl ListenerConfig {
    /// `NAME://HOST:PORT`, `NAME://[IPv6]:PORT` or `NAME://:PORT` (every
    /// address, as in Kafka).
    pub fn parse(text: &str) -> std::result::Result<ListenerConfig, String> {
        let (name, addr) = text
            .split_once("://")
            .ok_or_else(|| format!("expected NAME://HOST:PORT, got {text:?}"))?;
        let protocol = SecurityProtocol::parse(name).ok_or_else(|| {
            format!(
                "unknown listener {name:?} in {text:?}: one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )
        })?;
        let (host, port) = parse_host_port(addr)
            .ok_or_else(|| format!("expected NAME://HOST:PORT, got {text:?}"))?;
        Ok(ListenerConfig {
            name: protocol.name().to_string(),
            protocol,
            host: if host.is_empty() {
                "0.0.0.0".into()
            } else {
                host
            },
            port,
            advertised: None,
        })
    }
}

/// `HOST:PORT` or `[IPv6]:PORT`; the host may be empty.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some((host.to_string(), port.parse().ok()?))
}

/// A bound listener, as its connections see it.
pub struct ListenerInfo {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bound: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The listeners `config` asks for, checked and bound (synchronously, so
/// every port is connectable once the broker has started).
pub fn bind_all(config: &BrokerConfig) -> Result<Vec<(std::net::TcpListener, ListenerInfo)>> {
    let wanted = if config.listeners.is_empty() {
        vec![ListenerConfig {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            host: config.host.clone(),
            port: config.port,
            advertised: config.advertised_listener.clone(),
        }]
    } else {
        let mut wanted = config.listeners.clone();
        // `advertised_listener` (HOST:PORT, no name) is the first
        // listener's, unless that one names its own.
        if let Some(first) = wanted.first_mut().filter(|l| l.advertised.is_none()) {
            first.advertised = config.advertised_listener.clone();
        }
        wanted
    };
    let invalid = |m: String| Error::InvalidConfig(m);
    for (i, l) in wanted.iter().enumerate() {
        if wanted[..i].iter().any(|o| o.name == l.name) {
            return Err(invalid(format!("listener {} is listed twice", l.name)));
        }
        if wanted[..i]
            .iter()
            .any(|o| o.port == l.port && l.port != 0 && o.host == l.host)
        {
            return Err(invalid(format!(
                "listeners {} and another share {}:{}",
                l.name, l.host, l.port
            )));
        }
    }
    let tls = if wanted.iter().any(|l| l.protocol.uses_tls()) {
        let cfg = config.tls.as_ref().ok_or_else(|| {
            invalid("an SSL or SASL_SSL listener needs a certificate and key (ssl_certfile, ssl_keyfile)".into())
        })?;
        let server = crate::auth::tls::server_config(cfg).map_err(invalid)?;
        Some(tokio_rustls::TlsAcceptor::from(server))
    } else {
        None
    };
    if wanted.iter().any(|l| l.protocol.uses_sasl()) && config.sasl_enabled_mechanisms.is_empty() {
        return Err(invalid(
            "a SASL listener needs at least one mechanism (sasl_enabled_mechanisms)".into(),
        ));
    }
    let mut out = Vec::with_capacity(wanted.len());
    for l in wanted {
        let where_ = format!("{}:{}", l.host, l.port);
        let bind_err = |e: std::io::Error| Error::io("listen on", std::path::Path::new(&where_), e);
        let std_listener =
            std::net::TcpListener::bind((l.host.as_str(), l.port)).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let bound = std_listener.local_addr().map_err(bind_err)?;
        let (advertised_host, advertised_port) = match &l.advertised {
            Some((h, p)) => (h.clone(), if *p == 0 { bound.port() } else { *p }),
            None => (advertised_host_for(bound.ip()), bound.port()),
        };
        warn_if_open(&l, bound, config);
        out.push((
            std_listener,
            ListenerInfo {
                name: l.name,
                protocol: l.protocol,
                bound,
                advertised_host,
                advertised_port,
                tls: l.protocol.uses_tls().then(|| tls.clone()).flatten(),
            },
        ));
    }
    Ok(out)
}

/// The host clients are told for a listener bound to `ip`: the address
/// itself, or for 0.0.0.0 and :: the machine's host name (Kafka's
/// canonical host name), 127.0.0.1 only if the name is unknown.
pub fn advertised_host_for(ip: IpAddr) -> String {
    if !ip.is_unspecified() {
        return ip.to_string();
    }
    hostname().unwrap_or_else(|| "127.0.0.1".into())
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer
    // we own; it is NUL-terminated unless truncated, which the search below
    // tolerates.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Safe defaults: a listener reachable from other machines that lets
/// anyone in is said out loud, on stderr, at every start.
fn warn_if_open(l: &ListenerConfig, bound: SocketAddr, config: &BrokerConfig) {
    for w in warnings(l, bound, config) {
        crate::errors::warn(&w);
    }
}

/// What `warn_if_open` says about listener `l` bound to `bound`.
pub fn warnings(l: &ListenerConfig, bound: SocketAddr, config: &BrokerConfig) -> Vec<String> {
    let mut out = Vec::new();
    let client_auth = config.tls.as_ref().map(|t| t.client_auth);
    let unauthenticated = match l.protocol {
        SecurityProtocol::Plaintext => true,
        SecurityProtocol::Ssl => client_auth != Some(crate::auth::tls::ClientAuth::Required),
        _ => false,
    };
    if unauthenticated && !bound.ip().is_loopback() {
        out.push(format!(
            "WARNING: listener {} on {bound} accepts clients WITHOUT AUTHENTICATION: anyone who \
             can reach this address can read, write and delete every topic. Listen on 127.0.0.1, \
             or use a SASL_SSL listener (or SSL with ssl_client_auth=required); see docs/security.md",
            l.name
        ));
    }
    if l.protocol.uses_sasl()
        && config
            .sasl_enabled_mechanisms
            .contains(&Mechanism::OAuthBearer)
    {
        out.push(format!(
            "WARNING: listener {} enables OAUTHBEARER with the UNSECURED token validator: any \
             client can claim any name. For tests and development only",
            l.name
        ));
    }
    out
}

/// How long the loop waits after a failed `accept` before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Accept on `listener` until shutdown; `limits` are the broker's, shared
/// by all its listeners (`max.connections` counts every connection).
pub async fn run(
    listener: TcpListener,
    info: Arc<ListenerInfo>,
    limits: Arc<ConnectionLimits>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    // EMFILE and friends: back off briefly instead of
                    // spinning, and tell the operator once.
                    Err(e) => {
                        if !failing {
                            failing = true;
                            crate::errors::warn(&format!(
                                "cannot accept connections: {e} (open connections: {}; \
                                 raise the open-file limit, `ulimit -n`, or lower \
                                 max_connections); retrying",
                                limits.open()
                            ));
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if failing {
                    failing = false;
                    crate::errors::warn("accepting connections again");
                }
                let slot = match limits.try_acquire(peer.ip()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        crate::errors::debug(&format!("{peer}: connection refused: {why}"));
                        drop(socket);
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let (info, shared, shutdown, done) =
                    (info.clone(), shared.clone(), shutdown.clone(), done.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    // TLS's handshake runs here, in the connection's own task.
                    if let Some(conn) = Connection::accept(socket, peer, info, shared, shutdown, done).await {
                        conn.run().await;
                    }
                });
            }
        }
    }
}

/// Open connections, in total and per client address, against their limits.
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection's place in [`ConnectionLimits`], given back on drop.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().0
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, String> {
        let mut open = self.open.lock();
        if open.0 >= self.max_total {
            return Err(format!(
                "{} connections open, max_connections is {}",
                open.0, self.max_total
            ));
        }
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(format!(
                "{from_ip} connections open from {ip}, max_connections_per_ip is {}",
                self.max_per_ip
            ));
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_in_total_and_per_address_and_free_on_drop() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = limits.try_acquire(a).expect("a1");
        let _a2 = limits.try_acquire(a).expect("a2");
        assert!(limits.try_acquire(a).is_err(), "third from one address");
        let _b1 = limits.try_acquire(b).expect("b1");
        assert!(limits.try_acquire(b).is_err(), "fourth in total");
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.try_acquire(a).expect("a slot freed");
    }

    #[test]
    fn listener_strings_parse_as_kafka_writes_them() {
        let l = ListenerConfig::parse("SASL_SSL://127.0.0.1:9094").expect("parse");
        assert_eq!(
            (l.protocol, l.host.as_str(), l.port),
            (SecurityProtocol::SaslSsl, "127.0.0.1", 9094)
        );
        let l = ListenerConfig::parse("ssl://[::1]:0").expect("parse");
        assert_eq!((l.name.as_str(), l.host.as_str()), ("SSL", "::1"));
        let l = ListenerConfig::parse("PLAINTEXT://:9092").expect("parse");
        assert_eq!(l.host, "0.0.0.0");
        for bad in [
            "127.0.0.1:9092",
            "FOO://h:1",
            "SSL://h",
            "SSL://h:x",
            "SSL://h:70000",
        ] {
            assert!(ListenerConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_listeners_beyond_loopback_are_warned_about() {
        let mut config = BrokerConfig::default();
        let any: SocketAddr = "0.0.0.0:9092".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:9092".parse().expect("addr");
        let l = |s: &str| ListenerConfig::parse(s).expect("listener");
        assert_eq!(warnings(&l("PLAINTEXT://:9092"), any, &config).len(), 1);
        assert!(
            warnings(&l("PLAINTEXT://:9092"), any, &config)[0].contains("WITHOUT AUTHENTICATION")
        );
        assert!(warnings(&l("PLAINTEXT://127.0.0.1:9092"), lo, &config).is_empty());
        assert!(warnings(&l("SASL_SSL://:9092"), any, &config).is_empty());
        assert!(warnings(&l("SASL_PLAINTEXT://:9092"), any, &config).is_empty());
        config.tls = Some(crate::auth::tls::TlsConfig {
            certfile: "c".into(),
            keyfile: "k".into(),
            cafile: None,
            client_auth: crate::auth::tls::ClientAuth::Requested,
        });
        assert_eq!(warnings(&l("SSL://:9092"), any, &config).len(), 1);
        if let Some(t) = config.tls.as_mut() {
            t.client_auth = crate::auth::tls::ClientAuth::Required;
        }
        assert!(warnings(&l("SSL://:9092"), any, &config).is_empty());
        config.sasl_enabled_mechanisms.push(Mechanism::OAuthBearer);
        assert!(warnings(&l("SASL_SSL://127.0.0.1:9092"), lo, &config)[0].contains("UNSECURED"));
    }

    #[test]
    fn every_address_advertises_a_name_not_loopback() {
        let ip: IpAddr = "0.0.0.0".parse().expect("ip");
        let host = advertised_host_for(ip);
        assert_eq!(Some(host), hostname().or(Some("127.0.0.1".into())));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(advertised_host_for(ip), "127.0.0.1");
    }
}
