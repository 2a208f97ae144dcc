//! Transaction markers: the coordinator's COMMIT or ABORT written into one
//! partition of a transaction, through the replica manager like any
//! append (the path a cluster would replicate to followers), and the
//! partition's producer state told, so its last stable offset moves and an
//! abort is indexed.

use ottla_record::batch::{marker_batch, ControlType};
use ottla_storage::error::Error;
use ottla_storage::log::now_ms;

use super::ReplicaManager;
use crate::errors::{kafka_code, warn};

impl ReplicaManager {
    /// Append a marker ending `producer_id`'s transaction (at `epoch`) to
    /// `topic`-`partition`. A partition deleted meanwhile is skipped, as
    /// Kafka drops markers for partitions that are gone. Blocking.
    pub fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        epoch: i16,
        kind: ControlType,
        coordinator_epoch: i32,
    ) -> Result<(), i16> {
        let log = match self.store.partition_by_name(topic, partition) {
            Ok(l) => l,
            Err(Error::UnknownTopicOrPartition { .. }) => return Ok(()),
            Err(e) => return Err(kafka_code(&e)),
        };
        let state = self.producers.partition(&log).map_err(|e| kafka_code(&e))?;
        let mut producers = state.lock();
        let now = now_ms();
        let mut batch = marker_batch(producer_id, epoch, kind, coordinator_epoch, now);
        let info = log.append(&mut batch, self.durability).map_err(|e| {
            warn(&format!("marker to {topic}-{partition} failed: {e}"));
            kafka_code(&e)
        })?;
        producers.state.complete_txn(
            producer_id,
            epoch,
            kind,
            coordinator_epoch,
            info.base_offset,
            now,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::validate;
    use crate::errors::code;
    use ottla_record::batch::*;
    use ottla_storage::config::TopicConfig;

    #[test]
    fn clients_may_not_write_markers_but_may_write_transactional_batches() {
        let cfg = TopicConfig::default();
        let m = marker_batch(1, 0, ControlType::Commit, 0, 1);
        let r = validate(&m, &cfg, None, 1).expect_err("a client's marker");
        assert_eq!(r.code, code::INVALID_RECORD);
        // Data with the transactional bit and a producer id passes (its
        // transaction is checked against the coordinator by Produce).
        let mut b = ottla_record::BatchBuilder::with_capacity(128);
        b.append(1, None, Some(b"v"), &[]);
        let mut v = b.finish().to_vec();
        v[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&TRANSACTIONAL_FLAG.to_be_bytes());
        seal_crc(&mut v);
        let r = validate(&v, &cfg, None, 1).expect_err("no producer id");
        assert_eq!(r.code, code::INVALID_RECORD);
        v[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&5i64.to_be_bytes());
        seal_crc(&mut v);
        let ok = validate(&v, &cfg, None, 1).unwrap_or_else(|r| panic!("refused: {}", r.code));
        assert!(ok[0].1.transactional);
    }
}
