//! Reference counts changed in place, for the per-record paths
//! (`record_alloc`'s freeing of a `Record`, `kafka_message`'s slot reads).
//!
//! Built for the stable ABI (`abi3-py310`), PyO3 changes every reference
//! count by calling the interpreter (`_Py_IncRef`, `_Py_DecRef`): two calls
//! deep, about 1.5 ns each, several times a record. A C extension built for
//! the same stable ABI (`Py_LIMITED_API` 3.10) changes them in place: its
//! `Py_INCREF` is `ob_refcnt++`, its `Py_DECREF` a decrement and
//! `_Py_Dealloc` at zero, and CPython keeps such binaries working on every
//! later version with the GIL. That is what `incref` and `decref` do, with
//! one difference: from CPython 3.12 on, an immortal object (one whose
//! count's low 32 bits read as a negative `int32`, PEP 683) is left alone,
//! as the interpreter's own inline functions do. (An old binary's decrement
//! of one it did not increment is allowed by PEP 683 but would, over 2^31
//! records holding `None`, wear its immortality away.)
//!
//! In place is only used where it is shown to be what the interpreter does:
//! CPython (not PyPy or GraalPy), with the GIL (a free-threaded build
//! counts in two fields), without reference debugging (no
//! `sys.gettotalrefcount`: those keep a total that in-place changes would
//! miss, and reference tracing moves the count). Anywhere else these call
//! the interpreter, as PyO3 does. `init` decides, once, when the module
//! loads.

use std::sync::atomic::{AtomicU8, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

/// How counts are changed: by the interpreter's functions (`CALL`, the
/// state before `init`), in place (`PLAIN`, CPython 3.10 and 3.11), or in
/// place leaving immortal objects alone (`IMMORTALS`, CPython 3.12+).
static MODE: AtomicU8 = AtomicU8::new(CALL);
const CALL: u8 = 0;
const PLAIN: u8 = 1;
const IMMORTALS: u8 = 2;

extern "C" {
    /// Frees an object whose count reached zero: part of the stable ABI
    /// (what a limited-API `Py_DECREF` calls), not declared public by
    /// `pyo3-ffi`.
    fn _Py_Dealloc(op: *mut ffi::PyObject);
}

/// Chooses how counts are changed in this interpreter (module comment).
pub fn init(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    let cpython = sys
        .getattr("implementation")?
        .getattr("name")?
        .extract::<String>()?
        == "cpython";
    let debug = sys.hasattr("gettotalrefcount")?;
    // A free-threaded build counts in two fields, not one: "t" in its ABI
    // flags (POSIX), or its build configuration's flag (Windows, where
    // `sys` has no `abiflags`).
    let free_threaded = match sys.getattr("abiflags") {
        Ok(flags) => flags.extract::<String>()?.contains('t'),
        Err(_) => {
            let flag = py
                .import("sysconfig")?
                .call_method1("get_config_var", ("Py_GIL_DISABLED",))?;
            flag.is_truthy()?
        }
    };
    let mode = if !cpython || debug || free_threaded {
        CALL
    } else if py.version_info() >= (3, 12) {
        IMMORTALS
    } else {
        PLAIN
    };
    MODE.store(mode, Ordering::Relaxed);
    Ok(())
}

/// Whether counts are changed in place here. For tests.
#[pyfunction]
pub fn refcounts_in_place() -> bool {
    in_place()
}

/// Whether this is a CPython with the GIL and without reference debugging,
/// where counts are changed in place (module comment).
#[inline(always)]
pub fn in_place() -> bool {
    MODE.load(Ordering::Relaxed) != CALL
}

/// The count of `op`: the word at its start on a CPython build with the
/// GIL and without reference tracing (`ob_refcnt`, a union of it and its
/// halves from 3.12), the only builds `init` counts in place on.
///
/// # Safety
/// `op` is a live object, the GIL is held, and `MODE` is not `CALL`.
#[inline(always)]
unsafe fn count(op: *mut ffi::PyObject) -> *mut ffi::Py_ssize_t {
    op.cast::<ffi::Py_ssize_t>()
}

/// Whether `count` is that of an immortal object (3.12+: the low 32 bits,
/// as an `int32`, negative).
#[inline(always)]
fn immortal(count: ffi::Py_ssize_t) -> bool {
    (count as i32) < 0
}

/// `Py_INCREF(op)`.
///
/// # Safety
/// `op` is a live object and the GIL is held.
#[inline(always)]
pub unsafe fn incref(op: *mut ffi::PyObject) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: this function's contract.
        CALL => unsafe { ffi::Py_INCREF(op) },
        mode => {
            // SAFETY: this function's contract.
            let c = unsafe { count(op) };
            // SAFETY: `c` is `op`'s count, which the GIL guards.
            unsafe {
                if mode == IMMORTALS && immortal(*c) {
                    return;
                }
                *c += 1;
            }
        }
    }
}

/// `Py_DECREF(op)`: frees `op` if that was its last reference.
///
/// # Safety
/// `op` is a live object whose reference the caller owns and gives up, and
/// the GIL is held.
#[inline(always)]
pub unsafe fn decref(op: *mut ffi::PyObject) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: this function's contract.
        CALL => unsafe { ffi::Py_DECREF(op) },
        mode => {
            // SAFETY: this function's contract.
            let c = unsafe { count(op) };
            // SAFETY: `c` is `op`'s count, which the GIL guards; at zero no
            // reference is left, and `_Py_Dealloc` calls its type's
            // `tp_dealloc`, as the interpreter's `Py_DECREF` does.
            unsafe {
                if mode == IMMORTALS && immortal(*c) {
                    return;
                }
                *c -= 1;
                if *c == 0 {
                    _Py_Dealloc(op);
                }
            }
        }
    }
}

/// An owned reference to `object`, taken in place (PyO3's `to_owned` calls
/// the interpreter).
pub fn new_ref<'py, T>(object: Borrowed<'_, 'py, T>) -> Bound<'py, T> {
    // SAFETY: a borrowed object is live and the GIL is held (`'py`); the
    // new reference is handed to the `Bound`, which gives it back.
    unsafe {
        incref(object.as_ptr());
        Bound::from_owned_ptr(object.py(), object.as_ptr()).cast_into_unchecked::<T>()
    }
}
