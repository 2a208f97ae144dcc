//! Fetch's half of the replica manager: stored batches straight from the
//! log, and the long poll when there is less than the client asked for
//! (Kafka's delayed fetch).
//!
//! `PartitionLog::read` preads whole batches from the segment (checking each
//! CRC) up to the high watermark (a follower's fetch: the log end); the bytes go to the response as they are,
//! compressed or not, with the producer's CRC. Nothing is decoded or
//! re-encoded. With too little data, `fetch` parks on the partitions it
//! read, each with the end it saw, and sleeps until one of them grows (an
//! append by any process; see `wake`), the wait runs out, or the broker
//! stops. Appends to other partitions do not run it again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::wake::Looked;
use super::ReplicaManager;
use crate::errors::{code, kafka_code};
use ottla_storage::error::Error;
use ottla_storage::log::{PartitionLog, ReadCursor};
use ottla_storage::store::Topic;

/// Where a connection's last Fetch of each partition ended, with the log it
/// ended on (see `Session::cursors`).
pub type Cursors = HashMap<(String, u32), (Weak<PartitionLog>, Option<ReadCursor>)>;

/// What a read of one partition found, in the terms of a Fetch response.
#[derive(Default)]
pub struct ReadResult {
    /// `code::NONE`, or why the partition could not be read.
    pub error: i16,
    /// (log start offset, high watermark), when known.
    pub offsets: Option<(i64, i64)>,
    pub records: Option<Bytes>,
}

impl ReadResult {
    pub fn error(error: i16) -> ReadResult {
        ReadResult {
            error,
            ..ReadResult::default()
        }
    }
}

impl ReplicaManager {
    /// Answer a Fetch: `gather` reads every requested partition, noting in
    /// its [`Looked`] each partition read and the end it saw, and returns
    /// (response, bytes, any error); it runs again after an append to one
    /// of those partitions until there are `min_bytes`, an error, or
    /// `max_wait_ms` has passed (then the last response is the answer).
    pub async fn fetch<R>(
        &self,
        max_wait_ms: i32,
        min_bytes: i32,
        mut gather: impl FnMut(&mut Looked) -> (R, usize, bool),
    ) -> R {
        let wait = Duration::from_millis(max_wait_ms.clamp(0, 300_000) as u64);
        let deadline = Instant::now() + wait;
        let min_bytes = min_bytes.max(0) as usize;
        let mut stopping = self.stopping.clone();
        loop {
            let mut looked = Looked::default();
            self.fetch_passes.fetch_add(1, Ordering::Relaxed);
            let (resp, bytes, errors) = crate::blocking(|| gather(&mut looked));
            if bytes >= min_bytes || errors || Instant::now() >= deadline {
                return resp;
            }
            if *stopping.borrow_and_update() {
                return resp;
            }
            // Registered until dropped: answered, timed out, or the future
            // dropped with its connection (see `net::connection`).
            let parked = self.watches.park(looked);
            let woken = tokio::select! {
                r = tokio::time::timeout_at(deadline, parked.woken()) => r.is_ok(),
                _ = stopping.changed() => false,
            };
            drop(parked);
            if !woken {
                // Timed out, or the broker is stopping: the last look is the
                // answer (an append to its partitions since would have woken
                // it), so the partitions are not read again.
                return resp;
            }
        }
    }

    /// Read `partition` of `topic` (requested as `name`) from `offset`, at
    /// most `budget` bytes, except that with `min_one` a first batch larger
    /// than `budget` is returned whole (Kafka's `minOneMessage`); without
    /// it, such a batch means no records, only the offsets. A
    /// `current_leader_epoch` other than the partition's is refused first
    /// (see `check_leader_epoch`).
    ///
    /// In cluster mode only the leader answers (NOT_LEADER_OR_FOLLOWER
    /// otherwise). A consumer (`replica` -1) reads up to the high
    /// watermark; a follower (`replica` its broker id, one of the
    /// partition's replicas) reads up to the log end, and its fetch offset
    /// is recorded as its log end offset first (see `cluster`).
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        cursors: &mut Cursors,
        looked: &mut Looked,
        topic: &Topic,
        name: &str,
        partition: i32,
        offset: i64,
        current_leader_epoch: Option<i32>,
        budget: usize,
        min_one: bool,
        replica: i32,
    ) -> ReadResult {
        let led = match self.leader_partition(name, partition) {
            Ok(p) => p,
            Err(c) => return ReadResult::error(c),
        };
        let follower = match (&led, replica >= 0) {
            (Some(p), true) => {
                if let Err(c) = self.on_follower_fetch(p, replica, offset) {
                    return ReadResult::error(c);
                }
                true
            }
            // Outside cluster mode a replica id has no meaning: read as a
            // consumer (as before).
            _ => false,
        };
        let log = if partition >= 0 {
            self.store
                .partition(topic, partition as u32)
                .map_err(|e| kafka_code(&e))
        } else {
            Err(code::UNKNOWN_TOPIC_OR_PARTITION)
        };
        let log = match log {
            Ok(l) => l,
            Err(c) => return ReadResult::error(c),
        };
        let fenced = super::check_leader_epoch(log.leader_epoch(), current_leader_epoch);
        if fenced != code::NONE {
            return ReadResult::error(fenced);
        }
        let (owner, cursor) = cursors
            .entry((name.to_string(), partition as u32))
            .or_insert_with(|| (Arc::downgrade(&log), None));
        if !std::ptr::eq(owner.as_ptr(), Arc::as_ptr(&log)) {
            *owner = Arc::downgrade(&log);
            *cursor = None;
        }
        // A follower waits for appends (its log end), a consumer for the
        // high watermark; the end is read before the look, so an append in
        // between wakes the fetch at once.
        let log_end = if follower {
            match log.log_end_offset() {
                Ok(e) => Some(e),
                Err(e) => return ReadResult::error(kafka_code(&e)),
            }
        } else {
            None
        };
        if budget == 0 && !min_one {
            // Over the response limit: report watermarks only.
            return match log.offsets() {
                Ok((start, end)) => {
                    match log_end {
                        Some(leo) => looked.saw_log_end(log, leo),
                        None => looked.saw(log, end),
                    }
                    ReadResult {
                        error: code::NONE,
                        offsets: Some((start, end)),
                        records: Some(Bytes::new()),
                    }
                }
                Err(e) => ReadResult::error(kafka_code(&e)),
            };
        }
        let before = *cursor;
        let read = if follower {
            log.read_to_log_end(offset, budget, cursor, true)
        } else {
            log.read(offset, budget, cursor, true)
        };
        if let Ok(f) = &read {
            // What a parked fetch waits to move (see `wake`).
            match log_end {
                Some(leo) => looked.saw_log_end(log, leo),
                None => looked.saw(log, f.high_watermark),
            }
        }
        match read {
            // The log returns more than `budget` only when its first batch
            // alone is larger: refused here, and read again next time.
            Ok(f) if !min_one && f.bytes.len() > budget => {
                *cursor = before;
                ReadResult {
                    error: code::NONE,
                    offsets: Some((f.log_start_offset, f.high_watermark)),
                    records: Some(Bytes::new()),
                }
            }
            Ok(f) => ReadResult {
                error: if f.bytes.is_empty() && f.error.is_some() {
                    code::KAFKA_STORAGE_ERROR
                } else {
                    code::NONE
                },
                offsets: Some((f.log_start_offset, f.high_watermark)),
                records: Some(Bytes::from(f.bytes)),
            },
            Err(e @ Error::OffsetOutOfRange { .. }) => {
                let mut r = ReadResult::error(code::OFFSET_OUT_OF_RANGE);
                if let Error::OffsetOutOfRange { start, end, .. } = e {
                    r.offsets = Some((start, end));
                }
                r
            }
            Err(e) => ReadResult::error(kafka_code(&e)),
        }
    }
}
