//! DescribeCluster, and the authorized-operations bitfields it and Metadata
//! answer with. This broker is the whole cluster: its only broker and its
//! controller. It has no authorizer, so every operation is allowed: asked
//! for a resource's authorized operations, it answers every operation
//! Kafka defines for that resource type (a bitfield of `AclOperation`
//! codes, as Kafka's `Utils.to32BitField`).

use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::metadata::{CLUSTER_ID, NODE_ID};
use super::s;
use crate::auth::acl::{ResourceType, CLUSTER_NAME};
use crate::dispatch::Session;
use crate::Shared;

/// Kafka's `AclOperation` codes.
mod op {
    pub const READ: u8 = 3;
    pub const WRITE: u8 = 4;
    pub const CREATE: u8 = 5;
    pub const DELETE: u8 = 6;
    pub const ALTER: u8 = 7;
    pub const DESCRIBE: u8 = 8;
    pub const CLUSTER_ACTION: u8 = 9;
    pub const DESCRIBE_CONFIGS: u8 = 10;
    pub const ALTER_CONFIGS: u8 = 11;
    pub const IDEMPOTENT_WRITE: u8 = 12;
}

const fn bits(ops: &[u8]) -> i32 {
    let mut out = 0i32;
    let mut i = 0;
    while i < ops.len() {
        out |= 1 << ops[i];
        i += 1;
    }
    out
}

/// Every operation Kafka defines on the cluster resource.
pub const CLUSTER_OPERATIONS: i32 = bits(&[
    op::CREATE,
    op::ALTER,
    op::DESCRIBE,
    op::CLUSTER_ACTION,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
    op::IDEMPOTENT_WRITE,
]);

/// Every operation Kafka defines on a topic.
pub const TOPIC_OPERATIONS: i32 = bits(&[
    op::READ,
    op::WRITE,
    op::CREATE,
    op::DELETE,
    op::ALTER,
    op::DESCRIBE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
]);

/// Authorized operations not asked for (Kafka's `Int.MinValue`).
pub const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

/// DescribeCluster's `endpoint_type` (v1+): brokers; controllers are asked
/// of a controller, which this broker does not claim to be on the wire.
const ENDPOINT_BROKERS: i8 = 1;
const MISMATCHED_ENDPOINT_TYPE: i16 = 114;

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeClusterRequest,
    v: i16,
) -> DescribeClusterResponse {
    let mut r = DescribeClusterResponse::default();
    if v >= 1 {
        r.endpoint_type = req.endpoint_type;
        if req.endpoint_type != ENDPOINT_BROKERS {
            r.error_code = MISMATCHED_ENDPOINT_TYPE;
            r.error_message = Some(s("The request was sent to an endpoint of type BROKER, \
                 but we wanted an endpoint of type CONTROLLER"));
            return r;
        }
    }
    r.cluster_id = s(CLUSTER_ID);
    if let Some(node) = &shared.cluster {
        // A cluster: the unfenced brokers of the image, the active controller.
        r.controller_id = BrokerId(node.controller_id().unwrap_or(-1));
        let image = node.image();
        let listener = _s.listener.as_ref().map(|l| l.name.as_str());
        r.brokers = crate::cluster::assignments::live_brokers_on(&image, listener)
            .into_iter()
            .map(|(id, host, port, rack)| {
                let mut b = DescribeClusterBroker::default();
                b.broker_id = BrokerId(id);
                b.host = s(&host);
                b.port = i32::from(port);
                b.rack = rack.as_deref().map(s);
                b
            })
            .collect();
    } else {
        r.controller_id = BrokerId(NODE_ID);
        let mut b = DescribeClusterBroker::default();
        b.broker_id = BrokerId(NODE_ID);
        b.host = s(_s.advertised(shared).0);
        b.port = i32::from(_s.advertised(shared).1);
        b.rack = shared.config.broker_rack.as_deref().map(s);
        r.brokers = vec![b];
    }
    r.cluster_authorized_operations = if req.include_cluster_authorized_operations {
        _s.authorized_operations(shared, ResourceType::Cluster, CLUSTER_NAME)
    } else {
        OPERATIONS_NOT_ASKED
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfields_are_kafkas() {
        // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
        // ALTER_CONFIGS, IDEMPOTENT_WRITE.
        assert_eq!(CLUSTER_OPERATIONS, 8096);
        // READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS,
        // ALTER_CONFIGS.
        assert_eq!(TOPIC_OPERATIONS, 3576);
    }
}
