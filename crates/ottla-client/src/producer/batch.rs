//! The producer batch (Kafka's `ProducerBatch`): a partition's open batch
//! being filled, and the [`BatchHandle`] the futures of its records share.
//!
//! A handle completes once (`done` is set once), with the batch's base
//! offset after the log has published the batch, or with the error that
//! lost it. Callbacks registered before that come back in [`Completions`],
//! for the caller to run once it holds no producer lock; a callback
//! registered later runs at once. A record's index in its batch is its
//! offset delta.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use ottla_record::batch::BatchBuilder;
use ottla_storage::error::Error;
use ottla_storage::log::PartitionLog;

use super::fence::PartitionFence;

pub type Callback = Box<dyn FnOnce(&std::result::Result<i64, Arc<Error>>) + Send>;

/// A batch of one partition: filled while open, then sealed (in the
/// accumulator's `ready`) until the sender appends it.
pub(super) struct OpenBatch {
    pub(super) log: Arc<PartitionLog>,
    pub(super) builder: BatchBuilder,
    pub(super) handle: Arc<BatchHandle>,
    pub(super) created: Instant,
}

/// One batch's fate, shared by the futures of all its records.
pub struct BatchHandle {
    pub topic: Arc<str>,
    pub partition: u32,
    pub(super) done: OnceLock<std::result::Result<i64, Arc<Error>>>,
    lock: Mutex<Vec<Callback>>,
    cv: Condvar,
    /// The partition's fence, lifted through this handle once its error
    /// reaches the caller (weak: a raised fence holds a handle).
    pub(super) fence: Weak<PartitionFence>,
}

impl BatchHandle {
    pub(super) fn new(
        topic: Arc<str>,
        partition: u32,
        fence: &Arc<PartitionFence>,
    ) -> Arc<BatchHandle> {
        Arc::new(BatchHandle {
            topic,
            partition,
            done: OnceLock::new(),
            lock: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            fence: Arc::downgrade(fence),
        })
    }

    /// The caller has been handed this batch's error (a future raised or
    /// returned it): if it is the error that fenced the partition, sends to
    /// the partition are appended again. See [`PartitionFence`].
    pub fn error_delivered(&self) {
        if let Some(Err(e)) = self.done.get() {
            if let Some(f) = self.fence.upgrade() {
                f.lift(Some(e));
            }
        }
    }

    pub(super) fn same_partition(&self, other: &BatchHandle) -> bool {
        Weak::ptr_eq(&self.fence, &other.fence)
    }

    /// Base offset of the batch once appended, or the error that lost it.
    pub fn result(&self) -> Option<&std::result::Result<i64, Arc<Error>>> {
        self.done.get()
    }

    pub fn is_done(&self) -> bool {
        self.done.get().is_some()
    }

    pub(super) fn complete(&self, r: std::result::Result<i64, Arc<Error>>) -> Vec<Callback> {
        let mut cbs = self.lock.lock();
        let _ = self.done.set(r);
        self.cv.notify_all();
        std::mem::take(&mut *cbs)
    }

    /// Wait for the batch; false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock.lock();
        while self.done.get().is_none() {
            match deadline {
                Some(d) => {
                    if self.cv.wait_until(&mut g, d).timed_out() {
                        return self.done.get().is_some();
                    }
                }
                None => self.cv.wait(&mut g),
            }
        }
        true
    }

    /// Run `cb` when the batch completes (now, if it has).
    pub fn on_complete(&self, cb: Callback) {
        let mut g = self.lock.lock();
        if let Some(r) = self.done.get() {
            drop(g);
            cb(r);
        } else {
            g.push(cb);
        }
    }
}

/// Consecutive records of one `send_many` that went into one batch.
pub struct SendRun {
    pub batch: Arc<BatchHandle>,
    pub first_index: u32,
    pub count: u32,
}

/// Where a sent record went: its batch and its place in it.
pub struct SendReceipt {
    pub batch: Arc<BatchHandle>,
    pub index: u32,
    pub timestamp: i64,
}

/// Callbacks of completed batches, run after the accumulator is unlocked.
#[must_use]
pub struct Completions(
    pub(super) Vec<Callback>,
    pub(super) Arc<BatchHandle>,
    pub(super) Option<Arc<Error>>,
);

impl Completions {
    /// Run the callbacks of the completed batch.
    pub fn run(self) {
        let Completions(cbs, handle, _) = self;
        if let Some(r) = handle.result() {
            for cb in cbs {
                cb(r);
            }
        }
    }

    /// The error that failed the batch, if it failed.
    pub fn error(&self) -> Option<&Arc<Error>> {
        self.2.as_ref()
    }
}
