"""The broker backend: any Kafka-protocol broker (``ottla serve``, Kafka,
Redpanda) through kafka-python, imported only when this backend is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from ottla.cli._util import CliError
from ottla.cli.backend import (
    TP,
    GroupInfo,
    MemberInfo,
    OffsetInfo,
    PartitionInfo,
    RecordSink,
    RecordSource,
    TopicInfo,
    unknown_group,
    unknown_topic,
)

# A command line should not hang for kafka-python's default 30 s when the
# address is wrong.
_CLIENT: dict[str, Any] = {"client_id": "ottla-cli", "bootstrap_timeout_ms": 10_000}
# How long `produce` waits for a broker to create a missing topic.
_CREATE_WAIT_MS = 5_000


def kafka_module(name: str = "kafka") -> Any:
    """kafka-python, or a clear error saying how to get it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise CliError(
            "--bootstrap-server needs kafka-python: pip install 'ottla[remote]' (or kafka-python>=3.0)"
        ) from None


class BrokerBackend:
    def __init__(self, bootstrap_servers: str) -> None:
        self.kafka = kafka_module()
        version = str(getattr(self.kafka, "__version__", "0"))
        major = version.split(".")[0]
        if not major.isdigit() or int(major) < 3:
            # 3.x renamed the group admin calls and added bootstrap_timeout_ms.
            raise CliError(
                f"--bootstrap-server needs kafka-python >= 3.0 (found {version}): pip install 'ottla[remote]'"
            )
        self.servers = bootstrap_servers
        self.where = f"broker {bootstrap_servers}"
        self._admin: Any = None
        probe(bootstrap_servers)

    @property
    def admin(self) -> Any:
        if self._admin is None:
            admin_mod = kafka_module("kafka.admin")
            self._admin = admin_mod.KafkaAdminClient(bootstrap_servers=self.servers, **_CLIENT)
        return self._admin

    def _consumer(self, **kw: Any) -> Any:
        return self.kafka.KafkaConsumer(bootstrap_servers=self.servers, **_CLIENT, **kw)

    # -- topics -------------------------------------------------------------
    def list_topics(self) -> list[str]:
        # Kafka's internal topics only: other `__` names are user topics.
        internal = {"__consumer_offsets", "__transaction_state"}
        return sorted(t for t in self.admin.list_topics() if t not in internal)

    def has_topic(self, name: str) -> bool:
        return name in self.admin.list_topics()

    def require_topic(self, name: str, *, suggest_create: bool = True) -> None:
        topics = self.admin.list_topics()
        if name not in topics:
            raise unknown_topic(name, self.where, topics, suggest_create=suggest_create)

    def create_topic(self, name: str, partitions: int, config: Mapping[str, str]) -> None:
        self.admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1, "configs": dict(config)}}
        )

    def delete_topic(self, name: str) -> None:
        self.require_topic(name, suggest_create=False)
        self.admin.delete_topics([name])

    def partitions(self, topic: str) -> list[int]:
        self.require_topic(topic)
        consumer = self._consumer()
        try:
            return sorted(consumer.partitions_for_topic(topic) or [])
        finally:
            consumer.close()

    def describe_topic(self, name: str) -> TopicInfo:
        parts = self.partitions(name)
        tp_cls = self.kafka.TopicPartition
        consumer = self._consumer()
        try:
            tps = [tp_cls(name, p) for p in parts]
            start = consumer.beginning_offsets(tps)
            end = consumer.end_offsets(tps)
        finally:
            consumer.close()
        admin_mod = kafka_module("kafka.admin")
        resource = admin_mod.ConfigResource(admin_mod.ConfigResourceType.TOPIC, name)
        described = self.admin.describe_configs([resource], config_filter="all")
        entries: dict[str, Any] = described.get("topic", {}).get(name, {})
        config = {
            k: ("" if v.get("value") is None else str(v.get("value")))
            for k, v in sorted(entries.items())
        }
        overrides = {
            k: config[k]
            for k, v in entries.items()
            if str(v.get("config_source", "")) in ("DYNAMIC_TOPIC_CONFIG", "TOPIC_CONFIG")
        }
        return TopicInfo(
            name=name,
            partitions=[
                PartitionInfo(p, int(start[tp_cls(name, p)]), int(end[tp_cls(name, p)]), None)
                for p in parts
            ],
            config=config,
            overrides=overrides,
        )

    def alter_topic(
        self,
        name: str,
        set_config: Mapping[str, str],
        delete_config: Sequence[str],
        partitions: int | None,
    ) -> None:
        self.require_topic(name)
        admin_mod = kafka_module("kafka.admin")
        topic_type = admin_mod.ConfigResourceType.TOPIC
        results: list[Any] = []
        # SET through alter_configs and removal through reset_configs: both
        # work on brokers with and without IncrementalAlterConfigs.
        if set_config:
            resource = admin_mod.ConfigResource(topic_type, name, configs=dict(set_config))
            results.append(self.admin.alter_configs([resource], raise_on_unknown=False))
        if delete_config:
            resource = admin_mod.ConfigResource(topic_type, name, configs=list(delete_config))
            results.append(self.admin.reset_configs([resource], raise_on_unknown=False))
        for result in results:
            outcome = result.get("topic", {}).get(name, "OK")
            if outcome != "OK":
                raise CliError(f"altering topic {name!r}: {outcome}")
        if partitions is not None:
            self.admin.create_partitions({name: partitions})

    # -- records ------------------------------------------------------------
    def create_topic_on_demand(self, name: str) -> list[int]:
        # A producer's metadata request asks the broker to create the topic;
        # the broker's auto.create.topics.enable decides. Bounded: a broker
        # that does not create it leaves kafka-python waiting for metadata.
        producer = self.kafka.KafkaProducer(
            bootstrap_servers=self.servers, max_block_ms=_CREATE_WAIT_MS, **_CLIENT
        )
        try:
            return sorted(producer.partitions_for(name) or [])
        except Exception as e:
            if type(e).__name__ == "KafkaTimeoutError":
                return []
            raise
        finally:
            producer.close()

    def open_sink(self, auto_create_topics: bool = False) -> RecordSink:
        # kafka-python's producer always asks the broker to create a missing
        # topic; the broker's auto.create.topics.enable decides. The caller
        # checks the topic first when creating is not wanted.
        return RecordSink(self.kafka.KafkaProducer(bootstrap_servers=self.servers, **_CLIENT))

    def open_source(self, group: str | None, auto_offset_reset: str) -> RecordSource:
        consumer = self._consumer(
            group_id=group,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=group is not None,
        )
        return RecordSource(consumer, self.kafka.TopicPartition)

    # -- groups -------------------------------------------------------------
    def list_groups(self) -> list[str]:
        return sorted(str(_field(g, "group_id")) for g in self.admin.list_groups())

    def committed_offsets(self, group: str) -> dict[TP, int]:
        got = self.admin.list_group_offsets({group: None}).get(group, {})
        return {
            (tp.topic, tp.partition): int(om.offset) for tp, om in got.items() if om.offset >= 0
        }

    def describe_group(self, group: str) -> GroupInfo:
        d = self.admin.describe_groups([group]).get(group)
        if d is None:
            raise unknown_group(group, self.where, self.list_groups())
        if d.get("error"):
            raise CliError(f"group {group!r}: {d['error']}")
        committed = self.committed_offsets(group)
        state = str(d.get("group_state") or d.get("state") or "")
        if state == "Dead" and not committed:
            raise unknown_group(group, self.where, self.list_groups())
        tp_cls = self.kafka.TopicPartition
        consumer = self._consumer()
        try:
            end = consumer.end_offsets([tp_cls(t, p) for t, p in committed])
        finally:
            consumer.close()
        members = [
            MemberInfo(
                str(_field(m, "member_id")),
                str(_field(m, "client_id")),
                str(_field(m, "client_host")),
                _assignment(_field(m, "member_assignment")),
            )
            for m in d.get("members", [])
        ]
        return GroupInfo(
            group_id=group,
            state=state,
            protocol=str(d.get("protocol_data") or d.get("protocol") or ""),
            members=members,
            offsets=[
                OffsetInfo(t, p, o, int(end[tp_cls(t, p)]))
                for (t, p), o in sorted(committed.items())
            ],
        )

    def commit_group_offsets(self, group: str, offsets: Mapping[TP, int]) -> dict[TP, int]:
        tp_cls = self.kafka.TopicPartition
        oam = self.kafka.OffsetAndMetadata
        result = self.admin.alter_group_offsets(
            group, {tp_cls(t, p): oam(o, "", None) for (t, p), o in offsets.items()}
        )
        for err in result.values():
            _raise_kafka_error(
                err, f"committing offsets of group {group!r} (it must have no live members)"
            )
        return dict(offsets)

    def delete_group(self, group: str) -> None:
        try:
            results = self.admin.delete_groups([group])
        except Exception as e:
            if type(e).__name__ in ("IncompatibleBrokerVersion", "UnsupportedVersionError"):
                raise CliError(
                    f"the {self.where} does not serve DeleteGroups, so it cannot delete groups "
                    f"({type(e).__name__})"
                ) from None
            raise
        outcome = str(results.get(group, "OK")) if isinstance(results, dict) else "OK"
        if outcome == "GroupIdNotFoundError":
            raise unknown_group(group, self.where, self.list_groups())
        if outcome == "NonEmptyGroupError":
            raise CliError(f"group {group!r} has live members; stop them first")
        if outcome != "OK":
            raise CliError(f"deleting group {group!r}: {outcome}")

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()


def probe(servers: str, timeout_s: float = 3.0) -> None:
    """Fail fast, naming the address, when no bootstrap server accepts a TCP
    connection: kafka-python alone retries until its bootstrap timeout and
    then says only that no broker is available."""
    import socket

    errors: list[str] = []
    for addr in (a.strip() for a in servers.split(",") if a.strip()):
        host, sep, port = addr.rpartition(":")
        if not sep:
            host, port = addr, "9092"  # kafka-python's default port
        if not port.isdigit():
            raise CliError(f"--bootstrap-server: expected HOST:PORT, got {addr!r}")
        host = host.strip("[]")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return
        except socket.gaierror as e:
            errors.append(f"cannot resolve {host!r}: {e.strerror or e}")
        except TimeoutError:
            errors.append(f"cannot connect to {addr}: timed out after {timeout_s:g} s")
        except OSError as e:
            errors.append(f"cannot connect to {addr}: {str(e.strerror or e).lower()}")
    if not errors:
        raise CliError("--bootstrap-server: no address given")
    raise CliError("; ".join(errors))


def _field(obj: Any, name: str) -> Any:
    return obj.get(name, "") if isinstance(obj, dict) else getattr(obj, name, "")


def _assignment(raw: Any) -> list[TP]:
    """Partitions of a member's decoded ConsumerProtocolAssignment, as a
    dict (``to_dict``) or an object; empty when undecodable."""
    parts = _field(raw, "assigned_partitions") if raw else None
    out: list[TP] = []
    for entry in parts or []:
        if isinstance(entry, (tuple, list)):
            topic, partitions = entry[0], entry[1]
        else:
            topic, partitions = _field(entry, "topic"), _field(entry, "partitions")
        out.extend((str(topic), int(p)) for p in partitions or [])
    return sorted(out)


def _raise_kafka_error(err: Any, doing: str) -> None:
    """Results of kafka-python's admin calls are error classes or instances;
    NoError (code 0) means success."""
    if err is None:
        return
    if isinstance(err, dict):
        err = err.get("error")
        if err is None:
            return
    if getattr(err, "errno", None) == 0:
        return
    if isinstance(err, BaseException):
        raise CliError(f"{doing}: {err}")
    raise CliError(f"{doing}: {getattr(err, '__name__', err)}")
