//! Reading the fields of confluent-kafka's `Message` (librdkafka's consumed
//! message) from the extension: the remote consumer's `Record`s
//! (`types::Record`, `remote_records`) and its batch checks
//! (`first_error`, `message_values`).
//!
//! A `Message` exposes its fields through methods only, each a C function
//! of confluent-kafka's that returns a field it already holds
//! (`METH_NOARGS`). Three ways to call one, fastest last:
//! - by name (`PyObject_CallMethodObjArgs`): the name is looked up in the
//!   type's dictionary on every call. Any object with such methods (a
//!   subclass, a stand-in in a test) is called this way.
//! - through the method's descriptor, looked up once
//!   (`PyObject_CallFunctionObjArgs(Message.value, message)`): no lookup,
//!   but still the interpreter's call protocol, 20-30 ns a call.
//! - the C function itself, `ml_meth(message, NULL)`, as CPython's own
//!   `method_vectorcall_NOARGS` does after its checks (and Cython's cached
//!   unbound methods): a few ns. That reads the descriptor's `PyMethodDef`,
//!   which the stable ABI does not expose: the layout of
//!   `PyMethodDescrObject` (unchanged from CPython 3.8 to 3.14) is checked
//!   once at load, against facts no other layout would give (the
//!   descriptor's type is `method_descriptor`, its owner is `Message`, its
//!   `PyMethodDef` names the method and takes no arguments); any mismatch
//!   and every call goes through the descriptor instead.
//! - for the fields a `Message` keeps as objects and hands out as they are
//!   (topic, key, value, error), the object's own slot, read and
//!   increfed: what those C functions do, without their calls
//!   (confluent-kafka's wheels are built unoptimised, so each accessor is
//!   two calls deep and increfs through a third; 7 ns a field against
//!   under 1). Where each slot lies is found once at load, not assumed:
//!   two probe `Message`s made with fresh objects, whose words are
//!   searched for exactly the objects the accessors return, at the same
//!   place in both, and a third made without them, whose slots must read
//!   as null or `None` (`find_slots`). Anything else and those fields are
//!   read through the C functions.
//!
//! The remote iteration's CPU a record is the raw client's plus this
//! module's calls (docs/PERFORMANCE.md, "Over a cluster"), so the direct
//! call is what lets a `Record` hold its key, value and topic as plain
//! fields (member descriptors, the interpreter's cheapest attribute).

use std::ffi::{c_char, CStr};
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString, PyType};

use crate::refcount;

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
    Error = 7,
}

const NAMES: [&str; 8] = [
    "topic",
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
    "error",
];

/// CPython's `PyMethodDescrObject` up to its `PyMethodDef` (Include/
/// descrobject.h: `PyDescr_COMMON` then `d_method`), read only after the
/// checks in `direct_function`.
#[repr(C)]
struct MethodDescr {
    ob_base: ffi::PyObject,
    d_type: *mut ffi::PyTypeObject,
    d_name: *mut ffi::PyObject,
    d_qualname: *mut ffi::PyObject,
    d_method: *const ffi::PyMethodDef,
}

/// `confluent_kafka.Message` and its methods, in `NAMES`' order: their
/// descriptors, and their C functions when the checks allowed reading them.
struct Methods {
    message_type: Py<PyType>,
    descriptors: Vec<Py<PyAny>>,
    direct: Option<Vec<ffi::PyCFunction>>,
    /// The byte offset, in a `Message`, of the object each field's method
    /// returns as it is, in `NAMES`' order (`None`: called).
    slots: [Option<usize>; NAMES.len()],
}

/// The fields a `Message` holds as objects and returns unchanged (null as
/// `None`); the others (partition, offset, timestamp, headers) are built
/// by their methods.
const SLOT_FIELDS: [Field; 4] = [Field::Topic, Field::Key, Field::Value, Field::Error];

// SAFETY: the function pointers are confluent-kafka's C functions, valid for
// the life of the process (an extension module is never unloaded), and
// called only with the GIL held; the rest are `Py` objects.
unsafe impl Send for Methods {}
// SAFETY: as for `Send`: immutable after `load`, and only read.
unsafe impl Sync for Methods {}

/// Looked up on first use; `None` if confluent-kafka cannot be imported (or
/// has no such methods): every call is then by name.
static METHODS: PyOnceLock<Option<Methods>> = PyOnceLock::new();

/// The C function of `descriptor`, a `METH_NOARGS` method of `owner` named
/// `name`, if its layout is the one `MethodDescr` describes.
fn direct_function(
    descriptor: &Bound<'_, PyAny>,
    owner: &Bound<'_, PyType>,
    name: &str,
) -> Option<ffi::PyCFunction> {
    // The address of the interpreter's `method_descriptor` type, compared,
    // not read.
    let method_descriptor = ptr::addr_of_mut!(ffi::PyMethodDescr_Type);
    if !ptr::eq(descriptor.get_type_ptr(), method_descriptor) {
        return None;
    }
    let d = descriptor.as_ptr().cast::<MethodDescr>();
    // SAFETY: `descriptor` is a live `method_descriptor` (checked above), so
    // its object is at least a `PyMethodDescrObject`, of which `MethodDescr`
    // is a prefix on every CPython this module supports; its fields are read
    // in an order that stops before a pointer is followed unless the fields
    // before it are what that layout says: `d_type` is `owner` (a pointer
    // compared), then `d_method` is followed to a `PyMethodDef` whose
    // `ml_name` is a C string (CPython requires it non-null) equal to
    // `name`, with the calling convention of a method of no arguments.
    unsafe {
        if !ptr::eq((*d).d_type, owner.as_type_ptr()) {
            return None;
        }
        let def = (*d).d_method;
        if def.is_null() || (*def).ml_name.is_null() {
            return None;
        }
        if CStr::from_ptr((*def).ml_name as *const c_char).to_bytes() != name.as_bytes() {
            return None;
        }
        let flags = (*def).ml_flags & !ffi::METH_COEXIST;
        if flags != ffi::METH_NOARGS {
            return None;
        }
        Some((*def).ml_meth.PyCFunction)
    }
}

fn load(py: Python<'_>) -> PyResult<Methods> {
    let message_type = py
        .import("confluent_kafka")?
        .getattr("Message")?
        .cast_into::<PyType>()?;
    let descriptors = NAMES
        .iter()
        .map(|name| message_type.getattr(*name).map(Bound::unbind))
        .collect::<PyResult<Vec<_>>>()?;
    let direct = NAMES
        .iter()
        .zip(&descriptors)
        .map(|(name, d)| direct_function(d.bind(py), &message_type, name))
        .collect::<Option<Vec<_>>>();
    let mut methods = Methods {
        message_type: message_type.unbind(),
        descriptors,
        direct,
        slots: [None; NAMES.len()],
    };
    if let Some(slots) = find_slots(py, &methods) {
        methods.slots = slots;
    }
    Ok(methods)
}

/// The pointer-sized word at byte offset `at` of `obj`.
///
/// # Safety
/// `obj` is live and at least `at` + one word long, and `at` is a multiple
/// of the word size (an object's storage is pointer-aligned).
unsafe fn word_at(obj: &Bound<'_, PyAny>, at: usize) -> *mut ffi::PyObject {
    // SAFETY: this function's contract: a whole aligned word inside `obj`.
    unsafe {
        obj.as_ptr()
            .cast::<u8>()
            .add(at)
            .cast::<*mut ffi::PyObject>()
            .read()
    }
}

/// The word offsets in `message` (a live object of `size` bytes) that hold
/// exactly `target`.
fn words_holding(
    message: &Bound<'_, PyAny>,
    size: usize,
    target: *mut ffi::PyObject,
) -> Vec<usize> {
    let word = std::mem::size_of::<*mut ffi::PyObject>();
    // After the object header (reference count and type).
    (2 * word..=size.saturating_sub(word))
        .step_by(word)
        .filter(|&at| {
            // SAFETY: `message` is live and at least `size` bytes long (its
            // type's basic size), `at + word <= size` and `at` is a multiple
            // of `word`; the word is compared, never followed.
            ptr::eq(unsafe { word_at(message, at) }, target)
        })
        .collect()
}

/// Where `SLOT_FIELDS` lie in a `Message` (see the module comment), or
/// `None` if that cannot be shown.
fn find_slots(py: Python<'_>, methods: &Methods) -> Option<[Option<usize>; NAMES.len()]> {
    let ty = methods.message_type.bind(py);
    let size: usize = ty.getattr("__basicsize__").ok()?.extract().ok()?;
    if !(3 * std::mem::size_of::<usize>()..=4096).contains(&size) {
        return None;
    }
    let error_type = py
        .import("confluent_kafka")
        .ok()?
        .getattr("KafkaError")
        .ok()?;
    let probe = |tag: &str| -> Option<Bound<'_, PyAny>> {
        // Objects made here, so no other field or cached object is them.
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs
            .set_item(
                "topic",
                PyString::new(py, &format!("ottla-probe-topic-{tag}")),
            )
            .ok()?;
        let key = format!("ottla-probe-key-{tag}").into_bytes();
        kwargs
            .set_item("key", pyo3::types::PyBytes::new(py, &key))
            .ok()?;
        let value = format!("ottla-probe-value-{tag}").into_bytes();
        kwargs
            .set_item("value", pyo3::types::PyBytes::new(py, &value))
            .ok()?;
        kwargs
            .set_item("error", error_type.call1((1,)).ok()?)
            .ok()?;
        kwargs.set_item("partition", 3).ok()?;
        kwargs.set_item("offset", 5).ok()?;
        ty.call((), Some(&kwargs)).ok()
    };
    let probes = [probe("a")?, probe("b")?];
    let empty = ty.call0().ok()?;
    let mut slots = [None; NAMES.len()];
    for field in SLOT_FIELDS {
        let mut at = None;
        for p in &probes {
            let held = called(p, methods, field).ok()?;
            if held.is_none() {
                return None;
            }
            match words_holding(p, size, held.as_ptr())[..] {
                [one] if at.map_or(true, |a| a == one) => at = Some(one),
                _ => return None,
            }
        }
        let at = at?;
        if !called(&empty, methods, field).ok()?.is_none() {
            return None;
        }
        // SAFETY: as in `words_holding`: `at` was found there, inside `size`.
        let held = unsafe { word_at(&empty, at) };
        if !(held.is_null() || ptr::eq(held, py.None().as_ptr())) {
            return None;
        }
        slots[field as usize] = Some(at);
    }
    Some(slots)
}

fn methods(py: Python<'_>) -> Option<&'static Methods> {
    METHODS.get_or_init(py, || load(py).ok()).as_ref()
}

/// Whether the message's fields are read by calling the C functions of
/// confluent-kafka's `Message` directly, and its topic, key, value and
/// error from their slots (false: through its descriptors or by name). For
/// tests and the benchmark's notes.
#[pyfunction]
pub fn message_fields_direct(py: Python<'_>) -> bool {
    methods(py).is_some_and(|m| {
        m.direct.is_some() && SLOT_FIELDS.iter().all(|&f| m.slots[f as usize].is_some())
    })
}

/// `message.<field>()`: the field's slot, the C function itself, or the
/// cached descriptor, for a `confluent_kafka.Message`; by name for anything
/// else.
pub fn call<'py>(message: &Bound<'py, PyAny>, field: Field) -> PyResult<Bound<'py, PyAny>> {
    match of_message_type(message) {
        Some(m) => match m.slots[field as usize] {
            // SAFETY: `message` is exactly a `Message` (`of_message_type`)
            // and `at` is an offset `find_slots` found.
            Some(at) => Ok(unsafe { slot(message, at) }),
            None => called(message, m, field),
        },
        None => message.call_method0(PyString::intern(message.py(), NAMES[field as usize])),
    }
}

/// The methods of confluent-kafka's `Message` if `message` is exactly one
/// (not a subclass, which may override them).
fn of_message_type(message: &Bound<'_, PyAny>) -> Option<&'static Methods> {
    methods(message.py())
        .filter(|m| ptr::eq(message.get_type_ptr(), m.message_type.as_ptr().cast()))
}

/// `(topic(), key(), value())` of `message`: `call` for each, with the
/// lookup and the type check made once.
pub fn topic_key_value<'py>(
    message: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Some(m) = of_message_type(message) {
        if let (Some(t), Some(k), Some(v)) = (
            m.slots[Field::Topic as usize],
            m.slots[Field::Key as usize],
            m.slots[Field::Value as usize],
        ) {
            // SAFETY: as in `call`: exactly a `Message`, and offsets
            // `find_slots` showed.
            return Ok(unsafe { (slot(message, t), slot(message, k), slot(message, v)) });
        }
    }
    Ok((
        call(message, Field::Topic)?,
        call(message, Field::Key)?,
        call(message, Field::Value)?,
    ))
}

/// The object at byte offset `at` of `message` (null as `None`), a new
/// reference.
///
/// # Safety
/// `message` is exactly a `confluent_kafka.Message` and `at` an offset
/// `find_slots` found, so the word there (inside its basic size,
/// pointer-aligned) is null or an object the message holds a reference to,
/// live while the GIL is held.
unsafe fn slot<'py>(message: &Bound<'py, PyAny>, at: usize) -> Bound<'py, PyAny> {
    let py = message.py();
    // SAFETY: this function's contract.
    let held = unsafe { word_at(message, at) };
    let held = if held.is_null() {
        // SAFETY: `None` is a live object.
        unsafe { ffi::Py_None() }
    } else {
        held
    };
    // SAFETY: this function's contract (or `None`): a live object, whose
    // new reference (counted in place: `refcount`) is handed over.
    unsafe {
        refcount::incref(held);
        Bound::from_owned_ptr(py, held)
    }
}

/// Item `i` of `list`, borrowed, or `None` past its end.
///
/// Borrowed: no reference is taken (PyO3's list iterator takes one and
/// gives it back, two calls into the interpreter under the stable ABI).
///
/// # Safety
/// The item is valid while the list holds it: the caller takes its own
/// reference (`refcount::new_ref`) before any Python code runs that could
/// change the list.
pub unsafe fn borrowed_item<'a, 'py>(
    list: &'a Bound<'py, PyList>,
    i: usize,
) -> Option<Borrowed<'a, 'py, PyAny>> {
    let py = list.py();
    let i = ffi::Py_ssize_t::try_from(i).ok()?;
    // SAFETY: the GIL is held (`py`); a borrowed reference, or null with
    // an `IndexError` set past the end.
    let item = unsafe { ffi::PyList_GetItem(list.as_ptr(), i) };
    if item.is_null() {
        drop(PyErr::take(py));
        return None;
    }
    // SAFETY: a live object the list holds.
    Some(unsafe { Borrowed::from_ptr(py, item) })
}

/// Where `message` keeps `field`, if it is exactly a `Message` and that
/// slot was found.
fn slot_of(message: &Bound<'_, PyAny>, field: Field) -> Option<usize> {
    of_message_type(message).and_then(|m| m.slots[field as usize])
}

/// `call` for a message borrowed from a list (`borrowed_item`): a slot read
/// needs no reference to the message; anything that may run Python code
/// is given one first.
fn call_borrowed<'py>(
    message: Borrowed<'_, 'py, PyAny>,
    field: Field,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(at) = slot_of(&message, field) {
        // SAFETY: as in `call`: exactly a `Message`, and an offset
        // `find_slots` found.
        return Ok(unsafe { slot(&message, at) });
    }
    call(&refcount::new_ref(message), field)
}

/// Whether `message.error()` is not `None`: where the slot is known, read
/// there without taking a reference.
fn has_error(message: Borrowed<'_, '_, PyAny>) -> PyResult<bool> {
    if let Some(at) = slot_of(&message, Field::Error) {
        // SAFETY: as in `call`: exactly a `Message`, and an offset
        // `find_slots` found; the word is only compared.
        let held = unsafe { word_at(&message, at) };
        // SAFETY: `None` is a live object; only its address is used.
        return Ok(!held.is_null() && !ptr::eq(held, unsafe { ffi::Py_None() }));
    }
    Ok(!call(&refcount::new_ref(message), Field::Error)?.is_none())
}

/// `message.<field>()` for `message`, exactly a `confluent_kafka.Message`
/// (its type compared by the caller): the C function itself, or the cached
/// descriptor.
fn called<'py>(
    message: &Bound<'py, PyAny>,
    m: &Methods,
    field: Field,
) -> PyResult<Bound<'py, PyAny>> {
    let py = message.py();
    if let Some(f) = m.direct.as_ref().and_then(|d| d.get(field as usize)) {
        // SAFETY: the GIL is held (`py`); `f` is the `METH_NOARGS` C
        // function of this method of `Message` (checked in
        // `direct_function`), and `message` is exactly a `Message` (this
        // function's contract), so the call is what CPython makes for
        // `message.<field>()`: `self` and a null argument. It returns a new
        // reference, or null with an exception set.
        return unsafe { Bound::from_owned_ptr_or_err(py, f(message.as_ptr(), ptr::null_mut())) };
    }
    if let Some(descriptor) = m.descriptors.get(field as usize) {
        // SAFETY: the GIL is held (`py`); `descriptor` and `message` are
        // live objects, borrowed for the call; the variadic argument list
        // ends with a null pointer, as `PyObject_CallFunctionObjArgs`
        // requires. It returns a new reference, or null with an exception
        // set.
        return unsafe {
            let result = ffi::PyObject_CallFunctionObjArgs(
                descriptor.as_ptr(),
                message.as_ptr(),
                ptr::null_mut::<ffi::PyObject>(),
            );
            Bound::from_owned_ptr_or_err(py, result)
        };
    }
    message.call_method0(PyString::intern(py, NAMES[field as usize]))
}

/// The index of the first message of `messages` with an error (librdkafka
/// hands errors out as messages), or -1 if none has one: the remote
/// consumer's check of each fetched batch. A `Message`'s error slot is
/// read where it lies, with no reference taken (4-5 ns a message against
/// 17 through PyO3's list iterator and a new reference each).
#[pyfunction]
pub fn first_error(messages: &Bound<'_, PyList>) -> PyResult<isize> {
    let mut i = 0;
    // SAFETY: `has_error` runs no Python code with the borrowed message
    // (it takes its own reference first).
    while let Some(m) = unsafe { borrowed_item(messages, i) } {
        if has_error(m)? {
            return Ok(isize::try_from(i).unwrap_or(isize::MAX));
        }
        i += 1;
    }
    Ok(-1)
}

/// `[m.value() for m in messages]` (`poll_values` over a cluster).
#[pyfunction]
pub fn message_values<'py>(messages: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
    let mut values = Vec::with_capacity(messages.len());
    // SAFETY: `call_borrowed` gives the message a reference of its own
    // before running any Python code (a subclass's method).
    while let Some(m) = unsafe { borrowed_item(messages, values.len()) } {
        values.push(call_borrowed(m, Field::Value)?);
    }
    PyList::new(messages.py(), values)
}
