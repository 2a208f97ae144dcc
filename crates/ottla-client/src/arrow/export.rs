//! [`RecordColumns`] as an Arrow record batch through the C Data Interface:
//! a non-null struct array whose children are the columns, pointing into
//! the columns' own vectors (no copy).

use std::any::Any;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use super::columns::{BinaryColumn, RecordColumns, Validity};
use super::ffi::{export_array, export_schema, ArrayData, ArrowArray, ArrowSchema, Field};

/// The schema of every record batch: see [`RecordColumns`].
pub fn schema() -> Field {
    Field::new("", "+s", false).with_children(vec![
        Field::new("topic", "i", false).with_dictionary(Field::new("", "u", false)),
        Field::new("partition", "i", false),
        Field::new("offset", "l", false),
        Field::new("timestamp", "tsm:UTC", false),
        Field::new("key", "z", true),
        Field::new("value", "z", true),
        Field::new("headers", "+l", false).with_children(vec![Field::new("item", "+s", false)
            .with_children(vec![
                Field::new("key", "u", false),
                Field::new("value", "z", true),
            ])]),
    ])
}

/// Stands in for the address of an empty buffer: consumers may not accept
/// null for a buffer the layout requires, and a `Vec` with no allocation
/// has only a dangling address.
static EMPTY: [u64; 8] = [0; 8];

fn buf<T>(v: &[T]) -> *const c_void {
    if v.is_empty() {
        EMPTY.as_ptr().cast()
    } else {
        v.as_ptr().cast()
    }
}

fn validity(v: &Validity) -> *const c_void {
    match &v.bits {
        Some(bits) if v.null_count > 0 => bits.as_ptr().cast(),
        _ => ptr::null(),
    }
}

fn binary(c: &BinaryColumn) -> ArrayData {
    ArrayData {
        length: c.len(),
        null_count: c.validity.null_count,
        buffers: vec![validity(&c.validity), buf(&c.offsets), buf(&c.data)],
        children: Vec::new(),
        dictionary: None,
    }
}

fn fixed<T>(v: &[T]) -> ArrayData {
    ArrayData {
        length: v.len(),
        null_count: 0,
        buffers: vec![ptr::null(), buf(v)],
        children: Vec::new(),
        dictionary: None,
    }
}

/// The topic dictionary's values, as a utf8 column.
pub struct TopicNames {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl TopicNames {
    fn new(topics: &[Arc<str>]) -> TopicNames {
        let mut offsets = Vec::with_capacity(topics.len() + 1);
        let mut data = Vec::new();
        offsets.push(0);
        for t in topics {
            data.extend_from_slice(t.as_bytes());
            // Topic names are at most 249 bytes; a handful of them fit.
            offsets.push(data.len() as i32);
        }
        TopicNames { offsets, data }
    }
}

/// The memory an exported batch points into.
struct Exported {
    columns: Arc<RecordColumns>,
    names: TopicNames,
}

/// Export `columns` as a record batch: `(schema, array)`. The array keeps
/// `columns` alive until the consumer releases it; `columns` may be
/// exported again (each export shares it).
pub fn export(columns: &Arc<RecordColumns>) -> (ArrowSchema, ArrowArray) {
    let exported = Arc::new(Exported {
        columns: columns.clone(),
        names: TopicNames::new(&columns.topics),
    });
    let c = &*exported.columns;
    let n = c.len();
    let names = &exported.names;
    let topic = ArrayData {
        dictionary: Some(Box::new(ArrayData {
            length: names.offsets.len() - 1,
            null_count: 0,
            buffers: vec![ptr::null(), buf(&names.offsets), buf(&names.data)],
            children: Vec::new(),
            dictionary: None,
        })),
        ..fixed(&c.topic)
    };
    let entries = ArrayData {
        length: c.header_key.len(),
        null_count: 0,
        buffers: vec![ptr::null()],
        children: vec![binary(&c.header_key), binary(&c.header_value)],
        dictionary: None,
    };
    let headers = ArrayData {
        length: n,
        null_count: 0,
        buffers: vec![ptr::null(), buf(&c.headers)],
        children: vec![entries],
        dictionary: None,
    };
    let batch = ArrayData {
        length: n,
        null_count: 0,
        buffers: vec![ptr::null()],
        children: vec![
            topic,
            fixed(&c.partition),
            fixed(&c.offset),
            fixed(&c.timestamp),
            binary(&c.key),
            binary(&c.value),
            headers,
        ],
        dictionary: None,
    };
    let keep: Arc<dyn Any + Send + Sync> = exported.clone();
    (export_schema(&schema()), export_array(batch, &keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::TopicPartition;
    use ottla_record::RecordView;
    use std::ffi::CStr;

    #[test]
    fn export_points_into_the_columns_and_releases_everything() {
        let tp = TopicPartition::new(Arc::from("orders"), 2);
        let mut c = RecordColumns::with_capacity(4, 4);
        for i in 0..3 {
            let v = [b'a' + i as u8; 3];
            let r = RecordView {
                offset: i,
                timestamp: 5,
                key: None,
                value: Some(&v),
                header_count: 0,
                headers_raw: &[],
            };
            c.push(&tp, &r);
        }
        let c = Arc::new(c);
        let (mut schema, mut array) = export(&c);
        assert_eq!(Arc::strong_count(&c), 2);
        assert_eq!(schema.n_children, 7);
        assert_eq!(array.length, 3);
        // SAFETY: the export is live; we read what it describes.
        unsafe {
            let fmt = CStr::from_ptr(schema.format);
            assert_eq!(fmt.to_str(), Ok("+s"));
            let value_schema = &**schema.children.add(5);
            assert_eq!(CStr::from_ptr(value_schema.name).to_str(), Ok("value"));
            assert_eq!(value_schema.flags, super::super::ffi::FLAG_NULLABLE);
            let value = &**array.children.add(5);
            assert_eq!(value.null_count, 0);
            assert!((*value.buffers).is_null());
            let data = *value.buffers.add(2) as *const u8;
            assert_eq!(std::slice::from_raw_parts(data, 9), b"aaabbbccc");
            let key = &**array.children.add(4);
            assert_eq!(key.null_count, 3);
            let topic = &**array.children;
            assert_eq!((*topic.dictionary).length, 1);
            // A consumer may move a child out; it must outlive its parent.
            let mut moved: ArrowArray = ptr::read(*array.children.add(2));
            (**array.children.add(2)).release = None;
            if let Some(release) = array.release {
                release(&mut array);
            }
            assert!(array.release.is_none());
            assert_eq!(Arc::strong_count(&c), 2, "the moved child keeps the data");
            let offsets = *moved.buffers.add(1) as *const i64;
            assert_eq!(std::slice::from_raw_parts(offsets, 3), &[0, 1, 2]);
            if let Some(release) = moved.release {
                release(&mut moved);
            }
            if let Some(release) = schema.release {
                release(&mut schema);
            }
        }
        assert_eq!(Arc::strong_count(&c), 1);
    }
}
