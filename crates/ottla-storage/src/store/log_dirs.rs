//! The life of a partition directory `<topic>-<p>`: made fresh when a topic
//! is created or grown, retired when it is deleted, swept when a crash left
//! it behind. Kafka's `LogManager` does the same with its `-delete`
//! directories.
//!
//! The invariant: **a partition starts with no record it did not write.**
//! A topic's metadata file (`.ottla/topics/<topic>`) is the only record of
//! which partition directories are live; a directory `<topic>-<p>` is live
//! exactly when that file exists and says `partitions > p`. Every change of
//! that set happens under `.ottla/metadata.lock` and commits with a single
//! rename or unlink of the metadata file:
//!
//! * **create / grow**: make each new directory with `mkdir` (never
//!   adopting one that exists: an existing one is a leftover, retired
//!   first), then write the metadata (the commit). A crash before the
//!   commit leaves empty directories no metadata describes: leftovers.
//! * **delete**: unlink the metadata (the commit; the topic is gone for
//!   every process at once), flag each partition head `deleted` (appenders
//!   in every process stop), rename each directory to a `-delete` name,
//!   then remove those. A crash after the commit leaves directories no
//!   metadata describes, or `-delete` ones.
//! * **sweep** (`Store::sweep`, at `Store::open`): removes `-delete` directories
//!   and retires every `<topic>-<p>` directory no metadata describes
//!   (that a `Store` made: see [`is_partition_dir`]). Only
//!   under the lock is "no metadata describes it" final (a create in
//!   another process makes its directories before its metadata), so the
//!   sweep re-checks under the lock what it found without it.
//!
//! The heads are flagged only after the commit: a flag is on disk, and a
//! crash between flagging and committing would leave a live topic whose
//! partitions refuse every append.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{IoContext, Result};
use crate::log::head::Head;
use crate::log::lockfile::LockFile;
use crate::topic::{validate_topic_name, TopicMeta};

/// Kafka's suffix for a partition directory being deleted
/// (`UnifiedLog.DeleteDirSuffix`).
const DELETE_SUFFIX: &str = "-delete";

/// Hex digits of the unique id in a `-delete` name (Kafka's: a UUID
/// without dashes).
const ID_HEX: usize = 32;

/// The longest file name Linux file systems take.
const NAME_MAX: usize = 255;

/// `<topic>-<p>.<id>-delete`, Kafka's name for a partition directory being
/// deleted (`UnifiedLog.logDeleteDirName`), the topic cut short so the name
/// fits in 255 bytes as Kafka cuts it. `<id>` is 32 hex digits unique to
/// this call: the process id, the clock and a counter, so two deletions of
/// the same partition never collide.
pub(super) fn delete_dir_name(topic: &str, partition: u32) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let suffix = format!(
        "-{partition}.{:08x}{nanos:016x}{:08x}{DELETE_SUFFIX}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    // Topic names are ASCII, so any byte count is a character boundary.
    let keep = topic.len().min(NAME_MAX - suffix.len());
    format!("{}{suffix}", &topic[..keep])
}

/// Whether `name` is a [`delete_dir_name`].
fn is_delete_dir(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(DELETE_SUFFIX) else {
        return false;
    };
    let Some((tp, id)) = rest.rsplit_once('.') else {
        return false;
    };
    id.len() == ID_HEX
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && tp
            .rsplit_once('-')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `<topic>-<p>` split into topic and partition, if `name` is a partition
/// directory's name (the partition in its canonical decimal form, as
/// `Store` writes it). A topic name may hold `-` and digits; the partition
/// is what follows the last `-`.
pub(super) fn parse_partition_dir(name: &str) -> Option<(&str, u32)> {
    let (topic, p) = name.rsplit_once('-')?;
    let partition: u32 = p.parse().ok()?;
    if partition.to_string() != p || validate_topic_name(topic).is_err() {
        return None;
    }
    Some((topic, partition))
}

/// Take the partition directory `dir` out of service: flag its head
/// `deleted` so appenders and readers in every process stop (unless the
/// caller already flagged it through its open log), then rename it to a
/// `-delete` name in the same data directory. The returned directory is
/// nobody's any more; remove it with [`remove_retired`]. `None` when `dir`
/// does not exist.
pub(super) fn retire(
    root: &Path,
    dir: &Path,
    topic: &str,
    partition: u32,
    flagged: bool,
) -> Result<Option<PathBuf>> {
    if !flagged {
        let head = dir.join("partition.head");
        // A directory without a head has no reader to tell (and opening
        // the head would create it). The flag is set under the append
        // lock, as `PartitionLog::mark_deleted` sets it: an append in
        // flight in another process finishes first, and every later one
        // sees the flag.
        if head.exists() {
            let lock = LockFile::open(&dir.join("partition.lock"));
            let _g = lock.as_ref().ok().map(LockFile::lock_append);
            if let Ok(head) = Head::open(&head) {
                head.mark_in_use();
                head.mark_deleted();
            }
        }
    }
    let grave = root.join(delete_dir_name(topic, partition));
    match fs::rename(dir, &grave) {
        Ok(()) => Ok(Some(grave)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::Error::io(
            "move deleted partition aside",
            dir,
            e,
        )),
    }
}

/// Remove retired directories. Best effort: nothing will ever use them
/// again, and what is left is removed by the next sweep (which may also be
/// racing this one in another process: hence no error for a file that
/// vanished).
pub(super) fn remove_retired(graves: &[PathBuf]) {
    for g in graves {
        let _ = fs::remove_dir_all(g);
    }
}

/// Make the new partition directory `dir` empty and ours: `mkdir`, and if
/// something is already there, retire it first. The caller holds the
/// metadata lock and no metadata describes the partition, so what is there
/// is a leftover of a deleted topic or of a create or grow that crashed
/// before its commit.
pub(super) fn make_fresh(
    root: &Path,
    dir: &Path,
    topic: &str,
    partition: u32,
    graves: &mut Vec<PathBuf>,
) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(crate::error::Error::io(
                "create partition directory",
                dir,
                e,
            ))
        }
    }
    graves.extend(retire(root, dir, topic, partition, false)?);
    fs::create_dir(dir).ctx("create partition directory", dir)
}

/// Whether `dir` (named like a partition directory) is one a `Store` made:
/// it holds the `partition.lock` every open makes first, or a head, or is
/// empty (made by a create that died before its commit). Anything else was
/// put in the data directory by someone else, and the sweep leaves it be.
fn is_partition_dir(dir: &Path) -> bool {
    dir.join("partition.lock").exists()
        || dir.join("partition.head").exists()
        || fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// What a sweep found: `-delete` directories to remove, and partition
/// directories that looked undescribed without the lock.
#[derive(Default)]
pub(super) struct Leftovers {
    pub(super) graves: Vec<PathBuf>,
    pub(super) orphans: Vec<(String, u32)>,
}

/// List the data directory `root` (and the `.ottla` directory `meta`, for
/// the `.ottla/deleted-*` directories earlier versions deleted through)
/// for leftovers. `read_meta` reads a topic's metadata from disk. Without
/// the lock: the caller re-checks each orphan under it.
pub(super) fn find_leftovers(
    root: &Path,
    meta: &Path,
    read_meta: impl Fn(&str) -> Result<Option<TopicMeta>>,
) -> Result<Leftovers> {
    let mut found = Leftovers::default();
    let mut partitions: HashMap<String, Option<u32>> = HashMap::new();
    for entry in fs::read_dir(root).ctx("list data directory", root)? {
        let entry = entry.ctx("list data directory", root)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if is_delete_dir(name) {
            found.graves.push(entry.path());
        } else if let Some((topic, p)) = parse_partition_dir(name) {
            let count = match partitions.get(topic) {
                Some(c) => *c,
                None => {
                    // A damaged metadata file is reported where the topic is
                    // used; here it only means "do not touch this topic".
                    let c = match read_meta(topic) {
                        Ok(m) => m.map(|m| m.partitions),
                        Err(_) => Some(u32::MAX),
                    };
                    partitions.insert(topic.to_string(), c);
                    c
                }
            };
            if !matches!(count, Some(n) if p < n) && is_partition_dir(&entry.path()) {
                found.orphans.push((topic.to_string(), p));
            }
        }
    }
    if let Ok(entries) = fs::read_dir(meta) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.starts_with("deleted-"))
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                found.graves.push(entry.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_names_are_kafkas_and_fit() {
        let n = delete_dir_name("orders", 7);
        assert!(n.starts_with("orders-7."), "{n}");
        assert!(n.ends_with("-delete"), "{n}");
        assert!(is_delete_dir(&n), "{n}");
        assert_ne!(n, delete_dir_name("orders", 7));
        let long = "x".repeat(249);
        let n = delete_dir_name(&long, 65535);
        assert_eq!(n.len(), 255);
        assert!(is_delete_dir(&n));
        // Neither a partition directory nor a stray name is taken for one.
        assert!(!is_delete_dir("orders-7"));
        assert!(!is_delete_dir("orders-delete"));
        assert!(!is_delete_dir("my-delete"));
        assert!(parse_partition_dir(&delete_dir_name("orders", 7)).is_none());
    }

    #[test]
    fn partition_dirs_parse_at_the_last_dash() {
        assert_eq!(parse_partition_dir("orders-0"), Some(("orders", 0)));
        assert_eq!(parse_partition_dir("a-1-2"), Some(("a-1", 2)));
        assert_eq!(
            parse_partition_dir("__consumer_offsets-0"),
            Some(("__consumer_offsets", 0))
        );
        for not in [
            "orders",
            "orders-",
            "-1",
            "orders-01",
            "orders-+1",
            "a b-1",
            ".ottla",
        ] {
            assert_eq!(parse_partition_dir(not), None, "{not}");
        }
    }
}
