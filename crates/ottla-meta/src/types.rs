//! openraft's type configuration for the metadata quorum: what a log entry
//! carries ([`Proposal`]), what applying one returns ([`ApplyOutcome`]), how
//! controllers are named (`u64` node ids, [`BasicNode`] addresses) and what a
//! snapshot is (the encoded image, in memory: the metadata is small).

use std::io::Cursor;

pub use openraft::BasicNode;

use crate::image::ApplyOutcome;
use crate::records::Proposal;

/// A controller's node id (Raft's; the same number as its broker id when a
/// process is both, as in KRaft's combined mode).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The metadata quorum's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
