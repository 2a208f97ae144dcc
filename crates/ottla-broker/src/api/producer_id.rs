//! InitProducerId: ids for idempotent producers (no transactions).

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::dispatch::Session;
use crate::errors::code;
use crate::Shared;

pub async fn handle(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: InitProducerIdRequest,
    _v: i16,
) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        r.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
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
