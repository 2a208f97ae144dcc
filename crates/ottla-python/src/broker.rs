//! `ottla.Broker`: the Kafka wire-protocol broker on a background tokio
//! runtime, listening by the time the constructor returns.

use std::time::Duration;

use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use super::types::py_repr_str;
use ottla_broker::cluster::ClusterConfig;
use ottla_broker::{Broker as Engine, BrokerConfig};
use ottla_storage::log::Durability;
use ottla_storage::store::Store;

/// The cluster settings of `ottla.Broker(..., node_id=...)`, checked; `None`
/// without a node id (a broker alone).
#[allow(clippy::too_many_arguments)]
fn cluster_config(
    node_id: Option<i64>,
    controller_listen: Option<&str>,
    voters: Option<&str>,
    default_replication_factor: i64,
    min_insync_replicas: i64,
    replica_lag_time_max_ms: i64,
    broker_heartbeat_interval_ms: i64,
    broker_session_timeout_ms: i64,
    election_timeout_ms: i64,
    offsets_topic_replication_factor: i64,
) -> PyResult<Option<ClusterConfig>> {
    let Some(node_id) = node_id else {
        if controller_listen.is_some() || voters.is_some() {
            return Err(PyValueError::new_err(
                "controller_listen and controller_quorum_voters need a node_id",
            ));
        }
        return Ok(None);
    };
    let (Some(listen), Some(voters)) = (controller_listen, voters) else {
        return Err(PyValueError::new_err(
            "a node_id needs controller_listen and controller_quorum_voters",
        ));
    };
    let node_id = i32::try_from(node_id)
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            PyValueError::new_err(format!("node_id must be 0 or more, got {node_id}"))
        })?;
    let voters = ottla_broker::cluster::parse_voters(voters).map_err(|e| {
        PyValueError::new_err(format!(
            "controller_quorum_voters must be ID@HOST:PORT,...: {e}"
        ))
    })?;
    let in_range = |name: &str, v: i64, min: i64, max: i64| -> PyResult<i64> {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(PyValueError::new_err(format!(
                "{name} must be between {min} and {max}, got {v}"
            )))
        }
    };
    let mut c = ClusterConfig::new(node_id, listen, voters);
    c.default_replication_factor = in_range(
        "default_replication_factor",
        default_replication_factor,
        1,
        32767,
    )? as i16;
    c.min_insync_replicas = in_range(
        "min_insync_replicas",
        min_insync_replicas,
        1,
        i32::MAX as i64,
    )? as i32;
    c.replica_lag_time_max_ms = in_range(
        "replica_lag_time_max_ms",
        replica_lag_time_max_ms,
        1,
        i32::MAX as i64,
    )? as u64;
    c.broker_heartbeat_interval_ms = in_range(
        "broker_heartbeat_interval_ms",
        broker_heartbeat_interval_ms,
        1,
        i32::MAX as i64,
    )? as u64;
    c.broker_session_timeout_ms = in_range(
        "broker_session_timeout_ms",
        broker_session_timeout_ms,
        1,
        i32::MAX as i64,
    )? as u64;
    c.election_timeout_ms = in_range(
        "controller_quorum_election_timeout_ms",
        election_timeout_ms,
        50,
        i32::MAX as i64,
    )? as u64;
    c.offsets_topic_replication_factor = in_range(
        "offsets_topic_replication_factor",
        offsets_topic_replication_factor,
        1,
        32767,
    )? as i16;
    c.check().map_err(PyValueError::new_err)?;
    Ok(Some(c))
}

/// The security between a cluster's nodes (`auth::peer`): the inter-broker
/// listener and this node's SASL credentials for it, and the controller
/// listener's protocol; refused without a node id.
fn cluster_security(
    cluster: Option<ClusterConfig>,
    listener: Option<String>,
    mechanism: Option<String>,
    username: Option<String>,
    password: Option<String>,
    controller_protocol: &str,
) -> PyResult<Option<ClusterConfig>> {
    let controller_ssl = match controller_protocol.to_ascii_uppercase().as_str() {
        "PLAINTEXT" => false,
        "SSL" => true,
        other => {
            return Err(PyValueError::new_err(format!(
                "controller_listener_security_protocol must be PLAINTEXT or SSL, got {other:?}"
            )))
        }
    };
    let asked = listener.is_some() || mechanism.is_some() || username.is_some() || controller_ssl;
    let Some(mut c) = cluster else {
        if asked || password.is_some() {
            return Err(PyValueError::new_err(
                "inter_broker_* and controller_listener_security_protocol need a node_id",
            ));
        }
        return Ok(None);
    };
    c.inter_broker_listener_name = listener;
    c.controller_ssl = controller_ssl;
    c.inter_broker_sasl = match (mechanism, username) {
        (None, None) => None,
        (Some(mechanism), Some(username)) => {
            let creds = ottla_broker::auth::peer::SaslCredentials {
                mechanism: mechanism.to_ascii_uppercase(),
                username,
                password: password.unwrap_or_default(),
            };
            creds.check().map_err(PyValueError::new_err)?;
            Some(creds)
        }
        _ => {
            return Err(PyValueError::new_err(
                "inter_broker_sasl_mechanism and inter_broker_sasl_username go together",
            ))
        }
    };
    Ok(Some(c))
}

/// A Kafka wire-protocol broker serving a data directory.
///
/// Listening when the constructor returns; any Kafka client can produce to
/// and consume from it while embedded Producers and Consumers use the same
/// directory::
///
///     with ottla.Broker("data") as broker:
///         producer = confluent_kafka.Producer(
///             {"bootstrap.servers": broker.bootstrap_servers})
#[pyclass(module = "ottla._core", name = "Broker", frozen)]
pub struct Broker {
    inner: Mutex<Option<Engine>>,
    stopping: std::sync::Arc<Mutex<Option<tokio::sync::watch::Receiver<bool>>>>,
    host: String,
    port: u16,
    path: String,
    node_id: Option<i32>,
    /// Listener name to bound "host:port", in the configured order.
    listeners: Vec<(String, String)>,
}

#[pymethods]
impl Broker {
    #[new]
    #[pyo3(signature = (path, host="127.0.0.1", port=0, *, auto_create_topics=true,
                        num_partitions=1, max_request_bytes=104857600, fsync="never",
                        retention_check_interval_ms=300000,
                        queued_max_request_bytes=524288000, fetch_max_bytes=57671680,
                        max_connections=None, max_connections_per_ip=None,
                        max_open_files=None, group_initial_rebalance_delay_ms=0,
                        group_consumer_heartbeat_interval_ms=1000,
                        group_consumer_session_timeout_ms=45000, broker_rack=None,
                        group_consumer_migration_policy="bidirectional",
                        node_id=None, controller_listen=None,
                        controller_quorum_voters=None, default_replication_factor=1,
                        min_insync_replicas=1, replica_lag_time_max_ms=10000,
                        broker_heartbeat_interval_ms=200, broker_session_timeout_ms=1000,
                        controller_quorum_election_timeout_ms=250,
                        offsets_topic_replication_factor=3,
                        listeners=None, advertised_listeners=None, ssl_certfile=None,
                        ssl_keyfile=None, ssl_cafile=None, ssl_client_auth="none",
                        sasl_enabled_mechanisms=None, connections_max_reauth_ms=0,
                        authorizer=None, super_users=None,
                        allow_everyone_if_no_acl_found=false,
                        inter_broker_listener_name=None, inter_broker_sasl_mechanism=None,
                        inter_broker_sasl_username=None, inter_broker_sasl_password=None,
                        controller_listener_security_protocol="PLAINTEXT"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        host: &str,
        port: u16,
        auto_create_topics: bool,
        num_partitions: i64,
        max_request_bytes: i64,
        fsync: &str,
        retention_check_interval_ms: i64,
        queued_max_request_bytes: i64,
        fetch_max_bytes: i64,
        max_connections: Option<i64>,
        max_connections_per_ip: Option<i64>,
        max_open_files: Option<i64>,
        group_initial_rebalance_delay_ms: i64,
        group_consumer_heartbeat_interval_ms: i64,
        group_consumer_session_timeout_ms: i64,
        broker_rack: Option<String>,
        group_consumer_migration_policy: &str,
        node_id: Option<i64>,
        controller_listen: Option<&str>,
        controller_quorum_voters: Option<&str>,
        default_replication_factor: i64,
        min_insync_replicas: i64,
        replica_lag_time_max_ms: i64,
        broker_heartbeat_interval_ms: i64,
        broker_session_timeout_ms: i64,
        controller_quorum_election_timeout_ms: i64,
        offsets_topic_replication_factor: i64,
        // Security (issue 18).
        listeners: Option<Vec<String>>,
        advertised_listeners: Option<Vec<String>>,
        ssl_certfile: Option<std::path::PathBuf>,
        ssl_keyfile: Option<std::path::PathBuf>,
        ssl_cafile: Option<std::path::PathBuf>,
        ssl_client_auth: &str,
        sasl_enabled_mechanisms: Option<Vec<String>>,
        connections_max_reauth_ms: i64,
        authorizer: Option<&str>,
        super_users: Option<Vec<String>>,
        allow_everyone_if_no_acl_found: bool,
        // Security between the nodes of a cluster.
        inter_broker_listener_name: Option<String>,
        inter_broker_sasl_mechanism: Option<String>,
        inter_broker_sasl_username: Option<String>,
        inter_broker_sasl_password: Option<String>,
        controller_listener_security_protocol: &str,
    ) -> PyResult<Self> {
        let authorizer =
            authorizer_config(authorizer, super_users, allow_everyone_if_no_acl_found)?;
        let security = security_config(
            listeners,
            advertised_listeners,
            ssl_certfile,
            ssl_keyfile,
            ssl_cafile,
            ssl_client_auth,
            sasl_enabled_mechanisms,
            connections_max_reauth_ms,
        )?;
        // Kafka's `broker.rack`: a rack name, not empty.
        if broker_rack.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(PyValueError::new_err(
                "broker_rack must be a rack name or None, got an empty string",
            ));
        }
        // Kafka's `group.consumer.migration.policy` (KIP-848).
        let migration = ottla_broker::coordinator::consumer_group::MigrationPolicy::parse(
            group_consumer_migration_policy,
        )
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "group_consumer_migration_policy must be bidirectional, upgrade, downgrade or disabled, got {group_consumer_migration_policy:?}"
            ))
        })?;
        let cluster = cluster_config(
            node_id,
            controller_listen,
            controller_quorum_voters,
            default_replication_factor,
            min_insync_replicas,
            replica_lag_time_max_ms,
            broker_heartbeat_interval_ms,
            broker_session_timeout_ms,
            controller_quorum_election_timeout_ms,
            offsets_topic_replication_factor,
        )?;
        let cluster = cluster_security(
            cluster,
            inter_broker_listener_name,
            inter_broker_sasl_mechanism,
            inter_broker_sasl_username,
            inter_broker_sasl_password,
            controller_listener_security_protocol,
        )?;
        let positive = |name: &str, v: Option<i64>| -> PyResult<Option<usize>> {
            match v {
                None => Ok(None),
                Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
                Some(n) => Err(PyValueError::new_err(format!(
                    "{name} must be positive, got {n}"
                ))),
            }
        };
        let max_connections = positive("max_connections", max_connections)?;
        let max_connections_per_ip = positive("max_connections_per_ip", max_connections_per_ip)?;
        let max_open_files = positive("max_open_files", max_open_files)?;
        if retention_check_interval_ms < 1 {
            return Err(PyValueError::new_err(format!(
                "retention_check_interval_ms must be positive, got {retention_check_interval_ms}"
            )));
        }
        if !(1..=100_000).contains(&num_partitions) {
            return Err(PyValueError::new_err(format!(
                "num_partitions must be between 1 and 100000, got {num_partitions}"
            )));
        }
        if !(1024..=i32::MAX as i64).contains(&max_request_bytes) {
            return Err(PyValueError::new_err(format!(
                "max_request_bytes must be between 1024 and {}, got {max_request_bytes}",
                i32::MAX
            )));
        }
        // Kafka's rule: zero or less is no bound.
        if queued_max_request_bytes > 0 && queued_max_request_bytes < max_request_bytes {
            return Err(PyValueError::new_err(format!(
                "queued_max_request_bytes must be at least max_request_bytes ({max_request_bytes}) \
                 or -1 for no bound, got {queued_max_request_bytes}"
            )));
        }
        let queued_max_request_bytes =
            (queued_max_request_bytes > 0).then_some(queued_max_request_bytes as usize);
        if !(0..=i32::MAX as i64).contains(&fetch_max_bytes) {
            return Err(PyValueError::new_err(format!(
                "fetch_max_bytes must be between 0 and {}, got {fetch_max_bytes}",
                i32::MAX
            )));
        }
        if !(0..=i32::MAX as i64).contains(&group_initial_rebalance_delay_ms) {
            return Err(PyValueError::new_err(format!(
                "group_initial_rebalance_delay_ms must be between 0 and {}, got {group_initial_rebalance_delay_ms}",
                i32::MAX
            )));
        }
        if !(1..=i32::MAX as i64).contains(&group_consumer_heartbeat_interval_ms)
            || !(group_consumer_heartbeat_interval_ms + 1..=i32::MAX as i64)
                .contains(&group_consumer_session_timeout_ms)
        {
            return Err(PyValueError::new_err(format!(
                "group_consumer_heartbeat_interval_ms must be positive and below \
                 group_consumer_session_timeout_ms (at most {}), got {group_consumer_heartbeat_interval_ms} \
                 and {group_consumer_session_timeout_ms}",
                i32::MAX
            )));
        }
        let durability = match fsync {
            "never" | "interval" => Durability::PageCache,
            "always" => Durability::Fsync,
            other => {
                return Err(PyValueError::new_err(format!(
                    "fsync must be 'never', 'interval' or 'always', got {other:?}"
                )))
            }
        };
        let config = BrokerConfig {
            host: host.to_string(),
            port,
            auto_create_topics,
            num_partitions: num_partitions as u32,
            max_request_bytes: max_request_bytes as usize,
            durability,
            retention_check_interval_ms: retention_check_interval_ms as u64,
            queued_max_request_bytes,
            fetch_max_bytes: fetch_max_bytes as usize,
            max_connections: max_connections.unwrap_or_else(ottla_broker::default_max_connections),
            max_connections_per_ip: max_connections_per_ip.unwrap_or(usize::MAX),
            max_open_files,
            group_initial_rebalance_delay_ms: group_initial_rebalance_delay_ms as u64,
            group_consumer_heartbeat_interval_ms: group_consumer_heartbeat_interval_ms as u64,
            group_consumer_session_timeout_ms: group_consumer_session_timeout_ms as u64,
            broker_rack,
            group_consumer_migration_policy: migration,
            advertised_listener: None,
            cluster,
            listeners: security.listeners,
            tls: security.tls,
            sasl_enabled_mechanisms: security.mechanisms,
            connections_max_reauth_ms: security.max_reauth_ms,
            authorizer,
            ..Default::default()
        };
        let interval = fsync == "interval";
        let node_id = config.cluster.as_ref().map(|c| c.node_id);
        let engine = py
            .detach(|| -> ottla_storage::Result<Engine> {
                // Before the store opens anything.
                if let Some(n) = max_open_files {
                    ottla_storage::fd_budget::set_max_open_files(n);
                }
                // A new data directory is private to its owner: the files
                // are protected by their permissions only (docs/security.md).
                if !path.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&path)
                        .map_err(|e| ottla_storage::Error::io("create", &path, e))?;
                }
                let store = Store::open(&path)?;
                if interval {
                    store.ensure_flusher(1000);
                }
                Engine::start(store, config)
            })
            .map_err(|e| match &e {
                // A port in use is an OSError (errno EADDRINUSE), as for a socket.
                ottla_storage::Error::Io {
                    op: "listen on",
                    source,
                    ..
                } => PyOSError::new_err((source.raw_os_error().unwrap_or(0), e.to_string())),
                _ => super::errors::to_pyerr(&e),
            })?;
        let addr = engine.local_addr();
        let stopping = engine.stop_signal();
        let listeners = engine
            .listener_addrs()
            .iter()
            .map(|(name, a)| (name.clone(), host_port(*a)))
            .collect();
        Ok(Broker {
            listeners,
            inner: Mutex::new(Some(engine)),
            stopping: std::sync::Arc::new(Mutex::new(Some(stopping))),
            host: addr.ip().to_string(),
            port: addr.port(),
            node_id,
            path: std::path::absolute(&path)
                .unwrap_or(path)
                .display()
                .to_string(),
        })
    }

    /// "host:port" to give Kafka clients as `bootstrap.servers`.
    #[getter]
    fn bootstrap_servers(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Every listener's name and bound "host:port" (the first is
    /// `bootstrap_servers`).
    #[getter]
    fn listeners<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        for (name, addr) in &self.listeners {
            d.set_item(name, addr)?;
        }
        Ok(d)
    }

    #[getter]
    fn host(&self) -> &str {
        &self.host
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// This node's id in a cluster (``node_id=``), or None for a broker alone.
    #[getter]
    fn node_id(&self) -> Option<i32> {
        self.node_id
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().is_none()
    }

    /// Fetch requests parked now (long polls waiting for an append).
    #[getter]
    fn waiting_fetches(&self) -> usize {
        self.inner
            .lock()
            .as_ref()
            .map_or(0, Engine::waiting_fetches)
    }

    /// Block until `close()` (from another thread) or Ctrl-C.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        let Some(mut rx) = self.stopping.lock().clone() else {
            return Ok(());
        };
        loop {
            if *rx.borrow() {
                return Ok(());
            }
            let stopped = py.detach(|| wait_changed(&mut rx, Duration::from_millis(100)));
            if stopped {
                return Ok(());
            }
            py.check_signals()?;
        }
    }

    /// Stop accepting, close connections, release the port and the directory.
    fn close(&self, py: Python<'_>) {
        let engine = self.inner.lock().take();
        if let Some(mut e) = engine {
            py.detach(move || {
                e.close();
                drop(e);
            });
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        // The style of Producer, Consumer and Admin: the path, then settings.
        let state = if self.closed() { "closed" } else { "serving" };
        let addr = format!("{}:{}", self.host, self.port);
        format!(
            "<ottla.Broker path={} bootstrap_servers={} {state}>",
            py_repr_str(py, &self.path),
            py_repr_str(py, &addr)
        )
    }
}

/// True once the broker has been asked to stop (or is gone).
fn wait_changed(rx: &mut tokio::sync::watch::Receiver<bool>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match rx.has_changed() {
            Ok(false) => std::thread::sleep(Duration::from_millis(20)),
            Ok(true) => return *rx.borrow_and_update(),
            Err(_) => return true,
        }
    }
    false
}

fn host_port(a: std::net::SocketAddr) -> String {
    match a {
        std::net::SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        std::net::SocketAddr::V4(v4) => v4.to_string(),
    }
}

/// The security settings of `ottla.Broker(...)`, checked.
struct Security {
    listeners: Vec<ottla_broker::ListenerConfig>,
    tls: Option<ottla_broker::auth::tls::TlsConfig>,
    mechanisms: Vec<ottla_broker::auth::sasl::Mechanism>,
    max_reauth_ms: u64,
}

#[allow(clippy::too_many_arguments)]
fn security_config(
    listeners: Option<Vec<String>>,
    advertised_listeners: Option<Vec<String>>,
    ssl_certfile: Option<std::path::PathBuf>,
    ssl_keyfile: Option<std::path::PathBuf>,
    ssl_cafile: Option<std::path::PathBuf>,
    ssl_client_auth: &str,
    sasl_enabled_mechanisms: Option<Vec<String>>,
    connections_max_reauth_ms: i64,
) -> PyResult<Security> {
    use ottla_broker::auth::sasl::Mechanism;
    use ottla_broker::auth::tls::{ClientAuth, TlsConfig};
    use ottla_broker::ListenerConfig;
    let mut parsed = Vec::new();
    for l in listeners.unwrap_or_default() {
        parsed.push(ListenerConfig::parse(&l).map_err(PyValueError::new_err)?);
    }
    for a in advertised_listeners.unwrap_or_default() {
        let adv = ListenerConfig::parse(&a).map_err(PyValueError::new_err)?;
        let Some(l) = parsed.iter_mut().find(|l| l.name == adv.name) else {
            return Err(PyValueError::new_err(format!(
                "advertised listener {a:?} names no listener (listeners: {})",
                parsed
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        l.advertised = Some((adv.host, adv.port));
    }
    let client_auth = ClientAuth::parse(ssl_client_auth).ok_or_else(|| {
        PyValueError::new_err(format!(
            "ssl_client_auth must be 'none', 'requested' or 'required', got {ssl_client_auth:?}"
        ))
    })?;
    let tls = match (ssl_certfile, ssl_keyfile) {
        (Some(certfile), Some(keyfile)) => Some(TlsConfig {
            certfile,
            keyfile,
            cafile: ssl_cafile,
            client_auth,
        }),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "ssl_certfile and ssl_keyfile go together",
            ))
        }
    };
    let mechanisms = match sasl_enabled_mechanisms {
        None => Mechanism::defaults(),
        Some(names) => names
            .iter()
            .map(|n| {
                Mechanism::parse(n).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "unknown SASL mechanism {n:?}: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                    ))
                })
            })
            .collect::<PyResult<Vec<_>>>()?,
    };
    if connections_max_reauth_ms < 0 {
        return Err(PyValueError::new_err(format!(
            "connections_max_reauth_ms must be 0 (no bound) or positive, got {connections_max_reauth_ms}"
        )));
    }
    Ok(Security {
        listeners: parsed,
        tls,
        mechanisms,
        max_reauth_ms: connections_max_reauth_ms as u64,
    })
}

/// Kafka's `authorizer.class.name`, `super.users` and
/// `allow.everyone.if.no.acl.found`: `None`, or "standard" (Kafka's
/// StandardAuthorizer over the directory's ACLs).
fn authorizer_config(
    name: Option<&str>,
    super_users: Option<Vec<String>>,
    allow_everyone_if_no_acl_found: bool,
) -> PyResult<Option<ottla_broker::auth::authorizer::AuthorizerConfig>> {
    let standard = match name.map(str::trim) {
        None | Some("") | Some("none") => false,
        Some(n) if n.eq_ignore_ascii_case("standard") || n.ends_with("StandardAuthorizer") => true,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "unknown authorizer {other:?}: \"standard\" (Kafka's StandardAuthorizer) or None"
            )))
        }
    };
    let users = super_users.unwrap_or_default();
    if !standard {
        if !users.is_empty() || allow_everyone_if_no_acl_found {
            return Err(PyValueError::new_err(
                "super_users and allow_everyone_if_no_acl_found need authorizer=\"standard\"",
            ));
        }
        return Ok(None);
    }
    let mut parsed = Vec::new();
    for u in users {
        parsed.extend(
            ottla_broker::auth::authorizer::AuthorizerConfig::parse_super_users(&u)
                .map_err(PyValueError::new_err)?,
        );
    }
    Ok(Some(ottla_broker::auth::authorizer::AuthorizerConfig {
        super_users: parsed,
        allow_everyone_if_no_acl_found,
    }))
}
