//! The Arrow C Data Interface (<https://arrow.apache.org/docs/format/CDataInterface.html>):
//! `ArrowSchema` and `ArrowArray`, and their export from Rust-owned trees.
//!
//! Ownership follows the interface's rules: whoever holds a struct whose
//! `release` is set must call it exactly once; a consumer that keeps the
//! data *moves* the struct (copies it and clears the source's `release`).
//! Every node owns its children and dictionary (boxed, freed by its
//! `release`), so a child moved out by the consumer stays valid after its
//! parent is released. Array buffers are not copied: each node keeps the
//! memory they point into alive (`keep`) until it is released.

use std::any::Any;
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::Arc;

/// `ARROW_FLAG_NULLABLE`.
pub const FLAG_NULLABLE: i64 = 2;

#[repr(C)]
pub struct ArrowSchema {
    pub format: *const c_char,
    pub name: *const c_char,
    pub metadata: *const c_char,
    pub flags: i64,
    pub n_children: i64,
    pub children: *mut *mut ArrowSchema,
    pub dictionary: *mut ArrowSchema,
    pub release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    pub private_data: *mut c_void,
}

#[repr(C)]
pub struct ArrowArray {
    pub length: i64,
    pub null_count: i64,
    pub offset: i64,
    pub n_buffers: i64,
    pub n_children: i64,
    pub buffers: *mut *const c_void,
    pub children: *mut *mut ArrowArray,
    pub dictionary: *mut ArrowArray,
    pub release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    pub private_data: *mut c_void,
}

// SAFETY: an exported struct owns its tree (private data, children, kept
// memory behind an `Arc`); nothing in it is tied to the creating thread, and
// the interface lets any thread call `release`.
unsafe impl Send for ArrowSchema {}
// SAFETY: as for `ArrowSchema`.
unsafe impl Send for ArrowArray {}

impl Drop for ArrowSchema {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: `release` is set only on a live export, and cleared by it.
            unsafe { release(self) }
        }
    }
}

impl Drop for ArrowArray {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: as for `ArrowSchema`.
            unsafe { release(self) }
        }
    }
}

/// A field's type, described for export.
pub struct Field {
    pub name: String,
    /// The interface's format string (`"i"`, `"l"`, `"z"`, `"u"`, `"+l"`, ...).
    pub format: &'static str,
    pub nullable: bool,
    pub children: Vec<Field>,
    /// For dictionary-encoded fields: the values' type (`format` is then the index type).
    pub dictionary: Option<Box<Field>>,
}

impl Field {
    pub fn new(name: &str, format: &'static str, nullable: bool) -> Field {
        Field {
            name: name.to_string(),
            format,
            nullable,
            children: Vec::new(),
            dictionary: None,
        }
    }

    pub fn with_children(mut self, children: Vec<Field>) -> Field {
        self.children = children;
        self
    }

    pub fn with_dictionary(mut self, values: Field) -> Field {
        self.dictionary = Some(Box::new(values));
        self
    }
}

struct SchemaPrivate {
    _format: CString,
    _name: CString,
    children: Vec<*mut ArrowSchema>,
    dictionary: *mut ArrowSchema,
}

/// Export a field (and its children) as an `ArrowSchema`.
pub fn export_schema(field: &Field) -> ArrowSchema {
    // Field names and format strings are ours: never an interior NUL.
    let format = CString::new(field.format).unwrap_or_default();
    let name = CString::new(field.name.as_str()).unwrap_or_default();
    let mut children: Vec<*mut ArrowSchema> = field
        .children
        .iter()
        .map(|c| Box::into_raw(Box::new(export_schema(c))))
        .collect();
    let dictionary = field.dictionary.as_ref().map_or(ptr::null_mut(), |d| {
        Box::into_raw(Box::new(export_schema(d)))
    });
    let n_children = children.len() as i64;
    let children_ptr = if children.is_empty() {
        ptr::null_mut()
    } else {
        children.as_mut_ptr()
    };
    let private = Box::new(SchemaPrivate {
        _format: format,
        _name: name,
        children,
        dictionary,
    });
    ArrowSchema {
        format: private._format.as_ptr(),
        name: private._name.as_ptr(),
        metadata: ptr::null(),
        flags: if field.nullable { FLAG_NULLABLE } else { 0 },
        n_children,
        // The Vec's heap buffer does not move when the Box holding it does.
        children: children_ptr,
        dictionary,
        release: Some(release_schema),
        private_data: Box::into_raw(private).cast(),
    }
}

unsafe extern "C" fn release_schema(schema: *mut ArrowSchema) {
    // SAFETY: called by the holder of a live export we made (the interface's
    // contract), so `private_data` is our `SchemaPrivate` and every child and
    // dictionary pointer is a box we allocated.
    unsafe {
        let Some(s) = schema.as_mut() else { return };
        if s.release.is_none() || s.private_data.is_null() {
            return;
        }
        let private = Box::from_raw(s.private_data.cast::<SchemaPrivate>());
        for &child in &private.children {
            drop(Box::from_raw(child)); // releases it unless moved out
        }
        if !private.dictionary.is_null() {
            drop(Box::from_raw(private.dictionary));
        }
        drop(private);
        s.private_data = ptr::null_mut();
        s.release = None;
    }
}

/// An array's layout, described for export: buffer addresses (into memory
/// kept alive by the export's `keep`), children and dictionary.
pub struct ArrayData {
    pub length: usize,
    pub null_count: usize,
    pub buffers: Vec<*const c_void>,
    pub children: Vec<ArrayData>,
    pub dictionary: Option<Box<ArrayData>>,
}

struct ArrayPrivate {
    /// The array of buffer addresses `ArrowArray::buffers` points at.
    _buffers: Vec<*const c_void>,
    children: Vec<*mut ArrowArray>,
    dictionary: *mut ArrowArray,
    _keep: Arc<dyn Any + Send + Sync>,
}

/// Export an array as an `ArrowArray`. Its buffers must point into memory
/// owned by `keep` (or be null / static).
pub fn export_array(data: ArrayData, keep: &Arc<dyn Any + Send + Sync>) -> ArrowArray {
    let mut children: Vec<*mut ArrowArray> = data
        .children
        .into_iter()
        .map(|c| Box::into_raw(Box::new(export_array(c, keep))))
        .collect();
    let dictionary = data.dictionary.map_or(ptr::null_mut(), |d| {
        Box::into_raw(Box::new(export_array(*d, keep)))
    });
    let mut buffers = data.buffers;
    let n_buffers = buffers.len() as i64;
    let n_children = children.len() as i64;
    let buffers_ptr = buffers.as_mut_ptr();
    let children_ptr = if children.is_empty() {
        ptr::null_mut()
    } else {
        children.as_mut_ptr()
    };
    let private = Box::new(ArrayPrivate {
        _buffers: buffers,
        children,
        dictionary,
        _keep: keep.clone(),
    });
    ArrowArray {
        length: data.length as i64,
        null_count: data.null_count as i64,
        offset: 0,
        n_buffers,
        n_children,
        buffers: buffers_ptr,
        children: children_ptr,
        dictionary,
        release: Some(release_array),
        private_data: Box::into_raw(private).cast(),
    }
}

unsafe extern "C" fn release_array(array: *mut ArrowArray) {
    // SAFETY: as in `release_schema`.
    unsafe {
        let Some(a) = array.as_mut() else { return };
        if a.release.is_none() || a.private_data.is_null() {
            return;
        }
        let private = Box::from_raw(a.private_data.cast::<ArrayPrivate>());
        for &child in &private.children {
            drop(Box::from_raw(child));
        }
        if !private.dictionary.is_null() {
            drop(Box::from_raw(private.dictionary));
        }
        drop(private);
        a.private_data = ptr::null_mut();
        a.release = None;
    }
}
