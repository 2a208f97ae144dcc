//! Committed consumer offsets, kept where Kafka keeps them: in the internal
//! compacted topic `__consumer_offsets`, with Kafka's own key (version 1:
//! group, topic, partition) and value (version 3: offset, leader epoch,
//! metadata, commit timestamp) encodings. Every process on the directory
//! reads the same topic, so a commit made by one is seen by all, and a
//! commit survives whatever survives an appended record.
//!
//! A deleted topic's offsets go with it, as in Kafka (whose coordinator
//! writes tombstones for a deleted topic's partitions): `Store::delete_topic`
//! tombstones them ([`OffsetStore::forget_topic`]). So that a crash or a
//! commit racing the delete can never hand them to a topic created again
//! under the same name, every commit also carries the topic's id (value
//! version 4, Kafka's first flexible version, with the id in a tagged field
//! Kafka's readers skip), and a commit whose id is not the topic's id now
//! is not returned.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::log::{now_ms, Durability, PartitionLog, ReadCursor};
use crate::store::Store;
use crate::topic::TopicId;
use ottla_record::batch::{
    parse_marker, seal_crc, BatchBuilder, Batches, ControlType, ATTRIBUTES, PRODUCER_EPOCH,
    PRODUCER_ID, TRANSACTIONAL_FLAG,
};
use ottla_record::decode::records;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Longest metadata string a commit may carry: Kafka's
/// `offset.metadata.max.bytes` default. Kafka checks only this in a commit
/// (`GroupMetadataManager.storeOffsets`), not the offset value: a commit of
/// an offset outside the log is stored, and a consumer resuming from it
/// starts where its `auto.offset.reset` says.
pub const MAX_METADATA_BYTES: usize = 4096;

/// Refuse metadata Kafka would refuse (`OFFSET_METADATA_TOO_LARGE`).
pub fn check_metadata(metadata: &str) -> Result<()> {
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(Error::OffsetMetadataTooLarge {
            len: metadata.len(),
            max: MAX_METADATA_BYTES,
        });
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    /// The leader epoch the committing client saw for the record before
    /// `offset` (Kafka's `committed_leader_epoch`), kept so OffsetFetch
    /// returns it; -1 when none was given (embedded commits, values
    /// written before value version 3).
    pub leader_epoch: i32,
    pub metadata: String,
    pub timestamp: i64,
    /// The id of the topic the offset was committed for; `None` in commits
    /// of earlier versions, and of topics that did not exist at the time.
    pub topic_id: Option<TopicId>,
}

/// The tag of ottla's topic-id field in a version-4 value (Kafka defines
/// no tagged field there yet; its readers skip unknown ones).
const TAG_TOPIC_ID: u64 = 0;
/// One partition of a commit: topic, partition, offset, leader epoch (-1:
/// none), metadata.
pub type OffsetEntry = (String, u32, i64, i32, String);

/// (topic, partition, offset, metadata) as entries without a leader epoch.
pub fn without_epochs(offsets: &[(String, u32, i64, String)]) -> Vec<OffsetEntry> {
    offsets
        .iter()
        .map(|(t, p, o, m)| (t.clone(), *p, *o, -1, m.clone()))
        .collect()
}

type Key = (String, String, u32);

struct State {
    map: HashMap<Key, Committed>,
    /// The other records of the group coordinator (key version 2 and up),
    /// raw: the latest value of each key.
    records: HashMap<Vec<u8>, Vec<u8>>,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by
    /// producer id: applied when the producer's COMMIT marker is read,
    /// dropped at its ABORT marker (Kafka's pending transactional offsets).
    pending: HashMap<i64, Vec<(Key, Option<Committed>)>>,
    next: i64,
    cursor: Option<ReadCursor>,
}

pub struct OffsetStore {
    /// Weak: the store holds this one.
    store: Weak<Store>,
    log: Arc<PartitionLog>,
    state: Mutex<State>,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    buf.extend_from_slice(&(b.len() as i16).to_be_bytes());
    buf.extend_from_slice(b);
}

fn get_str(buf: &[u8], pos: &mut usize) -> Option<String> {
    let len = i16::from_be_bytes(buf.get(*pos..*pos + 2)?.try_into().ok()?);
    *pos += 2;
    if len < 0 {
        return Some(String::new());
    }
    let s = buf.get(*pos..*pos + len as usize)?;
    *pos += len as usize;
    String::from_utf8(s.to_vec()).ok()
}

fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_uvarint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A flexible version's COMPACT_NULLABLE_STRING (null reads as empty).
fn get_compact_str(buf: &[u8], pos: &mut usize) -> Option<String> {
    let n = get_uvarint(buf, pos)?;
    if n == 0 {
        return Some(String::new());
    }
    // Kafka's strings are at most 32767 bytes (as `get_str` reads them).
    let len = usize::try_from(n - 1)
        .ok()
        .filter(|l| *l <= i16::MAX as usize)?;
    let s = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    String::from_utf8(s.to_vec()).ok()
}

fn get_i64(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let v = i64::from_be_bytes(buf.get(*pos..*pos + 8)?.try_into().ok()?);
    *pos += 8;
    Some(v)
}

pub fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    k.extend_from_slice(&1i16.to_be_bytes());
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.extend_from_slice(&(partition as i32).to_be_bytes());
    k
}

/// A key of the group coordinator's other records: version 2 and up.
fn is_group_record(k: &[u8]) -> bool {
    k.get(..2)
        .and_then(|v| v.try_into().ok())
        .is_some_and(|v: [u8; 2]| i16::from_be_bytes(v) >= 2)
}

pub fn decode_key(k: &[u8]) -> Option<Key> {
    let mut pos = 0;
    let version = i16::from_be_bytes(k.get(0..2)?.try_into().ok()?);
    pos += 2;
    if version > 1 {
        return None; // group metadata records, not offsets
    }
    let group = get_str(k, &mut pos)?;
    let topic = get_str(k, &mut pos)?;
    let partition = i32::from_be_bytes(k.get(pos..pos + 4)?.try_into().ok()?);
    Some((group, topic, u32::try_from(partition).ok()?))
}

/// Version 3 (Kafka's last fixed layout) without a topic id; version 4
/// (flexible: compact string, tagged fields) with one.
pub fn encode_value(c: &Committed) -> Vec<u8> {
    let mut v = Vec::with_capacity(48 + c.metadata.len());
    let Some(id) = c.topic_id else {
        v.extend_from_slice(&3i16.to_be_bytes());
        v.extend_from_slice(&c.offset.to_be_bytes());
        v.extend_from_slice(&c.leader_epoch.to_be_bytes());
        put_str(&mut v, &c.metadata);
        v.extend_from_slice(&c.timestamp.to_be_bytes());
        return v;
    };
    v.extend_from_slice(&4i16.to_be_bytes());
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    let m = &c.metadata.as_bytes()[..c.metadata.len().min(i16::MAX as usize)];
    put_uvarint(&mut v, m.len() as u64 + 1);
    v.extend_from_slice(m);
    v.extend_from_slice(&c.timestamp.to_be_bytes());
    put_uvarint(&mut v, 1); // one tagged field
    put_uvarint(&mut v, TAG_TOPIC_ID);
    put_uvarint(&mut v, 16);
    v.extend_from_slice(&id.0);
    v
}

pub fn decode_value(v: &[u8]) -> Option<Committed> {
    let mut pos = 0;
    let version = i16::from_be_bytes(v.get(0..2)?.try_into().ok()?);
    pos += 2;
    let offset = get_i64(v, &mut pos)?;
    if version >= 4 {
        // Flexible: a later layout would not be Kafka's v4.
        if version > 4 {
            return None;
        }
        let leader_epoch = i32::from_be_bytes(v.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        let metadata = get_compact_str(v, &mut pos)?;
        let timestamp = get_i64(v, &mut pos)?;
        let mut topic_id = None;
        for _ in 0..get_uvarint(v, &mut pos)? {
            let tag = get_uvarint(v, &mut pos)?;
            let size = usize::try_from(get_uvarint(v, &mut pos)?).ok()?;
            let data = v.get(pos..pos.checked_add(size)?)?;
            pos += size;
            if tag == TAG_TOPIC_ID {
                topic_id = Some(TopicId(data.try_into().ok()?));
            }
        }
        return Some(Committed {
            offset,
            leader_epoch,
            metadata,
            timestamp,
            topic_id,
        });
    }
    // Value versions 0-2 have no leader epoch.
    let leader_epoch = if version >= 3 {
        let e = i32::from_be_bytes(v.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        e
    } else {
        -1
    };
    let metadata = get_str(v, &mut pos)?;
    let timestamp = get_i64(v, &mut pos).unwrap_or(-1);
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        timestamp,
        topic_id: None,
    })
}

impl OffsetStore {
    pub fn open(store: &Arc<Store>) -> Result<OffsetStore> {
        let topic = match store.topic(OFFSETS_TOPIC)? {
            Some(t) => t,
            // Kafka's offsets.topic.segment.bytes: segments roll (and so
            // get compacted) long before the 1 GiB topic default.
            None => match store.create_topic(
                OFFSETS_TOPIC,
                1,
                &[
                    ("cleanup.policy".into(), "compact".into()),
                    ("segment.bytes".into(), "104857600".into()),
                ],
            ) {
                Ok(t) => t,
                Err(Error::TopicAlreadyExists(_)) => store
                    .topic(OFFSETS_TOPIC)?
                    .ok_or_else(|| Error::IllegalState("offsets topic vanished".into()))?,
                Err(e) => return Err(e),
            },
        };
        let log = store.partition(&topic, 0)?;
        let (start, _) = log.offsets()?;
        Ok(OffsetStore {
            store: Arc::downgrade(store),
            log,
            state: Mutex::new(State {
                map: HashMap::new(),
                records: HashMap::new(),
                pending: HashMap::new(),
                next: start,
                cursor: None,
            }),
        })
    }

    /// Apply commits other processes (or we) appended since the last look.
    fn catch_up(&self, st: &mut State) -> Result<()> {
        loop {
            // To the log end, as Kafka's coordinator loads: a replica that
            // just became the topic's leader in a cluster has commits above
            // its high watermark that are the group's (the other replicas
            // truncate to its log); a log nobody replicates has its high
            // watermark at its end anyway.
            let fetched = match self
                .log
                .read_to_log_end(st.next, 1 << 20, &mut st.cursor, true)
            {
                Ok(f) => f,
                Err(Error::OffsetOutOfRange { start, .. }) if st.next < start => {
                    st.next = start;
                    st.cursor = None;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if fetched.bytes.is_empty() {
                if let Some(e) = fetched.error {
                    return Err(e);
                }
                return Ok(());
            }
            for (h, batch) in Batches::new(&fetched.bytes) {
                if h.is_control() {
                    if h.next_offset() > st.next {
                        let pending = st.pending.remove(&h.producer_id);
                        let commit =
                            parse_marker(&h, batch).is_some_and(|m| m.kind == ControlType::Commit);
                        for (key, c) in pending.into_iter().flatten().filter(|_| commit) {
                            match c {
                                Some(c) => st.map.insert(key, c),
                                None => st.map.remove(&key),
                            };
                        }
                    }
                    st.next = h.next_offset();
                    continue;
                }
                for rec in records(&h, batch)?.iter() {
                    let rec =
                        rec.map_err(|r| Error::InvalidRecord(format!("offsets topic: {r}")))?;
                    if rec.offset < st.next {
                        continue;
                    }
                    if let Some(k) = rec.key.filter(|k| is_group_record(k)) {
                        match rec.value {
                            Some(v) => {
                                st.records.insert(k.to_vec(), v.to_vec());
                            }
                            None => {
                                st.records.remove(k);
                            }
                        }
                    } else if let Some(key) = rec.key.and_then(decode_key) {
                        let value = rec.value.and_then(decode_value);
                        if h.is_transactional() {
                            st.pending
                                .entry(h.producer_id)
                                .or_default()
                                .push((key, value));
                            continue;
                        }
                        match value {
                            Some(c) => {
                                st.map.insert(key, c);
                            }
                            None => {
                                st.map.remove(&key);
                            }
                        }
                    }
                }
                st.next = h.next_offset();
            }
            if let Some(e) = fetched.error {
                return Err(e);
            }
        }
    }

    /// Durably record `offsets` (topic, partition, offset, metadata) for
    /// `group`, each stamped with its topic's id now, without leader epochs.
    pub fn commit(
        &self,
        group: &str,
        offsets: &[(String, u32, i64, String)],
        durability: Durability,
    ) -> Result<()> {
        self.commit_with_ids(group, offsets, &HashMap::new(), durability)
    }

    /// As [`OffsetStore::commit`], the topics in `ids` stamped with the id
    /// given there: the id of the topic the committer read, so a position
    /// in a topic deleted meanwhile never counts for one created again
    /// under its name.
    pub fn commit_with_ids(
        &self,
        group: &str,
        offsets: &[(String, u32, i64, String)],
        ids: &HashMap<String, TopicId>,
        durability: Durability,
    ) -> Result<()> {
        self.commit_entries(group, &without_epochs(offsets), ids, durability)
    }

    /// Durably record `offsets` for `group`, each with the leader epoch
    /// its client gave (-1: none), stamped with its topic's id now.
    pub fn commit_with_epochs(
        &self,
        group: &str,
        offsets: &[OffsetEntry],
        durability: Durability,
    ) -> Result<()> {
        self.commit_entries(group, offsets, &HashMap::new(), durability)
    }

    /// The one commit: leader epochs as given, the topics in `ids` stamped
    /// with those ids and the others with their id now.
    pub fn commit_entries(
        &self,
        group: &str,
        offsets: &[OffsetEntry],
        ids: &HashMap<String, TopicId>,
        durability: Durability,
    ) -> Result<()> {
        self.write_entries(group, offsets, ids, None, durability)
    }

    /// TxnOffsetCommit: `offsets` for `group` inside the open transaction
    /// of `producer_id` at `epoch`, in a transactional batch. They count
    /// (here and for every reader of the topic) only once the producer's
    /// COMMIT marker follows them in `__consumer_offsets`; an ABORT marker
    /// drops them.
    pub fn commit_transactional(
        &self,
        group: &str,
        offsets: &[OffsetEntry],
        producer_id: i64,
        epoch: i16,
        durability: Durability,
    ) -> Result<()> {
        self.write_entries(
            group,
            offsets,
            &HashMap::new(),
            Some((producer_id, epoch)),
            durability,
        )
    }

    /// The partition of `__consumer_offsets` this store writes (for the
    /// transaction coordinator, which ends transactions there too).
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    fn write_entries(
        &self,
        group: &str,
        offsets: &[OffsetEntry],
        ids: &HashMap<String, TopicId>,
        txn: Option<(i64, i16)>,
        durability: Durability,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        // Longer metadata would be cut by `put_str`, possibly inside a
        // UTF-8 character, and then not decode at all.
        for (_, _, _, _, metadata) in offsets {
            check_metadata(metadata)?;
        }
        let now = now_ms();
        let mut b = BatchBuilder::with_capacity(64 * offsets.len());
        let mut entries = Vec::with_capacity(offsets.len());
        let mut stamps: HashMap<&str, Option<TopicId>> = HashMap::new();
        for (topic, partition, offset, leader_epoch, metadata) in offsets {
            let topic_id = match (ids.get(topic), stamps.get(topic.as_str())) {
                (Some(id), _) => Some(*id),
                (None, Some(id)) => *id,
                (None, None) => {
                    let id = self.current_id(topic)?;
                    stamps.insert(topic, id);
                    id
                }
            };
            let c = Committed {
                offset: *offset,
                leader_epoch: *leader_epoch,
                metadata: metadata.clone(),
                timestamp: now,
                topic_id,
            };
            b.append(
                now,
                Some(&encode_key(group, topic, *partition)),
                Some(&encode_value(&c)),
                &[],
            );
            entries.push(((group.to_string(), topic.clone(), *partition), c));
        }
        let mut bytes = b.finish().to_vec();
        if let Some((producer_id, epoch)) = txn {
            let attributes = TRANSACTIONAL_FLAG;
            bytes[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
            bytes[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
            bytes[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
            seal_crc(&mut bytes);
        }
        self.log.append(&mut bytes, durability)?;
        let mut st = self.state.lock();
        self.catch_up(&mut st)?;
        Ok(())
    }

    /// The id of `topic` now, `None` if it does not exist (or its name is
    /// not a topic name: commits of such names are stored as they come).
    fn current_id(&self, topic: &str) -> Result<Option<TopicId>> {
        let Some(store) = self.store.upgrade() else {
            return Ok(None);
        };
        match store.topic(topic) {
            Ok(t) => Ok(t.map(|t| t.id)),
            Err(Error::InvalidTopic { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a commit still belongs to its topic: one made for a topic
    /// since deleted (created again or not) does not.
    fn current(
        &self,
        topic: &str,
        c: &Committed,
        ids: &mut HashMap<String, Option<TopicId>>,
    ) -> Result<bool> {
        let Some(id) = c.topic_id else {
            return Ok(true);
        };
        let now = match ids.get(topic) {
            Some(now) => *now,
            None => {
                let now = self.current_id(topic)?;
                ids.insert(topic.to_string(), now);
                now
            }
        };
        Ok(now == Some(id))
    }

    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<Committed>> {
        let c = {
            let mut st = self.state.lock();
            self.catch_up(&mut st)?;
            st.map
                .get(&(group.to_string(), topic.to_string(), partition))
                .cloned()
        };
        match c {
            Some(c) if self.current(topic, &c, &mut HashMap::new())? => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// Whether an open transaction holds an offset of `group` for this
    /// partition, not yet committed (OffsetFetch's `require_stable`).
    pub fn pending(&self, group: &str, topic: &str, partition: u32) -> Result<bool> {
        let mut st = self.state.lock();
        self.catch_up(&mut st)?;
        Ok(st
            .pending
            .values()
            .flatten()
            .any(|((g, t, p), _)| g == group && t == topic && *p == partition))
    }

    /// Every committed (topic, partition) of `group`, sorted.
    pub fn group_offsets(&self, group: &str) -> Result<Vec<(String, u32, Committed)>> {
        let mut st = self.state.lock();
        self.catch_up(&mut st)?;
        let all: Vec<_> = st
            .map
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect();
        drop(st);
        let mut ids = HashMap::new();
        let mut v = Vec::with_capacity(all.len());
        for e in all {
            if self.current(&e.0, &e.2, &mut ids)? {
                v.push(e);
            }
        }
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(v)
    }

    pub fn groups(&self) -> Result<Vec<String>> {
        let mut st = self.state.lock();
        self.catch_up(&mut st)?;
        let mut v: Vec<String> = st.map.keys().map(|(g, _, _)| g.clone()).collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Write tombstones for every group's committed offsets of `topic`
    /// (just deleted; its id was `id`), as Kafka's coordinator does when a
    /// topic is deleted. Commits stamped with another id (a topic created
    /// again since) are kept. Returns how many were removed.
    pub fn forget_topic(&self, topic: &str, id: Option<TopicId>) -> Result<usize> {
        let keys: Vec<Key> = {
            let mut st = self.state.lock();
            self.catch_up(&mut st)?;
            st.map
                .iter()
                .filter(|((_, t, _), c)| t == topic && (c.topic_id.is_none() || c.topic_id == id))
                .map(|(k, _)| k.clone())
                .collect()
        };
        self.write_tombstones(keys.iter().map(|(g, t, p)| (g.as_str(), t.as_str(), *p)))
    }

    /// Write tombstones for the committed offsets of `group` in
    /// `partitions` (Kafka's OffsetDelete); partitions without one are
    /// skipped. Returns how many were removed.
    pub fn delete_offsets(&self, group: &str, partitions: &[(String, u32)]) -> Result<usize> {
        let keys: Vec<&(String, u32)> = {
            let mut st = self.state.lock();
            self.catch_up(&mut st)?;
            partitions
                .iter()
                .filter(|(t, p)| st.map.contains_key(&(group.to_string(), t.clone(), *p)))
                .collect()
        };
        self.write_tombstones(keys.iter().map(|(t, p)| (group, t.as_str(), *p)))
    }

    /// Write tombstones for every committed offset of `group`.
    pub fn delete_group(&self, group: &str) -> Result<usize> {
        let keys = self.group_offsets(group)?;
        self.write_tombstones(keys.iter().map(|(t, p, _)| (group, t.as_str(), *p)))
    }

    /// Append records of the group coordinator other than offset commits
    /// (Kafka's key versions 2 and up: group metadata, KIP-848 consumer
    /// group epochs, members and assignments), encoded by their owner;
    /// `None` is a tombstone. Keys of other versions are refused.
    pub fn write_group_records(
        &self,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        durability: Durability,
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some((k, _)) = records.iter().find(|(k, _)| !is_group_record(k)) {
            return Err(Error::IllegalState(format!(
                "not a group record key: {:02x?}",
                k.get(..2)
            )));
        }
        let now = now_ms();
        let mut b = BatchBuilder::with_capacity(
            records
                .iter()
                .map(|(k, v)| 32 + k.len() + v.as_ref().map_or(0, Vec::len))
                .sum(),
        );
        for (k, v) in records {
            b.append(now, Some(k), v.as_deref(), &[]);
        }
        let mut bytes = b.finish().to_vec();
        self.log.append(&mut bytes, durability)?;
        let mut st = self.state.lock();
        self.catch_up(&mut st)
    }

    /// The group coordinator's records of key version `version` (2 and
    /// up), the latest value of each key, tombstoned keys left out.
    pub fn group_records(&self, version: i16) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut st = self.state.lock();
        self.catch_up(&mut st)?;
        let tag = version.to_be_bytes();
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = st
            .records
            .iter()
            .filter(|(k, _)| k.get(..2) == Some(&tag[..]))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// One batch of tombstones for the commits of `(group, topic,
    /// partition)`, then the in-memory map caught up with it. Returns how
    /// many were written (nothing is appended for none).
    fn write_tombstones<'a>(
        &self,
        keys: impl ExactSizeIterator<Item = (&'a str, &'a str, u32)>,
    ) -> Result<usize> {
        let n = keys.len();
        if n == 0 {
            return Ok(0);
        }
        let now = now_ms();
        let mut b = BatchBuilder::with_capacity(64 * n);
        for (g, t, p) in keys {
            b.append(now, Some(&encode_key(g, t, p)), None, &[]);
        }
        let mut bytes = b.finish().to_vec();
        self.log.append(&mut bytes, Durability::PageCache)?;
        let mut st = self.state.lock();
        self.catch_up(&mut st)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_records_are_kept_by_key_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = |v: i16, m: &str| {
            let mut k = v.to_be_bytes().to_vec();
            k.extend_from_slice(m.as_bytes());
            k
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let o = store.offsets().unwrap();
            o.write_group_records(
                &[
                    (key(3, "g"), Some(b"epoch 1".to_vec())),
                    (key(5, "a"), Some(b"member a".to_vec())),
                    (key(5, "b"), Some(b"member b".to_vec())),
                ],
                Durability::PageCache,
            )
            .unwrap();
            o.write_group_records(
                &[
                    (key(3, "g"), Some(b"epoch 2".to_vec())),
                    (key(5, "a"), None),
                ],
                Durability::PageCache,
            )
            .unwrap();
            assert!(o
                .write_group_records(&[(key(1, "x"), None)], Durability::PageCache)
                .is_err());
            o.commit(
                "g",
                &[("t".into(), 0, 5, String::new())],
                Durability::PageCache,
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let o = store.offsets().unwrap();
        assert_eq!(
            o.group_records(3).unwrap(),
            vec![(key(3, "g"), b"epoch 2".to_vec())]
        );
        assert_eq!(
            o.group_records(5).unwrap(),
            vec![(key(5, "b"), b"member b".to_vec())]
        );
        assert_eq!(o.committed("g", "t", 0).unwrap().map(|c| c.offset), Some(5));
        assert_eq!(o.groups().unwrap(), vec!["g".to_string()]);
    }

    #[test]
    fn key_and_value_round_trip_in_kafka_format() {
        let k = encode_key("g", "orders", 7);
        // version 1, "g", "orders", partition 7
        assert_eq!(&k[..2], &[0, 1]);
        assert_eq!(decode_key(&k), Some(("g".into(), "orders".into(), 7)));
        let c = Committed {
            offset: 42,
            leader_epoch: 7,
            metadata: "m".into(),
            timestamp: 1700000000000,
            topic_id: None,
        };
        let v = encode_value(&c);
        assert_eq!(&v[..2], &[0, 3]);
        assert_eq!(&v[10..14], &[0, 0, 0, 7], "leader epoch after the offset");
        assert_eq!(decode_value(&v), Some(c.clone()));
        assert_eq!(decode_key(&[0, 1, 0]), None);
        // With a topic id: Kafka's flexible version 4, the id in a tagged
        // field (tag 0, 16 bytes) after the commit timestamp.
        let id = TopicId([7; 16]);
        let with_id = Committed {
            topic_id: Some(id),
            ..c
        };
        let v = encode_value(&with_id);
        assert_eq!(&v[..2], &[0, 4]);
        assert_eq!(&v[10..14], &[0, 0, 0, 7], "leader epoch after the offset");
        assert_eq!(v[14], 2); // compact string: length + 1
        assert_eq!(&v[v.len() - 19..v.len() - 16], &[1, 0, 16]);
        assert_eq!(decode_value(&v), Some(with_id.clone()));
        // A version-4 value without tagged fields (as Kafka writes it).
        let mut kafkas = v[..v.len() - 19].to_vec();
        kafkas.push(0);
        assert_eq!(decode_value(&kafkas).map(|c| c.topic_id), Some(None));
        // Truncated anywhere: no value, no panic.
        for n in 0..v.len() {
            assert_ne!(decode_value(&v[..n]), Some(with_id.clone()));
        }
    }

    /// A deleted topic's commits go with it, and a topic created again
    /// under its name never inherits them, even those the tombstones
    /// missed (a crash, a commit racing the delete): each carries the id
    /// of the topic it was made for.
    #[test]
    fn transactional_commits_count_only_after_their_commit_marker() {
        use ottla_record::batch::marker_batch;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        store.create_topic("t", 1, &[]).expect("create");
        let offsets = store.offsets().expect("offsets");
        let entry = |o: i64| vec![("t".to_string(), 0u32, o, -1, String::new())];
        let at = |o: &OffsetStore| o.committed("g", "t", 0).expect("read").map(|c| c.offset);
        offsets
            .commit_transactional("g", &entry(5), 7, 0, Durability::PageCache)
            .expect("txn commit");
        assert_eq!(at(&offsets), None, "pending until the marker");
        assert!(offsets.pending("g", "t", 0).expect("read"));
        assert!(!offsets.pending("g", "t", 1).expect("read"));
        let marker = |kind| {
            let mut m = marker_batch(7, 0, kind, 0, 1);
            offsets
                .log()
                .append(&mut m, Durability::PageCache)
                .expect("marker");
        };
        marker(ControlType::Commit);
        assert_eq!(at(&offsets), Some(5));
        assert!(!offsets.pending("g", "t", 0).expect("read"));
        offsets
            .commit_transactional("g", &entry(9), 7, 0, Durability::PageCache)
            .expect("txn commit");
        marker(ControlType::Abort);
        assert_eq!(at(&offsets), Some(5), "an aborted commit is dropped");
        // Another reader of the directory replays the same way.
        drop(offsets);
        drop(store);
        let store = Store::open(dir.path()).expect("store");
        assert_eq!(at(&store.offsets().expect("offsets")), Some(5));
    }

    #[test]
    fn a_recreated_topic_does_not_inherit_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let old = store.create_topic("t", 1, &[]).expect("create");
        let offsets = store.offsets().expect("offsets");
        let commit = |o: i64| {
            offsets
                .commit(
                    "g",
                    &[("t".into(), 0, o, String::new())],
                    Durability::PageCache,
                )
                .expect("commit")
        };
        commit(5);
        assert_eq!(
            offsets
                .committed("g", "t", 0)
                .expect("read")
                .map(|c| c.offset),
            Some(5)
        );
        store.delete_topic("t").expect("delete");
        assert_eq!(offsets.committed("g", "t", 0).expect("read"), None);
        assert!(offsets.group_offsets("g").expect("read").is_empty());
        // A commit stamped with the old id after the tombstones (as one
        // racing the delete, or left by a crash before them) stays hidden.
        let mut ids = HashMap::new();
        ids.insert("t".to_string(), old.id);
        let new = store.create_topic("t", 1, &[]).expect("create again");
        offsets
            .commit_with_ids(
                "g",
                &[("t".into(), 0, 9, String::new())],
                &ids,
                Durability::PageCache,
            )
            .expect("late commit");
        assert_eq!(offsets.committed("g", "t", 0).expect("read"), None);
        assert!(offsets.group_offsets("g").expect("read").is_empty());
        commit(1);
        let c = offsets
            .committed("g", "t", 0)
            .expect("read")
            .expect("committed");
        assert_eq!((c.offset, c.topic_id), (1, Some(new.id)));
        // Commits of earlier versions carry no id and still count.
        offsets
            .commit(
                "g",
                &[("gone".into(), 0, 3, String::new())],
                Durability::PageCache,
            )
            .expect("commit");
        assert_eq!(
            offsets
                .committed("g", "gone", 0)
                .expect("read")
                .map(|c| c.offset),
            Some(3)
        );
    }

    /// Values written before the leader epoch was kept (version 3 with
    /// -1, as every ottla release wrote them) and Kafka's version 1 (no
    /// epoch field) decode with epoch -1.
    #[test]
    fn values_without_a_leader_epoch_decode_with_minus_one() {
        // version 3: offset 9, epoch -1, metadata "x", timestamp 5
        let mut v3 = vec![0, 3];
        v3.extend_from_slice(&9i64.to_be_bytes());
        v3.extend_from_slice(&(-1i32).to_be_bytes());
        v3.extend_from_slice(&[0, 1, b'x']);
        v3.extend_from_slice(&5i64.to_be_bytes());
        // version 1: offset 9, metadata "x", commit timestamp 5, expire timestamp
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&9i64.to_be_bytes());
        v1.extend_from_slice(&[0, 1, b'x']);
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&(-1i64).to_be_bytes());
        for v in [v3, v1] {
            assert_eq!(
                decode_value(&v),
                Some(Committed {
                    offset: 9,
                    leader_epoch: -1,
                    metadata: "x".into(),
                    timestamp: 5,
                    topic_id: None,
                })
            );
        }
    }

    #[test]
    fn a_committed_leader_epoch_is_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let offsets = store.offsets().expect("offsets");
        offsets
            .commit_with_epochs(
                "g",
                &[("t".into(), 0, 5, 1, String::new())],
                Durability::PageCache,
            )
            .expect("commit");
        offsets
            .commit(
                "g",
                &[("t".into(), 1, 6, String::new())],
                Durability::PageCache,
            )
            .expect("commit");
        let c = |p| {
            offsets
                .committed("g", "t", p)
                .expect("read")
                .map(|c| (c.offset, c.leader_epoch))
        };
        assert_eq!(c(0), Some((5, 1)));
        assert_eq!(c(1), Some((6, -1)));
        drop(offsets);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let offsets = store.offsets().expect("offsets");
        let c = offsets
            .committed("g", "t", 0)
            .expect("read")
            .expect("committed");
        assert_eq!((c.offset, c.leader_epoch), (5, 1));
    }

    /// Kafka refuses metadata over `offset.metadata.max.bytes`; cutting it
    /// inside a character would leave a commit that does not decode.
    #[test]
    fn metadata_longer_than_kafkas_limit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let offsets = store.offsets().expect("offsets");
        let long = "é".repeat(20_000);
        let r = offsets.commit("g", &[("t".into(), 0, 1, long)], Durability::PageCache);
        assert!(
            matches!(r, Err(Error::OffsetMetadataTooLarge { .. })),
            "{r:?}"
        );
        let most = "m".repeat(MAX_METADATA_BYTES);
        offsets
            .commit(
                "g",
                &[("t".into(), 0, 2, most.clone())],
                Durability::PageCache,
            )
            .expect("4096 bytes is allowed");
        let c = offsets
            .committed("g", "t", 0)
            .expect("read")
            .expect("committed");
        assert_eq!((c.offset, c.metadata), (2, most));
    }
}
