//! Produce's half of the replica manager: validate what the client sent,
//! then store it as sent, or as the topic's config says.
//!
//! A produced batch travels: the Produce handler -> `append`, which walks
//! the batches of the partition (see `validate`), checks producer sequences
//! for idempotent producers, and hands the original bytes to
//! `PartitionLog::append`, which stamps base offsets (outside the CRC) and
//! writes them. The client's compression and checksum are what lands on
//! disk, unless the topic says otherwise: a `compression.type` other than
//! `producer` that differs from the batch's codec has the batch re-encoded
//! (Kafka's broker recompression), and `message.timestamp.type=LogAppendTime`
//! stamps each batch's max timestamp and timestamp-type bit with the append
//! time (the CRC resealed); see [`restamp`].

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};

use super::idempotence::{BatchSeq, Verdict};
use super::validate::validate;
use super::ReplicaManager;
use crate::errors::{code, kafka_code, warn, Refusal};
use ottla_record::batch::{
    check_batch, seal_crc, BatchHeader, ATTRIBUTES, MAX_TIMESTAMP, TIMESTAMP_TYPE_LOG_APPEND,
};
use ottla_record::compression::recompress_batch;
use ottla_storage::config::{CleanupPolicy, TopicCompression, TopicConfig};
use ottla_storage::log::Durability;
use ottla_storage::store::Topic;

/// Partitions a connection has appended to (see `Session::written`).
pub type Written = HashSet<(String, i32)>;

/// Where a partition's batches went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The first batch's base offset (a retried batch's original offset).
    pub base_offset: i64,
    /// One past the last offset the request's batches hold (acks=all waits
    /// for the high watermark to reach it).
    pub end_offset: i64,
    pub log_start_offset: i64,
    /// The broker's append time under `message.timestamp.type=LogAppendTime`,
    /// -1 otherwise (Produce's `log_append_time_ms`).
    pub log_append_time: i64,
}

/// A partition's producers are not in memory yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLoaded;

impl ReplicaManager {
    /// Append one partition's batches, or why the partition refused them.
    pub fn append(
        &self,
        written: &mut Written,
        topic: &Topic,
        name: &str,
        partition: i32,
        records: Option<Bytes>,
    ) -> Result<Appended, Refusal> {
        // A page-cache append to an open log is a memory copy: done right
        // here. Handing the worker's core to another thread for it
        // (block_in_place) cost more than the append (measured:
        // docs/PERFORMANCE.md, Broker). Opening a log (files, an fdatasync:
        // ~6 ms seen) and fsync appends may take milliseconds, so those
        // leave the runtime.
        // Recompressing to the topic's codec is CPU work of its own (a
        // megabyte batch takes milliseconds): off the runtime too.
        if self.durability == Durability::PageCache
            && topic.config.compression.codec().is_none()
            && written.contains(&(name.to_owned(), partition))
        {
            self.write(topic, partition, records)
        } else {
            let r = crate::blocking(|| self.write(topic, partition, records));
            if r.is_ok() {
                written.insert((name.to_owned(), partition));
            }
            r
        }
    }

    /// KIP-890, before a transactional batch of `producer_id` is sent to
    /// [`ReplicaManager::append`]: `None` when its transaction is open in
    /// the partition already, else where the producer stands there, to
    /// hand to [`ReplicaManager::txn_verified`] once the coordinator says
    /// the partition is in its transaction. `Err(NotLoaded)`: call
    /// [`ReplicaManager::load_producers`] first (the answer needs no catch-up with the log: the markers of a
    /// broker's producers are written by this process).
    pub fn txn_verification_start(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
    ) -> Result<Option<Option<i64>>, NotLoaded> {
        let state = self.producers.loaded(topic, partition).ok_or(NotLoaded)?;
        let p = state.lock();
        Ok(p.verification_start(producer_id))
    }

    /// Load a partition's producers from its log. Blocking.
    pub fn load_producers(&self, topic: &Topic, partition: u32) -> Result<(), i16> {
        let log = self
            .store
            .partition(topic, partition)
            .map_err(|e| kafka_code(&e))?;
        self.producers
            .partition(&log)
            .map(drop)
            .map_err(|e| kafka_code(&e))
    }

    /// The coordinator confirmed `producer_id`'s transaction for the
    /// partition, asked when the producer stood at `at`: false if a marker
    /// ended a transaction of its there meanwhile (or the partition's
    /// producers were dropped: its log was truncated).
    pub fn txn_verified(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
        at: Option<i64>,
    ) -> bool {
        self.producers
            .loaded(topic, partition)
            .is_some_and(|state| state.lock().verified(producer_id, at))
    }

    /// Validate and append one partition's batches.
    fn write(
        &self,
        topic: &Topic,
        partition: i32,
        data: Option<Bytes>,
    ) -> Result<Appended, Refusal> {
        let data = data.filter(|d| !d.is_empty()).ok_or(code::INVALID_RECORD)?;
        if partition < 0 || partition as u32 >= topic.partitions {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION.into());
        }
        // Cluster mode: only the leader appends.
        let led = self.leader_partition(&topic.name, partition)?;
        // Held to the end of the append: a change of role waits for it.
        let _leading = led.as_ref().map(|p| p.leadership.read());
        if led.as_ref().is_some_and(|p| p.is_retired()) {
            return Err(code::NOT_LEADER_OR_FOLLOWER.into());
        }
        let log = self
            .store
            .partition(topic, partition as u32)
            .map_err(|e| Refusal::engine(&e))?;
        let compacted = (topic.config.cleanup_policy != CleanupPolicy::Delete)
            .then(|| format!("{}-{partition}", topic.name));
        let now = ottla_storage::log::now_ms();
        let batches = validate(&data, &topic.config, compacted.as_deref(), now)?;
        let log_append_time = if topic.config.log_append_time {
            now
        } else {
            -1
        };
        // Re-encoded and stamped before the producer lock is taken: other
        // connections' appends to this partition do not wait for the codec.
        let restamped = if needs_restamp(&topic.config, &data, &batches) {
            let stamped: Result<Vec<Vec<u8>>, Refusal> = batches
                .iter()
                .map(|(r, _)| restamp(&topic.config, &data[r.clone()], now))
                .collect();
            Some(stamped?)
        } else {
            None
        };
        let state = self
            .producers
            .for_append(&log, batches.iter().any(|(_, s)| s.producer_id >= 0))
            .map_err(|e| Refusal::engine(&e))?;
        // Held across check, append and record, so a retry racing its original
        // on another connection is still recognised.
        let mut producers = state.lock();
        let mut first_dup = None;
        let mut keep = Vec::with_capacity(batches.len());
        let mut trial = producers.clone();
        for (i, (range, seq)) in batches.iter().enumerate() {
            match trial.check(seq) {
                Verdict::Append => {
                    // A transactional batch opening its producer's
                    // transaction here needs the coordinator's word, taken
                    // after the last marker (KIP-890; see `verification`).
                    if seq.transactional
                        && trial.opens_txn(seq.producer_id)
                        && !producers.take_guard(seq.producer_id)
                    {
                        return Err(code::INVALID_TXN_STATE.into());
                    }
                    // Offsets are not known yet; 0 stands in until after the append.
                    trial.record(seq, 0);
                    keep.push((i, range.clone(), *seq));
                }
                Verdict::Duplicate(offset) => {
                    first_dup.get_or_insert(offset);
                }
                Verdict::Reject(c) => return Err(c.into()),
            }
        }
        if keep.is_empty() {
            let (start, _) = log.offsets().map_err(|e| Refusal::engine(&e))?;
            let end = log.log_end_offset().map_err(|e| Refusal::engine(&e))?;
            return Ok(Appended {
                base_offset: first_dup.unwrap_or(-1),
                end_offset: end,
                log_start_offset: start,
                log_append_time,
            });
        }
        let mut bytes = if let Some(stamped) = &restamped {
            let mut b =
                BytesMut::with_capacity(keep.iter().map(|(i, _, _)| stamped[*i].len()).sum());
            for (i, _, _) in &keep {
                b.extend_from_slice(&stamped[*i]);
            }
            b
        } else if keep.len() == batches.len() {
            owned(data)
        } else {
            let mut b = BytesMut::with_capacity(keep.iter().map(|(_, r, _)| r.len()).sum());
            for (_, r, _) in &keep {
                b.extend_from_slice(&data[r.clone()]);
            }
            b
        };
        let info = log.append(&mut bytes, self.durability).map_err(|e| {
            warn(&format!("append to {}-{partition} failed: {e}", topic.name));
            Refusal::engine(&e)
        })?;
        let mut next = info.base_offset;
        for (_, _, seq) in &keep {
            producers.record(seq, next);
            next += seq.count as i64;
        }
        drop(producers);
        if let Some(p) = &led {
            self.after_leader_append(p);
        }
        Ok(Appended {
            base_offset: first_dup.unwrap_or(info.base_offset),
            end_offset: info.last_offset + 1,
            log_start_offset: info.log_start_offset,
            log_append_time,
        })
    }
}

/// Whether any batch kept must be re-encoded or stamped before it is stored.
fn needs_restamp(
    cfg: &TopicConfig,
    data: &[u8],
    keep: &[(std::ops::Range<usize>, BatchSeq)],
) -> bool {
    if cfg.log_append_time {
        return true;
    }
    let Some(codec) = cfg.compression.codec() else {
        return false;
    };
    keep.iter().any(|(r, _)| {
        BatchHeader::parse(&data[r.clone()]).is_some_and(|h| h.compression() != codec)
    })
}

/// One validated batch as the topic stores it: recompressed to
/// `compression.type` when that names a codec other than the batch's (the
/// records and every other header field kept), then, under
/// `LogAppendTime`, its max timestamp set to `now` and its timestamp type
/// bit set, as Kafka's LogValidator does; the CRC resealed.
pub fn restamp(cfg: &TopicConfig, batch: &[u8], now: i64) -> Result<Vec<u8>, Refusal> {
    let h = check_batch(batch).map_err(|_| Refusal::from(code::CORRUPT_MESSAGE))?;
    let mut out = match cfg.compression.codec() {
        Some(codec) if codec != h.compression() => {
            let level = match cfg.compression {
                TopicCompression::Gzip => cfg.gzip_level,
                _ => cfg.zstd_level,
            };
            let b = recompress_batch(batch, codec, level)
                .map_err(|e| Refusal::from(kafka_code(&e.into())))?;
            // Kafka checks the size of what it will store, too.
            if b.len()
                > cfg
                    .max_message_bytes
                    .saturating_add(ottla_record::batch::LOG_OVERHEAD)
            {
                return Err(code::MESSAGE_TOO_LARGE.into());
            }
            b
        }
        _ => batch.to_vec(),
    };
    if cfg.log_append_time {
        let attributes =
            i16::from_be_bytes([out[ATTRIBUTES], out[ATTRIBUTES + 1]]) | TIMESTAMP_TYPE_LOG_APPEND;
        out[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
        out[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
    }
    seal_crc(&mut out);
    Ok(out)
}

/// The batches as a mutable buffer for `PartitionLog::append` (which stamps
/// base offsets in place): the frame's own bytes when nothing else refers to
/// them any more (a large single-partition request, the common case for a
/// busy producer), a copy otherwise.
fn owned(data: Bytes) -> BytesMut {
    data.try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> TopicConfig {
        TopicConfig::from_overrides(pairs.iter().copied()).expect("valid config")
    }

    fn batch(ts: i64) -> Vec<u8> {
        let mut b = ottla_record::BatchBuilder::with_capacity(1 << 16);
        for i in 0..100 {
            b.append(ts + i, Some(b"k"), Some(&[b'v'; 200][..]), &[]);
        }
        b.finish().to_vec()
    }

    fn ok<T>(r: Result<T, Refusal>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("refused with {}: {:?}", e.code, e.message),
        }
    }

    fn whole(b: &[u8]) -> Vec<(std::ops::Range<usize>, BatchSeq)> {
        let seq = BatchSeq {
            producer_id: -1,
            epoch: -1,
            first: -1,
            count: 100,
            transactional: false,
        };
        vec![(0..b.len(), seq)]
    }

    fn records_of(batch: &[u8]) -> Vec<(i64, Vec<u8>)> {
        let h = check_batch(batch).expect("sealed batch");
        let rs = ottla_record::decode::records(&h, batch).expect("records");
        rs.iter()
            .map(|r| {
                let r = r.expect("record");
                (r.timestamp, r.value.unwrap_or_default().to_vec())
            })
            .collect()
    }

    #[test]
    fn restamp_recompresses_to_the_topic_codec_and_keeps_records() {
        let plain = batch(1000);
        let zstd = ok(restamp(&cfg(&[("compression.type", "zstd")]), &plain, 5));
        let h = check_batch(&zstd).expect("resealed");
        assert_eq!(h.compression(), ottla_record::compression::ZSTD);
        assert!(!h.log_append_time());
        assert!(zstd.len() < plain.len() / 4);
        assert_eq!(records_of(&zstd), records_of(&plain));
        // uncompressed inflates; a matching codec is left as it is.
        let back = ok(restamp(
            &cfg(&[("compression.type", "uncompressed")]),
            &zstd,
            5,
        ));
        assert_eq!(back, plain);
        let same = ok(restamp(&cfg(&[("compression.type", "zstd")]), &zstd, 5));
        assert_eq!(same, zstd);
        assert!(!needs_restamp(
            &cfg(&[("compression.type", "producer")]),
            &plain,
            &whole(&plain)
        ));
    }

    #[test]
    fn log_append_time_sets_the_max_timestamp_and_type_bit() {
        let plain = batch(1000);
        let now = 1_700_000_000_000;
        let c = cfg(&[("message.timestamp.type", "LogAppendTime")]);
        assert!(needs_restamp(&c, &plain, &whole(&plain)));
        let stamped = ok(restamp(&c, &plain, now));
        let h = check_batch(&stamped).expect("resealed");
        assert!(h.log_append_time());
        assert_eq!(h.max_timestamp, now);
        assert_eq!(h.base_timestamp, 1000, "Kafka leaves the base timestamp");
        assert!(records_of(&stamped).iter().all(|(ts, _)| *ts == now));
    }

    #[test]
    fn create_time_out_of_bounds_is_invalid_timestamp_per_record() {
        let c = cfg(&[
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "1000"),
        ]);
        let now = 1_000_000;
        assert!(validate(&batch(now - 50), &c, None, now).is_ok());
        let r = validate(&batch(now - 1050), &c, None, now).expect_err("too old");
        assert_eq!(r.code, crate::errors::code::INVALID_TIMESTAMP);
        // ts now-1050 .. now-951: the first 50 are older than the bound.
        assert_eq!(r.record_errors.len(), 50);
        assert_eq!(r.record_errors[0].0, 0);
        let r = validate(&batch(now + 950), &c, None, now).expect_err("too new");
        assert_eq!(r.record_errors.first().map(|e| e.0), Some(51));
        // LogAppendTime topics take any producer timestamp.
        let lat = cfg(&[
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.before.max.ms", "0"),
        ]);
        assert!(validate(&batch(5), &lat, None, now).is_ok());
    }

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
