//! Topic configuration, by Kafka's names (`retention.ms`, `segment.bytes`, ...).
//!
//! Every topic config Kafka 4.x defines is known here ([`TOPIC_CONFIGS`]):
//! its type, default, valid values and broker-level synonym. A topic stores
//! only the settings given for it (its overrides); everything else takes
//! Kafka's defaults. Values are checked as Kafka's `ConfigDef` checks them
//! (types, ranges, enumerations), and a name Kafka does not define is
//! refused with Kafka's message (`Unknown topic config name: x`).
//!
//! Names are exact, as on the wire ([`TopicConfig::from_overrides`]); the
//! embedded door also takes underscores (`retention_ms`, as Python keyword
//! arguments must be spelled), through [`normalize_key`].
//!
//! Some settings change what ottla does (see the `honoured` column of
//! docs/configuration.md); the rest are stored and reported, as a
//! single-broker Kafka without tiered storage would mostly ignore them too.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

/// `compression.type`: what the broker stores batches as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicCompression {
    /// Keep the codec the producer used (Kafka's default).
    Producer,
    Uncompressed,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl TopicCompression {
    /// The record-batch codec id to store batches with; `None` for `producer`.
    pub fn codec(self) -> Option<u8> {
        match self {
            TopicCompression::Producer => None,
            TopicCompression::Uncompressed => Some(0),
            TopicCompression::Gzip => Some(1),
            TopicCompression::Snappy => Some(2),
            TopicCompression::Lz4 => Some(3),
            TopicCompression::Zstd => Some(4),
        }
    }
}

/// Kafka's `ConfigDef.Type` for a config (DescribeConfigs reports it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

/// What values a config takes, beyond its type.
#[derive(Clone, Copy, Debug)]
enum Check {
    Any,
    AtLeast(i64),
    Between(i64, i64),
    /// One of these strings (case-sensitive, as Kafka's `ValidString.in`).
    OneOf(&'static [&'static str]),
    /// A non-empty list of these strings (Kafka's `ValidList.in`).
    ListOf(&'static [&'static str]),
    /// Kafka's `ThrottledReplicaListValidator`: empty, `*`, or
    /// `partition:broker` pairs.
    Throttled,
    /// gzip's level: -1 (the codec's default) or 1..=9.
    GzipLevel,
    /// `remote.storage.enable`: true needs tiered storage, which ottla lacks.
    NoRemoteStorage,
}

/// One topic config as Kafka defines it.
#[derive(Clone, Copy, Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// The default value, as DescribeConfigs reports it.
    pub default: &'static str,
    /// The broker config that sets the default (Kafka's
    /// `ServerTopicConfigSynonyms`), with its default value.
    pub synonym: Option<(&'static str, &'static str)>,
    /// Whether ottla acts on the setting (otherwise it is stored and reported).
    pub honoured: bool,
    check: Check,
}

const MAX: &str = "9223372036854775807";
const CODECS: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: &'static str,
    synonym: Option<(&'static str, &'static str)>,
    honoured: bool,
    check: Check,
) -> ConfigDef {
    ConfigDef {
        name,
        ty,
        default,
        synonym,
        honoured,
        check,
    }
}

use Check::*;
const BOOLEAN: ConfigType = ConfigType::Boolean;
const STRING: ConfigType = ConfigType::String;
const INT: ConfigType = ConfigType::Int;
const LONG: ConfigType = ConfigType::Long;
const DOUBLE: ConfigType = ConfigType::Double;
const LIST: ConfigType = ConfigType::List;

/// Every topic config of Kafka 4.x (`TopicConfig`, `LogConfig`), by name.
#[rustfmt::skip]
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    def("cleanup.policy", LIST, "delete", Some(("log.cleanup.policy", "delete")), true, ListOf(&["compact", "delete"])),
    def("compression.gzip.level", INT, "-1", Some(("compression.gzip.level", "-1")), true, GzipLevel),
    def("compression.lz4.level", INT, "9", Some(("compression.lz4.level", "9")), false, Between(1, 17)),
    def("compression.type", STRING, "producer", Some(("compression.type", "producer")), true, OneOf(CODECS)),
    def("compression.zstd.level", INT, "3", Some(("compression.zstd.level", "3")), true, Between(-131072, 22)),
    def("delete.retention.ms", LONG, "86400000", Some(("log.cleaner.delete.retention.ms", "86400000")), true, AtLeast(0)),
    def("file.delete.delay.ms", LONG, "60000", Some(("log.segment.delete.delay.ms", "60000")), false, AtLeast(0)),
    def("flush.messages", LONG, MAX, Some(("log.flush.interval.messages", MAX)), false, AtLeast(1)),
    def("flush.ms", LONG, MAX, Some(("log.flush.interval.ms", MAX)), false, AtLeast(0)),
    def("follower.replication.throttled.replicas", LIST, "", None, false, Throttled),
    def("index.interval.bytes", INT, "4096", Some(("log.index.interval.bytes", "4096")), true, AtLeast(0)),
    def("leader.replication.throttled.replicas", LIST, "", None, false, Throttled),
    def("local.retention.bytes", LONG, "-2", Some(("log.local.retention.bytes", "-2")), false, AtLeast(-2)),
    def("local.retention.ms", LONG, "-2", Some(("log.local.retention.ms", "-2")), false, AtLeast(-2)),
    def("max.compaction.lag.ms", LONG, MAX, Some(("log.cleaner.max.compaction.lag.ms", MAX)), true, AtLeast(1)),
    def("max.message.bytes", INT, "1048588", Some(("message.max.bytes", "1048588")), true, AtLeast(0)),
    def("message.timestamp.after.max.ms", LONG, "3600000", Some(("log.message.timestamp.after.max.ms", "3600000")), true, AtLeast(0)),
    def("message.timestamp.before.max.ms", LONG, MAX, Some(("log.message.timestamp.before.max.ms", MAX)), true, AtLeast(0)),
    def("message.timestamp.type", STRING, "CreateTime", Some(("log.message.timestamp.type", "CreateTime")), true, OneOf(&["CreateTime", "LogAppendTime"])),
    def("min.cleanable.dirty.ratio", DOUBLE, "0.5", Some(("log.cleaner.min.cleanable.ratio", "0.5")), true, Any),
    def("min.compaction.lag.ms", LONG, "0", Some(("log.cleaner.min.compaction.lag.ms", "0")), true, AtLeast(0)),
    def("min.insync.replicas", INT, "1", Some(("min.insync.replicas", "1")), true, AtLeast(1)),
    def("preallocate", BOOLEAN, "false", Some(("log.preallocate", "false")), false, Any),
    def("remote.log.copy.disable", BOOLEAN, "false", None, false, Any),
    def("remote.log.delete.on.disable", BOOLEAN, "false", None, false, Any),
    def("remote.storage.enable", BOOLEAN, "false", None, false, NoRemoteStorage),
    def("retention.bytes", LONG, "-1", Some(("log.retention.bytes", "-1")), true, Any),
    def("retention.ms", LONG, "604800000", Some(("log.retention.hours", "168")), true, AtLeast(-1)),
    def("segment.bytes", INT, "1073741824", Some(("log.segment.bytes", "1073741824")), true, AtLeast(SEGMENT_BYTES_MIN)),
    def("segment.index.bytes", INT, "10485760", Some(("log.index.size.max.bytes", "10485760")), true, AtLeast(64)),
    def("segment.jitter.ms", LONG, "0", Some(("log.roll.jitter.hours", "0")), false, AtLeast(0)),
    def("segment.ms", LONG, "604800000", Some(("log.roll.hours", "168")), true, AtLeast(1)),
    def("unclean.leader.election.enable", BOOLEAN, "false", Some(("unclean.leader.election.enable", "false")), false, Any),
];

/// ottla's floor for `segment.bytes` (Kafka 4.x's is 1 MiB; ottla keeps
/// small segments possible for tests and tiny topics).
pub const SEGMENT_BYTES_MIN: i64 = 128;

/// The definition of the topic config named exactly `name`.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Kafka's refusal of a name it does not define.
pub fn unknown_name(name: &str) -> Error {
    Error::InvalidConfig(format!("Unknown topic config name: {name}"))
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
    /// A segment whose oldest uncompacted record is older than this is
    /// compacted whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// What batches are stored as (`compression.type`).
    pub compression: TopicCompression,
    /// `compression.gzip.level` (-1: the codec's default).
    pub gzip_level: i32,
    /// `compression.zstd.level`.
    pub zstd_level: i32,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches.
    pub log_append_time: bool,
    /// CreateTime records older than now minus this are refused.
    pub timestamp_before_max_ms: i64,
    /// CreateTime records newer than now plus this are refused.
    pub timestamp_after_max_ms: i64,
    /// `acks=all` needs this many in-sync replicas (ottla has one).
    pub min_insync_replicas: i32,
    /// The overrides as given, normalised, for describe and persistence.
    pub overrides: BTreeMap<String, String>,
}

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
            max_compaction_lag_ms: i64::MAX,
            compression: TopicCompression::Producer,
            gzip_level: -1,
            zstd_level: 3,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: 3_600_000,
            min_insync_replicas: 1,
            overrides: BTreeMap::new(),
        }
    }
}

/// `retention_ms` -> `retention.ms`: the embedded door's spelling of a
/// name (Python keywords cannot hold dots). Never used on the wire, where
/// names are exact.
pub fn normalize_key(key: &str) -> String {
    key.trim().replace('_', ".")
}

/// Kafka's `ConfigException` text: `Invalid value v for configuration k: why`.
fn invalid(key: &str, value: &str, why: &str) -> Error {
    Error::InvalidConfig(format!(
        "Invalid value {value} for configuration {key}: {why}"
    ))
}

/// A value of `def`'s type and range, normalised as it is stored (trimmed;
/// booleans lowercase; lists without blanks around items).
pub fn check_value(def: &ConfigDef, value: &str) -> Result<String> {
    let v = value.trim();
    let type_name = match def.ty {
        ConfigType::Int => "INT",
        _ => "LONG",
    };
    let stored = match def.ty {
        ConfigType::Boolean => {
            if v.eq_ignore_ascii_case("true") {
                "true".to_string()
            } else if v.eq_ignore_ascii_case("false") {
                "false".to_string()
            } else {
                return Err(invalid(
                    def.name,
                    v,
                    "Expected value to be either true or false",
                ));
            }
        }
        ConfigType::Int | ConfigType::Long => {
            let n: i64 = v
                .parse()
                .map_err(|_| invalid(def.name, v, &format!("Not a number of type {type_name}")))?;
            if def.ty == ConfigType::Int && i32::try_from(n).is_err() {
                return Err(invalid(def.name, v, "Not a number of type INT"));
            }
            n.to_string()
        }
        ConfigType::Double => {
            let r: f64 = v
                .parse()
                .map_err(|_| invalid(def.name, v, "Not a number of type DOUBLE"))?;
            if r.is_nan() || r < 0.0 {
                return Err(invalid(def.name, v, "Value must be at least 0"));
            }
            if r > 1.0 {
                return Err(invalid(def.name, v, "Value must be no more than 1"));
            }
            v.to_string()
        }
        ConfigType::String => v.to_string(),
        ConfigType::List => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(","),
    };
    match def.check {
        Check::Any => {}
        Check::AtLeast(min) => {
            if stored.parse::<i64>().map_or(true, |n| n < min) {
                return Err(invalid(
                    def.name,
                    v,
                    &format!("Value must be at least {min}"),
                ));
            }
        }
        Check::Between(lo, hi) => {
            let n = stored.parse::<i64>().unwrap_or(i64::MIN);
            if n < lo {
                return Err(invalid(
                    def.name,
                    v,
                    &format!("Value must be at least {lo}"),
                ));
            }
            if n > hi {
                return Err(invalid(
                    def.name,
                    v,
                    &format!("Value must be no more than {hi}"),
                ));
            }
        }
        Check::GzipLevel => {
            let n = stored.parse::<i64>().unwrap_or(0);
            if n != -1 && !(1..=9).contains(&n) {
                return Err(invalid(
                    def.name,
                    v,
                    "Value must be between 1 and 9, or -1 (the default level)",
                ));
            }
        }
        Check::OneOf(allowed) => {
            if !allowed.contains(&stored.as_str()) {
                return Err(invalid(
                    def.name,
                    v,
                    &format!("String must be one of: {}", allowed.join(", ")),
                ));
            }
        }
        Check::ListOf(allowed) => {
            let items: Vec<&str> = stored.split(',').filter(|s| !s.is_empty()).collect();
            if items.is_empty() {
                return Err(invalid(
                    def.name,
                    v,
                    &format!("Empty list; expected any of: {}", allowed.join(", ")),
                ));
            }
            // Kafka's `ValidList` checks each item as a `ValidString`.
            if let Some(bad) = items.iter().find(|i| !allowed.contains(i)) {
                return Err(invalid(
                    def.name,
                    bad,
                    &format!("String must be one of: {}", allowed.join(", ")),
                ));
            }
        }
        Check::Throttled => {
            let ok = stored.is_empty()
                || stored == "*"
                || stored.split(',').all(|pair| {
                    pair.split_once(':').is_some_and(|(p, b)| {
                        p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                    })
                });
            if !ok {
                return Err(invalid(
                    def.name,
                    v,
                    &format!(
                        "{} must be the literal '*' or a list of replicas in the following \
                         format: [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                        def.name
                    ),
                ));
            }
        }
        Check::NoRemoteStorage => {
            if stored == "true" {
                return Err(Error::InvalidConfig(
                    "Tiered Storage functionality is disabled in the broker. Topic cannot be \
                     configured with remote log storage."
                        .into(),
                ));
            }
        }
    }
    Ok(stored)
}

fn int(stored: &str) -> i64 {
    // Only called on values `check_value` accepted for an INT or LONG.
    stored.parse().unwrap_or_default()
}

impl TopicConfig {
    /// Defaults with `overrides` applied; names are exact (Kafka's); an
    /// unknown name or a bad value is an error.
    pub fn from_overrides<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig> {
        let mut c = TopicConfig::default();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// The config of a topic's metadata file. As [`TopicConfig::from_overrides`],
    /// except that a `cleanup.policy` written before values were checked
    /// case-sensitively (`Compact`) still reads.
    pub fn from_stored<'a>(
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig> {
        let mut c = TopicConfig::default();
        for (k, v) in overrides {
            if k == "cleanup.policy" {
                c.set(k, &v.to_ascii_lowercase())?;
            } else {
                c.set(k, v)?;
            }
        }
        Ok(c)
    }

    /// Set the config named exactly `key` (surrounding blanks aside).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim();
        let def = config_def(key).ok_or_else(|| unknown_name(key))?;
        let stored = check_value(def, value)?;
        let n = || int(&stored);
        match key {
            "retention.ms" => self.retention_ms = n(),
            "retention.bytes" => self.retention_bytes = n(),
            "segment.bytes" => self.segment_bytes = n() as u64,
            "segment.ms" => self.segment_ms = n(),
            "segment.index.bytes" => self.segment_index_bytes = n() as u64,
            "index.interval.bytes" => self.index_interval_bytes = n() as u64,
            "max.message.bytes" => self.max_message_bytes = n() as usize,
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = stored.parse().unwrap_or(0.5)
            }
            "delete.retention.ms" => self.delete_retention_ms = n(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = n(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms = n(),
            "compression.gzip.level" => self.gzip_level = n() as i32,
            "compression.zstd.level" => self.zstd_level = n() as i32,
            "message.timestamp.before.max.ms" => self.timestamp_before_max_ms = n(),
            "message.timestamp.after.max.ms" => self.timestamp_after_max_ms = n(),
            "min.insync.replicas" => self.min_insync_replicas = n() as i32,
            "message.timestamp.type" => self.log_append_time = stored == "LogAppendTime",
            "compression.type" => {
                self.compression = match stored.as_str() {
                    "uncompressed" => TopicCompression::Uncompressed,
                    "gzip" => TopicCompression::Gzip,
                    "snappy" => TopicCompression::Snappy,
                    "lz4" => TopicCompression::Lz4,
                    "zstd" => TopicCompression::Zstd,
                    _ => TopicCompression::Producer,
                }
            }
            "cleanup.policy" => {
                let compact = stored.split(',').any(|p| p == "compact");
                let delete = stored.split(',').any(|p| p == "delete");
                self.cleanup_policy = match (compact, delete) {
                    (true, true) => CleanupPolicy::CompactDelete,
                    (true, false) => CleanupPolicy::Compact,
                    _ => CleanupPolicy::Delete,
                };
            }
            // Stored and reported only.
            _ => {}
        }
        let stored = if key == "cleanup.policy" {
            policy_name(self.cleanup_policy).to_string()
        } else {
            stored
        };
        self.overrides.insert(key.to_string(), stored);
        Ok(())
    }

    /// Every setting with its effective value, by Kafka name.
    pub fn effective(&self) -> BTreeMap<String, String> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| {
                let v = self
                    .overrides
                    .get(d.name)
                    .cloned()
                    .unwrap_or_else(|| d.default.to_string());
                (d.name.to_string(), v)
            })
            .collect()
    }

    /// How long the active segment may stay open: `segment.ms`, or less on
    /// a compacted topic with `max.compaction.lag.ms` (its records must
    /// reach a closed segment, the cleaner's, in time; Kafka's
    /// `LogConfig.maxSegmentMs`).
    pub fn max_segment_ms(&self) -> i64 {
        if self.cleanup_policy != CleanupPolicy::Delete && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }

    pub fn deletes_by_retention(&self) -> bool {
        self.cleanup_policy != CleanupPolicy::Compact
    }
}

fn policy_name(p: CleanupPolicy) -> &'static str {
    match p {
        CleanupPolicy::Delete => "delete",
        CleanupPolicy::Compact => "compact",
        CleanupPolicy::CompactDelete => "compact,delete",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_validate() {
        let c = TopicConfig::from_overrides([("retention.ms", "1000"), ("segment.bytes", "4096")])
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
            ("min.cleanable.dirty.ratio", "0.1"),
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

    #[test]
    fn every_kafka_topic_config_is_known_with_its_default() {
        let c = TopicConfig::default();
        let eff = c.effective();
        for name in [
            "compression.type",
            "message.timestamp.type",
            "max.compaction.lag.ms",
            "file.delete.delay.ms",
            "flush.messages",
            "preallocate",
            "unclean.leader.election.enable",
            "leader.replication.throttled.replicas",
            "local.retention.ms",
            "remote.log.copy.disable",
            "compression.zstd.level",
        ] {
            assert!(eff.contains_key(name), "{name}");
        }
        assert_eq!(eff["compression.type"], "producer");
        assert_eq!(eff["message.timestamp.type"], "CreateTime");
        assert_eq!(eff["max.compaction.lag.ms"], i64::MAX.to_string());
        assert_eq!(eff.len(), TOPIC_CONFIGS.len());
        // Removed in Kafka 4.0.
        for gone in [
            "message.format.version",
            "message.downconversion.enable",
            "message.timestamp.difference.max.ms",
        ] {
            assert!(config_def(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn honoured_settings_parse_into_fields() {
        let c = TopicConfig::from_overrides([
            ("compression.type", "zstd"),
            ("compression.zstd.level", "7"),
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "2000"),
            ("max.compaction.lag.ms", "60000"),
            ("min.insync.replicas", "2"),
            ("preallocate", " TRUE "),
        ])
        .expect("valid");
        assert_eq!(c.compression, TopicCompression::Zstd);
        assert_eq!(c.compression.codec(), Some(4));
        assert_eq!(c.zstd_level, 7);
        assert!(c.log_append_time);
        assert_eq!(c.timestamp_before_max_ms, 1000);
        assert_eq!(c.timestamp_after_max_ms, 2000);
        assert_eq!(c.max_compaction_lag_ms, 60000);
        assert_eq!(c.min_insync_replicas, 2);
        assert_eq!(c.overrides["preallocate"], "true");
        assert_eq!(
            TopicConfig::from_overrides([("compression.type", "uncompressed")])
                .expect("valid")
                .compression
                .codec(),
            Some(0)
        );
    }

    #[test]
    fn values_are_checked_as_kafka_checks_them() {
        let msg = |k: &str, v: &str| match TopicConfig::from_overrides([(k, v)]) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("{k}={v}: {other:?}"),
        };
        assert_eq!(msg("no.such", "1"), "Unknown topic config name: no.such");
        // Names are exact: the underscore spelling is the embedded door's.
        assert_eq!(
            msg("retention_ms", "1"),
            "Unknown topic config name: retention_ms"
        );
        assert_eq!(
            msg("compression.type", "brotli"),
            "Invalid value brotli for configuration compression.type: String must be one of: \
             uncompressed, zstd, lz4, snappy, gzip, producer"
        );
        assert_eq!(
            msg("cleanup.policy", "compact,forever"),
            "Invalid value forever for configuration cleanup.policy: String must be one of: \
             compact, delete"
        );
        assert_eq!(
            msg("min.cleanable.dirty.ratio", "1.5"),
            "Invalid value 1.5 for configuration min.cleanable.dirty.ratio: Value must be no \
             more than 1"
        );
        assert_eq!(
            msg("max.compaction.lag.ms", "0"),
            "Invalid value 0 for configuration max.compaction.lag.ms: Value must be at least 1"
        );
        assert_eq!(
            msg("min.insync.replicas", "x"),
            "Invalid value x for configuration min.insync.replicas: Not a number of type INT"
        );
        for (k, v) in [
            ("message.timestamp.type", "logappendtime"),
            ("preallocate", "yes"),
            ("min.insync.replicas", "0"),
            ("max.message.bytes", "3000000000"),
            ("compression.gzip.level", "0"),
            ("compression.gzip.level", "10"),
            ("compression.lz4.level", "18"),
            ("compression.zstd.level", "23"),
            ("cleanup.policy", "compact,forever"),
            ("cleanup.policy", ""),
            ("leader.replication.throttled.replicas", "0-1"),
            ("local.retention.ms", "-3"),
            ("remote.storage.enable", "true"),
            ("flush.messages", "0"),
        ] {
            assert!(TopicConfig::from_overrides([(k, v)]).is_err(), "{k}={v}");
        }
        for (k, v) in [
            ("compression.gzip.level", "-1"),
            ("compression.zstd.level", "-5"),
            ("leader.replication.throttled.replicas", "0:1,1:1"),
            ("follower.replication.throttled.replicas", "*"),
            ("local.retention.bytes", "-2"),
            ("remote.storage.enable", "false"),
        ] {
            assert!(TopicConfig::from_overrides([(k, v)]).is_ok(), "{k}={v}");
        }
        assert_eq!(normalize_key("retention_ms"), "retention.ms");
        // Metadata written by earlier versions, which lowercased the policy
        // only to parse it.
        assert!(TopicConfig::from_overrides([("cleanup.policy", "Compact")]).is_err());
        let old = TopicConfig::from_stored([("cleanup.policy", "Compact")]).expect("stored");
        assert_eq!(old.cleanup_policy, CleanupPolicy::Compact);
    }
}
