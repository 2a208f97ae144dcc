//! The partition fence: once an append to a partition fails, nothing sent
//! to that partition afterwards is appended until the caller has been told
//! of the failure, so the partition's log holds a prefix of what this
//! producer sent to it. [`PartitionFence`] states the contract;
//! [`Producer::fence_after`] raises a fence and fails the batches behind the
//! failed one; [`BatchHandle::error_delivered`] and
//! [`Producer::take_failure`] lift it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use ottla_storage::error::Error;

use super::accumulator::Inner;
use super::batch::{BatchHandle, Completions};
use super::Producer;

/// A partition's fence: the contract that a partition's log holds a prefix
/// of the records this producer sent to it, up to the first failed append
/// the caller has not been told about (Kafka's idempotent producer keeps
/// the same order).
///
/// When appending a batch of the partition fails, the fence is raised with
/// the error before the batch's handle completes (so a waiter that sees the
/// error can lift it), and every other batch of the partition, open or
/// sealed, fails with the same error. While it is up, records sent to the
/// partition fail at once with that error (their handle is `Fenced::handle`,
/// complete from the start), so nothing queued behind the lost records can
/// take their offsets. It is lifted when the caller has been told:
/// [`BatchHandle::error_delivered`] with the fencing error (the same `Arc`,
/// so an older failure's future cannot lift a newer fence), or
/// [`Producer::take_failure`] (a flush that raises).
///
/// Raised only under the accumulator lock and the append-order lock, and
/// read by senders under the accumulator lock, once per new batch (`up`),
/// never per record.
#[derive(Default)]
pub struct PartitionFence {
    up: AtomicBool,
    fenced: Mutex<Option<Fenced>>,
}

struct Fenced {
    error: Arc<Error>,
    /// Failed from the start: the handle of every record sent while fenced.
    handle: Arc<BatchHandle>,
    next_index: u32,
}

impl PartitionFence {
    #[inline]
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Raise the fence with `error` (keeping an earlier undelivered one).
    pub(super) fn raise(self: &Arc<Self>, error: &Arc<Error>, topic: &Arc<str>, partition: u32) {
        let mut g = self.fenced.lock();
        if g.is_none() {
            let handle = BatchHandle::new(topic.clone(), partition, self);
            let _ = handle.done.set(Err(error.clone()));
            *g = Some(Fenced {
                error: error.clone(),
                handle,
                next_index: 0,
            });
            self.up.store(true, Ordering::Release);
        }
    }

    /// Lift the fence if `delivered` is its error (any error if None);
    /// returns the error it held.
    pub(super) fn lift(&self, delivered: Option<&Arc<Error>>) -> Option<Arc<Error>> {
        if !self.is_up() {
            return None;
        }
        let mut g = self.fenced.lock();
        let matches = g
            .as_ref()
            .is_some_and(|f| delivered.map_or(true, |e| Arc::ptr_eq(&f.error, e)));
        if !matches {
            return None;
        }
        self.up.store(false, Ordering::Release);
        g.take().map(|f| f.error)
    }

    /// Give one record sent while the fence is up the fence's failed
    /// handle; false if the fence was lifted meanwhile. Out of line: the
    /// send path only pays the `is_up` test.
    #[cold]
    #[inline(never)]
    pub(super) fn place_fenced(&self, placed: &mut dyn FnMut(&Arc<BatchHandle>, u32)) -> bool {
        match self.fenced_records(1) {
            Some((h, index)) => {
                placed(&h, index);
                true
            }
            None => false,
        }
    }

    /// The failed handle and first index for `count` records sent while
    /// the fence is up, or None if it was lifted meanwhile.
    pub(super) fn fenced_records(&self, count: usize) -> Option<(Arc<BatchHandle>, u32)> {
        let mut g = self.fenced.lock();
        let f = g.as_mut()?;
        let first = f.next_index;
        f.next_index = first.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        Some((f.handle.clone(), first))
    }
}

impl Producer {
    /// Appending a batch of `failed`'s partition failed with `error`: raise
    /// the partition's fence and fail its open and sealed batches (every
    /// one is behind the failed batch: appends go in order).
    pub(super) fn fence_after(&self, failed: &BatchHandle, error: &Arc<Error>) -> Vec<Completions> {
        let mut behind = Vec::new();
        {
            let mut inner = self.inner.lock();
            let Inner {
                topics,
                open_batches,
                ready,
                ..
            } = &mut *inner;
            if let Some(fence) = failed.fence.upgrade() {
                fence.raise(error, &failed.topic, failed.partition);
            }
            let mut i = 0;
            while i < ready.len() {
                if ready[i].handle.same_partition(failed) {
                    behind.push(ready.remove(i));
                } else {
                    i += 1;
                }
            }
            if let Some(b) = topics.take_open(&failed.topic, failed.partition, |b| {
                b.handle.same_partition(failed)
            }) {
                behind.push(b);
                *open_batches -= 1;
            }
        }
        behind
            .into_iter()
            .map(|b| self.fail_batch(b, error.clone()))
            .collect()
    }

    /// Lift every partition's fence, returning one of their errors: for a
    /// `flush()` that tells the caller about failed appends (raising this
    /// error, or one of its own batches'). Sends to those partitions are
    /// appended again afterwards. See [`PartitionFence`].
    pub fn take_failure(&self) -> Option<Arc<Error>> {
        let inner = self.inner.lock();
        let mut first = None;
        for s in &inner.topics.states {
            for f in &s.fences {
                if let Some(e) = f.lift(None) {
                    first.get_or_insert(e);
                }
            }
        }
        first
    }
}
