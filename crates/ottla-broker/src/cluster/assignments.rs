//! What the metadata image means for one broker: the partitions it holds a
//! replica of (with leader, epochs, replicas and in-sync set), their
//! topics' configs, and the topics deleted since the previous image. Pure
//! functions of images, handed to the replica manager after every
//! metadata change.

use std::collections::{BTreeMap, HashMap};

use ottla_meta::image::MetadataImage;
use ottla_meta::records::ConfigResource;
use ottla_meta::BrokerId;
use uuid::Uuid;

use super::PartitionAssignment;

/// The partitions `broker` holds a replica of, in topic-name then
/// partition order.
pub fn for_broker(image: &MetadataImage, broker: BrokerId) -> Vec<PartitionAssignment> {
    let mut out = Vec::new();
    for (name, id) in &image.topic_ids {
        let Some(topic) = image.topics.get(id) else {
            continue;
        };
        for (&partition, p) in &topic.partitions {
            if !p.replicas.contains(&broker) {
                continue;
            }
            out.push(PartitionAssignment {
                topic: name.clone(),
                topic_id: Uuid::from_bytes(id.0),
                partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            });
        }
    }
    out
}

/// The configs of every topic in the image (the overrides it was created
/// or altered with), by topic name.
pub fn topic_configs(image: &MetadataImage) -> HashMap<String, BTreeMap<String, String>> {
    image
        .topic_ids
        .keys()
        .map(|name| {
            let configs = image
                .configs
                .get(&ConfigResource::Topic(name.clone()))
                .cloned()
                .unwrap_or_default();
            (name.clone(), configs)
        })
        .collect()
}

/// The topics of `before` that `after` no longer has (deleted, possibly
/// created again under the same name with another id).
pub fn deleted_topics(before: &MetadataImage, after: &MetadataImage) -> Vec<Uuid> {
    before
        .topics
        .keys()
        .filter(|id| !after.topics.contains_key(id))
        .map(|id| Uuid::from_bytes(id.0))
        .collect()
}

/// The topics (still in `after`) of which `broker` held a replica in
/// `before` and holds none in `after`: reassigned away, their local copy
/// is deleted (Kafka's StopReplica with `delete_partitions`).
pub fn moved_away(before: &MetadataImage, after: &MetadataImage, broker: BrokerId) -> Vec<Uuid> {
    let holds = |image: &MetadataImage, id: &ottla_meta::TopicId| {
        image
            .topics
            .get(id)
            .is_some_and(|t| t.partitions.values().any(|p| p.replicas.contains(&broker)))
    };
    after
        .topics
        .keys()
        .filter(|id| holds(before, id) && !holds(after, id))
        .map(|id| Uuid::from_bytes(id.0))
        .collect()
}

/// The local topics, given as (name, id), that are stray replicas once the
/// image is caught up (Kafka 3.7+'s stray replica deletion at start-up):
/// no partition of that topic id is assigned to this broker, so the topic
/// was deleted (perhaps created again under its name with another id), or
/// this broker's replicas were all moved away, while it was down.
/// `assigned` is [`for_broker`] of the caught-up image. Internal topics are
/// never named (the store refuses to delete them). A topic of which some
/// partitions are still assigned here is kept whole: the store removes
/// topics, not single partitions.
pub fn strays(assigned: &[PartitionAssignment], local: &[(String, Uuid)]) -> Vec<(String, Uuid)> {
    local
        .iter()
        .filter(|(name, id)| {
            !ottla_storage::topic::is_internal(name)
                && !assigned
                    .iter()
                    .any(|a| a.topic == *name && a.topic_id == *id)
        })
        .cloned()
        .collect()
}

/// The unfenced brokers and the Kafka listener each advertises, by id:
/// the brokers a Metadata answer lists.
pub fn live_brokers(image: &MetadataImage) -> Vec<(BrokerId, String, u16, Option<String>)> {
    live_brokers_on(image, None)
}

/// [`live_brokers`] as a client of listener `listener` is told them: each
/// broker's endpoint of that name (Kafka answers with the listener the
/// request came in on), else its first.
pub fn live_brokers_on(
    image: &MetadataImage,
    listener: Option<&str>,
) -> Vec<(BrokerId, String, u16, Option<String>)> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let e = listener
                .and_then(|name| b.listeners.iter().find(|l| l.name == name))
                .or_else(|| b.listeners.first())?;
            Some((b.broker_id, e.host.clone(), e.port, b.rack.clone()))
        })
        .collect()
}

/// Where a coordinator's partition of an internal topic stands in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorLookup {
    /// The topic (or that partition) does not exist yet.
    NoTopic,
    /// The partition has no live leader now.
    NoLeader,
    /// The broker leading it: the coordinator.
    Leader(BrokerId),
}

/// The coordinator of `topic`-`partition` (`__consumer_offsets` for groups,
/// `__transaction_state` for transactions): its leader, if that broker is
/// unfenced; the same on every node that has the same image.
pub fn coordinator_for(image: &MetadataImage, topic: &str, partition: i32) -> CoordinatorLookup {
    let Some(p) = image
        .topic_ids
        .get(topic)
        .and_then(|id| image.topics.get(id))
        .and_then(|t| t.partitions.get(&partition))
    else {
        return CoordinatorLookup::NoTopic;
    };
    match p.leader {
        Some(l) if image.brokers.get(&l).is_some_and(|b| !b.fenced) => CoordinatorLookup::Leader(l),
        _ => CoordinatorLookup::NoLeader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ottla_meta::records::{Endpoint, MetadataRecord, PartitionAssignment as Placed, TopicId};

    fn register(image: &mut MetadataImage, id: BrokerId, offset: u64) {
        let r = MetadataRecord::RegisterBroker {
            broker_id: id,
            incarnation_id: [id as u8; 16],
            listeners: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
                security_protocol: "PLAINTEXT".into(),
            }],
            rack: None,
        };
        image.apply(&r, offset).expect("register");
        let epoch = image.brokers[&id].broker_epoch;
        image
            .apply(
                &MetadataRecord::UnfenceBroker {
                    broker_id: id,
                    broker_epoch: epoch,
                },
                offset + 1,
            )
            .expect("unfence");
    }

    fn image3() -> MetadataImage {
        let mut img = MetadataImage::default();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            register(&mut img, id, 10 * i as u64 + 1);
        }
        let placed = |partition: i32, replicas: Vec<BrokerId>| Placed {
            partition,
            isr: replicas.clone(),
            leader: replicas.first().copied(),
            replicas,
        };
        img.apply(
            &MetadataRecord::CreateTopic {
                name: "b".into(),
                topic_id: TopicId([2; 16]),
                partitions: vec![placed(0, vec![2, 3]), placed(1, vec![3, 1])],
                configs: BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
            },
            100,
        )
        .expect("create b");
        img.apply(
            &MetadataRecord::CreateTopic {
                name: "a".into(),
                topic_id: TopicId([1; 16]),
                partitions: vec![placed(0, vec![1, 2, 3])],
                configs: BTreeMap::new(),
            },
            101,
        )
        .expect("create a");
        img
    }

    #[test]
    fn a_broker_gets_exactly_the_partitions_it_holds_a_replica_of() {
        let img = image3();
        let one = for_broker(&img, 1);
        let got: Vec<(&str, i32)> = one
            .iter()
            .map(|a| (a.topic.as_str(), a.partition))
            .collect();
        assert_eq!(got, vec![("a", 0), ("b", 1)]);
        assert_eq!(one[0].leader, Some(1));
        assert_eq!(one[0].replicas, vec![1, 2, 3]);
        assert_eq!(one[1].leader, Some(3));
        assert_eq!(one[1].topic_id, Uuid::from_bytes([2; 16]));
        let two = for_broker(&img, 2);
        assert_eq!(two.len(), 2);
        assert!(for_broker(&img, 4).is_empty());
    }

    #[test]
    fn epochs_and_isr_follow_partition_changes() {
        let mut img = image3();
        img.apply(
            &MetadataRecord::PartitionChange {
                topic_id: TopicId([1; 16]),
                partition: 0,
                partition_epoch: 0,
                leader: Some(Some(2)),
                isr: Some(vec![2, 3]),
            },
            200,
        )
        .expect("change");
        let a = &for_broker(&img, 1)[0];
        assert_eq!(
            (a.leader, a.leader_epoch, a.partition_epoch),
            (Some(2), 1, 1)
        );
        assert_eq!(a.isr, vec![2, 3]);
    }

    #[test]
    fn configs_and_deletions() {
        let before = image3();
        let configs = topic_configs(&before);
        assert_eq!(configs["b"]["min.insync.replicas"], "2");
        assert!(configs["a"].is_empty());
        let mut after = before.clone();
        after
            .apply(
                &MetadataRecord::DeleteTopic {
                    topic_id: TopicId([2; 16]),
                },
                300,
            )
            .expect("delete");
        assert_eq!(
            deleted_topics(&before, &after),
            vec![Uuid::from_bytes([2; 16])]
        );
        assert!(deleted_topics(&after, &after).is_empty());
    }

    #[test]
    fn strays_are_local_topics_the_image_does_not_assign_here() {
        let img = image3();
        let a = Uuid::from_bytes([1; 16]);
        let b = Uuid::from_bytes([2; 16]);
        let old = Uuid::from_bytes([7; 16]);
        let local = vec![
            ("__consumer_offsets".to_string(), Uuid::from_bytes([9; 16])),
            ("a".to_string(), a),
            ("b".to_string(), b),
            ("deleted".to_string(), old),
        ];
        // Broker 1 holds a-0 and b-1: only the deleted topic is stray.
        let one = for_broker(&img, 1);
        assert_eq!(strays(&one, &local), vec![("deleted".to_string(), old)]);
        // Broker 2 holds a-0 and b-0 (b-1 moved away: kept with b-0).
        assert_eq!(strays(&for_broker(&img, 2), &local).len(), 1);
        // A name created again under another id: the local copy is stray.
        let recreated = vec![("a".to_string(), old)];
        assert_eq!(strays(&one, &recreated), recreated);
        // A broker holding nothing: every topic but the internal one.
        let none = strays(&for_broker(&img, 4), &local);
        let names: Vec<&str> = none.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "deleted"]);
    }

    #[test]
    fn the_coordinator_is_the_partition_leader() {
        let img = image3();
        assert_eq!(
            coordinator_for(&img, "__consumer_offsets", 0),
            CoordinatorLookup::NoTopic
        );
        assert_eq!(coordinator_for(&img, "a", 7), CoordinatorLookup::NoTopic);
        let a0 = &img.topics[&img.topic_ids["a"]].partitions[&0];
        let leader = a0.leader.expect("a leader");
        assert_eq!(
            coordinator_for(&img, "a", 0),
            CoordinatorLookup::Leader(leader)
        );
        // Its broker fenced: no coordinator until a new leader is elected.
        let mut fenced = img.clone();
        let epoch = fenced.brokers[&leader].broker_epoch;
        fenced
            .apply(
                &MetadataRecord::FenceBroker {
                    broker_id: leader,
                    broker_epoch: epoch,
                },
                400,
            )
            .expect("fence");
        let after = coordinator_for(&fenced, "a", 0);
        assert_ne!(after, CoordinatorLookup::Leader(leader));
        assert_eq!(
            coordinator_for(&MetadataImage::default(), "a", 0),
            CoordinatorLookup::NoTopic
        );
    }
}
