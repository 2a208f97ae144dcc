//! One slot of one of ottla's own classes replaced by a plain C function
//! once PyO3 has made the type: the per-record paths' `tp_dealloc` of
//! `Record` (`record_alloc`) and `tp_iternext` of `RecordIter`
//! (`remote_records`).
//!
//! PyO3 reaches every slot through a trampoline: a thread-local count of
//! the GIL, a panic guard, the class's type check and borrow, then the
//! conversion of the result. For a function called once a record that is
//! 10-30 ns, as much as the record's own making. The interpreter calls a
//! slot's C function directly, so a function of ours written in the slot
//! costs nothing more.
//!
//! The stable ABI hides `PyTypeObject`. Its start (`TypeHead`, the same
//! from CPython 3.8 to 3.14 with the GIL) is read only after the words in
//! it are shown to hold what the interpreter's own functions say of the
//! type: `tp_basicsize` its `__basicsize__`, `tp_flags` `PyType_GetFlags`,
//! and `tp_dealloc`, `tp_repr`, `tp_hash`, `tp_getattro`, `tp_traverse`,
//! `tp_iter` and `tp_iternext` what `PyType_GetSlot` returns for each (a
//! layout that moved any of them would not match them all). The type must
//! be a heap type that cannot be subclassed, so that every object the slot
//! is called for is exactly one of its class. Anything else, and the slot
//! stays PyO3's, which gives the same results, slower.

use std::ffi::{c_char, c_ulong, c_void};
use std::mem::{align_of, size_of};
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::PyClass;

/// The byte offset of a PyO3 object's value: right after the object
/// header (`value_alone` shows it is so for a class).
pub const VALUE_AT: usize = size_of::<ffi::PyObject>();

/// The first fields of CPython's `PyTypeObject` (`Include/cpython/object.h`)
/// up to `tp_iternext`. Only read and compared, but for the one slot
/// written once it is shown (`head`).
#[repr(C)]
struct TypeHead {
    ob_base: ffi::PyVarObject,
    tp_name: *const c_char,
    tp_basicsize: ffi::Py_ssize_t,
    tp_itemsize: ffi::Py_ssize_t,
    tp_dealloc: *mut c_void,
    tp_vectorcall_offset: ffi::Py_ssize_t,
    tp_getattr: *mut c_void,
    tp_setattr: *mut c_void,
    tp_as_async: *mut c_void,
    tp_repr: *mut c_void,
    tp_as_number: *mut c_void,
    tp_as_sequence: *mut c_void,
    tp_as_mapping: *mut c_void,
    tp_hash: *mut c_void,
    tp_call: *mut c_void,
    tp_str: *mut c_void,
    tp_getattro: *mut c_void,
    tp_setattro: *mut c_void,
    tp_as_buffer: *mut c_void,
    tp_flags: c_ulong,
    tp_doc: *const c_char,
    tp_traverse: *mut c_void,
    tp_clear: *mut c_void,
    tp_richcompare: *mut c_void,
    tp_weaklistoffset: ffi::Py_ssize_t,
    tp_iter: *mut c_void,
    tp_iternext: *mut c_void,
}

/// `ty`'s `TypeHead`, if its words are shown (module comment) and `ty` is
/// a heap type without subclasses.
fn head(ty: &Bound<'_, PyType>) -> Option<*mut TypeHead> {
    let tp = ty.as_type_ptr();
    let size = ty
        .getattr("__basicsize__")
        .and_then(|s| s.extract::<ffi::Py_ssize_t>())
        .ok()?;
    // SAFETY: a live type; these functions only read it.
    let flags = unsafe { ffi::PyType_GetFlags(tp) };
    // SAFETY: as above.
    let slot = |id| unsafe { ffi::PyType_GetSlot(tp, id) };
    if flags & ffi::Py_TPFLAGS_HEAPTYPE == 0 || flags & ffi::Py_TPFLAGS_BASETYPE != 0 {
        return None;
    }
    let h = tp.cast::<TypeHead>();
    // SAFETY: a type object is at least a `PyTypeObject`, of which
    // `TypeHead` is the start on the builds the stable ABI serves; its
    // words are read, never followed, and compared with what the
    // interpreter's functions returned.
    let shown = unsafe {
        (*h).tp_basicsize == size
            && (*h).tp_itemsize == 0
            && (*h).tp_flags == flags
            && (*h).tp_dealloc == slot(ffi::Py_tp_dealloc)
            && (*h).tp_repr == slot(ffi::Py_tp_repr)
            && (*h).tp_hash == slot(ffi::Py_tp_hash)
            && (*h).tp_getattro == slot(ffi::Py_tp_getattro)
            && (*h).tp_traverse == slot(ffi::Py_tp_traverse)
            && (*h).tp_iter == slot(ffi::Py_tp_iter)
            && (*h).tp_iternext == slot(ffi::Py_tp_iternext)
    };
    // `tp_getattro` is never null for a PyO3 class (the generic lookup):
    // the comparisons above were not all of nulls.
    (shown && !slot(ffi::Py_tp_getattro).is_null()).then_some(h)
}

/// Whether `probe`, an object of a PyO3 class, keeps its value at
/// `VALUE_AT` and nothing after it: its type's basic size ends where the
/// value ends (rounded to its alignment), so an object of the class holds
/// nothing else to set or free (no `__dict__`, weak references, borrow flag
/// or thread checker: a frozen class without them).
pub fn value_alone<T: PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync>(
    probe: &Bound<'_, T>,
) -> bool {
    let Some(at) = (probe.get() as *const T as usize).checked_sub(probe.as_ptr() as usize) else {
        return false;
    };
    let Ok(size) = probe
        .as_any()
        .get_type()
        .getattr("__basicsize__")
        .and_then(|s| s.extract::<usize>())
    else {
        return false;
    };
    let Some(end) = at.checked_add(size_of::<T>()) else {
        return false;
    };
    let padding = align_of::<T>().max(align_of::<usize>());
    at == VALUE_AT && size >= end && size - end < padding
}

/// Writes `f` as `ty`'s `tp_dealloc` if its head is shown; whether it was.
pub fn set_dealloc(ty: &Bound<'_, PyType>, f: ffi::destructor) -> bool {
    let Some(h) = head(ty) else {
        return false;
    };
    // SAFETY: `h` is the type's head (shown), written with the GIL held,
    // before any object of the type is freed by it; the interpreter reads
    // the slot at each object's free.
    unsafe { (*h).tp_dealloc = f as *mut c_void };
    true
}

/// Writes `f` as `ty`'s `tp_iternext` if its head is shown and it has one
/// (PyO3's `__next__`); whether it was.
pub fn set_iternext(ty: &Bound<'_, PyType>, f: ffi::iternextfunc) -> bool {
    let Some(h) = head(ty) else {
        return false;
    };
    // SAFETY: as in `set_dealloc`; the interpreter reads the slot at each
    // `next()`.
    unsafe {
        if (*h).tp_iternext.is_null() {
            return false;
        }
        (*h).tp_iternext = f as *mut c_void;
    }
    true
}

/// Whether `ty`'s `tp_dealloc` or `tp_iternext` (`which`) is `f`. For
/// tests.
pub fn slot_is(ty: &Bound<'_, PyType>, which: i32, f: *mut c_void) -> bool {
    // SAFETY: a live type; `PyType_GetSlot` reads one of its slots.
    ptr::eq(unsafe { ffi::PyType_GetSlot(ty.as_type_ptr(), which) }, f)
}
