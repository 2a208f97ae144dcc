//! The large-value path: a record large enough to fill a batch by itself is
//! appended as a batch of its own, written to the log from the caller's
//! buffer (`pwritev`) rather than copied into a batch buffer.
//!
//! Order is kept as for `send`: under `append_order`, the record's
//! partition's open batch and every sealed batch are appended before it; on
//! a fenced partition, or one whose earlier batch fails in that run, the
//! record fails unappended with the partition's error.

use std::sync::Arc;

use ottla_record::batch::HeaderRef;
use ottla_record::single::SingleRecordBatch;
use ottla_storage::error::{Error, Result};
use ottla_storage::log::Durability;

use super::accumulator::Inner;
use super::batch::{BatchHandle, Completions, SendReceipt};
use super::{check_key, pick_partition, record_size, Producer};

/// Smallest value [`Producer::send_direct`] writes from the caller's buffer.
pub const DIRECT_VALUE_MIN: usize = 64 * 1024;

impl Producer {
    /// Whether [`Producer::send_direct`] takes a value of `value_len` bytes:
    /// one large enough to fill a batch by itself, which `send` would seal
    /// and append alone anyway, and large enough that the copy into a batch
    /// buffer costs more than the extra bookkeeping.
    pub fn sends_direct(&self, value_len: usize) -> bool {
        self.txn.is_none() && value_len >= DIRECT_VALUE_MIN && value_len >= self.config.batch_size
    }

    /// Send one large record as a batch of its own, appended now, with the
    /// value written from the caller's buffer (`pwritev`; no copy into a
    /// batch buffer). Batches sealed before it, including its partition's
    /// open one, are appended first, so records keep their send order.
    ///
    /// Errors about the record itself (size, partition, a closed producer)
    /// are returned; an append that fails is reported through the receipt's
    /// handle, as for `send`. The completions of every batch appended come
    /// back for the caller to run. The caller must keep `value` unchanged
    /// until this returns: it is written to the log from the caller's buffer,
    /// not copied (so only an immutable buffer is safe to pass).
    #[allow(clippy::too_many_arguments)]
    pub fn send_direct(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[HeaderRef<'_>],
        partition: Option<u32>,
        timestamp: Option<i64>,
    ) -> Result<(SendReceipt, Vec<Completions>)> {
        let _order = self.append_order.lock();
        let (log, handle, ts, sealed) = {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Err(Error::Closed("producer"));
            }
            if self.txn.is_some() {
                return Err(Error::IllegalState(
                    "send_direct is not for transactional producers: use send".into(),
                ));
            }
            let ts = match timestamp {
                Some(t) => t,
                None => inner.clock.now_ms(),
            };
            let Inner {
                topics,
                open_batches,
                ready,
                ..
            } = &mut *inner;
            let state = self.topic_state_in(topics, topic)?;
            let n = state.topic.partitions;
            let max_bytes = state.topic.config.max_message_bytes;
            record_size(key, Some(value), headers, max_bytes)?;
            let sticky = partition.is_none() && key.is_none();
            let p = pick_partition(topic, partition, key, n, state.sticky)?;
            check_key(&state.topic, p, key)?;
            let log = self.store.partition(&state.topic, p)?;
            // Records sent to this partition before this one go first.
            if let Some(b) = state.batches[p as usize].take() {
                ready.push(b);
                *open_batches -= 1;
            }
            if sticky {
                // As `send` does once a batch is full.
                state.sticky = (state.sticky + 1) % n;
            }
            let fence = &state.fences[p as usize];
            let fenced = if fence.is_up() {
                fence.fenced_records(1)
            } else {
                None
            };
            let handle = match &fenced {
                Some((h, _)) => h.clone(),
                None => BatchHandle::new(state.topic.name.clone(), p, fence),
            };
            (log, handle, ts, std::mem::take(ready))
        };
        let durability = self.durability();
        let (mut done, failed) = self.append_run(sealed, durability);
        if handle.is_done() {
            // Fenced: the record fails with its partition's error.
            let receipt = SendReceipt {
                batch: handle,
                index: 0,
                timestamp: ts,
            };
            return Ok((receipt, done));
        }
        if let Some((_, e)) = failed.iter().find(|(h, _)| h.same_partition(&handle)) {
            // A batch ahead of it in its partition failed just now.
            let e = e.clone();
            let cbs = handle.complete(Err(e.clone()));
            done.push(Completions(cbs, handle.clone(), Some(e)));
            let receipt = SendReceipt {
                batch: handle,
                index: 0,
                timestamp: ts,
            };
            return Ok((receipt, done));
        }
        // A topic that stores batches compressed: the value is compressed
        // (so copied) anyway.
        let r = if let Some(codec) = super::compress::codec_for(&log.config()) {
            let mut whole = SingleRecordBatch::new(ts, key, value, headers);
            let (first, rest) = whole.parts_mut();
            let mut plain = Vec::with_capacity(whole_len(first, &rest));
            plain.extend_from_slice(first);
            for part in rest {
                plain.extend_from_slice(part);
            }
            super::compress::compress(&plain, codec)
                .and_then(|mut packed| log.append(&mut packed, durability))
                .map(|info| info.base_offset)
                .map_err(Arc::new)
        } else {
            append_from_caller(&log, ts, key, value, headers, durability)
        };
        let err = r.as_ref().err().cloned();
        if let Some(e) = &err {
            done.extend(self.fence_after(&handle, e));
        }
        let cbs = handle.complete(r);
        done.push(Completions(cbs, handle.clone(), err));
        let receipt = SendReceipt {
            batch: handle,
            index: 0,
            timestamp: ts,
        };
        Ok((receipt, done))
    }
}

fn whole_len(first: &[u8], rest: &[&[u8]]) -> usize {
    first.len() + rest.iter().map(|r| r.len()).sum::<usize>()
}

/// Append one record as a batch of its own, the value written from the
/// caller's buffer.
fn append_from_caller(
    log: &ottla_storage::log::PartitionLog,
    ts: i64,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[HeaderRef<'_>],
    durability: Durability,
) -> std::result::Result<i64, Arc<Error>> {
    {
        // With fsync, the CRC is computed while the disk writes the value
        // back (see `PartitionLog::append_parts`), off the critical path.
        let (mut batch, seal) = if durability == Durability::Fsync {
            let seal: ottla_storage::log::partition::SealFn = SingleRecordBatch::seal_first_part;
            (
                SingleRecordBatch::new_unsealed(ts, key, value, headers),
                Some(seal),
            )
        } else {
            (SingleRecordBatch::new(ts, key, value, headers), None)
        };
        let (first, rest) = batch.parts_mut();
        log.append_parts(first, &rest, durability, seal)
            .map(|info| info.base_offset)
            .map_err(Arc::new)
    }
}
