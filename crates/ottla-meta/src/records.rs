//! The metadata records: what the replicated metadata log holds, in the
//! spirit of KRaft's metadata records (`RegisterBrokerRecord`,
//! `FenceBrokerRecord`, `TopicRecord` + `PartitionRecord`,
//! `PartitionChangeRecord`, `ConfigRecord`, ...).
//!
//! A record says what changes; [`crate::image::MetadataImage::apply`] checks
//! that it fits the current state and applies it, or refuses it with an
//! [`crate::image::ApplyError`]. One Raft entry carries a [`Proposal`]: a
//! batch of records applied all or nothing (as KRaft's atomic batches), so
//! that a broker's fencing and the leader moves it causes land together.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker's node id (Kafka's `node.id`, an int32 on the wire).
pub type BrokerId = i32;

/// Kafka's topic id: 16 random bytes (a UUID), stable for the topic's life.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 16]);

impl fmt::Debug for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// One listener a broker advertises to clients (Kafka's `advertised.listeners`
/// entry, as in `BrokerRegistrationRequest.Listeners`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name (`PLAINTEXT`, `INTERNAL`, ...).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
    pub security_protocol: String,
}

/// A partition as created: its replicas in preference order, the in-sync
/// set and the first leader (as KRaft's `PartitionRecord`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// `None` when no replica could lead (all fenced): Kafka's leader -1.
    pub leader: Option<BrokerId>,
}

/// What a config change applies to (Kafka's `ConfigResource`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigResource {
    /// Cluster-wide defaults (Kafka's broker resource with an empty name).
    Cluster,
    Broker(BrokerId),
    Topic(String),
}

/// One metadata record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker registers (at every start). A new incarnation replaces the
    /// old registration and starts fenced; the registration's broker epoch
    /// is the metadata offset of this record (as in KRaft).
    RegisterBroker {
        broker_id: BrokerId,
        /// Random per process start (Kafka's `IncarnationId`): a repeat of
        /// the same incarnation is idempotent.
        incarnation_id: [u8; 16],
        listeners: Vec<Endpoint>,
        rack: Option<String>,
    },
    /// The broker caught up and heartbeats: it may lead and be in sync.
    /// Refused unless `broker_epoch` is the current registration's.
    UnfenceBroker {
        broker_id: BrokerId,
        broker_epoch: u64,
    },
    /// The broker stopped heartbeating (or shut down): it leads nothing.
    FenceBroker {
        broker_id: BrokerId,
        broker_epoch: u64,
    },
    /// The broker is removed from the cluster (it must lead nothing and be
    /// in no replica list).
    UnregisterBroker {
        broker_id: BrokerId,
    },
    CreateTopic {
        name: String,
        topic_id: TopicId,
        partitions: Vec<PartitionAssignment>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        topic_id: TopicId,
    },
    /// A leader or in-sync set change of one partition, decided against
    /// `partition_epoch`: refused if the partition has moved on since.
    /// A leader change bumps the leader epoch; every change bumps the
    /// partition epoch.
    PartitionChange {
        topic_id: TopicId,
        partition: i32,
        /// The partition epoch the change was decided against.
        partition_epoch: i32,
        /// `Some(new)` changes the leader (`Some(None)`: no leader).
        leader: Option<Option<BrokerId>>,
        /// `Some(isr)` replaces the in-sync set.
        isr: Option<Vec<BrokerId>>,
    },
    /// Sets (`Some`) or deletes (`None`) one config key.
    ConfigChange {
        resource: ConfigResource,
        key: String,
        value: Option<String>,
    },
    /// New partitions of an existing topic (Kafka's CreatePartitions: more
    /// `PartitionRecord`s), numbered on from its last one. Added after the
    /// other variants, so the encoding of those is unchanged.
    CreatePartitions {
        topic_id: TopicId,
        partitions: Vec<PartitionAssignment>,
    },
    /// A change of a partition's replica set (Kafka's `PartitionChangeRecord`
    /// with its `Replicas`, `AddingReplicas` and `RemovingReplicas` fields:
    /// KIP-455's reassignment). Starting a reassignment lists the target
    /// replicas first, then the original ones leaving; `adding` (target, not
    /// original) and `removing` (original, not target) say which is which;
    /// completing or cancelling it clears both. Decided against
    /// `partition_epoch` like [`MetadataRecord::PartitionChange`]; a leader
    /// change bumps the leader epoch. Added after the other variants, so the
    /// encoding of those is unchanged.
    PartitionReplicas {
        topic_id: TopicId,
        partition: i32,
        partition_epoch: i32,
        replicas: Vec<BrokerId>,
        adding: Vec<BrokerId>,
        removing: Vec<BrokerId>,
        /// `Some(new)` changes the leader (`Some(None)`: no leader).
        leader: Option<Option<BrokerId>>,
        /// The new in-sync set (a subset of `replicas`, not empty).
        isr: Vec<BrokerId>,
    },
    /// An ACL binding is added (KRaft's `AccessControlEntryRecord`); ACLs
    /// are a set, so adding one already there changes nothing. Added after
    /// the other variants, so the encoding of those is unchanged.
    AccessControlEntry(AclEntry),
    /// An ACL binding is removed (KRaft's `RemoveAccessControlEntryRecord`);
    /// one that is not there (removed by a concurrent DeleteAcls) changes
    /// nothing.
    RemoveAccessControlEntry(AclEntry),
    /// A user's SCRAM credential for one mechanism is set (KRaft's
    /// `UserScramCredentialRecord`): only the salt, the derived keys and the
    /// iterations, never a password.
    UserScramCredential {
        name: String,
        credential: ScramEntry,
    },
    /// A user's SCRAM credential for one mechanism is removed (KRaft's
    /// `RemoveUserScramCredentialRecord`); one that is not there changes
    /// nothing.
    RemoveUserScramCredential {
        name: String,
        /// Kafka's `ScramMechanism` byte: 1 SHA-256, 2 SHA-512.
        mechanism: i8,
    },
}

/// One ACL binding, with Kafka's codes (`ResourceType`, `PatternType`,
/// `AclOperation`, `AclPermissionType`) as KRaft's `AccessControlEntryRecord`
/// holds it: the broker's authorizer gives them meaning; the image only
/// checks that they are codes a stored binding may have.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclEntry {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

impl AclEntry {
    /// Whether the codes are those of a binding Kafka stores: a concrete
    /// resource type (2..=7), LITERAL (3) or PREFIXED (4), an operation
    /// other than UNKNOWN/ANY (2..=14), DENY (2) or ALLOW (3), a name and a
    /// `Type:name` principal.
    pub fn check(&self) -> Result<(), String> {
        if !(2..=7).contains(&self.resource_type) {
            return Err(format!("resource type {}", self.resource_type));
        }
        if !(3..=4).contains(&self.pattern_type) {
            return Err(format!("pattern type {}", self.pattern_type));
        }
        if !(2..=14).contains(&self.operation) {
            return Err(format!("operation {}", self.operation));
        }
        if !(2..=3).contains(&self.permission_type) {
            return Err(format!("permission type {}", self.permission_type));
        }
        if self.resource_name.is_empty() || self.host.is_empty() {
            return Err("empty resource name or host".into());
        }
        match self.principal.split_once(':') {
            Some((k, n)) if !k.is_empty() && !n.is_empty() => Ok(()),
            _ => Err(format!("principal {:?}", self.principal)),
        }
    }
}

/// What the cluster keeps of a SCRAM password (RFC 5802's server-side
/// keys), as KRaft's `UserScramCredentialRecord`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScramEntry {
    /// Kafka's `ScramMechanism` byte: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl ScramEntry {
    /// The mechanism is known and the keys have its hash's length.
    pub fn check(&self) -> Result<(), String> {
        let len = match self.mechanism {
            1 => 32,
            2 => 64,
            m => return Err(format!("SCRAM mechanism {m}")),
        };
        if self.stored_key.len() != len || self.server_key.len() != len {
            return Err("SCRAM keys of the wrong length".into());
        }
        if self.salt.is_empty() || self.iterations == 0 {
            return Err("empty SCRAM salt or zero iterations".into());
        }
        Ok(())
    }
}

/// What one Raft entry carries: records applied all or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub records: Vec<MetadataRecord>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proposal({} records)", self.records.len())
    }
}
