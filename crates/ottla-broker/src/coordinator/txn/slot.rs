//! One transactional id's transaction as its coordinator holds it: the
//! metadata a request (or the timer) acts on, under a lock held for the
//! whole action, and a copy of it published for the paths that only read.
//!
//! An action may hold the lock for seconds: in a cluster it waits, on a
//! blocking thread (`crate::blocking`), for its state write and its markers
//! to be replicated and for WriteTxnMarkers answers. Produce's verification
//! (KIP-890), AddPartitionsToTxn's `verify_only`, DescribeTransactions and
//! ListTransactions run on the runtime's workers (two of them): one worker
//! parked on the lock until the action ended was enough to stop the whole
//! broker (issue 15, the new coordinator's stall; gdb showed the other
//! worker idle, not polling tokio's I/O and timer driver), so neither the
//! follower fetches that move the high watermark nor the timer that bounds
//! the wait ever came. They, and TxnOffsetCommit's check, read the
//! published copy instead, which never waits.
//!
//! The copy is published when the lock is released, and as soon as an
//! action starts ending or fencing the transaction ([`SlotGuard::announce`],
//! before its state is written): from then on a Produce of the transaction
//! is refused at once, where it used to wait for the lock and then be
//! refused.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use ottla_storage::txn_state::TxnMetadata;

pub struct Slot {
    meta: Mutex<TxnMetadata>,
    published: Mutex<Arc<TxnMetadata>>,
}

impl Slot {
    pub fn new(m: TxnMetadata) -> Arc<Slot> {
        Arc::new(Slot {
            published: Mutex::new(Arc::new(m.clone())),
            meta: Mutex::new(m),
        })
    }

    /// Wait for the transaction's lock, to act on it. Blocking threads
    /// only (it may be held for seconds).
    pub fn lock(&self) -> SlotGuard<'_> {
        SlotGuard {
            slot: self,
            meta: self.meta.lock(),
            changed: false,
        }
    }

    /// The lock if no one acts on the transaction now.
    pub fn try_lock(&self) -> Option<SlotGuard<'_>> {
        self.meta.try_lock().map(|meta| SlotGuard {
            slot: self,
            meta,
            changed: false,
        })
    }

    /// The transaction as last published: never waits for an action in
    /// progress (the published lock is only held to swap an `Arc`).
    pub fn snapshot(&self) -> Arc<TxnMetadata> {
        self.published.lock().clone()
    }

    fn publish(&self, m: &TxnMetadata) {
        let copy = Arc::new(m.clone());
        *self.published.lock() = copy;
    }
}

/// The transaction's lock: the metadata to act on; published on release
/// if it was changed (or another state announced) meanwhile.
pub struct SlotGuard<'a> {
    slot: &'a Slot,
    meta: MutexGuard<'a, TxnMetadata>,
    changed: bool,
}

impl SlotGuard<'_> {
    /// Publish `next`, the state about to be written, before it is: a
    /// transaction ending (or fenced) refuses its producer's batches from
    /// now on. Released without `next` written, the lock publishes the
    /// state it holds again.
    pub fn announce(&mut self, next: &TxnMetadata) {
        self.changed = true;
        self.slot.publish(next);
    }

    /// Publish the state held now.
    pub fn publish(&mut self) {
        self.changed = false;
        self.slot.publish(&self.meta);
    }
}

impl Deref for SlotGuard<'_> {
    type Target = TxnMetadata;
    fn deref(&self) -> &TxnMetadata {
        &self.meta
    }
}

impl DerefMut for SlotGuard<'_> {
    fn deref_mut(&mut self) -> &mut TxnMetadata {
        self.changed = true;
        &mut self.meta
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.changed {
            self.slot.publish(&self.meta);
        }
    }
}
