//! What a consumer reads (Kafka's `SubscriptionState`): the subscription
//! (topic names or a pattern) or a manual assignment, and for each assigned
//! partition its position, pause flag and fetch state.
//!
//! Invariants: a position is `None` until resolved (from the group's
//! committed offset, else `auto_offset_reset`), and moving it by hand
//! (seek, reset) drops the partition's fetch and read cursor, so nothing
//! fetched for the old position is handed out; a partition that stays
//! assigned across a reassignment keeps its position and fetch. Without a group, the assignment follows the
//! subscription as topics appear and grow; with one, it is the
//! coordinator's (the partitions this member owns).

use ottla_storage::log::producer_state::ProducerStateManager;
use std::collections::HashMap;
use std::sync::Arc;

use ottla_storage::error::{Error, Result};
use ottla_storage::log::{PartitionLog, ReadCursor};
use ottla_storage::store::Topic;
use ottla_storage::topic::TopicId;

use super::fetcher::Fetch;
use super::{Consumer, Inner, OffsetReset, TopicPartition};

/// What a consumer subscribes to.
#[derive(Clone, Debug)]
pub enum Subscription {
    Topics(Vec<String>),
    /// Every non-internal topic whose whole name matches, now or later.
    Pattern(regex::Regex),
}

impl Subscription {
    /// A pattern subscription; Kafka matches the whole topic name.
    pub fn pattern(pattern: &str) -> Result<Subscription> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Subscription::Pattern)
            .map_err(|e| Error::InvalidConfig(format!("invalid topic pattern {pattern:?}: {e}")))
    }
}

pub(super) struct Assigned {
    pub(super) tp: TopicPartition,
    /// The id of the topic this partition was assigned in: a topic created
    /// again under the name is another topic (`Consumer::is_gone`).
    pub(super) topic_id: TopicId,
    pub(super) log: Arc<PartitionLog>,
    /// Offset of the next record to hand out; `None` until resolved from the
    /// committed offset or `auto_offset_reset`.
    pub(super) position: Option<i64>,
    pub(super) paused: bool,
    pub(super) cursor: Option<ReadCursor>,
    pub(super) fetch: Option<Fetch>,
    /// The partition's producers, for a read_committed consumer (its last
    /// stable offset and aborted transactions), caught up before each read.
    pub(super) producers: Option<ProducerStateManager>,
}

impl Consumer {
    /// Subscribed topic names (for a pattern, the topics matching now).
    pub fn subscription(&self) -> Vec<String> {
        let sub = self.inner.lock().subscription.clone();
        match sub {
            Some(Subscription::Topics(t)) => t,
            Some(s) => self.resolve_topics(&s).unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Topic names a subscription stands for now. Named topics are created
    /// if `auto_create_topics` allows, and kept even while they do not
    /// exist (the group picks them up once they do).
    pub(super) fn resolve_topics(&self, sub: &Subscription) -> Result<Vec<String>> {
        match sub {
            Subscription::Topics(topics) => {
                for t in topics {
                    match self.store.topic_or_create(
                        t,
                        self.config.auto_create_topics,
                        self.config.num_partitions,
                    ) {
                        Ok(_) | Err(Error::UnknownTopicOrPartition { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(topics.clone())
            }
            Subscription::Pattern(re) => Ok(self
                .store
                .list_topics(false)?
                .into_iter()
                .filter(|t| re.is_match(t))
                .collect()),
        }
    }

    /// Manual assignment (no group membership), replacing any previous one.
    pub fn assign(&self, partitions: &[(String, u32)]) -> Result<()> {
        if self.inner.lock().group.is_some() {
            self.unsubscribe()?;
        }
        let mut assigned = Vec::with_capacity(partitions.len());
        let topics = partitions
            .iter()
            .map(|(t, p)| {
                let topic = self.store.topic_or_create(
                    t,
                    self.config.auto_create_topics,
                    self.config.num_partitions,
                )?;
                Ok((topic, *p))
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<(&Topic, u32)> = topics.iter().map(|(t, p)| (t, *p)).collect();
        self.store.open_many(&refs);
        for (topic, p) in &topics {
            let log = self.store.partition(topic, *p)?;
            assigned.push(Assigned {
                tp: TopicPartition::new(topic.name.clone(), *p),
                topic_id: topic.id,
                log,
                position: None,
                paused: false,
                cursor: None,
                fetch: None,
                producers: None,
            });
        }
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        inner.subscription = None;
        inner.live_gen = self.store.beacon().metadata_gen();
        // Keep positions of partitions that stay assigned (the same
        // partition of the same topic: not one of a topic created again).
        let old: HashMap<TopicPartition, Assigned> = inner
            .assignment
            .drain(..)
            .map(|a| (a.tp.clone(), a))
            .collect();
        let mut old = old;
        inner.assignment = assigned
            .into_iter()
            .map(|a| match old.remove(&a.tp) {
                Some(o) if o.topic_id == a.topic_id && !o.log.is_deleted() => o,
                _ => a,
            })
            .collect();
        Ok(())
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner
            .lock()
            .assignment
            .iter()
            .map(|a| a.tp.clone())
            .collect()
    }

    /// Without a group: follow topic creation, pattern matches and
    /// partition growth of the subscription. (A group member does this in
    /// `group_step`, through the group.)
    pub(super) fn refresh_subscription(&self, inner: &mut Inner) -> Result<()> {
        if inner.group.is_some() {
            return Ok(());
        }
        let Some(sub) = &inner.subscription else {
            return Ok(());
        };
        let gen = self.store.beacon().metadata_gen();
        if inner.meta_gen == gen {
            return Ok(());
        }
        let names = self.resolve_topics(sub)?;
        let mut want = Vec::new();
        for t in &names {
            let topic = match self.store.topic_or_create(
                t,
                self.config.auto_create_topics,
                self.config.num_partitions,
            ) {
                Ok(topic) => topic,
                Err(Error::UnknownTopicOrPartition { .. }) => continue,
                Err(e) => return Err(e),
            };
            for p in 0..topic.partitions {
                want.push((topic.clone(), p));
            }
        }
        let mut old: HashMap<TopicPartition, Assigned> = inner
            .assignment
            .drain(..)
            .map(|a| (a.tp.clone(), a))
            .collect();
        let mut next = Vec::with_capacity(want.len());
        let new_ones: Vec<(&Topic, u32)> = want
            .iter()
            .filter(|(t, p)| !old.contains_key(&TopicPartition::new(t.name.clone(), *p)))
            .map(|(t, p)| (t, *p))
            .collect();
        self.store.open_many(&new_ones);
        for (topic, p) in want {
            let key = TopicPartition::new(topic.name.clone(), p);
            match old.remove(&key) {
                // A topic deleted and created again is a new topic: its
                // partitions start over (committed offset, else reset).
                Some(a) if !a.log.is_deleted() && a.topic_id == topic.id => next.push(a),
                _ => next.push(Assigned {
                    log: self.store.partition(&topic, p)?,
                    tp: key,
                    topic_id: topic.id,
                    position: None,
                    paused: false,
                    cursor: None,
                    fetch: None,
                    producers: None,
                }),
            }
        }
        inner.assignment = next;
        inner.meta_gen = gen;
        Ok(())
    }

    /// Whether an assigned partition's topic is gone: deleted (its log
    /// flagged, or no metadata left), or deleted and created again (another
    /// id), or shrunk below it by a delete and create.
    pub(super) fn is_gone(&self, a: &Assigned) -> Result<bool> {
        if a.log.is_deleted() {
            return Ok(true);
        }
        Ok(!matches!(
            self.store.topic(&a.tp.topic)?,
            Some(t) if t.id == a.topic_id && a.tp.partition < t.partitions
        ))
    }

    /// Whether `check_assigned_live` has nothing to do.
    pub(super) fn assignment_checked(&self, inner: &Inner) -> bool {
        inner.group.is_some()
            || inner.subscription.is_some()
            || inner.live_gen == self.store.beacon().metadata_gen()
    }

    /// A manual assignment, after topics changed: partitions whose topic
    /// was deleted (and perhaps created again) are dropped from the
    /// assignment and reported, once, as `UnknownTopicOrPartition` (naming
    /// the first of them). A position in a deleted topic means nothing in
    /// one created again under its name; the caller assigns again to read
    /// that one. (Kafka's Java consumer only logs a warning and keeps
    /// fetching, silently; librdkafka reports the error to the
    /// application, as this does.)
    pub(super) fn check_assigned_live(&self, inner: &mut Inner) -> Result<()> {
        if self.assignment_checked(inner) {
            return Ok(());
        }
        let gen = self.store.beacon().metadata_gen();
        let mut gone = Vec::new();
        for a in &inner.assignment {
            if self.is_gone(a)? {
                gone.push(a.tp.clone());
            }
        }
        inner.live_gen = gen;
        let Some(first) = gone.first() else {
            return Ok(());
        };
        inner.assignment.retain(|a| !gone.contains(&a.tp));
        inner.next_rr = 0;
        Err(Error::UnknownTopicOrPartition {
            topic: first.topic.to_string(),
            partition: i64::from(first.partition),
        })
    }

    /// Whether `refresh_subscription` has nothing to do.
    pub(super) fn subscription_current(&self, inner: &Inner) -> bool {
        inner.group.is_some()
            || inner.subscription.is_none()
            || inner.meta_gen == self.store.beacon().metadata_gen()
    }

    fn find<'a>(inner: &'a mut Inner, tp: (&str, u32)) -> Result<&'a mut Assigned> {
        inner
            .assignment
            .iter_mut()
            .find(|a| &*a.tp.topic == tp.0 && a.tp.partition == tp.1)
            .ok_or_else(|| {
                Error::IllegalState(format!(
                    "{}-{} is not assigned to this consumer",
                    tp.0, tp.1
                ))
            })
    }

    /// Resolve a partition's starting position: the group's committed offset,
    /// else `auto_offset_reset`.
    pub(super) fn resolve(&self, a: &mut Assigned) -> Result<i64> {
        if let Some(p) = a.position {
            return Ok(p);
        }
        if let Some(group) = &self.config.group_id {
            if let Some(c) = self
                .store
                .offsets()?
                .committed(group, &a.tp.topic, a.tp.partition)?
            {
                let (start, end) = a.log.offsets()?;
                if c.offset >= start && c.offset <= end {
                    a.position = Some(c.offset);
                    return Ok(c.offset);
                }
            }
        }
        let p = self.reset_position(a, None)?;
        Ok(p)
    }

    pub(super) fn reset_position(
        &self,
        a: &mut Assigned,
        out_of_range: Option<Error>,
    ) -> Result<i64> {
        let (start, end) = a.log.offsets()?;
        let p = match self.config.auto_offset_reset {
            OffsetReset::Earliest => start,
            // read_committed: the last stable offset (Kafka's ListOffsets
            // latest at that isolation level), so the records of a
            // transaction open now are read once it commits.
            OffsetReset::Latest if self.config.read_committed => Self::last_stable_offset(a)?,
            OffsetReset::Latest => end,
            OffsetReset::None => {
                return Err(out_of_range.unwrap_or_else(|| Error::NoOffsetForPartition {
                    topic: a.tp.topic.to_string(),
                    partition: a.tp.partition,
                }))
            }
        };
        a.position = Some(p);
        a.fetch = None;
        a.cursor = None;
        Ok(p)
    }

    pub fn position(&self, topic: &str, partition: u32) -> Result<i64> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        let a = Self::find(&mut inner, (topic, partition))?;
        self.resolve(a)
    }

    pub fn seek(&self, topic: &str, partition: u32, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::IllegalState(format!(
                "cannot seek to negative offset {offset}"
            )));
        }
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        let a = Self::find(&mut inner, (topic, partition))?;
        a.position = Some(offset);
        a.fetch = None;
        a.cursor = None;
        Ok(())
    }

    /// Seek the given partitions (all assigned if empty) to their start or end.
    pub fn seek_to(&self, partitions: &[(String, u32)], beginning: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        Self::check_open(&inner)?;
        let targets: Vec<(String, u32)> = if partitions.is_empty() {
            inner
                .assignment
                .iter()
                .map(|a| (a.tp.topic.to_string(), a.tp.partition))
                .collect()
        } else {
            partitions.to_vec()
        };
        for (t, p) in targets {
            let a = Self::find(&mut inner, (&t, p))?;
            let (start, end) = a.log.offsets()?;
            a.position = Some(if beginning {
                start
            } else if self.config.read_committed {
                Self::last_stable_offset(a)?
            } else {
                end
            });
            a.fetch = None;
            a.cursor = None;
        }
        Ok(())
    }

    pub fn set_paused(&self, partitions: &[(String, u32)], paused: bool) -> Result<()> {
        let mut inner = self.inner.lock();
        for (t, p) in partitions {
            Self::find(&mut inner, (t, *p))?.paused = paused;
        }
        Ok(())
    }

    pub fn paused(&self) -> Vec<TopicPartition> {
        self.inner
            .lock()
            .assignment
            .iter()
            .filter(|a| a.paused)
            .map(|a| a.tp.clone())
            .collect()
    }
}
