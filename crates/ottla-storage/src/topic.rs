//! Topic names and the per-topic metadata file.
//!
//! A topic's partition count and config overrides live in
//! `<dir>/.ottla/topics/<name>` as `key=value` lines. Names follow Kafka's
//! rule (`[a-zA-Z0-9._-]`, 1 to 249 characters, not `.` or `..`), which also
//! guarantees that no name can reach outside the data directory: there is no
//! `/`, and the partition directory `<name>-<n>` is never `.` or `..`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::TopicConfig;
use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 249;

/// Most partitions a topic may have. Each is a directory with its own files
/// and maps, and code sizes per-partition lists from this count, so a count
/// read from a damaged metadata file must not be able to exceed it.
pub const MAX_PARTITIONS: u32 = 1 << 16;

pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidTopic {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    if name.starts_with(crate::fsutil::TMP_PREFIX) {
        // The engine's temporary files in the topics directory (a topic's
        // metadata being replaced): never a topic, removed at start.
        return bad("names starting with '.tmp-' are reserved");
    }
    Ok(())
}

/// One partition of one topic, named: the key partition logs are cached
/// under, and what records and assignments are reported with. The name is
/// shared, so a clone costs a reference count, not a copy of the name.
/// Ordered by topic name, then partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: u32,
}

impl TopicPartition {
    #[inline]
    pub fn new(topic: Arc<str>, partition: u32) -> TopicPartition {
        TopicPartition { topic, partition }
    }
}

/// `<topic>-<partition>`, as Kafka prints it (and as the partition's
/// directory is named).
impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Kafka's internal topics (`Topic.INTERNAL_TOPICS`): the group offsets
/// ottla keeps in `__consumer_offsets`, and the name Kafka reserves for
/// transaction state. Other names starting with `__` are ordinary topics,
/// as in Kafka (which only warns about them).
pub const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Internal topics are hidden from listings, and users can neither create,
/// delete, nor write to them (Kafka answers `INVALID_TOPIC_EXCEPTION` for
/// writes and record deletion on them).
pub fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// Refuse a user's request to create an internal topic: ottla creates
/// `__consumer_offsets` itself, with the config its records need, and a
/// topic users could create but never delete would break "what can be
/// created can be deleted".
pub fn check_user_creatable(name: &str) -> Result<()> {
    if is_internal(name) {
        return Err(Error::InvalidTopic {
            name: name.to_string(),
            reason: "internal topics are created by ottla itself",
        });
    }
    Ok(())
}

/// Refuse deleting an internal topic: `__consumer_offsets` holds every
/// group's committed positions.
pub fn check_deletable(name: &str) -> Result<()> {
    if is_internal(name) {
        return Err(Error::InvalidTopic {
            name: name.to_string(),
            reason: "internal topics cannot be deleted",
        });
    }
    Ok(())
}

/// Refuse a config under which an internal topic would lose records it
/// needs: `__consumer_offsets` must stay compacted (the latest commit of
/// every key kept), never deleted by age or size. Enforced where topic
/// configs are written (create and alter), so every door gets the same
/// answer (`INVALID_CONFIG` over the wire).
pub fn check_config(name: &str, cfg: &TopicConfig) -> Result<()> {
    if !is_internal(name) {
        return Ok(());
    }
    if cfg.cleanup_policy != crate::config::CleanupPolicy::Compact {
        return Err(Error::InvalidConfig(format!(
            "internal topic {name} must keep cleanup.policy=compact: \
             deleting by retention would drop committed offsets"
        )));
    }
    for key in ["retention.ms", "retention.bytes"] {
        if let Some(v) = cfg.overrides.get(key).filter(|v| v.trim() != "-1") {
            return Err(Error::InvalidConfig(format!(
                "internal topic {name} keeps its records: {key}={v} is refused (only -1)"
            )));
        }
    }
    Ok(())
}

/// A topic's identity, Kafka's topic id (`org.apache.kafka.common.Uuid`):
/// 16 random bytes made when the topic is created and kept in its metadata
/// file, so a topic deleted and created again under the same name is a
/// different topic to every reader (its committed offsets, its readers'
/// positions). Printed as Kafka prints it: the 16 bytes in URL-safe
/// base64 without padding, 22 characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub [u8; 16]);

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl TopicId {
    /// Kafka's "no id" (`Uuid.ZERO_UUID`).
    pub const ZERO: TopicId = TopicId([0; 16]);

    /// A new random id from the kernel's generator (`getrandom(2)`), drawn
    /// again, as Kafka's `Uuid.randomUuid` does, if it is one of the
    /// reserved ids (all zero, or 0...01, Kafka's metadata topic) or its
    /// text starts with `-` (it would read as a command-line option).
    pub fn random() -> Result<TopicId> {
        loop {
            let mut b = [0u8; 16];
            fill_random(&mut b)?;
            // Version 4, variant 1: the bits a random (v4) UUID carries.
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let id = TopicId(b);
            let mut one = [0u8; 16];
            one[15] = 1;
            if id != TopicId::ZERO && id.0 != one && !id.to_string().starts_with('-') {
                return Ok(id);
            }
        }
    }

    /// Parse the 22-character text form.
    pub fn parse(text: &str) -> Option<TopicId> {
        let t = text.as_bytes();
        if t.len() != 22 {
            return None;
        }
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut out = [0u8; 16];
        let mut n = 0;
        for &c in t {
            let v = B64URL.iter().position(|&b| b == c)? as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                *out.get_mut(n)? = (bits >> nbits) as u8;
                n += 1;
                bits &= (1 << nbits) - 1;
            }
        }
        // 22 characters carry 132 bits: the last 4 must be zero, or two
        // texts would name one id.
        (n == 16 && bits == 0).then_some(TopicId(out))
    }
}

/// Fill `buf` from `getrandom(2)` (the call the `getrandom` crate makes on
/// Linux; `libc` is already a dependency, the crate would raise the minimum
/// Rust version).
fn fill_random(buf: &mut [u8]) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`, which we
        // borrow mutably for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io(
                "getrandom",
                std::path::Path::new("/dev/urandom"),
                e,
            ));
        }
        done += n as usize;
    }
    Ok(())
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::with_capacity(22);
        let mut bits: u32 = 0;
        let mut nbits = 0;
        for &b in &self.0 {
            bits = (bits << 8) | u32::from(b);
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                s.push(B64URL[((bits >> nbits) & 63) as usize] as char);
            }
            bits &= (1 << nbits) - 1;
        }
        // 128 bits = 21 characters and 2 bits left, padded with zeros.
        s.push(B64URL[((bits << (6 - nbits)) & 63) as usize] as char);
        f.write_str(&s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    /// `None` only in a file written before topics had ids: the store
    /// gives it one, once, under the metadata lock (`Store::topic`).
    pub id: Option<TopicId>,
    pub partitions: u32,
    pub overrides: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn config(&self) -> Result<TopicConfig> {
        TopicConfig::from_stored(self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("# ottla topic metadata\n");
        if let Some(id) = self.id {
            s.push_str(&format!("id={id}\n"));
        }
        s.push_str(&format!("partitions={}\n", self.partitions));
        for (k, v) in &self.overrides {
            s.push_str(&format!("config.{k}={v}\n"));
        }
        s
    }

    pub fn decode(text: &str) -> Result<TopicMeta> {
        let mut partitions = None;
        let mut id = None;
        let mut overrides = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::InvalidConfig(format!("bad topic metadata line {line:?}")))?;
            if k == "partitions" {
                partitions = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_PARTITIONS).contains(n));
            } else if k == "id" {
                id = Some(
                    TopicId::parse(v)
                        .filter(|id| *id != TopicId::ZERO)
                        .ok_or_else(|| {
                            Error::InvalidConfig(format!("bad topic id {v:?} in topic metadata"))
                        })?,
                );
            } else if let Some(key) = k.strip_prefix("config.") {
                overrides.insert(key.to_string(), v.to_string());
            }
        }
        Ok(TopicMeta {
            id,
            partitions: partitions.ok_or_else(|| {
                Error::InvalidConfig("topic metadata has no valid partition count".into())
            })?,
            overrides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        for ok in [
            "a",
            "orders",
            "my.topic_v2-x",
            &"x".repeat(249),
            "__consumer_offsets",
        ] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../etc",
            "a b",
            "é",
            &"x".repeat(250),
            "a\0b",
            // The engine's temporary files beside the topics' metadata
            // (listed by a reader in the moment before their rename).
            ".tmp-1234-0",
            ".tmp-",
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(".tmpx").is_ok());
    }

    #[test]
    fn meta_round_trips() {
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        let m = TopicMeta {
            id: Some(TopicId::random().expect("random")),
            partitions: 3,
            overrides,
        };
        assert_eq!(TopicMeta::decode(&m.encode()).expect("decode"), m);
        assert!(TopicMeta::decode("partitions=0\n").is_err());
        // A damaged count cannot ask for billions of partitions.
        assert!(TopicMeta::decode("partitions=4000000000\n").is_err());
        assert!(TopicMeta::decode("partitions=65537\n").is_err());
        assert!(TopicMeta::decode("partitions=65536\n").is_ok());
        assert!(TopicMeta::decode("garbage").is_err());
    }

    /// Kafka's text form of a Uuid: URL-safe base64 of the 16 bytes,
    /// without padding.
    #[test]
    fn topic_ids_print_as_kafka_prints_them() {
        assert_eq!(TopicId::ZERO.to_string(), "AAAAAAAAAAAAAAAAAAAAAA");
        let mut one = [0u8; 16];
        one[15] = 1;
        // Kafka's `Uuid.METADATA_TOPIC_ID` (0, 1).
        assert_eq!(TopicId(one).to_string(), "AAAAAAAAAAAAAAAAAAAAAQ");
        let ff = TopicId([0xff; 16]);
        assert_eq!(ff.to_string(), "_____________________w");
        for _ in 0..200 {
            let id = TopicId::random().expect("random");
            let text = id.to_string();
            assert_eq!(text.len(), 22);
            assert!(!text.starts_with('-'), "{text}");
            assert_eq!(TopicId::parse(&text), Some(id));
            assert_ne!(id, TopicId::ZERO);
        }
        assert_ne!(
            TopicId::random().expect("random"),
            TopicId::random().expect("random")
        );
        for bad in [
            "",
            "AAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAA+A",
            "AAAAAAAAAAAAAAAAAAAAAR",
        ] {
            assert_eq!(TopicId::parse(bad), None, "{bad}");
        }
    }

    /// A metadata file of an earlier version has no id line: it decodes,
    /// with no id, and encodes back without one; a damaged id is an error.
    #[test]
    fn meta_without_an_id_still_decodes() {
        let old = "# ottla topic metadata\npartitions=2\nconfig.retention.ms=5\n";
        let m = TopicMeta::decode(old).expect("decode");
        assert_eq!(m.id, None);
        assert_eq!(m.partitions, 2);
        assert_eq!(m.encode(), old);
        let id = TopicId::random().expect("random");
        let with = format!("partitions=2\nid={id}\n");
        assert_eq!(TopicMeta::decode(&with).expect("decode").id, Some(id));
        assert!(TopicMeta::decode("partitions=2\nid=nope\n").is_err());
        assert!(TopicMeta::decode("partitions=2\nid=AAAAAAAAAAAAAAAAAAAAAA\n").is_err());
    }

    /// Every topic has an id: made at create, the same after the store is
    /// reopened, another after a delete and create; a topic an earlier
    /// version wrote (no id) gets one on first read, written down so it
    /// stays.
    #[test]
    fn topic_ids_are_stable_and_new_on_recreate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta_file = dir.path().join(".ottla/topics/t");
        let first = {
            let store = crate::store::Store::open(dir.path()).expect("store");
            let t = store.create_topic("t", 2, &[]).expect("create");
            assert_ne!(t.id, TopicId::ZERO);
            let text = std::fs::read_to_string(&meta_file).expect("read");
            assert!(text.contains(&format!("id={}", t.id)), "{text}");
            t.id
        };
        let store = crate::store::Store::open(dir.path()).expect("reopen");
        assert_eq!(store.require_topic("t").expect("t").id, first);
        store.delete_topic("t").expect("delete");
        let again = store.create_topic("t", 2, &[]).expect("create again");
        assert_ne!(again.id, first);
        // Grown and reconfigured, it keeps its id.
        store.create_partitions("t", 3).expect("grow");
        store
            .alter_topic_config("t", &[("retention.ms".into(), Some("1000".into()))])
            .expect("alter");
        assert_eq!(store.require_topic("t").expect("t").id, again.id);
        drop(store);

        // An earlier version's file, without an id.
        let old_dir = tempfile::tempdir().expect("tempdir");
        let ids: Vec<TopicId> = (0..3)
            .map(|_| {
                let store = crate::store::Store::open(old_dir.path()).expect("store");
                let path = old_dir.path().join(".ottla/topics/legacy");
                if !path.exists() {
                    std::fs::write(&path, "partitions=1\n").expect("write");
                }
                store.require_topic("legacy").expect("legacy").id
            })
            .collect();
        assert_ne!(ids[0], TopicId::ZERO);
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let text =
            std::fs::read_to_string(old_dir.path().join(".ottla/topics/legacy")).expect("read");
        assert!(text.contains(&format!("id={}", ids[0])), "{text}");
    }

    /// Only Kafka's internal topic names are internal: `__evil` is an
    /// ordinary topic, listed, and deletable like any topic that can be
    /// created.
    #[test]
    fn only_kafkas_internal_names_are_internal() {
        assert!(is_internal("__consumer_offsets"));
        assert!(is_internal("__transaction_state"));
        assert!(!is_internal("__evil"));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("store");
        store.create_topic("__evil", 1, &[]).expect("create");
        assert_eq!(store.list_topics(false).expect("list"), vec!["__evil"]);
        store.delete_topic("__evil").expect("delete");
        assert!(store.list_topics(true).expect("list").is_empty());
        assert!(check_user_creatable("__transaction_state").is_err());
        // Nor does a producer or consumer make one on first use.
        assert!(matches!(
            store.topic_or_create("__transaction_state", true, 1),
            Err(Error::UnknownTopicOrPartition { .. })
        ));
        assert!(store.list_topics(true).expect("list").is_empty());
        assert!(check_user_creatable("__evil").is_ok());
    }

    /// `__consumer_offsets` holds every group's commits: it cannot be
    /// deleted, nor configured to delete records by age or size.
    #[test]
    fn the_offsets_topic_keeps_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(dir.path()).expect("store");
        let offsets = store.offsets().expect("offsets");
        offsets
            .commit(
                "g",
                &[("t".into(), 0, 7, String::new())],
                crate::log::Durability::PageCache,
            )
            .expect("commit");
        let name = crate::offsets::OFFSETS_TOPIC;
        assert!(matches!(
            store.delete_topic(name),
            Err(Error::InvalidTopic { .. })
        ));
        for (k, v) in [
            ("cleanup.policy", "delete"),
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "1"),
            ("retention.bytes", "0"),
        ] {
            let r = store.alter_topic_config(name, &[(k.into(), Some(v.into()))]);
            assert!(matches!(r, Err(Error::InvalidConfig(_))), "{k}={v}: {r:?}");
        }
        // Removing the compact override would fall back to delete.
        let r = store.alter_topic_config(name, &[("cleanup.policy".into(), None)]);
        assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
        store
            .alter_topic_config(name, &[("retention.ms".into(), Some("-1".into()))])
            .expect("-1 keeps everything");
        let topic = store.require_topic(name).expect("still there");
        assert_eq!(
            topic.config.cleanup_policy,
            crate::config::CleanupPolicy::Compact
        );
        assert_eq!(
            offsets
                .committed("g", "t", 0)
                .expect("read")
                .map(|c| c.offset),
            Some(7)
        );
        // Nor may it be made with such a config.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let store2 = crate::store::Store::open(dir2.path()).expect("store");
        assert!(matches!(
            store2.create_topic(name, 1, &[]),
            Err(Error::InvalidConfig(_))
        ));
    }
}
