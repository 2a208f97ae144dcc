//! A broker in a cluster (issue 14): Kafka's KRaft combined mode. Each node
//! runs the metadata quorum's controller (`ottla_meta`; a voter, or a
//! learner for a broker-only node) and its broker, which registers,
//! heartbeats, and follows the metadata image.
//!
//! ```text
//! (here)       ClusterConfig, the settings and their defaults
//! wire         the controller listener's frames and messages
//! transport    TCP: pooled calls with backoff, the quorum's Transport, the
//!              broker→controller client, the listener's accept loop
//! node         ClusterNode: the controller, the listener's handler (the
//!              active controller's side), registration, heartbeats,
//!              fencing, controlled shutdown, following the image
//! assignments  the image as one broker's partitions (pure)
//! ```
//!
//! The replica side (followers, high watermark, ISR, acks=all) is the
//! replica manager's; this module tells it the partitions (`apply_assignments`)
//! and lends it the peers' addresses and the AlterPartition channel
//! (`ClusterLink`).

pub mod assignments;
pub mod node;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use crate::replica::{ClusterLink, IsrChannel, PartitionAssignment, PeerDirectory};
pub use node::ClusterNode;

/// Kafka error codes the cluster paths answer with.
pub mod codes {
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const INVALID_UPDATE_VERSION: i16 = 95;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
    pub const INELIGIBLE_REPLICA: i16 = 107;
}

/// A node's cluster settings (`ottla serve --node-id ...`).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Kafka's `node.id`: this broker's id, and its controller's.
    pub node_id: i32,
    /// Where the controller listener binds (`controller.listener`): Raft
    /// between controllers and the brokers' requests to the active one.
    pub controller_listen: String,
    /// Kafka's `controller.quorum.voters`: node id → controller address.
    /// A node not among them is a broker-only node (a Raft learner).
    pub voters: BTreeMap<i32, String>,
    /// Replicas of a topic created without a replication factor (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
    /// `min.insync.replicas` of topics created without one.
    pub min_insync_replicas: i32,
    /// Kafka's `replica.lag.time.max.ms`, handed to the replica side.
    pub replica_lag_time_max_ms: u64,
    /// Kafka's `broker.heartbeat.interval.ms` (Kafka: 2000).
    pub broker_heartbeat_interval_ms: u64,
    /// Kafka's `broker.session.timeout.ms` (Kafka: 9000): a broker not
    /// heard from for this long is fenced and its leaderships move.
    pub broker_session_timeout_ms: u64,
    /// Kafka's `controller.quorum.election.timeout.ms` (Kafka: 1000): a
    /// voter that hears no leader for a random time between this and twice
    /// this starts an election; the leader heartbeats every fifth of it.
    pub election_timeout_ms: u64,
    /// Kafka's `offsets.topic.replication.factor` (3): replicas of
    /// `__consumer_offsets`, created on the first FindCoordinator for a
    /// group; lowered to the live brokers when fewer are up then.
    pub offsets_topic_replication_factor: i16,
    // --- Security between the nodes (issue 18's cluster part; `auth::peer`). ---
    /// Kafka's `inter.broker.listener.name`: the listener other brokers'
    /// replica fetchers connect to; `None`: the first listener.
    pub inter_broker_listener_name: Option<String>,
    /// The SASL credentials this broker authenticates to the others with,
    /// when the inter-broker listener is SASL_PLAINTEXT or SASL_SSL.
    pub inter_broker_sasl: Option<crate::auth::peer::SaslCredentials>,
    /// The controller listener's security protocol: mutual TLS (`SSL`)
    /// when true, from the broker's `ssl_*` files; PLAINTEXT otherwise.
    pub controller_ssl: bool,
    /// Filled in by the broker when it starts: every listener it advertises
    /// (registered in the metadata image), and the controller listener's TLS.
    pub endpoints: Vec<ottla_meta::records::Endpoint>,
    pub controller_tls: Option<crate::auth::peer::ControlTls>,
}

impl ClusterConfig {
    /// Defaults chosen for fail-over within about 2.5 s on one machine or a
    /// LAN, even when the active controller is the node that died:
    /// heartbeats every 200 ms, a session of 1000 ms, elections after
    /// 250–500 ms (Raft heartbeats every 50 ms).
    pub fn new(node_id: i32, controller_listen: &str, voters: BTreeMap<i32, String>) -> Self {
        ClusterConfig {
            node_id,
            controller_listen: controller_listen.to_string(),
            voters,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 10_000,
            broker_heartbeat_interval_ms: 200,
            broker_session_timeout_ms: 1000,
            election_timeout_ms: 250,
            offsets_topic_replication_factor:
                crate::coordinator::placement::DEFAULT_OFFSETS_TOPIC_REPLICATION_FACTOR,
            inter_broker_listener_name: None,
            inter_broker_sasl: None,
            controller_ssl: false,
            endpoints: Vec::new(),
            controller_tls: None,
        }
    }

    /// The Raft leader's heartbeat interval: a fifth of the election timeout.
    pub fn raft_heartbeat_ms(&self) -> u64 {
        (self.election_timeout_ms / 5).max(10)
    }

    pub fn is_voter(&self) -> bool {
        self.voters.contains_key(&self.node_id)
    }

    /// The settings' own consistency, checked before anything starts.
    pub fn check(&self) -> Result<(), String> {
        if self.node_id < 0 {
            return Err(format!("node id {} is negative", self.node_id));
        }
        let max = crate::coordinator::producer_id::MAX_NODE_ID;
        if self.node_id > max {
            // Producer ids carry the node id (coordinator::producer_id).
            return Err(format!("node id {} is above {max}", self.node_id));
        }
        if self.voters.is_empty() {
            return Err("controller quorum voters are required with a node id".into());
        }
        if let Some(v) = self.voters.keys().find(|v| **v < 0) {
            return Err(format!("voter id {v} is negative"));
        }
        if self.default_replication_factor < 1 {
            return Err("default replication factor must be at least 1".into());
        }
        if self.offsets_topic_replication_factor < 1 {
            return Err("offsets topic replication factor must be at least 1".into());
        }
        if self.min_insync_replicas < 1 {
            return Err("min.insync.replicas must be at least 1".into());
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return Err(
                "broker heartbeat interval must be positive and below the broker session timeout"
                    .into(),
            );
        }
        if !(50..=i32::MAX as u64).contains(&self.election_timeout_ms) {
            return Err("the controller election timeout must be at least 50 ms".into());
        }
        Ok(())
    }
}

/// Parses Kafka's `controller.quorum.voters`: `1@host:port,2@host:port,...`.
pub fn parse_voters(text: &str) -> Result<BTreeMap<i32, String>, String> {
    let mut voters = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, address) = part
            .split_once('@')
            .ok_or_else(|| format!("voter {part:?} is not ID@HOST:PORT"))?;
        let id: i32 = id
            .trim()
            .parse()
            .map_err(|_| format!("voter {part:?}: {id:?} is not a node id"))?;
        if id < 0 {
            return Err(format!("voter {part:?}: the node id is negative"));
        }
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("voter {part:?} has no port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("voter {part:?} is not ID@HOST:PORT"));
        }
        if voters.insert(id, address.to_string()).is_some() {
            return Err(format!("voter {id} is named twice"));
        }
    }
    if voters.is_empty() {
        return Err("no voters".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn voters_parse_as_kafka_writes_them() {
        let v = parse_voters("1@127.0.0.1:9093, 2@localhost:9094,3@[::1]:9095").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[&2], "localhost:9094");
        assert_eq!(v[&3], "[::1]:9095");
        for bad in [
            "",
            "1@h",
            "x@h:1",
            "1@:1",
            "1@h:99999",
            "1@h:1,1@h:2",
            "-1@h:1",
            "h:1",
        ] {
            assert!(parse_voters(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn settings_are_checked() {
        let v = parse_voters("1@127.0.0.1:1").unwrap();
        let ok = ClusterConfig::new(1, "127.0.0.1:1", v.clone());
        assert!(ok.check().is_ok());
        assert!(ok.is_voter());
        assert!(!ClusterConfig::new(4, "127.0.0.1:1", v.clone()).is_voter());
        let mut c = ok.clone();
        c.broker_session_timeout_ms = c.broker_heartbeat_interval_ms;
        assert!(c.check().is_err());
        let mut c = ok.clone();
        c.election_timeout_ms = 20;
        assert!(c.check().is_err());
        let mut c = ok;
        c.node_id = -1;
        assert!(c.check().is_err());
    }
}
