//! Control batches: the COMMIT and ABORT markers a transaction coordinator
//! writes into every partition of a transaction (KIP-98), in Kafka's format
//! (`ControlRecordType`, `EndTransactionMarker`).
//!
//! A marker is a batch of one record with the control and transactional
//! attribute bits set, the transaction's producer id and epoch, and base
//! sequence -1. Its record's key is `version:int16 type:int16` (version 0;
//! type 0 ABORT, 1 COMMIT) and its value `version:int16
//! coordinatorEpoch:int32` (version 0). Readers never hand a control record
//! to an application: consumers skip control batches, and read_committed
//! consumers use the ABORT markers to drop the aborted transaction's data.

use super::builder::BatchBuilder;
use super::layout::{
    seal_crc, BatchHeader, ATTRIBUTES, BASE_SEQUENCE, CONTROL_FLAG, PRODUCER_EPOCH, PRODUCER_ID,
    TRANSACTIONAL_FLAG,
};
use crate::decode::records;

/// How a transaction ended, as its marker says (Kafka's `ControlRecordType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    pub fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
    pub fn from_code(code: i16) -> Option<ControlType> {
        match code {
            0 => Some(ControlType::Abort),
            1 => Some(ControlType::Commit),
            _ => None,
        }
    }
}

/// A marker as read back from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub kind: ControlType,
    pub coordinator_epoch: i32,
}

/// A sealed marker batch (base offset 0, for the log to stamp) ending
/// `producer_id`'s transaction of `epoch`, timestamped `now`.
pub fn marker_batch(
    producer_id: i64,
    epoch: i16,
    kind: ControlType,
    coordinator_epoch: i32,
    now: i64,
) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&kind.code().to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let mut b = BatchBuilder::with_capacity(128);
    b.append(now, Some(&key), Some(&value), &[]);
    let mut out = b.finish().to_vec();
    let attributes = CONTROL_FLAG | TRANSACTIONAL_FLAG;
    out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    out[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    out[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    out[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
    seal_crc(&mut out);
    out
}

/// The marker a control batch holds; `None` for a batch that is not a
/// control batch or whose control record is not a marker this version
/// knows (Kafka skips unknown control types too). `batch` is the whole
/// batch `header` was parsed from, already checked.
pub fn parse_marker(header: &BatchHeader, batch: &[u8]) -> Option<Marker> {
    if !header.is_control() {
        return None;
    }
    let recs = records(header, batch).ok()?;
    let rec = recs.iter().next()?.ok()?;
    let key = rec.key?;
    let kind = ControlType::from_code(i16::from_be_bytes(key.get(2..4)?.try_into().ok()?))?;
    let coordinator_epoch = rec
        .value
        .and_then(|v| Some(i32::from_be_bytes(v.get(2..6)?.try_into().ok()?)))
        .unwrap_or(-1);
    Some(Marker {
        kind,
        coordinator_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::check_batch;

    #[test]
    fn markers_round_trip_with_kafkas_bits_and_bytes() {
        for kind in [ControlType::Abort, ControlType::Commit] {
            let b = marker_batch(42, 3, kind, 7, 1_000);
            let h = check_batch(&b).expect("sealed");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!(h.records_count, 1);
            let m = parse_marker(&h, &b).expect("a marker");
            assert_eq!(m.kind, kind);
            assert_eq!(m.coordinator_epoch, 7);
            let recs = records(&h, &b).expect("records");
            let r = recs.iter().next().expect("one").expect("record");
            assert_eq!(r.key, Some(&[0, 0, 0, kind.code() as u8][..]));
            assert_eq!(r.value, Some(&[0, 0, 0, 0, 0, 7][..]));
        }
    }

    #[test]
    fn data_batches_and_unknown_types_are_not_markers() {
        let mut b = BatchBuilder::with_capacity(64);
        b.append(1, Some(b"k"), Some(b"v"), &[]);
        let data = b.finish().to_vec();
        let h = check_batch(&data).expect("sealed");
        assert_eq!(parse_marker(&h, &data), None);
        let mut b = BatchBuilder::with_capacity(64);
        b.append(1, Some(&[0, 0, 0, 9]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
        let mut odd = b.finish().to_vec();
        odd[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&CONTROL_FLAG.to_be_bytes());
        seal_crc(&mut odd);
        let h = check_batch(&odd).expect("sealed");
        assert_eq!(parse_marker(&h, &odd), None);
    }
}
