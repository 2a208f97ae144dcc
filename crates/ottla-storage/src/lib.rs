//! ottla's storage engine: topics as partitioned, offset-addressed logs in
//! Kafka's on-disk format, in one data directory that several processes
//! use at once.
//!
//! * [`store::Store`]: a data directory: topic metadata, one
//!   [`log::PartitionLog`] per partition opened on demand.
//! * [`log`]: segments, indexes, the shared head, locks, loading and
//!   recovery, retention and the log cleaner.
//! * [`offsets::OffsetStore`]: committed offsets in `__consumer_offsets`.
//! * [`retention_checker`]: the periodic retention check.
//! * [`beacon`], [`ofd`]: the futex word and the byte-range locks that
//!   processes coordinate through.
//!
//! This crate knows nothing of Python or the network: its dependency tree
//! (`cargo tree -p ottla-storage -e normal`) has no async runtime, no
//! bindings and no protocol library, and the crates above it are its only
//! callers.

// Processes coordinate through futexes on a shared mapping and OFD
// byte-range locks (docs/FORMAT.md, "What ottla assumes of the OS"): both
// are Linux's. Say so at build time rather than fail at run time.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "ottla's storage engine runs on Linux only: it needs futexes on shared \
     memory and open file description (OFD) locks"
);

pub mod beacon;
pub mod config;
pub mod error;
pub mod fd_budget;
pub mod fsutil;
pub mod log;
pub mod ofd;
pub mod offsets;
pub mod retention_checker;
pub mod store;
pub mod topic;
pub mod txn_state;

pub use error::{Error, Result};
