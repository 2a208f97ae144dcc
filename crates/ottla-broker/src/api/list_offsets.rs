//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after a time.

use std::sync::Arc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::blocking;
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: ListOffsetsRequest,
    _v: i16,
) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            let found = blocking(|| -> Result<(i64, i64), i16> {
                if p.partition_index < 0 {
                    return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
                }
                let log = shared
                    .store
                    .partition_by_name(t.name.as_str(), p.partition_index as u32)
                    .map_err(|e| kafka_code(&e))?;
                let (start, end) = log.offsets().map_err(|e| kafka_code(&e))?;
                match p.timestamp {
                    EARLIEST => Ok((-1, start)),
                    LATEST | MAX_TIMESTAMP => Ok((-1, end)),
                    ts => match log.offset_for_time(ts).map_err(|e| kafka_code(&e))? {
                        Some((offset, at)) => Ok((at, offset)),
                        None => Ok((-1, -1)),
                    },
                }
            });
            match found {
                Ok((ts, offset)) => {
                    pr.timestamp = ts;
                    pr.offset = offset;
                }
                Err(c) => pr.error_code = c,
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}
