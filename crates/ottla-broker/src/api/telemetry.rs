//! GetTelemetrySubscriptions (KIP-714): this broker collects no client
//! metrics, so every client is told it has no subscription: no requested
//! metrics (KIP-714: an empty list means "push nothing"), subscription id
//! 0, and the default push interval after which a client may ask again. A
//! client that sent the zero id gets an id of its own, as KIP-714 asks.
//! PushTelemetry is not served: a client with no metrics to push never
//! sends it.

use std::sync::Arc;

use kafka_protocol::messages::{
    GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse,
};
use uuid::Uuid;

use crate::dispatch::Session;
use crate::Shared;

/// KIP-714's default `interval.ms` of a subscription (five minutes).
const PUSH_INTERVAL_MS: i32 = 300_000;
/// KIP-714's default `telemetry.max.bytes` (1 MiB).
const TELEMETRY_MAX_BYTES: i32 = 1024 * 1024;
/// zstd, lz4, gzip, snappy: Kafka's `CompressionType` ids, in Kafka's
/// order of preference.
const COMPRESSION_TYPES: [i8; 4] = [4, 3, 1, 2];

pub async fn get_subscriptions(
    _shared: &Arc<Shared>,
    _s: &mut Session,
    req: GetTelemetrySubscriptionsRequest,
    _v: i16,
) -> GetTelemetrySubscriptionsResponse {
    let mut r = GetTelemetrySubscriptionsResponse::default();
    r.client_instance_id = if req.client_instance_id.is_nil() {
        new_instance_id()
    } else {
        req.client_instance_id
    };
    r.subscription_id = 0;
    r.accepted_compression_types = COMPRESSION_TYPES.to_vec();
    r.push_interval_ms = PUSH_INTERVAL_MS;
    r.telemetry_max_bytes = TELEMETRY_MAX_BYTES;
    r.delta_temporality = true;
    r.requested_metrics = Vec::new();
    r
}

/// A random (version 4) id, drawn as topic ids are (never a reserved one),
/// or the clock and process id if the kernel's generator fails: the id only
/// needs to differ between clients.
fn new_instance_id() -> Uuid {
    match ottla_storage::topic::TopicId::random() {
        Ok(id) => Uuid::from_bytes(id.0),
        Err(_) => {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&(ottla_storage::log::now_ms() as u64).to_le_bytes());
            b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            Uuid::from_bytes(b)
        }
    }
}
