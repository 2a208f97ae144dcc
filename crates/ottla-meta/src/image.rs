//! The metadata image: the cluster's metadata as of one offset of the
//! metadata log (KRaft's `MetadataImage`), and the deterministic, validated
//! application of records to it.
//!
//! Every node applies the same committed records in the same order, so every
//! node's image at a given offset is equal. A record that does not fit the
//! current state is refused with an [`ApplyError`] (the same refusal on every
//! node), never a panic; a refused proposal changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::records::{
    AclEntry, BrokerId, ConfigResource, Endpoint, MetadataRecord, PartitionAssignment, Proposal,
    ScramEntry, TopicId,
};

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    pub incarnation_id: [u8; 16],
    /// The metadata offset of the registration record (Kafka's broker epoch).
    pub broker_epoch: u64,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is in no in-sync set.
    pub fenced: bool,
}

/// One partition's replication state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: Option<BrokerId>,
    /// Bumped at every leader change (Kafka's leader epoch).
    pub leader_epoch: i32,
    /// Bumped at every change of the partition (Kafka's partition epoch).
    pub partition_epoch: i32,
    /// A reassignment in progress (KIP-455): the replicas being added
    /// (target, not original) and removed (original, not target); both
    /// empty when none is. `replicas` holds both during it.
    pub adding_replicas: Vec<BrokerId>,
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionState {
    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas before the reassignment in progress (all of them when
    /// none is): what a cancel goes back to.
    pub fn original_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }

    /// The replicas the reassignment in progress moves to (all of them
    /// when none is).
    pub fn target_replicas(&self) -> Vec<BrokerId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }
}

/// A topic and its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: BTreeMap<i32, PartitionState>,
}

/// The cluster metadata at one offset of the metadata log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// The index of the last metadata log entry applied (0: none).
    pub offset: u64,
    /// The Raft term (controller epoch) of that entry.
    pub epoch: u64,
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    pub topics: BTreeMap<TopicId, TopicImage>,
    pub topic_ids: BTreeMap<String, TopicId>,
    pub configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    /// The cluster's ACL bindings (KRaft's `AclsImage`): what every node's
    /// authorizer decides with.
    pub acls: BTreeSet<AclEntry>,
    /// SCRAM credentials (KRaft's `ScramImage`): user, then mechanism byte.
    pub scram: BTreeMap<String, BTreeMap<i8, ScramEntry>>,
}

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker_id}: broker epoch {given} is not the current {current}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        given: u64,
        current: u64,
    },
    #[error("broker {0} still holds replicas and cannot be unregistered")]
    BrokerInUse(BrokerId),
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("topic id {0:?} is already used")]
    TopicIdExists(TopicId),
    #[error("unknown topic id {0:?}")]
    UnknownTopic(TopicId),
    #[error("topic {topic_id:?} has no partition {partition}")]
    UnknownPartition { topic_id: TopicId, partition: i32 },
    #[error("partition epoch {given} is not the current {current}")]
    StalePartitionEpoch { given: i32, current: i32 },
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// What applying a proposal returned: the offset and epoch it landed at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub offset: u64,
    pub epoch: u64,
}

/// The state machine's answer to one Raft entry: applied, or refused.
pub type ApplyOutcome = Result<Applied, ApplyError>;

fn invalid(msg: impl Into<String>) -> ApplyError {
    ApplyError::Invalid(msg.into())
}

fn has_duplicates(ids: &[BrokerId]) -> bool {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.windows(2).any(|w| w[0] == w[1])
}

impl MetadataImage {
    /// The partition `(topic_id, partition)`, if it exists.
    pub fn partition(&self, topic_id: TopicId, partition: i32) -> Option<&PartitionState> {
        self.topics.get(&topic_id)?.partitions.get(&partition)
    }

    /// The topic named `name`, if it exists.
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(self.topic_ids.get(name)?)
    }

    /// Applies a proposal at log `offset` (Raft index) and `epoch` (term):
    /// all its records, or none (the image is unchanged on an error). The
    /// image's offset and epoch advance either way: the entry was consumed.
    pub fn apply_proposal(&mut self, proposal: &Proposal, offset: u64, epoch: u64) -> ApplyOutcome {
        let mut next = self.clone();
        let mut result = Ok(());
        for record in &proposal.records {
            result = next.apply(record, offset);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            *self = next;
        }
        self.offset = offset;
        self.epoch = epoch;
        result.map(|()| Applied { offset, epoch })
    }

    /// Applies one record at metadata `offset`, or refuses it leaving the
    /// image as it was.
    pub fn apply(&mut self, record: &MetadataRecord, offset: u64) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker {
                broker_id,
                incarnation_id,
                listeners,
                rack,
            } => {
                if *broker_id < 0 {
                    return Err(invalid(format!("broker id {broker_id} is negative")));
                }
                if let Some(existing) = self.brokers.get(broker_id) {
                    if existing.incarnation_id == *incarnation_id {
                        return Ok(()); // the same process registering again
                    }
                }
                // A new incarnation: the old process is gone, so it leads
                // nothing any more and is out of every in-sync set until the
                // new one is unfenced and catches up.
                self.remove_from_leadership(*broker_id);
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        incarnation_id: *incarnation_id,
                        broker_epoch: offset,
                        listeners: listeners.clone(),
                        rack: rack.clone(),
                        fenced: true,
                    },
                );
                Ok(())
            }
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => {
                let b = self.broker_with_epoch(*broker_id, *broker_epoch)?;
                b.fenced = false;
                Ok(())
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => {
                let b = self.broker_with_epoch(*broker_id, *broker_epoch)?;
                b.fenced = true;
                self.remove_from_leadership(*broker_id);
                Ok(())
            }
            MetadataRecord::UnregisterBroker { broker_id } => {
                if !self.brokers.contains_key(broker_id) {
                    return Err(ApplyError::UnknownBroker(*broker_id));
                }
                let in_use = self
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.values())
                    .any(|p| p.replicas.contains(broker_id));
                if in_use {
                    return Err(ApplyError::BrokerInUse(*broker_id));
                }
                self.brokers.remove(broker_id);
                self.configs.remove(&ConfigResource::Broker(*broker_id));
                Ok(())
            }
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                partitions,
                configs,
            } => self.create_topic(name, *topic_id, partitions, configs),
            MetadataRecord::CreatePartitions {
                topic_id,
                partitions,
            } => self.create_partitions(*topic_id, partitions),
            MetadataRecord::DeleteTopic { topic_id } => {
                let topic = self
                    .topics
                    .remove(topic_id)
                    .ok_or(ApplyError::UnknownTopic(*topic_id))?;
                self.topic_ids.remove(&topic.name);
                self.configs.remove(&ConfigResource::Topic(topic.name));
                Ok(())
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                partition_epoch,
                leader,
                isr,
            } => self.change_partition(
                *topic_id,
                *partition,
                *partition_epoch,
                *leader,
                isr.as_deref(),
            ),
            MetadataRecord::PartitionReplicas {
                topic_id,
                partition,
                partition_epoch,
                replicas,
                adding,
                removing,
                leader,
                isr,
            } => self.change_replicas(
                *topic_id,
                *partition,
                *partition_epoch,
                replicas,
                adding,
                removing,
                *leader,
                isr,
            ),
            MetadataRecord::AccessControlEntry(acl) => {
                acl.check().map_err(|e| invalid(format!("ACL: {e}")))?;
                self.acls.insert(acl.clone());
                Ok(())
            }
            MetadataRecord::RemoveAccessControlEntry(acl) => {
                self.acls.remove(acl);
                Ok(())
            }
            MetadataRecord::UserScramCredential { name, credential } => {
                if name.is_empty() {
                    return Err(invalid("empty SCRAM user name"));
                }
                credential
                    .check()
                    .map_err(|e| invalid(format!("user {name:?}: {e}")))?;
                self.scram
                    .entry(name.clone())
                    .or_default()
                    .insert(credential.mechanism, credential.clone());
                Ok(())
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                if let Some(m) = self.scram.get_mut(name) {
                    m.remove(mechanism);
                    if m.is_empty() {
                        self.scram.remove(name);
                    }
                }
                Ok(())
            }
            MetadataRecord::ConfigChange {
                resource,
                key,
                value,
            } => {
                match resource {
                    ConfigResource::Cluster => {}
                    ConfigResource::Broker(id) => {
                        if !self.brokers.contains_key(id) {
                            return Err(ApplyError::UnknownBroker(*id));
                        }
                    }
                    ConfigResource::Topic(name) => {
                        if !self.topic_ids.contains_key(name) {
                            return Err(invalid(format!("unknown topic {name:?}")));
                        }
                    }
                }
                if key.is_empty() {
                    return Err(invalid("empty config key"));
                }
                match value {
                    Some(v) => {
                        self.configs
                            .entry(resource.clone())
                            .or_default()
                            .insert(key.clone(), v.clone());
                    }
                    None => {
                        if let Some(m) = self.configs.get_mut(resource) {
                            m.remove(key);
                            if m.is_empty() {
                                self.configs.remove(resource);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn broker_with_epoch(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: u64,
    ) -> Result<&mut BrokerRegistration, ApplyError> {
        let b = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(ApplyError::UnknownBroker(broker_id))?;
        if b.broker_epoch != broker_epoch {
            return Err(ApplyError::StaleBrokerEpoch {
                broker_id,
                given: broker_epoch,
                current: b.broker_epoch,
            });
        }
        Ok(b)
    }

    /// The last resort when a broker is fenced without the controller's
    /// elections (or re-registers): it leaves every in-sync set it is in and
    /// every leadership, with no election (the controller's
    /// [`crate::decide::on_broker_fenced`] elects before fencing).
    fn remove_from_leadership(&mut self, broker_id: BrokerId) {
        for topic in self.topics.values_mut() {
            for p in topic.partitions.values_mut() {
                let mut changed = false;
                if p.leader == Some(broker_id) {
                    p.leader = None;
                    p.leader_epoch += 1;
                    changed = true;
                }
                // Kafka keeps the last in-sync replica in the ISR (so that
                // it can come back as leader without an unclean election).
                if p.isr.len() > 1 && p.isr.contains(&broker_id) {
                    p.isr.retain(|b| *b != broker_id);
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    fn create_topic(
        &mut self,
        name: &str,
        topic_id: TopicId,
        partitions: &[PartitionAssignment],
        configs: &BTreeMap<String, String>,
    ) -> Result<(), ApplyError> {
        if name.is_empty() {
            return Err(invalid("empty topic name"));
        }
        if self.topic_ids.contains_key(name) {
            return Err(ApplyError::TopicExists(name.to_string()));
        }
        if topic_id.0 == [0; 16] || self.topics.contains_key(&topic_id) {
            return Err(ApplyError::TopicIdExists(topic_id));
        }
        if partitions.is_empty() {
            return Err(invalid("a topic needs at least one partition"));
        }
        let mut parts = BTreeMap::new();
        for (i, p) in partitions.iter().enumerate() {
            if usize::try_from(p.partition).ok() != Some(i) {
                return Err(invalid(format!(
                    "partitions must be numbered 0.., got {}",
                    p.partition
                )));
            }
            self.check_replicas(&p.replicas, &p.isr, p.leader)?;
            parts.insert(
                p.partition,
                PartitionState {
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    leader: p.leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                },
            );
        }
        self.topics.insert(
            topic_id,
            TopicImage {
                name: name.to_string(),
                topic_id,
                partitions: parts,
            },
        );
        self.topic_ids.insert(name.to_string(), topic_id);
        if !configs.is_empty() {
            self.configs
                .insert(ConfigResource::Topic(name.to_string()), configs.clone());
        }
        Ok(())
    }

    fn create_partitions(
        &mut self,
        topic_id: TopicId,
        partitions: &[PartitionAssignment],
    ) -> Result<(), ApplyError> {
        let existing = self
            .topics
            .get(&topic_id)
            .ok_or(ApplyError::UnknownTopic(topic_id))?
            .partitions
            .len();
        if partitions.is_empty() {
            return Err(invalid("no partitions to add"));
        }
        for (i, p) in partitions.iter().enumerate() {
            if usize::try_from(p.partition).ok() != Some(existing + i) {
                return Err(invalid(format!(
                    "new partitions must be numbered on from {existing}, got {}",
                    p.partition
                )));
            }
            self.check_replicas(&p.replicas, &p.isr, p.leader)?;
        }
        if let Some(topic) = self.topics.get_mut(&topic_id) {
            for p in partitions {
                topic.partitions.insert(
                    p.partition,
                    PartitionState {
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        leader: p.leader,
                        leader_epoch: 0,
                        partition_epoch: 0,
                        adding_replicas: Vec::new(),
                        removing_replicas: Vec::new(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Replicas are registered and distinct; the in-sync set is a subset of
    /// them; the leader is in it and not fenced.
    fn check_replicas(
        &self,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        leader: Option<BrokerId>,
    ) -> Result<(), ApplyError> {
        if replicas.is_empty() {
            return Err(invalid("a partition needs at least one replica"));
        }
        if has_duplicates(replicas) || has_duplicates(isr) {
            return Err(invalid(
                "a broker appears twice in a replica or in-sync list",
            ));
        }
        for r in replicas {
            if !self.brokers.contains_key(r) {
                return Err(ApplyError::UnknownBroker(*r));
            }
        }
        if let Some(b) = isr.iter().find(|b| !replicas.contains(b)) {
            return Err(invalid(format!("in-sync broker {b} is not a replica")));
        }
        if let Some(l) = leader {
            if !isr.contains(&l) {
                return Err(invalid(format!("leader {l} is not in the in-sync set")));
            }
            if self.brokers.get(&l).is_some_and(|b| b.fenced) {
                return Err(invalid(format!("leader {l} is fenced")));
            }
        }
        Ok(())
    }

    fn change_partition(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        partition_epoch: i32,
        leader: Option<Option<BrokerId>>,
        isr: Option<&[BrokerId]>,
    ) -> Result<(), ApplyError> {
        let current = self
            .partition(topic_id, partition)
            .ok_or(ApplyError::UnknownPartition {
                topic_id,
                partition,
            })?
            .clone();
        if current.partition_epoch != partition_epoch {
            return Err(ApplyError::StalePartitionEpoch {
                given: partition_epoch,
                current: current.partition_epoch,
            });
        }
        let new_leader = leader.unwrap_or(current.leader);
        let new_isr = isr
            .map(<[BrokerId]>::to_vec)
            .unwrap_or_else(|| current.isr.clone());
        if new_isr.is_empty() {
            return Err(invalid("the in-sync set cannot be empty"));
        }
        self.check_replicas(&current.replicas, &new_isr, new_leader)?;
        let leader_changed = new_leader != current.leader;
        if !leader_changed && new_isr == current.isr {
            return Err(invalid("the change changes nothing"));
        }
        let p = self
            .topics
            .get_mut(&topic_id)
            .and_then(|t| t.partitions.get_mut(&partition))
            .ok_or(ApplyError::UnknownPartition {
                topic_id,
                partition,
            })?;
        if leader_changed {
            p.leader = new_leader;
            p.leader_epoch += 1;
        }
        p.isr = new_isr;
        p.partition_epoch += 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn change_replicas(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        partition_epoch: i32,
        replicas: &[BrokerId],
        adding: &[BrokerId],
        removing: &[BrokerId],
        leader: Option<Option<BrokerId>>,
        isr: &[BrokerId],
    ) -> Result<(), ApplyError> {
        let current = self
            .partition(topic_id, partition)
            .ok_or(ApplyError::UnknownPartition {
                topic_id,
                partition,
            })?
            .clone();
        if current.partition_epoch != partition_epoch {
            return Err(ApplyError::StalePartitionEpoch {
                given: partition_epoch,
                current: current.partition_epoch,
            });
        }
        if isr.is_empty() {
            return Err(invalid("the in-sync set cannot be empty"));
        }
        if has_duplicates(adding) || has_duplicates(removing) {
            return Err(invalid("a broker appears twice in adding or removing"));
        }
        if let Some(b) = adding
            .iter()
            .chain(removing)
            .find(|b| !replicas.contains(b))
        {
            return Err(invalid(format!(
                "broker {b} is being added or removed but is not a replica"
            )));
        }
        if let Some(b) = adding.iter().find(|b| removing.contains(b)) {
            return Err(invalid(format!("broker {b} is both added and removed")));
        }
        if removing.len() >= replicas.len() {
            return Err(invalid("a reassignment must keep at least one replica"));
        }
        let new_leader = leader.unwrap_or(current.leader);
        self.check_replicas(replicas, isr, new_leader)?;
        let leader_changed = new_leader != current.leader;
        let p = self
            .topics
            .get_mut(&topic_id)
            .and_then(|t| t.partitions.get_mut(&partition))
            .ok_or(ApplyError::UnknownPartition {
                topic_id,
                partition,
            })?;
        if leader_changed {
            p.leader = new_leader;
            p.leader_epoch += 1;
        }
        p.replicas = replicas.to_vec();
        p.adding_replicas = adding.to_vec();
        p.removing_replicas = removing.to_vec();
        p.isr = isr.to_vec();
        p.partition_epoch += 1;
        Ok(())
    }
}

/// The image as version 1 of the snapshot encoding held it (before
/// reassignments): decoded from snapshots an earlier build wrote.
pub(crate) mod v1 {
    use super::*;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    struct PartitionStateV1 {
        replicas: Vec<BrokerId>,
        isr: Vec<BrokerId>,
        leader: Option<BrokerId>,
        leader_epoch: i32,
        partition_epoch: i32,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    struct TopicImageV1 {
        name: String,
        topic_id: TopicId,
        partitions: BTreeMap<i32, PartitionStateV1>,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    pub(crate) struct MetadataImageV1 {
        offset: u64,
        epoch: u64,
        brokers: BTreeMap<BrokerId, BrokerRegistration>,
        topics: BTreeMap<TopicId, TopicImageV1>,
        topic_ids: BTreeMap<String, TopicId>,
        configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    }

    impl From<MetadataImageV1> for MetadataImage {
        fn from(v: MetadataImageV1) -> MetadataImage {
            MetadataImage {
                offset: v.offset,
                epoch: v.epoch,
                brokers: v.brokers,
                topics: v
                    .topics
                    .into_iter()
                    .map(|(id, t)| {
                        let partitions = t
                            .partitions
                            .into_iter()
                            .map(|(i, p)| {
                                let state = PartitionState {
                                    replicas: p.replicas,
                                    isr: p.isr,
                                    leader: p.leader,
                                    leader_epoch: p.leader_epoch,
                                    partition_epoch: p.partition_epoch,
                                    adding_replicas: Vec::new(),
                                    removing_replicas: Vec::new(),
                                };
                                (i, state)
                            })
                            .collect();
                        let topic = TopicImage {
                            name: t.name,
                            topic_id: t.topic_id,
                            partitions,
                        };
                        (id, topic)
                    })
                    .collect(),
                topic_ids: v.topic_ids,
                configs: v.configs,
                acls: BTreeSet::new(),
                scram: BTreeMap::new(),
            }
        }
    }

    #[cfg(test)]
    #[test]
    fn a_version_1_snapshot_image_still_decodes() {
        // The bytes a build before reassignments wrote (version byte 1).
        let id = TopicId([4; 16]);
        let v1 = MetadataImageV1 {
            offset: 12,
            epoch: 2,
            brokers: BTreeMap::new(),
            topics: BTreeMap::from([(
                id,
                TopicImageV1 {
                    name: "t".into(),
                    topic_id: id,
                    partitions: BTreeMap::from([(
                        0,
                        PartitionStateV1 {
                            replicas: vec![1, 2],
                            isr: vec![1, 2],
                            leader: Some(1),
                            leader_epoch: 3,
                            partition_epoch: 5,
                        },
                    )]),
                },
            )]),
            topic_ids: BTreeMap::from([("t".to_string(), id)]),
            configs: BTreeMap::new(),
        };
        let mut bytes = vec![1u8];
        bytes.extend(postcard::to_allocvec(&v1).unwrap());
        let path = std::path::Path::new("snapshot");
        let image = crate::store::state_machine::decode_image(&bytes, path).unwrap();
        let p = image.partition(id, 0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (Some(1), 3, 5)
        );
        assert!(!p.reassigning());
        // And the current version round-trips.
        let again = crate::store::state_machine::encode_image(&image).unwrap();
        assert_eq!(again[0], 3);
        assert_eq!(
            crate::store::state_machine::decode_image(&again, path).unwrap(),
            image
        );
    }
}

/// The image as version 2 of the snapshot encoding held it (reassignments,
/// before ACLs and SCRAM credentials were in the metadata log): decoded
/// from snapshots an earlier build wrote, with no ACLs and no users.
pub(crate) mod v2 {
    use super::*;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(Serialize))]
    pub(crate) struct MetadataImageV2 {
        pub(crate) offset: u64,
        pub(crate) epoch: u64,
        pub(crate) brokers: BTreeMap<BrokerId, BrokerRegistration>,
        pub(crate) topics: BTreeMap<TopicId, TopicImage>,
        pub(crate) topic_ids: BTreeMap<String, TopicId>,
        pub(crate) configs: BTreeMap<ConfigResource, BTreeMap<String, String>>,
    }

    impl From<MetadataImageV2> for MetadataImage {
        fn from(v: MetadataImageV2) -> MetadataImage {
            MetadataImage {
                offset: v.offset,
                epoch: v.epoch,
                brokers: v.brokers,
                topics: v.topics,
                topic_ids: v.topic_ids,
                configs: v.configs,
                acls: BTreeSet::new(),
                scram: BTreeMap::new(),
            }
        }
    }

    #[cfg(test)]
    #[test]
    fn a_version_2_snapshot_image_still_decodes() {
        let id = TopicId([5; 16]);
        let partition = PartitionState {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: Some(2),
            leader_epoch: 4,
            partition_epoch: 6,
            adding_replicas: vec![3],
            removing_replicas: vec![],
        };
        let v2 = MetadataImageV2 {
            offset: 40,
            epoch: 3,
            brokers: BTreeMap::new(),
            topics: BTreeMap::from([(
                id,
                TopicImage {
                    name: "t".into(),
                    topic_id: id,
                    partitions: BTreeMap::from([(0, partition.clone())]),
                },
            )]),
            topic_ids: BTreeMap::from([("t".to_string(), id)]),
            configs: BTreeMap::new(),
        };
        let mut bytes = vec![2u8];
        bytes.extend(postcard::to_allocvec(&v2).unwrap());
        let path = std::path::Path::new("snapshot");
        let image = crate::store::state_machine::decode_image(&bytes, path).unwrap();
        assert_eq!(image.partition(id, 0), Some(&partition));
        assert!(image.acls.is_empty() && image.scram.is_empty());
        assert_eq!((image.offset, image.epoch), (40, 3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn register(id: BrokerId, inc: u8) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation_id: [inc; 16],
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
                security_protocol: "PLAINTEXT".into(),
            }],
            rack: None,
        }
    }

    fn three_brokers() -> MetadataImage {
        let mut img = MetadataImage::default();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            let off = i as u64 + 1;
            img.apply(&register(id, id as u8), off).unwrap();
            img.apply(
                &MetadataRecord::UnfenceBroker {
                    broker_id: id,
                    broker_epoch: off,
                },
                off + 10,
            )
            .unwrap();
        }
        img
    }

    fn topic(img: &mut MetadataImage) -> TopicId {
        let id = TopicId([7; 16]);
        img.apply(
            &MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: id,
                partitions: vec![PartitionAssignment {
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    leader: Some(1),
                }],
                configs: BTreeMap::new(),
            },
            20,
        )
        .unwrap();
        id
    }

    #[test]
    fn registration_starts_fenced_and_epoch_is_offset() {
        let mut img = MetadataImage::default();
        img.apply(&register(1, 1), 5).unwrap();
        assert!(img.brokers[&1].fenced);
        assert_eq!(img.brokers[&1].broker_epoch, 5);
        // Same incarnation: idempotent, epoch kept.
        img.apply(&register(1, 1), 9).unwrap();
        assert_eq!(img.brokers[&1].broker_epoch, 5);
        let err = img.apply(
            &MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 4,
            },
            10,
        );
        assert!(matches!(err, Err(ApplyError::StaleBrokerEpoch { .. })));
        assert!(matches!(
            img.apply(
                &MetadataRecord::UnfenceBroker {
                    broker_id: 9,
                    broker_epoch: 4
                },
                10
            ),
            Err(ApplyError::UnknownBroker(9))
        ));
    }

    #[test]
    fn create_topic_validates() {
        let mut img = three_brokers();
        let bad_leader = MetadataRecord::CreateTopic {
            name: "x".into(),
            topic_id: TopicId([1; 16]),
            partitions: vec![PartitionAssignment {
                partition: 0,
                replicas: vec![1, 2],
                isr: vec![2],
                leader: Some(1),
            }],
            configs: BTreeMap::new(),
        };
        let before = img.clone();
        assert!(matches!(
            img.apply(&bad_leader, 30),
            Err(ApplyError::Invalid(_))
        ));
        assert_eq!(img, before);
        let unknown = MetadataRecord::CreateTopic {
            name: "x".into(),
            topic_id: TopicId([1; 16]),
            partitions: vec![PartitionAssignment {
                partition: 0,
                replicas: vec![1, 4],
                isr: vec![1],
                leader: Some(1),
            }],
            configs: BTreeMap::new(),
        };
        assert_eq!(img.apply(&unknown, 30), Err(ApplyError::UnknownBroker(4)));
        topic(&mut img);
        let again = MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: TopicId([2; 16]),
            partitions: vec![PartitionAssignment {
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: Some(1),
            }],
            configs: BTreeMap::new(),
        };
        assert_eq!(
            img.apply(&again, 31),
            Err(ApplyError::TopicExists("t".into()))
        );
    }

    #[test]
    fn partition_change_checks_epoch_and_bumps() {
        let mut img = three_brokers();
        let id = topic(&mut img);
        let change = MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            partition_epoch: 0,
            leader: Some(Some(2)),
            isr: Some(vec![2, 3]),
        };
        img.apply(&change, 40).unwrap();
        let p = img.partition(id, 0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (Some(2), 1, 1)
        );
        // The same decision again is stale.
        assert_eq!(
            img.apply(&change, 41),
            Err(ApplyError::StalePartitionEpoch {
                given: 0,
                current: 1
            })
        );
        // ISR-only change: partition epoch moves, leader epoch does not.
        img.apply(
            &MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                partition_epoch: 1,
                leader: None,
                isr: Some(vec![1, 2, 3]),
            },
            42,
        )
        .unwrap();
        let p = img.partition(id, 0).unwrap();
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
        // A leader outside the ISR is refused.
        let bad = MetadataRecord::PartitionChange {
            topic_id: id,
            partition: 0,
            partition_epoch: 2,
            leader: Some(Some(3)),
            isr: Some(vec![1, 2]),
        };
        assert!(matches!(img.apply(&bad, 43), Err(ApplyError::Invalid(_))));
    }

    #[test]
    fn proposal_is_all_or_nothing() {
        let mut img = three_brokers();
        let id = topic(&mut img);
        let before = img.clone();
        let p = Proposal {
            records: vec![
                MetadataRecord::ConfigChange {
                    resource: ConfigResource::Cluster,
                    key: "a".into(),
                    value: Some("1".into()),
                },
                MetadataRecord::DeleteTopic {
                    topic_id: TopicId([9; 16]),
                },
            ],
        };
        assert_eq!(
            img.apply_proposal(&p, 50, 3),
            Err(ApplyError::UnknownTopic(TopicId([9; 16])))
        );
        assert_eq!(img.configs, before.configs);
        assert_eq!((img.offset, img.epoch), (50, 3));
        let ok = Proposal {
            records: vec![MetadataRecord::DeleteTopic { topic_id: id }],
        };
        assert_eq!(
            img.apply_proposal(&ok, 51, 3),
            Ok(Applied {
                offset: 51,
                epoch: 3
            })
        );
        assert!(img.topics.is_empty() && img.topic_ids.is_empty());
    }

    fn acl(name: &str, op: i8) -> AclEntry {
        AclEntry {
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission_type: 3,
        }
    }

    fn scram(mechanism: i8, fill: u8) -> ScramEntry {
        let len = if mechanism == 1 { 32 } else { 64 };
        ScramEntry {
            mechanism,
            salt: vec![fill; 16],
            stored_key: vec![fill; len],
            server_key: vec![fill.wrapping_add(1); len],
            iterations: 4096,
        }
    }

    #[test]
    fn acls_are_a_set_and_bad_codes_are_refused() {
        let mut img = MetadataImage::default();
        let a = acl("orders", 4);
        img.apply(&MetadataRecord::AccessControlEntry(a.clone()), 1)
            .unwrap();
        // Adding it again changes nothing (CreateAcls of an existing ACL).
        img.apply(&MetadataRecord::AccessControlEntry(a.clone()), 2)
            .unwrap();
        img.apply(&MetadataRecord::AccessControlEntry(acl("pay", 3)), 3)
            .unwrap();
        assert_eq!(img.acls.len(), 2);
        let before = img.clone();
        for bad in [
            AclEntry {
                resource_type: 1, // ANY
                ..a.clone()
            },
            AclEntry {
                pattern_type: 2, // MATCH
                ..a.clone()
            },
            AclEntry {
                operation: 1, // ANY
                ..a.clone()
            },
            AclEntry {
                permission_type: 1, // ANY
                ..a.clone()
            },
            AclEntry {
                principal: "alice".into(),
                ..a.clone()
            },
            AclEntry {
                resource_name: String::new(),
                ..a.clone()
            },
        ] {
            assert!(matches!(
                img.apply(&MetadataRecord::AccessControlEntry(bad), 4),
                Err(ApplyError::Invalid(_))
            ));
        }
        assert_eq!(img, before);
        img.apply(&MetadataRecord::RemoveAccessControlEntry(a.clone()), 5)
            .unwrap();
        // Removing one that is gone (a concurrent DeleteAcls) is a no-op.
        img.apply(&MetadataRecord::RemoveAccessControlEntry(a), 6)
            .unwrap();
        assert_eq!(img.acls.iter().collect::<Vec<_>>(), vec![&acl("pay", 3)]);
    }

    #[test]
    fn scram_credentials_per_user_and_mechanism() {
        let mut img = MetadataImage::default();
        let set = |name: &str, c: ScramEntry| MetadataRecord::UserScramCredential {
            name: name.into(),
            credential: c,
        };
        img.apply(&set("alice", scram(1, 1)), 1).unwrap();
        img.apply(&set("alice", scram(2, 2)), 2).unwrap();
        img.apply(&set("alice", scram(1, 3)), 3).unwrap(); // replaced
        assert_eq!(img.scram["alice"].len(), 2);
        assert_eq!(img.scram["alice"][&1], scram(1, 3));
        let mut short = scram(2, 4);
        short.stored_key.pop();
        assert!(img.apply(&set("bob", short), 4).is_err());
        assert!(img.apply(&set("", scram(1, 4)), 4).is_err());
        let mut unknown = scram(1, 4);
        unknown.mechanism = 3;
        assert!(img.apply(&set("bob", unknown), 4).is_err());
        let remove = |m: i8| MetadataRecord::RemoveUserScramCredential {
            name: "alice".into(),
            mechanism: m,
        };
        img.apply(&remove(1), 5).unwrap();
        img.apply(&remove(1), 6).unwrap();
        img.apply(&remove(2), 7).unwrap();
        assert!(img.scram.is_empty());
    }

    #[test]
    fn acls_and_users_survive_a_snapshot() {
        let mut img = three_brokers();
        topic(&mut img);
        img.apply(&MetadataRecord::AccessControlEntry(acl("t", 4)), 30)
            .unwrap();
        img.apply(
            &MetadataRecord::UserScramCredential {
                name: "svc".into(),
                credential: scram(2, 9),
            },
            31,
        )
        .unwrap();
        let bytes = crate::store::state_machine::encode_image(&img).unwrap();
        assert_eq!(bytes[0], 3);
        let back =
            crate::store::state_machine::decode_image(&bytes, std::path::Path::new("s")).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn the_records_before_acls_encode_as_before() {
        // An entry an earlier build wrote decodes the same: the new
        // variants are the last ones, so earlier discriminants are kept.
        let r = MetadataRecord::UnregisterBroker { broker_id: 7 };
        assert_eq!(postcard::to_allocvec(&r).unwrap(), vec![3, 14]);
        let last_old = MetadataRecord::PartitionReplicas {
            topic_id: TopicId([1; 16]),
            partition: 0,
            partition_epoch: 0,
            replicas: vec![],
            adding: vec![],
            removing: vec![],
            leader: None,
            isr: vec![],
        };
        assert_eq!(postcard::to_allocvec(&last_old).unwrap()[0], 9);
        let acl_rec = MetadataRecord::AccessControlEntry(acl("t", 4));
        assert_eq!(postcard::to_allocvec(&acl_rec).unwrap()[0], 10);
    }

    #[test]
    fn fencing_removes_leadership_but_keeps_last_isr() {
        let mut img = MetadataImage::default();
        img.apply(&register(1, 1), 1).unwrap();
        img.apply(
            &MetadataRecord::UnfenceBroker {
                broker_id: 1,
                broker_epoch: 1,
            },
            2,
        )
        .unwrap();
        let id = TopicId([3; 16]);
        img.apply(
            &MetadataRecord::CreateTopic {
                name: "solo".into(),
                topic_id: id,
                partitions: vec![PartitionAssignment {
                    partition: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: Some(1),
                }],
                configs: BTreeMap::new(),
            },
            3,
        )
        .unwrap();
        img.apply(
            &MetadataRecord::FenceBroker {
                broker_id: 1,
                broker_epoch: 1,
            },
            4,
        )
        .unwrap();
        let p = img.partition(id, 0).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (None, vec![1], 1)
        );
        assert_eq!(
            img.apply(&MetadataRecord::UnregisterBroker { broker_id: 1 }, 5),
            Err(ApplyError::BrokerInUse(1))
        );
    }
}
