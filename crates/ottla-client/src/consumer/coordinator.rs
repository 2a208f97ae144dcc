//! Group membership (Kafka's `ConsumerCoordinator`): joining and leaving
//! the group, and the rebalance step run on the polling thread, which
//! reports lost partitions, publishes subscription changes, gives up
//! partitions assigned elsewhere and takes newly assigned ones.
//!
//! Invariants: while a member, the assignment holds exactly the partitions
//! whose ownership byte this member has locked. A partition is given up in
//! this order: the listener's `on_partitions_revoked`, then the
//! auto-commit, then the unlock, so its next owner (which can only start
//! after the unlock) resumes from the commit. The listener runs with no lock
//! held, and state is re-checked after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::group::member::MemberSession;
use crate::group::GroupDir;
use ottla_storage::error::Result;

use super::subscription::{Assigned, Subscription};
use super::{Consumer, Inner, TopicPartition};

/// Told about partitions a group member gains and loses, on the thread that
/// polls (or subscribes, unsubscribes, closes), with no engine lock held, so
/// it may call back into the consumer (to commit, seek or read positions).
pub trait RebalanceListener: Send + Sync {
    /// About to give these up: the last moment to commit their positions.
    fn on_partitions_revoked(&self, partitions: &[TopicPartition]);
    /// Now owned; reading starts at the committed offset (or the reset).
    fn on_partitions_assigned(&self, partitions: &[TopicPartition]);
    /// Already gone (the member missed its session timeout): committing
    /// them is no longer possible.
    fn on_partitions_lost(&self, partitions: &[TopicPartition]);
}

/// A consumer's membership of its group.
pub(super) struct Membership {
    /// `None` after a session timeout until the next poll rejoins.
    pub(super) session: Option<MemberSession>,
    pub(super) listener: Option<Arc<dyn RebalanceListener>>,
    /// The beacon's group word when the state file was last read.
    pub(super) seen: u64,
    pub(super) generation: i64,
    pub(super) target: Vec<(String, u32)>,
    /// Assigned partitions whose previous owner has not let go yet.
    pub(super) pending: bool,
    pub(super) retry_at: Instant,
    /// Released by the watchdog; reported by the next poll.
    pub(super) lost: Vec<TopicPartition>,
}

/// How often a member with pending partitions retries their locks, as a
/// fallback: the releasing member also wakes everyone.
const RETRY: Duration = Duration::from_millis(50);

impl Consumer {
    /// Subscribe to topics; with a `group_id`, join the group.
    pub fn subscribe(&self, topics: &[String]) -> Result<()> {
        self.subscribe_with(Subscription::Topics(topics.to_vec()), None)
    }

    /// Subscribe (replacing any subscription or assignment). Without a
    /// group, every partition of the subscribed topics is read. With one,
    /// the consumer joins the group and reads the partitions it is given;
    /// the first of them are taken here, the rest as polling goes on.
    pub fn subscribe_with(
        &self,
        subscription: Subscription,
        listener: Option<Arc<dyn RebalanceListener>>,
    ) -> Result<()> {
        if let Subscription::Topics(topics) = &subscription {
            for t in topics {
                ottla_storage::topic::validate_topic_name(t)?;
            }
        }
        let was_member = {
            let inner = self.inner.lock();
            Self::check_open(&inner)?;
            inner.group.is_some()
        };
        if was_member {
            // Leaving first gives the old listener its revocations.
            self.unsubscribe()?;
        }
        let Some(group) = &self.config.group_id else {
            let mut inner = self.inner.lock();
            inner.subscription = Some(subscription);
            inner.meta_gen = u64::MAX;
            return self.refresh_subscription(&mut inner);
        };
        let dir = self.group_dir(group)?;
        let meta_gen = self.store.beacon().metadata_gen();
        let topics = self.resolve_topics(&subscription)?;
        let session = MemberSession::join(
            dir.clone(),
            &self.config.client_id,
            topics,
            self.config.assignor,
        )?;
        {
            let mut inner = self.inner.lock();
            Self::check_open(&inner)?;
            inner.subscription = Some(subscription);
            inner.meta_gen = meta_gen;
            // A manual assignment does not carry over: a member reads only
            // partitions whose ownership byte it holds.
            inner.assignment.clear();
            inner.group = Some(Membership {
                session: Some(session),
                listener,
                seen: u64::MAX,
                generation: -1,
                target: Vec::new(),
                pending: false,
                retry_at: Instant::now(),
                lost: Vec::new(),
            });
        }
        self.ensure_watchdog(dir);
        self.group_step()
    }

    /// Leave the group (revoking, with an auto-commit first) or drop the
    /// subscription.
    pub fn unsubscribe(&self) -> Result<()> {
        let committed = self.give_up_all(true);
        let mut inner = self.inner.lock();
        inner.subscription = None;
        inner.assignment.clear();
        let session = inner.group.take().and_then(|m| m.session);
        drop(inner);
        let left = session.map_or(Ok(()), MemberSession::leave);
        committed.and(left)
    }

    /// Revoke every owned partition of a group member: the listener first,
    /// then the auto-commit, then the locks. Returns the commit's result.
    pub(super) fn give_up_all(&self, autocommit: bool) -> Result<()> {
        let (owned, listener) = {
            let inner = self.inner.lock();
            match &inner.group {
                Some(m) if !inner.closed => (
                    inner
                        .assignment
                        .iter()
                        .map(|a| a.tp.clone())
                        .collect::<Vec<_>>(),
                    m.listener.clone(),
                ),
                _ => return Ok(()),
            }
        };
        if let (false, Some(l)) = (owned.is_empty(), &listener) {
            l.on_partitions_revoked(&owned);
        }
        let mut inner = self.inner.lock();
        self.finish_revoke(&mut inner, &owned, autocommit)
    }

    /// The member id in the group, while a member.
    pub fn member_id(&self) -> Option<String> {
        let inner = self.inner.lock();
        let m = inner.group.as_ref()?;
        m.session.as_ref().map(|s| s.member_id().to_string())
    }

    fn group_dir(&self, group: &str) -> Result<Arc<GroupDir>> {
        let mut d = self.group_dir.lock();
        if let Some(dir) = &*d {
            return Ok(dir.clone());
        }
        let dir = Arc::new(GroupDir::open(&self.store, group)?);
        *d = Some(dir.clone());
        Ok(dir)
    }

    /// Cheap check, on every drain: is there group work to do?
    pub(super) fn group_needs_attention(&self, inner: &Inner) -> bool {
        let Some(m) = &inner.group else { return false };
        let beacon = self.store.beacon();
        m.session.is_none()
            || !m.lost.is_empty()
            || m.seen != beacon.groups_gen()
            || inner.meta_gen != beacon.metadata_gen()
            || (m.pending && Instant::now() >= m.retry_at)
    }

    /// Bring ownership in line with the group: report partitions lost to a
    /// session timeout and rejoin, publish subscription changes, give up
    /// partitions assigned elsewhere (listener, auto-commit, unlock), and
    /// take newly assigned ones whose previous owner has let go.
    ///
    /// The listener runs with no lock held; state is re-checked after it.
    pub(super) fn group_step(&self) -> Result<()> {
        let beacon = self.store.beacon().clone();
        let mut inner = self.inner.lock();
        let Some(m) = inner.group.as_mut() else {
            return Ok(());
        };
        let listener = m.listener.clone();
        if !m.lost.is_empty() {
            let lost = std::mem::take(&mut m.lost);
            drop(inner);
            if let Some(l) = &listener {
                l.on_partitions_lost(&lost);
            }
            inner = self.inner.lock();
        }
        if inner.closed {
            return Ok(());
        }
        let Some(sub) = inner.subscription.clone() else {
            return Ok(());
        };
        let meta_gen = beacon.metadata_gen();
        let meta_changed = inner.meta_gen != meta_gen;
        let Some(m) = inner.group.as_mut() else {
            return Ok(());
        };
        if m.session.is_none() {
            // The watchdog gave everything up: join again as a new member.
            let Some(dir) = self.group_dir.lock().clone() else {
                return Ok(());
            };
            let topics = self.resolve_topics(&sub)?;
            m.session = Some(MemberSession::join(
                dir,
                &self.config.client_id,
                topics,
                self.config.assignor,
            )?);
            m.seen = u64::MAX;
            m.generation = -1;
            m.target.clear();
            inner.meta_gen = meta_gen;
        } else if inner.meta_gen != meta_gen {
            // Topics created or grown: re-resolve and let the group reassign
            // (the update writes nothing if nothing changed).
            inner.meta_gen = meta_gen;
            let topics = self.resolve_topics(&sub)?;
            if let Some(s) = inner.group.as_ref().and_then(|m| m.session.as_ref()) {
                s.set_topics(topics)?;
            }
        }
        let Some(m) = inner.group.as_mut() else {
            return Ok(());
        };
        let Some(session) = m.session.as_ref() else {
            return Ok(());
        };
        let mut revoke = Vec::new();
        let word = beacon.groups_gen();
        if word != m.seen {
            // Read the word before the file: a change after this read moves
            // the word again and is seen next time.
            m.seen = word;
            let st = session.dir().read_state()?;
            if st.member(session.member_id()).is_none() {
                // No longer listed (the state was cleared or damaged): the
                // partitions are not ours to keep. Rejoin next poll.
                let owned: Vec<TopicPartition> = inner.assignment.drain(..).map(|a| a.tp).collect();
                if let Some(m) = inner.group.as_mut() {
                    m.session = None;
                    m.lost.extend(owned);
                }
                return Ok(());
            }
            let target = st.assigned_to(session.member_id()).to_vec();
            let eager_new_generation =
                !self.config.assignor.is_cooperative() && st.generation != m.generation;
            m.generation = st.generation;
            revoke = inner
                .assignment
                .iter()
                .filter(|a| {
                    eager_new_generation
                        || !target
                            .iter()
                            .any(|(t, p)| **t == *a.tp.topic && *p == a.tp.partition)
                })
                .map(|a| a.tp.clone())
                .collect();
            if let Some(m) = inner.group.as_mut() {
                m.target = target;
            }
        }
        if meta_changed {
            // Partitions of a topic deleted (and perhaps created again,
            // the same partitions assigned again) are revoked: a
            // partition of the new topic is taken afresh, from the group's
            // commits of the new topic or the reset.
            let mut gone = Vec::new();
            for a in &inner.assignment {
                if !revoke.contains(&a.tp) && self.is_gone(a)? {
                    gone.push(a.tp.clone());
                }
            }
            revoke.extend(gone);
        }
        if !revoke.is_empty() {
            drop(inner);
            if let Some(l) = &listener {
                l.on_partitions_revoked(&revoke);
            }
            inner = self.inner.lock();
            self.finish_revoke(&mut inner, &revoke, true)?;
        }
        let acquired = self.acquire_pending(&mut inner)?;
        drop(inner);
        if let (false, Some(l)) = (acquired.is_empty(), &listener) {
            l.on_partitions_assigned(&acquired);
        }
        Ok(())
    }

    /// Lock the ownership byte of every assigned partition not yet owned;
    /// those whose previous owner still holds them stay pending.
    fn acquire_pending(&self, inner: &mut Inner) -> Result<Vec<TopicPartition>> {
        let Inner {
            group, assignment, ..
        } = inner;
        let Some(m) = group.as_mut() else {
            return Ok(Vec::new());
        };
        let Some(session) = m.session.as_mut() else {
            return Ok(Vec::new());
        };
        let mut acquired = Vec::new();
        let mut waiting = false;
        for (t, p) in &m.target {
            if assignment
                .iter()
                .any(|a| *a.tp.topic == **t && a.tp.partition == *p)
            {
                continue;
            }
            let topic = match self.store.topic(t)? {
                Some(topic) if *p < topic.partitions => topic,
                // Assigned from newer metadata than this process has seen,
                // or deleted: look again later.
                _ => {
                    waiting = true;
                    continue;
                }
            };
            if !session.try_acquire(t, *p)? {
                waiting = true;
                continue;
            }
            let log = match self.store.partition(&topic, *p) {
                Ok(log) => log,
                Err(e) => {
                    session.release(t, *p)?;
                    return Err(e);
                }
            };
            let tp = TopicPartition::new(topic.name.clone(), *p);
            acquired.push(tp.clone());
            assignment.push(Assigned {
                tp,
                topic_id: topic.id,
                log,
                position: None,
                paused: false,
                cursor: None,
                fetch: None,
                producers: None,
            });
        }
        m.pending = waiting;
        m.retry_at = Instant::now() + RETRY;
        Ok(acquired)
    }

    /// Stop reading `partitions`: commit their positions (if auto-commit is
    /// on and `autocommit`), forget them, then unlock their ownership bytes
    /// and wake the members waiting for them. The commit comes first so the
    /// next owner, which can only start after the unlock, resumes from it.
    fn finish_revoke(
        &self,
        inner: &mut Inner,
        partitions: &[TopicPartition],
        autocommit: bool,
    ) -> Result<()> {
        // Not the positions in a deleted topic: Kafka refuses commits to
        // a topic that does not exist, and one created again is new.
        let still: Vec<(String, u32, i64, String)> = inner
            .assignment
            .iter()
            .filter(|a| partitions.contains(&a.tp) && matches!(self.is_gone(a), Ok(false)))
            .filter_map(|a| {
                a.position
                    .map(|p| (a.tp.topic.to_string(), a.tp.partition, p, String::new()))
            })
            .collect();
        let committed = if autocommit && self.config.enable_auto_commit && !still.is_empty() {
            self.commit_locked(inner, Some(&still))
        } else {
            Ok(())
        };
        let mut released = Vec::new();
        inner.assignment.retain(|a| {
            if partitions.contains(&a.tp) {
                released.push(a.tp.clone());
                false
            } else {
                true
            }
        });
        if let Some(session) = inner.group.as_mut().and_then(|m| m.session.as_mut()) {
            for tp in &released {
                session.release(&tp.topic, tp.partition)?;
            }
        }
        if !released.is_empty() {
            self.store.beacon().bump_groups();
        }
        committed
    }
}
