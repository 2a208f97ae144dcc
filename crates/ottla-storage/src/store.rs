//! `Store`: one data directory. It owns the topic metadata, opens partition
//! logs on demand, and is shared by every Producer, Consumer and Admin on the
//! same directory in a process (one `PartitionLog` per partition per process
//! is what makes the in-process and cross-process locking line up).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::beacon::Beacon;
use crate::config::TopicConfig;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;
use crate::log::lockfile::{AppendGuard, LockFile};
use crate::log::PartitionLog;
use crate::offsets::OffsetStore;
use crate::topic::{is_internal, validate_topic_name, TopicId, TopicMeta, TopicPartition};

mod log_dirs;

/// A topic as last read from its metadata file.
#[derive(Clone, Debug)]
pub struct Topic {
    pub name: Arc<str>,
    /// Kafka's topic id: made at create, kept in the metadata file, so a
    /// topic created again under the same name has another.
    pub id: TopicId,
    pub partitions: u32,
    pub config: Arc<TopicConfig>,
}

pub struct Store {
    root: PathBuf,
    topics_dir: PathBuf,
    beacon: Arc<Beacon>,
    meta_lock: LockFile,
    topics: Mutex<HashMap<String, Topic>>,
    logs: Mutex<HashMap<TopicPartition, Arc<PartitionLog>>>,
    meta_seen: AtomicU64,
    /// The committed-offsets store, opened on first use; emptied by
    /// [`Store::reload_offsets`] so the next use reads the topic afresh.
    offsets: Mutex<Option<Arc<OffsetStore>>>,
    /// The running retention checkers, one per interval: every writer in
    /// this process that asks for the same interval shares one thread
    /// (`retention_checker::RetentionChecker::shared`).
    pub(crate) retention_checkers:
        Mutex<Vec<(u64, Weak<crate::retention_checker::RetentionChecker>)>>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    flush_interval_ms: AtomicU64,
    /// Partitions the process's descriptor table was last grown for (see
    /// [`Store::expect_partitions`]).
    fd_room: AtomicU64,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Store>>> {
    static REG: OnceLock<Mutex<HashMap<PathBuf, Weak<Store>>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Store {
    /// Open the data directory at `path` only if it is one already (a
    /// directory with `.ottla/` inside), so a reader given a mistyped path
    /// fails with [`Error::NotADataDirectory`] instead of creating it.
    pub fn open_existing(path: &Path) -> Result<Arc<Store>> {
        let not_one = |reason| Error::NotADataDirectory {
            path: path.to_path_buf(),
            reason,
        };
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_one("it does not exist"))
            }
            Err(e) => return Err(Error::io("stat data directory", path, e)),
            Ok(m) if !m.is_dir() => return Err(not_one("it is not a directory")),
            Ok(_) => {}
        }
        if !path.join(".ottla").is_dir() {
            return Err(not_one("it has no .ottla/ directory inside"));
        }
        Self::open(path)
    }

    /// Open (creating if needed) the data directory at `path`. Every caller in
    /// a process gets the same `Store` for the same directory.
    pub fn open(path: &Path) -> Result<Arc<Store>> {
        fs::create_dir_all(path).ctx("create data directory", path)?;
        let root = fs::canonicalize(path).ctx("resolve data directory", path)?;
        let mut reg = registry().lock();
        if let Some(s) = reg.get(&root).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let meta = root.join(".ottla");
        let topics_dir = meta.join("topics");
        fs::create_dir_all(&topics_dir).ctx("create metadata directory", &topics_dir)?;
        fs::create_dir_all(meta.join("groups")).ctx("create metadata directory", &meta)?;
        let beacon = Arc::new(Beacon::open(&meta.join("beacon"))?);
        let store = Arc::new(Store {
            meta_lock: LockFile::open(&meta.join("metadata.lock"))?,
            meta_seen: AtomicU64::new(beacon.metadata_gen()),
            root: root.clone(),
            topics_dir,
            beacon,
            topics: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            offsets: Mutex::new(None),
            retention_checkers: Mutex::new(Vec::new()),
            flusher: Mutex::new(None),
            flush_interval_ms: AtomicU64::new(u64::MAX),
            fd_room: AtomicU64::new(0),
        });
        // Most processes open a store before they start threads: growing
        // the descriptor table now costs no RCU grace period (see
        // `expect_partitions`), and 1,024 partitions' worth is 32 KiB.
        store.expect_partitions(1024);
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(root, Arc::downgrade(&store));
        drop(reg);
        // Outside the registry's lock: the sweep may wait for another
        // process's delete, and remove many files. Best effort: a leftover
        // that stays is still never adopted (a create or grow retires it
        // first); it only costs disk.
        let _ = store.sweep();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn beacon(&self) -> &Arc<Beacon> {
        &self.beacon
    }

    pub fn groups_dir(&self) -> PathBuf {
        self.root.join(".ottla").join("groups")
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.root.join(format!("{topic}-{partition}"))
    }

    /// Drop cached metadata if any process changed topics since we looked.
    fn sync_metadata(&self) {
        let gen = self.beacon.metadata_gen();
        if self.meta_seen.swap(gen, Ordering::AcqRel) != gen {
            self.topics.lock().clear();
            self.logs.lock().retain(|_, log| !log.is_deleted());
        }
    }

    fn read_meta(&self, name: &str) -> Result<Option<TopicMeta>> {
        let path = self.topics_dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                // A damaged file is an error naming it, never a guess.
                let text = std::str::from_utf8(&bytes).map_err(|e| {
                    Error::InvalidConfig(format!(
                        "topic metadata {}: not UTF-8 at byte {}",
                        path.display(),
                        e.valid_up_to()
                    ))
                })?;
                TopicMeta::decode(text)
                    .map(Some)
                    .map_err(|e| naming_file(e, &path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read topic metadata", &path, e)),
        }
    }

    /// The topic, if it exists.
    pub fn topic(&self, name: &str) -> Result<Option<Topic>> {
        validate_topic_name(name)?;
        self.sync_metadata();
        if let Some(t) = self.topics.lock().get(name) {
            return Ok(Some(t.clone()));
        }
        let Some(mut meta) = self.read_meta(name)? else {
            return Ok(None);
        };
        let id = match meta.id {
            Some(id) => id,
            None => match self.assign_id(name)? {
                Some(m) => {
                    meta = m;
                    meta.id.unwrap_or(TopicId::ZERO)
                }
                None => return Ok(None),
            },
        };
        let config = Arc::new(
            meta.config()
                .map_err(|e| naming_file(e, &self.topics_dir.join(name)))?,
        );
        let topic = Topic {
            name: Arc::from(name),
            id,
            partitions: meta.partitions,
            config: config.clone(),
        };
        for (TopicPartition { topic: t, .. }, log) in self.logs.lock().iter() {
            if &**t == name && log.config() != config {
                log.set_config(config.clone());
            }
        }
        self.topics.lock().insert(name.to_string(), topic.clone());
        Ok(Some(topic))
    }

    /// Give a topic an earlier version created (its metadata has no id) its
    /// id, once: under the metadata lock, re-read, and written only if
    /// still missing, so every process and every later open sees the same
    /// id. Returns the metadata as written, or `None` if the topic is gone.
    fn assign_id(&self, name: &str) -> Result<Option<TopicMeta>> {
        let _g = self.meta_lock.lock_append()?;
        let Some(mut meta) = self.read_meta(name)? else {
            return Ok(None);
        };
        if meta.id.is_none() {
            meta.id = Some(TopicId::random()?);
            write_atomic(&self.topics_dir.join(name), meta.encode().as_bytes())?;
        }
        Ok(Some(meta))
    }

    /// The topic, or `UnknownTopicOrPartition` if it does not exist.
    pub fn require_topic(&self, name: &str) -> Result<Topic> {
        self.topic(name)?.ok_or_else(|| unknown_topic(name))
    }

    /// The topic, creating it with `partitions` and default config if absent
    /// and `auto_create` allows.
    pub fn topic_or_create(&self, name: &str, auto_create: bool, partitions: u32) -> Result<Topic> {
        if let Some(t) = self.topic(name)? {
            return Ok(t);
        }
        // Internal topics are never made on first use: ottla creates its own.
        if !auto_create || is_internal(name) {
            return Err(unknown_topic(name));
        }
        match self.create_topic(name, partitions, &[]) {
            Ok(t) => Ok(t),
            Err(Error::TopicAlreadyExists(_)) => self.require_topic(name),
            Err(e) => Err(e),
        }
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: &[(String, String)],
    ) -> Result<Topic> {
        self.create_topic_with_id(name, partitions, config, TopicId::random()?)
    }

    /// [`Store::create_topic`] with the topic id given: a replica of a
    /// cluster's topic takes the id the cluster gave it (issue 14).
    pub fn create_topic_with_id(
        &self,
        name: &str,
        partitions: u32,
        config: &[(String, String)],
        id: TopicId,
    ) -> Result<Topic> {
        validate_topic_name(name)?;
        if partitions == 0 {
            return Err(Error::InvalidPartitions(
                "a topic needs at least one partition".into(),
            ));
        }
        if partitions > crate::topic::MAX_PARTITIONS {
            return Err(Error::InvalidPartitions(format!(
                "{partitions} partitions is more than the {} a topic may have",
                crate::topic::MAX_PARTITIONS
            )));
        }
        // The embedded door's names may be spelled with underscores.
        let named: Vec<(String, &str)> = config
            .iter()
            .map(|(k, v)| (crate::config::normalize_key(k), v.as_str()))
            .collect();
        let cfg = TopicConfig::from_overrides(named.iter().map(|(k, v)| (k.as_str(), *v)))?;
        crate::topic::check_config(name, &cfg)?;
        let meta = TopicMeta {
            id: Some(id),
            partitions,
            overrides: cfg.overrides.clone(),
        };
        let _g = self.meta_lock.lock_append()?;
        let path = self.topics_dir.join(name);
        if path.exists() {
            return Err(Error::TopicAlreadyExists(name.to_string()));
        }
        // Directories first, each made fresh, then the metadata: the
        // commit (see `log_dirs`). A crash in between leaves only empty
        // directories no metadata describes, which the next sweep removes.
        self.commit_new_partitions(_g, name, 0..partitions, &meta, "create-dirs")
    }

    /// Make a fresh directory for each partition in `new` of topic `name`,
    /// then write `meta`, the topic's metadata file: the one write that makes
    /// them live (see `log_dirs`). On failure the new directories are
    /// removed again. Runs under the metadata lock `guard`, released before
    /// the directories displaced by `make_fresh` are removed.
    fn commit_new_partitions(
        &self,
        guard: AppendGuard<'_>,
        name: &str,
        new: std::ops::Range<u32>,
        meta: &TopicMeta,
        step: &str,
    ) -> Result<Topic> {
        let mut graves = Vec::new();
        let made = new
            .clone()
            .try_for_each(|p| {
                log_dirs::make_fresh(
                    &self.root,
                    &self.partition_dir(name, p),
                    name,
                    p,
                    &mut graves,
                )
            })
            .and_then(|()| {
                crash_point(step);
                write_atomic(&self.topics_dir.join(name), meta.encode().as_bytes())
            });
        if let Err(e) = made {
            for p in new {
                let _ = fs::remove_dir(self.partition_dir(name, p));
            }
            log_dirs::remove_retired(&graves);
            return Err(e);
        }
        self.beacon.bump_metadata();
        drop(guard);
        log_dirs::remove_retired(&graves);
        self.topic(name)?
            .ok_or_else(|| Error::IllegalState(format!("topic {name} vanished after its commit")))
    }

    /// Delete a topic: atomically for every process, and crash-atomically
    /// (see `log_dirs`): the metadata's unlink is the commit; the partition
    /// directories are then flagged, renamed to `-delete` names and
    /// removed, and whatever a crash leaves of them is swept at the next
    /// `Store::open`. Then every group's committed offsets of the topic are
    /// removed (tombstones in `__consumer_offsets`, as Kafka does); were
    /// that cut short, the commits still carry the deleted topic's id, so a
    /// topic created again under the name never inherits them
    /// (`offsets`).
    pub fn delete_topic(self: &Arc<Self>, name: &str) -> Result<()> {
        self.delete_topic_inner(name, true)
    }

    /// [`Store::delete_topic`] without the tombstones in
    /// `__consumer_offsets`: for a replica of a cluster's topic, whose
    /// offsets topic only its leader writes (a follower's own append would
    /// make its copy diverge). The commits carry the deleted topic's id, so
    /// none is ever handed to a topic created again under the name.
    pub fn delete_topic_keeping_offsets(self: &Arc<Self>, name: &str) -> Result<()> {
        self.delete_topic_inner(name, false)
    }

    fn delete_topic_inner(self: &Arc<Self>, name: &str, forget_offsets: bool) -> Result<()> {
        crate::topic::check_deletable(name)?;
        validate_topic_name(name)?;
        let g = self.meta_lock.lock_append()?;
        let meta = self.read_meta(name)?.ok_or_else(|| unknown_topic(name))?;
        let path = self.topics_dir.join(name);
        fs::remove_file(&path).ctx("delete topic metadata", &path)?;
        sync_dir(&self.topics_dir);
        self.topics.lock().remove(name);
        self.beacon.bump_metadata();
        crash_point("committed");
        let mut graves = Vec::new();
        let mut moved = Ok(());
        for p in 0..meta.partitions {
            match self.retire_partition(name, p) {
                Ok(grave) => graves.extend(grave),
                // The topic is gone already; the sweep retires the rest.
                Err(e) => {
                    moved = Err(e);
                    break;
                }
            }
            if p == 0 {
                crash_point("moving");
            }
        }
        self.beacon.bump_metadata();
        drop(g);
        crash_point("moved");
        // Outside the lock: the names are unique and nobody's.
        log_dirs::remove_retired(&graves);
        // Best effort (see above); no offsets topic yet means no commits.
        if forget_offsets
            && self
                .topic(crate::offsets::OFFSETS_TOPIC)
                .ok()
                .flatten()
                .is_some()
        {
            if let Ok(offsets) = self.offsets() {
                let _ = offsets.forget_topic(name, meta.id);
            }
        }
        moved
    }

    /// Take partition `p` of `name` out of service (see
    /// [`log_dirs::retire`]), through this process's open log if it has one.
    /// The caller holds the metadata lock.
    fn retire_partition(&self, name: &str, p: u32) -> Result<Option<PathBuf>> {
        let cached = self
            .logs
            .lock()
            .remove(&TopicPartition::new(Arc::from(name), p));
        if let Some(log) = &cached {
            log.mark_deleted();
        }
        log_dirs::retire(
            &self.root,
            &self.partition_dir(name, p),
            name,
            p,
            cached.is_some(),
        )
    }

    /// Remove what crashed deletions, creates and grows left behind:
    /// `-delete` directories, partition directories no topic's metadata
    /// describes (see `log_dirs`), and metadata files a killed writer left
    /// half-written.
    fn sweep(&self) -> Result<()> {
        self.sweep_temporary_metadata()?;
        let found =
            log_dirs::find_leftovers(&self.root, &self.root.join(".ottla"), |t| self.read_meta(t))?;
        let mut graves = found.graves;
        if !found.orphans.is_empty() {
            let _g = self.meta_lock.lock_append()?;
            // Re-read under the lock: a create in another process may have
            // committed since.
            let mut counts: HashMap<&str, Option<u32>> = HashMap::new();
            let mut retired = false;
            for (topic, p) in &found.orphans {
                let n = *counts
                    .entry(topic)
                    .or_insert_with(|| match self.read_meta(topic) {
                        Ok(m) => m.map(|m| m.partitions),
                        Err(_) => Some(u32::MAX),
                    });
                if !matches!(n, Some(n) if *p < n) {
                    graves.extend(self.retire_partition(topic, *p)?);
                    retired = true;
                }
            }
            if retired {
                self.beacon.bump_metadata();
            }
        }
        log_dirs::remove_retired(&graves);
        Ok(())
    }

    /// Remove `.tmp-*` files from the topics directory: what a process
    /// killed inside `write_atomic` left (the rename that would have made
    /// one a topic's metadata never ran). Every write there holds the
    /// metadata lock, so under it no such file is in progress.
    fn sweep_temporary_metadata(&self) -> Result<()> {
        let stale = |store: &Store| -> Result<Vec<PathBuf>> {
            let dir = &store.topics_dir;
            let mut found = Vec::new();
            for entry in fs::read_dir(dir).ctx("list topics", dir)? {
                let entry = entry.ctx("list topics", dir)?;
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(crate::fsutil::TMP_PREFIX.as_bytes())
                {
                    found.push(entry.path());
                }
            }
            Ok(found)
        };
        if stale(self)?.is_empty() {
            return Ok(());
        }
        let _g = self.meta_lock.lock_append()?;
        for path in stale(self)? {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove temporary metadata", &path, e)),
            }
        }
        Ok(())
    }

    /// Topic names, internal ones included only if asked.
    pub fn list_topics(&self, internal: bool) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.topics_dir).ctx("list topics", &self.topics_dir)? {
            let entry = entry.ctx("list topics", &self.topics_dir)?;
            if let Some(name) = entry.file_name().to_str() {
                if validate_topic_name(name).is_ok() && (internal || !is_internal(name)) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn create_partitions(&self, name: &str, total: u32) -> Result<Topic> {
        validate_topic_name(name)?;
        let _g = self.meta_lock.lock_append()?;
        let mut meta = self.read_meta(name)?.ok_or_else(|| unknown_topic(name))?;
        if total <= meta.partitions {
            return Err(Error::InvalidPartitions(format!(
                "topic {name} has {} partitions; the new total must be larger, got {total}",
                meta.partitions
            )));
        }
        if total > crate::topic::MAX_PARTITIONS {
            return Err(Error::InvalidPartitions(format!(
                "{total} partitions is more than the {} a topic may have",
                crate::topic::MAX_PARTITIONS
            )));
        }
        // As in `create_topic`: fresh directories, then the commit.
        if meta.id.is_none() {
            meta.id = Some(TopicId::random()?);
        }
        let old = meta.partitions;
        meta.partitions = total;
        self.commit_new_partitions(_g, name, old..total, &meta, "grow-dirs")
    }

    /// Set (`Some`) or remove (`None`) config overrides.
    pub fn alter_topic_config(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<Topic> {
        validate_topic_name(name)?;
        let _g = self.meta_lock.lock_append()?;
        let mut meta = self.read_meta(name)?.ok_or_else(|| unknown_topic(name))?;
        for (k, v) in changes {
            let key = crate::config::normalize_key(k);
            match v {
                Some(v) => {
                    meta.overrides.insert(key, v.clone());
                }
                None => {
                    meta.overrides.remove(&key);
                }
            }
        }
        let cfg = Arc::new(meta.config()?);
        crate::topic::check_config(name, &cfg)?;
        meta.overrides = cfg.overrides.clone();
        if meta.id.is_none() {
            meta.id = Some(TopicId::random()?);
        }
        write_atomic(&self.topics_dir.join(name), meta.encode().as_bytes())?;
        self.beacon.bump_metadata();
        drop(_g);
        for (TopicPartition { topic: t, .. }, log) in self.logs.lock().iter() {
            if &**t == name {
                log.set_config(cfg.clone());
            }
        }
        let topic = self
            .topic(name)?
            .ok_or_else(|| Error::IllegalState(format!("topic {name} vanished")))?;
        for p in 0..topic.partitions {
            self.partition(&topic, p)?.enforce_retention()?;
        }
        Ok(topic)
    }

    /// Compact every partition of a compacted topic now, whatever its dirty
    /// ratio (`log::cleaner`); the passes' statistics added up. Partitions
    /// another process is cleaning at the moment are skipped.
    pub fn compact_topic(&self, name: &str) -> Result<crate::log::cleaner::CleanerStats> {
        let topic = self.require_topic(name)?;
        if topic.config.cleanup_policy == crate::config::CleanupPolicy::Delete {
            return Err(Error::InvalidConfig(format!(
                "topic {name:?} has cleanup.policy=delete; compaction needs compact or compact,delete"
            )));
        }
        let mut total = crate::log::cleaner::CleanerStats::default();
        for p in 0..topic.partitions {
            if let Some(s) = self.partition(&topic, p)?.compact()? {
                total.segments_before += s.segments_before;
                total.segments_after += s.segments_after;
                total.bytes_before += s.bytes_before;
                total.bytes_after += s.bytes_after;
                total.records_before += s.records_before;
                total.records_after += s.records_after;
                total.tombstones_removed += s.tombstones_removed;
            }
        }
        Ok(total)
    }

    /// The log of one partition, opened on first use.
    pub fn partition(&self, topic: &Topic, partition: u32) -> Result<Arc<PartitionLog>> {
        if partition >= topic.partitions {
            return Err(Error::UnknownTopicOrPartition {
                topic: topic.name.to_string(),
                partition: partition as i64,
            });
        }
        let key = TopicPartition::new(topic.name.clone(), partition);
        let open = {
            let logs = self.logs.lock();
            if let Some(log) = logs.get(&key) {
                if !log.is_deleted() {
                    return Ok(log.clone());
                }
            }
            logs.len() as u64
        };
        // Opened one at a time (a producer's first send to each): grow the
        // descriptor table ahead, four times the partitions open, so it
        // grows a few times rather than at every power of two.
        if open >= self.fd_room.load(Ordering::Relaxed) {
            self.expect_partitions((4 * open).max(256));
        }
        let dir = self.partition_dir(&topic.name, partition);
        let open = || {
            PartitionLog::open_existing(
                &dir,
                topic.name.clone(),
                partition,
                topic.config.clone(),
                self.beacon.clone(),
            )
        };
        let log = match open() {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                self.remake_partition_dir(&topic.name, partition)?;
                open().map_err(|e| match e {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        unknown_partition(&topic.name, partition)
                    }
                    e => e,
                })?
            }
            other => other?,
        };
        let log = Arc::new(log);
        let mut logs = self.logs.lock();
        let entry = logs.entry(key).or_insert_with(|| log.clone());
        if entry.is_deleted() {
            *entry = log.clone();
        }
        Ok(entry.clone())
    }

    /// A partition directory is missing: deleted (this caller's `Topic` is
    /// stale), or never made (a topic an earlier version created and
    /// crashed before making all its directories). Make it only if the
    /// metadata on disk, read under the lock, says the partition exists: a
    /// directory made outside the lock, for a topic since deleted, would
    /// be a leftover another create could find.
    fn remake_partition_dir(&self, name: &str, partition: u32) -> Result<()> {
        let _g = self.meta_lock.lock_append()?;
        match self.read_meta(name)? {
            Some(m) if partition < m.partitions => {
                let dir = self.partition_dir(name, partition);
                fs::create_dir_all(&dir).ctx("create partition directory", &dir)
            }
            _ => Err(unknown_partition(name, partition)),
        }
    }

    /// Open many partitions at once (a consumer's assignment), on up to
    /// four threads when there are enough to pay for them: opening is
    /// system calls on files of their own (the lock file, the head, the
    /// active segment, 13 calls a partition) that do not contend across
    /// partitions, so a 100 x 8 assignment opens in about half the time on
    /// two cores. The opened logs land in the store's cache, where the
    /// caller's own `partition` calls then find them; errors are left to
    /// those calls, which report them in order. Partitions already open
    /// cost a map lookup.
    pub fn open_many(&self, wanted: &[(&Topic, u32)]) {
        const PER_THREAD: usize = 64;
        self.expect_partitions(wanted.len() as u64);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
            .min(wanted.len() / PER_THREAD);
        if threads < 2 {
            return;
        }
        let chunk = wanted.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for part in wanted.chunks(chunk) {
                let spawned = std::thread::Builder::new()
                    .name("ottla-open".into())
                    .spawn_scoped(scope, move || {
                        for (topic, p) in part {
                            let _ = self.partition(topic, *p);
                        }
                    });
                // No thread: the caller opens these one by one instead.
                drop(spawned);
            }
        });
    }

    /// How many partition logs this store holds open.
    pub fn open_partitions(&self) -> usize {
        self.logs.lock().len()
    }

    /// Grow the process's file descriptor table, once, to hold the files
    /// of `partitions` more open partitions (a lock file and a `.log` each,
    /// plus the short-lived head and index descriptors), or of the
    /// open-file budget (`crate::fd_budget`) if that is smaller: the budget
    /// closes the least recently used ones past it. The kernel grows
    /// the table to the next power of two when an `open` returns a number
    /// past its end, and in a process with threads each growth waits for an
    /// RCU grace period: opening 800 partitions (1,600 descriptors) grew it
    /// five times, and `strace -T` showed 10-17 ms `openat`s at descriptors
    /// 256, 512 and 1024, more than the opens' own CPU time. `F_DUPFD`
    /// at the number needed grows it once. Best effort: never past the
    /// descriptor limit, and a failure only costs the growth steps.
    pub fn expect_partitions(&self, partitions: u64) {
        use std::os::fd::AsRawFd;
        if partitions <= self.fd_room.load(Ordering::Relaxed) {
            return;
        }
        self.fd_room.store(partitions, Ordering::Relaxed);
        // The lowest free descriptor: where the next opens start.
        let Ok(probe) = fs::File::open(&self.root) else {
            return;
        };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return;
        }
        // The open-file budget bounds what partitions keep open, however
        // many there are.
        let budget = crate::fd_budget::max_open_files() as u64;
        let want = (probe.as_raw_fd() as u64)
            .saturating_add(partitions.saturating_mul(3).min(budget))
            .saturating_add(16);
        let top = want.min(lim.rlim_cur.saturating_sub(1)).min(1 << 20);
        if top <= probe.as_raw_fd() as u64 {
            return;
        }
        // SAFETY: duplicates a descriptor we own; the duplicate is closed
        // at once below.
        let dup =
            unsafe { libc::fcntl(probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top as libc::c_int) };
        if dup >= 0 {
            // SAFETY: `dup` is ours, from the fcntl above.
            unsafe { libc::close(dup) };
        }
    }

    pub fn partition_by_name(&self, topic: &str, partition: u32) -> Result<Arc<PartitionLog>> {
        let t = self
            .topic(topic)?
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition: partition as i64,
            })?;
        self.partition(&t, partition)
    }

    pub fn offsets(self: &Arc<Self>) -> Result<Arc<OffsetStore>> {
        let mut g = self.offsets.lock();
        if let Some(o) = g.as_ref() {
            return Ok(o.clone());
        }
        let o = Arc::new(OffsetStore::open(self)?);
        *g = Some(o.clone());
        Ok(o)
    }

    /// Forget the offsets store this process read so far: the next
    /// [`Store::offsets`] opens `__consumer_offsets` again and reads it from
    /// its start. For a replica of the topic whose log another process (a
    /// leader) wrote or truncated: a broker becoming, or ceasing to be, its
    /// coordinator.
    pub fn reload_offsets(&self) {
        self.offsets.lock().take();
    }

    /// Start (or speed up) the background fsync of every open partition, for
    /// producers with `fsync="interval"`.
    pub fn ensure_flusher(self: &Arc<Self>, interval_ms: u64) {
        let interval_ms = interval_ms.max(1);
        self.flush_interval_ms
            .fetch_min(interval_ms, Ordering::AcqRel);
        let mut f = self.flusher.lock();
        if f.is_some() {
            return;
        }
        let weak = Arc::downgrade(self);
        *f = std::thread::Builder::new()
            .name("ottla-flusher".into())
            .spawn(move || loop {
                let Some(store) = weak.upgrade() else { return };
                let every = store.flush_interval_ms.load(Ordering::Acquire);
                let logs: Vec<_> = store.logs.lock().values().cloned().collect();
                drop(store);
                for log in logs {
                    // A failing flush is retried next interval; appends with
                    // fsync="always" report errors directly.
                    let _ = log.flush();
                }
                std::thread::sleep(Duration::from_millis(every));
            })
            .ok();
    }
}

/// The crash tests' hook (see `log::partition::crash_point`):
/// `OTTLA_TOPIC_CRASH_AT=create-dirs` (`grow-dirs`) stops a create (a
/// grow) once its directories exist, before the metadata commits it; `committed` stops a delete once
/// the metadata is gone, `moving` once the first partition directory is
/// renamed aside, `moved` once all are, before they are removed.
fn crash_point(step: &str) {
    crate::log::partition::crash_point("OTTLA_TOPIC_CRASH_AT", step);
}

/// fsync a directory so a rename or unlink in it survives a power loss.
/// Best effort, as in `write_atomic`.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn unknown_partition(topic: &str, partition: u32) -> Error {
    Error::UnknownTopicOrPartition {
        topic: topic.to_string(),
        partition: partition as i64,
    }
}

fn unknown_topic(name: &str) -> Error {
    Error::UnknownTopicOrPartition {
        topic: name.to_string(),
        partition: -1,
    }
}

/// A metadata decoding error, prefixed with the file it came from.
fn naming_file(e: Error, path: &Path) -> Error {
    match e {
        Error::InvalidConfig(m) => {
            Error::InvalidConfig(format!("topic metadata {}: {m}", path.display()))
        }
        e => e,
    }
}
