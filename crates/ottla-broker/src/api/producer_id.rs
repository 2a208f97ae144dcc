//! InitProducerId: ids for idempotent producers, and for transactional
//! ones through the transaction coordinator (one producer id per
//! transactional id, its epoch bumped on every call, which fences the
//! previous producer and aborts its open transaction).

use std::sync::Arc;

use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId,
};

use super::blocking;
use super::codec_v10::{InitProducerIdRequest6, InitProducerIdResponse6};
use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

pub async fn handle(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: InitProducerIdRequest,
    v: i16,
) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    // ACLs (Kafka's): WRITE on the transactional id; an idempotent producer
    // IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    let refused = match req.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        Some(id) => (!_s.authorized(shared, Operation::Write, ResourceType::TransactionalId, id))
            .then_some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        None => (!_s.authorized_cluster(shared, Operation::IdempotentWrite)
            && !_s.authorized_any(shared, Operation::Write, ResourceType::Topic))
        .then_some(code::CLUSTER_AUTHORIZATION_FAILED),
    };
    if let Some(c) = refused {
        r.error_code = c;
        return r;
    }
    if let Some(id) = req.transactional_id.as_ref().filter(|id| !id.is_empty()) {
        // KIP-360 (v3+): a client that had an id and epoch gives them.
        let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        match blocking(|| {
            shared.txns.init_producer_id(
                &shared.replicas,
                &shared.producer_ids,
                id.as_str(),
                req.transaction_timeout_ms,
                expected,
            )
        }) {
            Ok((pid, epoch)) => {
                r.producer_id = ProducerId(pid);
                r.producer_epoch = epoch;
            }
            // PRODUCER_FENCED from v4 (KIP-588), as Kafka answers.
            Err(c) if c == code::PRODUCER_FENCED && v < 4 => {
                r.error_code = code::INVALID_PRODUCER_EPOCH
            }
            Err(c) => r.error_code = c,
        }
        return r;
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
        // A known producer bumping its epoch (KIP-360) keeps its id.
        r.producer_id = req.producer_id;
        r.producer_epoch = req.producer_epoch + 1;
    } else {
        r.producer_id = ProducerId(shared.producer_ids.new_producer_id());
        r.producer_epoch = 0;
    }
    r
}

/// InitProducerId v6 (KIP-939). Two-phase commit is not enabled here (it
/// is Kafka's broker setting `transaction.two.phase.commit.enable`, off by
/// default), so a transactional producer asking for it gets what Kafka
/// answers then: TRANSACTIONAL_ID_AUTHORIZATION_FAILED. Otherwise v5's
/// answer, with no kept prepared transaction (its producer id and epoch
/// -1). `keep_prepared_txn` without `enable_2pc` has nothing to keep.
pub async fn handle_v6(
    shared: &Arc<Shared>,
    s: &mut Session,
    req: InitProducerIdRequest6,
    v: i16,
) -> InitProducerIdResponse6 {
    let mut r = InitProducerIdResponse6 {
        throttle_time_ms: 0,
        error_code: code::NONE,
        producer_id: -1,
        producer_epoch: -1,
        ongoing_txn_producer_id: -1,
        ongoing_txn_producer_epoch: -1,
    };
    let transactional = req
        .transactional_id
        .as_deref()
        .is_some_and(|id| !id.is_empty());
    if req.enable_2pc && transactional {
        r.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return r;
    }
    let mut k = InitProducerIdRequest::default();
    k.transactional_id = req
        .transactional_id
        .as_deref()
        .map(|id| TransactionalId(super::s(id)));
    k.transaction_timeout_ms = req.transaction_timeout_ms;
    k.producer_id = ProducerId(req.producer_id);
    k.producer_epoch = req.producer_epoch;
    let answer = handle(shared, s, k, v).await;
    r.error_code = answer.error_code;
    r.producer_id = answer.producer_id.0;
    r.producer_epoch = answer.producer_epoch;
    r
}
