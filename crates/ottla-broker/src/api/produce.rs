//! Produce: validate what the client sent, then store it as sent.
//!
//! A produced batch travels: socket -> frame -> this handler, which walks
//! the batches of each partition (length, magic, CRC-32C, codec, and every
//! record's framing after inflating a compressed batch, so a batch that
//! cannot be read back is refused now, not at fetch time), checks producer
//! sequences for idempotent producers, and hands the original bytes to
//! `PartitionLog::append`, which stamps base offsets (outside the CRC) and
//! writes them. The client's compression and checksum are what lands on disk.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::TopicProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{blocking, s, topic_name};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code, warn};
use crate::idempotence::{BatchSeq, Verdict};
use crate::Shared;
use ottla_record::batch::{check_batch, peek_total_size, LOG_OVERHEAD};
use ottla_record::compression::ZSTD;
use ottla_record::decode::records;
use ottla_storage::error::Error;
use ottla_storage::log::Durability;
use ottla_storage::store::Topic;
use ottla_storage::topic::is_internal;

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: ProduceRequest,
    _v: i16,
) -> Option<ProduceResponse> {
    // Taken apart so that nothing but a partition's `records` still points
    // into the request frame when that partition is written (see `owned`).
    let ProduceRequest {
        acks,
        transactional_id,
        topic_data,
        ..
    } = req;
    let transactional = transactional_id.is_some();
    drop(transactional_id);
    let mut resp = ProduceResponse::default();
    for t in topic_data {
        let TopicProduceData {
            name: wire_name,
            partition_data,
            ..
        } = t;
        let name = wire_name.as_str().to_string();
        drop(wire_name);
        let mut tr = TopicProduceResponse::default();
        tr.name = topic_name(&name);
        // Internal topics are never auto-created here: the engine creates
        // __consumer_offsets with its own (compacted) config.
        let auto_create = shared.config.auto_create_topics && !is_internal(&name);
        // A known topic is a lookup in memory; only creating one touches files.
        let topic = match shared.store.topic(&name) {
            Ok(Some(t)) => Ok(t),
            _ => blocking(|| {
                shared
                    .store
                    .topic_or_create(&name, auto_create, shared.config.num_partitions)
            }),
        };
        for p in partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            let records = p.records;
            let outcome = match (&topic, transactional) {
                (_, true) => Err(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.into()),
                // __consumer_offsets is written by the engine only.
                _ if is_internal(&name) => Err(code::INVALID_TOPIC_EXCEPTION.into()),
                (Err(e), _) => Err(Refusal::engine(e)),
                // A page-cache append to an open log is a memory copy: done
                // right here. Handing the worker's core to another thread
                // for it (block_in_place) cost more than the append
                // (measured: docs/PERFORMANCE.md, Broker). Opening a log
                // (files, an fdatasync: ~6 ms seen) and fsync appends may
                // take milliseconds, so those leave the runtime.
                (Ok(topic), _)
                    if shared.config.durability == Durability::PageCache
                        && session.written.contains(&(name.clone(), p.index)) =>
                {
                    write(shared, topic, p.index, records)
                }
                (Ok(topic), _) => {
                    let r = blocking(|| write(shared, topic, p.index, records));
                    if r.is_ok() {
                        session.written.insert((name.clone(), p.index));
                    }
                    r
                }
            };
            match outcome {
                Ok((base, start)) => {
                    pr.base_offset = base;
                    pr.log_start_offset = start;
                }
                Err(r) => {
                    pr.error_code = r.code;
                    pr.error_message = r.message.map(|m| s(&m));
                    pr.base_offset = -1;
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    (acks != 0).then_some(resp)
}

/// The batches as a mutable buffer for `PartitionLog::append` (which stamps
/// base offsets in place): the frame's own bytes when nothing else refers to
/// them any more (a large single-partition request, the common case for a
/// busy producer), a copy otherwise.
fn owned(data: Bytes) -> BytesMut {
    data.try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

/// Why a partition's batches were not stored: the Kafka error code and, for
/// an engine error, its text ("No space left on device" and the file), which
/// Produce v8 and later carry as the partition's `error_message`.
struct Refusal {
    code: i16,
    message: Option<String>,
}

impl Refusal {
    fn engine(e: &Error) -> Refusal {
        Refusal {
            code: kafka_code(e),
            message: Some(e.to_string()),
        }
    }
}

impl From<i16> for Refusal {
    fn from(code: i16) -> Refusal {
        Refusal {
            code,
            message: None,
        }
    }
}

/// Validate and append one partition's batches: (base offset, log start).
fn write(
    shared: &Shared,
    topic: &Topic,
    partition: i32,
    data: Option<Bytes>,
) -> Result<(i64, i64), Refusal> {
    let data = data.filter(|d| !d.is_empty()).ok_or(code::INVALID_RECORD)?;
    if partition < 0 || partition as u32 >= topic.partitions {
        return Err(code::UNKNOWN_TOPIC_OR_PARTITION.into());
    }
    let log = shared
        .store
        .partition(topic, partition as u32)
        .map_err(|e| Refusal::engine(&e))?;
    let batches = validate(&data, topic.config.max_message_bytes)?;
    let state = shared.producers.partition(&topic.name, partition as u32);
    // Held across check, append and record, so a retry racing its original
    // on another connection is still recognised.
    let mut producers = state.lock();
    let mut first_dup = None;
    let mut keep = Vec::with_capacity(batches.len());
    let mut trial = producers.clone();
    for (range, seq) in &batches {
        match trial.check(seq) {
            Verdict::Append => {
                // Offsets are not known yet; 0 stands in until after the append.
                trial.record(seq, 0);
                keep.push((range.clone(), *seq));
            }
            Verdict::Duplicate(offset) => {
                first_dup.get_or_insert(offset);
            }
            Verdict::Reject(c) => return Err(c.into()),
        }
    }
    if keep.is_empty() {
        let (start, _) = log.offsets().map_err(|e| Refusal::engine(&e))?;
        return Ok((first_dup.unwrap_or(-1), start));
    }
    let mut bytes = if keep.len() == batches.len() {
        owned(data)
    } else {
        let mut b = BytesMut::with_capacity(keep.iter().map(|(r, _)| r.len()).sum());
        for (r, _) in &keep {
            b.extend_from_slice(&data[r.clone()]);
        }
        b
    };
    let info = log
        .append(&mut bytes, shared.config.durability)
        .map_err(|e| {
            warn(&format!("append to {}-{partition} failed: {e}", topic.name));
            Refusal::engine(&e)
        })?;
    let mut next = info.base_offset;
    for (_, seq) in &keep {
        producers.record(seq, next);
        next += seq.count as i64;
    }
    Ok((first_dup.unwrap_or(info.base_offset), info.log_start_offset))
}

type Checked = Vec<(std::ops::Range<usize>, BatchSeq)>;

/// Every batch in `data`, whole and readable, with its producer fields.
pub fn validate(data: &[u8], max_message_bytes: usize) -> Result<Checked, i16> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let total = peek_total_size(&data[at..]).ok_or(code::CORRUPT_MESSAGE)?;
        if total < LOG_OVERHEAD as i64 || at as i64 + total > data.len() as i64 {
            return Err(code::CORRUPT_MESSAGE);
        }
        let end = at + total as usize;
        let batch = &data[at..end];
        if batch.len() > max_message_bytes.saturating_add(LOG_OVERHEAD) {
            return Err(code::MESSAGE_TOO_LARGE);
        }
        let h = check_batch(batch).map_err(|_| code::CORRUPT_MESSAGE)?;
        if h.compression() > ZSTD {
            return Err(code::UNSUPPORTED_COMPRESSION_TYPE);
        }
        if h.is_transactional() || h.is_control() {
            // Transactions are not supported: no markers, no read_committed.
            return Err(code::INVALID_TXN_STATE);
        }
        let recs = records(&h, batch).map_err(|e| kafka_code(&e.into()))?;
        let mut n = 0i32;
        for rec in recs.iter() {
            let rec = rec.map_err(|_| code::INVALID_RECORD)?;
            if rec.offset - h.base_offset != n as i64 {
                return Err(code::INVALID_RECORD);
            }
            n += 1;
        }
        if n == 0 || n != h.records_count || h.last_offset_delta != n - 1 {
            return Err(code::INVALID_RECORD);
        }
        out.push((
            at..end,
            BatchSeq {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                first: h.base_sequence,
                count: n,
            },
        ));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_no_one_else_holds_are_appended_in_place_others_are_copied() {
        let frame = Bytes::from(vec![7u8; 4096]);
        let records = frame.slice(96..);
        drop(frame);
        let at = records.as_ptr();
        let mine = owned(records);
        assert_eq!(mine.as_ptr(), at, "a sole owner should not copy");
        assert_eq!(&mine[..], &[7u8; 4000][..]);

        // As the connection hands a large frame over: split off a buffer
        // of exactly its size, which then goes away.
        let mut rbuf = BytesMut::with_capacity(4096);
        rbuf.extend_from_slice(&[5u8; 4096]);
        let frame = rbuf.split_to(4096).freeze();
        drop(rbuf);
        let records = frame.slice(96..);
        drop(frame);
        let at = records.as_ptr();
        assert_eq!(
            owned(records).as_ptr(),
            at,
            "a frame split off the read buffer is its own"
        );

        let frame = Bytes::from(vec![9u8; 4096]);
        let records = frame.slice(96..);
        let copy = owned(records);
        assert_ne!(
            copy.as_ptr(),
            frame[96..].as_ptr(),
            "a shared buffer must be copied"
        );
        assert_eq!(&copy[..], &frame[96..]);
    }
}
