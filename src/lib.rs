//! ottla: Kafka-format partitioned logs on a local directory.
//!
//! The engine ([`record`], [`log`], [`store`], [`offsets`], [`producer`],
//! [`consumer`]) knows nothing of Python or the network; `python` (behind the
//! `python` feature) is a thin door onto it.

pub mod arrow;
pub mod beacon;
pub mod config;
pub mod consumer;
pub mod error;
pub mod group;
pub mod log;
pub mod ofd;
pub mod offsets;
pub mod partitioner;
pub mod producer;
pub mod record;
pub mod store;
pub mod topic;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};

#[cfg(test)]
mod engine_tests;

#[cfg(feature = "broker")]
pub mod broker;

/// Huge allocations are mapped lazily so a size claimed on the wire can never
/// abort the process (see `broker::alloc`).
/// (In `cargo test` the fuzz tests' counting allocator stands in front of it.)
#[cfg(all(feature = "broker", not(test)))]
#[global_allocator]
static GLOBAL: broker::alloc::Allocator = broker::alloc::Allocator;

// Fuzz oracles: shared by the cargo-fuzz targets in `fuzz/` (through the
// `fuzzing` feature) and the property tests in `fuzz_tests`.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod fuzz_tests;
