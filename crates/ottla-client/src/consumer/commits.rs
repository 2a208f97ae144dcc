//! Committing positions to the group's offset store: by hand, on the
//! auto-commit interval, and when partitions are given up.
//!
//! Invariants: a member commits only partitions it owns (one it lost may
//! already be read, and committed, by its new owner); unchanged offsets are
//! not written again, so an idle consumer does not grow the offsets topic.
//! The auto-commit check runs on every drain, so its clock is the coarse
//! one. A consumer that is not a member (a hand-made assignment) commits
//! only while the group has no members, embedded or the broker's, as Kafka
//! refuses commits from outside an active group.

use std::collections::HashMap;

use ottla_storage::error::{Error, Result};
use ottla_storage::log::Durability;
use ottla_storage::topic::TopicId;

use super::{Consumer, Inner};

impl Consumer {
    pub(super) fn maybe_auto_commit(&self, inner: &mut Inner) -> Result<()> {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return Ok(());
        }
        // Asked on every drain, i.e. per record when iterating: a coarse
        // clock keeps this to a few nanoseconds.
        let now = coarse_ms();
        if now.saturating_sub(inner.last_commit) < self.config.auto_commit_interval_ms {
            return Ok(());
        }
        inner.last_commit = now;
        self.commit_locked(inner, None)
    }

    pub(super) fn commit_locked(
        &self,
        inner: &mut Inner,
        explicit: Option<&[(String, u32, i64, String)]>,
    ) -> Result<()> {
        let Some(group) = &self.config.group_id else {
            return Err(Error::IllegalState("commit needs a group_id".into()));
        };
        if let (Some(o), true) = (explicit, inner.group.is_some()) {
            // A member commits only what it owns: a partition it lost may
            // already be read (and committed) by its new owner.
            for (t, p, _, _) in o {
                if !inner
                    .assignment
                    .iter()
                    .any(|a| *a.tp.topic == **t && a.tp.partition == *p)
                {
                    return Err(Error::IllegalState(format!(
                        "cannot commit {t}-{p}: not owned by this member of group {group:?} \
                         (it moved in a rebalance; commit in on_revoke)"
                    )));
                }
            }
        }
        // A deleted topic's positions are not committed: by hand it is
        // Kafka's UNKNOWN_TOPIC_OR_PARTITION; the auto-commit skips them.
        let offsets: Vec<(String, u32, i64, String)> = match explicit {
            Some(o) => {
                for (t, p, _, _) in o {
                    if let Some(a) = inner
                        .assignment
                        .iter()
                        .find(|a| *a.tp.topic == **t && a.tp.partition == *p)
                    {
                        if self.is_gone(a)? {
                            return Err(Error::UnknownTopicOrPartition {
                                topic: t.clone(),
                                partition: i64::from(*p),
                            });
                        }
                    }
                }
                o.to_vec()
            }
            None => {
                let mut v = Vec::with_capacity(inner.assignment.len());
                for a in &inner.assignment {
                    if let (Some(p), false) = (a.position, self.is_gone(a)?) {
                        v.push((a.tp.topic.to_string(), a.tp.partition, p, String::new()));
                    }
                }
                v
            }
        };
        // Each commit carries the id of the topic its position was read
        // in (`OffsetStore::commit_with_ids`).
        let ids: HashMap<String, TopicId> = inner
            .assignment
            .iter()
            .map(|a| (a.tp.topic.to_string(), a.topic_id))
            .collect();
        let offsets_store = self.store.offsets()?;
        // Skip unchanged offsets: an idle consumer should not grow the topic.
        let mut changed = Vec::with_capacity(offsets.len());
        for o in offsets {
            let same = offsets_store
                .committed(group, &o.0, o.1)?
                .is_some_and(|c| c.offset == o.2 && c.metadata == o.3);
            if !same {
                changed.push(o);
            }
        }
        if inner.group.is_none() {
            // Not a member of the group: allowed only while it has none.
            return crate::group::admin::commit_outside_group_ids(
                &self.store,
                group,
                &changed,
                &ids,
                Durability::PageCache,
            );
        }
        offsets_store.commit_with_ids(group, &changed, &ids, Durability::PageCache)
    }

    /// Commit the current positions, or the given (topic, partition, offset, metadata).
    pub fn commit(&self, offsets: Option<&[(String, u32, i64, String)]>) -> Result<()> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        inner.last_commit = coarse_ms();
        self.commit_locked(&mut inner, offsets)
    }

    pub fn committed(&self, topic: &str, partition: u32) -> Result<Option<i64>> {
        let Some(group) = &self.config.group_id else {
            return Ok(None);
        };
        Ok(self
            .store
            .offsets()?
            .committed(group, topic, partition)?
            .map(|c| c.offset))
    }
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: the kernel's last tick, read
/// from the vDSO without reading the TSC (`Instant::now()` cost ~20 ns per
/// call on the VM this was measured on), to a few milliseconds' resolution,
/// which is plenty for an auto-commit interval.
pub(super) fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; this clock id cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
