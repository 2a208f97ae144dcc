//! Produce's verification of transactional batches (KIP-890 part 1), on the
//! partition's leader.
//!
//! A transactional batch that would open its producer's transaction in a
//! partition is appended only once the transaction coordinator confirmed
//! that the partition is in the producer's open transaction, at the batch's
//! epoch. Without it a late batch (a retry, a zombie) arriving after the
//! transaction's marker would open a transaction no coordinator knows of,
//! holding back the partition's last stable offset for good (a "hanging
//! transaction").
//!
//! * The coordinator in this process (a single broker, or the leader of
//!   `__transaction_state` in a cluster) is asked directly.
//! * In a cluster, a producer it does not know is another broker's: that
//!   broker is asked with AddPartitionsToTxn v4 `verify_only`, as Kafka's
//!   `AddPartitionsToTxnManager` does, over a pooled inter-broker
//!   connection.
//! * The verification is kept as a guard in the partition's producer state
//!   (`replica::idempotence`), taken before the question and checked when
//!   the batch is appended: a marker written meanwhile voids it.
//!
//! Answers a client can act on, as Kafka's: the coordinator busy, moving or
//! out of reach is NOT_ENOUGH_REPLICAS (every producer retries it),
//! PRODUCER_FENCED is INVALID_PRODUCER_EPOCH, a partition not in the
//! transaction INVALID_TXN_STATE.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;

use super::txn_placement::{marker_target, MarkerTarget, TXN_PARTITION};
use crate::errors::{code, debug};
use crate::replica::fetcher::PeerConnection;
use crate::Shared;
use ottla_storage::store::Topic;
use ottla_storage::txn_state::TXN_TOPIC;

/// AddPartitionsToTxn's version with `verify_only` (KIP-890).
const VERIFY_VERSION: i16 = 4;

/// How long a verification may take before the batch is refused (and the
/// producer retries it).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether Produce must refuse a transactional batch of `producer_id` at
/// `epoch` for `topic`-`partition`, with the code the client is given
/// (NONE: append it).
pub async fn verify(
    shared: &Arc<Shared>,
    transactional_id: &str,
    topic: &Topic,
    partition: u32,
    producer_id: i64,
    epoch: i16,
) -> i16 {
    // Where the producer stands in the partition, taken before the
    // question: a marker after this point voids the answer.
    let replicas = &shared.replicas;
    let start = match replicas.txn_verification_start(&topic.name, partition, producer_id) {
        Ok(s) => s,
        Err(_) => {
            let loaded = crate::blocking(|| replicas.load_producers(topic, partition));
            if let Err(c) = loaded {
                return c;
            }
            match replicas.txn_verification_start(&topic.name, partition, producer_id) {
                Ok(s) => s,
                // Dropped again at once (a truncation): try again.
                Err(_) => return code::NOT_ENOUGH_REPLICAS,
            }
        }
    };
    match shared
        .txns
        .verify_produce(producer_id, epoch, &topic.name, partition)
    {
        Ok(()) => {}
        // A cluster's producer this broker does not coordinate.
        Err(code::NOT_COORDINATOR) => {
            if start.is_none() {
                // Its transaction is open here already: the batch goes on
                // with it (the epoch is checked by the producer state).
                return code::NONE;
            }
            let c = ask_coordinator(
                shared,
                transactional_id,
                producer_id,
                epoch,
                &topic.name,
                partition,
            )
            .await;
            if c != code::NONE {
                return c;
            }
        }
        Err(c) => return c,
    }
    let Some(at) = start else {
        return code::NONE;
    };
    if replicas.txn_verified(&topic.name, partition, producer_id, at) {
        code::NONE
    } else {
        // The transaction ended while it was being verified.
        code::INVALID_TXN_STATE
    }
}

/// Ask the coordinator of `transactional_id` whether `topic`-`partition`
/// is in its open transaction (AddPartitionsToTxn v4, `verify_only`).
async fn ask_coordinator(
    shared: &Arc<Shared>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: u32,
) -> i16 {
    let Some(node) = shared.cluster.as_ref() else {
        return code::INVALID_TXN_STATE;
    };
    let txn_partition = u32::try_from(TXN_PARTITION).unwrap_or(0);
    let coordinator = match marker_target(&node.image(), node.node_id(), TXN_TOPIC, txn_partition) {
        MarkerTarget::Remote(b) => b,
        // Here, and it did not know the producer (or is loading).
        MarkerTarget::Local(_) => {
            let part = (topic.to_string(), partition);
            return produce_error(
                shared
                    .txns
                    .verify(transactional_id, producer_id, epoch, &part)
                    .err()
                    .unwrap_or(code::NONE),
            );
        }
        MarkerTarget::Gone | MarkerTarget::NoLeader => {
            return produce_error(code::COORDINATOR_NOT_AVAILABLE)
        }
    };
    let Some((addr, source)) = shared.replicas.peer(coordinator) else {
        return produce_error(code::COORDINATOR_NOT_AVAILABLE);
    };
    let req = verify_request(transactional_id, producer_id, epoch, topic, partition);
    let asked = tokio::time::timeout(VERIFY_TIMEOUT, call(addr, source, &req)).await;
    match asked {
        Ok(Ok(resp)) => produce_error(verify_result(&resp, topic, partition)),
        Ok(Err(e)) => {
            debug(&format!(
                "verifying a transaction with broker {coordinator} at {addr}: {e}"
            ));
            produce_error(code::COORDINATOR_NOT_AVAILABLE)
        }
        Err(_) => produce_error(code::COORDINATOR_NOT_AVAILABLE),
    }
}

/// The coordinator's answer as Produce gives it (Kafka's
/// `AddPartitionsToTxnManager` and `ReplicaManager`): what the producer
/// should retry is NOT_ENOUGH_REPLICAS, a fenced producer
/// INVALID_PRODUCER_EPOCH, a refusal of the broker's own request (it is
/// not the client's doing) INVALID_TXN_STATE.
pub fn produce_error(c: i16) -> i16 {
    match c {
        code::COORDINATOR_NOT_AVAILABLE
        | code::NOT_COORDINATOR
        | code::COORDINATOR_LOAD_IN_PROGRESS
        | code::CONCURRENT_TRANSACTIONS => code::NOT_ENOUGH_REPLICAS,
        code::PRODUCER_FENCED => code::INVALID_PRODUCER_EPOCH,
        code::CLUSTER_AUTHORIZATION_FAILED => code::INVALID_TXN_STATE,
        other => other,
    }
}

/// One transaction, one partition, `verify_only`.
pub fn verify_request(
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: u32,
) -> AddPartitionsToTxnRequest {
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![i32::try_from(partition).unwrap_or(i32::MAX)];
    let mut txn = AddPartitionsToTxnTransaction::default();
    txn.transactional_id = TransactionalId(StrBytes::from_string(transactional_id.to_string()));
    txn.producer_id = ProducerId(producer_id);
    txn.producer_epoch = epoch;
    txn.verify_only = true;
    txn.topics = vec![t];
    let mut req = AddPartitionsToTxnRequest::default();
    req.transactions = vec![txn];
    req
}

/// The coordinator's code for `topic`-`partition` in `resp` (the
/// response's top-level error first; a partition missing from the answer
/// is not verified).
pub fn verify_result(resp: &AddPartitionsToTxnResponse, topic: &str, partition: u32) -> i16 {
    if resp.error_code != code::NONE {
        return resp.error_code;
    }
    let index = i32::try_from(partition).unwrap_or(i32::MAX);
    resp.results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| t.results_by_partition.iter())
        .find(|p| p.partition_index == index)
        .map_or(code::INVALID_TXN_STATE, |p| p.partition_error_code)
}

/// Idle inter-broker connections for verifications, by peer address and
/// source address.
type Pool = Mutex<HashMap<(SocketAddr, Option<IpAddr>), Vec<PeerConnection>>>;
static POOL: LazyLock<Pool> = LazyLock::new(Pool::default);

/// At most this many idle connections kept per peer.
const POOL_PER_PEER: usize = 4;

/// Send `req` over a pooled connection to `addr` (a new one if none is
/// idle, or if the idle one fails: the peer may have restarted since); the
/// connection goes back to the pool only after a whole answer. The question
/// changes nothing, so asking it twice is harmless.
async fn call(
    addr: SocketAddr,
    source: Option<IpAddr>,
    req: &AddPartitionsToTxnRequest,
) -> std::io::Result<AddPartitionsToTxnResponse> {
    let idle = POOL.lock().get_mut(&(addr, source)).and_then(Vec::pop);
    let pooled = match idle {
        Some(mut c) => c
            .call(ApiKey::AddPartitionsToTxn, VERIFY_VERSION, req)
            .await
            .ok()
            .map(|resp| (c, resp)),
        None => None,
    };
    let (conn, resp) = match pooled {
        Some(answered) => answered,
        None => {
            let mut c = PeerConnection::connect(addr, source).await?;
            let resp = c
                .call(ApiKey::AddPartitionsToTxn, VERIFY_VERSION, req)
                .await?;
            (c, resp)
        }
    };
    let mut pool = POOL.lock();
    let idle = pool.entry((addr, source)).or_default();
    if idle.len() < POOL_PER_PEER {
        idle.push(conn);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
    };

    #[test]
    fn coordinator_answers_become_kafkas_produce_errors() {
        for (theirs, ours) in [
            (code::NONE, code::NONE),
            (code::COORDINATOR_NOT_AVAILABLE, code::NOT_ENOUGH_REPLICAS),
            (code::NOT_COORDINATOR, code::NOT_ENOUGH_REPLICAS),
            (
                code::COORDINATOR_LOAD_IN_PROGRESS,
                code::NOT_ENOUGH_REPLICAS,
            ),
            (code::CONCURRENT_TRANSACTIONS, code::NOT_ENOUGH_REPLICAS),
            (code::PRODUCER_FENCED, code::INVALID_PRODUCER_EPOCH),
            (code::CLUSTER_AUTHORIZATION_FAILED, code::INVALID_TXN_STATE),
            (code::INVALID_TXN_STATE, code::INVALID_TXN_STATE),
            (code::INVALID_PRODUCER_EPOCH, code::INVALID_PRODUCER_EPOCH),
        ] {
            assert_eq!(produce_error(theirs), ours, "{theirs}");
        }
    }

    fn answer(topic: &str, partition: i32, c: i16) -> AddPartitionsToTxnResponse {
        let mut p = AddPartitionsToTxnPartitionResult::default();
        p.partition_index = partition;
        p.partition_error_code = c;
        let mut t = AddPartitionsToTxnTopicResult::default();
        t.name = TopicName(StrBytes::from_string(topic.to_string()));
        t.results_by_partition = vec![p];
        let mut r = AddPartitionsToTxnResult::default();
        r.topic_results = vec![t];
        let mut resp = AddPartitionsToTxnResponse::default();
        resp.results_by_transaction = vec![r];
        resp
    }

    #[test]
    fn the_partitions_answer_is_read_from_the_response() {
        let req = verify_request("tx", 7, 2, "t", 3);
        let txn = &req.transactions[0];
        assert!(txn.verify_only);
        assert_eq!((txn.producer_id.0, txn.producer_epoch), (7, 2));
        assert_eq!(txn.topics[0].partitions, vec![3]);

        assert_eq!(
            verify_result(&answer("t", 3, code::NONE), "t", 3),
            code::NONE
        );
        assert_eq!(
            verify_result(&answer("t", 3, code::INVALID_TXN_STATE), "t", 3),
            code::INVALID_TXN_STATE
        );
        // Not in the answer: not verified.
        assert_eq!(
            verify_result(&answer("t", 4, code::NONE), "t", 3),
            code::INVALID_TXN_STATE
        );
        let mut refused = answer("t", 3, code::NONE);
        refused.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        assert_eq!(
            verify_result(&refused, "t", 3),
            code::CLUSTER_AUTHORIZATION_FAILED
        );
    }
}
