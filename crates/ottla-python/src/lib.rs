//! The Python door: `ottla._core`, a thin layer that converts arguments,
//! releases the GIL around blocking engine calls, and maps errors.

mod admin;
mod aio_bell;
mod aio_consumer;
mod aio_producer;
mod arrow;
mod broker;
mod consumer;
mod errors;
mod kafka_message;
mod producer;
mod record_alloc;
mod refcount;
mod remote_future;
mod remote_records;
mod remote_send;
mod security;
mod type_slots;
mod types;

use pyo3::prelude::*;

/// Huge allocations are mapped lazily, so a length claimed on the wire can
/// never abort the process (see `ottla_broker::alloc`). The extension is the
/// one binary here that hosts the broker, so it is the one that installs it.
#[global_allocator]
static GLOBAL: ottla_broker::alloc::Allocator = ottla_broker::alloc::Allocator;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<producer::Producer>()?;
    m.add_class::<producer::FutureRecordMetadata>()?;
    m.add_class::<producer::BatchFuture>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::OffsetAndTimestamp>()?;
    m.add_class::<consumer::ConsumerGroupMetadata>()?;
    m.add_class::<admin::Admin>()?;
    m.add_class::<broker::Broker>()?;
    m.add_class::<types::RecordMetadata>()?;
    m.add_class::<types::Record>()?;
    refcount::init(m.py())?;
    record_alloc::init(m.py());
    m.add_class::<aio_producer::AioProducer>()?;
    m.add_class::<aio_producer::SendFuture>()?;
    m.add_class::<aio_producer::SendManyFuture>()?;
    m.add_class::<aio_consumer::RecordWaiter>()?;
    m.add_class::<arrow::ArrowBatch>()?;
    m.add_function(wrap_pyfunction!(security::scram_users, m)?)?;
    m.add_function(wrap_pyfunction!(security::set_scram_user, m)?)?;
    m.add_function(wrap_pyfunction!(security::delete_scram_user, m)?)?;
    m.add_function(wrap_pyfunction!(security::acls, m)?)?;
    m.add_function(wrap_pyfunction!(security::create_acls, m)?)?;
    m.add_function(wrap_pyfunction!(security::delete_acls, m)?)?;
    m.add_function(wrap_pyfunction!(security::make_certificates, m)?)?;
    m.add_function(wrap_pyfunction!(remote_records::remote_records, m)?)?;
    m.add_function(wrap_pyfunction!(remote_records::remote_record, m)?)?;
    m.add_function(wrap_pyfunction!(remote_records::remote_record_iter, m)?)?;
    m.add_class::<remote_records::RecordIter>()?;
    remote_records::init(m.py());
    m.add_function(wrap_pyfunction!(remote_records::record_iter_direct, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_message::first_error, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_message::message_values, m)?)?;
    m.add_function(wrap_pyfunction!(kafka_message::message_fields_direct, m)?)?;
    m.add_function(wrap_pyfunction!(
        record_alloc::records_allocated_directly,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(record_alloc::records_freed_directly, m)?)?;
    m.add_function(wrap_pyfunction!(record_alloc::records_kept, m)?)?;
    m.add_function(wrap_pyfunction!(refcount::refcounts_in_place, m)?)?;
    m.add_class::<remote_send::RemoteSender>()?;
    m.add_class::<remote_send::RemoteSendMethod>()?;
    m.add_class::<remote_send::RemoteBoundSend>()?;
    // Its Python name is FutureRecordMetadata (of ottla.remote.producer),
    // the directory producer's class's: registered here under another.
    m.add(
        "RemoteFutureRecordMetadata",
        m.py().get_type::<remote_future::RemoteFuture>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    Ok(())
}
