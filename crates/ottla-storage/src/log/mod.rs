//! The partition log: segments of record batches with their indexes, the
//! shared head that lets several processes use one partition, and recovery.

pub mod cleaner;
pub mod head;
pub mod index_file;
pub mod leader_epoch;
pub mod loader;
pub mod lockfile;
pub mod offset_index;
pub mod partition;
pub mod producer_state;
pub mod segment;
pub mod time_index;
pub mod txn_index;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cleaner_tests;

#[cfg(test)]
mod race_tests;

#[cfg(test)]
mod epoch_tests;

pub use partition::{
    now_ms, AppendInfo, Durability, Fetched, LeaderEpochs, PartitionLog, ReadCursor,
    INITIAL_LEADER_EPOCH,
};
