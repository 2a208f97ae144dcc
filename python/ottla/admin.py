"""Topic administration on a data directory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from os import PathLike
from typing import Any, NamedTuple

from ottla._core import InvalidConfigError, OttlaError, _Admin
from ottla.types import OffsetAndMetadata, TopicPartition

__all__ = [
    "Admin",
    "CompactionStats",
    "ConfigResource",
    "ConfigResourceType",
    "ConfigValue",
    "GroupDescription",
    "GroupOffset",
    "MemberDescription",
    "NewPartitions",
    "NewTopic",
    "PartitionDescription",
    "TopicDescription",
]

# Any value is sent as its str(); None removes an override.
ConfigValue = str | int | float | None


class NewTopic(NamedTuple):
    """A topic for :meth:`Admin.create_topics`, as kafka-python's
    ``NewTopic``. ``num_partitions=-1`` means 1 (the directory's default);
    there is one copy of the data, so ``replication_factor`` must be 1 or -1
    (the default), as the broker door says too; ``replica_assignments`` is
    not supported (None)."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    replica_assignments: Mapping[int, Sequence[int]] | None = None
    topic_configs: Mapping[str, ConfigValue] | None = None


class NewPartitions(NamedTuple):
    """A partition count for :meth:`Admin.create_partitions`, as
    kafka-python's ``NewPartitions``: the topic's new total."""

    total_count: int
    new_assignments: Sequence[Sequence[int]] | None = None


class ConfigResourceType(IntEnum):
    """kafka-python's ``ConfigResourceType`` (Kafka's resource type codes);
    a data directory has topic configs only."""

    UNKNOWN = 0
    TOPIC = 2
    BROKER = 4
    BROKER_LOGGER = 8


class ConfigResource(NamedTuple):
    """A topic for :meth:`Admin.describe_configs` (``configs``: names to
    show, None for all) and :meth:`Admin.alter_configs` (``configs``: the
    overrides to set), as kafka-python's ``ConfigResource``.
    ``resource_type`` may also be given by name (``"TOPIC"``)."""

    resource_type: ConfigResourceType | int | str
    name: str
    configs: Mapping[str, ConfigValue] | Iterable[str] | None = None


def _int_arg(call: str, name: str, value: object) -> int:
    """``value`` if it is an int (not a bool), else a TypeError naming the
    call, the argument and the type expected."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(
        f"{call}() argument {name!r} must be int, not {type(value).__name__} ({value!r})"
    )


def _str_arg(call: str, name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(
        f"{call}() argument {name!r} must be str, not {type(value).__name__} ({value!r})"
    )


def _topic_resource(call: str, resource: object) -> ConfigResource:
    if not isinstance(resource, ConfigResource):
        raise TypeError(
            f"{call}() takes ConfigResource objects "
            f"(ConfigResource(ConfigResourceType.TOPIC, name)), not {type(resource).__name__}"
        )
    kind = resource.resource_type
    if isinstance(kind, str):
        kind = (
            ConfigResourceType[kind.upper()]
            if kind.upper() in ConfigResourceType.__members__
            else -1
        )
    if kind != ConfigResourceType.TOPIC:
        raise InvalidConfigError(
            f"{call}(): a data directory has topic configs only, not {resource.resource_type!r} "
            f"(use ConfigResourceType.TOPIC)"
        )
    _str_arg(call, "name", resource.name)
    return resource


def _raise_first(errors: list[OttlaError]) -> None:
    """Raise the first error of a batch call; the others are noted on it."""
    if errors:
        first = errors[0]
        if hasattr(first, "add_note"):  # Python 3.11+
            for other in errors[1:]:
                first.add_note(f"also: {type(other).__name__}: {other}")
        raise first


@dataclass(frozen=True)
class PartitionDescription:
    """One partition: its offsets and disk use."""

    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int
    segments: int

    @property
    def records(self) -> int:
        """Offsets between start and end (records, unless compacted)."""
        return self.end_offset - self.start_offset


@dataclass(frozen=True)
class TopicDescription:
    """What ``Admin.describe_topic`` returns."""

    name: str
    partitions: list[PartitionDescription]
    config: dict[str, str]
    overrides: dict[str, str] = field(default_factory=dict)
    #: Kafka's topic id, as Kafka prints it (22 characters of URL-safe
    #: base64): made when the topic is created and kept on disk, so a topic
    #: deleted and created again under the same name has another one.
    topic_id: str = ""

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)

    def _repr_html_(self) -> str:
        """A partitions table in Jupyter."""
        from ottla._display import topic_html

        return topic_html(self)


@dataclass(frozen=True)
class MemberDescription:
    """A live member of a consumer group and the partitions assigned to it."""

    member_id: str
    client_id: str
    host: str
    assignment: list[TopicPartition]


@dataclass(frozen=True)
class GroupOffset:
    """A group's committed offset on one partition, and how far behind the log end it is."""

    topic: str
    partition: int
    committed: int
    end_offset: int
    lag: int


@dataclass(frozen=True)
class GroupDescription:
    """What ``Admin.describe_group`` returns.

    ``state`` is Kafka's: ``"Empty"`` (offsets, no live members),
    ``"Stable"``, ``"PreparingRebalance"`` (partitions still moving) or
    ``"Dead"`` (unknown group). ``protocol`` is the assignor name.
    """

    group_id: str
    state: str
    protocol: str
    members: list[MemberDescription]
    offsets: list[GroupOffset]

    @property
    def lag(self) -> int:
        """Total lag over the committed partitions."""
        return sum(o.lag for o in self.offsets)

    def _repr_html_(self) -> str:
        """State, members and an offsets/lag table in Jupyter."""
        from ottla._display import group_html

        return group_html(self)


@dataclass(frozen=True)
class CompactionStats:
    """What ``Admin.compact`` did, summed over the topic's partitions."""

    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int
    records_before: int
    records_after: int
    tombstones_removed: int


class AclBinding(NamedTuple):
    """One ACL (confluent-kafka's ``AclBinding``, Kafka's names as strings):
    ``AclBinding("TOPIC", "orders", "LITERAL", "User:alice", "*", "WRITE",
    "ALLOW")``. ``pattern_type`` is ``LITERAL`` or ``PREFIXED``; ``host`` an
    IP address or ``*``; ``principal`` ``User:*`` means everyone."""

    resource_type: str
    name: str
    pattern_type: str
    principal: str
    host: str
    operation: str
    permission: str


class AclBindingFilter(NamedTuple):
    """What :meth:`Admin.describe_acls` and :meth:`Admin.delete_acls`
    select: ``None`` and ``"ANY"`` match everything; ``pattern_type="MATCH"``
    selects every binding that applies to ``name`` (literal, ``*``,
    prefixes)."""

    resource_type: str = "ANY"
    name: str | None = None
    pattern_type: str = "ANY"
    principal: str | None = None
    host: str | None = None
    operation: str = "ANY"
    permission: str = "ANY"


class Admin:
    """Create, inspect, change and delete topics in a data directory.

    Config keys are Kafka's (``"retention.ms"``); underscores work too
    (``retention_ms``):

    >>> admin = ottla.Admin("data", create=True)
    >>> admin.create_topic("events", partitions=3, config={"retention.ms": 3_600_000})
    >>> d = admin.describe_topic("events")
    >>> len(d.partitions), d.overrides
    (3, {'retention.ms': '3600000'})
    """

    def __new__(
        cls,
        path: str | PathLike[str] | None = None,
        *,
        create: bool = False,
        bootstrap_servers: str | None = None,
        **config: Any,
    ) -> Admin:
        """A cluster's address (``bootstrap_servers=...``, or a ``path``
        of ``"kafka://host:port"``) makes the cluster's Admin
        (:mod:`ottla.remote`), with the same methods."""
        if bootstrap_servers is not None or (isinstance(path, str) and path.startswith("kafka://")):
            from ottla.remote.admin import Admin as RemoteAdmin

            return object.__new__(RemoteAdmin)
        return object.__new__(cls)

    def __init__(
        self,
        path: str | PathLike[str] | None = None,
        *,
        create: bool = False,
        bootstrap_servers: str | None = None,
        **config: Any,
    ) -> None:
        """Open the data directory ``path``. It must exist already (made by
        a ``Producer``, a ``Broker`` or an earlier ``create=True``), else
        :class:`ottla.DataDirectoryNotFoundError` naming the path: a
        mistyped path fails instead of being created. ``create=True``
        creates it. ``Admin(bootstrap_servers="host:9092", **config)`` (or
        ``Admin("kafka://host:9092")``) administers a cluster instead."""
        if path is None:
            raise TypeError(
                "Admin() needs a data directory path, a 'kafka://host:port' address "
                "or bootstrap_servers='host:port'"
            )
        if config:
            raise TypeError(
                f"Admin() got unexpected keyword arguments {sorted(config)} "
                "(settings are for bootstrap_servers=...)"
            )
        self._core = _Admin(path, create=create)

    @property
    def path(self) -> str:
        return self._core.path

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, ConfigValue] | None = None
    ) -> None:
        """Create a topic; raises ``TopicAlreadyExistsError`` if it exists, and
        ``InvalidTopicError`` for Kafka's internal names (``__consumer_offsets``,
        ``__transaction_state``)."""
        _str_arg("create_topic", "name", name)
        _int_arg("create_topic", "partitions", partitions)
        self._core.create_topic(name, partitions, dict(config or {}))

    # ---- kafka-python's batch calls ------------------------------------------
    #
    # Each takes kafka-python's objects and does every item it can; then, as
    # kafka-python with its default raise_errors=True, it raises the first
    # error (the others are added to it as notes). Arguments are all checked
    # before anything is done, so a TypeError changes nothing.

    def create_topics(self, new_topics: Iterable[NewTopic], timeout_ms: int | None = None) -> None:
        """kafka-python's ``create_topics([NewTopic(name, num_partitions,
        replication_factor, topic_configs=...)])``: creates every topic it can,
        then raises the first error (``TopicAlreadyExistsError``, ...):

        >>> admin = ottla.Admin("data", create=True)
        >>> admin.create_topics([ottla.NewTopic("a", 3), ottla.NewTopic("b", 1, 1)])
        >>> admin.list_topics()
        ['a', 'b']

        ``timeout_ms`` is accepted for compatibility (the calls are local)."""
        del timeout_ms
        todo = []
        for t in new_topics:
            if not isinstance(t, NewTopic):
                raise TypeError(
                    f"create_topics() takes NewTopic objects, not {type(t).__name__} ({t!r})"
                )
            name = _str_arg("NewTopic", "name", t.name)
            partitions = _int_arg("NewTopic", "num_partitions", t.num_partitions)
            rf = _int_arg("NewTopic", "replication_factor", t.replication_factor)
            if rf not in (-1, 1):
                raise InvalidConfigError(
                    f"NewTopic({name!r}) replication_factor={rf}: a data directory keeps one "
                    "copy of each partition (use 1 or -1)"
                )
            if t.replica_assignments:
                raise InvalidConfigError(
                    f"NewTopic({name!r}): replica_assignments are not supported (one copy)"
                )
            todo.append((name, 1 if partitions == -1 else partitions, t.topic_configs))
        errors: list[OttlaError] = []
        for name, partitions, configs in todo:
            try:
                self._core.create_topic(name, partitions, dict(configs or {}))
            except OttlaError as e:
                errors.append(e)
        _raise_first(errors)

    def delete_topics(self, topics: Iterable[str], timeout_ms: int | None = None) -> None:
        """kafka-python's ``delete_topics([name, ...])``: deletes every topic
        it can, then raises the first error (``UnknownTopicOrPartitionError``,
        ...). ``timeout_ms`` is accepted for compatibility."""
        del timeout_ms
        names = [_str_arg("delete_topics", "topics", t) for t in topics]
        errors: list[OttlaError] = []
        for name in names:
            try:
                self._core.delete_topic(name)
            except OttlaError as e:
                errors.append(e)
        _raise_first(errors)

    def describe_configs(
        self, config_resources: Iterable[ConfigResource], include_synonyms: bool = False
    ) -> dict[str, dict[str, str]]:
        """kafka-python's ``describe_configs([ConfigResource(ConfigResourceType.TOPIC,
        name)])``, returning ``{topic: {config name: value}}``: every
        effective setting (defaults included), or only the names listed in
        the resource's ``configs``. Raises the first error
        (``UnknownTopicOrPartitionError``) after describing the others:

        >>> admin = ottla.Admin("data", create=True)
        >>> admin.create_topic("t", config={"retention.ms": 60000})
        >>> res = ottla.ConfigResource(ottla.ConfigResourceType.TOPIC, "t", ["retention.ms"])
        >>> admin.describe_configs([res])
        {'t': {'retention.ms': '60000'}}

        ``include_synonyms`` is accepted for compatibility."""
        del include_synonyms
        resources = [_topic_resource("describe_configs", r) for r in config_resources]
        out: dict[str, dict[str, str]] = {}
        errors: list[OttlaError] = []
        for r in resources:
            try:
                _, config, _, _ = self._core.describe_topic(r.name)
            except OttlaError as e:
                errors.append(e)
                continue
            wanted = None if r.configs is None else {str(k).replace("_", ".") for k in r.configs}
            out[r.name] = {k: v for k, v in config.items() if wanted is None or k in wanted}
        _raise_first(errors)
        return out

    def alter_configs(self, config_resources: Iterable[ConfigResource]) -> None:
        """kafka-python's ``alter_configs([ConfigResource(ConfigResourceType.TOPIC,
        name, configs={...})])``: :meth:`alter_topic_config` for each (a
        ``None`` value removes an override); raises the first error after
        altering the others."""
        resources = [_topic_resource("alter_configs", r) for r in config_resources]
        errors: list[OttlaError] = []
        for r in resources:
            if not isinstance(r.configs, Mapping):
                raise TypeError(
                    f"alter_configs(): ConfigResource({r.name!r}) needs configs={{name: value}}"
                )
        for r in resources:
            assert isinstance(r.configs, Mapping)
            try:
                self._core.alter_topic_config(r.name, dict(r.configs))
            except OttlaError as e:
                errors.append(e)
        _raise_first(errors)

    def list_consumer_groups(self) -> list[tuple[str, str]]:
        """kafka-python's ``list_consumer_groups()``: ``[(group_id,
        protocol_type)]``, the protocol type always ``"consumer"``."""
        return [(g, "consumer") for g in self._core.list_groups()]

    def describe_consumer_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        """kafka-python's ``describe_consumer_groups([group_id, ...])``: a
        :class:`GroupDescription` per group, in order (state ``"Dead"`` for
        an unknown group, as Kafka answers)."""
        names = [_str_arg("describe_consumer_groups", "group_ids", g) for g in group_ids]
        return [self.describe_group(g) for g in names]

    def list_consumer_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition | tuple[str, int]] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """kafka-python's ``list_consumer_group_offsets(group_id,
        partitions=None)``: ``{TopicPartition: OffsetAndMetadata}`` for every
        partition the group committed, or for ``partitions`` (offset -1 where
        it has not committed, as Kafka answers). The commit's metadata string
        is not read back here (None)."""
        _str_arg("list_consumer_group_offsets", "group_id", group_id)
        done = {
            TopicPartition(t, p): OffsetAndMetadata(c)
            for t, p, c, _ in self._core.group_offsets(group_id)
        }
        if partitions is None:
            return dict(sorted(done.items()))
        return {
            (tp := TopicPartition(*tp_like)): done.get(tp, OffsetAndMetadata(-1))
            for tp_like in partitions
        }

    def delete_consumer_groups(
        self, group_ids: Iterable[str]
    ) -> list[tuple[str, OttlaError | None]]:
        """kafka-python's ``delete_consumer_groups([group_id, ...])``: like
        kafka-python, returns ``[(group_id, error)]`` instead of raising:
        ``None`` for a deleted group, else the error
        (``GroupNotEmptyError`` while it has live members)."""
        names = [_str_arg("delete_consumer_groups", "group_ids", g) for g in group_ids]
        out: list[tuple[str, OttlaError | None]] = []
        for g in names:
            try:
                self._core.delete_group(g)
            except OttlaError as e:
                out.append((g, e))
            else:
                out.append((g, None))
        return out

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data; internal topics (``__consumer_offsets``)
        cannot be deleted (``InvalidTopicError``)."""
        self._core.delete_topic(name)

    def list_topics(self, internal: bool = False) -> list[str]:
        """Topic names, sorted; ``internal=True`` includes ``__consumer_offsets``."""
        return self._core.list_topics(internal)

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (offsets, bytes, segments) and effective config."""
        parts, config, overrides, topic_id = self._core.describe_topic(name)
        return TopicDescription(
            name=name,
            partitions=[PartitionDescription(*p) for p in parts],
            config=dict(config),
            overrides=dict(overrides),
            topic_id=topic_id,
        )

    def create_partitions(
        self, name: str | Mapping[str, NewPartitions], total: int | None = None
    ) -> None:
        """Grow a topic to ``total`` partitions (never shrinks).

        Also kafka-python's batch form, ``create_partitions({name:
        NewPartitions(total_count)})``: grows every topic it can, then
        raises the first error."""
        if isinstance(name, Mapping):
            todo = []
            for topic, np in name.items():
                if not isinstance(np, NewPartitions):
                    raise TypeError(
                        "create_partitions() takes {topic: NewPartitions(total_count)}, "
                        f"not {type(np).__name__} for {topic!r}"
                    )
                todo.append(
                    (
                        _str_arg("create_partitions", "topic", topic),
                        _int_arg("NewPartitions", "total_count", np.total_count),
                    )
                )
            errors: list[OttlaError] = []
            for topic, count in todo:
                try:
                    self._core.create_partitions(topic, count)
                except OttlaError as e:
                    errors.append(e)
            _raise_first(errors)
            return
        _str_arg("create_partitions", "name", name)
        if total is None:
            raise TypeError(
                "create_partitions() missing argument 'total' (the new partition count)"
            )
        self._core.create_partitions(name, _int_arg("create_partitions", "total", total))

    def alter_topic_config(self, name: str, config: Mapping[str, ConfigValue]) -> None:
        """Set config overrides; a value of ``None`` removes the override.

        ``__consumer_offsets`` keeps its records: ``cleanup.policy`` other than
        ``compact`` and finite ``retention.ms`` / ``retention.bytes`` raise
        ``InvalidConfigError`` for it."""
        self._core.alter_topic_config(name, dict(config))

    def enforce_retention(self, name: str) -> int:
        """Apply retention now; returns the number of segments deleted."""
        return self._core.enforce_retention(name)

    def delete_records(
        self, records_to_delete: Mapping[TopicPartition | tuple[str, int], int]
    ) -> dict[TopicPartition, int]:
        """Delete every record before an offset, per partition (Kafka's
        DeleteRecords; kafka-python's ``KafkaAdminClient.delete_records``).

        Each partition's log start offset moves up to its offset (``-1``: the
        high watermark, deleting everything written so far); reads below it
        raise ``OffsetOutOfRangeError``, ``earliest`` means it, and segments
        wholly below it are deleted at once. The start is on disk before this
        returns and survives any crash. Returns each partition's low
        watermark (log start offset) after the call; an offset at or below
        the current start changes nothing.

        >>> admin = ottla.Admin("data", create=True)
        >>> admin.create_topic("trimmed")
        >>> with ottla.Producer("data") as producer:
        ...     for i in range(10):
        ...         _ = producer.send("trimmed", value=b"%d" % i)
        >>> admin.delete_records({ottla.TopicPartition("trimmed", 0): 4})
        {TopicPartition(topic='trimmed', partition=0): 4}

        Raises ``OffsetOutOfRangeError`` for an offset past the high
        watermark, ``UnknownTopicOrPartitionError`` for a partition that does
        not exist (partitions listed before it keep their new start).
        """
        parts = [TopicPartition(*tp) for tp in records_to_delete]
        requests = [
            (tp.topic, tp.partition, int(offset))
            for tp, offset in zip(parts, records_to_delete.values(), strict=True)
        ]
        lows = self._core.delete_records(requests)
        return dict(zip(parts, lows, strict=True))

    def compact(self, name: str) -> CompactionStats:
        """Run the log cleaner on every partition of a compacted topic now.

        The topic's ``cleanup.policy`` must be ``compact`` or
        ``compact,delete``. Each partition keeps only the latest record of
        each key (and records younger than ``min.compaction.lag.ms``) in its
        closed segments; the active segment is never touched, offsets never
        change, and a tombstone (``value=None``) is dropped by the first
        pass after it has been compacted once and ``delete.retention.ms``
        has passed. Compaction also runs by itself when a segment rolls and
        the dirty ratio exceeds ``min.cleanable.dirty.ratio``:

        >>> admin = ottla.Admin("data", create=True)
        >>> admin.create_topic("prices", config={"cleanup.policy": "compact"})
        >>> stats = admin.compact("prices")
        >>> stats.bytes_before >= stats.bytes_after
        True

        Raises ``InvalidConfigError`` for a ``cleanup.policy=delete`` topic.
        """
        return CompactionStats(*self._core.compact(name))

    def list_groups(self) -> list[str]:
        """Consumer groups with committed offsets or live members, sorted."""
        return self._core.list_groups()

    def describe_group(self, group: str) -> GroupDescription:
        """Members (with their assignment), committed offsets and lag:

        >>> admin = ottla.Admin("data", create=True)
        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("orders", [b"a", b"b", b"c"]).get()
        >>> c = ottla.Consumer("data", group_id="billing", auto_offset_reset="earliest")
        >>> c.subscribe(["orders"])
        >>> len(c.poll(timeout_ms=1000, max_records=1)[ottla.TopicPartition("orders", 0)])
        1
        >>> c.commit()
        >>> d = admin.describe_group("billing")
        >>> for m in d.members:
        ...     print(m.assignment)
        [TopicPartition(topic='orders', partition=0)]
        >>> d.state, d.lag
        ('Stable', 2)
        >>> c.close()
        """
        group_id, state, protocol, members, offsets = self._core.describe_group(group)
        return GroupDescription(
            group_id=group_id,
            state=state,
            protocol=protocol,
            members=[
                MemberDescription(m, c, h, [TopicPartition(t, p) for t, p in a])
                for m, c, h, a in members
            ],
            offsets=[GroupOffset(*o) for o in offsets],
        )

    def delete_group(self, group: str) -> None:
        """Forget a group's committed offsets; ``GroupNotEmptyError`` while it has live members."""
        self._core.delete_group(group)

    def reset_offsets(
        self,
        group: str,
        *,
        topics: Sequence[str] | None = None,
        to_earliest: bool = False,
        to_latest: bool = False,
        to_datetime_ms: int | None = None,
        to_offsets: Mapping[TopicPartition, int] | None = None,
    ) -> dict[TopicPartition, int]:
        """Move a group's committed offsets, as ``kafka-consumer-groups.sh --reset-offsets``.

        Give exactly one target. ``topics=None`` resets every partition the
        group has committed; naming topics resets all their partitions.
        ``to_datetime_ms`` picks the first record at or after that time (the
        log end if none). Explicit offsets are clamped into the log's range.
        Raises ``GroupNotEmptyError`` while the group has live members:

        >>> admin = ottla.Admin("data", create=True)
        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("orders", [b"x"] * 50).get()
        >>> with ottla.Consumer("data", "orders", group_id="billing",
        ...                     auto_offset_reset="earliest") as c:
        ...     _ = c.poll(timeout_ms=1000)
        >>> admin.reset_offsets("billing", to_earliest=True)
        {TopicPartition(topic='orders', partition=0): 0}
        >>> admin.reset_offsets("billing", to_offsets={ottla.TopicPartition("orders", 0): 42})
        {TopicPartition(topic='orders', partition=0): 42}
        """
        explicit = None
        if to_offsets is not None:
            explicit = [(tp.topic, tp.partition, int(o)) for tp, o in to_offsets.items()]
        done = self._core.reset_offsets(
            group,
            list(topics) if topics is not None else None,
            to_earliest,
            to_latest,
            to_datetime_ms,
            explicit,
        )
        return {TopicPartition(t, p): o for t, p, o in done}

    def group_offsets(self, group: str) -> dict[tuple[str, int], dict[str, int]]:
        """``{(topic, partition): {"committed": n, "end": m, "lag": m - n}}``."""
        return {
            (t, p): {"committed": c, "end": e, "lag": max(e - c, 0)}
            for t, p, c, e in self._core.group_offsets(group)
        }

    def create_acls(self, acls: Iterable[AclBinding]) -> None:
        """Add ACLs to the directory, checked by a broker run with
        ``authorizer="standard"`` (a running one sees them within a
        second). ``ValueError``, and none added, if one is invalid."""
        from ottla import _core

        _core.create_acls(self.path, [tuple(a) for a in acls])  # type: ignore[misc]

    def describe_acls(self, acl_filter: AclBindingFilter | None = None) -> list[AclBinding]:
        """The directory's ACLs that ``acl_filter`` selects (all by default)."""
        from ottla import _core

        f = acl_filter or AclBindingFilter()
        return [AclBinding(*t) for t in _core.acls(self.path, **f._asdict())]

    def delete_acls(self, acl_filters: Iterable[AclBindingFilter]) -> list[list[AclBinding]]:
        """Remove the ACLs each filter selects; per filter, those removed."""
        from ottla import _core

        return [
            [AclBinding(*t) for t in _core.delete_acls(self.path, **f._asdict())]
            for f in acl_filters
        ]

    def close(self) -> None:
        """Nothing to release; present so Admin works as a context manager."""

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ottla.Admin path={self.path!r}>"

    def _repr_html_(self) -> str:
        """Topics (partitions, records, bytes) and group count, in Jupyter."""
        from ottla._display import admin_html

        return admin_html(self)
