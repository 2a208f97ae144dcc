//! ottla's in-process clients, above the storage engine: a [`producer`]
//! (record accumulator, linger thread, futures), a [`consumer`] (positions,
//! fetching, commits, group membership), consumer [`group`]s coordinated
//! through files and kernel locks instead of a server, the default
//! [`partitioner`], and [`arrow`] columns filled while records are read.
//!
//! Nothing here knows of Python or the network; the bindings and the broker
//! (the doors) are thin layers over these types.

pub mod arrow;
pub mod consumer;
pub mod group;
pub mod partitioner;
pub mod producer;

// Fuzz oracles: shared by the cargo-fuzz targets in `fuzz/` (through the
// `fuzzing` feature) and the property tests in `fuzz_tests`.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod engine_tests;

#[cfg(test)]
mod fuzz_tests;
