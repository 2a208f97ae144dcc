//! The boundary between the quorum and the network: a [`Transport`] sends one
//! request (bytes) to a controller and returns its reply (bytes); this crate
//! encodes openraft's RPCs into those bytes and implements openraft's network
//! traits on top, and [`RpcServer::handle`] answers them on the receiving
//! side. This crate opens no socket: the broker will provide a TCP
//! transport; tests use [`crate::testing`]'s in-process one.
//!
//! Bytes on the wire: one version byte (1), then the postcard encoding of an
//! [`RpcRequest`] or an [`RpcReply`]. A snapshot is sent whole, in one request
//! (the metadata image is small).

use std::future::Future;
use std::sync::Arc;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Snapshot};
use serde::{Deserialize, Serialize};

use crate::heard::LastHeard;
use crate::types::{BasicNode, NodeId, Raft, SnapshotMeta, TypeConfig, Vote};

const WIRE_VERSION: u8 = 1;

/// Why a request got no reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The node could not be reached (down, unknown, or the link is cut).
    #[error("node {node} is unreachable: {reason}")]
    Unreachable { node: NodeId, reason: String },
    /// The request was sent but no reply came in time.
    #[error("node {node} did not answer in time")]
    Timeout { node: NodeId },
}

/// Sends one request to node `target` and returns its reply. Implemented by
/// the broker over TCP, and by [`crate::testing`] in process. A reply must be
/// the bytes [`RpcServer::handle`] returned on `target`.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        target: NodeId,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
}

/// A Raft request between controllers.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot: its meta and its data (the encoded image).
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
}

/// A reply to an [`RpcRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    AppendEntries(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    Snapshot(SnapshotResponse<NodeId>),
    /// The receiving node could not serve it (shutting down, or the request
    /// did not decode).
    Error(String),
}

fn encode_wire<T: Serialize>(value: &T) -> Vec<u8> {
    let out = vec![WIRE_VERSION];
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        // Serializing these plain data types cannot fail; answer an
        // undecodable message rather than panic.
        Err(_) => vec![0],
    }
}

fn decode_wire<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&WIRE_VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown wire version {v}")),
        None => Err("empty message".into()),
    }
}

/// Encodes a request (for a transport that wants to look at sizes, say).
pub fn encode_request(request: &RpcRequest) -> Vec<u8> {
    encode_wire(request)
}

/// Answers Raft requests addressed to one controller.
#[derive(Clone)]
pub struct RpcServer {
    raft: Raft,
    heard: LastHeard,
}

impl RpcServer {
    pub(crate) fn new(raft: Raft, heard: LastHeard) -> Self {
        RpcServer { raft, heard }
    }

    /// Handles one request (bytes from a [`Transport`]) and returns the reply.
    pub async fn handle(&self, request: &[u8]) -> Vec<u8> {
        let reply = match decode_wire::<RpcRequest>(request) {
            Err(e) => RpcReply::Error(format!("undecodable request: {e}")),
            Ok(RpcRequest::AppendEntries(req)) => {
                let arrived = tokio::time::Instant::now();
                let from = req.vote.leader_id.node_id;
                match self.raft.append_entries(req).await {
                    Ok(r) => {
                        // Accepted (the sender leads this node's term): it
                        // was alive when it sent this.
                        if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                            self.heard.record(from, arrived);
                        }
                        RpcReply::AppendEntries(r)
                    }
                    Err(e) => RpcReply::Error(e.to_string()),
                }
            }
            Ok(RpcRequest::Vote(req)) => match self.raft.vote(req).await {
                Ok(r) => RpcReply::Vote(r),
                Err(e) => RpcReply::Error(e.to_string()),
            },
            Ok(RpcRequest::Snapshot { vote, meta, data }) => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: Box::new(std::io::Cursor::new(data)),
                };
                match self.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => RpcReply::Snapshot(r),
                    Err(e) => RpcReply::Error(e.to_string()),
                }
            }
        };
        encode_wire(&reply)
    }
}

/// openraft's network factory over a [`Transport`].
pub struct Network<T> {
    transport: Arc<T>,
}

impl<T> Network<T> {
    pub fn new(transport: Arc<T>) -> Self {
        Network { transport }
    }
}

/// A connection to one controller, over a [`Transport`].
pub struct Connection<T> {
    transport: Arc<T>,
    target: NodeId,
}

impl<T: Transport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = Connection<T>;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        Connection {
            transport: self.transport.clone(),
            target,
        }
    }
}

/// A failed call, as the two kinds of error openraft tells apart.
enum CallError {
    Unreachable(TransportError),
    Remote(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RemoteFailure(String);

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Remote(e) => RPCError::Network(NetworkError::new(&RemoteFailure(e))),
        }
    }
}

impl<T: Transport> Connection<T> {
    async fn call(&self, request: &RpcRequest, option: &RPCOption) -> Result<RpcReply, CallError> {
        let bytes = encode_wire(request);
        let sent = tokio::time::timeout(option.hard_ttl(), self.transport.call(self.target, bytes));
        let reply = match sent.await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(CallError::Unreachable(e)),
            Err(_) => {
                return Err(CallError::Unreachable(TransportError::Timeout {
                    node: self.target,
                }))
            }
        };
        match decode_wire::<RpcReply>(&reply) {
            Ok(RpcReply::Error(e)) => Err(CallError::Remote(e)),
            Ok(r) => Ok(r),
            Err(e) => Err(CallError::Remote(format!("undecodable reply: {e}"))),
        }
    }
}

fn unexpected(reply: &RpcReply) -> CallError {
    CallError::Remote(format!("unexpected reply {reply:?}"))
}

impl<T: Transport> RaftNetwork<TypeConfig> for Connection<T> {
    /// openraft waits this long before retrying an unreachable node (its
    /// default is 500 ms). Short, so that a restarted node hears the leader
    /// before its own election timeout fires and it disrupts the quorum
    /// with a higher term; the transport keeps its own connect backoff.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(std::time::Duration::from_millis(50)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&RpcRequest::AppendEntries(rpc), &option).await {
            Ok(RpcReply::AppendEntries(r)) => Ok(r),
            Ok(other) => Err(unexpected(&other).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    #[allow(deprecated)]
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // Snapshots go whole, through `full_snapshot`; openraft does not call
        // the chunked path with `generic-snapshot-data`.
        Err(CallError::Remote("chunked snapshots are not used".into()).into_rpc())
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&RpcRequest::Vote(rpc), &option).await {
            Ok(RpcReply::Vote(r)) => Ok(r),
            Ok(other) => Err(unexpected(&other).into_rpc()),
            Err(e) => Err(e.into_rpc()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let request = RpcRequest::Snapshot {
            vote,
            meta: snapshot.meta.clone(),
            data: snapshot.snapshot.into_inner(),
        };
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = self.call(&request, &option) => r,
        };
        match result {
            Ok(RpcReply::Snapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Network(NetworkError::new(&RemoteFailure(
                format!("unexpected reply {other:?}"),
            )))),
            Err(CallError::Unreachable(e)) => {
                Err(StreamingError::Unreachable(Unreachable::new(&e)))
            }
            Err(CallError::Remote(e)) => Err(StreamingError::Network(NetworkError::new(
                &RemoteFailure(e),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_reply_not_a_panic() {
        assert!(decode_wire::<RpcRequest>(&[]).is_err());
        assert!(decode_wire::<RpcRequest>(&[7, 1, 2]).is_err());
        assert!(decode_wire::<RpcRequest>(&[1, 200, 200, 200]).is_err());
        let bytes = encode_wire(&RpcReply::Error("x".into()));
        assert!(matches!(decode_wire::<RpcReply>(&bytes), Ok(RpcReply::Error(s)) if s == "x"));
    }
}
