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

/// Internal topics (`__consumer_offsets`) are hidden from listings.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub partitions: u32,
    pub overrides: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn config(&self) -> Result<TopicConfig> {
        TopicConfig::from_overrides(self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub fn encode(&self) -> String {
        let mut s = String::from("# ottla topic metadata\n");
        s.push_str(&format!("partitions={}\n", self.partitions));
        for (k, v) in &self.overrides {
            s.push_str(&format!("config.{k}={v}\n"));
        }
        s
    }

    pub fn decode(text: &str) -> Result<TopicMeta> {
        let mut partitions = None;
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
            } else if let Some(key) = k.strip_prefix("config.") {
                overrides.insert(key.to_string(), v.to_string());
            }
        }
        Ok(TopicMeta {
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
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meta_round_trips() {
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        let m = TopicMeta {
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
}
