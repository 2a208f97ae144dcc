//! Transaction markers: the coordinator's COMMIT or ABORT written into one
//! partition of a transaction, through the replica manager like any
//! append, and the partition's producer state told, so its last stable
//! offset moves and an abort is indexed.
//!
//! In a cluster a marker is a leader append: written only by the
//! partition's leader (NOT_LEADER_OR_FOLLOWER otherwise, or when the
//! coordinator expected another leader epoch), under the partition's
//! leadership lock, and the coordinator waits for the high watermark to pass
//! it before the transaction counts as written there (Kafka writes markers
//! with acks=-1). Markers for partitions another broker leads travel as
//! WriteTxnMarkers (API 27) over a broker-to-broker connection
//! ([`send_markers`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use ottla_record::batch::{marker_batch, ControlType};
use ottla_storage::error::Error;
use ottla_storage::log::now_ms;

use super::fetcher::PeerConnection;
use super::partition_state::BrokerId;
use super::ReplicaManager;
use crate::errors::{code, kafka_code, warn};

/// The version of WriteTxnMarkers brokers send (the only one Kafka 4
/// serves; KIP-890's v2 adds the transaction version).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// How long a marker waits for the in-sync replicas (Kafka's markers use
/// the transaction log's `transaction.state.log` request timeout).
pub const MARKER_REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// One transaction's marker: whose transaction (producer id and epoch), how
/// it ended, and the coordinator's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub epoch: i16,
    pub kind: ControlType,
    pub coordinator_epoch: i32,
}

impl ReplicaManager {
    /// Append a marker ending `producer_id`'s transaction (at `epoch`) to
    /// `topic`-`partition`. A partition deleted meanwhile is skipped, as
    /// Kafka drops markers for partitions that are gone. Blocking.
    ///
    /// In a cluster only the partition's leader writes it (and, given
    /// `leader_epoch`, only in that epoch): NOT_LEADER_OR_FOLLOWER
    /// otherwise. Returns the log end after the marker when the caller must
    /// wait for the high watermark to pass it (cluster mode), else `None`.
    pub fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        marker: TxnMarker,
        leader_epoch: Option<i32>,
    ) -> Result<Option<i64>, i16> {
        let TxnMarker {
            producer_id,
            epoch,
            kind,
            coordinator_epoch,
        } = marker;
        let Ok(index) = i32::try_from(partition) else {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let leader = self.leader_partition(topic, index)?;
        let _lead = match &leader {
            Some(p) => {
                let g = p.leadership.read();
                if p.is_retired() {
                    return Err(code::NOT_LEADER_OR_FOLLOWER);
                }
                let ours = p.state.lock().assignment.leader_epoch;
                if marker_epoch_refused(ours, leader_epoch) {
                    return Err(code::NOT_LEADER_OR_FOLLOWER);
                }
                Some(g)
            }
            None => None,
        };
        let log = match &leader {
            Some(p) => p.log.clone(),
            None => match self.store.partition_by_name(topic, partition) {
                Ok(l) => l,
                Err(Error::UnknownTopicOrPartition { .. }) => return Ok(None),
                Err(e) => return Err(kafka_code(&e)),
            },
        };
        let state = self.producers.partition(&log).map_err(|e| kafka_code(&e))?;
        let mut producers = state.lock();
        let now = now_ms();
        let mut batch = marker_batch(producer_id, epoch, kind, coordinator_epoch, now);
        let info = log.append(&mut batch, self.durability).map_err(|e| {
            warn(&format!("marker to {topic}-{partition} failed: {e}"));
            kafka_code(&e)
        })?;
        producers.state.complete_txn(
            producer_id,
            epoch,
            kind,
            coordinator_epoch,
            info.base_offset,
            now,
        );
        drop(producers);
        drop(_lead);
        match leader {
            Some(p) => {
                self.after_leader_append(&p);
                Ok(Some(info.base_offset + 1))
            }
            None => Ok(None),
        }
    }

    /// Cluster mode: the listener of broker `broker` and the source address
    /// outgoing connections bind to (for WriteTxnMarkers).
    pub fn peer(&self, broker: BrokerId) -> Option<(SocketAddr, Option<IpAddr>)> {
        let cluster = self.cluster()?;
        let addr = cluster.link.peers.address(broker)?;
        Some((addr, cluster.link.source_ip))
    }
}

/// Whether a marker sent for leader epoch `theirs` is refused by a leader
/// in epoch `ours` (the coordinator saw another leadership).
pub fn marker_epoch_refused(ours: i32, theirs: Option<i32>) -> bool {
    theirs.is_some_and(|t| t != ours)
}

/// One WriteTxnMarkers request for one transaction: its marker into each of
/// `partitions`.
pub fn markers_request(
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    partitions: &[(String, u32)],
) -> WriteTxnMarkersRequest {
    let mut m = WritableTxnMarker::default();
    m.producer_id = ProducerId(producer_id);
    m.producer_epoch = epoch;
    m.transaction_result = commit;
    m.coordinator_epoch = coordinator_epoch;
    for (topic, p) in partitions {
        let index = i32::try_from(*p).unwrap_or(i32::MAX);
        match m.topics.last_mut() {
            Some(t) if t.name.as_str() == topic.as_str() => t.partition_indexes.push(index),
            _ => {
                let mut t = WritableTxnMarkerTopic::default();
                t.name = TopicName(StrBytes::from_string(topic.clone()));
                t.partition_indexes.push(index);
                m.topics.push(t);
            }
        }
    }
    let mut r = WriteTxnMarkersRequest::default();
    r.markers.push(m);
    r
}

/// The per-partition answers of a WriteTxnMarkers response for
/// `producer_id`: (topic, partition, error).
pub fn marker_results(r: &WriteTxnMarkersResponse, producer_id: i64) -> Vec<(String, u32, i16)> {
    r.markers
        .iter()
        .filter(|m| m.producer_id.0 == producer_id)
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| {
            t.partitions.iter().filter_map(move |p| {
                u32::try_from(p.partition_index)
                    .ok()
                    .map(|i| (t.name.as_str().to_string(), i, p.error_code))
            })
        })
        .collect()
}

/// Send `req` to the broker at `addr` (its leader of each partition) and
/// return its answer.
pub async fn send_markers(
    addr: SocketAddr,
    source: Option<IpAddr>,
    req: &WriteTxnMarkersRequest,
) -> std::io::Result<WriteTxnMarkersResponse> {
    let mut conn = PeerConnection::connect(addr, source).await?;
    conn.call(ApiKey::WriteTxnMarkers, WRITE_TXN_MARKERS_VERSION, req)
        .await
}

#[cfg(test)]
mod tests {
    use super::super::validate::validate;
    use super::{marker_epoch_refused, marker_results, markers_request};
    use crate::errors::code;
    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    use kafka_protocol::messages::WriteTxnMarkersResponse;
    use ottla_record::batch::*;
    use ottla_storage::config::TopicConfig;

    #[test]
    fn clients_may_not_write_markers_but_may_write_transactional_batches() {
        let cfg = TopicConfig::default();
        let m = marker_batch(1, 0, ControlType::Commit, 0, 1);
        let r = validate(&m, &cfg, None, 1).expect_err("a client's marker");
        assert_eq!(r.code, code::INVALID_RECORD);
        // Data with the transactional bit and a producer id passes (its
        // transaction is checked against the coordinator by Produce).
        let mut b = ottla_record::BatchBuilder::with_capacity(128);
        b.append(1, None, Some(b"v"), &[]);
        let mut v = b.finish().to_vec();
        v[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&TRANSACTIONAL_FLAG.to_be_bytes());
        seal_crc(&mut v);
        let r = validate(&v, &cfg, None, 1).expect_err("no producer id");
        assert_eq!(r.code, code::INVALID_RECORD);
        v[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&5i64.to_be_bytes());
        seal_crc(&mut v);
        let ok = validate(&v, &cfg, None, 1).unwrap_or_else(|r| panic!("refused: {}", r.code));
        assert!(ok[0].1.transactional);
    }

    #[test]
    fn a_marker_for_another_leader_epoch_is_refused() {
        assert!(!marker_epoch_refused(4, None));
        assert!(!marker_epoch_refused(4, Some(4)));
        assert!(marker_epoch_refused(4, Some(3)));
        assert!(marker_epoch_refused(4, Some(5)));
    }

    #[test]
    fn markers_go_out_grouped_by_topic_and_come_back_per_partition() {
        let parts = vec![
            ("a".to_string(), 0),
            ("a".to_string(), 2),
            ("b".to_string(), 1),
        ];
        let req = markers_request(7, 3, true, 9, &parts);
        assert_eq!(req.markers.len(), 1);
        let m = &req.markers[0];
        assert_eq!((m.producer_id.0, m.producer_epoch), (7, 3));
        assert!(m.transaction_result);
        assert_eq!(m.coordinator_epoch, 9);
        assert_eq!(m.topics.len(), 2);
        assert_eq!(m.topics[0].partition_indexes, vec![0, 2]);
        assert_eq!(m.topics[1].name.as_str(), "b");
        let mut resp = WriteTxnMarkersResponse::default();
        let mut r = WritableTxnMarkerResult::default();
        r.producer_id = m.producer_id;
        for t in &m.topics {
            let mut tr = WritableTxnMarkerTopicResult::default();
            tr.name = t.name.clone();
            for p in &t.partition_indexes {
                let mut pr = WritableTxnMarkerPartitionResult::default();
                pr.partition_index = *p;
                pr.error_code = if *p == 2 {
                    code::NOT_LEADER_OR_FOLLOWER
                } else {
                    code::NONE
                };
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        resp.markers.push(r);
        assert_eq!(
            marker_results(&resp, 7),
            vec![
                ("a".to_string(), 0, code::NONE),
                ("a".to_string(), 2, code::NOT_LEADER_OR_FOLLOWER),
                ("b".to_string(), 1, code::NONE),
            ]
        );
        assert!(marker_results(&resp, 8).is_empty());
    }
}
