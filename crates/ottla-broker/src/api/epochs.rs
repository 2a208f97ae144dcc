//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends on
//! this broker's log, so a consumer can check that the position it resumes
//! from (a committed offset, a seek, a fetch position after a leader change)
//! is still on the log and was not truncated away.
//!
//! Each partition's answer is Kafka's (`LeaderEpochFileCache.endOffsetFor`,
//! through the partition's cache: `ottla_storage::log::leader_epoch`):
//! * the current (latest) epoch ends at the log end offset;
//! * an older epoch ends where the next larger one starts, answered with
//!   the largest epoch known at or below the one asked for;
//! * an epoch below every epoch still on the log (its records deleted
//!   with the log start) answers itself with the first epoch's start;
//! * -1, or an epoch above the current one: -1 / -1 (UNDEFINED_EPOCH and
//!   UNDEFINED_EPOCH_OFFSET).
//!
//! `current_leader_epoch` (not -1) is checked first, as for Fetch:
//! FENCED_LEADER_EPOCH below the partition's, UNKNOWN_LEADER_EPOCH above.
//! v3's `replica_id` (-1 for a consumer, a broker id for a follower) is not
//! checked: without an authorizer Kafka answers both alike. Versions 2-4,
//! as Kafka 4.x serves (v0-1 were removed by KIP-896).

use std::sync::Arc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;

pub async fn offset_for_leader_epoch(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: OffsetForLeaderEpochRequest,
    _v: i16,
) -> OffsetForLeaderEpochResponse {
    let mut resp = OffsetForLeaderEpochResponse::default();
    // ACLs (Kafka's): a follower (replica_id >= 0) needs CLUSTER_ACTION on
    // the cluster, a consumer DESCRIBE on each topic.
    let follower_refused =
        req.replica_id.0 >= 0 && !_s.authorized_cluster(shared, Operation::ClusterAction);
    for t in req.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        let name = t.topic.as_str();
        let refused = if follower_refused {
            Some(code::CLUSTER_AUTHORIZATION_FAILED)
        } else if !_s.authorized(shared, Operation::Describe, ResourceType::Topic, name) {
            Some(code::TOPIC_AUTHORIZATION_FAILED)
        } else {
            None
        };
        let known = super::blocking(|| shared.store.topic(name));
        for p in t.partitions {
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            if let Some(c) = refused {
                e.error_code = c;
                e.leader_epoch = -1;
                e.end_offset = -1;
                tr.partitions.push(e);
                continue;
            }
            let current = (p.current_leader_epoch != -1).then_some(p.current_leader_epoch);
            match &known {
                Ok(Some(_)) => match shared.replicas.leader_epochs(name, p.partition, current) {
                    Ok(epochs) => {
                        let (epoch, end) = epochs.end_offset_for(p.leader_epoch);
                        e.leader_epoch = epoch;
                        e.end_offset = end;
                    }
                    Err(c) => e.error_code = c,
                },
                Ok(None) => e.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Err(err) => e.error_code = kafka_code(err),
            }
            tr.partitions.push(e);
        }
        resp.topics.push(tr);
    }
    resp
}

#[cfg(test)]
mod tests {
    //! OffsetForLeaderEpoch v4 (flexible) and Fetch v12+ (diverging epochs,
    //! KIP-951's current leader), encoded by kafka-protocol over a socket.
    //! Versions 2-3, ListOffsets and Metadata are checked from Python
    //! (`tests/test_leader_epochs.py`).

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
        OffsetForLeaderEpochResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};

    use crate::errors::code;
    use crate::{Broker, BrokerConfig};
    use ottla_client::producer::{Producer, ProducerConfig};
    use ottla_storage::store::Store;

    fn call<Req: Encodable, Resp: Decodable>(
        s: &mut TcpStream,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = version;
        header.correlation_id = 11;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(version))
            .expect("header");
        body.encode(&mut buf, version).expect("body");
        let n = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&n.to_be_bytes());
        s.write_all(&buf).expect("write");
        let mut size = [0u8; 4];
        s.read_exact(&mut size).expect("size");
        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
        s.read_exact(&mut body).expect("body");
        let mut body = Bytes::from(body);
        let h = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .expect("response header");
        assert_eq!(h.correlation_id, 11);
        Resp::decode(&mut body, version).expect("response")
    }

    /// A broker over a directory whose partition 0 of "t" holds 10 records
    /// in epoch 0 and 5 in epoch 2, and an empty "e".
    fn setup() -> (tempfile::TempDir, Broker, TcpStream, uuid::Uuid) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let p = Producer::new(
            store.clone(),
            ProducerConfig {
                num_partitions: 1,
                ..Default::default()
            },
        )
        .expect("producer");
        let send = |n: usize, topic: &str| {
            for _ in 0..n {
                p.send(topic, None, Some(b"v"), &[], Some(0), None)
                    .expect("send");
            }
            for c in p.flush() {
                assert!(c.error().is_none(), "{:?}", c.error());
                c.run();
            }
        };
        send(10, "t");
        store
            .partition_by_name("t", 0)
            .expect("partition")
            .set_leader_epoch(2);
        send(5, "t");
        store.create_topic("e", 1, &[]).expect("create");
        let id = store.topic("t").expect("topic").expect("t exists").id;
        let broker = Broker::start(store, BrokerConfig::default()).expect("start");
        let s = TcpStream::connect(broker.local_addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        (dir, broker, s, uuid::Uuid::from_bytes(id.0))
    }

    fn ofle(
        s: &mut TcpStream,
        version: i16,
        topic: &str,
        asks: &[(i32, i32, i32)],
    ) -> Vec<(i16, i32, i64)> {
        let mut t = OffsetForLeaderTopic::default();
        t.topic = TopicName(topic.to_string().into());
        for &(partition, current, epoch) in asks {
            let mut p = OffsetForLeaderPartition::default();
            p.partition = partition;
            p.current_leader_epoch = current;
            p.leader_epoch = epoch;
            t.partitions.push(p);
        }
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = (-1).into();
        req.topics.push(t);
        let r: OffsetForLeaderEpochResponse = call(s, ApiKey::OffsetForLeaderEpoch, version, &req);
        assert_eq!(r.topics.len(), 1);
        r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
            .collect()
    }

    #[test]
    fn offset_for_leader_epoch_answers_as_kafkas_cache() {
        let (_d, _b, mut s, _) = setup();
        for v in 2..=4 {
            let got = ofle(
                &mut s,
                v,
                "t",
                &[
                    (0, -1, 2),
                    (0, 2, 0),
                    (0, -1, 1),
                    (0, -1, 3),
                    (0, -1, -1),
                    (0, 1, 2),
                    (0, 3, 2),
                    (1, -1, 0),
                ],
            );
            assert_eq!(
                got,
                [
                    (code::NONE, 2, 15),
                    (code::NONE, 0, 10),
                    (code::NONE, 0, 10),
                    (code::NONE, -1, -1),
                    (code::NONE, -1, -1),
                    (code::FENCED_LEADER_EPOCH, -1, -1),
                    (code::UNKNOWN_LEADER_EPOCH, -1, -1),
                    (code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                ],
                "v{v}"
            );
        }
        // An empty partition: the current epoch starts (and ends) at 0.
        assert_eq!(ofle(&mut s, 4, "e", &[(0, 0, 0)]), [(code::NONE, 0, 0)]);
        assert_eq!(
            ofle(&mut s, 4, "nope", &[(0, -1, 0)]),
            [(code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]
        );
    }

    #[test]
    fn epochs_are_answered_only_at_versions_that_have_them() {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
        use kafka_protocol::messages::{
            ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
        };
        let (_d, _b, mut s, _) = setup();
        // A field a version does not have cannot be encoded: the broker
        // would close the connection instead of answering.
        for v in 0..=13 {
            let mut t = MetadataRequestTopic::default();
            t.name = Some(TopicName("t".to_string().into()));
            let mut req = MetadataRequest::default();
            req.topics = Some(vec![t]);
            let r: MetadataResponse = call(&mut s, ApiKey::Metadata, v, &req);
            let epoch = r.topics[0].partitions[0].leader_epoch;
            assert_eq!(epoch, if v >= 7 { 0 } else { -1 }, "Metadata v{v}");
        }
        for v in 1..=7 {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = 0;
            p.timestamp = -1;
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName("t".to_string().into());
            t.partitions.push(p);
            let mut req = ListOffsetsRequest::default();
            req.replica_id = (-1).into();
            req.topics.push(t);
            let r: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, v, &req);
            let p = &r.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.offset),
                (code::NONE, 15),
                "ListOffsets v{v}"
            );
            assert_eq!(
                p.leader_epoch,
                if v >= 4 { 2 } else { -1 },
                "ListOffsets v{v}"
            );
        }
    }

    fn fetch(
        s: &mut TcpStream,
        id: uuid::Uuid,
        version: i16,
        offset: i64,
        current: i32,
        last_fetched: i32,
    ) -> FetchResponse {
        let mut p = FetchPartition::default();
        p.partition = 0;
        p.fetch_offset = offset;
        p.current_leader_epoch = current;
        p.last_fetched_epoch = last_fetched;
        p.partition_max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        if version >= 13 {
            t.topic_id = id;
        } else {
            t.topic = TopicName("t".to_string().into());
        }
        t.partitions.push(p);
        let mut req = FetchRequest::default();
        req.replica_id = (-1).into();
        req.max_wait_ms = 0;
        req.max_bytes = 1 << 20;
        req.topics.push(t);
        call(s, ApiKey::Fetch, version, &req)
    }

    #[test]
    fn fetch_checks_epochs_and_answers_a_diverging_one() {
        let (_d, b, mut s, id) = setup();
        // The fetcher's log agrees: records, no diverging epoch.
        let r = fetch(&mut s, id, 12, 12, 2, 2);
        let pd = &r.responses[0].partitions[0];
        assert_eq!(pd.error_code, code::NONE);
        assert_eq!(
            (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset),
            (-1, -1)
        );
        assert!(pd.records.as_ref().is_some_and(|r| !r.is_empty()));
        let r = fetch(&mut s, id, 12, 10, 2, 0);
        let pd = &r.responses[0].partitions[0];
        assert_eq!((pd.error_code, pd.diverging_epoch.epoch), (code::NONE, -1));
        // Epoch 0 ends at 10 here: a fetcher at 12 that last fetched in it
        // diverged at 10.
        let r = fetch(&mut s, id, 12, 12, 2, 0);
        let pd = &r.responses[0].partitions[0];
        assert_eq!(pd.error_code, code::NONE);
        assert_eq!(
            (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset),
            (0, 10)
        );
        assert_eq!((pd.high_watermark, pd.log_start_offset), (15, 0));
        assert!(pd.records.as_ref().is_some_and(|r| r.is_empty()));
        // Epoch 1 was never here: it ends where epoch 2 starts, with epoch 0.
        let r = fetch(&mut s, id, 13, 11, 2, 1);
        let pd = &r.responses[0].partitions[0];
        assert_eq!(
            (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset),
            (0, 10)
        );
        // An epoch above every one here: out of range.
        let r = fetch(&mut s, id, 12, 12, -1, 3);
        assert_eq!(
            r.responses[0].partitions[0].error_code,
            code::OFFSET_OUT_OF_RANGE
        );
        // current_leader_epoch checked from v9 on; before, and -1, not.
        for (v, current, want) in [
            (9, 1, code::FENCED_LEADER_EPOCH),
            (11, 3, code::UNKNOWN_LEADER_EPOCH),
            (9, -1, code::NONE),
            (8, 1, code::NONE),
        ] {
            let r = fetch(&mut s, id, v, 0, current, -1);
            assert_eq!(
                r.responses[0].partitions[0].error_code, want,
                "v{v} {current}"
            );
        }
        // v16+: a fenced fetcher is told the current leader and where it is.
        let r = fetch(&mut s, id, 16, 0, 1, -1);
        let pd = &r.responses[0].partitions[0];
        assert_eq!(pd.error_code, code::FENCED_LEADER_EPOCH);
        assert_eq!(
            (
                pd.current_leader.leader_id.0,
                pd.current_leader.leader_epoch
            ),
            (0, 2)
        );
        assert_eq!(r.node_endpoints.len(), 1);
        assert_eq!(r.node_endpoints[0].port, i32::from(b.local_addr().port()));
    }
}
