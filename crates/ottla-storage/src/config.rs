//! Topic configuration, by Kafka's names (`retention.ms`, `segment.bytes`, ...).
//!
//! A topic stores only the settings given for it (its overrides); everything
//! else takes Kafka's defaults. Callers may spell keys with underscores
//! (`retention_ms`), as Python keyword arguments must.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    /// Delete closed segments whose newest record is older than this; -1 keeps forever.
    pub retention_ms: i64,
    /// Delete oldest segments while the partition is larger than this; -1 is unlimited.
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub segment_index_bytes: u64,
    pub index_interval_bytes: u64,
    pub max_message_bytes: usize,
    pub cleanup_policy: CleanupPolicy,
    /// The log cleaner compacts a partition when its dirty bytes exceed this
    /// share of its cleanable bytes (0..=1).
    pub min_cleanable_dirty_ratio: f64,
    /// How long a tombstone stays readable after its first cleaning.
    pub delete_retention_ms: i64,
    /// Records younger than this are never compacted.
    pub min_compaction_lag_ms: i64,
    /// The overrides as given, normalised, for describe and persistence.
    pub overrides: BTreeMap<String, String>,
}

pub const KNOWN_KEYS: &[&str] = &[
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "segment.index.bytes",
    "index.interval.bytes",
    "max.message.bytes",
    "cleanup.policy",
    "min.cleanable.dirty.ratio",
    "delete.retention.ms",
    "min.compaction.lag.ms",
];

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            cleanup_policy: CleanupPolicy::Delete,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            overrides: BTreeMap::new(),
        }
    }
}

/// `retention_ms` -> `retention.ms`.
pub fn normalize_key(key: &str) -> String {
    key.trim().replace('_', ".")
}

fn parse_i64(key: &str, v: &str, min: i64) -> Result<i64> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| Error::InvalidConfig(format!("{key}={v:?} is not an integer")))?;
    if n < min {
        return Err(Error::InvalidConfig(format!(
            "{key}={n} is below the minimum {min}"
        )));
    }
    Ok(n)
}

impl TopicConfig {
    /// Defaults with `overrides` applied; unknown keys and bad values are errors.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig> {
        let mut c = TopicConfig::default();
        for (k, v) in overrides {
            c.set(&normalize_key(k), v)?;
        }
        Ok(c)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = normalize_key(key);
        match key.as_str() {
            "retention.ms" => self.retention_ms = parse_i64(&key, value, -1)?,
            "retention.bytes" => self.retention_bytes = parse_i64(&key, value, -1)?,
            "segment.bytes" => self.segment_bytes = parse_i64(&key, value, 128)? as u64,
            "segment.ms" => self.segment_ms = parse_i64(&key, value, 1)?,
            "segment.index.bytes" => self.segment_index_bytes = parse_i64(&key, value, 64)? as u64,
            "index.interval.bytes" => self.index_interval_bytes = parse_i64(&key, value, 0)? as u64,
            "max.message.bytes" => self.max_message_bytes = parse_i64(&key, value, 0)? as usize,
            "min.cleanable.dirty.ratio" => {
                let r: f64 = value.trim().parse().map_err(|_| {
                    Error::InvalidConfig(format!("{key}={value:?} is not a number"))
                })?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(Error::InvalidConfig(format!(
                        "{key}={r} must be between 0 and 1"
                    )));
                }
                self.min_cleanable_dirty_ratio = r;
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_i64(&key, value, 0)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_i64(&key, value, 0)?,
            "cleanup.policy" => {
                let mut parts: Vec<_> = value
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect();
                parts.sort();
                self.cleanup_policy = match parts.iter().map(String::as_str).collect::<Vec<_>>()[..]
                {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => {
                        return Err(Error::InvalidConfig(format!(
                            "cleanup.policy={value:?}: expected delete, compact or compact,delete"
                        )))
                    }
                };
            }
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown topic config {key:?}; known: {}",
                    KNOWN_KEYS.join(", ")
                )))
            }
        }
        self.overrides.insert(key, value.trim().to_string());
        Ok(())
    }

    /// Every setting with its effective value, by Kafka name.
    pub fn effective(&self) -> BTreeMap<String, String> {
        let policy = match self.cleanup_policy {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        };
        [
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("segment.index.bytes", self.segment_index_bytes.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            ("cleanup.policy", policy.to_string()),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.to_string(),
            ),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            (
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn deletes_by_retention(&self) -> bool {
        self.cleanup_policy != CleanupPolicy::Compact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_validate() {
        let c = TopicConfig::from_overrides([("retention_ms", "1000"), ("segment.bytes", "4096")])
            .expect("valid");
        assert_eq!(c.retention_ms, 1000);
        assert_eq!(c.segment_bytes, 4096);
        assert_eq!(
            c.overrides.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert!(TopicConfig::from_overrides([("retention.ms", "soon")]).is_err());
        assert!(TopicConfig::from_overrides([("no.such", "1")]).is_err());
        assert!(TopicConfig::from_overrides([("segment.bytes", "1")]).is_err());
        let c = TopicConfig::from_overrides([("cleanup.policy", "delete,compact")]).expect("valid");
        assert_eq!(c.cleanup_policy, CleanupPolicy::CompactDelete);
    }

    #[test]
    fn cleaner_settings_have_kafka_defaults_and_validate() {
        let c = TopicConfig::default();
        assert_eq!(c.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(c.delete_retention_ms, 86_400_000);
        assert_eq!(c.min_compaction_lag_ms, 0);
        let c = TopicConfig::from_overrides([
            ("min_cleanable_dirty_ratio", "0.1"),
            ("delete.retention.ms", "0"),
            ("min.compaction.lag.ms", "5000"),
        ])
        .expect("valid");
        assert_eq!(c.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(c.delete_retention_ms, 0);
        assert_eq!(c.min_compaction_lag_ms, 5000);
        assert_eq!(c.effective()["min.cleanable.dirty.ratio"], "0.1");
        for (k, v) in [
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "half"),
            ("delete.retention.ms", "-1"),
            ("min.compaction.lag.ms", "-5"),
        ] {
            assert!(TopicConfig::from_overrides([(k, v)]).is_err(), "{k}={v}");
        }
    }
}
