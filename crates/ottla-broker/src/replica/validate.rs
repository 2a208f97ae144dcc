//! Every produced batch whole and readable before it is stored (Kafka's
//! LogValidator): length, magic, CRC-32C, codec, and every record's framing
//! after inflating a compressed batch, so a batch that cannot be read back
//! is refused now, not at fetch time; on a compacted topic, every record
//! keyed; under `message.timestamp.type=CreateTime`, every record's
//! timestamp within `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` of now.

use super::idempotence::BatchSeq;
use crate::errors::{code, kafka_code, Refusal};
use ottla_record::batch::{check_batch, peek_total_size, LOG_OVERHEAD};
use ottla_record::compression::ZSTD;
use ottla_record::decode::records;
use ottla_storage::config::TopicConfig;

/// A record without a timestamp (Kafka's `RecordBatch.NO_TIMESTAMP`).
const NO_TIMESTAMP: i64 = -1;

type Checked = Vec<(std::ops::Range<usize>, BatchSeq)>;

/// Every batch in `data`, whole and readable, with its producer fields.
/// `compacted` names the partition (`topic-N`) of a topic whose cleanup
/// policy includes `compact`: there, a record without a key is refused
/// (the cleaner could never decide what it replaces), with Kafka's
/// INVALID_RECORD, per-record errors and messages; nothing is appended.
///
/// CreateTime timestamps outside `[now - before.max.ms, now + after.max.ms]`
/// are refused with Kafka's INVALID_TIMESTAMP and a record error each.
pub fn validate(
    data: &[u8],
    cfg: &TopicConfig,
    compacted: Option<&str>,
    now: i64,
) -> Result<Checked, Refusal> {
    let max_message_bytes = cfg.max_message_bytes;
    let bounds = (!cfg.log_append_time).then(|| {
        (
            now.saturating_sub(cfg.timestamp_before_max_ms),
            now.saturating_add(cfg.timestamp_after_max_ms),
        )
    });
    let mut late = Vec::new();
    let mut keyless = Vec::new();
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let total = peek_total_size(&data[at..]).ok_or(Refusal::from(code::CORRUPT_MESSAGE))?;
        if total < LOG_OVERHEAD as i64 || at as i64 + total > data.len() as i64 {
            return Err(code::CORRUPT_MESSAGE.into());
        }
        let end = at + total as usize;
        let batch = &data[at..end];
        if batch.len() > max_message_bytes.saturating_add(LOG_OVERHEAD) {
            return Err(code::MESSAGE_TOO_LARGE.into());
        }
        let h = check_batch(batch).map_err(|_| Refusal::from(code::CORRUPT_MESSAGE))?;
        if h.compression() > ZSTD {
            return Err(code::UNSUPPORTED_COMPRESSION_TYPE.into());
        }
        if h.is_control() {
            // Only a transaction coordinator writes markers (Kafka's
            // "Clients are not allowed to write control records").
            return Err(code::INVALID_RECORD.into());
        }
        if h.is_transactional() && h.producer_id < 0 {
            return Err(code::INVALID_RECORD.into());
        }
        let recs = records(&h, batch).map_err(|e| Refusal::from(kafka_code(&e.into())))?;
        let mut n = 0i32;
        for rec in recs.iter() {
            let rec = rec.map_err(|_| Refusal::from(code::INVALID_RECORD))?;
            if rec.offset - h.base_offset != n as i64 {
                return Err(code::INVALID_RECORD.into());
            }
            if let Some((lo, hi)) = bounds {
                if rec.timestamp != NO_TIMESTAMP && (rec.timestamp < lo || rec.timestamp > hi) {
                    late.push((
                        n,
                        format!(
                            "Timestamp {} of message with offset {} is out of range. The \
                             timestamp should be within [{lo}, {hi}]",
                            rec.timestamp, rec.offset
                        ),
                    ));
                }
            }
            if let (Some(tp), None) = (compacted, rec.key) {
                // Kafka's `batchIndex`: the record's place in its batch.
                keyless.push((
                    n,
                    format!(
                        "Compacted topic cannot accept message without key in topic partition \
                         {tp}."
                    ),
                ));
            }
            n += 1;
        }
        if n == 0 || n != h.records_count || h.last_offset_delta != n - 1 {
            return Err(code::INVALID_RECORD.into());
        }
        out.push((
            at..end,
            BatchSeq {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                first: h.base_sequence,
                count: n,
                transactional: h.is_transactional(),
            },
        ));
        at = end;
    }
    if !late.is_empty() {
        // Kafka's LogValidator gives this summary when any record error is
        // a timestamp's.
        let mut r = Refusal::records(code::INVALID_TIMESTAMP, late);
        r.message = Some("One or more records have been rejected due to invalid timestamp".into());
        return Err(r);
    }
    if !keyless.is_empty() {
        return Err(Refusal::records(code::INVALID_RECORD, keyless));
    }
    Ok(out)
}
