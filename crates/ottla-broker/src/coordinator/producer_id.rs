//! Producer ids for idempotent producers (Kafka's ProducerIdManager; there,
//! part of the transaction coordinator, which answers InitProducerId).
//!
//! Ids live in the broker's memory only, so each mixes the start time in: a
//! restarted broker never hands out an id a previous run used. What a
//! partition remembers of each producer is `replica::idempotence`'s.

use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Default)]
pub struct ProducerIdManager {
    next_id: AtomicI64,
}

impl ProducerIdManager {
    /// A producer id no earlier run of a broker on this machine handed out.
    pub fn new_producer_id(&self) -> i64 {
        let _ = self.next_id.compare_exchange(
            0,
            (ottla_storage::log::now_ms() & 0x7fff_ffff_ffff) << 14,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.next_id.fetch_add(1, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_unique_and_positive() {
        let t = ProducerIdManager::default();
        let a = t.new_producer_id();
        let b = t.new_producer_id();
        assert!(a > 0 && b == a + 1);
    }
}
