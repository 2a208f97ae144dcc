"""The one interface every command is written against.

Two implementations: :mod:`ottla.cli.local` opens a data directory with the
embedded engine, :mod:`ottla.cli.remote` talks to a Kafka-protocol broker
through kafka-python. ottla's ``Producer``/``Consumer`` and kafka-python's
``KafkaProducer``/``KafkaConsumer`` share Kafka's method names, so one
adapter of each (:class:`RecordSink`, :class:`RecordSource`) serves both; the
backends differ in how they are built and in topic/group administration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ottla.cli._util import CliError

TP = tuple[str, int]


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int | None  # None when the backend cannot tell (a broker)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: list[PartitionInfo]
    config: dict[str, str]
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberInfo:
    member_id: str
    client_id: str
    host: str
    assignment: list[TP]


@dataclass(frozen=True)
class OffsetInfo:
    topic: str
    partition: int
    committed: int | None
    end_offset: int

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(self.end_offset - self.committed, 0)


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    state: str
    protocol: str
    members: list[MemberInfo]
    offsets: list[OffsetInfo]


class RecordLike(Protocol):
    """A consumed record: ottla's ``Record`` and kafka-python's
    ``ConsumerRecord`` both have these attributes, so records are handed to
    the output as they come, without a copy."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True)
class Message:
    """A record built by hand (tests, examples); satisfies RecordLike."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class RecordSink:
    """Sends records through a Kafka-style producer and keeps failures.

    Futures are checked in windows, so memory stays bounded however many
    lines are produced, and the first failed send is raised, not lost.
    """

    _WINDOW = 10_000

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._pending: list[Any] = []
        self.acked = 0

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        kw: dict[str, Any] = {"value": value, "key": key}
        if partition is not None:
            kw["partition"] = partition
        if headers:
            kw["headers"] = headers
        self._pending.append(self._producer.send(topic, **kw))
        if len(self._pending) >= self._WINDOW:
            self.flush()

    def flush(self) -> None:
        """Wait for every send so far; raise the first failure."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        first: BaseException | None = None
        try:
            self._producer.flush()
        except Exception as e:  # some records failed; count the ones that did not
            first = e
        for future in pending:
            # Both clients' futures: get() returns the metadata or raises.
            try:
                future.get(timeout=60)
            except Exception as e:
                first = first or e
                continue
            self.acked += 1
        if first is not None:
            raise first

    def close(self) -> None:
        try:
            self._producer.close()
        except Exception:
            # Only failed sends make close() complain; flush() has raised
            # (or is about to raise) the first of them already.
            pass


class RecordSource:
    """A Kafka-style consumer addressed by ``(topic, partition)`` tuples."""

    def __init__(self, consumer: Any, make_tp: Callable[[str, int], Any]) -> None:
        self._consumer = consumer
        self._tp = make_tp

    def _tps(self, tps: Iterable[TP]) -> list[Any]:
        return [self._tp(t, p) for t, p in tps]

    def assign(self, tps: Sequence[TP]) -> None:
        self._consumer.assign(self._tps(tps))

    def subscribe(self, topic: str) -> None:
        self._consumer.subscribe([topic])

    def assignment(self) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def seek(self, tp: TP, offset: int) -> None:
        self._consumer.seek(self._tp(*tp), offset)

    def seek_to_beginning(self, tps: Sequence[TP]) -> None:
        self._consumer.seek_to_beginning(*self._tps(tps))

    def position(self, tp: TP) -> int:
        return int(self._consumer.position(self._tp(*tp)))

    def beginning_offsets(self, tps: Sequence[TP]) -> dict[TP, int]:
        got = self._consumer.beginning_offsets(self._tps(tps))
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items()}

    def end_offsets(self, tps: Sequence[TP]) -> dict[TP, int]:
        got = self._consumer.end_offsets(self._tps(tps))
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items()}

    def offsets_for_time(self, tps: Sequence[TP], ms: int) -> dict[TP, int | None]:
        """The first offset at or after ``ms`` per partition; None past the end."""
        got = self._consumer.offsets_for_times({self._tp(t, p): ms for t, p in tps})
        return {
            (tp.topic, tp.partition): (None if ot is None else int(ot.offset))
            for tp, ot in got.items()
        }

    def poll(self, timeout_ms: int, max_records: int) -> list[RecordLike]:
        out: list[RecordLike] = []
        for records in self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records).values():
            out.extend(records)
        return out

    def close(self) -> None:
        self._consumer.close()


class Backend(Protocol):
    """What a command may do to a data directory or a broker."""

    where: str  # "directory ./d" or "broker host:port", for messages

    def list_topics(self) -> list[str]: ...
    def has_topic(self, name: str) -> bool: ...
    def require_topic(self, name: str, *, suggest_create: bool = True) -> None:
        """Raise :class:`CliError` naming the topic if it does not exist."""

    def create_topic(self, name: str, partitions: int, config: Mapping[str, str]) -> None: ...
    def delete_topic(self, name: str) -> None: ...
    def describe_topic(self, name: str) -> TopicInfo: ...
    def alter_topic(
        self,
        name: str,
        set_config: Mapping[str, str],
        delete_config: Sequence[str],
        partitions: int | None,
    ) -> None: ...
    def partitions(self, topic: str) -> list[int]: ...
    def create_topic_on_demand(self, name: str) -> list[int]:
        """Create a missing topic as a producer's first send to it would
        (``ottla.Producer``'s rule on a directory, the broker's
        ``auto.create.topics.enable`` on a broker); its partitions, or an
        empty list if it was not created."""

    def open_sink(self, auto_create_topics: bool = False) -> RecordSink:
        """A producer; ``auto_create_topics``: sends to a missing topic create it."""

    def open_source(self, group: str | None, auto_offset_reset: str) -> RecordSource: ...
    def list_groups(self) -> list[str]: ...
    def describe_group(self, group: str) -> GroupInfo: ...
    def committed_offsets(self, group: str) -> dict[TP, int]: ...
    def commit_group_offsets(self, group: str, offsets: Mapping[TP, int]) -> dict[TP, int]:
        """Overwrite the group's committed offsets (the group must have no
        live members); returns what was committed."""

    def delete_group(self, group: str) -> None:
        """Forget a group and its committed offsets; refused while it has live members."""

    def close(self) -> None: ...


def open_backend(args: object, *, create: bool = False) -> Backend:
    """The broker backend if ``--bootstrap-server`` was given, else the
    directory one. ``create``: the command may create a missing directory."""
    server: str | None = getattr(args, "bootstrap_server", None)
    if server:
        from ottla.cli.remote import BrokerBackend

        return BrokerBackend(server)
    from ottla.cli._util import data_dir
    from ottla.cli.local import DirectoryBackend

    return DirectoryBackend(data_dir(args), create=create)


def unknown_topic(
    name: str, where: str, existing: Sequence[str] = (), *, suggest_create: bool = True
) -> CliError:
    """``unknown topic 'x' in WHERE``, naming the existing topics whose names
    are close to it (a typo), else how to create it (unless it is being
    deleted: ``suggest_create=False``)."""
    import difflib

    close = difflib.get_close_matches(name, [t for t in existing if t != name], n=3, cutoff=0.6)
    if close:
        hint = f" (did you mean {' or '.join(repr(t) for t in close)}?)"
    elif suggest_create:
        hint = f" (create it with: ottla topics create {name})"
    else:
        hint = ""
    return CliError(f"unknown topic {name!r} in {where}{hint}")


def unknown_group(name: str, where: str, existing: Sequence[str] = ()) -> CliError:
    """``unknown group 'x' in WHERE``, naming close group ids if any."""
    import difflib

    close = difflib.get_close_matches(name, [g for g in existing if g != name], n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(g) for g in close)}?)" if close else ""
    return CliError(f"unknown group {name!r} in {where}{hint}")
