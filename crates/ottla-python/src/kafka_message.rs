//! Reading the fields of confluent-kafka's `Message` (librdkafka's consumed
//! message) from the extension: the remote consumer's `Record`s
//! (`types::Record`, `remote_records`).
//!
//! A `Message` exposes its fields through methods only. Calling one by name
//! (`PyObject_CallMethodObjArgs`, the stable ABI's way) looks the name up
//! in the type's dictionary on every call; here the method descriptors of
//! `confluent_kafka.Message` (`Message.value`, ...) are looked up once and
//! called with the message as their argument (`PyObject_CallFunctionObjArgs`,
//! no lookup, no bound method, no argument tuple). Measured, the getter of
//! a remote record's `value` cost the same either way (55-60 ns with the
//! loop: PyO3's getter is most of it; docs/PERFORMANCE.md, "Over a
//! cluster", step 4); kept for the seven-field path with deserializers. A
//! message of any other type (a subclass, a stand-in in a test) is called
//! by name, as before.

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};

/// A field of a `Message`: the index of its method in `NAMES`.
#[derive(Clone, Copy)]
pub enum Field {
    Topic = 0,
    Partition = 1,
    Offset = 2,
    Timestamp = 3,
    Key = 4,
    Value = 5,
    Headers = 6,
}

const NAMES: [&str; 7] = [
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
];

/// `confluent_kafka.Message` and its methods' descriptors, in `NAMES`' order.
struct Methods {
    message_type: Py<PyType>,
    descriptors: Vec<Py<PyAny>>,
}

/// Looked up on first use; `None` if confluent-kafka cannot be imported (or
/// has no such methods): every call is then by name.
static METHODS: PyOnceLock<Option<Methods>> = PyOnceLock::new();

fn load(py: Python<'_>) -> PyResult<Methods> {
    let message_type = py
        .import("confluent_kafka")?
        .getattr("Message")?
        .cast_into::<PyType>()?;
    let descriptors = NAMES
        .iter()
        .map(|name| message_type.getattr(*name).map(Bound::unbind))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Methods {
        message_type: message_type.unbind(),
        descriptors,
    })
}

/// `message.<field>()`: through the cached descriptor for a
/// `confluent_kafka.Message`, by name for anything else.
pub fn call<'py>(message: &Bound<'py, PyAny>, field: Field) -> PyResult<Bound<'py, PyAny>> {
    let py = message.py();
    let methods = METHODS.get_or_init(py, || load(py).ok()).as_ref();
    if let Some(m) = methods {
        if ptr::eq(message.get_type_ptr(), m.message_type.as_ptr().cast()) {
            if let Some(descriptor) = m.descriptors.get(field as usize) {
                // SAFETY: the GIL is held (`py`); `descriptor` and `message`
                // are live objects, borrowed for the call; the variadic
                // argument list ends with a null pointer, as
                // `PyObject_CallFunctionObjArgs` requires. It returns a new
                // reference, or null with an exception set (a descriptor
                // called on another type raises TypeError; not here: the
                // type was checked).
                return unsafe {
                    let result = ffi::PyObject_CallFunctionObjArgs(
                        descriptor.as_ptr(),
                        message.as_ptr(),
                        ptr::null_mut::<ffi::PyObject>(),
                    );
                    Bound::from_owned_ptr_or_err(py, result)
                };
            }
        }
    }
    message.call_method0(PyString::intern(py, NAMES[field as usize]))
}
