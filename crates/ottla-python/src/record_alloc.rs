//! Making `Record` objects, the consumers' per-record cost (the directory
//! form's `Consumer::make_record`, the cluster form's `remote_records`).
//!
//! PyO3's `Bound::new` goes the generic way for any class: the base type's
//! `tp_new` looked up (`PyType_GetSlot`) and called with an empty tuple,
//! which calls the type's `tp_alloc`, then the value moved into the new
//! object. For `Record` all of that but the allocation and the move is
//! overhead: measured on 500 confluent-kafka messages, making and freeing
//! a record cost 76-77 ns this way against 85-88 through `Bound::new`
//! (best of 200 passes, alternate builds).
//!
//! So a `Record` is made here by calling the type's allocator,
//! `PyType_GenericAlloc` (what `object.__new__` calls), and moving the value
//! to where PyO3 keeps it. Nothing about PyO3's object layout is assumed:
//! at first use it is shown on the running process (`value_offset`): the
//! type's `tp_alloc` is `PyType_GenericAlloc`; a `Record` made by
//! `Bound::new` has its value at some offset past the object header; and
//! the type's basic size ends where that value ends (rounded to its
//! alignment), so the object holds nothing else to initialise (`Record` is
//! frozen, without `__dict__` or weak references: PyO3's borrow flag,
//! thread checker and slots are empty). If any of that does not hold,
//! every record is made by `Bound::new`. Freeing is PyO3's `tp_dealloc`
//! either way, which drops the value at that same offset.

use std::mem::{align_of, size_of};
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use pyo3::PyTypeInfo;

use crate::types::Record;

/// `Record`'s type and the byte offset of the value in its objects, once
/// shown (`None`: made by `Bound::new`).
static LAYOUT: PyOnceLock<Option<(Py<PyType>, usize)>> = PyOnceLock::new();

fn layout(py: Python<'_>) -> Option<&(Py<PyType>, usize)> {
    LAYOUT.get_or_init(py, || value_offset(py)).as_ref()
}

/// Whether records are made by the type's allocator (true) or by PyO3's
/// `Bound::new`. For tests.
#[pyfunction]
pub fn records_allocated_directly(py: Python<'_>) -> bool {
    layout(py).is_some()
}

/// The offset of the value in a `Record` object, if the checks in the
/// module comment hold.
fn value_offset(py: Python<'_>) -> Option<(Py<PyType>, usize)> {
    let ty = Record::type_object(py);
    // SAFETY: `ty` is a live type object; `PyType_GetSlot` reads one of its
    // slots (a heap type: every slot is readable on CPython 3.10+).
    let alloc = unsafe { ffi::PyType_GetSlot(ty.as_type_ptr(), ffi::Py_tp_alloc) };
    let generic: ffi::allocfunc = ffi::PyType_GenericAlloc;
    if !ptr::eq(alloc, generic as *mut std::ffi::c_void) {
        return None;
    }
    let probe = Record {
        topic: PyString::new(py, "probe").unbind(),
        partition: 0,
        offset: 0,
        timestamp: 0,
        key: py.None(),
        value: py.None(),
        headers: None,
        message: None,
    };
    let probe = Bound::new(py, probe).ok()?;
    let at = (probe.get() as *const Record as usize).checked_sub(probe.as_ptr() as usize)?;
    let size: usize = ty.getattr("__basicsize__").ok()?.extract().ok()?;
    let end = at.checked_add(size_of::<Record>())?;
    let padding = align_of::<Record>().max(align_of::<usize>());
    if at < size_of::<ffi::PyObject>() || size < end || size - end >= padding {
        return None;
    }
    Some((ty.unbind(), at))
}

impl Record {
    /// The Python object of this record. `tracked`: whether the cyclic GC
    /// tracks it (a record whose key or value went through a deserializer
    /// may be in a cycle; one of bytes and strings cannot).
    pub fn into_object(self, py: Python<'_>, tracked: bool) -> PyResult<Bound<'_, Record>> {
        let record = match layout(py) {
            Some((ty, at)) => {
                // SAFETY: the GIL is held; `ty` is `Record`'s type, whose
                // `tp_alloc` is `PyType_GenericAlloc` (checked in
                // `value_offset`): it returns a new, zeroed object of the
                // type's basic size (tracked by the GC, its type increfed),
                // or null with an exception set.
                let obj = unsafe { ffi::PyType_GenericAlloc(ty.as_ptr().cast(), 0) };
                if obj.is_null() {
                    return Err(PyErr::fetch(py));
                }
                // SAFETY: `obj` is that new object; `value_offset` showed
                // that PyO3 keeps a `Record`'s value `at` bytes in (a
                // `ManuallyDrop<UnsafeCell<Record>>`, laid out as a
                // `Record`), within the basic size, and nothing else to set
                // up: the value is moved there, as `Bound::new` does after
                // its allocation, and PyO3's `tp_dealloc` drops it. Nothing
                // between the allocation and the move can run a collection
                // (no allocation, no Python code) that would traverse the
                // zeroed value.
                unsafe {
                    ptr::write(obj.cast::<u8>().add(*at).cast::<Record>(), self);
                    Bound::from_owned_ptr(py, obj).cast_into_unchecked::<Record>()
                }
            }
            None => Bound::new(py, self)?,
        };
        // Both ways a new object of a GC type comes tracked.
        if !tracked {
            // SAFETY: a live object of a GC type (every pyclass is one)
            // whose value is in place; the GIL is held.
            unsafe { ffi::PyObject_GC_UnTrack(record.as_ptr().cast()) };
        }
        Ok(record)
    }
}
