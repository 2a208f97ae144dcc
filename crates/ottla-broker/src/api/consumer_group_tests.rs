//! ConsumerGroupHeartbeat, ConsumerGroupDescribe and the classic APIs
//! meeting consumer groups, over the wire: Kafka's error codes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, JoinGroupRequest,
    JoinGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::coordinator::consumer_group::{error, MigrationPolicy};
use crate::errors::code;
use crate::{Broker, BrokerConfig};
use ottla_storage::store::Store;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

struct Conn {
    s: TcpStream,
    cid: i32,
}

impl Conn {
    fn call<Req: Encodable, Resp: Decodable>(&mut self, api: ApiKey, v: i16, body: &Req) -> Resp {
        self.cid += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = api as i16;
        header.request_api_version = v;
        header.correlation_id = self.cid;
        header.client_id = Some(s("wire-test"));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, api.request_header_version(v))
            .expect("header");
        body.encode(&mut buf, v).expect("body");
        let n = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&n.to_be_bytes());
        self.s.write_all(&buf).expect("send");
        let mut size = [0u8; 4];
        self.s.read_exact(&mut size).expect("size");
        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
        self.s.read_exact(&mut body).expect("body");
        let mut body = Bytes::from(body);
        let h = ResponseHeader::decode(&mut body, api.response_header_version(v)).expect("header");
        assert_eq!(h.correlation_id, self.cid);
        Resp::decode(&mut body, v).expect("response")
    }

    fn heartbeat(
        &mut self,
        f: impl FnOnce(&mut ConsumerGroupHeartbeatRequest),
    ) -> ConsumerGroupHeartbeatResponse {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(s("g"));
        r.member_id = s("m1");
        r.member_epoch = 0;
        r.rebalance_timeout_ms = 30_000;
        r.subscribed_topic_names = Some(vec![TopicName(s("t"))]);
        r.topic_partitions = Some(Vec::new());
        f(&mut r);
        self.call(ApiKey::ConsumerGroupHeartbeat, 1, &r)
    }

    fn commit(&mut self, member: &str, epoch: i32) -> i16 {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = 5;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(s("t"));
        t.partitions = vec![p];
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(s("g"));
        req.generation_id_or_member_epoch = epoch;
        req.member_id = s(member);
        req.topics = vec![t];
        let r: OffsetCommitResponse = self.call(ApiKey::OffsetCommit, 8, &req);
        r.topics[0].partitions[0].error_code
    }

    fn classic_join(&mut self) -> i16 {
        let mut p = JoinGroupRequestProtocol::default();
        p.name = s("range");
        p.metadata = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0]);
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(s("g"));
        req.session_timeout_ms = 10_000;
        req.rebalance_timeout_ms = 10_000;
        req.protocol_type = s("consumer");
        req.protocols = vec![p];
        let r: JoinGroupResponse = self.call(ApiKey::JoinGroup, 5, &req);
        if r.error_code != code::MEMBER_ID_REQUIRED {
            return r.error_code;
        }
        // KIP-394: join again with the member id the broker handed out.
        req.member_id = r.member_id;
        let r: JoinGroupResponse = self.call(ApiKey::JoinGroup, 5, &req);
        r.error_code
    }
}

fn start() -> (tempfile::TempDir, Broker, Arc<Store>, Conn) {
    start_with(MigrationPolicy::default())
}

fn start_with(policy: MigrationPolicy) -> (tempfile::TempDir, Broker, Arc<Store>, Conn) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    store.create_topic("t", 2, &[]).expect("create");
    let config = BrokerConfig {
        group_consumer_migration_policy: policy,
        ..BrokerConfig::default()
    };
    let broker = Broker::start(store.clone(), config).expect("start");
    let s = TcpStream::connect(broker.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (dir, broker, store, Conn { s, cid: 0 })
}

#[test]
fn consumer_group_heartbeats_answer_with_kafkas_error_codes() {
    let (_d, _broker, store, mut c) = start();
    let r = c.heartbeat(|r| r.member_id = s(""));
    assert_eq!(
        r.error_code,
        code::INVALID_REQUEST,
        "v1 members bring their id"
    );
    assert!(r.error_message.is_some());
    let r = c.heartbeat(|r| r.rebalance_timeout_ms = -1);
    assert_eq!(r.error_code, code::INVALID_REQUEST);
    let r = c.heartbeat(|r| r.server_assignor = Some(s("sticky")));
    assert_eq!(r.error_code, error::UNSUPPORTED_ASSIGNOR);
    let r = c.heartbeat(|r| r.member_epoch = 3);
    assert_eq!(r.error_code, code::UNKNOWN_MEMBER_ID, "no such group (yet)");

    let r = c.heartbeat(|_| {});
    assert_eq!(r.error_code, code::NONE);
    assert_eq!(r.member_id.as_deref(), Some("m1"));
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 1000);
    let a = r.assignment.expect("assignment");
    let id = store.topic("t").expect("topic").expect("exists").id;
    assert_eq!(a.topic_partitions.len(), 1);
    assert_eq!(a.topic_partitions[0].topic_id.as_bytes(), &id.0);
    assert_eq!(a.topic_partitions[0].partitions, vec![0, 1]);

    let r = c.heartbeat(|r| r.member_epoch = 7);
    assert_eq!(r.error_code, error::FENCED_MEMBER_EPOCH);
    let r = c.heartbeat(|r| {
        r.member_id = s("other");
        r.member_epoch = 1;
    });
    assert_eq!(r.error_code, code::UNKNOWN_MEMBER_ID);

    // Commits carry the member epoch (in the generation field before v9).
    assert_eq!(c.commit("m1", 0), error::STALE_MEMBER_EPOCH);
    assert_eq!(c.commit("other", 1), code::UNKNOWN_MEMBER_ID);
    assert_eq!(c.commit("", -1), code::UNKNOWN_MEMBER_ID);
    assert_eq!(c.commit("m1", 1), code::NONE);
    let committed = store
        .offsets()
        .and_then(|o| o.committed("g", "t", 0))
        .expect("committed");
    assert_eq!(committed.map(|c| c.offset), Some(5));
}

#[test]
fn classic_and_consumer_groups_of_one_name_keep_apart() {
    let (_d, _broker, _store, mut c) = start_with(MigrationPolicy::Disabled);
    assert_eq!(c.heartbeat(|_| {}).error_code, code::NONE);
    // (A classic member would be served by the consumer group even with
    // the migration disabled, as by Kafka 4.x: the policy governs
    // conversions only; `consumer_group_classic`'s tests.)
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(s("g"))];
    let d: DescribeGroupsResponse = c.call(ApiKey::DescribeGroups, 5, &req);
    assert_eq!(d.groups[0].error_code, code::GROUP_ID_NOT_FOUND);
    assert_eq!(d.groups[0].group_state.as_str(), "Dead");
    // ListGroups: a "consumer" group.
    let mut req = ListGroupsRequest::default();
    req.types_filter = vec![s("consumer")];
    let l: ListGroupsResponse = c.call(ApiKey::ListGroups, 5, &req);
    assert_eq!(l.groups.len(), 1);
    assert_eq!(l.groups[0].group_type.as_str(), "consumer");
    assert_eq!(l.groups[0].group_state.as_str(), "Stable");
    req.types_filter = vec![s("classic")];
    let l: ListGroupsResponse = c.call(ApiKey::ListGroups, 5, &req);
    assert!(l.groups.is_empty());
    // ConsumerGroupDescribe.
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![GroupId(s("g")), GroupId(s("missing"))];
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 1, &req);
    let g = &d.groups[0];
    assert_eq!(g.error_code, code::NONE);
    assert_eq!((g.group_epoch, g.assignment_epoch), (1, 1));
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.members.len(), 1);
    let m = &g.members[0];
    assert_eq!((m.member_id.as_str(), m.member_epoch), ("m1", 1));
    assert_eq!(m.client_id.as_str(), "wire-test");
    assert_eq!(m.assignment.topic_partitions[0].partitions, vec![0, 1]);
    assert_eq!(
        m.target_assignment.topic_partitions[0].topic_name.as_str(),
        "t"
    );
    assert_eq!(d.groups[1].error_code, code::GROUP_ID_NOT_FOUND);
    // DeleteGroups: the group has members.
    let mut req = DeleteGroupsRequest::default();
    req.groups_names = vec![GroupId(s("g"))];
    let d: DeleteGroupsResponse = c.call(ApiKey::DeleteGroups, 2, &req);
    assert_eq!(d.results[0].error_code, code::NON_EMPTY_GROUP);

    // The member leaves: the name is free for classic members, and then
    // consumer-protocol members are refused.
    let r = c.heartbeat(|r| {
        r.member_epoch = -1;
        r.topic_partitions = None;
    });
    assert_eq!((r.error_code, r.member_epoch), (code::NONE, -1));
    // Kafka keeps the empty consumer group.
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![GroupId(s("g"))];
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 1, &req);
    assert_eq!(d.groups[0].error_code, code::NONE);
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    assert_eq!(d.groups[0].group_epoch, 2);
    assert!(d.groups[0].members.is_empty());
    assert_eq!(c.classic_join(), code::NONE);
    // Now a classic group: not a consumer group.
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 1, &req);
    assert_eq!(d.groups[0].error_code, code::GROUP_ID_NOT_FOUND);
    let r = c.heartbeat(|r| r.member_id = s("m2"));
    assert_eq!(r.error_code, code::GROUP_ID_NOT_FOUND);
}

#[test]
fn a_classic_member_joins_a_consumer_group_and_is_described_as_classic() {
    let (_d, _broker, _store, mut c) = start();
    assert_eq!(c.heartbeat(|_| {}).error_code, code::NONE);
    // The online migration (Kafka 4.x's default policy): a classic member
    // of the consumer group.
    assert_eq!(c.classic_join(), code::NONE);
    let mut req = ConsumerGroupDescribeRequest::default();
    req.group_ids = vec![GroupId(s("g"))];
    let d: ConsumerGroupDescribeResponse = c.call(ApiKey::ConsumerGroupDescribe, 1, &req);
    let mut kinds: Vec<(bool, i8)> = d.groups[0]
        .members
        .iter()
        .map(|m| (m.member_id.as_str() == "m1", m.member_type))
        .collect();
    kinds.sort();
    assert_eq!(kinds, vec![(false, 0), (true, 1)]);
    // The consumer member leaves: the classic member's group is classic.
    let r = c.heartbeat(|r| {
        r.member_epoch = -1;
        r.topic_partitions = None;
    });
    assert_eq!(r.error_code, code::NONE);
    let mut req = ListGroupsRequest::default();
    req.types_filter = vec![s("classic")];
    let l: ListGroupsResponse = c.call(ApiKey::ListGroups, 5, &req);
    assert_eq!(l.groups.len(), 1);
    assert_eq!(l.groups[0].group_state.as_str(), "PreparingRebalance");
}
