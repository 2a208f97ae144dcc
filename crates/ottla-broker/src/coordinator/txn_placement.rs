//! Where the transaction coordinator lives in a cluster (issue 15), as in
//! Kafka: with the leader of its partition of `__transaction_state`, and it
//! moves with that leadership (Kafka's `TransactionStateManager`).
//!
//! * The topic is a replicated internal compacted topic, created through
//!   the controller on the first FindCoordinator for a transactional id,
//!   with Kafka's `transaction.state.log.replication.factor` (3) lowered to
//!   the live brokers and `transaction.state.log.min.isr` (2) lowered to
//!   that factor. One partition, as the single broker has it, so every
//!   transactional id maps to partition 0 (`txn_state::partition_for` of
//!   one partition).
//! * A broker that becomes its leader loads every transaction from its
//!   replica and is their coordinator from then on (the timer completes a
//!   PrepareCommit or PrepareAbort it finds by writing its markers again,
//!   as Kafka does on load); one that stops leading it forgets them.
//! * Transaction requests to any other broker get NOT_COORDINATOR
//!   (COORDINATOR_LOAD_IN_PROGRESS while it loads).
//! * State writes are leader appends under the partition's leadership,
//!   answered once the high watermark passed them
//!   (`TxnCoordinator::persist`); markers go to each partition's leader
//!   (`replica::markers`).
//!
//! A broker alone is the coordinator of every transactional id: nothing
//! here applies.

use std::sync::Arc;
use std::time::Duration;

use super::placement::{find_internal, step, InternalTopic, Step};
use crate::errors::warn;
use crate::Shared;
use ottla_storage::txn_state::TXN_TOPIC;

/// The partition of `__transaction_state` every transactional id maps to.
pub const TXN_PARTITION: i32 = 0;

/// Partitions of `__transaction_state` in a cluster: as the single broker.
pub const TXN_TOPIC_PARTITIONS: i32 = 1;

/// Kafka's `transaction.state.log.replication.factor` default.
pub const DEFAULT_TXN_TOPIC_REPLICATION_FACTOR: i16 = 3;

/// Kafka's `transaction.state.log.min.isr` default.
pub const DEFAULT_TXN_TOPIC_MIN_ISR: i32 = 2;

/// The leader epoch in which this broker leads the transaction log now.
fn leads(shared: &Shared) -> Option<i32> {
    match shared.replicas.leader_partition(TXN_TOPIC, TXN_PARTITION) {
        Ok(Some(p)) if !p.is_retired() => Some(p.state.lock().assignment.leader_epoch),
        _ => None,
    }
}

/// After the replica manager applied a metadata change: load the
/// transactions when this broker became the leader of the transaction log,
/// forget them when it stopped. Blocking (reads the log).
pub fn after_assignments(shared: &Shared) {
    if shared.cluster.is_none() {
        return;
    }
    let txns = &shared.txns;
    let _one = txns.changing();
    match step(txns.phase(), leads(shared)) {
        Step::Nothing => {}
        Step::Load(epoch) => match crate::blocking(|| txns.load(epoch)) {
            Ok(n) => crate::errors::debug(&format!(
                "broker {}: transaction coordinator in epoch {epoch} ({n} transactional ids)",
                shared.node_id()
            )),
            Err(e) => warn(&format!("cannot load the transactions of {TXN_TOPIC}: {e}")),
        },
        Step::Unload => {
            txns.unload();
            crate::errors::debug(&format!(
                "broker {}: no longer the transaction coordinator",
                shared.node_id()
            ));
        }
    }
}

/// FindCoordinator for a transactional id in a cluster: the leader of the
/// transaction log, with its advertised address. The topic is created
/// through the controller when it does not exist yet.
/// COORDINATOR_NOT_AVAILABLE while it has no leader (or cannot be created).
pub async fn find(shared: &Arc<Shared>) -> Result<(i32, String, u16), i16> {
    find_internal(
        shared,
        InternalTopic {
            name: TXN_TOPIC,
            partitions: TXN_TOPIC_PARTITIONS,
            partition: TXN_PARTITION,
            replication_factor: DEFAULT_TXN_TOPIC_REPLICATION_FACTOR,
            min_insync_replicas: DEFAULT_TXN_TOPIC_MIN_ISR,
        },
    )
    .await
}

/// Where a partition of a transaction is, for its marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerTarget {
    /// The topic or partition is gone: no marker (Kafka drops it).
    Gone,
    /// No live leader now: try again later.
    NoLeader,
    /// Led by this broker in this leader epoch: written here.
    Local(i32),
    /// Led by that broker: sent to it (WriteTxnMarkers).
    Remote(i32),
}

/// Where `topic`-`partition` is in `image`, seen from broker `local`.
pub fn marker_target(
    image: &ottla_meta::image::MetadataImage,
    local: i32,
    topic: &str,
    partition: u32,
) -> MarkerTarget {
    let Some(p) = image
        .topic_ids
        .get(topic)
        .and_then(|id| image.topics.get(id))
        .and_then(|t| t.partitions.get(&i32::try_from(partition).unwrap_or(-1)))
    else {
        return MarkerTarget::Gone;
    };
    match p.leader {
        Some(l) if !image.brokers.get(&l).is_some_and(|b| !b.fenced) => MarkerTarget::NoLeader,
        Some(l) if l == local => MarkerTarget::Local(p.leader_epoch),
        Some(l) => MarkerTarget::Remote(l),
        None => MarkerTarget::NoLeader,
    }
}

/// The wait before the next round of markers after `round` failed ones:
/// doubling from 50 ms, at most a second.
pub fn marker_backoff(round: u32) -> Duration {
    Duration::from_millis((50u64 << round.min(5)).min(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ottla_meta::image::MetadataImage;
    use ottla_meta::records::{Endpoint, MetadataRecord, PartitionAssignment, TopicId};
    use std::collections::BTreeMap;

    fn image() -> MetadataImage {
        let mut img = MetadataImage::default();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            let offset = 10 * i as u64 + 1;
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
            img.apply(&r, offset).expect("register");
            let epoch = img.brokers[&id].broker_epoch;
            img.apply(
                &MetadataRecord::UnfenceBroker {
                    broker_id: id,
                    broker_epoch: epoch,
                },
                offset + 1,
            )
            .expect("unfence");
        }
        let placed = |partition: i32, leader: i32| PartitionAssignment {
            partition,
            isr: vec![leader],
            leader: Some(leader),
            replicas: vec![leader],
        };
        img.apply(
            &MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: TopicId([1; 16]),
                partitions: vec![placed(0, 1), placed(1, 2), placed(2, 3)],
                configs: BTreeMap::new(),
            },
            100,
        )
        .expect("create");
        // Broker 3 stopped heartbeating.
        if let Some(b) = img.brokers.get_mut(&3) {
            b.fenced = true;
        }
        img
    }

    #[test]
    fn markers_go_to_each_partitions_live_leader() {
        let img = image();
        let epoch = img.topics[&TopicId([1; 16])].partitions[&0].leader_epoch;
        assert_eq!(marker_target(&img, 1, "t", 0), MarkerTarget::Local(epoch));
        assert_eq!(marker_target(&img, 1, "t", 1), MarkerTarget::Remote(2));
        assert_eq!(marker_target(&img, 2, "t", 0), MarkerTarget::Remote(1));
        // Broker 3 is fenced: no live leader (yet).
        assert_eq!(marker_target(&img, 1, "t", 2), MarkerTarget::NoLeader);
        assert_eq!(marker_target(&img, 1, "t", 3), MarkerTarget::Gone);
        assert_eq!(marker_target(&img, 1, "gone", 0), MarkerTarget::Gone);
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(marker_backoff(0), Duration::from_millis(50));
        assert_eq!(marker_backoff(1), Duration::from_millis(100));
        assert_eq!(marker_backoff(4), Duration::from_millis(800));
        assert_eq!(marker_backoff(5), Duration::from_millis(1000));
        assert_eq!(marker_backoff(40), Duration::from_millis(1000));
    }
}
