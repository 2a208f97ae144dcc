//! Arrow record batches for `Consumer.poll_arrow` and `Consumer.read_arrow`.
//!
//! The engine's drain fills [`RecordColumns`] with the GIL released, so no
//! per-record Python object exists; the columns reach Python as an
//! [`ArrowBatch`], which implements the Arrow PyCapsule interface
//! (`__arrow_c_schema__`, `__arrow_c_array__`): `pyarrow.record_batch(b)`
//! (or polars, DuckDB, nanoarrow) imports it without copying. The façade
//! (`python/ottla/_arrow.py`) does that and adds `to_pandas`.
//!
//! Positions move exactly as with `poll()`: a record is either appended to
//! the columns (handed out) or refused, and a refused record stays at its
//! partition's position (`Consumer::drain_while`).

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use ottla_client::arrow::columns::payload_size;
use ottla_client::arrow::export::{export, schema};
use ottla_client::arrow::ffi::export_schema;
use ottla_client::arrow::RecordColumns;
use ottla_client::consumer::{Consumer as Engine, TopicPartition};

/// Rows reserved up front; columns grow past it as needed.
const INITIAL_ROWS: usize = 1 << 16;

/// Records in Kafka's shape as Arrow columns, owned by Rust and lent to
/// Arrow libraries through the PyCapsule interface.
#[pyclass(module = "ottla._core", name = "ArrowBatch", frozen)]
pub struct ArrowBatch {
    columns: Arc<RecordColumns>,
}

#[pymethods]
impl ArrowBatch {
    #[getter]
    fn num_rows(&self) -> usize {
        self.columns.len()
    }

    fn __len__(&self) -> usize {
        self.columns.len()
    }

    /// The batch's schema, as an `arrow_schema` PyCapsule.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        PyCapsule::new_with_value(py, export_schema(&schema()), c"arrow_schema")
    }

    /// `(arrow_schema, arrow_array)` PyCapsules over the batch's buffers (no
    /// copy). `requested_schema` is accepted and ignored, as the protocol
    /// allows: the caller casts if it wants another type.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, Bound<'py, PyCapsule>)> {
        let _ = requested_schema;
        let (s, a) = export(&self.columns);
        Ok((
            PyCapsule::new_with_value(py, s, c"arrow_schema")?,
            PyCapsule::new_with_value(py, a, c"arrow_array")?,
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "<ottla._core.ArrowBatch rows={} payload_bytes={}>",
            self.columns.len(),
            self.columns.payload_bytes()
        )
    }
}

impl ArrowBatch {
    pub fn new(columns: RecordColumns) -> ArrowBatch {
        ArrowBatch {
            columns: Arc::new(columns),
        }
    }
}

/// How much one result may hold.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    /// Key, value and header bytes; a first record larger than this is
    /// still taken, so a result is never empty while records are there.
    pub max_bytes: usize,
}

impl Limits {
    fn columns(&self) -> RecordColumns {
        RecordColumns::with_capacity(self.max_records.min(INITIAL_ROWS), 0)
    }
}

/// Whether the record may join `cols` under `limits` (`taken` and
/// `bytes` count the whole result, over all its batches).
#[inline]
fn within(limits: &Limits, taken: usize, bytes: usize, rec: &ottla_record::RecordView<'_>) -> bool {
    taken == 0 || (taken < limits.max_records && bytes + payload_size(rec) <= limits.max_bytes)
}

/// Fill one batch from whatever is ready now, draining until a limit is
/// reached or nothing more is there. Never waits.
pub fn poll_columns(engine: &Engine, limits: Limits) -> ottla_storage::Result<RecordColumns> {
    let mut cols = limits.columns();
    let mut first = true;
    loop {
        let mut refused = false;
        let left = limits.max_records - cols.len();
        let drained = engine.drain_while(left, &mut |tp, rec| {
            let ok = within(&limits, cols.len(), cols.payload_bytes(), rec)
                && (cols.is_empty() || cols.fits(rec));
            if ok {
                cols.push(tp, rec);
            } else {
                refused = true;
            }
            ok
        });
        let n = match drained {
            Ok(n) => n,
            Err(e) if cols.is_empty() => return Err(e),
            // The records taken are handed out (their positions moved);
            // the error stays where it is and is raised by the next call.
            Err(_) => return Ok(cols),
        };
        if n == 0 || refused || cols.len() >= limits.max_records {
            return Ok(cols);
        }
        if first {
            first = false;
            let budget = limits.max_bytes.saturating_sub(cols.payload_bytes());
            cols.reserve_like_so_far(limits.max_records - cols.len(), budget);
        }
    }
}

/// Read every record between the current positions and the log end offsets
/// of the assigned, unpaused partitions as they are now, up to `limits`:
/// one or more batches (a new one starts where a binary column would pass
/// 2 GiB), at least one even if empty.
///
/// A partition that reaches its end offset is paused while the others are
/// read (a record appended past it is refused, so it stays unread), and
/// resumed before returning.
pub fn read_columns(engine: &Engine, limits: Limits) -> ottla_storage::Result<Vec<RecordColumns>> {
    if engine.is_closed() {
        return Err(ottla_storage::Error::Closed("consumer"));
    }
    let already: Vec<TopicPartition> = engine.paused();
    let mut ends: Vec<(TopicPartition, i64)> = Vec::new();
    let mut done: Vec<(String, u32)> = Vec::new();
    for tp in engine.assignment() {
        if already.contains(&tp) {
            continue;
        }
        let (_, end) = engine.watermarks(&tp.topic, tp.partition)?;
        if engine.position(&tp.topic, tp.partition)? >= end {
            done.push((tp.topic.to_string(), tp.partition));
        } else {
            ends.push((tp, end));
        }
    }
    engine.set_paused(&done, true)?;
    let read = read_until(engine, limits, &mut ends, &mut done);
    // Resume what we paused, whatever happened; a partition revoked
    // meanwhile is no longer ours to resume.
    for tp in &done {
        let _ = engine.set_paused(std::slice::from_ref(tp), false);
    }
    read
}

fn read_until(
    engine: &Engine,
    limits: Limits,
    ends: &mut Vec<(TopicPartition, i64)>,
    done: &mut Vec<(String, u32)>,
) -> ottla_storage::Result<Vec<RecordColumns>> {
    let mut batches = Vec::new();
    let mut cols = limits.columns();
    let (mut taken, mut bytes) = (0usize, 0usize);
    let (mut idle, mut first) = (false, true);
    while !ends.is_empty() && taken < limits.max_records {
        let mut at_end: Option<TopicPartition> = None;
        let (mut full, mut limited) = (false, false);
        let mut last: Option<(TopicPartition, i64)> = None;
        let drained = engine.drain_while(limits.max_records - taken, &mut |tp, rec| {
            let end = match &last {
                Some((t, e)) if Arc::ptr_eq(&t.topic, &tp.topic) && t.partition == tp.partition => {
                    *e
                }
                _ => {
                    // A partition assigned after the snapshot (a
                    // rebalance) has no end here: it is not read.
                    let e = ends.iter().find(|(t, _)| t == tp).map_or(i64::MIN, |x| x.1);
                    last = Some((tp.clone(), e));
                    e
                }
            };
            if rec.offset >= end {
                at_end = Some(tp.clone());
                return false;
            }
            if !within(&limits, taken, bytes, rec) {
                limited = true;
                return false;
            }
            if !cols.is_empty() && !cols.fits(rec) {
                full = true;
                return false;
            }
            bytes += payload_size(rec);
            taken += 1;
            cols.push(tp, rec);
            true
        });
        let n = match drained {
            Ok(n) => n,
            Err(e) if taken == 0 => return Err(e),
            // As in `poll_columns`: hand out what was read; the next call
            // meets the error again.
            Err(_) => break,
        };
        if let Some(tp) = at_end {
            let key = (tp.topic.to_string(), tp.partition);
            engine.set_paused(std::slice::from_ref(&key), true)?;
            done.push(key);
            ends.retain(|(t, _)| *t != tp);
            continue;
        }
        if full {
            let next = limits.columns();
            batches.push(std::mem::replace(&mut cols, next));
            continue;
        }
        if limited {
            break;
        }
        if first && taken > 0 {
            first = false;
            // Offsets still to read (records, unless compacted away).
            let left: i64 = ends
                .iter()
                .map(|(tp, end)| end - engine.position(&tp.topic, tp.partition).unwrap_or(*end))
                .filter(|d| *d > 0)
                .sum();
            let rows = usize::try_from(left).unwrap_or(0);
            let budget = limits.max_bytes.saturating_sub(bytes);
            cols.reserve_like_so_far(rows.min(limits.max_records - taken), budget);
        }
        if n == 0 {
            // Nothing ready twice in a row (a drain may only step over
            // control batches): every partition is at its end, or what is
            // left cannot be read now.
            if idle {
                break;
            }
            idle = true;
        } else {
            idle = false;
        }
    }
    if batches.is_empty() || !cols.is_empty() {
        batches.push(cols);
    }
    Ok(batches)
}
