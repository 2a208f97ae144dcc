//! The sender (Kafka's `Sender`): appending sealed batches to the partition
//! logs, the flushes, and the linger thread that seals batches once they
//! are `linger_ms` old.
//!
//! Batches are appended under `append_order`, in the order they were
//! sealed, with the accumulator unlocked during the I/O so that sends go on
//! meanwhile. After a batch fails, the run's later batches of its partition
//! fail unappended and the partition is fenced (see `fence`). No callback
//! runs here: completions go back to the caller (the linger thread runs its
//! own once it has released the producer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ottla_storage::error::Error;
use ottla_storage::log::Durability;

use super::accumulator::Inner;
use super::batch::{BatchHandle, Completions, OpenBatch};
use super::Producer;

/// A partition whose append failed during one run of appends: a failed
/// batch of it, and the error.
type FailedPartition = (Arc<BatchHandle>, Arc<Error>);

impl Producer {
    /// Append every sealed batch, in order. Callbacks come back to be run by
    /// the caller once it may: a callback may need a lock the caller holds
    /// or must take first, so none runs here.
    pub fn flush_ready(&self) -> Vec<Completions> {
        self.append_sealed(|_| {})
    }

    /// Append every open batch.
    pub fn flush(&self) -> Vec<Completions> {
        self.append_sealed(|inner| self.seal(inner, None))
    }

    /// Append the batch holding `handle` now, if it has not been (a caller
    /// is waiting on one of its records).
    pub fn flush_batch(&self, handle: &Arc<BatchHandle>) -> Vec<Completions> {
        if handle.is_done() {
            return Vec::new();
        }
        self.append_sealed(|inner| {
            let Inner {
                topics,
                open_batches,
                ready,
                ..
            } = inner;
            if let Some(b) = topics.take_open(&handle.topic, handle.partition, |b| {
                Arc::ptr_eq(&b.handle, handle)
            }) {
                ready.push(b);
                *open_batches -= 1;
            }
        })
    }

    /// Have the linger thread append the sealed batches while the caller
    /// goes on encoding (for bulk sends: encoding and the `pwrite` copy into
    /// the page cache then run on two cores instead of one after the
    /// other). Returns false, handing nothing off, when more
    /// than `max_ready` sealed batches are already waiting: the caller must
    /// then append them itself ([`Producer::flush_ready`]), which bounds the
    /// memory sealed batches hold. Acknowledgement is unchanged: a record's
    /// handle resolves only once its batch is in the log.
    pub fn append_in_background(&self, max_ready: usize) -> bool {
        let inner = self.inner.lock();
        if inner.ready.len() > max_ready {
            return false;
        }
        if !inner.ready.is_empty() {
            self.linger_cv.notify_one();
        }
        true
    }

    /// Under the ordering lock: let `prepare` seal batches (briefly holding
    /// the accumulator), take every sealed batch, and append them with the
    /// accumulator unlocked.
    pub(super) fn append_sealed(&self, prepare: impl FnOnce(&mut Inner)) -> Vec<Completions> {
        let _order = self.append_order.lock();
        let batches = {
            let mut inner = self.inner.lock();
            prepare(&mut inner);
            std::mem::take(&mut inner.ready)
        };
        self.append_run(batches, self.durability()).0
    }

    /// Append sealed batches in order (the caller holds `append_order`).
    /// After a batch of a partition fails, the run's later batches of that
    /// partition fail with the same error, unappended (see
    /// [`PartitionFence`](super::PartitionFence)); returns the completions and, per partition that
    /// failed, a failed handle and its error.
    pub(super) fn append_run(
        &self,
        batches: Vec<OpenBatch>,
        durability: Durability,
    ) -> (Vec<Completions>, Vec<FailedPartition>) {
        let mut done = Vec::with_capacity(batches.len());
        let mut failed: Vec<FailedPartition> = Vec::new();
        for mut b in batches {
            if !failed.is_empty() {
                if let Some((_, e)) = failed.iter().find(|(h, _)| h.same_partition(&b.handle)) {
                    let e = e.clone();
                    done.push(self.fail_batch(b, e));
                    continue;
                }
            }
            let codec = super::compress::codec_for(&b.log.config());
            let r = match (&self.txn, codec) {
                // A transactional batch: stamped and checked under the
                // transactional id's lock (see `txn`).
                (Some(t), Some(codec)) => t.append(
                    &b.log,
                    b.builder.finish_mut(),
                    Some(&|stamped: &[u8]| super::compress::compress(stamped, codec)),
                ),
                (Some(t), None) => t.append(&b.log, b.builder.finish_mut(), None),
                // Stored compressed, as the topic's compression.type says.
                (None, Some(codec)) => super::compress::compress(b.builder.finish(), codec)
                    .and_then(|mut packed| b.log.append(&mut packed, durability))
                    .map(|info| info.base_offset),
                (None, None) => b
                    .log
                    .append(b.builder.finish_mut(), durability)
                    .map(|info| info.base_offset),
            }
            .map_err(Arc::new);
            if let Err(e) = &r {
                // Fence before completing: a waiter that sees the error may
                // lift the fence at once.
                done.extend(self.fence_after(&b.handle, e));
                failed.push((b.handle.clone(), e.clone()));
            }
            done.push(self.complete_batch(b, r));
        }
        (done, failed)
    }
}

pub(super) fn linger_loop(weak: std::sync::Weak<Producer>) {
    loop {
        let Some(p) = weak.upgrade() else { return };
        let linger = Duration::from_millis(p.config.linger_ms);
        {
            let mut inner = p.inner.lock();
            if inner.closed {
                return;
            }
            if inner.open_batches == 0 && inner.ready.is_empty() {
                // Sleep until a send opens a batch (bounded, to notice drops).
                p.linger_cv.wait_for(&mut inner, Duration::from_millis(200));
                continue;
            }
            let oldest = inner
                .topics
                .states
                .iter()
                .flat_map(|s| s.batches.iter().flatten())
                .map(|b| b.created)
                .min();
            match oldest {
                Some(t) if t + linger > Instant::now() && inner.ready.is_empty() => {
                    p.linger_cv.wait_until(&mut inner, t + linger);
                    continue;
                }
                _ => {}
            }
        };
        let completions = p.append_sealed(|inner| {
            let cutoff = Instant::now()
                .checked_sub(linger)
                .unwrap_or_else(Instant::now);
            p.seal(inner, Some(cutoff));
        });
        drop(p);
        for c in completions {
            c.run();
        }
    }
}
