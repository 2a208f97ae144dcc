//! The request-frame oracle: arbitrary bytes handed to the broker as one
//! request frame (what follows the size prefix), through the same path a
//! connection takes (`dispatch::handle`: prefix, version check, header and
//! body decode with `kafka-protocol`, the API's handler, response encode),
//! on a running broker over a scratch directory. Shared by the cargo-fuzz
//! target `request_frame` (`fuzz/`) and the replay in `cargo test`
//! (`tests/fuzz_requests.rs`).
//!
//! Promises checked: no panic anywhere on the path (a handler's panic is
//! re-raised here, so libFuzzer sees it); an answer is one whole response
//! frame whose size prefix is its length. Bounded memory is the replay's to
//! check (the process's peak resident size), with the broker's allocator
//! installed as in `ottla._core`: a claimed array count sizes a vector
//! before its elements are read, which that allocator serves without
//! touching memory.
//!
//! Not dispatched, only decoded: CreateTopics, CreatePartitions and
//! DeleteTopics, whose valid inputs would have the fuzzer create tens of
//! thousands of partition directories per input (slow, not a finding).
//! Requests that wait (a Fetch's long poll, a JoinGroup's rebalance) are
//! dropped after a short time, as a connection closing mid-request drops
//! them.

use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::dispatch::{self, Reply, Session};
use crate::net::frame;
use crate::{Broker, BrokerConfig};
use ottla_storage::error::{Error, Result};
use ottla_storage::store::Store;

/// The topic every seed names; it exists, with records, on the scratch
/// directory.
pub const TOPIC: &str = "fuzz";

/// How long one request may take before it is dropped (only waiting
/// requests get near it).
const REQUEST_TIME: Duration = Duration::from_millis(20);

/// A running broker to hand frames to.
pub struct RequestOracle {
    broker: Broker,
}

impl RequestOracle {
    /// A broker over `dir` (created if needed) holding the topic [`TOPIC`]
    /// (two partitions, a few records), topics not auto-created.
    pub fn start(dir: &Path) -> Result<RequestOracle> {
        let store = Store::open(dir)?;
        if store.topic(TOPIC)?.is_none() {
            store.create_topic(TOPIC, 2, &[])?;
            let topic = store.require_topic(TOPIC)?;
            let log = store.partition(&topic, 0)?;
            let mut b = ottla_record::BatchBuilder::with_capacity(256);
            for i in 0..5u8 {
                b.append(i64::from(i), Some(&[i]), Some(b"seed"), &[]);
            }
            let mut bytes = b.finish().to_vec();
            log.append(&mut bytes, ottla_storage::log::Durability::PageCache)?;
        }
        let config = BrokerConfig {
            auto_create_topics: false,
            // ACLs are checked (the authorizer's paths are fuzzed too); with
            // no binding for a resource, everyone may use it.
            authorizer: Some(crate::auth::authorizer::AuthorizerConfig {
                super_users: Vec::new(),
                allow_everyone_if_no_acl_found: true,
            }),
            ..BrokerConfig::default()
        };
        Ok(RequestOracle {
            broker: Broker::start(store, config)?,
        })
    }

    /// Hand `data` to the broker as one request frame. Panics (re-raising a
    /// handler's panic) when a promise is broken.
    pub fn check(&self, data: &[u8]) {
        let (Some(shared), Some(rt)) = (self.broker.shared.clone(), self.broker.runtime.as_ref())
        else {
            return;
        };
        let mut frame = Bytes::copy_from_slice(data);
        if let Some(p) = frame::prefix(data) {
            if let Some(api) = crate::versions::supported(p.api_key, p.api_version) {
                if matches!(
                    api,
                    ApiKey::CreateTopics | ApiKey::CreatePartitions | ApiKey::DeleteTopics
                ) {
                    decode_only(api, p.api_version, &mut frame);
                    return;
                }
            }
        }
        let task = rt.spawn(async move {
            let mut session = Session::new(([127, 0, 0, 1], 0).into());
            tokio::time::timeout(REQUEST_TIME, dispatch::handle(&shared, &mut session, frame))
                .await
                .ok()
        });
        match rt.block_on(task) {
            Ok(Some(Reply::Send(buf))) => {
                assert!(buf.len() >= 8, "a response frame of {} bytes", buf.len());
                let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                assert_eq!(
                    usize::try_from(size).ok(),
                    Some(buf.len() - 4),
                    "the size prefix is not the frame's length"
                );
            }
            Ok(_) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("request task failed: {e}"),
        }
    }
}

/// Header and body of the APIs not dispatched, decoded and dropped.
fn decode_only(api: ApiKey, version: i16, frame: &mut Bytes) {
    if frame::header(api, version, frame).is_err() {
        return;
    }
    let _ = match api {
        ApiKey::CreateTopics => frame::body::<CreateTopicsRequest>(frame, version).map(drop),
        ApiKey::CreatePartitions => {
            frame::body::<CreatePartitionsRequest>(frame, version).map(drop)
        }
        ApiKey::DeleteTopics => frame::body::<DeleteTopicsRequest>(frame, version).map(drop),
        _ => Ok(()),
    };
}

/// A request frame (without the size prefix): header, then `body`.
fn encode<T: Encodable>(api: ApiKey, version: i16, body: &T) -> Result<Vec<u8>> {
    let bad = |e: String| Error::IllegalState(format!("cannot encode a seed: {e}"));
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .map_err(|e| bad(format!("{e:?}")))?;
    body.encode(&mut buf, version)
        .map_err(|e| bad(format!("{e:?}")))?;
    Ok(buf.to_vec())
}

/// A request frame of a version `api::codec_v10` serves: header, then
/// the body `put` writes.
fn encode_own(api: ApiKey, version: i16, put: impl FnOnce(&mut BytesMut)) -> Result<Vec<u8>> {
    let mut header = RequestHeader::default();
    header.request_api_key = api as i16;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, api.request_header_version(version))
        .map_err(|e| Error::IllegalState(format!("cannot encode a seed: {e:?}")))?;
    put(&mut buf);
    Ok(buf.to_vec())
}

/// Valid bodies of the three versions `api::codec_v10` decodes, each
/// behind the byte that picks it in [`codec_v10`].
pub fn codec_v10_seed_corpus() -> Vec<(String, Vec<u8>)> {
    use crate::api::codec_v10::*;
    let commit = OffsetCommitRequest10 {
        group_id: "g".into(),
        generation_id_or_member_epoch: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![CommitTopic10 {
            topic_id: uuid::Uuid::from_bytes([7; 16]),
            partitions: vec![CommitPartition10 {
                partition_index: 0,
                committed_offset: 3,
                committed_leader_epoch: -1,
                committed_metadata: Some("m".into()),
            }],
        }],
    };
    let fetch = OffsetFetchRequest10 {
        groups: vec![
            FetchGroup10 {
                group_id: "g".into(),
                member_id: None,
                member_epoch: -1,
                topics: None,
            },
            FetchGroup10 {
                group_id: "h".into(),
                member_id: Some("m".into()),
                member_epoch: 2,
                topics: Some(vec![(uuid::Uuid::from_bytes([7; 16]), vec![0, 1])]),
            },
        ],
        require_stable: true,
    };
    let init = InitProducerIdRequest6 {
        transactional_id: Some("t".into()),
        transaction_timeout_ms: 60_000,
        producer_id: -1,
        producer_epoch: -1,
        enable_2pc: true,
        keep_prepared_txn: false,
    };
    let mut out = Vec::new();
    let mut b = BytesMut::from(&[0u8][..]);
    commit.encode(&mut b);
    out.push(("offset-commit-v10".to_string(), b.to_vec()));
    let mut b = BytesMut::from(&[1u8][..]);
    fetch.encode(&mut b);
    out.push(("offset-fetch-v10".to_string(), b.to_vec()));
    let mut b = BytesMut::from(&[2u8][..]);
    init.encode(&mut b);
    out.push(("init-producer-id-v6".to_string(), b.to_vec()));
    out
}

/// The oracle of `api::codec_v10` (cargo-fuzz target `codec_v10` and the
/// replay test): the first byte picks OffsetCommit v10, OffsetFetch v10 or
/// InitProducerId v6, the rest is decoded as its body. Promises: no panic;
/// a body that decodes encodes back to one that decodes to the same value
/// (tagged fields, which none of these versions defines, are dropped).
pub fn codec_v10(data: &[u8]) {
    use crate::api::codec_v10::*;
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    macro_rules! round_trip {
        ($t:ty) => {{
            if let Ok(v) = decode(body, <$t>::decode) {
                let mut b = BytesMut::new();
                v.encode(&mut b);
                assert_eq!(
                    decode(&b, <$t>::decode).as_ref(),
                    Ok(&v),
                    "a re-encoded body decodes differently"
                );
            }
        }};
    }
    match which % 3 {
        0 => round_trip!(OffsetCommitRequest10),
        1 => round_trip!(OffsetFetchRequest10),
        _ => round_trip!(InitProducerIdRequest6),
    }
}

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Valid request frames of every dispatched API family, named: the
/// fuzzers' starting points.
pub fn seed_corpus() -> Result<Vec<(String, Vec<u8>)>> {
    use kafka_protocol::messages::*;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, bytes: Result<Vec<u8>>| -> Result<()> {
        out.push((name.to_string(), bytes?));
        Ok(())
    };
    add(
        "api-versions-v3",
        encode(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
    )?;
    let mut md = MetadataRequest::default();
    let mut mt = metadata_request::MetadataRequestTopic::default();
    mt.name = Some(topic());
    md.topics = Some(vec![mt]);
    md.include_topic_authorized_operations = true;
    add("metadata-v12", encode(ApiKey::Metadata, 12, &md))?;
    add("metadata-v8", encode(ApiKey::Metadata, 8, &md))?;

    let mut batch = ottla_record::BatchBuilder::with_capacity(128);
    batch.append(1, Some(b"k"), Some(b"v"), &[]);
    let mut pd = produce_request::PartitionProduceData::default();
    pd.index = 1;
    pd.records = Some(Bytes::from(batch.finish().to_vec()));
    let mut td = produce_request::TopicProduceData::default();
    td.name = topic();
    td.partition_data = vec![pd];
    let mut pr = ProduceRequest::default();
    pr.acks = 1;
    pr.timeout_ms = 1000;
    pr.topic_data = vec![td];
    add("produce-v9", encode(ApiKey::Produce, 9, &pr))?;
    add("produce-v3", encode(ApiKey::Produce, 3, &pr))?;

    let mut fp = fetch_request::FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 1;
    fp.partition_max_bytes = 1 << 16;
    let mut ft = fetch_request::FetchTopic::default();
    ft.topic = topic();
    ft.partitions = vec![fp];
    let mut fr = FetchRequest::default();
    fr.replica_id = BrokerId(-1);
    fr.max_wait_ms = 0;
    fr.max_bytes = 1 << 20;
    fr.topics = vec![ft];
    add("fetch-v12", encode(ApiKey::Fetch, 12, &fr))?;
    add("fetch-v4", encode(ApiKey::Fetch, 4, &fr))?;

    let mut lp = list_offsets_request::ListOffsetsPartition::default();
    lp.timestamp = -2;
    let mut lt = list_offsets_request::ListOffsetsTopic::default();
    lt.name = topic();
    lt.partitions = vec![lp];
    let mut lo = ListOffsetsRequest::default();
    lo.topics = vec![lt];
    add("list-offsets-v7", encode(ApiKey::ListOffsets, 7, &lo))?;

    let mut dp = delete_records_request::DeleteRecordsPartition::default();
    dp.offset = 1;
    let mut dt = delete_records_request::DeleteRecordsTopic::default();
    dt.name = topic();
    dt.partitions = vec![dp];
    let mut dr = DeleteRecordsRequest::default();
    dr.topics = vec![dt];
    add("delete-records-v2", encode(ApiKey::DeleteRecords, 2, &dr))?;
    add("delete-records-v0", encode(ApiKey::DeleteRecords, 0, &dr))?;

    let mut dc = DescribeClusterRequest::default();
    dc.include_cluster_authorized_operations = true;
    dc.endpoint_type = 1;
    add(
        "describe-cluster-v1",
        encode(ApiKey::DescribeCluster, 1, &dc),
    )?;
    add(
        "describe-log-dirs-v4",
        encode(
            ApiKey::DescribeLogDirs,
            4,
            &DescribeLogDirsRequest::default(),
        ),
    )?;
    let mut pt = describe_producers_request::TopicRequest::default();
    pt.name = topic();
    pt.partition_indexes = vec![0, 1];
    let mut dpr = DescribeProducersRequest::default();
    dpr.topics = vec![pt];
    add(
        "describe-producers-v0",
        encode(ApiKey::DescribeProducers, 0, &dpr),
    )?;
    let mut tr = describe_topic_partitions_request::TopicRequest::default();
    tr.name = topic();
    let mut dtp = DescribeTopicPartitionsRequest::default();
    dtp.topics = vec![tr];
    dtp.response_partition_limit = 1;
    add(
        "describe-topic-partitions-v0",
        encode(ApiKey::DescribeTopicPartitions, 0, &dtp),
    )?;
    add(
        "telemetry-v0",
        encode(
            ApiKey::GetTelemetrySubscriptions,
            0,
            &GetTelemetrySubscriptionsRequest::default(),
        ),
    )?;

    let mut fc = FindCoordinatorRequest::default();
    fc.key = StrBytes::from_static_str("g");
    add(
        "find-coordinator-v2",
        encode(ApiKey::FindCoordinator, 2, &fc),
    )?;
    let mut jg = JoinGroupRequest::default();
    jg.group_id = GroupId(StrBytes::from_static_str("g"));
    jg.session_timeout_ms = 10_000;
    jg.rebalance_timeout_ms = 10_000;
    jg.protocol_type = StrBytes::from_static_str("consumer");
    let mut proto = join_group_request::JoinGroupRequestProtocol::default();
    proto.name = StrBytes::from_static_str("range");
    proto.metadata = Bytes::from_static(&[0, 1, 0, 0, 0, 0]);
    jg.protocols = vec![proto];
    add("join-group-v5", encode(ApiKey::JoinGroup, 5, &jg))?;
    add(
        "describe-groups-v5",
        encode(ApiKey::DescribeGroups, 5, &{
            let mut d = DescribeGroupsRequest::default();
            d.groups = vec![GroupId(StrBytes::from_static_str("g"))];
            d
        }),
    )?;
    add(
        "list-groups-v4",
        encode(ApiKey::ListGroups, 4, &ListGroupsRequest::default()),
    )?;
    let mut oc = OffsetCommitRequest::default();
    oc.group_id = GroupId(StrBytes::from_static_str("g"));
    oc.generation_id_or_member_epoch = -1;
    let mut ocp = offset_commit_request::OffsetCommitRequestPartition::default();
    ocp.committed_offset = 3;
    let mut oct = offset_commit_request::OffsetCommitRequestTopic::default();
    oct.name = topic();
    oct.partitions = vec![ocp];
    oc.topics = vec![oct];
    add("offset-commit-v8", encode(ApiKey::OffsetCommit, 8, &oc))?;
    let mut of = OffsetFetchRequest::default();
    of.group_id = GroupId(StrBytes::from_static_str("g"));
    add("offset-fetch-v7", encode(ApiKey::OffsetFetch, 7, &of))?;
    add(
        "init-producer-id-v4",
        encode(ApiKey::InitProducerId, 4, &{
            let mut r = InitProducerIdRequest::default();
            r.transaction_timeout_ms = 60_000;
            r
        }),
    )?;
    // The versions served by `api::codec_v10` (topic ids: none the
    // oracle's topic has, so the unknown-id path; mutants reach the rest).
    for (name, body) in codec_v10_seed_corpus() {
        let (api, version) = match name.as_str() {
            "offset-commit-v10" => (ApiKey::OffsetCommit, 10),
            "offset-fetch-v10" => (ApiKey::OffsetFetch, 10),
            _ => (ApiKey::InitProducerId, 6),
        };
        add(
            &name,
            encode_own(api, version, |b| b.put_slice(body.get(1..).unwrap_or(&[]))),
        )?;
    }
    let mut dcr = describe_configs_request::DescribeConfigsResource::default();
    dcr.resource_type = 2;
    dcr.resource_name = StrBytes::from_static_str(TOPIC);
    let mut dconf = DescribeConfigsRequest::default();
    dconf.resources = vec![dcr];
    add(
        "describe-configs-v4",
        encode(ApiKey::DescribeConfigs, 4, &dconf),
    )?;
    let mut ct = create_topics_request::CreatableTopic::default();
    ct.name = TopicName(StrBytes::from_static_str("made"));
    ct.num_partitions = 1;
    ct.replication_factor = 1;
    let mut ctr = CreateTopicsRequest::default();
    ctr.topics = vec![ct];
    add("create-topics-v5", encode(ApiKey::CreateTopics, 5, &ctr))?;
    // Security (issue 18): on the oracle's plain session these are answered
    // ILLEGAL_SASL_STATE; the users APIs read and write the credentials file.
    let mut sh = SaslHandshakeRequest::default();
    sh.mechanism = StrBytes::from_static_str("SCRAM-SHA-256");
    add("sasl-handshake-v1", encode(ApiKey::SaslHandshake, 1, &sh))?;
    let mut sa = SaslAuthenticateRequest::default();
    sa.auth_bytes = Bytes::from_static(b"n,,n=alice,r=abc");
    add(
        "sasl-authenticate-v2",
        encode(ApiKey::SaslAuthenticate, 2, &sa),
    )?;
    add(
        "sasl-authenticate-v0",
        encode(ApiKey::SaslAuthenticate, 0, &sa),
    )?;
    let mut up = alter_user_scram_credentials_request::ScramCredentialUpsertion::default();
    up.name = StrBytes::from_static_str("alice");
    up.mechanism = 1;
    up.iterations = 4096;
    up.salt = Bytes::from_static(b"salt");
    up.salted_password = Bytes::from_static(&[7; 32]);
    let mut del = alter_user_scram_credentials_request::ScramCredentialDeletion::default();
    del.name = StrBytes::from_static_str("bob");
    del.mechanism = 2;
    let mut au = AlterUserScramCredentialsRequest::default();
    au.upsertions = vec![up];
    au.deletions = vec![del];
    add(
        "alter-user-scram-credentials-v0",
        encode(ApiKey::AlterUserScramCredentials, 0, &au),
    )?;
    let mut du = DescribeUserScramCredentialsRequest::default();
    let mut un = describe_user_scram_credentials_request::UserName::default();
    un.name = StrBytes::from_static_str("alice");
    du.users = Some(vec![un]);
    add(
        "describe-user-scram-credentials-v0",
        encode(ApiKey::DescribeUserScramCredentials, 0, &du),
    )?;
    // ACLs (issue 18): a prefixed topic binding, a filter, its deletion.
    let mut ac = create_acls_request::AclCreation::default();
    ac.resource_type = 2;
    ac.resource_name = StrBytes::from_static_str("fuzz-");
    ac.resource_pattern_type = 4;
    ac.principal = StrBytes::from_static_str("User:alice");
    ac.host = StrBytes::from_static_str("*");
    ac.operation = 3;
    ac.permission_type = 3;
    let mut ca = CreateAclsRequest::default();
    ca.creations = vec![ac];
    add("create-acls-v3", encode(ApiKey::CreateAcls, 3, &ca))?;
    add("create-acls-v1", encode(ApiKey::CreateAcls, 1, &ca))?;
    let mut da = DescribeAclsRequest::default();
    da.resource_type_filter = 2;
    da.resource_name_filter = Some(StrBytes::from_static_str(TOPIC));
    da.pattern_type_filter = 2;
    da.operation = 1;
    da.permission_type = 1;
    add("describe-acls-v3", encode(ApiKey::DescribeAcls, 3, &da))?;
    let mut df = delete_acls_request::DeleteAclsFilter::default();
    df.resource_type_filter = 1;
    df.pattern_type_filter = 1;
    df.principal_filter = Some(StrBytes::from_static_str("User:alice"));
    df.operation = 1;
    df.permission_type = 1;
    let mut dl = DeleteAclsRequest::default();
    dl.filters = vec![df];
    add("delete-acls-v2", encode(ApiKey::DeleteAcls, 2, &dl))?;
    let mut header_only = BytesMut::new();
    header_only.put_i16(ApiKey::ApiVersions as i16);
    header_only.put_i16(0);
    header_only.put_i32(7);
    header_only.put_i16(-1);
    add("api-versions-v0-null-client", Ok(header_only.to_vec()))?;
    Ok(out)
}

/// The oracle on a fresh scratch directory for one process, for the
/// cargo-fuzz target (which has no test harness to give it one): under the
/// system's temporary directory, named by the process id, emptied first.
pub fn oracle_for_process() -> &'static RequestOracle {
    static ORACLE: std::sync::OnceLock<RequestOracle> = std::sync::OnceLock::new();
    ORACLE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ottla-fuzz-requests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        match RequestOracle::start(&dir) {
            Ok(o) => o,
            Err(e) => panic!("cannot start the broker to fuzz: {e}"),
        }
    })
}

/// The SASL exchange oracle: arbitrary client tokens through the servers of
/// `auth::sasl` (the decoders of PLAIN, SCRAM and OAUTHBEARER messages),
/// against a credential store holding `alice` (password `pw`, 1 PBKDF2
/// iteration, so PLAIN costs nothing). Input: byte 0 picks the mechanism,
/// byte 1 the length of the first token; the first token, then the rest as
/// the second (sent only if the first was answered with a challenge).
/// Promises: no panic; an exchange ends in a principal only when it says
/// it is done, and the principal is never empty.
pub struct SaslOracle {
    credentials: crate::auth::credentials::CredentialStore,
}

impl SaslOracle {
    pub fn new(dir: &Path) -> Result<SaslOracle> {
        use crate::auth::credentials::{CredentialStore, ScramCredential, ScramMechanism};
        let credentials = CredentialStore::new(dir);
        credentials
            .update(|users| {
                for m in ScramMechanism::ALL {
                    let salted = m.salted_password(b"pw", b"salt", 1);
                    let c = ScramCredential::from_salted(m, &salted, b"salt", 1);
                    users.entry("alice".into()).or_default().insert(m, c);
                }
                Ok(())
            })
            .map_err(Error::IllegalState)?;
        Ok(SaslOracle { credentials })
    }

    pub fn check(&self, data: &[u8]) {
        use crate::auth::sasl::{Context, Exchange, Mechanism, Step};
        let Some((&which, rest)) = data.split_first() else {
            return;
        };
        let mech = Mechanism::ALL[usize::from(which) % Mechanism::ALL.len()];
        let (first, second) = match rest.split_first() {
            Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
            None => (rest, &[][..]),
        };
        let ctx = Context {
            credentials: &self.credentials,
            now_ms: 1_700_000_000_000,
        };
        let mut exchange = Exchange::new(mech);
        let done = |step: Result<Step, String>| -> bool {
            match step {
                Ok(Step::Done(_, a)) => {
                    assert!(!a.principal.name.is_empty(), "an empty principal");
                    false
                }
                Ok(Step::Challenge(_)) => true,
                Err(_) => false,
            }
        };
        if done(exchange.step(first, &ctx)) {
            done(exchange.step(second, &ctx));
        }
    }
}

/// Seeds of the SASL oracle: one valid first message per mechanism.
pub fn sasl_seed_corpus() -> Vec<(String, Vec<u8>)> {
    fn input(mech: u8, first: &[u8], second: &[u8]) -> Vec<u8> {
        let mut v = vec![mech, first.len().min(255) as u8];
        v.extend_from_slice(first);
        v.extend_from_slice(second);
        v
    }
    vec![
        ("plain".into(), input(0, b"\0alice\0pw", b"")),
        (
            "scram-sha-256".into(),
            input(1, b"n,,n=alice,r=abc", b"c=biws,r=abcdef,p=AAAA"),
        ),
        (
            "scram-sha-512".into(),
            input(2, b"n,a=alice,n=alice,r=xyz", b"c=bixhPWFsaWNlLA==,r=xyz,p=AAAA"),
        ),
        (
            "oauthbearer".into(),
            input(
                3,
                b"n,,\x01auth=Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.\x01\x01",
                b"\x01",
            ),
        ),
    ]
}

/// The SASL oracle on a scratch directory for one process (the cargo-fuzz
/// target's), as [`oracle_for_process`].
pub fn sasl_oracle_for_process() -> &'static SaslOracle {
    static ORACLE: std::sync::OnceLock<SaslOracle> = std::sync::OnceLock::new();
    ORACLE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ottla-fuzz-sasl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        match SaslOracle::new(&dir) {
            Ok(o) => o,
            Err(e) => panic!("cannot set up the SASL oracle: {e}"),
        }
    })
}

/// The decoders of what another node sends this one (`peer_messages`
/// target): byte 0 even, a controller-listener frame body
/// (`cluster::wire::decode` of a `ControlRequest` and a `ControlReply`,
/// and `frame_len` of its first four bytes); odd, the server's SCRAM
/// messages as the inter-broker SCRAM client reads them
/// (`auth::peer::ScramClient`: server-first, then after a newline the
/// server-final). Promise: no panic (and a SCRAM client never accepts a
/// server-final without the server's proof: the server does not know our
/// password here).
pub fn peer_messages(data: &[u8]) {
    use crate::auth::credentials::ScramMechanism;
    use crate::cluster::wire::{self, ControlReply, ControlRequest};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let _ = wire::decode::<ControlRequest>(rest);
        let _ = wire::decode::<ControlReply>(rest);
        if let Some(prefix) = rest.get(..4) {
            let mut p = [0u8; 4];
            p.copy_from_slice(prefix);
            let _ = wire::frame_len(p);
        }
        return;
    }
    let mech = if which & 2 == 0 {
        ScramMechanism::Sha256
    } else {
        ScramMechanism::Sha512
    };
    let (first, last) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(mut client) = crate::auth::peer::ScramClient::new(mech, "broker", "pw") else {
        return;
    };
    let _ = client.first();
    if client.finish(first).is_ok() {
        assert!(
            client.verify(last).is_err(),
            "a server-final without the server key was accepted"
        );
    }
}

/// Seeds of `peer_messages`: control frames of every kind the cluster
/// sends, and SCRAM server messages of the right shape.
pub fn peer_seed_corpus() -> Vec<(String, Vec<u8>)> {
    use crate::auth::acl::AclFilter;
    use crate::cluster::wire::{self, ControlReply, ControlRequest, ScramChange};
    use ottla_meta::records::{AclEntry, ScramEntry};
    let acl = AclEntry {
        resource_type: 2,
        resource_name: "orders".into(),
        pattern_type: 3,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: 4,
        permission_type: 3,
    };
    let frames = [
        (
            "heartbeat",
            wire::encode(&ControlRequest::Heartbeat {
                broker_id: 2,
                broker_epoch: 40,
                metadata_offset: 99,
            }),
        ),
        (
            "create_acls",
            wire::encode(&ControlRequest::CreateAcls {
                acls: vec![acl.clone()],
            }),
        ),
        (
            "delete_acls",
            wire::encode(&ControlRequest::DeleteAcls {
                filters: vec![AclFilter::any()],
            }),
        ),
        (
            "alter_scram",
            wire::encode(&ControlRequest::AlterScramUsers {
                users: vec![(
                    "alice".into(),
                    vec![
                        ScramChange::Delete(1),
                        ScramChange::Upsert(ScramEntry {
                            mechanism: 2,
                            salt: vec![7; 16],
                            stored_key: vec![1; 64],
                            server_key: vec![2; 64],
                            iterations: 4096,
                        }),
                    ],
                )],
            }),
        ),
        (
            "acls_deleted",
            wire::encode(&ControlReply::AclsDeleted {
                matched: vec![vec![acl]],
                offset: 12,
            }),
        ),
        (
            "user_results",
            wire::encode(&ControlReply::UserResults {
                results: vec![("alice".into(), 91, Some("gone".into()))],
                offset: 13,
            }),
        ),
    ];
    let mut out: Vec<(String, Vec<u8>)> = frames
        .into_iter()
        .map(|(n, b)| {
            let mut v = vec![0u8];
            v.extend(b);
            (format!("control_{n}"), v)
        })
        .collect();
    for (which, name) in [(1u8, "scram_sha256"), (3u8, "scram_sha512")] {
        let mut v = vec![which];
        v.extend_from_slice(
            b"r=NONCE_FROM_CLIENT_IS_REPLACED_BY_FUZZER,s=c2FsdA==,i=4096\nv=c2lnbmF0dXJl",
        );
        out.push((name.into(), v));
    }
    out
}
/// Valid inputs of [`consumer_protocol`]: a classic member's subscription
/// (v1, owned partitions), an assignment, and a member record with its
/// `ClassicMemberMetadata`; byte 0 picks the decoder.
pub fn consumer_protocol_seed_corpus() -> Vec<(String, Vec<u8>)> {
    use crate::coordinator::consumer_group::classic::assignment_bytes;
    use crate::coordinator::consumer_group::Assignment;
    use crate::coordinator::consumer_group_records::{member_value, ClassicRecord, MemberRecord};
    let mut sub = vec![0u8, 0, 1, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff];
    sub.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 2]);
    let mut a = Assignment::new();
    a.insert("t".into(), [0, 3].into_iter().collect());
    let mut assignment = vec![1u8];
    assignment.extend_from_slice(&assignment_bytes(&a, 1));
    let member = MemberRecord {
        client_id: "c".into(),
        topics: vec!["t".into()],
        rebalance_timeout_ms: 1000,
        classic: Some(ClassicRecord {
            session_timeout_ms: 6000,
            protocols: vec![("range".into(), sub[1..].to_vec())],
        }),
        ..Default::default()
    };
    let mut record = vec![2u8];
    record.extend_from_slice(&member_value(&member));
    vec![
        ("subscription".into(), sub),
        ("assignment".into(), assignment),
        ("classic-member".into(), record),
    ]
}

/// The decoders of KIP-848's online migration over untrusted bytes (byte 0
/// picks one): a classic member's `ConsumerProtocolSubscription` (JoinGroup
/// metadata), a `ConsumerProtocolAssignment` (a classic group's last
/// SyncGroup), and a consumer-group member record with its
/// `ClassicMemberMetadata` (from `__consumer_offsets`). Promises: no panic;
/// an assignment or member record that decodes re-encodes to bytes that
/// decode to the same value.
pub fn consumer_protocol(data: &[u8]) {
    use crate::coordinator::consumer_group::classic::{
        assignment_bytes, parse_assignment, parse_subscription,
    };
    use crate::coordinator::consumer_group_records::{member_value, parse_member};
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = parse_subscription(body);
        }
        1 => {
            if let Some(a) = parse_assignment(body) {
                let again = parse_assignment(&assignment_bytes(&a, 0));
                assert_eq!(again.as_ref(), Some(&a), "a re-encoded assignment differs");
            }
        }
        _ => {
            if let Some(m) = parse_member(body) {
                let again = parse_member(&member_value(&m));
                assert_eq!(
                    again.as_ref(),
                    Some(&m),
                    "a re-encoded member record differs"
                );
            }
        }
    }
}
