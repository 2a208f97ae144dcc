//! The controller's decisions, as pure functions of the metadata image: which
//! records to propose when a broker is fenced or unfenced, where a new
//! topic's replicas go, and which brokers missed their heartbeats.
//!
//! They decide against the image they are given; the records they return
//! carry the partition epochs they were decided against, so a decision made
//! on a stale image is refused when applied
//! ([`crate::image::ApplyError::StalePartitionEpoch`]), never applied wrong.
//! No unclean election: a new leader is always taken from the in-sync set.

use std::collections::BTreeMap;

use crate::image::MetadataImage;
use crate::records::{BrokerId, MetadataRecord, PartitionAssignment, TopicId};

/// Why a decision could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("replication factor {factor} is larger than the {available} unfenced brokers")]
    NotEnoughBrokers { factor: usize, available: usize },
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The records that fence `broker_id`: for each partition it leads, a new
/// leader from the rest of the in-sync set (replica order, unfenced brokers
/// only), the leader epoch bumped; it leaves every in-sync set (except where
/// it is the last member: Kafka keeps it there, leaderless, so that it can
/// lead again without an unclean election); then the fence itself.
pub fn on_broker_fenced(
    image: &MetadataImage,
    broker_id: BrokerId,
) -> Result<Vec<MetadataRecord>, DecideError> {
    let broker = image
        .brokers
        .get(&broker_id)
        .ok_or(DecideError::UnknownBroker(broker_id))?;
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (&partition, p) in &topic.partitions {
            let leads = p.leader == Some(broker_id);
            let in_isr = p.isr.contains(&broker_id);
            if !leads && !in_isr {
                continue;
            }
            let mut isr: Vec<BrokerId> =
                p.isr.iter().copied().filter(|b| *b != broker_id).collect();
            if isr.is_empty() {
                isr = p.isr.clone();
            }
            let leader = if leads {
                p.replicas.iter().copied().find(|r| {
                    *r != broker_id
                        && isr.contains(r)
                        && image.brokers.get(r).is_some_and(|b| !b.fenced)
                })
            } else {
                p.leader
            };
            let leader_change = (leader != p.leader).then_some(leader);
            let isr_change = (isr != p.isr).then_some(isr);
            if leader_change.is_none() && isr_change.is_none() {
                continue;
            }
            records.push(MetadataRecord::PartitionChange {
                topic_id: topic.topic_id,
                partition,
                partition_epoch: p.partition_epoch,
                leader: leader_change,
                isr: isr_change,
            });
        }
    }
    records.push(MetadataRecord::FenceBroker {
        broker_id,
        broker_epoch: broker.broker_epoch,
    });
    Ok(records)
}

/// The records that unfence `broker_id`, and elect it leader of the
/// partitions that have none and keep it in their in-sync set.
pub fn on_broker_unfenced(
    image: &MetadataImage,
    broker_id: BrokerId,
) -> Result<Vec<MetadataRecord>, DecideError> {
    let broker = image
        .brokers
        .get(&broker_id)
        .ok_or(DecideError::UnknownBroker(broker_id))?;
    let mut records = vec![MetadataRecord::UnfenceBroker {
        broker_id,
        broker_epoch: broker.broker_epoch,
    }];
    for topic in image.topics.values() {
        for (&partition, p) in &topic.partitions {
            if p.leader.is_none() && p.isr.contains(&broker_id) {
                records.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition,
                    partition_epoch: p.partition_epoch,
                    leader: Some(Some(broker_id)),
                    isr: None,
                });
            }
        }
    }
    Ok(records)
}

/// Replica lists for a new topic: `partitions` partitions of
/// `replication_factor` replicas each, over the unfenced brokers in id
/// order, round robin (partition `i` starts at broker `i`, so leaders
/// spread); every replica starts in sync, the first one leads.
pub fn assign_replicas(
    image: &MetadataImage,
    partitions: i32,
    replication_factor: usize,
) -> Result<Vec<PartitionAssignment>, DecideError> {
    if partitions <= 0 || replication_factor == 0 {
        return Err(DecideError::Invalid(format!(
            "{partitions} partitions of {replication_factor} replicas"
        )));
    }
    let live: Vec<BrokerId> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| b.broker_id)
        .collect();
    if live.len() < replication_factor {
        return Err(DecideError::NotEnoughBrokers {
            factor: replication_factor,
            available: live.len(),
        });
    }
    Ok((0..partitions)
        .map(|partition| {
            // `partitions > 0`, so the index is non-negative.
            let start = partition.unsigned_abs() as usize;
            let replicas: Vec<BrokerId> = (0..replication_factor)
                .map(|k| live[(start + k) % live.len()])
                .collect();
            PartitionAssignment {
                partition,
                isr: replicas.clone(),
                leader: replicas.first().copied(),
                replicas,
            }
        })
        .collect())
}

/// The records that grow topic `topic_id` to `count` partitions (Kafka's
/// CreatePartitions): the new ones placed as [`assign_replicas`] would
/// place them in a topic of `count` partitions, with the replication
/// factor of its first partition.
pub fn add_partitions(
    image: &MetadataImage,
    topic_id: TopicId,
    count: i32,
) -> Result<Vec<MetadataRecord>, DecideError> {
    let topic = image
        .topics
        .get(&topic_id)
        .ok_or_else(|| DecideError::Invalid(format!("unknown topic {topic_id:?}")))?;
    let existing = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    if count <= existing {
        return Err(DecideError::Invalid(format!(
            "the topic has {existing} partitions; {count} would not add any"
        )));
    }
    let factor = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.replicas.len());
    let placed = assign_replicas(image, count, factor)?;
    Ok(vec![MetadataRecord::CreatePartitions {
        topic_id,
        partitions: placed
            .into_iter()
            .filter(|p| p.partition >= existing)
            .collect(),
    }])
}

/// The controller's view of broker liveness: the time of each broker's last
/// heartbeat, in milliseconds of a monotonic clock. Not replicated: a new
/// active controller starts it afresh ([`HeartbeatTracker::reset`]), giving
/// every broker a full session timeout (as KRaft does).
#[derive(Debug, Default, Clone)]
pub struct HeartbeatTracker {
    last: BTreeMap<BrokerId, u64>,
}

impl HeartbeatTracker {
    /// Every registered broker counts as heard from at `now_ms`.
    pub fn reset(&mut self, image: &MetadataImage, now_ms: u64) {
        self.last = image.brokers.keys().map(|b| (*b, now_ms)).collect();
    }

    pub fn heartbeat(&mut self, broker_id: BrokerId, now_ms: u64) {
        let t = self.last.entry(broker_id).or_insert(now_ms);
        *t = (*t).max(now_ms);
    }

    /// The unfenced brokers not heard from for longer than `session_timeout_ms`:
    /// the ones to fence. A broker never heard from counts from `since_ms`.
    pub fn expired(
        &self,
        image: &MetadataImage,
        now_ms: u64,
        since_ms: u64,
        session_timeout_ms: u64,
    ) -> Vec<BrokerId> {
        image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let last = self.last.get(&b.broker_id).copied().unwrap_or(since_ms);
                now_ms.saturating_sub(last) > session_timeout_ms
            })
            .map(|b| b.broker_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ApplyError;
    use crate::records::{Endpoint, Proposal, TopicId};

    fn register(id: BrokerId) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation_id: [id as u8; 16],
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "h".into(),
                port: 1,
                security_protocol: "PLAINTEXT".into(),
            }],
            rack: None,
        }
    }

    /// Three unfenced brokers and topic "t" with 3 partitions, RF 3.
    fn cluster() -> (MetadataImage, TopicId) {
        let mut img = MetadataImage::default();
        let mut off = 0;
        for id in [1, 2, 3] {
            off += 1;
            img.apply(&register(id), off).unwrap();
            let recs = on_broker_unfenced(&img, id).unwrap();
            off += 1;
            img.apply_proposal(&Proposal { records: recs }, off, 1)
                .unwrap();
        }
        let parts = assign_replicas(&img, 3, 3).unwrap();
        let id = TopicId([5; 16]);
        off += 1;
        img.apply(
            &MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: id,
                partitions: parts,
                configs: BTreeMap::new(),
            },
            off,
        )
        .unwrap();
        (img, id)
    }

    #[test]
    fn partitions_are_added_numbered_on_and_placed() {
        let (mut img, id) = cluster();
        assert!(add_partitions(&img, id, 3).is_err());
        assert!(add_partitions(&img, TopicId([9; 16]), 5).is_err());
        let recs = add_partitions(&img, id, 5).unwrap();
        img.apply_proposal(
            &Proposal {
                records: recs.clone(),
            },
            50,
            1,
        )
        .unwrap();
        let parts = &img.topics[&id].partitions;
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[&3].replicas.len(), 3);
        assert_eq!(parts[&4].leader, Some(parts[&4].replicas[0]));
        // The same records again: numbered from 5 now, refused.
        assert!(img
            .apply_proposal(&Proposal { records: recs }, 51, 1)
            .is_err());
        assert_eq!(img.topics[&id].partitions.len(), 5);
    }

    #[test]
    fn assignment_spreads_leaders() {
        let (img, id) = cluster();
        let leaders: Vec<_> = img.topics[&id]
            .partitions
            .values()
            .map(|p| p.leader.unwrap())
            .collect();
        assert_eq!(leaders, vec![1, 2, 3]);
        assert_eq!(
            assign_replicas(&img, 1, 4),
            Err(DecideError::NotEnoughBrokers {
                factor: 4,
                available: 3
            })
        );
    }

    #[test]
    fn fencing_moves_leadership_to_isr_and_bumps_epoch() {
        let (mut img, id) = cluster();
        let recs = on_broker_fenced(&img, 1).unwrap();
        img.apply_proposal(&Proposal { records: recs }, 100, 2)
            .unwrap();
        assert!(img.brokers[&1].fenced);
        for p in img.topics[&id].partitions.values() {
            assert_ne!(p.leader, Some(1));
            assert!(p.leader.is_some());
            assert!(!p.isr.contains(&1));
        }
        let p0 = img.partition(id, 0).unwrap();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.partition_epoch),
            (Some(2), 1, 1)
        );
        // Partition 1 (led by 2) only shrank its ISR: leader epoch unchanged.
        let p1 = img.partition(id, 1).unwrap();
        assert_eq!(
            (p1.leader, p1.leader_epoch, p1.partition_epoch),
            (Some(2), 0, 1)
        );
    }

    #[test]
    fn no_unclean_election_and_recovery_on_unfence() {
        let (mut img, id) = cluster();
        let mut off = 100;
        for b in [1, 2, 3] {
            off += 1;
            let recs = on_broker_fenced(&img, b).unwrap();
            img.apply_proposal(&Proposal { records: recs }, off, 2)
                .unwrap();
        }
        // Everyone fenced: no leader, and the last in-sync replica stays.
        for p in img.topics[&id].partitions.values() {
            assert_eq!(p.leader, None);
            assert_eq!(p.isr, vec![3]);
        }
        // Broker 1 comes back: it is not in sync, so it leads nothing.
        off += 1;
        let recs = on_broker_unfenced(&img, 1).unwrap();
        assert_eq!(recs.len(), 1);
        img.apply_proposal(&Proposal { records: recs }, off, 2)
            .unwrap();
        // Broker 3 comes back: it was the last in sync, it leads everything.
        off += 1;
        let recs = on_broker_unfenced(&img, 3).unwrap();
        img.apply_proposal(&Proposal { records: recs }, off, 2)
            .unwrap();
        for p in img.topics[&id].partitions.values() {
            assert_eq!(p.leader, Some(3));
        }
    }

    #[test]
    fn stale_decision_is_refused() {
        let (mut img, _) = cluster();
        let stale = on_broker_fenced(&img, 1).unwrap();
        let fresh = on_broker_fenced(&img, 2).unwrap();
        img.apply_proposal(&Proposal { records: fresh }, 100, 2)
            .unwrap();
        let before = img.clone();
        let r = img.apply_proposal(&Proposal { records: stale }, 101, 2);
        assert!(matches!(r, Err(ApplyError::StalePartitionEpoch { .. })));
        assert_eq!(img.topics, before.topics);
    }

    #[test]
    fn heartbeat_expiry() {
        let (img, _) = cluster();
        let mut hb = HeartbeatTracker::default();
        hb.reset(&img, 1_000);
        hb.heartbeat(1, 5_000);
        hb.heartbeat(2, 3_000);
        // Broker 3 last heard at reset (1000); timeout 3000.
        assert_eq!(hb.expired(&img, 5_500, 0, 3_000), vec![3]);
        assert_eq!(hb.expired(&img, 6_500, 0, 3_000), vec![2, 3]);
        // Heartbeats never go back in time.
        hb.heartbeat(1, 10);
        assert_eq!(hb.expired(&img, 8_000, 0, 3_000), vec![2, 3]);
    }
}
