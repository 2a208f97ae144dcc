//! From a request frame to a response frame: check the API and version,
//! decode, call the API's handler, encode.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use crate::api;
use crate::auth::principal::Principal;
use crate::auth::SecurityProtocol;
use crate::net::frame;
use crate::net::listener::ListenerInfo;
use crate::replica::{Cursors, Written};
use crate::versions;
use crate::Shared;

/// Per-connection state.
pub struct Session {
    pub peer: SocketAddr,
    pub client_id: String,
    /// Where the last Fetch of each partition ended, so the next one skips
    /// the index lookup; tied to the log it was taken on, so a topic deleted
    /// and created again never inherits a position in the old files.
    pub cursors: Cursors,
    /// Partitions this connection has appended to: their logs are open, so
    /// the next append is a page-cache copy (see `ReplicaManager::append`).
    pub written: Written,
    /// Topic ids this connection named topics by (Fetch v13+, Metadata,
    /// DeleteTopics), with the name each had: see `api::metadata::topic_by_id`.
    pub topic_names: std::collections::HashMap<uuid::Uuid, String>,
    /// The listener the connection came in on; `None` for connections made
    /// in-process (tests, the fuzzer), which behave as PLAINTEXT.
    pub listener: Option<Arc<ListenerInfo>>,
    /// Who the client is: `User:ANONYMOUS` until a SASL authentication or
    /// a client certificate says otherwise. The authorizer's input (see
    /// `auth::authorizer`).
    pub principal: Principal,
    /// The SASL exchange and session (SASL listeners).
    pub sasl: api::sasl::SaslSession,
    /// Set by a handler whose answer must be the connection's last (a
    /// failed authentication): the connection writes it, then closes.
    pub close_after_reply: Option<String>,
}

impl Session {
    pub fn new(peer: SocketAddr) -> Session {
        Session {
            peer,
            client_id: String::new(),
            cursors: Cursors::new(),
            written: Written::new(),
            topic_names: std::collections::HashMap::new(),
            listener: None,
            principal: Principal::anonymous(),
            sasl: api::sasl::SaslSession::default(),
            close_after_reply: None,
        }
    }

    pub fn protocol(&self) -> SecurityProtocol {
        self.listener
            .as_ref()
            .map_or(SecurityProtocol::Plaintext, |l| l.protocol)
    }

    /// On a SASL listener, before (or during a re-) authentication.
    pub fn sasl_pending(&self) -> bool {
        self.protocol().uses_sasl()
            && !matches!(self.sasl.state, api::sasl::SaslState::Authenticated { .. })
    }

    /// The address this connection's clients are told (Metadata,
    /// FindCoordinator, ...): its listener's advertised address.
    pub fn advertised<'a>(&'a self, shared: &'a Shared) -> (&'a str, u16) {
        match &self.listener {
            Some(l) => (l.advertised_host.as_str(), l.advertised_port),
            None => (shared.advertised_host.as_str(), shared.advertised_port),
        }
    }
}

pub enum Reply {
    Send(BytesMut),
    /// Produce with acks=0: the client expects no response.
    Nothing,
    Close(String),
}

pub async fn handle(shared: &Arc<Shared>, session: &mut Session, mut frame: Bytes) -> Reply {
    match handle_inner(shared, session, &mut frame).await {
        Ok(Some(buf)) => Reply::Send(buf),
        Ok(None) => Reply::Nothing,
        Err(why) => Reply::Close(why),
    }
}

async fn handle_inner(
    shared: &Arc<Shared>,
    session: &mut Session,
    frame: &mut Bytes,
) -> Result<Option<BytesMut>, String> {
    let p = frame::prefix(frame).ok_or("frame shorter than a request header")?;
    let Some(api) = versions::supported(p.api_key, p.api_version) else {
        if p.api_key == ApiKey::ApiVersions as i16 && p.api_version > 0 {
            // A newer client: answer in v0 with our ranges so it can retry.
            let r = versions::unsupported_version();
            return frame::response(ApiKey::ApiVersions, 0, p.correlation_id, &r).map(Some);
        }
        return Err(format!(
            "unsupported API key {} version {}",
            p.api_key, p.api_version
        ));
    };
    let header = frame::header(api, p.api_version, frame)?;
    if let Some(id) = header.client_id.as_ref() {
        if session.client_id.as_str() != id.as_str() {
            session.client_id = id.as_str().to_string();
        }
    }
    // The header's strings point into the frame; let go of them (see Produce).
    drop(header);
    let v = p.api_version;
    let cid = p.correlation_id;
    macro_rules! call {
        ($handler:path) => {{
            let req = frame::body(frame, v)?;
            let resp = $handler(shared, session, req, v).await;
            frame::response(api, v, cid, &resp).map(Some)
        }};
    }
    // The versions kafka-protocol 0.18 has no schema for, in our own codec.
    macro_rules! own {
        ($req:ty, $handler:path) => {{
            let req = api::codec_v10::decode(&frame[..], <$req>::decode)?;
            let resp = $handler(shared, session, req, v).await;
            Ok(Some(api::codec_v10::response_frame(cid, |b| {
                resp.encode(b)
            })))
        }};
    }
    match api {
        ApiKey::OffsetCommit if v >= 10 => {
            own!(
                api::codec_v10::OffsetCommitRequest10,
                api::offsets::commit_v10
            )
        }
        ApiKey::OffsetFetch if v >= 10 => {
            own!(
                api::codec_v10::OffsetFetchRequest10,
                api::offsets::fetch_v10
            )
        }
        ApiKey::InitProducerId if v >= 6 => {
            own!(
                api::codec_v10::InitProducerIdRequest6,
                api::producer_id::handle_v6
            )
        }
        ApiKey::ApiVersions => {
            // The body (client software name and version) is informational.
            frame::response(api, v, cid, &versions::api_versions(0)).map(Some)
        }
        ApiKey::Metadata => call!(api::metadata::handle),
        ApiKey::Produce => {
            let req = frame::body(frame, v)?;
            // Only the request's record batches may still refer to the frame's
            // bytes, so the produce handler can append them without a copy.
            *frame = Bytes::new();
            match api::produce::handle(shared, session, req, v).await {
                Some(resp) => frame::response(api, v, cid, &resp).map(Some),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => call!(api::fetch::handle),
        ApiKey::ListOffsets => call!(api::list_offsets::handle),
        ApiKey::OffsetForLeaderEpoch => call!(api::epochs::offset_for_leader_epoch),
        ApiKey::CreateTopics => call!(api::topics::create),
        ApiKey::DeleteTopics => call!(api::topics::delete),
        ApiKey::CreatePartitions => call!(api::topics::create_partitions),
        ApiKey::DescribeConfigs => call!(api::configs::describe),
        ApiKey::AlterConfigs => call!(api::configs::alter),
        ApiKey::IncrementalAlterConfigs => call!(api::configs::incremental_alter),
        ApiKey::InitProducerId => call!(api::producer_id::handle),
        ApiKey::AddPartitionsToTxn => call!(api::txn::add_partitions),
        ApiKey::AddOffsetsToTxn => call!(api::txn::add_offsets),
        ApiKey::TxnOffsetCommit => call!(api::txn::txn_offset_commit),
        ApiKey::EndTxn => call!(api::txn::end_txn),
        ApiKey::WriteTxnMarkers => call!(api::txn::write_txn_markers),
        ApiKey::DescribeTransactions => call!(api::txn::describe),
        ApiKey::ListTransactions => call!(api::txn::list),
        ApiKey::FindCoordinator => call!(api::groups::find_coordinator),
        ApiKey::JoinGroup => call!(api::consumer_group::classic_join),
        ApiKey::SyncGroup => call!(api::groups::sync),
        ApiKey::Heartbeat => call!(api::groups::heartbeat),
        ApiKey::LeaveGroup => call!(api::groups::leave),
        ApiKey::ListGroups => call!(api::consumer_group::list),
        ApiKey::DescribeGroups => call!(api::consumer_group::classic_describe),
        ApiKey::DeleteGroups => call!(api::groups::delete),
        ApiKey::ConsumerGroupHeartbeat => call!(api::consumer_group::heartbeat),
        ApiKey::ConsumerGroupDescribe => call!(api::consumer_group::describe),
        ApiKey::OffsetDelete => call!(api::offsets::delete),
        ApiKey::OffsetCommit => call!(api::offsets::commit),
        ApiKey::OffsetFetch => call!(api::offsets::fetch),
        ApiKey::DeleteRecords => call!(api::records::delete),
        ApiKey::DescribeCluster => call!(api::cluster::describe),
        ApiKey::AlterPartitionReassignments => call!(api::reassign::alter_reassignments),
        ApiKey::ListPartitionReassignments => call!(api::reassign::list_reassignments),
        ApiKey::ElectLeaders => call!(api::reassign::elect_leaders),
        ApiKey::UnregisterBroker => call!(api::reassign::unregister_broker),
        ApiKey::DescribeLogDirs => call!(api::log_dirs::describe),
        ApiKey::DescribeProducers => call!(api::producers::describe),
        ApiKey::DescribeTopicPartitions => call!(api::metadata::describe_topic_partitions),
        ApiKey::GetTelemetrySubscriptions => call!(api::telemetry::get_subscriptions),
        ApiKey::SaslHandshake => call!(api::sasl::handshake),
        ApiKey::SaslAuthenticate => call!(api::sasl::authenticate),
        ApiKey::DescribeUserScramCredentials => call!(api::scram_users::describe),
        ApiKey::AlterUserScramCredentials => call!(api::scram_users::alter),
        ApiKey::DescribeAcls => call!(api::acls::describe),
        ApiKey::CreateAcls => call!(api::acls::create),
        ApiKey::DeleteAcls => call!(api::acls::delete),
        other => Err(format!("API {other:?} is not served")),
    }
}
