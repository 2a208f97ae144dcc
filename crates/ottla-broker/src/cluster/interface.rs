//! Stand-in for the replica side's interface (`replica::partition_state`,
//! built on the `cl-data` branch) until the two branches are merged: the
//! same names and signatures, so the merge swaps the `use` in `cluster`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BrokerId = i32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAssignment {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub leader: Option<BrokerId>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

pub trait PeerDirectory: Send + Sync + 'static {
    fn address(&self, broker: BrokerId) -> Option<std::net::SocketAddr>;
}

pub trait IsrChannel: Send + Sync + 'static {
    fn alter_partition(
        &self,
        topic_id: uuid::Uuid,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> Pin<Box<dyn Future<Output = Result<i32, i16>> + Send>>;
}

pub struct ClusterLink {
    pub local: BrokerId,
    pub peers: Arc<dyn PeerDirectory>,
    pub isr: Arc<dyn IsrChannel>,
    pub replica_lag_time_max_ms: u64,
    pub source_ip: Option<std::net::IpAddr>,
}

/// What the replica manager will do with the link and the assignments.
pub trait Replicas {
    fn enable_cluster(&self, link: ClusterLink);
    fn apply_assignments(
        &self,
        assignments: Vec<PartitionAssignment>,
        configs: &HashMap<String, BTreeMap<String, String>>,
        deleted_topics: &[uuid::Uuid],
    );
}
