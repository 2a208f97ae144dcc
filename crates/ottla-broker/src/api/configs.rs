//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for topics
//! (by Kafka's config names) and, read-only, for this broker.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::{blocking, s};
use crate::auth::acl::{Operation, ResourceType};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::config::{config_def, unknown_name, ConfigType, TopicConfig, TOPIC_CONFIGS};
use ottla_storage::error::{Error, Result};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// ConfigSource values.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// ConfigType values.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_LIST: i8 = 7;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn wire_type(t: ConfigType) -> i8 {
    match t {
        ConfigType::Boolean => TYPE_BOOLEAN,
        ConfigType::String => TYPE_STRING,
        ConfigType::Int => TYPE_INT,
        ConfigType::Long => TYPE_LONG,
        ConfigType::Double => TYPE_DOUBLE,
        ConfigType::List => TYPE_LIST,
    }
}

/// An engine error as Kafka words it on the wire: a config refusal is
/// Kafka's own message (`Unknown topic config name: x`, `Invalid value ...`).
pub fn wire_error(e: &Error) -> (i16, String) {
    match e {
        Error::InvalidConfig(m) => (code::INVALID_CONFIG, m.clone()),
        e => (kafka_code(e), e.to_string()),
    }
}

/// Names are exact on the wire: `retention_ms` is not `retention.ms`.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    for n in names {
        if config_def(n).is_none() {
            return Err(unknown_name(n));
        }
    }
    Ok(())
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    let mut y = DescribeConfigsSynonym::default();
    y.name = s(name);
    y.value = Some(s(value));
    y.source = source;
    y
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    read_only: bool,
    ty: i8,
    v: i16,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = s(name);
    c.value = Some(s(value));
    c.read_only = read_only;
    c.config_source = source;
    if v >= 3 {
        c.config_type = ty;
    }
    c
}

/// A topic's configs as Kafka describes them: the override's source is
/// DYNAMIC_TOPIC_CONFIG, a default's DEFAULT_CONFIG; synonyms (when asked)
/// list the override, then the broker setting the default comes from.
fn describe_topic(
    topic: &TopicConfig,
    wanted: impl Fn(&str) -> bool,
    synonyms: bool,
    v: i16,
) -> Vec<DescribeConfigsResourceResult> {
    let mut out = Vec::new();
    for d in TOPIC_CONFIGS {
        if !wanted(d.name) {
            continue;
        }
        let over = topic.overrides.get(d.name);
        let (value, source) = match over {
            Some(val) => (val.as_str(), DYNAMIC_TOPIC_CONFIG),
            None => (d.default, DEFAULT_CONFIG),
        };
        let mut c = entry(d.name, value, source, false, wire_type(d.ty), v);
        if synonyms {
            if let Some(val) = over {
                c.synonyms.push(synonym(d.name, val, DYNAMIC_TOPIC_CONFIG));
            }
            if let Some((broker_name, default)) = d.synonym {
                c.synonyms
                    .push(synonym(broker_name, default, DEFAULT_CONFIG));
            }
        }
        out.push(c);
    }
    out
}

pub async fn describe(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: DescribeConfigsRequest,
    v: i16,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .map_or(true, |keys| keys.iter().any(|x| x.as_str() == k))
        };
        if let Some((c, m)) = refusal(
            shared,
            _s,
            res.resource_type,
            res.resource_name.as_str(),
            Operation::DescribeConfigs,
        ) {
            r.error_code = c;
            r.error_message = Some(s(&m));
            resp.results.push(r);
            continue;
        }
        match res.resource_type {
            TOPIC => match blocking(|| shared.store.require_topic(res.resource_name.as_str())) {
                Ok(topic) => {
                    r.configs = describe_topic(&topic.config, wanted, req.include_synonyms, v);
                }
                Err(e) => {
                    r.error_code = kafka_code(&e);
                    r.error_message = Some(s(&e.to_string()));
                }
            },
            BROKER => {
                let c = &shared.config;
                let pairs = [
                    ("num.partitions", c.num_partitions.to_string()),
                    (
                        "auto.create.topics.enable",
                        c.auto_create_topics.to_string(),
                    ),
                    ("socket.request.max.bytes", c.max_request_bytes.to_string()),
                    ("fetch.max.bytes", c.fetch_max_bytes.to_string()),
                    ("log.dirs", shared.store.root().display().to_string()),
                ];
                for (k, val) in pairs {
                    if wanted(k) {
                        let ty = match k {
                            "num.partitions" => TYPE_INT,
                            "auto.create.topics.enable" => TYPE_BOOLEAN,
                            "socket.request.max.bytes" | "fetch.max.bytes" => TYPE_INT,
                            _ => TYPE_STRING,
                        };
                        let mut c = entry(k, &val, STATIC_BROKER_CONFIG, true, ty, v);
                        if req.include_synonyms {
                            c.synonyms.push(synonym(k, &val, STATIC_BROKER_CONFIG));
                        }
                        r.configs.push(c);
                    }
                }
            }
            other => {
                r.error_code = code::INVALID_REQUEST;
                r.error_message = Some(s(&format!("resource type {other} has no configs here")));
            }
        }
        resp.results.push(r);
    }
    resp
}

/// One change to a topic config.
enum Op {
    Set(String),
    Delete,
    /// Add the values missing from a LIST config (IncrementalAlterConfigs).
    Append(String),
    /// Remove values from a LIST config.
    Subtract(String),
}

/// `current` (a LIST config's value) with `op`'s comma-separated values
/// added where missing, or removed, as Kafka's controller does.
fn list_op(current: &str, values: &str, append: bool) -> String {
    let mut parts: Vec<&str> = current
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        if append {
            if !parts.contains(&v) {
                parts.push(v);
            }
        } else {
            parts.retain(|p| *p != v);
        }
    }
    parts.join(",")
}

/// APPEND (`append`) or SUBTRACT `values` to the LIST config `key` in
/// `overrides`, starting from its default when it has no override; any
/// other type is refused as Kafka's controller refuses it.
fn list_change(
    overrides: &mut std::collections::BTreeMap<String, String>,
    key: String,
    values: &str,
    append: bool,
) -> Result<()> {
    let def = config_def(&key).ok_or_else(|| unknown_name(&key))?;
    if def.ty != ConfigType::List {
        return Err(Error::InvalidConfig(format!(
            "Can't {} to key {key} because its type is not LIST.",
            if append { "APPEND" } else { "SUBTRACT" }
        )));
    }
    let current = overrides.get(&key).map_or(def.default, String::as_str);
    let next = list_op(current, values, append);
    overrides.insert(key, next);
    Ok(())
}

/// Check, then (unless validate_only) apply, changes to a topic's
/// overrides; with `replace_all` (AlterConfigs), overrides not named go.
fn apply(
    shared: &Shared,
    resource_type: i8,
    name: &str,
    ops: Result<Vec<(String, Op)>>,
    replace_all: bool,
    validate_only: bool,
) -> Result<()> {
    if resource_type != TOPIC {
        return Err(Error::InvalidConfig(
            "only topic configs can be altered; broker settings are fixed at start".into(),
        ));
    }
    let ops = ops?;
    check_names(ops.iter().map(|(k, _)| k.as_str()))?;
    let topic = shared.store.require_topic(name)?;
    let mut merged = if replace_all {
        Default::default()
    } else {
        topic.config.overrides.clone()
    };
    for (k, op) in ops {
        match op {
            Op::Set(v) => {
                merged.insert(k, v);
            }
            Op::Delete => {
                merged.remove(&k);
            }
            Op::Append(v) => list_change(&mut merged, k, &v, true)?,
            Op::Subtract(v) => list_change(&mut merged, k, &v, false)?,
        }
    }
    let cfg = TopicConfig::from_overrides(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // The store checks this too; here so validate_only answers the same.
    ottla_storage::topic::check_config(name, &cfg)?;
    if !validate_only {
        let mut changes: Vec<(String, Option<String>)> = topic
            .config
            .overrides
            .keys()
            .filter(|k| !merged.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        changes.extend(merged.into_iter().map(|(k, v)| (k, Some(v))));
        shared.store.alter_topic_config(name, &changes)?;
    }
    Ok(())
}

/// The ACL check of a config resource: `op` on the topic, or on the
/// cluster for a broker's (and every other) resource, as Kafka checks.
fn refusal(
    shared: &Shared,
    session: &Session,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Option<(i16, String)> {
    if resource_type == TOPIC {
        (!session.authorized(shared, op, ResourceType::Topic, name)).then(|| {
            (
                code::TOPIC_AUTHORIZATION_FAILED,
                format!("Topic authorization failed for {name}."),
            )
        })
    } else {
        (!session.authorized_cluster(shared, op)).then(|| {
            (
                code::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed.".to_string(),
            )
        })
    }
}

pub async fn alter(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: AlterConfigsRequest,
    _v: i16,
) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.as_str().to_string();
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        if let Some((c, m)) = refusal(
            shared,
            _s,
            res.resource_type,
            &name,
            Operation::AlterConfigs,
        ) {
            r.error_code = c;
            r.error_message = Some(s(&m));
            resp.responses.push(r);
            continue;
        }
        // AlterConfigs replaces the whole set: overrides not named are removed.
        let ops = Ok(res
            .configs
            .iter()
            .map(|c| {
                let op = match &c.value {
                    Some(v) => Op::Set(v.as_str().to_string()),
                    None => Op::Delete,
                };
                (c.name.as_str().to_string(), op)
            })
            .collect());
        let outcome = blocking(|| {
            apply(
                shared,
                res.resource_type,
                &name,
                ops,
                true,
                req.validate_only,
            )
        });
        if let Err(e) = outcome {
            let (code, msg) = wire_error(&e);
            r.error_code = code;
            r.error_message = Some(s(&msg));
        }
        resp.responses.push(r);
    }
    resp
}

pub async fn incremental_alter(
    shared: &Arc<Shared>,
    _s: &mut Session,
    req: IncrementalAlterConfigsRequest,
    _v: i16,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let name = res.resource_name.as_str().to_string();
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        r.resource_type = res.resource_type;
        r.resource_name = res.resource_name.clone();
        let mut bad_op = refusal(
            shared,
            _s,
            res.resource_type,
            &name,
            Operation::AlterConfigs,
        );
        let ops: Vec<(String, Op)> = res
            .configs
            .iter()
            .filter_map(|c| {
                let key = c.name.as_str().to_string();
                let value = c.value.as_ref().map(|v| v.as_str().to_string());
                let op = match (c.config_operation, value) {
                    (OP_SET, Some(v)) => Op::Set(v),
                    (OP_DELETE, _) => Op::Delete,
                    (OP_APPEND, Some(v)) => Op::Append(v),
                    (OP_SUBTRACT, Some(v)) => Op::Subtract(v),
                    (OP_SET | OP_APPEND | OP_SUBTRACT, None) => {
                        bad_op.get_or_insert((
                            code::INVALID_REQUEST,
                            format!("Null value not supported for : {key}"),
                        ));
                        return None;
                    }
                    (op, _) => {
                        bad_op.get_or_insert((
                            code::INVALID_REQUEST,
                            format!("Unknown operation type {op} for config {key}"),
                        ));
                        return None;
                    }
                };
                Some((key, op))
            })
            .collect();
        // Kafka: one operation per config in a request.
        let mut seen = std::collections::HashSet::new();
        if let Some((k, _)) = ops.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            bad_op.get_or_insert((
                code::INVALID_REQUEST,
                format!("Error due to duplicate config keys: {k}"),
            ));
        }
        let outcome = match bad_op {
            Some(refusal) => Err(refusal),
            None => blocking(|| {
                apply(
                    shared,
                    res.resource_type,
                    &name,
                    Ok(ops),
                    false,
                    req.validate_only,
                )
            })
            .map_err(|e| wire_error(&e)),
        };
        if let Err((code, msg)) = outcome {
            r.error_code = code;
            r.error_message = Some(s(&msg));
        }
        resp.responses.push(r);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_adds_missing_values_and_subtract_removes_them() {
        assert_eq!(list_op("delete", "compact", true), "delete,compact");
        assert_eq!(list_op("delete,compact", "compact", true), "delete,compact");
        assert_eq!(list_op("delete,compact", "delete", false), "compact");
        assert_eq!(list_op("", "0:0, 1:0", true), "0:0,1:0");
        assert_eq!(list_op("0:0,1:0", "2:0", false), "0:0,1:0");
    }

    #[test]
    fn append_is_refused_on_configs_that_are_not_lists() {
        let mut o = std::collections::BTreeMap::new();
        match list_change(&mut o, "retention.ms".into(), "1", true) {
            Err(Error::InvalidConfig(m)) => assert_eq!(
                m,
                "Can't APPEND to key retention.ms because its type is not LIST."
            ),
            other => panic!("{other:?}"),
        }
        assert!(list_change(&mut o, "retention_ms".into(), "1", false).is_err());
        list_change(&mut o, "cleanup.policy".into(), "compact", true).expect("list");
        assert_eq!(o["cleanup.policy"], "delete,compact");
    }

    #[test]
    fn topic_configs_are_described_with_types_sources_and_synonyms() {
        let cfg = TopicConfig::from_overrides([("compression.type", "zstd")]).expect("valid");
        let all = describe_topic(&cfg, |_| true, true, 3);
        assert_eq!(all.len(), TOPIC_CONFIGS.len());
        let get = |n: &str| {
            all.iter()
                .find(|c| c.name.as_str() == n)
                .unwrap_or_else(|| panic!("{n} described"))
        };
        let c = get("compression.type");
        assert_eq!(c.config_source, DYNAMIC_TOPIC_CONFIG);
        assert_eq!(c.config_type, TYPE_STRING);
        assert_eq!(c.synonyms.len(), 2);
        assert_eq!(c.synonyms[1].source, DEFAULT_CONFIG);
        let r = get("retention.ms");
        assert_eq!(
            (r.config_source, r.config_type),
            (DEFAULT_CONFIG, TYPE_LONG)
        );
        assert_eq!(r.synonyms[0].name.as_str(), "log.retention.hours");
        assert_eq!(get("cleanup.policy").config_type, TYPE_LIST);
        assert_eq!(get("preallocate").config_type, TYPE_BOOLEAN);
        assert_eq!(get("min.insync.replicas").config_type, TYPE_INT);
        assert_eq!(get("min.cleanable.dirty.ratio").config_type, TYPE_DOUBLE);
        // Below v3 there is no type; without synonyms asked, none.
        let v1 = describe_topic(&cfg, |n| n == "retention.ms", false, 1);
        assert_eq!(v1.len(), 1);
        assert_eq!(v1[0].config_type, 0);
        assert!(v1[0].synonyms.is_empty());
    }
}
