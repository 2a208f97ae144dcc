//! DescribeProducers: the producers the broker keeps state for per
//! partition (`replica::idempotence`): id, epoch, last sequence, when they
//! last appended, the coordinator epoch of their last marker and the first
//! offset of their open transaction (-1: none). The state is loaded from
//! the log when the broker first uses the partition (a Produce, a marker,
//! a read_committed Fetch): before that, none is reported.

use std::sync::Arc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::blocking;
use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeProducersRequest,
    _v: i16,
) -> DescribeProducersResponse {
    let mut r = DescribeProducersResponse::default();
    for t in req.topics {
        let mut tr = TopicResponse::default();
        tr.name = t.name.clone();
        let found = blocking(|| shared.store.topic(t.name.as_str()));
        // ACLs: READ on the topic (Kafka's check).
        let allowed = _s.authorized(
            shared,
            Operation::Read,
            ResourceType::Topic,
            t.name.as_str(),
        );
        for p in t.partition_indexes {
            let mut pr = PartitionResponse::default();
            pr.partition_index = p;
            if !allowed {
                pr.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                tr.partitions.push(pr);
                continue;
            }
            let known = match &found {
                Ok(Some(topic)) => u32::try_from(p).ok().filter(|p| *p < topic.partitions),
                Ok(None) => None,
                Err(e) => {
                    pr.error_code = kafka_code(e);
                    tr.partitions.push(pr);
                    continue;
                }
            };
            match known {
                Some(p) => {
                    pr.active_producers = shared
                        .replicas
                        .producers(t.name.as_str(), p)
                        .into_iter()
                        .map(|s| {
                            let mut ps = ProducerState::default();
                            ps.producer_id = ProducerId(s.producer_id);
                            ps.producer_epoch = i32::from(s.epoch);
                            ps.last_sequence = s.last_sequence;
                            ps.last_timestamp = s.last_timestamp;
                            ps.coordinator_epoch = s.coordinator_epoch;
                            ps.current_txn_start_offset = s.current_txn_start_offset;
                            ps
                        })
                        .collect();
                }
                None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            }
            tr.partitions.push(pr);
        }
        r.topics.push(tr);
    }
    r
}
