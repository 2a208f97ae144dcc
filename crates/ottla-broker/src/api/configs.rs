//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs, for topics
//! (by Kafka's config names) and, read-only, for this broker.

use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::{blocking, s};
use crate::dispatch::Session;
use crate::errors::{code, kafka_code};
use crate::Shared;
use ottla_storage::config::TopicConfig;
use ottla_storage::error::{Error, Result};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// ConfigSource values.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// ConfigType values.
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn entry(
    name: &str,
    value: &str,
    source: i8,
    read_only: bool,
    v: i16,
) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = s(name);
    c.value = Some(s(value));
    c.read_only = read_only;
    c.config_source = source;
    if v >= 3 {
        c.config_type = match name {
            "cleanup.policy" => TYPE_LIST,
            n if n.ends_with(".ms") || n.ends_with(".bytes") => TYPE_LONG,
            _ => TYPE_STRING,
        };
    }
    c
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
        match res.resource_type {
            TOPIC => match blocking(|| shared.store.require_topic(res.resource_name.as_str())) {
                Ok(topic) => {
                    for (k, val) in topic.config.effective() {
                        if wanted(&k) {
                            let source = if topic.config.overrides.contains_key(&k) {
                                DYNAMIC_TOPIC_CONFIG
                            } else {
                                DEFAULT_CONFIG
                            };
                            r.configs.push(entry(&k, &val, source, false, v));
                        }
                    }
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
                        r.configs
                            .push(entry(k, &val, STATIC_BROKER_CONFIG, true, v));
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

/// Check, then (unless validate_only) apply, changes to a topic's overrides.
fn apply(
    shared: &Shared,
    resource_type: i8,
    name: &str,
    changes: Result<Vec<(String, Option<String>)>>,
    validate_only: bool,
) -> Result<()> {
    if resource_type != TOPIC {
        return Err(Error::InvalidConfig(
            "only topic configs can be altered; broker settings are fixed at start".into(),
        ));
    }
    let changes = changes?;
    let topic = shared.store.require_topic(name)?;
    let mut merged = topic.config.overrides.clone();
    for (k, v) in &changes {
        match v {
            Some(v) => merged.insert(ottla_storage::config::normalize_key(k), v.clone()),
            None => merged.remove(&ottla_storage::config::normalize_key(k)),
        };
    }
    let cfg = TopicConfig::from_overrides(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // The store checks this too; here so validate_only answers the same.
    ottla_storage::topic::check_config(name, &cfg)?;
    if !validate_only {
        shared.store.alter_topic_config(name, &changes)?;
    }
    Ok(())
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
        // AlterConfigs replaces the whole set: overrides not named are removed.
        let outcome = blocking(|| {
            let changes = shared.store.require_topic(&name).map(|topic| {
                let mut changes: Vec<(String, Option<String>)> = res
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.as_str().to_string(),
                            c.value.as_ref().map(|v| v.as_str().to_string()),
                        )
                    })
                    .collect();
                for k in topic.config.overrides.keys() {
                    if !changes
                        .iter()
                        .any(|(n, _)| ottla_storage::config::normalize_key(n) == *k)
                    {
                        changes.push((k.clone(), None));
                    }
                }
                changes
            });
            apply(shared, res.resource_type, &name, changes, req.validate_only)
        });
        if let Err(e) = outcome {
            r.error_code = kafka_code(&e);
            r.error_message = Some(s(&e.to_string()));
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
        let changes: Result<Vec<(String, Option<String>)>> = res
            .configs
            .iter()
            .map(|c| {
                let key = c.name.as_str().to_string();
                match c.config_operation {
                    0 => Ok((key, c.value.as_ref().map(|v| v.as_str().to_string()))),
                    1 => Ok((key, None)),
                    op => Err(Error::InvalidConfig(format!(
                        "config operation {op} (APPEND/SUBTRACT) is not supported for {key}"
                    ))),
                }
            })
            .collect();
        let outcome =
            blocking(|| apply(shared, res.resource_type, &name, changes, req.validate_only));
        if let Err(e) = outcome {
            r.error_code = kafka_code(&e);
            r.error_message = Some(s(&e.to_string()));
        }
        resp.responses.push(r);
    }
    resp
}
