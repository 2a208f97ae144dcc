//! Fetch: stored batches straight from the log, long-polling when there is
//! less than `min_bytes`.
//!
//! A fetched batch travels: `PartitionLog::read` preads whole batches from
//! the segment (checking each CRC) -> the bytes go into the response's
//! `records` field as they are, compressed or not, with the producer's CRC.
//! Nothing is decoded or re-encoded. With too little data, the handler marks
//! the current beacon sequence seen and sleeps until an append anywhere on
//! the directory moves it (see `wake`) or `max_wait_ms` runs out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use tokio::time::Instant;

use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::error::Error;

pub async fn handle(
    shared: &Arc<Shared>,
    session: &mut Session,
    req: FetchRequest,
    _v: i16,
) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.clamp(0, 300_000) as u64);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut wake = shared.wake.clone();
    loop {
        wake.borrow_and_update();
        let (resp, bytes, errors) = super::blocking(|| gather(shared, session, &req, max_bytes));
        if bytes >= min_bytes || errors || Instant::now() >= deadline {
            return resp;
        }
        // Held while waiting: the waker watches the beacon only for us.
        let _parked = shared.wake_interest.park();
        match tokio::time::timeout_at(deadline, wake.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the broker is stopping: answer with what there is.
            _ => {
                let (resp, _, _) = super::blocking(|| gather(shared, session, &req, max_bytes));
                return resp;
            }
        }
    }
}

/// One pass over the requested partitions: (response, bytes, any error).
fn gather(
    shared: &Shared,
    session: &mut Session,
    req: &FetchRequest,
    max_bytes: usize,
) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut total = 0usize;
    let mut errors = false;
    for t in &req.topics {
        let name = t.topic.as_str();
        let mut tr = FetchableTopicResponse::default();
        tr.topic = t.topic.clone();
        let topic = shared.store.topic(name);
        for p in &t.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            let log = match &topic {
                Ok(Some(topic)) if p.partition >= 0 => shared
                    .store
                    .partition(topic, p.partition as u32)
                    .map_err(|e| kafka_code(&e)),
                Ok(_) => Err(code::UNKNOWN_TOPIC_OR_PARTITION),
                Err(e) => Err(kafka_code(e)),
            };
            let log = match log {
                Ok(l) => l,
                Err(c) => {
                    pd.error_code = c;
                    errors = true;
                    tr.partitions.push(pd);
                    continue;
                }
            };
            let budget =
                (max_bytes.saturating_sub(total)).min(p.partition_max_bytes.max(0) as usize);
            let (owner, cursor) = session
                .cursors
                .entry((name.to_string(), p.partition as u32))
                .or_insert_with(|| (Arc::downgrade(&log), None));
            if !std::ptr::eq(owner.as_ptr(), Arc::as_ptr(&log)) {
                *owner = Arc::downgrade(&log);
                *cursor = None;
            }
            if budget == 0 {
                // Over the response limit: report watermarks only.
                match log.offsets() {
                    Ok((start, end)) => {
                        pd.high_watermark = end;
                        pd.last_stable_offset = end;
                        pd.log_start_offset = start;
                        pd.records = Some(Bytes::new());
                    }
                    Err(e) => {
                        pd.error_code = kafka_code(&e);
                        errors = true;
                    }
                }
                tr.partitions.push(pd);
                continue;
            }
            match log.read(p.fetch_offset, budget, cursor, true) {
                Ok(f) => {
                    pd.high_watermark = f.high_watermark;
                    pd.last_stable_offset = f.high_watermark;
                    pd.log_start_offset = f.log_start_offset;
                    if f.bytes.is_empty() && f.error.is_some() {
                        pd.error_code = code::KAFKA_STORAGE_ERROR;
                        errors = true;
                    }
                    total += f.bytes.len();
                    pd.records = Some(Bytes::from(f.bytes));
                }
                Err(e @ Error::OffsetOutOfRange { .. }) => {
                    if let Error::OffsetOutOfRange { start, end, .. } = e {
                        pd.high_watermark = end;
                        pd.last_stable_offset = end;
                        pd.log_start_offset = start;
                    }
                    pd.error_code = code::OFFSET_OUT_OF_RANGE;
                    errors = true;
                }
                Err(e) => {
                    pd.error_code = kafka_code(&e);
                    errors = true;
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
    }
    (resp, total, errors)
}
