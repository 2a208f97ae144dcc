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

use crate::image::{MetadataImage, PartitionState};
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

/// Kafka's ElectLeaders election types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// The first replica leads, if it is in sync and unfenced.
    Preferred,
    /// A leaderless partition gets a leader: from the in-sync set if one
    /// is alive, else any live replica (data it does not have is lost).
    Unclean,
}

/// Why a partition's election or reassignment was not decided, each with
/// the Kafka error code it answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// ELECTION_NOT_NEEDED (84).
    #[error("leader election not needed for the partition")]
    ElectionNotNeeded,
    /// PREFERRED_LEADER_NOT_AVAILABLE (80).
    #[error("the preferred leader {0} is not in sync or not alive")]
    PreferredLeaderNotAvailable(BrokerId),
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE (83).
    #[error("no replica of the partition is alive")]
    EligibleLeadersNotAvailable,
    /// NO_REASSIGNMENT_IN_PROGRESS (85).
    #[error("no reassignment of the partition is in progress")]
    NoReassignmentInProgress,
    /// INVALID_REPLICA_ASSIGNMENT (39).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
}

impl PartitionError {
    /// Kafka's error code.
    pub fn code(&self) -> i16 {
        match self {
            PartitionError::UnknownPartition => 3,
            PartitionError::ElectionNotNeeded => 84,
            PartitionError::PreferredLeaderNotAvailable(_) => 80,
            PartitionError::EligibleLeadersNotAvailable => 83,
            PartitionError::NoReassignmentInProgress => 85,
            PartitionError::InvalidReplicaAssignment(_) => 39,
        }
    }
}

fn live(image: &MetadataImage, b: BrokerId) -> bool {
    image.brokers.get(&b).is_some_and(|r| !r.fenced)
}

/// The record that elects a leader of one partition (Kafka's ElectLeaders).
/// Preferred: the first replica, if it is in sync and unfenced and does not
/// lead already. Unclean: only for a partition without a leader; an
/// unfenced in-sync replica if there is one, else the first unfenced
/// replica, which becomes the whole in-sync set.
pub fn elect_leader(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: i32,
    kind: ElectionType,
) -> Result<MetadataRecord, PartitionError> {
    let p = image
        .partition(topic_id, partition)
        .ok_or(PartitionError::UnknownPartition)?;
    let change = |leader: BrokerId, isr: Option<Vec<BrokerId>>| MetadataRecord::PartitionChange {
        topic_id,
        partition,
        partition_epoch: p.partition_epoch,
        leader: Some(Some(leader)),
        isr,
    };
    match kind {
        ElectionType::Preferred => {
            let preferred = *p.replicas.first().ok_or(PartitionError::UnknownPartition)?;
            if p.leader == Some(preferred) {
                return Err(PartitionError::ElectionNotNeeded);
            }
            if !p.isr.contains(&preferred) || !live(image, preferred) {
                return Err(PartitionError::PreferredLeaderNotAvailable(preferred));
            }
            Ok(change(preferred, None))
        }
        ElectionType::Unclean => {
            if p.leader.is_some() {
                return Err(PartitionError::ElectionNotNeeded);
            }
            if let Some(&b) = p
                .replicas
                .iter()
                .find(|b| p.isr.contains(b) && live(image, **b))
            {
                return Ok(change(b, None));
            }
            match p.replicas.iter().find(|b| live(image, **b)) {
                Some(&b) => Ok(change(b, Some(vec![b]))),
                None => Err(PartitionError::EligibleLeadersNotAvailable),
            }
        }
    }
}

/// The record that starts (`Some(target)`) or cancels (`None`) the
/// reassignment of one partition (KIP-455), or nothing when there is
/// nothing to do (the target is the current replica set). A target is
/// registered, distinct brokers. Starting lists the target replicas first,
/// then the original ones not in it; the target ones not in the original
/// set are `adding`, the original ones not in the target `removing`. A
/// reassignment already in progress is replaced, its original set kept. A
/// cancel reverts to the original replicas. Either completes at once when
/// it can ([`complete_reassignment`]).
pub fn reassign(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: i32,
    target: Option<&[BrokerId]>,
) -> Result<Option<MetadataRecord>, PartitionError> {
    let p = image
        .partition(topic_id, partition)
        .ok_or(PartitionError::UnknownPartition)?;
    let original = p.original_replicas();
    let (replicas, adding, removing) = match target {
        None => {
            if !p.reassigning() {
                return Err(PartitionError::NoReassignmentInProgress);
            }
            (original, Vec::new(), Vec::new())
        }
        Some(target) => {
            if target.is_empty() {
                return Err(PartitionError::InvalidReplicaAssignment(
                    "the target replica set is empty".into(),
                ));
            }
            let mut sorted = target.to_vec();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(PartitionError::InvalidReplicaAssignment(
                    "a broker appears twice in the target replicas".into(),
                ));
            }
            if let Some(b) = target.iter().find(|b| !image.brokers.contains_key(b)) {
                return Err(PartitionError::InvalidReplicaAssignment(format!(
                    "broker {b} is not registered"
                )));
            }
            if !p.reassigning() && target == p.replicas.as_slice() {
                return Ok(None);
            }
            let mut replicas = target.to_vec();
            replicas.extend(original.iter().copied().filter(|r| !target.contains(r)));
            let adding: Vec<BrokerId> = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            let removing: Vec<BrokerId> = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            (replicas, adding, removing)
        }
    };
    let mut next = p.clone();
    next.isr = p
        .isr
        .iter()
        .copied()
        .filter(|b| replicas.contains(b))
        .collect();
    next.replicas = replicas;
    next.adding_replicas = adding;
    next.removing_replicas = removing;
    if next.isr.is_empty() {
        return Err(PartitionError::InvalidReplicaAssignment(
            "no replica of the resulting set is in sync".into(),
        ));
    }
    if next.leader.is_some_and(|l| !next.isr.contains(&l)) {
        next.leader = next
            .replicas
            .iter()
            .copied()
            .find(|b| next.isr.contains(b) && live(image, *b));
    }
    let next = finish(image, &next).unwrap_or(next);
    Ok(Some(MetadataRecord::PartitionReplicas {
        topic_id,
        partition,
        partition_epoch: p.partition_epoch,
        replicas: next.replicas,
        adding: next.adding_replicas,
        removing: next.removing_replicas,
        leader: (next.leader != p.leader).then_some(next.leader),
        isr: next.isr,
    }))
}

/// The state once a reassignment completes, if it can: every added replica
/// is in sync, and some target replica in sync and unfenced can lead (the
/// leader stays if it is a target replica). The replicas become the target
/// set; the removed ones leave the in-sync set.
fn finish(image: &MetadataImage, p: &PartitionState) -> Option<PartitionState> {
    if !p.reassigning() || p.adding_replicas.iter().any(|b| !p.isr.contains(b)) {
        return None;
    }
    let target = p.target_replicas();
    let isr: Vec<BrokerId> = p
        .isr
        .iter()
        .copied()
        .filter(|b| target.contains(b))
        .collect();
    let leader = match p.leader {
        Some(l) if target.contains(&l) => Some(l),
        _ => Some(
            target
                .iter()
                .copied()
                .find(|b| isr.contains(b) && live(image, *b))?,
        ),
    };
    Some(PartitionState {
        replicas: target,
        isr,
        leader,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
        ..p.clone()
    })
}

/// The record that completes the reassignment of one partition, if it can
/// complete now (see [`finish`]).
pub fn complete_reassignment(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: i32,
) -> Option<MetadataRecord> {
    let p = image.partition(topic_id, partition)?;
    let next = finish(image, p)?;
    Some(MetadataRecord::PartitionReplicas {
        topic_id,
        partition,
        partition_epoch: p.partition_epoch,
        replicas: next.replicas,
        adding: Vec::new(),
        removing: Vec::new(),
        leader: (next.leader != p.leader).then_some(next.leader),
        isr: next.isr,
    })
}

/// The records that complete every reassignment that can complete now.
pub fn complete_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    image
        .topics
        .values()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|(_, p)| p.reassigning())
                .filter_map(|(&i, _)| complete_reassignment(image, t.topic_id, i))
        })
        .collect()
}

/// The reassignments in progress: `(topic name, partition, state)`.
pub fn reassignments(image: &MetadataImage) -> Vec<(String, i32, PartitionState)> {
    let mut out = Vec::new();
    for (name, id) in &image.topic_ids {
        let Some(t) = image.topics.get(id) else {
            continue;
        };
        for (&i, p) in &t.partitions {
            if p.reassigning() {
                out.push((name.clone(), i, p.clone()));
            }
        }
    }
    out
}

/// Replica lists for a new topic given by the caller (CreateTopics'
/// manual assignments): partitions numbered 0.., registered and distinct
/// brokers, one replication factor; the unfenced replicas start in sync,
/// the first of them leads.
pub fn manual_assignment(
    image: &MetadataImage,
    assignments: &[(i32, Vec<BrokerId>)],
) -> Result<Vec<PartitionAssignment>, PartitionError> {
    let bad = |m: String| PartitionError::InvalidReplicaAssignment(m);
    let mut sorted = assignments.to_vec();
    sorted.sort_by_key(|(i, _)| *i);
    let factor = sorted.first().map_or(0, |(_, r)| r.len());
    let mut out = Vec::new();
    for (k, (i, replicas)) in sorted.iter().enumerate() {
        if usize::try_from(*i).ok() != Some(k) {
            return Err(bad(format!(
                "partitions must be numbered consecutively from 0, got {i}"
            )));
        }
        if replicas.is_empty() || replicas.len() != factor {
            return Err(bad(
                "every partition must have the same, non-zero number of replicas".into(),
            ));
        }
        let mut s = replicas.clone();
        s.sort_unstable();
        if s.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad(format!("partition {i} lists a broker twice")));
        }
        if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
            return Err(bad(format!("broker {b} is not registered")));
        }
        let isr: Vec<BrokerId> = replicas
            .iter()
            .copied()
            .filter(|b| live(image, *b))
            .collect();
        if isr.is_empty() {
            return Err(bad(format!(
                "all brokers in the assignment of partition {i} are fenced"
            )));
        }
        out.push(PartitionAssignment {
            partition: *i,
            replicas: replicas.clone(),
            leader: isr.first().copied(),
            isr,
        });
    }
    if out.is_empty() {
        return Err(bad("no partitions".into()));
    }
    Ok(out)
}

/// The controller's view of broker liveness: the time of each broker's last
/// heartbeat, in milliseconds of a monotonic clock. Not replicated: a new
/// active controller starts it afresh ([`HeartbeatTracker::reset`]), giving
/// every broker a full session timeout (as KRaft does), except the previous
/// active controller's broker, counted from when the quorum last heard from
/// it ([`HeartbeatTracker::last_heard_at`]).
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

    /// Counts `broker_id` as last heard from at `at_ms`, even if that is
    /// earlier than a [`HeartbeatTracker::reset`]: for the previous active
    /// controller's broker, whose proof of life was the quorum's heartbeats
    /// (the last one a new controller received), not a session of its own.
    pub fn last_heard_at(&mut self, broker_id: BrokerId, at_ms: u64) {
        self.last.insert(broker_id, at_ms);
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

    fn apply(img: &mut MetadataImage, records: Vec<MetadataRecord>, off: u64) {
        img.apply_proposal(&Proposal { records }, off, 1).unwrap();
    }

    /// Cluster of 1..=4 (4 unfenced, holding nothing) and topic "t".
    fn cluster4() -> (MetadataImage, TopicId) {
        let (mut img, id) = cluster();
        img.apply(&register(4), 90).unwrap();
        let recs = on_broker_unfenced(&img, 4).unwrap();
        apply(&mut img, recs, 91);
        (img, id)
    }

    #[test]
    fn reassignment_adds_then_completes_once_in_sync() {
        let (mut img, id) = cluster4();
        // Partition 0: replicas [1, 2, 3], leader 1. Move to [4, 2, 3].
        let r = reassign(&img, id, 0, Some(&[4, 2, 3])).unwrap().unwrap();
        apply(&mut img, vec![r], 100);
        let p = img.partition(id, 0).unwrap().clone();
        assert_eq!(p.replicas, vec![4, 2, 3, 1]);
        assert_eq!(p.adding_replicas, vec![4]);
        assert_eq!(p.removing_replicas, vec![1]);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1, 2, 3]));
        // Not complete before 4 is in sync.
        assert!(complete_reassignments(&img).is_empty());
        // The leader adds 4 to the ISR (AlterPartition).
        img.apply(
            &MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                partition_epoch: p.partition_epoch,
                leader: None,
                isr: Some(vec![1, 2, 3, 4]),
            },
            101,
        )
        .unwrap();
        let recs = complete_reassignments(&img);
        assert_eq!(recs.len(), 1);
        apply(&mut img, recs, 102);
        let q = img.partition(id, 0).unwrap();
        assert_eq!(q.replicas, vec![4, 2, 3]);
        assert!(!q.reassigning());
        // The leader was removed: the first in-sync target replica leads, in a new epoch.
        assert_eq!((q.leader, q.leader_epoch), (Some(4), p.leader_epoch + 1));
        assert_eq!(q.isr, vec![2, 3, 4]);
        // Broker 1 holds nothing of p0 now.
        assert!(!q.replicas.contains(&1));
    }

    #[test]
    fn reassignment_cancel_reverts_and_errors_are_kafkas() {
        let (mut img, id) = cluster4();
        assert_eq!(
            reassign(&img, id, 0, None),
            Err(PartitionError::NoReassignmentInProgress)
        );
        assert_eq!(reassign(&img, id, 0, None).unwrap_err().code(), 85);
        assert_eq!(reassign(&img, id, 0, Some(&[1, 9])).unwrap_err().code(), 39);
        assert_eq!(reassign(&img, id, 0, Some(&[1, 1])).unwrap_err().code(), 39);
        assert_eq!(reassign(&img, id, 0, Some(&[])).unwrap_err().code(), 39);
        assert_eq!(reassign(&img, id, 7, Some(&[1])).unwrap_err().code(), 3);
        // The same set: nothing to do.
        let current = img.partition(id, 0).unwrap().replicas.clone();
        assert_eq!(reassign(&img, id, 0, Some(&current)), Ok(None));
        let r = reassign(&img, id, 0, Some(&[4, 2, 3])).unwrap().unwrap();
        apply(&mut img, vec![r], 100);
        let r = reassign(&img, id, 0, None).unwrap().unwrap();
        apply(&mut img, vec![r], 101);
        let p = img.partition(id, 0).unwrap();
        assert_eq!(p.replicas, vec![2, 3, 1]);
        assert!(!p.reassigning());
        assert_eq!(p.leader, Some(1));
    }

    #[test]
    fn shrinking_reassignment_completes_at_once() {
        let (mut img, id) = cluster4();
        // Partition 1: replicas [2, 3, 1] led by 2. Drop 2 (the leader).
        let r = reassign(&img, id, 1, Some(&[3, 1])).unwrap().unwrap();
        apply(&mut img, vec![r], 100);
        let p = img.partition(id, 1).unwrap();
        assert_eq!(p.replicas, vec![3, 1]);
        assert!(!p.reassigning());
        assert_eq!(p.leader, Some(3));
        assert_eq!(p.leader_epoch, 1);
    }

    #[test]
    fn unregister_needs_every_replica_moved() {
        let (mut img, id) = cluster4();
        let mut off = 100;
        for part in 0..3 {
            let target: Vec<BrokerId> = img
                .partition(id, part)
                .unwrap()
                .replicas
                .iter()
                .map(|b| if *b == 3 { 4 } else { *b })
                .collect();
            off += 1;
            let r = reassign(&img, id, part, Some(&target)).unwrap().unwrap();
            apply(&mut img, vec![r], off);
            let p = img.partition(id, part).unwrap().clone();
            let mut isr = p.isr.clone();
            isr.push(4);
            off += 1;
            img.apply(
                &MetadataRecord::PartitionChange {
                    topic_id: id,
                    partition: part,
                    partition_epoch: p.partition_epoch,
                    leader: None,
                    isr: Some(isr),
                },
                off,
            )
            .unwrap();
        }
        assert_eq!(
            img.apply(&MetadataRecord::UnregisterBroker { broker_id: 3 }, 200),
            Err(ApplyError::BrokerInUse(3))
        );
        off += 1;
        let recs = complete_reassignments(&img);
        apply(&mut img, recs, off);
        img.apply(&MetadataRecord::UnregisterBroker { broker_id: 3 }, 201)
            .unwrap();
        assert!(!img.brokers.contains_key(&3));
    }

    #[test]
    fn preferred_and_unclean_elections() {
        let (mut img, id) = cluster();
        // Every leader is preferred already.
        assert_eq!(
            elect_leader(&img, id, 0, ElectionType::Preferred),
            Err(PartitionError::ElectionNotNeeded)
        );
        let recs = on_broker_fenced(&img, 1).unwrap();
        apply(&mut img, recs, 100);
        assert_eq!(img.partition(id, 0).unwrap().leader, Some(2));
        // 1 is fenced and out of sync: not available.
        assert_eq!(
            elect_leader(&img, id, 0, ElectionType::Preferred)
                .unwrap_err()
                .code(),
            80
        );
        // Back, and in sync again: the preferred election moves leadership back.
        let epoch = img.brokers[&1].broker_epoch;
        img.apply(
            &MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: epoch,
            },
            101,
        )
        .unwrap();
        let p = img.partition(id, 0).unwrap().clone();
        img.apply(
            &MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                partition_epoch: p.partition_epoch,
                leader: None,
                isr: Some(vec![2, 3, 1]),
            },
            102,
        )
        .unwrap();
        let r = elect_leader(&img, id, 0, ElectionType::Preferred).unwrap();
        apply(&mut img, vec![r], 103);
        assert_eq!(img.partition(id, 0).unwrap().leader, Some(1));
        // Unclean: a led partition needs none.
        assert_eq!(
            elect_leader(&img, id, 0, ElectionType::Unclean),
            Err(PartitionError::ElectionNotNeeded)
        );
        // Fence 2 then 3 then 1: p0's last in-sync replica is 1 (fenced).
        let mut off = 110;
        for b in [2, 3, 1] {
            off += 1;
            let recs = on_broker_fenced(&img, b).unwrap();
            apply(&mut img, recs, off);
        }
        assert_eq!(img.partition(id, 0).unwrap().leader, None);
        assert_eq!(
            elect_leader(&img, id, 0, ElectionType::Unclean)
                .unwrap_err()
                .code(),
            83
        );
        // 3 comes back, not in sync: unclean election makes it the leader and the whole ISR.
        let epoch = img.brokers[&3].broker_epoch;
        img.apply(
            &MetadataRecord::UnfenceBroker {
                broker_id: 3,
                broker_epoch: epoch,
            },
            130,
        )
        .unwrap();
        let isr_before = img.partition(id, 0).unwrap().isr.clone();
        assert!(!isr_before.contains(&3));
        let r = elect_leader(&img, id, 0, ElectionType::Unclean).unwrap();
        apply(&mut img, vec![r], 131);
        let p = img.partition(id, 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (Some(3), vec![3]));
    }

    #[test]
    fn manual_assignments_are_checked() {
        let (img, _) = cluster();
        let ok = manual_assignment(&img, &[(1, vec![2, 3]), (0, vec![3, 1])]).unwrap();
        assert_eq!(ok[0].replicas, vec![3, 1]);
        assert_eq!(ok[0].leader, Some(3));
        for bad in [
            vec![(0, vec![1, 9])],
            vec![(0, vec![1, 1])],
            vec![(1, vec![1])],
            vec![(0, vec![1]), (1, vec![1, 2])],
        ] {
            assert_eq!(manual_assignment(&img, &bad).unwrap_err().code(), 39);
        }
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

    #[test]
    fn previous_controller_is_counted_from_when_the_quorum_last_heard_it() {
        let (img, _) = cluster();
        let mut hb = HeartbeatTracker::default();
        // A new controller at 10 000: every broker gets a whole session from
        // then, except broker 1, the previous controller, last heard (its
        // Raft heartbeat) at 9 800.
        hb.reset(&img, 10_000);
        hb.last_heard_at(1, 9_800);
        assert!(hb.expired(&img, 10_050, 10_000, 300).is_empty());
        assert_eq!(hb.expired(&img, 10_101, 10_000, 300), vec![1]);
        assert_eq!(hb.expired(&img, 10_301, 10_000, 300), vec![1, 2, 3]);
        // A heartbeat of its own (it is alive after all) counts as usual.
        hb.heartbeat(1, 10_150);
        assert!(hb.expired(&img, 10_250, 10_000, 300).is_empty());
    }
}
