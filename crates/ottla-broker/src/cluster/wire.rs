//! The controller listener's bytes: length-prefixed frames, each one
//! message, and the messages themselves.
//!
//! A frame is a 4-byte big-endian length, then that many bytes: one version
//! byte ([`WIRE_VERSION`]) and the postcard encoding of a [`ControlRequest`]
//! or a [`ControlReply`]. One request per connection at a time, answered in
//! order (a caller wanting several at once opens several connections).
//!
//! The messages are ottla's own rather than Kafka's BrokerRegistration (62),
//! BrokerHeartbeat (63) and AlterPartition (56): the metadata quorum's Raft
//! bytes travel on the same connections, the records they refer to are
//! `ottla_meta`'s (already serde types), and no Kafka client ever speaks to
//! this port. The fields follow Kafka's messages (broker epoch, incarnation
//! id, metadata offset, partition and leader epochs), so moving to Kafka's
//! encoding later changes this module only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use ottla_meta::records::{AclEntry, Endpoint, ScramEntry};
use ottla_meta::BrokerId;

use crate::auth::acl::AclFilter;

/// The first byte of every message.
pub const WIRE_VERSION: u8 = 1;

/// The largest frame either side accepts: a whole metadata snapshot travels
/// in one (thousands of partitions are well under a megabyte).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A request to a node's controller listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Raft bytes (`ottla_meta::network`), for the node's controller.
    Raft(Vec<u8>),
    /// Kafka's BrokerRegistration: a broker process starts.
    RegisterBroker {
        broker_id: BrokerId,
        incarnation_id: [u8; 16],
        listeners: Vec<Endpoint>,
        /// Its controller listener: where a broker-only node (a Raft
        /// learner) is sent the metadata log.
        controller_address: String,
        rack: Option<String>,
    },
    /// Kafka's BrokerHeartbeat: alive, and caught up to `metadata_offset`.
    Heartbeat {
        broker_id: BrokerId,
        broker_epoch: u64,
        metadata_offset: u64,
    },
    /// Kafka's ControlledShutdown: fence me, moving my leaderships first.
    ControlledShutdown {
        broker_id: BrokerId,
        broker_epoch: u64,
    },
    /// Kafka's AlterPartition: a leader changes its partition's in-sync set.
    AlterPartition {
        broker_id: BrokerId,
        topic_id: [u8; 16],
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    },
    /// CreateTopics, one topic (replicas placed by the active controller).
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// DeleteTopics, one topic.
    DeleteTopic { name: String },
    /// CreatePartitions: the topic grows to `count` partitions.
    CreatePartitions {
        name: String,
        count: i32,
        validate_only: bool,
    },
    /// AlterPartitionReassignments (45): per partition, the target
    /// replicas, or `None` to cancel.
    Reassign {
        partitions: Vec<(String, i32, Option<Vec<BrokerId>>)>,
    },
    /// ElectLeaders (43): `unclean` or preferred, of the partitions given.
    ElectLeaders {
        unclean: bool,
        partitions: Vec<(String, i32)>,
    },
    /// UnregisterBroker (64).
    UnregisterBroker { broker_id: BrokerId },
    /// CreateTopics with manual replica assignments.
    CreateTopicAssigned {
        name: String,
        assignments: Vec<(i32, Vec<BrokerId>)>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// CreateAcls (30) on a cluster node: bindings already checked by the
    /// broker, stored in the metadata log (`AccessControlEntry` records).
    CreateAcls { acls: Vec<AclEntry> },
    /// DeleteAcls (31): per filter, the bindings it removes, decided on the
    /// active controller's image.
    DeleteAcls { filters: Vec<AclFilter> },
    /// AlterUserScramCredentials (51): per user, the changes the broker
    /// found valid (salted keys only, never a password); a deletion of a
    /// credential that does not exist fails its user (RESOURCE_NOT_FOUND).
    AlterScramUsers {
        users: Vec<(String, Vec<ScramChange>)>,
    },
}

/// One change of a user's SCRAM credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScramChange {
    /// Remove the credential of this mechanism (Kafka's byte).
    Delete(i8),
    /// Set the credential of its mechanism.
    Upsert(ScramEntry),
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    Raft(Vec<u8>),
    Registered {
        broker_epoch: u64,
    },
    Heartbeat {
        fenced: bool,
    },
    ShutdownDone,
    PartitionChanged {
        partition_epoch: i32,
    },
    /// A metadata change committed at `offset` of the metadata log (a
    /// broker waits until its image has it before answering its client).
    Committed {
        topic_id: [u8; 16],
        offset: u64,
    },
    /// This node is not the active controller; `leader` is, if known.
    NotController {
        leader: Option<u64>,
    },
    /// Refused, with Kafka's error code and message.
    Error {
        code: i16,
        message: String,
    },
    /// Per-partition outcomes (Kafka's error code and message, 0 for
    /// none), in the order asked, committed at metadata `offset`.
    PartitionResults {
        results: Vec<(i16, Option<String>)>,
        offset: u64,
    },
    /// A change committed at metadata `offset` (CreateAcls).
    Applied {
        offset: u64,
    },
    /// DeleteAcls: per filter, the bindings removed, committed at `offset`.
    AclsDeleted {
        matched: Vec<Vec<AclEntry>>,
        offset: u64,
    },
    /// AlterUserScramCredentials: per user, Kafka's code and message (0
    /// for none), committed at `offset`.
    UserResults {
        results: Vec<(String, i16, Option<String>)>,
        offset: u64,
    },
}

/// Encodes a message after the version byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data: serializing cannot fail; an empty message is refused by
    // the other side as undecodable rather than a panic here.
    postcard::to_extend(value, vec![WIRE_VERSION]).unwrap_or_default()
}

/// Decodes a message (the version byte, then postcard); never panics on
/// what a peer sent.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown control message version {v}")),
        None => Err("empty control message".into()),
    }
}

/// Reads a frame's length prefix: the body size, or why it is refused.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, String> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n == 0 || n > MAX_FRAME {
        return Err(format!(
            "control frame of {n} bytes (1 to {MAX_FRAME} accepted)"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<ControlRequest>(&[]).is_err());
        assert!(decode::<ControlRequest>(&[9, 0]).is_err());
        assert!(decode::<ControlRequest>(&[1, 250, 250, 250, 250]).is_err());
        assert!(frame_len([0, 0, 0, 0]).is_err());
        assert!(frame_len([0xff, 0, 0, 0]).is_err());
        assert_eq!(frame_len([0, 0, 1, 0]), Ok(256));
        // Mutations of real messages and random bytes: errors, never a
        // panic or a huge allocation (postcard reads lengths against the
        // bytes it has).
        let samples = [
            encode(&ControlRequest::Heartbeat {
                broker_id: 3,
                broker_epoch: 99,
                metadata_offset: 1234,
            }),
            encode(&ControlRequest::CreateTopic {
                name: "orders".into(),
                partitions: 3,
                replication_factor: 3,
                configs: BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
                validate_only: false,
            }),
            encode(&ControlReply::Error {
                code: 7,
                message: "m".into(),
            }),
            encode(&ControlRequest::DeleteAcls {
                filters: vec![AclFilter::any()],
            }),
            encode(&ControlRequest::AlterScramUsers {
                users: vec![(
                    "alice".into(),
                    vec![
                        ScramChange::Delete(1),
                        ScramChange::Upsert(ScramEntry {
                            mechanism: 2,
                            salt: vec![1; 8],
                            stored_key: vec![2; 64],
                            server_key: vec![3; 64],
                            iterations: 4096,
                        }),
                    ],
                )],
            }),
            encode(&ControlReply::AclsDeleted {
                matched: vec![vec![AclEntry {
                    resource_type: 2,
                    resource_name: "t".into(),
                    pattern_type: 3,
                    principal: "User:a".into(),
                    host: "*".into(),
                    operation: 4,
                    permission_type: 3,
                }]],
                offset: 9,
            }),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut b = samples[i % samples.len()].clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            if i % 7 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            let _ = decode::<ControlRequest>(&b);
            let _ = decode::<ControlReply>(&b);
        }
        let bytes = encode(&ControlRequest::DeleteTopic { name: "t".into() });
        assert!(matches!(
            decode::<ControlRequest>(&bytes),
            Ok(ControlRequest::DeleteTopic { name }) if name == "t"
        ));
    }
}
