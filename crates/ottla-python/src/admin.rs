//! The core of `ottla.Admin`: topic operations returning plain Python
//! values, which `python/ottla/admin.py` shapes into dataclasses.

use crate::errors::PyResultExt;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use ottla_storage::store::Store;

#[pyclass(module = "ottla._core", name = "_Admin", frozen)]
pub struct Admin {
    store: Arc<Store>,
}

fn config_pairs(config: Option<Bound<'_, PyDict>>) -> PyResult<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    if let Some(d) = config {
        for (k, v) in d.iter() {
            let k: String = k.extract()?;
            let v = if v.is_none() {
                None
            } else {
                Some(v.str()?.to_str()?.to_string())
            };
            out.push((k, v));
        }
    }
    Ok(out)
}

#[pymethods]
impl Admin {
    #[new]
    #[pyo3(signature = (path, *, create=false))]
    fn new(py: Python<'_>, path: Bound<'_, PyAny>, create: bool) -> PyResult<Self> {
        let path = super::types::path_arg(&path, "Admin")?;
        let open = if create {
            Store::open
        } else {
            Store::open_existing
        };
        Ok(Admin {
            store: py.detach(|| open(&path)).py()?,
        })
    }

    #[pyo3(signature = (name, partitions=1, config=None))]
    fn create_topic(
        &self,
        name: &str,
        partitions: i64,
        config: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        if !(1..=100_000).contains(&partitions) {
            return Err(super::errors::InvalidPartitionsError::new_err(format!(
                "partitions must be between 1 and 100000, got {partitions}"
            )));
        }
        let mut pairs = Vec::new();
        for (k, v) in config_pairs(config)? {
            match v {
                Some(v) => pairs.push((k, v)),
                None => {
                    return Err(super::errors::InvalidConfigError::new_err(format!(
                        "config {k:?} has no value"
                    )))
                }
            }
        }
        ottla_storage::topic::check_user_creatable(name).py()?;
        self.store
            .create_topic(name, partitions as u32, &pairs)
            .py()?;
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> PyResult<()> {
        self.store.delete_topic(name).py()
    }

    #[pyo3(signature = (internal=false))]
    fn list_topics(&self, internal: bool) -> PyResult<Vec<String>> {
        self.store.list_topics(internal).py()
    }

    /// (partitions: [(partition, start, end, size_bytes, segments)], config: {name: value}, overrides)
    #[allow(clippy::type_complexity)]
    fn describe_topic(
        &self,
        name: &str,
    ) -> PyResult<(
        Vec<(u32, i64, i64, u64, usize)>,
        std::collections::BTreeMap<String, String>,
        std::collections::BTreeMap<String, String>,
        String,
    )> {
        let topic = self.store.require_topic(name).py()?;
        let mut parts = Vec::new();
        for p in 0..topic.partitions {
            let log = self.store.partition(&topic, p).py()?;
            let (start, end) = log.offsets().py()?;
            parts.push((
                p,
                start,
                end,
                log.size_bytes().py()?,
                log.segment_count().py()?,
            ));
        }
        Ok((
            parts,
            topic.config.effective(),
            topic.config.overrides.clone(),
            topic.id.to_string(),
        ))
    }

    fn create_partitions(&self, name: &str, total: i64) -> PyResult<()> {
        if !(1..=100_000).contains(&total) {
            return Err(super::errors::InvalidPartitionsError::new_err(format!(
                "total must be between 1 and 100000, got {total}"
            )));
        }
        self.store.create_partitions(name, total as u32).py()?;
        Ok(())
    }

    fn alter_topic_config(&self, name: &str, config: Bound<'_, PyDict>) -> PyResult<()> {
        self.store
            .alter_topic_config(name, &config_pairs(Some(config))?)
            .py()?;
        Ok(())
    }

    /// Apply retention now on every partition of `name`; returns segments deleted.
    fn enforce_retention(&self, name: &str) -> PyResult<usize> {
        let topic = self.store.require_topic(name).py()?;
        let mut n = 0;
        for p in 0..topic.partitions {
            n += self
                .store
                .partition(&topic, p)
                .py()?
                .enforce_retention()
                .py()?;
        }
        Ok(n)
    }

    /// Move the log start offset of each (topic, partition) up to its
    /// offset (-1: the high watermark); the low watermarks after, in order.
    /// Stops at the first error (the partitions before it keep their move).
    fn delete_records(
        &self,
        py: Python<'_>,
        requests: Vec<(String, i64, i64)>,
    ) -> PyResult<Vec<i64>> {
        let store = &self.store;
        py.detach(|| {
            requests
                .iter()
                .map(|(topic, partition, offset)| {
                    let p = u32::try_from(*partition).map_err(|_| {
                        ottla_storage::error::Error::UnknownTopicOrPartition {
                            topic: topic.clone(),
                            partition: *partition,
                        }
                    })?;
                    store.partition_by_name(topic, p)?.delete_records(*offset)
                })
                .collect::<ottla_storage::error::Result<Vec<i64>>>()
        })
        .py()
    }

    /// Compact a compacted topic now: (segments_before, segments_after,
    /// bytes_before, bytes_after, records_before, records_after,
    /// tombstones_removed), summed over partitions.
    #[allow(clippy::type_complexity)]
    fn compact(
        &self,
        py: Python<'_>,
        name: &str,
    ) -> PyResult<(usize, usize, u64, u64, u64, u64, u64)> {
        let store = &self.store;
        let s = py.detach(|| store.compact_topic(name)).py()?;
        Ok((
            s.segments_before,
            s.segments_after,
            s.bytes_before,
            s.bytes_after,
            s.records_before,
            s.records_after,
            s.tombstones_removed,
        ))
    }

    /// Groups with committed offsets or live members.
    fn list_groups(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = &self.store;
        py.detach(|| ottla_client::group::admin::list_groups(store))
            .py()
    }

    /// (group_id, state, protocol, [(member_id, client_id, host, [(topic, partition)])],
    ///  [(topic, partition, committed, end_offset, lag)])
    #[allow(clippy::type_complexity)]
    fn describe_group(
        &self,
        py: Python<'_>,
        group: &str,
    ) -> PyResult<(
        String,
        String,
        String,
        Vec<(String, String, String, Vec<(String, u32)>)>,
        Vec<(String, u32, i64, i64, i64)>,
    )> {
        let store = &self.store;
        let d = py
            .detach(|| ottla_client::group::admin::describe_group(store, group))
            .py()?;
        Ok((
            d.group_id,
            d.state.to_string(),
            d.protocol,
            d.members
                .into_iter()
                .map(|m| (m.member_id, m.client_id, m.host, m.assignment))
                .collect(),
            d.offsets
                .into_iter()
                .map(|o| (o.topic, o.partition, o.committed, o.end_offset, o.lag))
                .collect(),
        ))
    }

    fn delete_group(&self, py: Python<'_>, group: &str) -> PyResult<()> {
        let store = &self.store;
        py.detach(|| ottla_client::group::admin::delete_group(store, group))
            .py()
    }

    /// Exactly one target; returns [(topic, partition, new offset)].
    #[pyo3(signature = (group, topics=None, to_earliest=false, to_latest=false, to_datetime_ms=None, to_offsets=None))]
    #[allow(clippy::too_many_arguments)]
    fn reset_offsets(
        &self,
        py: Python<'_>,
        group: &str,
        topics: Option<Vec<String>>,
        to_earliest: bool,
        to_latest: bool,
        to_datetime_ms: Option<i64>,
        to_offsets: Option<Vec<(String, u32, i64)>>,
    ) -> PyResult<Vec<(String, u32, i64)>> {
        use ottla_client::group::admin::ResetTarget;
        let mut targets = Vec::new();
        if to_earliest {
            targets.push(ResetTarget::Earliest);
        }
        if to_latest {
            targets.push(ResetTarget::Latest);
        }
        if let Some(ts) = to_datetime_ms {
            targets.push(ResetTarget::Timestamp(ts));
        }
        if let Some(o) = to_offsets {
            if let Some((t, p, off)) = o.iter().find(|(_, _, off)| *off < 0) {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "offset for {t}-{p} must be >= 0, got {off}"
                )));
            }
            targets.push(ResetTarget::Offsets(o));
        }
        if targets.len() != 1 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "give exactly one of to_earliest, to_latest, to_datetime_ms, to_offsets",
            ));
        }
        let target = targets.remove(0);
        let store = &self.store;
        py.detach(|| {
            ottla_client::group::admin::reset_offsets(store, group, topics.as_deref(), &target)
        })
        .py()
    }

    /// [(topic, partition, committed offset, log end offset)]
    fn group_offsets(&self, group: &str) -> PyResult<Vec<(String, u32, i64, i64)>> {
        let mut out = Vec::new();
        for (t, p, c) in self.store.offsets().py()?.group_offsets(group).py()? {
            let end = self
                .store
                .partition_by_name(&t, p)
                .and_then(|l| l.offsets())
                .map_or(-1, |(_, e)| e);
            out.push((t, p, c.offset, end));
        }
        Ok(out)
    }

    #[getter]
    fn path(&self) -> String {
        self.store.root().display().to_string()
    }
}
