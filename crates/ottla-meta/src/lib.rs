//! ottla's cluster-metadata quorum: a replicated log of the cluster's
//! metadata (brokers, topics with their ids, replica assignments, leaders,
//! leader epochs, in-sync sets, broker fencing), as Kafka's KRaft controller
//! quorum holds it.
//!
//! Consensus is [openraft](https://docs.rs/openraft/0.9)'s (docs/design/replication.md
//! says why); this crate provides what openraft leaves to its user:
//!
//! - [`records`] and [`image`]: the metadata records and the image they
//!   build, applied deterministically and validated;
//! - [`decide`]: the controller's decisions (elections when a broker is
//!   fenced, replica placement, heartbeat expiry) as pure functions;
//! - [`store`]: the log, vote and snapshots on disk, crash-safe;
//! - [`network`]: the [`network::Transport`] boundary (bytes to a node, bytes
//!   back) and openraft's network on top of it; no sockets here;
//! - [`controller`]: a quorum member: propose, read, watch the image;
//! - [`heard`]: when the quorum's leader was last heard from.
//!
//! [`testing`] (tests and the `testing` feature only) routes requests in
//! process and injects link faults.

pub mod controller;
pub mod decide;
pub mod heard;
pub mod image;
pub mod network;
pub mod records;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod types;

#[cfg(test)]
mod cluster_tests;

pub use controller::{Controller, ControllerConfig, OpenError, ProposeError};
pub use image::{Applied, ApplyError, MetadataImage};
pub use records::{BrokerId, MetadataRecord, TopicId};
pub use types::NodeId;
