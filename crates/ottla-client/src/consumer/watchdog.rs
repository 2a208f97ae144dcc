//! The group watchdog: a thread per consumer that enforces the session
//! timeout (a member whose application stops polling gives up its
//! partitions, as a dead member would) and prunes dead members so the
//! group can reassign theirs.
//!
//! Invariants: the thread holds the consumer's state weakly and ends when
//! the consumer is closed or dropped; it only tries the consumer's lock,
//! briefly, so a consumer inside a drain (polling after all) is never
//! blocked by it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::group::GroupDir;

use super::{Consumer, Inner};

impl Consumer {
    /// Start the thread that watches this member's polling and the other
    /// members' liveness. It holds the consumer's state weakly and ends
    /// when the consumer is closed or dropped.
    pub(super) fn ensure_watchdog(&self, dir: Arc<GroupDir>) {
        let mut started = self.watchdog.lock();
        if *started {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let polls = self.polls.clone();
        let closed = self.closed.clone();
        let timeout = Duration::from_millis(self.config.session_timeout_ms);
        let tick = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
        let spawned = std::thread::Builder::new()
            .name("ottla-group".into())
            .spawn(move || {
                let mut watch = Watch {
                    inner,
                    polls,
                    dir,
                    timeout,
                    last_polls: u64::MAX,
                    progress_at: Instant::now(),
                    seen: u64::MAX,
                    tokens: Vec::new(),
                };
                while !closed.load(Ordering::Acquire) {
                    std::thread::sleep(tick);
                    if !watch.tick() {
                        return;
                    }
                }
            });
        // Without the thread, dead members are still pruned whenever anyone
        // updates the group; only the session timeout would be missing.
        *started = spawned.is_ok();
    }
}

/// The group watchdog's view, on its own thread.
struct Watch {
    inner: Weak<Mutex<Inner>>,
    polls: Arc<AtomicU64>,
    dir: Arc<GroupDir>,
    timeout: Duration,
    last_polls: u64,
    progress_at: Instant,
    seen: u64,
    tokens: Vec<String>,
}

impl Watch {
    /// One look: has our application stopped polling, and has another
    /// member died? False once the consumer is gone.
    fn tick(&mut self) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let now = Instant::now();
        let polls = self.polls.load(Ordering::Relaxed);
        if polls != self.last_polls {
            self.last_polls = polls;
            self.progress_at = now;
        } else if now.duration_since(self.progress_at) > self.timeout && expire(&inner) {
            self.progress_at = now;
        }
        drop(inner);
        // A dead member's partitions are free the moment it dies (the
        // kernel dropped its locks); pruning it lets the group reassign them.
        let word = self.dir.store().beacon().groups_gen();
        if word != self.seen {
            if let Ok(st) = self.dir.read_state() {
                self.seen = word;
                self.tokens = st.members.into_iter().map(|m| m.token).collect();
            }
        }
        if self
            .tokens
            .iter()
            .any(|t| matches!(self.dir.member_alive(t), Ok(false)))
        {
            // Errors are retried next tick.
            let _ = self.dir.update(|_| Ok(()));
        }
        true
    }
}

/// The application missed its session timeout: give up every partition and
/// leave, as a dead member would, so live members take over. The next poll
/// reports them lost and rejoins. False if the consumer is busy (inside a
/// drain, so polling after all): try again next tick.
fn expire(inner: &Mutex<Inner>) -> bool {
    let Some(mut guard) = inner.try_lock_for(Duration::from_millis(10)) else {
        return false;
    };
    let g = &mut *guard;
    let Some(m) = g.group.as_mut() else {
        return true;
    };
    let Some(session) = m.session.take() else {
        return true;
    };
    // Removing them from the assignment first means no record of theirs is
    // handed out from here on; the locks go with the session below.
    m.lost.extend(g.assignment.drain(..).map(|a| a.tp));
    m.pending = false;
    m.target.clear();
    m.generation = -1;
    drop(guard);
    let _ = session.leave();
    true
}
