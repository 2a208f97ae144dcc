"""ottla: Kafka you can ``pip install``.

Topics are partitioned, offset-addressed logs kept on disk in Kafka's own
format, under one directory. Write and read them in-process:

>>> import ottla
>>> with ottla.Producer("data") as producer:
...     future = producer.send("events", b"hello", key=b"user-1")
>>> with ottla.Consumer("data", "events", auto_offset_reset="earliest",
...                     consumer_timeout_ms=1000) as consumer:
...     for record in consumer:
...         print(record.offset, record.key, record.value)
0 b'user-1' b'hello'

Several processes may use the same directory at once.
"""

from __future__ import annotations

from ottla._core import (
    BatchFuture,
    Broker,
    ClosedError,
    Consumer as _CoreConsumer,
    ConsumerGroupMetadata,
    CorruptRecordError,
    DataDirectoryNotFoundError,
    DiskFullError,
    FutureRecordMetadata,
    GroupMemberConflictError,
    GroupNotEmptyError,
    IllegalStateError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidTopicError,
    InvalidTxnStateError,
    NoOffsetForPartitionError,
    OffsetAndTimestamp,
    OffsetMetadataTooLargeError,
    OffsetOutOfRangeError,
    OttlaError,
    OttlaTimeoutError,
    Producer as _CoreProducer,
    ProducerFencedError,
    Record,
    RecordMetadata,
    RecordTooLargeError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionError,
    __version__,
)
from ottla.remote._door import Door as _Door

# Start-up time: `import ottla` (and so `ottla serve`) loads only the
# engine. ottla.admin (dataclasses, inspect), ottla.types (typing), the Arrow
# and Jupyter helpers are imported on first use, by __getattr__ below
# (PEP 562); type checkers see them as plain imports.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from concurrent.futures import Future
    from os import PathLike
    from typing import Any, Literal, overload

    from typing_extensions import Self

    from ottla import _arrow
    from ottla._core import _Acks, _BytesLike, _OffsetReset, _Path
    from ottla.admin import (
        Admin,
        CompactionStats,
        ConfigResource,
        ConfigResourceType,
        GroupDescription,
        GroupOffset,
        MemberDescription,
        NewPartitions,
        NewTopic,
        PartitionDescription,
        TopicDescription,
    )
    from ottla.cluster import Cluster
    from ottla.remote.mirror import MirrorStats, mirror
    from ottla.types import OffsetAndMetadata, TopicPartition

if not TYPE_CHECKING:  # typing.overload at run time, without importing typing

    def overload(f):
        return f


_LAZY = {
    "Admin": "ottla.admin",
    "CompactionStats": "ottla.admin",
    "ConfigResource": "ottla.admin",
    "ConfigResourceType": "ottla.admin",
    "GroupDescription": "ottla.admin",
    "GroupOffset": "ottla.admin",
    "MemberDescription": "ottla.admin",
    "NewPartitions": "ottla.admin",
    "NewTopic": "ottla.admin",
    "PartitionDescription": "ottla.admin",
    "TopicDescription": "ottla.admin",
    "OffsetAndMetadata": "ottla.types",
    "TopicPartition": "ottla.types",
    "Cluster": "ottla.cluster",
    "mirror": "ottla.remote.mirror",
    "MirrorStats": "ottla.remote.mirror",
}
_SUBMODULES = ("admin", "types", "_arrow", "_display")


def __getattr__(name: str) -> object:
    """Import a lazily exported name on first use, then keep it."""
    from importlib import import_module

    if name in _SUBMODULES:  # `import ottla; ottla.admin.ConfigValue` as before
        return import_module(f"ottla.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ottla' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


# A cluster's address instead of a data directory: bootstrap_servers=...,
# or a first argument "kafka://host:port" (ottla.remote; confluent-kafka is
# imported only then).
_SCHEME = "kafka://"


def _is_remote(target: object, bootstrap_servers: object) -> bool:
    return bootstrap_servers is not None or (isinstance(target, str) and target.startswith(_SCHEME))


# The names used in Kafka's documentation of these errors.
OffsetOutOfRange = OffsetOutOfRangeError
RecordTooLarge = RecordTooLargeError
ProducerFenced = ProducerFencedError

# kafka-python's names (``kafka.errors``) for the same errors, so code
# written against it catches ottla's. ottla's classes that already carry
# Kafka's name (InvalidTopicError, UnknownTopicOrPartitionError,
# TopicAlreadyExistsError, InvalidPartitionsError, OffsetOutOfRangeError,
# OffsetMetadataTooLargeError, NoOffsetForPartitionError, CorruptRecordError,
# InvalidRecordError, IllegalStateError) need none; docs/embedded.md lists
# them all.
KafkaError = OttlaError
KafkaTimeoutError = OttlaTimeoutError
MessageSizeTooLargeError = RecordTooLargeError
CorruptRecordException = CorruptRecordError
InvalidConfigurationError = InvalidConfigError
UnsupportedCompressionTypeError = UnsupportedCompressionError
UnsupportedCodecError = UnsupportedCompressionError
KafkaStorageError = StorageError
NonEmptyGroupError = GroupNotEmptyError


class Producer(_CoreProducer, metaclass=_Door):
    """Appends records to topics in a data directory.

    ``Producer(path, **config)`` with Kafka's setting names: ``linger_ms``
    (default 5), ``batch_size`` (bytes, default 262144), ``fsync``
    (``"never"``, ``"interval"`` or ``"always"``), ``fsync_interval_ms``,
    ``auto_create_topics``, ``num_partitions`` (for auto-created topics),
    ``acks`` (0, 1, -1/``"all"``: when a future is done; see
    docs/configuration.md), ``key_serializer``, ``value_serializer`` and
    ``retention_check_interval_ms`` (Kafka's
    ``log.retention.check.interval.ms``, default 300000: how often expired
    segments of every topic in the directory are deleted while the producer
    is open; one process at a time does it).

    ``send()`` returns a future; its ``get()`` waits until the record is in
    the log and returns its :class:`RecordMetadata`:

    >>> with ottla.Producer("data") as p:
    ...     md = p.send("events", b"v", key=b"k").get()
    ...     print(md.partition, md.offset)
    0 0

    Order on failure (as Kafka's idempotent producer): a partition's log
    holds a prefix of the records this producer sent to it, up to the first
    failed append you have not been told about. When appending a batch
    fails (``DiskFullError``, say), every other queued batch of that
    partition fails with the same error, and records sent to the partition
    afterwards fail too (``send()`` does not raise; their futures do) until
    the error reaches you: ``flush()`` raising it, or a failed future of
    the partition raising it (``get()``/``result()``, a ``send_many``
    ``BatchFuture``) or returning it (``exception``, an errback). Sends then
    append again at the next offset, with no gap:

    >>> p = ottla.Producer("data")
    >>> try:
    ...     p.flush()
    ... except ottla.DiskFullError:
    ...     pass  # free space; records sent from now on are appended
    >>> p.close()

    The same code runs against a Kafka-protocol cluster (``ottla serve``,
    Apache Kafka, Redpanda) when given its address instead of a path:
    ``Producer(bootstrap_servers="host:9092", **config)``, or
    ``Producer("kafka://host:9092", **config)`` (``pip install
    'ottla[kafka]'``; docs/remote.md).
    """

    __slots__ = ()

    @overload
    def __new__(
        cls,
        path: _Path,
        *,
        linger_ms: int = 5,
        batch_size: int = 262144,
        fsync: Literal["never", "interval", "always"] = "never",
        fsync_interval_ms: int = 1000,
        auto_create_topics: bool = True,
        num_partitions: int = 1,
        key_serializer: Callable[[Any], _BytesLike | None] | None = None,
        value_serializer: Callable[[Any], _BytesLike | None] | None = None,
        acks: _Acks | None = None,
        client_id: str | None = None,
        retention_check_interval_ms: int = 300000,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60000,
    ) -> Self: ...
    @overload
    def __new__(cls, path: None = None, *, bootstrap_servers: str, **config: Any) -> Self: ...  # noqa: F811  (overloads)
    def __new__(  # noqa: F811  (overloads)
        cls,
        path: str | PathLike[str] | None = None,
        *,
        bootstrap_servers: str | None = None,
        **config: Any,
    ) -> Self:
        """A producer of the data directory ``path``, or of the cluster at
        ``bootstrap_servers`` (or ``path="kafka://host:port"``)."""
        if not _is_remote(path, bootstrap_servers):
            if path is None:
                raise TypeError(
                    "Producer() needs a data directory path, a 'kafka://host:port' "
                    "address or bootstrap_servers='host:port'"
                )
            return super().__new__(cls, path, **config)
        from ottla.remote._kafka import target_servers
        from ottla.remote.producer import Producer as _Remote

        servers = target_servers("Producer", path, bootstrap_servers)
        assert servers is not None
        remote: Any = _Remote(servers, **config)
        return remote  # type: ignore[no-any-return]


class Consumer(_CoreConsumer, metaclass=_Door):
    """Reads records from topics in a data directory.

    ``Consumer(path, *topics, group_id=None, auto_offset_reset="latest",
    enable_auto_commit=True, consumer_timeout_ms=None, ...)``. Iterate it
    (blocking; ``consumer_timeout_ms`` ends the iteration when idle), or call
    ``poll(timeout_ms, max_records)`` for ``{TopicPartition: [Record]}``:

    >>> with ottla.Producer("data") as p:
    ...     _ = p.send_many("events", [b"a", b"b"]).get()
    >>> with ottla.Consumer("data", "events", group_id="billing",
    ...                     auto_offset_reset="earliest") as c:
    ...     for batch in c.poll(timeout_ms=1000).values():
    ...         for record in batch:
    ...             print(record.value)
    ...     c.commit()
    b'a'
    b'b'

    Consumers with the same ``group_id`` (in any process on the directory)
    split the partitions: ``subscribe(topics, on_assign=..., on_revoke=...,
    on_lost=...)`` or ``subscribe(pattern="orders-.*")``;
    ``partition_assignment_strategy`` (``"cooperative-sticky"``,
    ``"range"``, ``"roundrobin"``) and ``session_timeout_ms`` as in Kafka.
    Callbacks run inside ``poll()``/iteration on the calling thread.

    A consumer creates nothing: ``path`` must be a data directory already
    (made by a ``Producer``, a ``Broker`` or ``Admin(path, create=True)``),
    else :class:`ottla.DataDirectoryNotFoundError` naming the path. A
    subscribed topic that does not exist yet is waited for, as in Kafka;
    ``assign()`` of a missing partition raises
    :class:`ottla.UnknownTopicOrPartitionError`. ``auto_create_topics=True``
    (Kafka's ``allow.auto.create.topics``; default ``False``) creates
    missing topics instead.

    ``busy_poll_us`` (default 0: off; at most 5000) lets a waiting
    ``poll()``/iteration spin for new records for up to that many
    microseconds, with the GIL released, before it sleeps on the futex. The
    spin is adaptive: it only happens while records have been arriving within
    that time of each other, and stops for a while when the spinning thread
    finds itself descheduled, so an idle consumer sleeps and uses no CPU.
    It pays only with a core to spare (a consumer fed every few tens of
    microseconds spends that core spinning):

    >>> c = ottla.Consumer("data", "ticks", busy_poll_us=50)
    >>> c.close()

    In a notebook, read straight into Arrow or pandas (``pip install
    'ottla[arrow]'``): ``poll_arrow()``, ``read_arrow()``, ``to_pandas()``.

    The same code reads a Kafka-protocol cluster (``ottla serve``, Apache
    Kafka, Redpanda) given its address instead of a path, groups going
    through the cluster's coordinator:
    ``Consumer(*topics, bootstrap_servers="host:9092", **config)`` or
    ``Consumer("kafka://host:9092", *topics, **config)`` (``pip install
    'ottla[kafka]'``; docs/remote.md).
    """

    __slots__ = ()

    @overload
    def __new__(
        cls,
        path: _Path,
        *topics: str | Sequence[str],
        group_id: str | None = None,
        auto_offset_reset: _OffsetReset = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        consumer_timeout_ms: float | None = None,
        max_poll_records: int = 500,
        max_partition_fetch_bytes: int = 1048576,
        check_crcs: bool = True,
        auto_create_topics: bool = False,
        num_partitions: int = 1,
        key_deserializer: Callable[[bytes], Any] | None = None,
        value_deserializer: Callable[[bytes], Any] | None = None,
        client_id: str | None = None,
        partition_assignment_strategy: str | Sequence[str] | None = None,
        session_timeout_ms: int = 10000,
        busy_poll_us: int = 0,
        isolation_level: Literal["read_uncommitted", "read_committed"] = "read_uncommitted",
    ) -> Self: ...
    @overload
    def __new__(  # noqa: F811  (overloads)
        cls, *topics: str | Sequence[str], bootstrap_servers: str, **config: Any
    ) -> Self: ...
    def __new__(  # noqa: F811  (overloads)
        cls,
        *args: Any,
        bootstrap_servers: str | None = None,
        **config: Any,
    ) -> Self:
        """A consumer of the data directory ``args[0]`` (topics after it),
        or of a cluster: ``bootstrap_servers=...`` (every positional
        argument a topic) or ``args[0] == "kafka://host:port"``."""
        target = args[0] if args else config.get("path")
        if not _is_remote(target, bootstrap_servers):
            return super().__new__(cls, *args, **config)
        from ottla.remote._kafka import target_servers
        from ottla.remote.consumer import Consumer as _Remote

        if bootstrap_servers is not None:
            servers = target_servers("Consumer", None, bootstrap_servers)
            topics = args
        else:
            servers = target_servers("Consumer", args[0], None)
            topics = args[1:]
        assert servers is not None
        remote: Any = _Remote(servers, *topics, **config)
        return remote  # type: ignore[no-any-return]

    def poll_arrow(
        self,
        timeout_ms: float = 0,
        max_records: int = 100_000,
        max_bytes: int | None = 52_428_800,
    ) -> Any:
        """Fetch records as one ``pyarrow.RecordBatch``, waiting up to
        ``timeout_ms`` when none are ready (zero rows if none came).

        Columns, in Kafka's shape: ``topic`` (dictionary<int32, string>),
        ``partition`` (int32), ``offset`` (int64), ``timestamp``
        (timestamp[ms, tz=UTC]), ``key`` and ``value`` (binary, null for a
        null key/value), ``headers`` (list<struct<key: string, value:
        binary>>, empty when none). The buffers are built in Rust as the log
        is read, with the GIL released, and handed over without copying.

        At most ``max_records`` records, and no more key, value and header
        bytes than ``max_bytes`` (default 50 MiB, Kafka's ``fetch.max.bytes``;
        None for no limit; a single larger record still comes alone).
        Positions advance exactly as with ``poll()``: a commit covers only
        records in returned batches. Deserializers are not applied:

        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("clicks", [b"x", b"y"]).get()
        >>> with ottla.Consumer("data", "clicks", group_id="dash",
        ...                     auto_offset_reset="earliest") as c:
        ...     batch = c.poll_arrow(timeout_ms=1000)
        ...     c.commit()
        >>> batch.num_rows, batch.schema.names
        (2, ['topic', 'partition', 'offset', 'timestamp', 'key', 'value', 'headers'])
        >>> batch.column("value")[0].as_py()
        b'x'
        """
        from ottla import _arrow

        _arrow.require()
        return _arrow.record_batch(self._poll_arrow(max_records, max_bytes, timeout_ms))

    def read_arrow(
        self,
        max_records: int | None = None,
        max_bytes: int | None = None,
        *,
        start: _arrow.Start = None,
    ) -> Any:
        """The records of this consumer's topics from ``start`` up to their
        end offsets *as they are when the call begins* (the high
        watermarks), as a ``pyarrow.Table``; never waits, and records
        appended meanwhile are left out. A look at the data: the
        consumer's positions, pauses, group membership and committed
        offsets stay as they were, so calling again returns the same rows
        (and any appended since). ``max_records``/``max_bytes`` bound the
        whole table.

        It reads every partition of the subscribed topics (a group
        member's share or not), or the ``assign()``-ed partitions, each
        from ``start``:

        - ``None`` (default): ``"committed"`` with a ``group_id``, else
          ``"earliest"`` (never ``auto_offset_reset``);
        - ``"earliest"``: the log start offset: everything kept;
        - ``"latest"``: the end offset: no rows, the schema only;
        - ``"committed"``: the group's committed offset, or the log start
          where it has committed none: what the group has yet to process
          (needs a ``group_id``);
        - an int ``n``: offset ``n``; a negative ``n``: ``-n`` offsets
          before the end (the last ``-n`` records, unless compacted);
        - a ``datetime`` with a timezone (a ``pandas.Timestamp`` too): the
          first record stamped at or after it, as ``offsets_for_times``;
          a ``timedelta``: that long before now;
        - ``"position"``: this consumer's own read, not a look: its
          assigned, unpaused partitions from its positions, which then
          advance past what is returned as with ``poll()`` (a commit covers
          those rows; the next call returns what arrived since).

        A start offset outside ``[log start, end]`` is moved to the nearer
        one. A batch that cannot be read (``CorruptRecordError``) raises;
        with ``"position"``, the rows before it are returned first and the
        next call raises.

        >>> with ottla.Producer("data", num_partitions=2) as p:
        ...     _ = [p.send("orders", b"o", partition=i % 2) for i in range(5)]
        >>> c = ottla.Consumer("data", "orders")   # no group: from the earliest
        >>> t = c.read_arrow()
        >>> t.group_by("partition").aggregate([("offset", "count")]).sort_by("partition").to_pylist()
        [{'partition': 0, 'offset_count': 3}, {'partition': 1, 'offset_count': 2}]
        >>> c.read_arrow().num_rows                   # a look moves nothing
        5
        >>> sorted(c.read_arrow(start=-1).column("offset").to_pylist())  # the last of each
        [1, 2]
        >>> c.read_arrow(start="position").num_rows  # its own read: auto_offset_reset="latest"
        0
        >>> c.close()
        """
        from ottla import _arrow

        _arrow.require()
        return _arrow.table(_arrow.read(self, start, max_records, max_bytes))

    def to_pandas(
        self,
        max_records: int | None = None,
        max_bytes: int | None = None,
        *,
        start: _arrow.Start = None,
        **to_pandas_kwargs: Any,
    ) -> Any:
        """``read_arrow(max_records, max_bytes, start=start)`` as a
        ``pandas.DataFrame`` (through pyarrow's
        ``Table.to_pandas(**to_pandas_kwargs)``): the same rows, and the
        same look that moves no position and commits nothing. ``topic`` is
        categorical, ``timestamp`` is ``datetime64[ms, UTC]``,
        ``key``/``value`` are ``bytes`` (or None):

        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("orders", [b"apple", b"pear"]).get()
        >>> with ottla.Consumer("data", "orders") as c:
        ...     df = c.to_pandas()
        >>> df["value"].str.decode("utf-8").tolist()
        ['apple', 'pear']
        >>> int(df.set_index("timestamp").resample("1min").size().sum())
        2
        """
        from ottla import _arrow

        _arrow.require(pandas=True)
        return _arrow.to_pandas(
            self.read_arrow(max_records, max_bytes, start=start), **to_pandas_kwargs
        )

    def commit_async(
        self,
        offsets: Mapping[TopicPartition | tuple[str, int], Any] | None = None,
        callback: Callable[[dict[TopicPartition, OffsetAndMetadata], Exception | None], Any]
        | None = None,
    ) -> Future[None]:
        """kafka-python's ``commit_async``: commit, then call
        ``callback(offsets, exception)`` (``exception`` None on success).

        A commit is an append to the page cache (microseconds), so it is done
        before this returns, on the calling thread, and so is the callback;
        nothing runs in the background. ``offsets`` given to the callback are
        ``{TopicPartition: OffsetAndMetadata}``: the ones passed, or the
        positions committed. Returns a ``concurrent.futures.Future``, already
        done: ``result()`` is None, or raises the commit's error (which
        ``commit_async`` itself never raises):

        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("orders", [b"a", b"b"]).get()
        >>> def done(offsets, exc):
        ...     print(offsets, exc)
        >>> with ottla.Consumer("data", "orders", group_id="g",
        ...                     auto_offset_reset="earliest") as c:
        ...     _ = c.poll(timeout_ms=1000)
        ...     c.commit_async(callback=done).result()
        {TopicPartition(topic='orders', partition=0): OffsetAndMetadata(offset=2, metadata=None)} None
        """
        from concurrent.futures import Future

        from ottla.types import OffsetAndMetadata, TopicPartition

        future: Future[None] = Future()
        error: Exception | None = None
        committed: dict[TopicPartition, OffsetAndMetadata] = {}
        try:
            if offsets is not None:
                for key, value in offsets.items():
                    committed[TopicPartition(*key)] = (
                        value
                        if isinstance(value, OffsetAndMetadata)
                        else OffsetAndMetadata(
                            getattr(value, "offset", value), getattr(value, "metadata", None)
                        )
                    )
            self.commit(offsets)
            if offsets is None:
                for tp in sorted(self.assignment()):
                    offset = self.committed(tp)
                    if offset is not None:
                        committed[tp] = OffsetAndMetadata(offset)
        except Exception as e:  # handed to the callback and the future
            error = e
            future.set_exception(e)
        else:
            future.set_result(None)
        if callback is not None:
            callback(committed, error)
        return future

    def _repr_html_(self) -> str:
        """Assignment, positions, committed offsets and lag, in Jupyter."""
        from ottla import _display

        return _display.consumer_html(self)


__all__ = [
    "Admin",
    "BatchFuture",
    "Broker",
    "ClosedError",
    "Cluster",
    "CompactionStats",
    "ConfigResource",
    "ConfigResourceType",
    "Consumer",
    "ConsumerGroupMetadata",
    "CorruptRecordError",
    "CorruptRecordException",
    "DataDirectoryNotFoundError",
    "DiskFullError",
    "FutureRecordMetadata",
    "GroupDescription",
    "GroupMemberConflictError",
    "GroupNotEmptyError",
    "GroupOffset",
    "IllegalStateError",
    "InvalidConfigError",
    "InvalidConfigurationError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "InvalidTxnStateError",
    "KafkaError",
    "KafkaStorageError",
    "KafkaTimeoutError",
    "MemberDescription",
    "MessageSizeTooLargeError",
    "MirrorStats",
    "NewPartitions",
    "NewTopic",
    "NoOffsetForPartitionError",
    "NonEmptyGroupError",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "OffsetMetadataTooLargeError",
    "OffsetOutOfRange",
    "OffsetOutOfRangeError",
    "OttlaError",
    "OttlaTimeoutError",
    "PartitionDescription",
    "Producer",
    "ProducerFenced",
    "ProducerFencedError",
    "Record",
    "RecordMetadata",
    "RecordTooLarge",
    "RecordTooLargeError",
    "StorageError",
    "TopicAlreadyExistsError",
    "TopicDescription",
    "TopicPartition",
    "UnknownTopicOrPartitionError",
    "UnsupportedCodecError",
    "UnsupportedCompressionError",
    "UnsupportedCompressionTypeError",
    "__version__",
    "mirror",
]

del annotations, TYPE_CHECKING, overload  # not part of the API (the __future__ import; the guard)
