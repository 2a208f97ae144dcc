//! Records as Apache Arrow columns, for dataframes.
//!
//! The consumer hands records out one at a time as borrowed views
//! ([`ottla_record::RecordView`]); [`RecordColumns`] appends each one to
//! Kafka-shaped columns (topic, partition, offset, timestamp, key, value,
//! headers) laid out exactly as Arrow lays them out in memory: validity
//! bitmaps, `int32` offsets and one contiguous data buffer per binary
//! column. [`export`] then lends those buffers, without copying, through
//! the Arrow C Data Interface, which pyarrow, polars, DuckDB and nanoarrow
//! all import. No Arrow library is linked: the interface is two C structs.
//!
//! The columns know nothing of Python; the Python bindings (`ottla-python`'s `arrow.rs`)
//! wraps an export in PyCapsules.

pub mod columns;
pub mod export;
pub mod ffi;

pub use columns::RecordColumns;

#[cfg(test)]
mod tests;
