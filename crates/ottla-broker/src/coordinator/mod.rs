//! The coordinators: broker-side state that is not a partition's.
//!
//! ```text
//! group        consumer groups, Kafka's classic protocol (GroupCoordinator)
//! consumer_group  consumer groups, KIP-848's consumer protocol (server-side assignors)
//! consumer_group_records  those groups in __consumer_offsets, as Kafka keeps them
//! placement    in a cluster: the group coordinator with the leader of __consumer_offsets
//! claim        who coordinates a group: embedded members or this broker
//! producer_id  producer ids for idempotent producers (ProducerIdManager)
//! txn          transactions (TransactionCoordinator): state, markers, timeouts
//! txn_placement  in a cluster: the transaction coordinator with the leader of __transaction_state
//! ```

pub mod claim;
pub mod consumer_group;
pub mod consumer_group_records;
pub mod group;
pub mod placement;
pub mod producer_id;
pub mod txn;
pub mod txn_placement;
pub mod txn_verify;

#[cfg(test)]
mod consumer_group_tests;
#[cfg(test)]
mod group_tests;
