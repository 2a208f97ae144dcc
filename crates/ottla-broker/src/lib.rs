//! The Kafka wire-protocol broker: another door onto the engine, and the
//! only crate with network code. Shaped like tokio's mini-redis, one small
//! module per step, read top to bottom:
//!
//! ```text
//! net/         the transport: listener (accept loop), connection (frames in,
//!              responses out, limits and timeouts), frame (header decode,
//!              response encode); TLS and SASL will plug in here
//! dispatch     API key and version -> handler; per-connection Session
//! versions     the API versions advertised, and ApiVersions
//! api/*        one module per API family: protocol decode and encode only
//! replica/     the replica manager: the one way to partition logs (append
//!              with producer de-duplication, read with the long poll, offsets)
//! coordinator/ consumer groups, their coordinator claim, producer ids,
//!              transactions
//! errors       Kafka error codes, and engine errors mapped onto them
//! fuzzing      the request-frame oracle (cargo-fuzz and the replay test)
//! alloc        the process allocator, safe against sizes claimed on the wire
//! ```
//!
//! Handlers reach partition logs only through `replica::ReplicaManager`, so
//! replication (followers, ISR, acks=all) has one place to go. SASL would
//! join the transport (its handshake comes before any other request); ACL
//! checks, per resource as in Kafka's request handlers, `dispatch` and `api`.
//!
//! The engine knows nothing of this crate; everything here goes through
//! `Store`, `PartitionLog` and `OffsetStore`.

pub mod alloc;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod coordinator;
pub mod dispatch;
pub mod errors;
#[doc(hidden)]
pub mod fuzzing;
pub mod net;
pub mod replica;
pub mod versions;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use ottla_storage::error::{Error, Result};
use ottla_storage::log::Durability;
use ottla_storage::retention_checker::{RetentionChecker, DEFAULT_CHECK_INTERVAL_MS};
use ottla_storage::store::Store;

/// How the broker is set up; the Python door fills this from `ottla.Broker(...)`.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    /// Create a topic on first Produce or Metadata request, as Kafka does by default.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (`num.partitions`).
    pub num_partitions: u32,
    /// Frames larger than this close the connection before anything is allocated.
    pub max_request_bytes: usize,
    /// The most bytes of request frames read or handled at once across all
    /// connections (Kafka's `queued.max.request.bytes`); `None`: no bound.
    /// A connection takes a frame's size from it, once the size prefix is
    /// in, before allocating for the frame, and waits without reading while
    /// it is spent (see `net::budget`). At least `max_request_bytes`.
    pub queued_max_request_bytes: Option<usize>,
    /// The most record bytes one Fetch response carries, whatever the request
    /// asks (Kafka's broker `fetch.max.bytes`); one first batch larger than
    /// the limit is still returned whole, so a consumer always progresses.
    pub fetch_max_bytes: usize,
    pub durability: Durability,
    /// How long a started frame may take to arrive in full.
    pub frame_timeout: Duration,
    /// How long a connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How often expired segments of every topic are deleted (Kafka's
    /// `log.retention.check.interval.ms`), whether or not anything is
    /// written; see `ottla_storage::retention_checker`.
    pub retention_check_interval_ms: u64,
    /// The most connections open at once (Kafka's `max.connections`); a
    /// connection past it is closed as soon as it is accepted. Default
    /// [`default_max_connections`].
    pub max_connections: usize,
    /// The most connections open at once from one client address (Kafka's
    /// `max.connections.per.ip`); `usize::MAX`, the default, leaves only
    /// `max_connections`.
    pub max_connections_per_ip: usize,
    /// The process's open-file budget for partition files
    /// (`ottla_storage::fd_budget`), set when the broker starts; `None`
    /// keeps the process's (half the open-file limit by default).
    pub max_open_files: Option<usize>,
    /// How long the first rebalance of an empty group waits for more
    /// members (Kafka's `group.initial.rebalance.delay.ms`), extended by as
    /// much while new members keep joining, up to the rebalance timeout.
    /// 0, the default, rebalances at once (Kafka's default is 3 s; the
    /// `server.properties` Kafka ships sets 0 for development and tests).
    pub group_initial_rebalance_delay_ms: u64,
    /// How often members of a consumer-protocol group (KIP-848) heartbeat
    /// (Kafka's `group.consumer.heartbeat.interval.ms`). 1000 by default
    /// (Kafka: 5000), so partitions move between members of one machine
    /// within a second or two.
    pub group_consumer_heartbeat_interval_ms: u64,
    /// How long a consumer-protocol member may stay silent before it is
    /// fenced and its partitions move (Kafka's
    /// `group.consumer.session.timeout.ms`, 45000 as in Kafka).
    pub group_consumer_session_timeout_ms: u64,
    /// The most members of one consumer-protocol group (Kafka's
    /// `group.consumer.max.size`; no bound by default, as in Kafka).
    pub group_consumer_max_size: usize,
    /// Which conversions between classic and consumer-protocol groups the
    /// coordinator makes (Kafka's `group.consumer.migration.policy`, KIP-848's
    /// online migration); `bidirectional` by default, as in Kafka 4.x.
    pub group_consumer_migration_policy: coordinator::consumer_group::MigrationPolicy,
    /// The broker's rack (Kafka's `broker.rack`): reported by Metadata and
    /// DescribeCluster, and the rack of every replica here, which the
    /// consumer-protocol assignors match against members' `rack_id`.
    pub broker_rack: Option<String>,
    /// The longest `transaction.timeout.ms` a transactional producer may
    /// ask for (Kafka's `transaction.max.timeout.ms`, 900000 as in Kafka);
    /// a longer one is INVALID_TRANSACTION_TIMEOUT.
    pub transaction_max_timeout_ms: i32,
    /// The host and port clients are told to connect to (Kafka's
    /// `advertised.listeners`); `None`: the listening address (127.0.0.1
    /// when listening on every interface).
    pub advertised_listener: Option<(String, u16)>,
    /// A node of a replicated cluster (issue 14; `cluster`); `None`: a
    /// broker alone, as before.
    pub cluster: Option<cluster::ClusterConfig>,
    // --- Security (issue 18): listeners, TLS, SASL. ---
    /// Kafka's `listeners`: every address the broker listens on, each with
    /// its security protocol; the first is the one `local_addr` names.
    /// Empty (the default): one PLAINTEXT listener on `host:port`.
    pub listeners: Vec<ListenerConfig>,
    /// The certificate, key and client-certificate settings of every SSL
    /// and SASL_SSL listener (Kafka's `ssl.*`).
    pub tls: Option<auth::tls::TlsConfig>,
    /// Kafka's `sasl.enabled.mechanisms` for SASL listeners; default PLAIN,
    /// SCRAM-SHA-256 and SCRAM-SHA-512 (OAUTHBEARER only when named).
    pub sasl_enabled_mechanisms: Vec<auth::sasl::Mechanism>,
    /// Kafka's `connections.max.reauth.ms` (KIP-368): a SASL session's
    /// lifetime, told to the client in SaslAuthenticate v1+; a connection
    /// that sends anything but a new SaslHandshake after it is closed. 0,
    /// the default: sessions last as long as their credential (an
    /// OAUTHBEARER token's `exp`), else for ever.
    pub connections_max_reauth_ms: u64,
    /// The authorizer (Kafka's `authorizer.class.name`): `None`, the
    /// default, allows everything; `Some` is Kafka's StandardAuthorizer
    /// over the data directory's ACLs with these settings (`super.users`,
    /// `allow.everyone.if.no.acl.found`). See `auth::authorizer`.
    pub authorizer: Option<auth::authorizer::AuthorizerConfig>,
}

pub use net::listener::ListenerConfig;

/// A quarter of the soft open-file limit (`RLIMIT_NOFILE`; 256 under the
/// common 1,024), at least 16: with half of it for partition files (the
/// default open-file budget), a quarter stays for everything else, so the
/// broker never runs out of descriptors for its partitions or for
/// answering the clients it has.
pub fn default_max_connections() -> usize {
    (ottla_storage::fd_budget::soft_nofile_limit() / 4).max(16)
}

/// The default request budget: five requests of the default
/// `max_request_bytes` at once, or hundreds of the 1 MiB requests Kafka's
/// producers send by default (`max.request.size`), so it binds only under
/// an unusual load or an attack; a fixed amount a small machine can give,
/// not a fraction of its memory (the broker shares it with its clients).
pub const DEFAULT_QUEUED_MAX_REQUEST_BYTES: usize = 500 * 1024 * 1024;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            auto_create_topics: true,
            num_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            queued_max_request_bytes: Some(DEFAULT_QUEUED_MAX_REQUEST_BYTES),
            fetch_max_bytes: 55 * 1024 * 1024,
            durability: Durability::PageCache,
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            retention_check_interval_ms: DEFAULT_CHECK_INTERVAL_MS,
            max_connections: default_max_connections(),
            max_connections_per_ip: usize::MAX,
            max_open_files: None,
            group_initial_rebalance_delay_ms: 0,
            group_consumer_heartbeat_interval_ms: 1000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_max_size: i32::MAX as usize,
            group_consumer_migration_policy: Default::default(),
            broker_rack: None,
            transaction_max_timeout_ms: ottla_storage::txn_state::DEFAULT_MAX_TIMEOUT_MS,
            advertised_listener: None,
            cluster: None,
            listeners: Vec::new(),
            tls: None,
            sasl_enabled_mechanisms: auth::sasl::Mechanism::defaults(),
            connections_max_reauth_ms: 0,
            authorizer: None,
        }
    }
}

/// What every connection task shares.
pub struct Shared {
    pub store: Arc<Store>,
    pub config: BrokerConfig,
    /// The address clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: u16,
    pub groups: coordinator::group::GroupCoordinator,
    /// Consumer-protocol (KIP-848) groups.
    pub consumer_groups: coordinator::consumer_group::ConsumerGroupCoordinator,
    pub producer_ids: coordinator::producer_id::ProducerIdManager,
    /// The transaction coordinator.
    pub txns: coordinator::txn::TxnCoordinator,
    /// In a cluster: whether this broker coordinates groups now (it leads
    /// `__consumer_offsets`); see `coordinator::placement`.
    pub group_placement: coordinator::placement::GroupPlacement,
    pub replicas: replica::ReplicaManager,
    /// Turns true when the broker is asked to stop (see [`Broker::close`]).
    pub stopping: watch::Receiver<bool>,
    /// Request bytes in hand across connections (`queued_max_request_bytes`).
    pub request_budget: net::budget::RequestBudget,
    /// This node's place in a cluster; `None` for a broker alone.
    pub cluster: Option<Arc<cluster::ClusterNode>>,
    /// SCRAM credentials (SASL/SCRAM and PLAIN check against them).
    pub credentials: auth::credentials::CredentialStore,
    /// ACL checks (allows everything unless `config.authorizer` is set).
    pub authorizer: auth::authorizer::Authorizer,
}

impl Shared {
    /// The broker that coordinates consumer groups, with its advertised
    /// host and port: this one alone (`here`: this broker's address as the
    /// asking connection's listener advertises it); in a cluster, the
    /// leader of `__consumer_offsets` (created on first use;
    /// `coordinator::placement`). Err: the Kafka error to answer.
    pub async fn group_coordinator(
        self: &Arc<Self>,
        here: (&str, u16),
    ) -> std::result::Result<(i32, String, u16), i16> {
        let Some(node) = &self.cluster else {
            return Ok((api::metadata::NODE_ID, here.0.to_string(), here.1));
        };
        let (id, host, port) = coordinator::placement::find(self).await?;
        // The coordinator's endpoint on the asking connection's listener
        // (the one this node advertises at `here`), as Kafka answers.
        let listener = node
            .config()
            .endpoints
            .iter()
            .find(|e| e.host == here.0 && e.port == here.1)
            .map(|e| e.name.clone());
        let on_listener = listener.and_then(|name| {
            cluster::assignments::live_brokers_on(&node.image(), Some(&name))
                .into_iter()
                .find(|b| b.0 == id)
        });
        Ok(on_listener.map_or((id, host, port), |(id, host, port, _)| (id, host, port)))
    }

    /// This broker's id (Kafka's `node.id`): 0 alone.
    pub fn node_id(&self) -> i32 {
        self.cluster
            .as_ref()
            .map_or(api::metadata::NODE_ID, |c| c.node_id())
    }

    /// `fut`'s output, or `None` if the broker is stopping first: for
    /// requests that wait on other clients (a rebalance), which a stopping
    /// broker answers at once instead of holding its close up.
    pub async fn unless_stopping<F: std::future::Future>(&self, fut: F) -> Option<F::Output> {
        let mut stopping = self.stopping.clone();
        if *stopping.borrow_and_update() {
            return None;
        }
        tokio::select! {
            out = fut => Some(out),
            _ = stopping.changed() => None,
        }
    }
}

/// How long [`Broker::close`] waits for connections to finish their requests.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running broker. Listening once [`Broker::start`] returns.
pub struct Broker {
    addr: SocketAddr,
    listener_addrs: Vec<(String, SocketAddr)>,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: watch::Sender<bool>,
    finished: Mutex<Option<mpsc::Receiver<()>>>,
    waker: Option<replica::wake::Waker>,
    shared: Option<Arc<Shared>>,
    retention: Option<Arc<RetentionChecker>>,
}

impl Broker {
    /// Bind, then serve `store` on a background tokio runtime.
    pub fn start(store: Arc<Store>, config: BrokerConfig) -> Result<Broker> {
        let listeners = net::listener::bind_all(&config)?;
        let addr = listeners[0].1.bound;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ottla-broker")
            .enable_all()
            .build()
            .map_err(|e| Error::IllegalState(format!("cannot start the broker runtime: {e}")))?;
        if config.retention_check_interval_ms == 0 {
            return Err(Error::InvalidConfig(
                "retention_check_interval_ms must be positive".into(),
            ));
        }
        match config.queued_max_request_bytes {
            Some(q) if q < config.max_request_bytes => {
                return Err(Error::InvalidConfig(format!(
                    "queued_max_request_bytes ({q}) must be at least max_request_bytes ({})",
                    config.max_request_bytes
                )))
            }
            _ => {}
        }
        if config.group_consumer_heartbeat_interval_ms == 0
            || config.group_consumer_heartbeat_interval_ms > i32::MAX as u64
            || config.group_consumer_session_timeout_ms
                <= config.group_consumer_heartbeat_interval_ms
            || config.group_consumer_max_size == 0
        {
            return Err(Error::InvalidConfig(
                "group_consumer_heartbeat_interval_ms must be positive and below group_consumer_session_timeout_ms, and group_consumer_max_size positive".into(),
            ));
        }
        if config.max_connections == 0 || config.max_connections_per_ip == 0 {
            return Err(Error::InvalidConfig(
                "max_connections and max_connections_per_ip must be positive".into(),
            ));
        }
        if let Some(n) = config.max_open_files {
            if n == 0 {
                return Err(Error::InvalidConfig(
                    "max_open_files must be positive".into(),
                ));
            }
            ottla_storage::fd_budget::set_max_open_files(n);
        }
        if config.cluster.is_none() {
            cluster::node::refuse_standalone(store.root())?;
        }
        let retention = RetentionChecker::shared(&store, config.retention_check_interval_ms)?;
        // Every transaction in `__transaction_state`, before any request.
        let txns = coordinator::txn::TxnCoordinator::start(
            store.clone(),
            config.durability,
            config.transaction_max_timeout_ms,
        )?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (replicas, waker) = replica::ReplicaManager::start(
            store.clone(),
            config.durability,
            shutdown_rx.clone(),
            runtime.handle().clone(),
        );
        // The first listener's: the address the cluster and the single
        // node's Metadata name (each connection is told its own listener's).
        let advertised_host = listeners[0].1.advertised_host.clone();
        let advertised_port = listeners[0].1.advertised_port;
        // A cluster node's ACLs and SCRAM users are the metadata log's
        // (`auth::cluster`), not its directory's.
        let in_cluster = config.cluster.is_some();
        let credentials = if in_cluster {
            auth::credentials::CredentialStore::for_cluster(store.root())
        } else {
            auth::credentials::CredentialStore::new(store.root())
        };
        let authorizer = match &config.authorizer {
            None => auth::authorizer::Authorizer::allow_all(),
            Some(c) if in_cluster => {
                auth::authorizer::Authorizer::standard_in_cluster(c.clone())
                    .map_err(|e| Error::InvalidConfig(format!("authorizer: {e}")))?
            }
            Some(c) => auth::authorizer::Authorizer::standard(store.root(), c.clone())
                .map_err(|e| Error::InvalidConfig(format!("authorizer: {e}")))?,
        };
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let cluster = match &config.cluster {
            Some(cc) => Some(cluster::ClusterNode::start(
                {
                    // Endpoints, the inter-broker listener and the
                    // controller listener's TLS (`auth::peer`).
                    let mut cc = cc.clone();
                    let bound: Vec<_> = listeners.iter().map(|(_, l)| l).collect();
                    auth::peer::prepare_cluster(&mut cc, &bound, config.tls.as_ref())
                        .map_err(Error::InvalidConfig)?;
                    cc
                },
                store.root(),
                (advertised_host.clone(), advertised_port),
                // Outgoing connections leave from the listening address when
                // it is a specific one (a harness isolates a node by it).
                Some(addr.ip()).filter(|ip| !ip.is_unspecified()),
                &runtime,
                shutdown_rx.clone(),
                done_tx.clone(),
            )?),
            None => None,
        };
        let groups = coordinator::group::GroupCoordinator::with_initial_delay(
            store.clone(),
            Duration::from_millis(config.group_initial_rebalance_delay_ms),
        );
        let handoff = groups.handoff();
        let shared = Arc::new(Shared {
            groups,
            consumer_groups: coordinator::consumer_group::ConsumerGroupCoordinator::with_handoff(
                store.clone(),
                coordinator::consumer_group::Settings {
                    heartbeat_interval: Duration::from_millis(
                        config.group_consumer_heartbeat_interval_ms,
                    ),
                    session_timeout: Duration::from_millis(
                        config.group_consumer_session_timeout_ms,
                    ),
                    max_size: config.group_consumer_max_size,
                    broker_rack: config.broker_rack.clone(),
                    migration: config.group_consumer_migration_policy,
                },
                handoff,
            ),
            producer_ids: coordinator::producer_id::ProducerIdManager::for_node(
                config.cluster.as_ref().map_or(0, |c| c.node_id),
            ),
            txns,
            group_placement: Default::default(),
            replicas,
            store,
            advertised_host,
            advertised_port,
            credentials,
            authorizer,
            request_budget: net::budget::RequestBudget::new(config.queued_max_request_bytes),
            config,
            stopping: shutdown_rx.clone(),
            cluster,
        });
        if let Some(node) = &shared.cluster {
            // Groups are this broker's only while it leads
            // `__consumer_offsets`: none until then.
            shared.consumer_groups.release_all();
            // Transactions likewise, while it leads `__transaction_state`.
            shared.txns.enter_cluster(node.clone());
            // The replica manager replicates through the node (peers'
            // addresses, AlterPartition), and is told its partitions after
            // every metadata change.
            shared.replicas.enable_cluster(node.link());
            let (s, done, stop) = (shared.clone(), done_tx.clone(), shutdown_rx.clone());
            let image = node.controller().subscribe();
            runtime.spawn(async move {
                auth::cluster::follow(s, image, stop).await;
                drop(done);
            });
            let s = shared.clone();
            node.run(
                &runtime,
                shutdown_rx.clone(),
                done_tx.clone(),
                move |assigned, configs, deleted, sweep_strays| {
                    if sweep_strays {
                        s.replicas.delete_strays(&assigned);
                    }
                    s.replicas.apply_assignments(assigned, configs, deleted);
                    // The group coordinator follows the leadership of
                    // `__consumer_offsets`.
                    coordinator::placement::after_assignments(&s);
                    // The transaction coordinator, `__transaction_state`'s.
                    coordinator::txn_placement::after_assignments(&s);
                },
            );
        }
        let limits = Arc::new(net::listener::ConnectionLimits::new(
            shared.config.max_connections,
            shared.config.max_connections_per_ip,
        ));
        let mut listener_addrs = Vec::with_capacity(listeners.len());
        for (std_listener, info) in listeners {
            let where_ = info.bound.to_string();
            let bind_err =
                |e: std::io::Error| Error::io("listen on", std::path::Path::new(&where_), e);
            let listener = {
                let _g = runtime.enter();
                tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
            };
            listener_addrs.push((info.name.clone(), info.bound));
            runtime.spawn(net::listener::run(
                listener,
                Arc::new(info),
                limits.clone(),
                shared.clone(),
                shutdown_rx.clone(),
                done_tx.clone(),
            ));
        }
        runtime.spawn(alloc::trimmer(shutdown_rx.clone()));
        runtime.spawn(coordinator::consumer_group::reaper(
            shared.clone(),
            shutdown_rx.clone(),
            done_tx.clone(),
        ));
        runtime.spawn(coordinator::txn::reaper(
            shared.clone(),
            shutdown_rx.clone(),
            done_tx.clone(),
        ));
        runtime.spawn(coordinator::group::reaper(
            shared.clone(),
            shutdown_rx,
            done_tx,
        ));
        Ok(Broker {
            addr,
            listener_addrs,
            runtime: Some(runtime),
            shutdown,
            finished: Mutex::new(Some(done_rx)),
            waker: Some(waker),
            shared: Some(shared),
            retention: Some(retention),
        })
    }

    /// This node's place in a cluster (`None` for a broker alone).
    pub fn cluster(&self) -> Option<Arc<cluster::ClusterNode>> {
        self.shared.as_ref().and_then(|s| s.cluster.clone())
    }

    /// Stops as a killed process would look to the cluster: no controlled
    /// shutdown, the others notice by the missing heartbeats.
    #[cfg(test)]
    pub(crate) fn stop_abruptly(&mut self) {
        self.shutdown.send_replace(true);
        self.close();
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the broker's connections share (its replica manager:
    /// `shared().replicas.enable_cluster(..)`, `apply_assignments(..)`);
    /// `None` once closed.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Every listener's name and bound address, in the configured order.
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.listener_addrs
    }

    /// How many Fetch requests are parked now (long polls waiting for an
    /// append); 0 once closed.
    pub fn waiting_fetches(&self) -> usize {
        self.shared
            .as_ref()
            .map_or(0, |s| s.replicas.waiting_fetches())
    }

    /// A receiver that turns true when the broker is asked to stop.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stop accepting, close every connection, stop the runtime, and let go
    /// of the directory (the last holder of a partition marks it clean).
    ///
    /// A graceful stop: each connection takes no new request, answers the
    /// one in hand (a long-polling Fetch answers with what there is, a
    /// JoinGroup or SyncGroup waiting on a rebalance with NOT_COORDINATOR),
    /// then closes (see `net::connection`), so a client never has a request
    /// appended without its answer. Bounded: after `CLOSE_TIMEOUT` the
    /// runtime is stopped whatever is left.
    pub fn close(&mut self) {
        let cluster = self.shared.as_ref().and_then(|s| s.cluster.clone());
        if let (Some(node), Some(rt)) = (&cluster, &self.runtime) {
            // Leaderships move before the connections close (Kafka's
            // controlled shutdown).
            if !*self.shutdown.borrow() {
                rt.block_on(node.controlled_shutdown());
            }
        }
        if let Some(shared) = &self.shared {
            // Cluster mode: the high watermarks on disk, for the restart.
            shared.replicas.checkpoint_high_watermarks();
        }
        self.shutdown.send_replace(true);
        self.retention = None;
        if let Some(rt) = self.runtime.take() {
            if let Some(mut done) = self.finished.lock().take() {
                // Every task holds a sender; recv() ends when the last one drops.
                rt.block_on(async {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, done.recv()).await;
                });
            }
            if let Some(node) = &cluster {
                rt.block_on(async {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, node.stop()).await;
                });
            }
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        if let Some(w) = self.waker.take() {
            w.stop();
        }
        if let Some(shared) = self.shared.take() {
            shared.groups.release_all();
            shared.consumer_groups.release_all();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.close();
    }
}

/// Run blocking engine work (file I/O, fsync) without stalling the
/// runtime's other connections.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
