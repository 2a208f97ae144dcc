//! `ClusterNode`: one node of the cluster. Its controller (a voter of the
//! metadata quorum, or a learner on a broker-only node), its controller
//! listener, and its broker's life in the cluster:
//!
//! - **registration** (Kafka's BrokerRegistration) at every start, with a
//!   new incarnation id, its advertised Kafka listener and its controller
//!   address; the active controller makes a broker-only node a learner;
//! - **heartbeats** (BrokerHeartbeat) every `broker_heartbeat_interval_ms`
//!   carrying the offset of its metadata image; the active controller
//!   unfences a registered broker once that offset reaches its
//!   registration, and fences the ones silent for the session timeout
//!   (a timer on every node, acting while it is the active controller);
//! - **controlled shutdown** on a graceful stop: fenced, its leaderships
//!   moved, before it closes;
//! - **following the image**: every new image becomes the partitions the
//!   replica manager holds, and the addresses of the quorum's members.
//!
//! The active controller's side of the broker requests is
//! [`ClusterNode`]'s [`ControlHandler`] implementation.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use ottla_meta::decide::{self, DecideError};
use ottla_meta::image::MetadataImage;
use ottla_meta::records::{Endpoint, MetadataRecord, TopicId};
use ottla_meta::types::BasicNode;
use ottla_meta::{ApplyError, BrokerId, Controller, ControllerConfig, NodeId, ProposeError};
use ottla_storage::error::Error;

use super::assignments;
use super::codes;
use super::transport::{self, ClientError, ControlHandler, ControllerClient, Peers, RaftTransport};
use super::wire::{ControlReply, ControlRequest};
use super::{ClusterConfig, IsrChannel, PartitionAssignment, PeerDirectory};
use crate::errors::code;

/// The listener name brokers register their Kafka listener under.
pub const LISTENER: &str = "PLAINTEXT";

/// How long a broker→controller request keeps trying before it fails.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// One node of the cluster (see the module's documentation).
pub struct ClusterNode {
    pub config: ClusterConfig,
    controller: Arc<Controller>,
    pub client: ControllerClient,
    pub peers: Arc<Peers>,
    image: watch::Receiver<Arc<MetadataImage>>,
    incarnation_id: [u8; 16],
    listeners: Vec<Endpoint>,
    controller_address: String,
    /// The broker epoch of this process's registration; 0 before it.
    broker_epoch: AtomicU64,
    /// As the last heartbeat's answer said.
    fenced: AtomicBool,
    /// Set once [`ClusterNode::wait_caught_up`] saw the first catch-up.
    caught_up: AtomicBool,
    /// Held across each heartbeat; true once the controlled shutdown began:
    /// no heartbeat may reach the controller after the shutdown's fence
    /// (it would unfence the broker again, as caught up).
    shutting_down: tokio::sync::Mutex<bool>,
    /// Outgoing connections bind here (the `--listen` host, if specific).
    pub source_ip: Option<IpAddr>,
    /// The partitions last handed to the replica manager.
    assigned: Mutex<Arc<Vec<PartitionAssignment>>>,
    /// The directory was this node's before this process: its topics are
    /// the cluster's replicas, stray ones deleted once caught up. A
    /// directory a broker alone used before its first start as a node
    /// keeps its topics (they were never the cluster's).
    rejoined: bool,
    /// The brokers Metadata last listed as live, and when (see
    /// `api::metadata`: a broker just fenced stays listed a while).
    pub listed: Mutex<HashMap<BrokerId, std::time::Instant>>,
}

/// The file that marks a directory as a cluster node's, naming its node id.
pub fn marker_path(data: &Path) -> PathBuf {
    data.join(".ottla").join("cluster").join("node")
}

/// Refuses a directory that belongs to another node id; marks it as this
/// node's otherwise (`node.id=N`, and `listener=HOST:PORT`, the address an
/// embedded Producer refused on this directory points to; the marker is
/// read by `ottla_client::producer`). True if it was this node's already.
fn claim_directory(data: &Path, node_id: i32, listener: &str) -> Result<bool, Error> {
    let marker = marker_path(data);
    let contents = format!("node.id={node_id}\nlistener={listener}\n");
    let write = |marker: &Path| -> Result<(), Error> {
        if let Some(dir) = marker.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        ottla_storage::fsutil::write_atomic(marker, contents.as_bytes())
    };
    match std::fs::read_to_string(&marker) {
        Ok(text) => {
            let theirs = text
                .lines()
                .find_map(|l| l.strip_prefix("node.id="))
                .and_then(|v| v.trim().parse::<i32>().ok());
            match theirs {
                Some(id) if id == node_id && text == contents => Ok(true),
                Some(id) if id == node_id => write(&marker).map(|()| true),
                Some(id) => Err(Error::InvalidConfig(format!(
                    "{} belongs to cluster node {id}; refusing to start it as node {node_id}",
                    data.display()
                ))),
                None => Err(Error::InvalidConfig(format!(
                    "{} is not a readable cluster node marker",
                    marker.display()
                ))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write(&marker).map(|()| false),
        Err(e) => Err(Error::io("read", &marker, e)),
    }
}

/// A broker alone refuses a cluster node's directory: serving its replicas
/// as a single node would accept writes no other replica gets, at offsets
/// the partition's leader also hands out.
pub fn refuse_standalone(data: &Path) -> Result<(), Error> {
    let Ok(text) = std::fs::read_to_string(marker_path(data)) else {
        return Ok(());
    };
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("node.id="))
        .unwrap_or("?")
        .trim()
        .to_string();
    Err(Error::InvalidConfig(format!(
        "{} is the directory of cluster node {id}: start it as that node (--node-id {id} \
         with the cluster's controller settings), not as a broker alone",
        data.display()
    )))
}

impl ClusterNode {
    /// Claims the directory, binds the controller listener, opens the
    /// controller on `runtime` and starts answering on the listener (and,
    /// on a voter, bootstraps the quorum if it never started). The broker's
    /// own tasks start with [`ClusterNode::run`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        config: ClusterConfig,
        data: &Path,
        advertised: (String, u16),
        source_ip: Option<IpAddr>,
        runtime: &tokio::runtime::Runtime,
        stopping: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
    ) -> Result<Arc<ClusterNode>, Error> {
        config.check().map_err(Error::InvalidConfig)?;
        let rejoined = claim_directory(
            data,
            config.node_id,
            &format!("{}:{}", advertised.0, advertised.1),
        )?;
        let where_ = config.controller_listen.clone();
        let bind_err = |e: std::io::Error| Error::io("listen on", Path::new(&where_), e);
        let std_listener =
            std::net::TcpListener::bind(config.controller_listen.as_str()).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let bound = std_listener.local_addr().map_err(bind_err)?;
        let controller_address = match config.voters.get(&config.node_id) {
            Some(a) => a.clone(),
            None if bound.ip().is_unspecified() => format!("{}:{}", advertised.0, bound.port()),
            None => bound.to_string(),
        };
        let node_of = |id: &i32| NodeId::from(id.unsigned_abs());
        let peers = Peers::new(
            config
                .voters
                .iter()
                .map(|(id, a)| (node_of(id), a.clone()))
                .collect(),
            source_ip,
        );
        let voters: BTreeMap<NodeId, BasicNode> = config
            .voters
            .iter()
            .map(|(id, a)| (node_of(id), BasicNode::new(a.as_str())))
            .collect();
        let mut cc = ControllerConfig::new(
            node_of(&config.node_id),
            data.join(".ottla").join("cluster").join("meta"),
            voters.clone(),
        );
        cc.heartbeat_interval = Duration::from_millis(config.raft_heartbeat_ms());
        cc.election_timeout_min = Duration::from_millis(config.election_timeout_ms);
        cc.election_timeout_max = Duration::from_millis(config.election_timeout_ms * 2);
        cc.propose_timeout = Duration::from_secs(3);
        let transport = Arc::new(RaftTransport {
            peers: peers.clone(),
        });
        let controller = runtime
            .block_on(Controller::open(cc, transport))
            .map_err(|e| Error::IllegalState(format!("cannot open the cluster metadata: {e}")))?;
        let image = controller.subscribe();
        let listener = {
            let _g = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let node = Arc::new(ClusterNode {
            client: ControllerClient::new(peers.clone(), voters.keys().copied().collect()),
            controller: Arc::new(controller),
            peers,
            image,
            incarnation_id: ottla_storage::topic::TopicId::random()?.0,
            // Every listener (each client is told its own listener's
            // addresses, and fetchers use the inter-broker one); a broker
            // started without them registers its first as before.
            listeners: if config.endpoints.is_empty() {
                vec![Endpoint {
                    name: LISTENER.into(),
                    host: advertised.0,
                    port: advertised.1,
                    security_protocol: "PLAINTEXT".into(),
                }]
            } else {
                config.endpoints.clone()
            },
            controller_address,
            broker_epoch: AtomicU64::new(0),
            fenced: AtomicBool::new(true),
            caught_up: AtomicBool::new(false),
            shutting_down: tokio::sync::Mutex::new(false),
            source_ip,
            assigned: Mutex::new(Arc::new(Vec::new())),
            rejoined,
            listed: Mutex::new(HashMap::new()),
            config,
        });
        // A refused connection to the active controller's listener (its
        // process is gone) lets this voter elect as soon as the dead
        // leader's lease is over, rather than after another election
        // timeout. Weak: the controller's transport holds the peers.
        let weak = Arc::downgrade(&node.controller);
        node.peers.on_refused(Arc::new(move |peer| {
            if let Some(controller) = weak.upgrade() {
                controller.leader_unreachable(peer);
            }
        }));
        node.peers.set_tls(
            node.config
                .controller_tls
                .as_ref()
                .map(|t| t.client.clone()),
        );
        runtime.spawn(transport::serve_with(
            listener,
            node.clone(),
            node.config
                .controller_tls
                .as_ref()
                .map(|t| t.acceptor.clone()),
            stopping.clone(),
            done,
        ));
        if node.config.is_voter() {
            let n = node.clone();
            runtime.spawn(async move {
                if let Err(e) = n.controller.initialize().await {
                    crate::errors::warn(&format!("cluster: cannot bootstrap the quorum: {e}"));
                }
            });
        }
        Ok(node)
    }

    /// The broker's life in the cluster, until `stopping`: registration and
    /// heartbeats, the fencing timer, and following the image into
    /// `apply` (the replica manager's `apply_assignments`; its last
    /// argument is true once, for the first image applied once caught up
    /// by a node restarted on its directory: stray replicas are deleted).
    pub fn run<F>(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Runtime,
        stopping: watch::Receiver<bool>,
        done: mpsc::Sender<()>,
        apply: F,
    ) where
        F: Fn(
                Vec<PartitionAssignment>,
                &HashMap<String, BTreeMap<String, String>>,
                &[uuid::Uuid],
                bool,
            ) + Send
            + Sync
            + 'static,
    {
        let (n, s, d) = (self.clone(), stopping.clone(), done.clone());
        runtime.spawn(async move {
            n.lifecycle(s).await;
            drop(d);
        });
        let (n, s, d) = (self.clone(), stopping.clone(), done.clone());
        runtime.spawn(async move {
            n.fencing_timer(s).await;
            drop(d);
        });
        let n = self.clone();
        runtime.spawn(async move {
            n.follow_image(stopping, apply).await;
            drop(done);
        });
    }

    pub fn node_id(&self) -> BrokerId {
        self.config.node_id
    }

    /// The node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The metadata image as this node has applied it.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// The active controller's id, as this node knows it.
    pub fn controller_id(&self) -> Option<BrokerId> {
        self.controller.leader().and_then(|l| i32::try_from(l).ok())
    }

    pub fn broker_epoch(&self) -> Option<u64> {
        Some(self.broker_epoch.load(Ordering::Acquire)).filter(|e| *e > 0)
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Waits (up to `timeout`) for this process's first catch-up with the
    /// metadata: registered, its image holding its registration, and that
    /// registration unfenced (KRaft's `BrokerServer` opens its listeners
    /// only once the controller unfenced it). Before it, a restarted node's
    /// image can be the snapshot's, missing topics the cluster has, and its
    /// Metadata would leave the node itself out while its peers still list
    /// it (`api::metadata`): librdkafka then decommissions the broker and
    /// adds it again as a new one, and a coordinator it had cached for it
    /// is never used again (a transactional producer's TxnOffsetCommit
    /// waits forever: docs/design/transactions.md, issue 15).
    pub async fn wait_caught_up(&self, timeout: Duration) -> bool {
        if self.caught_up.load(Ordering::Acquire) {
            return true;
        }
        let mut rx = self.image.clone();
        let epoch = &self.broker_epoch;
        let me = self.node_id();
        let reached = tokio::time::timeout(timeout, async {
            loop {
                let e = epoch.load(Ordering::Acquire);
                if ready_to_serve(&rx.borrow_and_update(), me, e) {
                    return;
                }
                // The epoch is set without a notification: look again soon.
                let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
            }
        })
        .await
        .is_ok();
        if reached {
            self.caught_up.store(true, Ordering::Release);
        }
        reached
    }

    /// The partitions last handed to the replica manager.
    pub fn assigned(&self) -> Arc<Vec<PartitionAssignment>> {
        self.assigned.lock().clone()
    }

    /// Waits (up to `timeout`) until this node's image includes metadata
    /// offset `offset`: a change the active controller committed is then
    /// visible in this broker's answers. False on timeout.
    pub async fn wait_for_offset(&self, offset: u64, timeout: Duration) -> bool {
        let mut rx = self.image.clone();
        let seen = tokio::time::timeout(timeout, rx.wait_for(|img| img.offset >= offset))
            .await
            .is_ok_and(|r| r.is_ok());
        seen
    }

    /// The link the replica manager replicates through.
    pub fn link(self: &Arc<Self>) -> super::ClusterLink {
        super::ClusterLink {
            local: self.config.node_id,
            peers: Arc::new(ImagePeers {
                image: self.image.clone(),
                listener: self.config.inter_broker_listener_name.clone(),
            }),
            isr: Arc::new(ControllerIsr { node: self.clone() }),
            replica_lag_time_max_ms: self.config.replica_lag_time_max_ms,
            source_ip: self.source_ip,
        }
    }

    async fn lifecycle(&self, mut stopping: watch::Receiver<bool>) {
        let interval = Duration::from_millis(self.config.broker_heartbeat_interval_ms);
        'register: loop {
            let request = ControlRequest::RegisterBroker {
                broker_id: self.config.node_id,
                incarnation_id: self.incarnation_id,
                listeners: self.listeners.clone(),
                controller_address: self.controller_address.clone(),
                rack: None,
            };
            let epoch = tokio::select! {
                r = self.client.call(&request, REQUEST_DEADLINE) => r,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let epoch = match epoch {
                Ok(ControlReply::Registered { broker_epoch }) => broker_epoch,
                other => {
                    if let Err(ClientError::Refused { message, .. }) = other {
                        crate::errors::warn(&format!("cluster: registration refused: {message}"));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => continue 'register,
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            };
            self.broker_epoch.store(epoch, Ordering::Release);
            loop {
                let request = ControlRequest::Heartbeat {
                    broker_id: self.config.node_id,
                    broker_epoch: epoch,
                    metadata_offset: self.image.borrow().offset,
                };
                let answer = {
                    let shutting_down = self.shutting_down.lock().await;
                    if *shutting_down {
                        return;
                    }
                    tokio::select! {
                        r = self.client.call(&request, interval * 2) => r,
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                };
                match answer {
                    Ok(ControlReply::Heartbeat { fenced }) => {
                        self.fenced.store(fenced, Ordering::Release);
                    }
                    Err(ClientError::Refused { code, .. })
                        if code == codes::STALE_BROKER_EPOCH
                            || code == codes::BROKER_ID_NOT_REGISTERED =>
                    {
                        // The controller lost or replaced this registration.
                        continue 'register;
                    }
                    _ => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        }
    }

    async fn fencing_timer(&self, mut stopping: watch::Receiver<bool>) {
        let session = Duration::from_millis(self.config.broker_session_timeout_ms);
        // Fencing comes at most a tick after the session ends.
        let tick = (session / 10).max(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if self.controller.is_leader() {
                if let Err(e) = self.controller.fence_expired(session).await {
                    if !matches!(e, ProposeError::NotLeader { .. }) {
                        crate::errors::warn(&format!("cluster: fencing expired brokers: {e}"));
                    }
                }
                // Reassignments whose AlterPartition completion was missed
                // (a controller change in between) complete here.
                if let Err(e) = self.controller.complete_reassignments().await {
                    if !matches!(e, ProposeError::NotLeader { .. }) {
                        crate::errors::warn(&format!("cluster: completing reassignments: {e}"));
                    }
                }
            }
        }
    }

    async fn follow_image<F>(&self, mut stopping: watch::Receiver<bool>, apply: F)
    where
        F: Fn(
            Vec<PartitionAssignment>,
            &HashMap<String, BTreeMap<String, String>>,
            &[uuid::Uuid],
            bool,
        ),
    {
        let mut rx = self.image.clone();
        let mut before = Arc::new(MetadataImage::default());
        loop {
            let image = rx.borrow_and_update().clone();
            let me = NodeId::from(self.config.node_id.unsigned_abs());
            for (id, address) in self.controller.member_addresses() {
                if id != me {
                    self.peers.set_address(id, &address);
                }
            }
            // Nothing is applied before this process's registration is in
            // the image (KRaft's brokers start their replica manager only
            // after that first catch-up). Until then the image is what the
            // previous process knew: it can still name this node the
            // leader (restarted within its session, or while the quorum
            // was down), and a node whose partitions' data was lost would
            // take writes at offset 0 and have its followers, in the same
            // leader epoch, truncate to its empty log. The registration of
            // a new incarnation moves those leaderships and takes it out of
            // the in-sync sets first.
            let epoch = self.broker_epoch.load(Ordering::Acquire);
            let registered = epoch > 0 && image.offset >= epoch;
            if registered && (image.offset != before.offset || before.offset == 0) {
                let assigned = assignments::for_broker(&image, self.config.node_id);
                let configs = assignments::topic_configs(&image);
                let mut deleted = assignments::deleted_topics(&before, &image);
                // A replica reassigned away (Kafka's StopReplica with
                // delete): once this broker holds no partition of a topic
                // it held one of, its local copy goes.
                if before.offset > 0 {
                    deleted.extend(assignments::moved_away(
                        &before,
                        &image,
                        self.config.node_id,
                    ));
                }
                // The first image applied is caught up (it holds this
                // incarnation's registration, so every change made while
                // the broker was down): local copies it does not assign
                // here are strays, deleted before anything is served.
                let sweep_strays = before.offset == 0 && self.rejoined;
                *self.assigned.lock() = Arc::new(assigned.clone());
                apply(assigned, &configs, &deleted, sweep_strays);
                before = image;
            }
            // Membership (learners' addresses) changes without an image
            // change: look again now and then (soon while the registration
            // is awaited: its epoch is set without a notification).
            let again = if registered {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(20)
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(again) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// Kafka's controlled shutdown: asks the active controller to fence this
    /// broker, moving its leaderships to in-sync followers first, so clients
    /// fail over at once instead of after the session timeout. Best effort,
    /// bounded.
    pub async fn controlled_shutdown(&self) {
        // After any heartbeat in flight, and before the fence: no more.
        *self.shutting_down.lock().await = true;
        let Some(epoch) = self.broker_epoch() else {
            return;
        };
        let request = ControlRequest::ControlledShutdown {
            broker_id: self.config.node_id,
            broker_epoch: epoch,
        };
        if let Err(e) = self.client.call(&request, Duration::from_secs(3)).await {
            crate::errors::warn(&format!("cluster: controlled shutdown: {e:?}"));
        }
    }

    /// Stops the controller (after the broker's tasks stopped).
    pub async fn stop(&self) {
        self.controller.shutdown().await;
    }

    // ----- Topic operations through the active controller -----

    /// Sends a topic change to the active controller and, once committed,
    /// waits until this node's image has it (so this broker's next answers
    /// show it): the topic's id, or Kafka's code and message.
    async fn topic_change(
        &self,
        request: ControlRequest,
        wait: bool,
    ) -> Result<uuid::Uuid, (i16, String)> {
        match self.call_controller(&request).await? {
            ControlReply::Committed { topic_id, offset } => {
                if wait && !self.wait_for_offset(offset, REQUEST_DEADLINE).await {
                    return Err((
                        codes::REQUEST_TIMED_OUT,
                        "committed, but this broker has not applied it yet".into(),
                    ));
                }
                Ok(uuid::Uuid::from_bytes(topic_id))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// A request to the active controller, its refusals and unavailability
    /// as Kafka error codes (REQUEST_TIMED_OUT when no controller answered).
    async fn call_controller(
        &self,
        request: &ControlRequest,
    ) -> Result<ControlReply, (i16, String)> {
        match self.client.call(request, REQUEST_DEADLINE).await {
            Ok(reply) => Ok(reply),
            Err(ClientError::Refused { code, message }) => Err((code, message)),
            Err(ClientError::Unavailable(m)) => Err((
                codes::REQUEST_TIMED_OUT,
                format!("no active controller answered: {m}"),
            )),
        }
    }

    /// CreateTopics for one topic: `replication_factor` -1 is the
    /// broker's `default.replication.factor`; `min.insync.replicas` not
    /// given is the broker's when that is not Kafka's default of 1.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        mut configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<uuid::Uuid, (i16, String)> {
        let replication_factor = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if self.config.min_insync_replicas != 1 {
            configs
                .entry("min.insync.replicas".into())
                .or_insert_with(|| self.config.min_insync_replicas.to_string());
        }
        let request = ControlRequest::CreateTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs,
            validate_only,
        };
        self.topic_change(request, !validate_only).await
    }

    /// DeleteTopics for one topic: its id.
    pub async fn delete_topic(&self, name: &str) -> Result<uuid::Uuid, (i16, String)> {
        let request = ControlRequest::DeleteTopic {
            name: name.to_string(),
        };
        self.topic_change(request, true).await
    }

    /// CreatePartitions for one topic.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let request = ControlRequest::CreatePartitions {
            name: name.to_string(),
            count,
            validate_only,
        };
        self.topic_change(request, !validate_only).await.map(|_| ())
    }

    /// Sends a partition operation (reassign, elect) to the active
    /// controller and waits until this node's image has its result: the
    /// per-partition codes and messages.
    async fn partition_op(
        &self,
        request: ControlRequest,
    ) -> Result<Vec<(i16, Option<String>)>, (i16, String)> {
        match self.call_controller(&request).await? {
            ControlReply::PartitionResults { results, offset } => {
                let _seen = self.wait_for_offset(offset, REQUEST_DEADLINE).await;
                Ok(results)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// AlterPartitionReassignments: per partition, the target replicas or
    /// `None` (cancel).
    pub async fn reassign(
        &self,
        partitions: Vec<(String, i32, Option<Vec<BrokerId>>)>,
    ) -> Result<Vec<(i16, Option<String>)>, (i16, String)> {
        self.partition_op(ControlRequest::Reassign { partitions })
            .await
    }

    /// ElectLeaders of the partitions given.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(i16, Option<String>)>, (i16, String)> {
        self.partition_op(ControlRequest::ElectLeaders {
            unclean,
            partitions,
        })
        .await
    }

    /// UnregisterBroker.
    pub async fn unregister_broker(&self, broker_id: BrokerId) -> Result<(), (i16, String)> {
        self.partition_op(ControlRequest::UnregisterBroker { broker_id })
            .await
            .map(|_| ())
    }

    /// CreateTopics with manual replica assignments.
    pub async fn create_topic_assigned(
        &self,
        name: &str,
        assignments: Vec<(i32, Vec<BrokerId>)>,
        mut configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<uuid::Uuid, (i16, String)> {
        if self.config.min_insync_replicas != 1 {
            configs
                .entry("min.insync.replicas".into())
                .or_insert_with(|| self.config.min_insync_replicas.to_string());
        }
        let request = ControlRequest::CreateTopicAssigned {
            name: name.to_string(),
            assignments,
            configs,
            validate_only,
        };
        self.topic_change(request, !validate_only).await
    }

    // ----- ACLs and SCRAM users through the active controller -----

    /// Waits until this node's image has metadata offset `offset`.
    async fn applied_here(&self, offset: u64) -> Result<(), (i16, String)> {
        if self.wait_for_offset(offset, REQUEST_DEADLINE).await {
            Ok(())
        } else {
            Err((
                codes::REQUEST_TIMED_OUT,
                "committed, but this broker has not applied it yet".into(),
            ))
        }
    }

    /// CreateAcls: the bindings stored in the metadata log, and in this
    /// node's image once this returns.
    pub async fn create_acls(
        &self,
        acls: Vec<ottla_meta::records::AclEntry>,
    ) -> Result<(), (i16, String)> {
        match self
            .call_controller(&ControlRequest::CreateAcls { acls })
            .await?
        {
            ControlReply::Applied { offset } => self.applied_here(offset).await,
            other => Err(unexpected(&other)),
        }
    }

    /// DeleteAcls: per filter, the bindings removed.
    pub async fn delete_acls(
        &self,
        filters: Vec<crate::auth::acl::AclFilter>,
    ) -> Result<Vec<Vec<ottla_meta::records::AclEntry>>, (i16, String)> {
        match self
            .call_controller(&ControlRequest::DeleteAcls { filters })
            .await?
        {
            ControlReply::AclsDeleted { matched, offset } => {
                self.applied_here(offset).await.map(|()| matched)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// AlterUserScramCredentials: per user, Kafka's code and message.
    #[allow(clippy::type_complexity)]
    pub async fn alter_scram_users(
        &self,
        users: Vec<(String, Vec<super::wire::ScramChange>)>,
    ) -> Result<Vec<(String, i16, Option<String>)>, (i16, String)> {
        match self
            .call_controller(&ControlRequest::AlterScramUsers { users })
            .await?
        {
            ControlReply::UserResults { results, offset } => {
                self.applied_here(offset).await.map(|()| results)
            }
            other => Err(unexpected(&other)),
        }
    }

    // ----- The active controller's side -----

    async fn register(
        &self,
        broker_id: BrokerId,
        incarnation_id: [u8; 16],
        listeners: Vec<Endpoint>,
        controller_address: String,
        rack: Option<String>,
    ) -> ControlReply {
        if broker_id < 0 {
            return refused(code::INVALID_REQUEST, format!("broker id {broker_id}"));
        }
        let node = NodeId::from(broker_id.unsigned_abs());
        let voter = self.config.voters.contains_key(&broker_id);
        if !voter {
            // Before it is a member, so the leader can reach it at once.
            self.peers.set_address(node, &controller_address);
        }
        let epoch = match self
            .controller
            .register_broker(broker_id, incarnation_id, listeners, rack)
            .await
        {
            Ok(e) => e,
            Err(e) => return propose_failed(e),
        };
        if !voter {
            if let Err(e) = self.controller.add_learner(node, &controller_address).await {
                return propose_failed(e);
            }
        }
        self.controller.broker_heartbeat(broker_id);
        ControlReply::Registered {
            broker_epoch: epoch,
        }
    }

    async fn heartbeat(&self, broker_id: BrokerId, epoch: u64, offset: u64) -> ControlReply {
        let image = self.controller.image();
        let Some(b) = image.brokers.get(&broker_id) else {
            return refused(
                codes::BROKER_ID_NOT_REGISTERED,
                format!("broker {broker_id} is not registered"),
            );
        };
        if b.broker_epoch != epoch {
            return refused(
                codes::STALE_BROKER_EPOCH,
                format!("broker epoch {epoch} is not the current {}", b.broker_epoch),
            );
        }
        self.controller.broker_heartbeat(broker_id);
        if b.fenced && offset >= b.broker_epoch {
            // Caught up with the metadata up to its own registration.
            return match self.controller.unfence_broker(broker_id).await {
                Ok(_) => ControlReply::Heartbeat { fenced: false },
                Err(e) => propose_failed(e),
            };
        }
        ControlReply::Heartbeat { fenced: b.fenced }
    }

    async fn shutdown_broker(&self, broker_id: BrokerId, epoch: u64) -> ControlReply {
        let image = self.controller.image();
        match image.brokers.get(&broker_id) {
            Some(b) if b.broker_epoch == epoch => {}
            Some(_) => return refused(codes::STALE_BROKER_EPOCH, "stale broker epoch".into()),
            None => {
                return refused(codes::BROKER_ID_NOT_REGISTERED, "not registered".into());
            }
        }
        match self.controller.fence_broker(broker_id).await {
            Ok(_) => ControlReply::ShutdownDone,
            // Fenced already (by its session timeout): nothing left to do.
            Err(ProposeError::Rejected(ApplyError::StaleBrokerEpoch { .. })) => {
                ControlReply::ShutdownDone
            }
            Err(e) => propose_failed(e),
        }
    }

    async fn alter_partition(
        &self,
        broker_id: BrokerId,
        topic_id: TopicId,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> ControlReply {
        let image = self.controller.image();
        let Some(p) = image.partition(topic_id, partition) else {
            return refused(code::UNKNOWN_TOPIC_OR_PARTITION, "no such partition".into());
        };
        // Kafka's checks (`ReplicationControlManager.alterPartition`).
        if p.leader != Some(broker_id) {
            return refused(
                codes::NOT_LEADER_OR_FOLLOWER,
                format!("broker {broker_id} does not lead the partition"),
            );
        }
        if leader_epoch != p.leader_epoch {
            return refused(
                code::FENCED_LEADER_EPOCH,
                format!("leader epoch {leader_epoch} is not {}", p.leader_epoch),
            );
        }
        if partition_epoch != p.partition_epoch {
            return refused(
                codes::INVALID_UPDATE_VERSION,
                format!(
                    "partition epoch {partition_epoch} is not {}",
                    p.partition_epoch
                ),
            );
        }
        if !isr.contains(&broker_id) {
            return refused(code::INVALID_REQUEST, "the leader must stay in sync".into());
        }
        if let Some(b) = isr.iter().find(|b| {
            !p.isr.contains(b)
                && (!p.replicas.contains(b) || !image.brokers.get(b).is_some_and(|r| !r.fenced))
        }) {
            return refused(
                codes::INELIGIBLE_REPLICA,
                format!("broker {b} cannot join the in-sync set (fenced or not a replica)"),
            );
        }
        if isr == p.isr {
            return ControlReply::PartitionChanged { partition_epoch };
        }
        let change = MetadataRecord::PartitionChange {
            topic_id,
            partition,
            partition_epoch,
            leader: None,
            isr: Some(isr),
        };
        match self.controller.propose(vec![change]).await {
            Ok(_) => {
                // A replica being added may just have joined the ISR.
                if image
                    .partition(topic_id, partition)
                    .is_some_and(|p| p.reassigning())
                {
                    if let Err(e) = self.controller.complete_reassignments().await {
                        crate::errors::warn(&format!("cluster: completing reassignments: {e}"));
                    }
                }
                match self.controller.image().partition(topic_id, partition) {
                    Some(p) => ControlReply::PartitionChanged {
                        partition_epoch: p.partition_epoch,
                    },
                    None => refused(code::UNKNOWN_TOPIC_OR_PARTITION, "deleted meanwhile".into()),
                }
            }
            Err(e) => propose_failed(e),
        }
    }

    async fn controller_create_topic(
        &self,
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> ControlReply {
        let image = self.controller.image();
        if image.topic_ids.contains_key(&name) {
            return refused(
                code::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            );
        }
        if replication_factor < 1 {
            return refused(
                code::INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0.".into(),
            );
        }
        let rf = replication_factor.unsigned_abs() as usize;
        if validate_only {
            return match decide::assign_replicas(&image, partitions, rf) {
                Ok(_) => ControlReply::Committed {
                    topic_id: [0; 16],
                    offset: image.offset,
                },
                Err(e) => decide_failed(e),
            };
        }
        let id = match ottla_storage::topic::TopicId::random() {
            Ok(id) => id.0,
            Err(e) => return refused(code::UNKNOWN_SERVER_ERROR, e.to_string()),
        };
        match self
            .controller
            .create_topic(&name, TopicId(id), partitions, rf, configs)
            .await
        {
            Ok(applied) => ControlReply::Committed {
                topic_id: id,
                offset: applied.offset,
            },
            Err(e) => propose_failed(e),
        }
    }

    async fn controller_delete_topic(&self, name: String) -> ControlReply {
        let Some(&id) = self.controller.image().topic_ids.get(&name) else {
            return refused(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.".into(),
            );
        };
        match self
            .controller
            .propose(vec![MetadataRecord::DeleteTopic { topic_id: id }])
            .await
        {
            Ok(applied) => ControlReply::Committed {
                topic_id: id.0,
                offset: applied.offset,
            },
            Err(e) => propose_failed(e),
        }
    }

    async fn controller_create_partitions(
        &self,
        name: String,
        count: i32,
        validate_only: bool,
    ) -> ControlReply {
        let image = self.controller.image();
        let Some(&id) = image.topic_ids.get(&name) else {
            return refused(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                "This server does not host this topic-partition.".into(),
            );
        };
        let existing = image.topics.get(&id).map_or(0, |t| t.partitions.len());
        if usize::try_from(count).map_or(true, |c| c <= existing) {
            return refused(
                code::INVALID_PARTITIONS,
                format!("Topic currently has {existing} partitions, which is higher than or equal to the requested {count}."),
            );
        }
        if validate_only {
            return match decide::add_partitions(&image, id, count) {
                Ok(_) => ControlReply::Committed {
                    topic_id: id.0,
                    offset: image.offset,
                },
                Err(e) => decide_failed(e),
            };
        }
        match self.controller.create_partitions(id, count).await {
            Ok(applied) => ControlReply::Committed {
                topic_id: id.0,
                offset: applied.offset,
            },
            Err(e) => propose_failed(e),
        }
    }
}

impl ClusterNode {
    /// The partitions named, by topic id: `Err` (Kafka's code) for a topic
    /// the image does not have.
    fn resolve(image: &MetadataImage, topic: &str) -> Option<TopicId> {
        image.topic_ids.get(topic).copied()
    }

    async fn controller_reassign(
        &self,
        partitions: Vec<(String, i32, Option<Vec<BrokerId>>)>,
    ) -> ControlReply {
        let image = self.controller.image();
        let mut results: Vec<(i16, Option<String>)> = Vec::with_capacity(partitions.len());
        let mut asked = Vec::new();
        let mut slots = Vec::new();
        for (i, (topic, partition, target)) in partitions.into_iter().enumerate() {
            results.push((0, None));
            match Self::resolve(&image, &topic) {
                Some(id) if image.partition(id, partition).is_some() => {
                    // A partition named twice: the first request counts.
                    if asked
                        .iter()
                        .any(|(t, p, _): &(TopicId, i32, _)| *t == id && *p == partition)
                    {
                        results[i] = (
                            code::INVALID_REQUEST,
                            Some(format!("{topic}-{partition} is named twice")),
                        );
                        continue;
                    }
                    asked.push((id, partition, target));
                    slots.push(i);
                }
                _ => {
                    results[i] = (
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some("This server does not host this topic-partition.".into()),
                    );
                }
            }
        }
        let outcome = match self.controller.reassign(&asked).await {
            Ok(o) => o,
            Err(e) => return propose_failed(e),
        };
        for (slot, r) in slots.into_iter().zip(outcome) {
            if let Err(e) = r {
                results[slot] = (e.code(), Some(e.to_string()));
            }
        }
        // Added replicas already in sync (or none added) complete at once.
        if let Err(e) = self.controller.complete_reassignments().await {
            crate::errors::warn(&format!("cluster: completing reassignments: {e}"));
        }
        ControlReply::PartitionResults {
            results,
            offset: self.controller.image().offset,
        }
    }

    async fn controller_elect(
        &self,
        unclean: bool,
        partitions: Vec<(String, i32)>,
    ) -> ControlReply {
        let image = self.controller.image();
        let mut results: Vec<(i16, Option<String>)> = vec![(0, None); partitions.len()];
        let mut asked = Vec::new();
        let mut slots = Vec::new();
        for (i, (topic, partition)) in partitions.into_iter().enumerate() {
            match Self::resolve(&image, &topic) {
                Some(id) if image.partition(id, partition).is_some() => {
                    if !asked.contains(&(id, partition)) {
                        asked.push((id, partition));
                        slots.push(i);
                    }
                }
                _ => {
                    results[i] = (
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        Some("This server does not host this topic-partition.".into()),
                    );
                }
            }
        }
        let kind = if unclean {
            decide::ElectionType::Unclean
        } else {
            decide::ElectionType::Preferred
        };
        let outcome = match self.controller.elect_leaders(kind, &asked).await {
            Ok(o) => o,
            Err(e) => return propose_failed(e),
        };
        for (slot, r) in slots.into_iter().zip(outcome) {
            if let Err(e) = r {
                results[slot] = (e.code(), Some(e.to_string()));
            }
        }
        ControlReply::PartitionResults {
            results,
            offset: self.controller.image().offset,
        }
    }

    async fn controller_unregister(&self, broker_id: BrokerId) -> ControlReply {
        let image = self.controller.image();
        if !image.brokers.contains_key(&broker_id) {
            return refused(
                codes::BROKER_ID_NOT_REGISTERED,
                format!("Broker ID {broker_id} is not currently registered"),
            );
        }
        let held = image
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.replicas.contains(&broker_id))
            .count();
        if held > 0 {
            return refused(
                code::INVALID_REQUEST,
                format!(
                    "broker {broker_id} still holds replicas of {held} partition(s): \
                     reassign them to other brokers first"
                ),
            );
        }
        match self.controller.unregister_broker(broker_id).await {
            Ok(applied) => ControlReply::PartitionResults {
                results: Vec::new(),
                offset: applied.offset,
            },
            Err(e) => propose_failed(e),
        }
    }

    async fn controller_create_assigned(
        &self,
        name: String,
        assignments: Vec<(i32, Vec<BrokerId>)>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> ControlReply {
        let image = self.controller.image();
        if image.topic_ids.contains_key(&name) {
            return refused(
                code::TOPIC_ALREADY_EXISTS,
                format!("Topic '{name}' already exists."),
            );
        }
        let placed = match decide::manual_assignment(&image, &assignments) {
            Ok(p) => p,
            Err(e) => return refused(e.code(), e.to_string()),
        };
        if validate_only {
            return ControlReply::Committed {
                topic_id: [0; 16],
                offset: image.offset,
            };
        }
        let id = match ottla_storage::topic::TopicId::random() {
            Ok(id) => id.0,
            Err(e) => return refused(code::UNKNOWN_SERVER_ERROR, e.to_string()),
        };
        let record = MetadataRecord::CreateTopic {
            name,
            topic_id: TopicId(id),
            partitions: placed,
            configs,
        };
        match self.controller.propose(vec![record]).await {
            Ok(applied) => ControlReply::Committed {
                topic_id: id,
                offset: applied.offset,
            },
            Err(e) => propose_failed(e),
        }
    }
}

/// A controller reply of the wrong kind for the request.
fn unexpected(reply: &ControlReply) -> (i16, String) {
    (
        code::UNKNOWN_SERVER_ERROR,
        format!("unexpected controller answer {reply:?}"),
    )
}

fn refused(code: i16, message: String) -> ControlReply {
    ControlReply::Error { code, message }
}

fn decide_failed(e: DecideError) -> ControlReply {
    match e {
        DecideError::NotEnoughBrokers { factor, available } => refused(
            code::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the partition {factor} time(s): The target replication \
                 factor of {factor} cannot be reached because only {available} broker(s) are \
                 registered."
            ),
        ),
        DecideError::UnknownBroker(b) => refused(
            codes::BROKER_ID_NOT_REGISTERED,
            format!("broker {b} is not registered"),
        ),
        DecideError::Invalid(m) => refused(code::INVALID_REQUEST, m),
    }
}

fn propose_failed(e: ProposeError) -> ControlReply {
    match e {
        ProposeError::NotLeader { leader } => ControlReply::NotController { leader },
        ProposeError::Stopped(_) => ControlReply::NotController { leader: None },
        ProposeError::Timeout(t) => refused(
            codes::REQUEST_TIMED_OUT,
            format!("the metadata change did not commit within {t:?}"),
        ),
        ProposeError::Decide(d) => decide_failed(d),
        ProposeError::Rejected(a) => {
            let c = match &a {
                ApplyError::UnknownBroker(_) => codes::BROKER_ID_NOT_REGISTERED,
                ApplyError::StaleBrokerEpoch { .. } => codes::STALE_BROKER_EPOCH,
                ApplyError::TopicExists(_) | ApplyError::TopicIdExists(_) => {
                    code::TOPIC_ALREADY_EXISTS
                }
                ApplyError::UnknownTopic(_) | ApplyError::UnknownPartition { .. } => {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                }
                ApplyError::StalePartitionEpoch { .. } => codes::INVALID_UPDATE_VERSION,
                ApplyError::BrokerInUse(_) | ApplyError::Invalid(_) => code::INVALID_REQUEST,
            };
            refused(c, a.to_string())
        }
    }
}

impl ControlHandler for ClusterNode {
    async fn handle(&self, request: ControlRequest) -> ControlReply {
        if let ControlRequest::Raft(bytes) = request {
            return ControlReply::Raft(self.controller.rpc_server().handle(&bytes).await);
        }
        if !self.controller.is_leader() {
            return ControlReply::NotController {
                leader: self.controller.leader(),
            };
        }
        match request {
            ControlRequest::Raft(_) => unreachable!("answered above"),
            ControlRequest::RegisterBroker {
                broker_id,
                incarnation_id,
                listeners,
                controller_address,
                rack,
            } => {
                self.register(
                    broker_id,
                    incarnation_id,
                    listeners,
                    controller_address,
                    rack,
                )
                .await
            }
            ControlRequest::Heartbeat {
                broker_id,
                broker_epoch,
                metadata_offset,
            } => {
                self.heartbeat(broker_id, broker_epoch, metadata_offset)
                    .await
            }
            ControlRequest::ControlledShutdown {
                broker_id,
                broker_epoch,
            } => self.shutdown_broker(broker_id, broker_epoch).await,
            ControlRequest::AlterPartition {
                broker_id,
                topic_id,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                self.alter_partition(
                    broker_id,
                    TopicId(topic_id),
                    partition,
                    leader_epoch,
                    partition_epoch,
                    isr,
                )
                .await
            }
            ControlRequest::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                validate_only,
            } => {
                self.controller_create_topic(
                    name,
                    partitions,
                    replication_factor,
                    configs,
                    validate_only,
                )
                .await
            }
            ControlRequest::DeleteTopic { name } => self.controller_delete_topic(name).await,
            ControlRequest::CreatePartitions {
                name,
                count,
                validate_only,
            } => {
                self.controller_create_partitions(name, count, validate_only)
                    .await
            }
            ControlRequest::Reassign { partitions } => self.controller_reassign(partitions).await,
            ControlRequest::ElectLeaders {
                unclean,
                partitions,
            } => self.controller_elect(unclean, partitions).await,
            ControlRequest::UnregisterBroker { broker_id } => {
                self.controller_unregister(broker_id).await
            }
            ControlRequest::CreateTopicAssigned {
                name,
                assignments,
                configs,
                validate_only,
            } => {
                self.controller_create_assigned(name, assignments, configs, validate_only)
                    .await
            }
            ControlRequest::CreateAcls { acls } => {
                crate::auth::cluster::controller_create_acls(&self.controller, acls).await
            }
            ControlRequest::DeleteAcls { filters } => {
                crate::auth::cluster::controller_delete_acls(&self.controller, filters).await
            }
            ControlRequest::AlterScramUsers { users } => {
                crate::auth::cluster::controller_alter_scram(&self.controller, users).await
            }
        }
    }
}

/// The brokers' Kafka listeners, from the image (for the replica fetchers).
struct ImagePeers {
    image: watch::Receiver<Arc<MetadataImage>>,
    /// The inter-broker listener's name (`None`: each broker's first).
    listener: Option<String>,
}

impl PeerDirectory for ImagePeers {
    fn address(&self, broker: BrokerId) -> Option<SocketAddr> {
        let endpoint = {
            let image = self.image.borrow();
            let b = image.brokers.get(&broker)?;
            let e = match &self.listener {
                Some(name) => b.listeners.iter().find(|l| &l.name == name),
                None => None,
            }
            .or_else(|| b.listeners.first())?;
            (e.host.clone(), e.port)
        };
        match endpoint.0.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, endpoint.1)),
            Err(_) => endpoint.to_socket_addrs().ok()?.next(),
        }
    }
}

/// AlterPartition through the active controller.
struct ControllerIsr {
    node: Arc<ClusterNode>,
}

impl IsrChannel for ControllerIsr {
    fn alter_partition(
        &self,
        topic_id: uuid::Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<i32, i16>> + Send>> {
        let node = self.node.clone();
        Box::pin(async move {
            let request = ControlRequest::AlterPartition {
                broker_id: node.config.node_id,
                topic_id: *topic_id.as_bytes(),
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            };
            match node.client.call(&request, REQUEST_DEADLINE).await {
                Ok(ControlReply::PartitionChanged { partition_epoch }) => {
                    // The leader acts on the new in-sync set once its own
                    // image has it (Kafka's leader waits for the metadata).
                    let id = TopicId(*topic_id.as_bytes());
                    let mut rx = node.image.clone();
                    let seen = rx.wait_for(|img| {
                        img.partition(id, partition)
                            .map_or(true, |p| p.partition_epoch >= partition_epoch)
                    });
                    let _waited = tokio::time::timeout(REQUEST_DEADLINE, seen).await.is_ok();
                    Ok(partition_epoch)
                }
                Ok(_) => Err(code::UNKNOWN_SERVER_ERROR),
                Err(ClientError::Refused { code, .. }) => Err(code),
                Err(ClientError::Unavailable(_)) => Err(codes::NOT_CONTROLLER),
            }
        })
    }
}

/// Whether `image` shows broker `me`, registered at metadata offset
/// `epoch` (0: not yet), ready to serve clients: the image holds that
/// registration and the controller has unfenced it.
fn ready_to_serve(image: &MetadataImage, me: BrokerId, epoch: u64) -> bool {
    epoch > 0
        && image.offset >= epoch
        && image
            .brokers
            .get(&me)
            .is_some_and(|b| b.broker_epoch >= epoch && !b.fenced)
}

#[cfg(test)]
mod ready_tests {
    use super::*;

    fn register(image: &mut MetadataImage, id: BrokerId, offset: u64) {
        let r = MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation_id: [offset as u8; 16],
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
                security_protocol: "PLAINTEXT".into(),
            }],
            rack: None,
        };
        image.apply(&r, offset).expect("register");
        image.offset = offset;
    }

    fn unfence(image: &mut MetadataImage, id: BrokerId, offset: u64) {
        let broker_epoch = image.brokers[&id].broker_epoch;
        let r = MetadataRecord::UnfenceBroker {
            broker_id: id,
            broker_epoch,
        };
        image.apply(&r, offset).expect("unfence");
        image.offset = offset;
    }

    #[test]
    fn a_restarted_node_serves_once_its_new_registration_is_unfenced() {
        let mut img = MetadataImage::default();
        register(&mut img, 1, 1);
        unfence(&mut img, 1, 2);
        assert!(ready_to_serve(&img, 1, 1));
        // Restarted: registered again at offset 3, fenced until the
        // controller has seen it catch up (its Metadata would leave it out).
        register(&mut img, 1, 3);
        let epoch = img.brokers[&1].broker_epoch;
        assert!(!ready_to_serve(&img, 1, epoch));
        unfence(&mut img, 1, 4);
        assert!(ready_to_serve(&img, 1, epoch));
        // Not registered yet, or an image from before the registration.
        assert!(!ready_to_serve(&img, 1, 0));
        assert!(!ready_to_serve(&img, 2, epoch));
        assert!(!ready_to_serve(&MetadataImage::default(), 1, epoch));
    }
}
