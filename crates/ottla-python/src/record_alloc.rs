//! Making and freeing `Record` objects, the consumers' per-record cost (the
//! directory form's `Consumer::make_record`, the cluster form's
//! `remote_records`).
//!
//! PyO3 goes the generic way for any class. `Bound::new` looks up the base
//! type's `tp_new` (`PyType_GetSlot`) and calls it with an empty tuple,
//! which calls the type's `tp_alloc` (zeroing the object and tracking it in
//! the cyclic GC), then moves the value in. Its `tp_dealloc` goes through a
//! trampoline (a thread-local GIL count, a panic guard), looks the type up
//! twice, asks for `tp_free` with `PyType_GetSlot`, and drops each field
//! through `Py::drop` (a thread-local check, then the interpreter's
//! `_Py_DecRef`). For a `Record` all of that but the allocation, the move,
//! the decrements and the free is overhead: making and freeing one for a
//! confluent-kafka message cost 77 ns that way, 48 ns this way, and 28-30
//! with the free list and the value written in place (best of 200-300
//! passes over 500 in-memory messages; docs/PERFORMANCE.md, "Over a
//! cluster", steps 7 and 8).
//!
//! So a `Record` is made here with `PyObject_GC_New` (allocated, its type
//! increfed, not zeroed, not tracked), or from the memory of one freed
//! before (`FREE`, made a new object by `PyObject_Init`), its value
//! written where PyO3 keeps it (`object_of`), and then tracked only if it
//! may be in a cycle. Its type's `tp_dealloc` is replaced by `dealloc`:
//! untrack, give up each field's reference (`Record::release`, in place:
//! `refcount`), keep the memory or free it with `PyObject_GC_Del`, decref
//! the type. Nothing about PyO3 or the
//! interpreter's layout is assumed; each is shown on the running process
//! when the module loads (`init`), and what is not shown is not used:
//! - the value's place (`value_place_shown`, `type_slots::value_alone`): a
//!   `Record` made by `Bound::new` has its value right after the object
//!   header and nothing else (`Record` is frozen, without `__dict__` or
//!   weak references). Else every record is made by `Bound::new` and freed
//!   by PyO3.
//! - the type's `tp_dealloc` (`own_dealloc`): the type's head is shown and
//!   it may not be subclassed (`type_slots`), it is a GC type and its
//!   `tp_free` is `PyObject_GC_Del`. Else PyO3's `tp_dealloc` stays, which
//!   frees a record made either way.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyType};
use pyo3::PyTypeInfo;

use crate::refcount;
use crate::type_slots::{self, VALUE_AT};
use crate::types::Record;

/// `Record`'s type, once the value's place is shown (`None`: made by
/// `Bound::new`).
static TYPE: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();

/// Shows the layouts (module comment) and, if they are as expected, makes
/// and frees `Record`s here from now on. Called when the module loads.
pub fn init(py: Python<'_>) {
    let ty = TYPE.get_or_init(py, || value_place_shown(py));
    if let Some(ty) = ty {
        own_dealloc(ty.bind(py));
    }
}

/// Whether records are made by the type's allocator (true) or by PyO3's
/// `Bound::new`. For tests.
#[pyfunction]
pub fn records_allocated_directly(py: Python<'_>) -> bool {
    matches!(TYPE.get(py), Some(Some(_)))
}

/// Whether records are freed by `dealloc` (true) or by PyO3's
/// `tp_dealloc`. For tests.
#[pyfunction]
pub fn records_freed_directly(py: Python<'_>) -> bool {
    let ours: ffi::destructor = dealloc;
    type_slots::slot_is(
        &Record::type_object(py),
        ffi::Py_tp_dealloc,
        ours as *mut c_void,
    )
}

/// `Record`'s type if its objects keep the value at `VALUE_AT` and nothing
/// else (module comment).
fn value_place_shown(py: Python<'_>) -> Option<Py<PyType>> {
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
    type_slots::value_alone(&probe).then(|| Record::type_object(py).unbind())
}

/// Makes `dealloc` the `tp_dealloc` of `Record`'s type `ty`, if the checks
/// in the module comment hold.
fn own_dealloc(ty: &Bound<'_, PyType>) {
    let tp = ty.as_type_ptr();
    // SAFETY: a live heap type; `PyType_GetSlot` and `PyType_GetFlags` read
    // it.
    let (free, flags) = unsafe {
        (
            ffi::PyType_GetSlot(tp, ffi::Py_tp_free),
            ffi::PyType_GetFlags(tp),
        )
    };
    let gc_del: unsafe extern "C" fn(*mut c_void) = ffi::PyObject_GC_Del;
    if !ptr::eq(free, gc_del as *mut c_void) || flags & ffi::Py_TPFLAGS_HAVE_GC == 0 {
        return;
    }
    // Every object `dealloc` is then called for is exactly a `Record`
    // (no subclass) with the value at `VALUE_AT` (`value_place_shown`).
    type_slots::set_dealloc(ty, dealloc);
}

/// `tp_dealloc` of `Record` (module comment): what PyO3's does for it,
/// without its generic steps, and the memory kept for the next record
/// (`FREE`) while the free list has room.
///
/// # Safety
/// Called by the interpreter for an object of `Record`'s type whose count
/// reached zero, with the GIL held; `own_dealloc` installed it only where
/// every such object has its value at `VALUE_AT` and nothing else.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: this function's contract: `obj` is a whole, unreachable
    // `Record` object. Untracked before its fields go (a GC type's rule);
    // the value is moved out and its references given up (which may run
    // Python code, even make and free records: the free list is not
    // touched meanwhile); the memory is kept or goes back to the allocator
    // it came from (`tp_free`, shown to be `PyObject_GC_Del`); then the
    // instance's reference to its heap type (`PyObject_Init` takes a new
    // one when the memory is used again).
    unsafe {
        ffi::PyObject_GC_UnTrack(obj.cast());
        ptr::read(obj.cast::<u8>().add(VALUE_AT).cast::<Record>()).release();
        let ty = ffi::Py_TYPE(obj);
        if !FREE.keep(obj) {
            ffi::PyObject_GC_Del(obj.cast());
        }
        refcount::decref(ty.cast());
    }
}

/// How many freed records' memory is kept: a consumer's batch (500).
const FREE_MAX: usize = 512;

/// Freed `Record` objects' memory, kept for the next records, as CPython
/// keeps freed tuples and floats: a consumer frees a batch's records and
/// makes the next batch's, and a kept object costs a push and a pop where
/// the allocator's free and allocation cost two calls each and the cyclic
/// GC's bookkeeping (docs/PERFORMANCE.md, "Over a cluster", step 8). A
/// kept object is untracked, its value moved out, its count zero and its
/// type's reference given up; `PyObject_Init` makes it a new object
/// (count, type, the interpreter's reference tracing). Used only on a
/// CPython with the GIL (`refcount::in_place`): the GIL is what guards it.
/// Kept objects are not freed at exit (at most `FREE_MAX` of them).
struct FreeList(UnsafeCell<Kept>);

struct Kept {
    len: usize,
    objects: [*mut ffi::PyObject; FREE_MAX],
}

// SAFETY: read and written only with the GIL held and only where one
// thread at a time holds it (`refcount::in_place`: a build with a GIL), by
// `keep` and `take`, which run no Python code while they hold the
// reference to it.
unsafe impl Sync for FreeList {}

static FREE: FreeList = FreeList(UnsafeCell::new(Kept {
    len: 0,
    objects: [ptr::null_mut(); FREE_MAX],
}));

impl FreeList {
    /// Keeps the memory of `obj` (a freed `Record`, see `dealloc`) if there
    /// is room: false if it must be freed.
    ///
    /// # Safety
    /// The GIL is held; `obj` is a `Record` object whose value is gone and
    /// which nothing refers to, allocated by `PyObject_GC_New`.
    unsafe fn keep(&self, obj: *mut ffi::PyObject) -> bool {
        if !refcount::in_place() {
            return false;
        }
        // SAFETY: the GIL is held on a build with a GIL (`Sync`), and no
        // other reference to the list is alive: nothing here calls out.
        let kept = unsafe { &mut *self.0.get() };
        if kept.len == FREE_MAX {
            return false;
        }
        kept.objects[kept.len] = obj;
        kept.len += 1;
        true
    }

    /// A kept object's memory, if any: a `Record`'s size, allocated by
    /// `PyObject_GC_New`, untracked, its value and header to be set.
    ///
    /// # Safety
    /// The GIL is held.
    unsafe fn take(&self) -> Option<*mut ffi::PyObject> {
        // SAFETY: as in `keep` (only `keep` fills it, where `in_place`).
        let kept = unsafe { &mut *self.0.get() };
        if kept.len == 0 {
            return None;
        }
        kept.len -= 1;
        Some(kept.objects[kept.len])
    }
}

/// How many freed records' memory is kept now. For tests.
#[pyfunction]
pub fn records_kept(_py: Python<'_>) -> usize {
    // SAFETY: the GIL is held (`py`); the length is only read.
    unsafe { (*FREE.0.get()).len }
}

impl Record {
    /// The Python object of this record. `tracked`: whether the cyclic GC
    /// tracks it (a record whose key or value went through a deserializer
    /// may be in a cycle; one of bytes and strings cannot).
    #[inline(always)]
    pub fn into_object(self, py: Python<'_>, tracked: bool) -> PyResult<Bound<'_, Record>> {
        Record::object_of(py, tracked, || self)
    }

    /// The Python object of the record `make` returns, called once the
    /// object's memory is there, so that a record built in `make` is
    /// written where it lies (a `Record` moved into the object after its
    /// memory was allocated went through the stack, 16-byte loads of 8-byte
    /// stores: a third of the making's time). `tracked` as in
    /// `into_object`.
    #[inline(always)]
    pub fn object_of(
        py: Python<'_>,
        tracked: bool,
        make: impl FnOnce() -> Record,
    ) -> PyResult<Bound<'_, Record>> {
        let Some(Some(ty)) = TYPE.get(py) else {
            let record = Bound::new(py, make())?;
            if !tracked {
                // SAFETY: a live object of a GC type (every pyclass is one)
                // whose value is in place; the GIL is held.
                unsafe { ffi::PyObject_GC_UnTrack(record.as_ptr().cast()) };
            }
            return Ok(record);
        };
        let ty = ty.bind(py).as_type_ptr();
        // SAFETY: the GIL is held; `ty` is `Record`'s type, a GC type. A
        // kept object (`FREE`) is a record's memory from `PyObject_GC_New`,
        // untracked, which `PyObject_Init` gives a header again (count 1,
        // its type increfed); else `PyObject_GC_New` returns a new object
        // of the type's basic size with its header set, not tracked; the
        // rest uninitialised either way. Null with an exception set if
        // memory ran out.
        let obj = unsafe {
            match FREE.take() {
                Some(kept) => ffi::PyObject_Init(kept, ty),
                None => ffi::PyObject_GC_New::<ffi::PyObject>(ty),
            }
        };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `obj` is that new object; `value_place_shown` showed that
        // PyO3 keeps a `Record`'s value at `VALUE_AT` (a
        // `ManuallyDrop<UnsafeCell<Record>>`, laid out as a `Record`) and
        // nothing else in the object, so once written it is whole, as
        // `Bound::new` would have made it. Tracked only then, so the GC
        // never traverses it unset.
        unsafe {
            ptr::write(obj.cast::<u8>().add(VALUE_AT).cast::<Record>(), make());
            if tracked {
                ffi::PyObject_GC_Track(obj.cast());
            }
            Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked::<Record>())
        }
    }
}
