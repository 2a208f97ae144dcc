//! DescribeLogDirs: the one log directory (the data directory), each
//! partition's bytes on disk, no offset lag (there is no future replica
//! catching up), and (v4+) the file system's total and usable bytes.

use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{blocking, s, topic_name};
use crate::auth::acl::Operation;
use crate::dispatch::Session;
use crate::errors::{code, kafka_code, warn};
use crate::Shared;

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeLogDirsRequest,
    v: i16,
) -> DescribeLogDirsResponse {
    let store = &shared.store;
    // ACLs: DESCRIBE on the cluster; refused: the top-level error (v3+),
    // no directories below it (Kafka's answer).
    if !_s.authorized_cluster(shared, Operation::Describe) {
        let mut r = DescribeLogDirsResponse::default();
        if v >= 3 {
            r.error_code = crate::errors::code::CLUSTER_AUTHORIZATION_FAILED;
        }
        return r;
    }
    let mut dir = DescribeLogDirsResult::default();
    let root = std::fs::canonicalize(store.root()).unwrap_or_else(|_| store.root().to_path_buf());
    dir.log_dir = s(&root.to_string_lossy());
    if v >= 4 {
        match disk_space(&root) {
            Some((total, usable)) => {
                dir.total_bytes = total;
                dir.usable_bytes = usable;
            }
            None => {
                dir.total_bytes = -1;
                dir.usable_bytes = -1;
            }
        }
    }
    // (topic, partitions asked for; None: all of them).
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.topic.as_str().to_string(), Some(t.partitions)))
            .collect(),
        None => match blocking(|| store.list_topics(true)) {
            Ok(all) => all.into_iter().map(|n| (n, None)).collect(),
            Err(e) => {
                warn(&format!("describe log dirs: cannot list topics: {e}"));
                dir.error_code = kafka_code(&e);
                return answer(dir);
            }
        },
    };
    for (name, parts) in wanted {
        // A topic or partition this broker does not have is left out, as
        // Kafka leaves out what is not in its log directories.
        let Ok(Some(topic)) = blocking(|| store.topic(&name)) else {
            continue;
        };
        let parts: Vec<u32> = match parts {
            Some(ps) => ps
                .into_iter()
                .filter_map(|p| u32::try_from(p).ok())
                .filter(|p| *p < topic.partitions)
                .collect(),
            None => (0..topic.partitions).collect(),
        };
        let mut t = DescribeLogDirsTopic::default();
        t.name = topic_name(&name);
        for p in parts {
            let size = match shared.replicas.partition_size(&name, p) {
                Ok(size) => size,
                Err(c) if c == code::UNKNOWN_TOPIC_OR_PARTITION => continue,
                Err(c) => {
                    dir.error_code = c;
                    continue;
                }
            };
            let mut part = DescribeLogDirsPartition::default();
            part.partition_index = p as i32;
            part.partition_size = size;
            part.offset_lag = 0;
            part.is_future_key = false;
            t.partitions.push(part);
        }
        if !t.partitions.is_empty() {
            dir.topics.push(t);
        }
    }
    answer(dir)
}

fn answer(dir: DescribeLogDirsResult) -> DescribeLogDirsResponse {
    let mut r = DescribeLogDirsResponse::default();
    r.results = vec![dir];
    r
}

/// (total, usable) bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `st`
    // points at writable memory of the struct's size.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u128;
    let total = (st.f_blocks as u128 * frsize).min(i64::MAX as u128) as i64;
    let usable = (st.f_bavail as u128 * frsize).min(i64::MAX as u128) as i64;
    Some((total, usable))
}
