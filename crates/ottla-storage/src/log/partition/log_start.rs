//! The log start offset moved by hand (Kafka's DeleteRecords,
//! `maybeIncrementLogStartOffset`): the first offset a reader may read,
//! which may sit inside a segment. Retention moves it only to a segment's
//! base; `delete_records` moves it anywhere up to the high watermark.
//!
//! Where it lives: in the head (slot `log_start_offset`), which every
//! process reads, and, so that it survives the head being rebuilt from the
//! files (a torn head, a head lost to a reboot), in the partition's
//! `log-start-offset-checkpoint` (Kafka's checkpoint format, as the
//! cleaner's, one line for this partition), fsync'd and renamed into place
//! before the head publishes the new start. The loader takes the larger of
//! the head's and the file's (see `log::loader`); a crash between the two
//! leaves the file ahead of the head, and the next opener moves the head
//! up to it: the call had not returned, so either answer is right.
//!
//! Segments wholly below the start (the next segment's base at or below
//! it) are deleted by the retention pass, which `delete_records` runs
//! before it returns; the active segment always stays.

use std::path::Path;

use super::PartitionLog;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// The per-partition file holding the last log start offset moved by hand.
pub const LOG_START_FILE: &str = "log-start-offset-checkpoint";

/// The log start recorded in `dir`'s checkpoint, if there is a readable one.
pub(crate) fn read_log_start(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(LOG_START_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let _count = lines.next()?;
    let v: i64 = lines.next()?.split_whitespace().last()?.parse().ok()?;
    (v >= 0).then_some(v)
}

impl PartitionLog {
    /// Delete the records before `offset`: move the log start offset up to
    /// it (`-1`: the high watermark), delete the segments wholly below it,
    /// and return the log start offset after the call (Kafka's "low
    /// watermark"). An offset at or below the current start changes
    /// nothing; one above the high watermark, or negative other than `-1`,
    /// is `OffsetOutOfRange`. Internal topics (`__consumer_offsets`: every
    /// group's commits) are refused with `InvalidTopic`, as Kafka refuses a
    /// client's DeleteRecords of them.
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        if crate::topic::is_internal(&self.topic) {
            return Err(Error::InvalidTopic {
                name: self.topic.to_string(),
                reason: "records of internal topics cannot be deleted",
            });
        }
        let start = {
            let _w = self.writer.lock();
            let lock = self.lock()?;
            let _g = lock.lock_append()?;
            self.check_live()?;
            let mut st = match self.head.read() {
                Some(st) => st,
                None => self.repair_locked()?,
            };
            let hw = self.hw_in(&st);
            let target = if offset == -1 { hw } else { offset };
            if target < 0 || target > hw {
                return Err(Error::OffsetOutOfRange {
                    topic: self.topic.to_string(),
                    partition: self.partition,
                    offset,
                    start: st.log_start_offset,
                    end: hw,
                });
            }
            if target <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            // The head on disk must not stay marked clean past this call: a
            // power cut would leave a clean head older than the checkpoint,
            // and the next boot would trust it without reading the file.
            self.head
                .mark_in_use_durably()
                .map_err(|e| Error::io("msync head", &self.dir.join("partition.head"), e))?;
            let text = format!("0\n1\n{} {} {target}\n", self.topic, self.partition);
            write_atomic(&self.dir.join(LOG_START_FILE), text.as_bytes())?;
            st.log_start_offset = target;
            self.head.write(&st);
            self.truncate_epochs_locked(&mut st, false)?;
            target
        };
        self.enforce_retention()?;
        Ok(start)
    }
}
