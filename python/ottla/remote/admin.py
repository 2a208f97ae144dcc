"""``ottla.Admin(bootstrap_servers=...)``: topic and group administration of
a cluster through librdkafka's AdminClient (confluent-kafka).

:class:`Admin` is :class:`ottla.Admin` with another engine underneath: the
same methods and dataclasses, the kafka-python batch calls included, over
:class:`_ClusterCore`, which answers the calls ``ottla.Admin`` makes of the
directory engine (``ottla._core._Admin``) with Kafka requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ottla._core import (
    IllegalStateError,
    InvalidConfigError,
    InvalidPartitionsError,
    OttlaError,
    TopicAlreadyExistsError,
)
from ottla.admin import Admin as _DirectoryAdmin
from ottla.remote import _kafka

_TIMEOUT_S = 30.0
_INTERNAL = frozenset({"__consumer_offsets", "__transaction_state"})


def _admin_conf(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a producer's or consumer's config an AdminClient
    takes too (address, security, client id, timeouts)."""
    client_only = (
        "group.", "auto.", "enable.", "fetch.", "max.partition", "check.crcs", "partition",
        "session.timeout", "heartbeat", "max.poll", "allow.auto", "isolation", "queued.",
        "linger", "batch.", "acks", "compression", "delivery", "message.timeout",
        "max.in.flight", "retries", "transactional", "sticky",
    )  # fmt: skip
    return {k: v for k, v in conf.items() if not k.startswith(client_only)}


def create_if_missing(servers: str, conf: Mapping[str, Any], topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` (a producer's or consumer's
    ``auto_create_topics``); one that exists meanwhile is fine."""
    admin_mod = _kafka.ck_admin()
    client = admin_mod.AdminClient(_admin_conf(conf))
    futures = client.create_topics(
        [admin_mod.NewTopic(topic, num_partitions=partitions, replication_factor=-1)],
        request_timeout=_TIMEOUT_S,
    )
    for f in futures.values():
        try:
            f.result()
        except Exception as e:
            err = _kafka.error(e, f"creating topic {topic!r}")
            if not isinstance(err, TopicAlreadyExistsError):
                raise err from e


def _results(futures: Mapping[Any, Any], doing: str) -> dict[Any, Any]:
    out = {}
    for key, f in futures.items():
        try:
            out[key] = f.result()
        except Exception as e:
            raise _kafka.error(e, doing) from e
    return out


class _ClusterCore:
    """The calls ``ottla.Admin`` makes of its engine, answered by a cluster."""

    def __init__(self, servers: str, config: Mapping[str, Any]) -> None:
        self.ck = _kafka.ck()
        self.mod = _kafka.ck_admin()
        self.servers = servers
        conf = _kafka.librdkafka_config("Admin", servers, config)
        with _kafka.raising("Admin"):
            self.client = self.mod.AdminClient(conf)
        self.conf = conf

    @property
    def path(self) -> str:
        return _kafka.SCHEME + self.servers

    def _topics(self) -> dict[str, Any]:
        with _kafka.raising("metadata"):
            return dict(self.client.list_topics(timeout=_TIMEOUT_S).topics)

    # ---- topics --------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict[str, Any]) -> None:
        if name in _INTERNAL:
            raise _kafka.InvalidTopicError(f"{name!r} is an internal topic")
        if not 1 <= partitions <= 100_000:
            raise InvalidPartitionsError(
                f"create_topic({name!r}): partitions must be 1 to 100000, got {partitions}"
            )
        for k, v in config.items():
            if v is None:
                raise InvalidConfigError(f"create_topic({name!r}): {k} has no value (None)")
        configs = {str(k).replace("_", "."): str(v) for k, v in config.items()}
        new = self.mod.NewTopic(
            name, num_partitions=partitions, replication_factor=-1, config=configs
        )
        _results(
            self.client.create_topics([new], request_timeout=_TIMEOUT_S),
            f"creating topic {name!r}",
        )

    def delete_topic(self, name: str) -> None:
        if name in _INTERNAL:
            raise _kafka.InvalidTopicError(f"{name!r} is an internal topic: it cannot be deleted")
        _results(
            self.client.delete_topics([name], request_timeout=_TIMEOUT_S),
            f"deleting topic {name!r}",
        )

    def list_topics(self, internal: bool = False) -> list[str]:
        return sorted(t for t in self._topics() if internal or t not in _INTERNAL)

    def _configs(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        res = self.mod.ConfigResource(self.mod.ResourceType.TOPIC, name)
        got = _results(
            self.client.describe_configs([res], request_timeout=_TIMEOUT_S),
            f"describing topic {name!r}",
        )
        entries = next(iter(got.values()))
        dynamic = self.mod.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        config: dict[str, str] = {}
        overrides: dict[str, str] = {}
        for key, entry in sorted(entries.items()):
            value = "" if entry.value is None else str(entry.value)
            config[key] = value
            if entry.source == dynamic:
                overrides[key] = value
        return config, overrides

    def describe_topic(
        self, name: str
    ) -> tuple[list[tuple[int, int, int, int, int]], dict[str, str], dict[str, str], str]:
        got = _results(
            self.client.describe_topics(
                self.ck.TopicCollection([name]), request_timeout=_TIMEOUT_S
            ),
            f"describing topic {name!r}",
        )
        desc = got[name]
        parts = sorted(p.id for p in desc.partitions)
        lows = self._offsets(name, parts, self.mod.OffsetSpec.earliest())
        highs = self._offsets(name, parts, self.mod.OffsetSpec.latest())
        config, overrides = self._configs(name)
        # Sizes and segments are the brokers' (DescribeLogDirs): 0 here.
        rows = [(p, lows[p], highs[p], 0, 0) for p in parts]
        # Kafka prints topic ids in URL-safe base64.
        topic_id = str(desc.topic_id).replace("+", "-").replace("/", "_")
        return rows, config, overrides, topic_id

    def _offsets(self, topic: str, parts: list[int], spec: Any) -> dict[int, int]:
        if not parts:
            return {}
        got = _results(
            self.client.list_offsets(
                {self.ck.TopicPartition(topic, p): spec for p in parts},
                request_timeout=_TIMEOUT_S,
            ),
            f"offsets of {topic!r}",
        )
        return {tp.partition: int(r.offset) for tp, r in got.items()}

    def create_partitions(self, name: str, total: int) -> None:
        if not 1 <= total <= 100_000:
            raise InvalidPartitionsError(
                f"create_partitions({name!r}): a topic has 1 to 100000 partitions, not {total}"
            )
        _results(
            self.client.create_partitions(
                [self.mod.NewPartitions(name, total)], request_timeout=_TIMEOUT_S
            ),
            f"growing topic {name!r}",
        )

    def alter_topic_config(self, name: str, config: dict[str, Any]) -> None:
        mod = self.mod
        entries = [
            mod.ConfigEntry(
                str(k).replace("_", "."),
                None if v is None else str(v),
                incremental_operation=(
                    mod.AlterConfigOpType.DELETE if v is None else mod.AlterConfigOpType.SET
                ),
            )
            for k, v in config.items()
        ]
        res = mod.ConfigResource(mod.ResourceType.TOPIC, name, incremental_configs=entries)
        _results(
            self.client.incremental_alter_configs([res], request_timeout=_TIMEOUT_S),
            f"altering topic {name!r}",
        )

    def enforce_retention(self, name: str) -> int:
        raise IllegalStateError(
            f"enforce_retention({name!r}) works on a data directory only: a cluster's "
            "brokers apply retention themselves (log.retention.check.interval.ms)"
        )

    def compact(self, name: str) -> tuple[int, int, int, int, int, int, int]:
        raise IllegalStateError(
            f"compact({name!r}) works on a data directory only: a cluster's brokers run "
            "their log cleaner themselves (cleanup.policy=compact)"
        )

    def delete_records(self, requests: list[tuple[str, int, int]]) -> list[int]:
        tps = [self.ck.TopicPartition(t, p, o) for t, p, o in requests]
        if not tps:
            return []
        got = _results(
            self.client.delete_records(tps, request_timeout=_TIMEOUT_S), "deleting records"
        )
        lows = {(tp.topic, tp.partition): int(r.low_watermark) for tp, r in got.items()}
        return [lows[(t, p)] for t, p, _ in requests]

    # ---- groups --------------------------------------------------------------

    def list_groups(self) -> list[str]:
        with _kafka.raising("listing groups"):
            got = self.client.list_consumer_groups(request_timeout=_TIMEOUT_S).result()
        return sorted(g.group_id for g in got.valid)

    def _committed(self, group: str) -> dict[tuple[str, int], int]:
        req = self.ck.ConsumerGroupTopicPartitions(group)
        got = _results(
            self.client.list_consumer_group_offsets([req], request_timeout=_TIMEOUT_S),
            f"offsets of group {group!r}",
        )
        out = {}
        for res in got.values():
            for tp in res.topic_partitions or ():
                if tp.offset >= 0 and tp.error is None:
                    out[(tp.topic, tp.partition)] = int(tp.offset)
        return out

    def _ends(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not keys:
            return {}
        got = _results(
            self.client.list_offsets(
                {self.ck.TopicPartition(t, p): self.mod.OffsetSpec.latest() for t, p in keys},
                request_timeout=_TIMEOUT_S,
            ),
            "end offsets",
        )
        return {(tp.topic, tp.partition): int(r.offset) for tp, r in got.items()}

    def group_offsets(self, group: str) -> list[tuple[str, int, int, int]]:
        committed = self._committed(group)
        ends = self._ends(sorted(committed))
        return [(t, p, c, ends.get((t, p), c)) for (t, p), c in sorted(committed.items())]

    def _describe(self, group: str) -> Any:
        got = _results(
            self.client.describe_consumer_groups([group], request_timeout=_TIMEOUT_S),
            f"describing group {group!r}",
        )
        return got[group]

    def describe_group(
        self, group: str
    ) -> tuple[
        str,
        str,
        str,
        list[tuple[str, str, str, list[tuple[str, int]]]],
        list[tuple[str, int, int, int, int]],
    ]:
        d = self._describe(group)
        state = _state_name(d.state)
        members = [
            (
                m.member_id,
                m.client_id,
                m.host,
                sorted(
                    (tp.topic, tp.partition)
                    for tp in (m.assignment.topic_partitions if m.assignment else ())
                ),
            )
            for m in d.members
        ]
        offsets = [(t, p, c, e, max(e - c, 0)) for t, p, c, e in self.group_offsets(group)]
        if state == "Dead" and offsets:
            state = "Empty"
        return group, state, d.partition_assignor or "", members, offsets

    def delete_group(self, group: str) -> None:
        _results(
            self.client.delete_consumer_groups([group], request_timeout=_TIMEOUT_S),
            f"deleting group {group!r}",
        )

    def reset_offsets(
        self,
        group: str,
        topics: list[str] | None = None,
        to_earliest: bool = False,
        to_latest: bool = False,
        to_datetime_ms: int | None = None,
        to_offsets: list[tuple[str, int, int]] | None = None,
    ) -> list[tuple[str, int, int]]:
        chosen = sum([to_earliest, to_latest, to_datetime_ms is not None, to_offsets is not None])
        if chosen != 1:
            raise ValueError(
                "reset_offsets takes exactly one target: to_earliest, to_latest, "
                "to_datetime_ms or to_offsets"
            )
        d = self._describe(group)
        if d.members:
            raise _kafka.GroupNotEmptyError(
                f"group {group!r} has {len(d.members)} live members: stop them first"
            )
        if to_offsets is not None:
            keys = [(t, p) for t, p, _ in to_offsets]
        elif topics is not None:
            meta = self._topics()
            keys = []
            for t in topics:
                if t not in meta or meta[t].error is not None:
                    raise _kafka.UnknownTopicOrPartitionError(f"unknown topic {t!r}")
                keys.extend((t, p) for p in sorted(meta[t].partitions))
        else:
            keys = sorted(self._committed(group))
        if not keys:
            return []
        lows = self._spec(keys, self.mod.OffsetSpec.earliest())
        highs = self._spec(keys, self.mod.OffsetSpec.latest())
        if to_earliest:
            target = lows
        elif to_latest:
            target = highs
        elif to_datetime_ms is not None:
            found = self._spec(keys, self.mod.OffsetSpec.for_timestamp(int(to_datetime_ms)))
            target = {k: (highs[k] if o < 0 else o) for k, o in found.items()}
        else:
            assert to_offsets is not None
            target = {(t, p): min(max(o, lows[(t, p)]), highs[(t, p)]) for t, p, o in to_offsets}
        req = self.ck.ConsumerGroupTopicPartitions(
            group, [self.ck.TopicPartition(t, p, o) for (t, p), o in sorted(target.items())]
        )
        _results(
            self.client.alter_consumer_group_offsets([req], request_timeout=_TIMEOUT_S),
            f"resetting offsets of group {group!r}",
        )
        return [(t, p, o) for (t, p), o in sorted(target.items())]

    def _spec(self, keys: list[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
        got = _results(
            self.client.list_offsets(
                {self.ck.TopicPartition(t, p): spec for t, p in keys},
                request_timeout=_TIMEOUT_S,
            ),
            "offsets",
        )
        return {(tp.topic, tp.partition): int(r.offset) for tp, r in got.items()}


def _state_name(state: Any) -> str:
    """librdkafka's group state (``ConsumerGroupState.STABLE``) in Kafka's
    spelling (``"Stable"``)."""
    name = getattr(state, "name", str(state))
    return {
        "STABLE": "Stable",
        "EMPTY": "Empty",
        "DEAD": "Dead",
        "PREPARING_REBALANCING": "PreparingRebalance",
        "COMPLETING_REBALANCING": "CompletingRebalance",
        "UNKNOWN": "Dead",
    }.get(name, name.title())


class Admin(_DirectoryAdmin):
    """:class:`ottla.Admin` of a cluster: made by
    ``ottla.Admin(bootstrap_servers="host:9092", **config)`` or
    ``ottla.Admin("kafka://host:9092")``. ``describe_topic`` reports
    ``size_bytes`` and ``segments`` as 0 (the brokers keep those);
    ``enforce_retention`` and ``compact`` are the brokers' own work and
    raise :class:`ottla.IllegalStateError`."""

    def __init__(
        self,
        path: Any = None,
        *,
        create: bool = False,
        bootstrap_servers: str | None = None,
        **config: Any,
    ) -> None:
        servers = _kafka.target_servers("Admin", path, bootstrap_servers)
        if servers is None:
            raise TypeError("ottla.remote.Admin needs a cluster address")
        # create=True (make the directory) has nothing to do: a cluster
        # exists. Accepted, so code written for a directory runs unchanged.
        del create
        self._core = _ClusterCore(servers, config)  # type: ignore[assignment]

    @property
    def bootstrap_servers(self) -> str:
        return self._core.path[len(_kafka.SCHEME) :]

    def __repr__(self) -> str:
        return f"<ottla.Admin bootstrap_servers={self.bootstrap_servers!r}>"


__all__ = ["Admin", "OttlaError"]
