"""Type stubs for the native module ``ottla._core`` (the Rust engine's door).

This file is the documented surface of the classes implemented in Rust: IDEs
show these docstrings. ``ottla``, ``ottla.aio`` and ``ottla.admin`` re-export
or wrap them; import them from there. The ``>>>`` examples are run by
tests/test_docstring_examples.py, each in an empty temporary directory.
"""

from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from typing import Any, Literal, TypeAlias

from typing_extensions import Self, disjoint_base, final

from ottla.types import TopicPartition

__all__ = [
    "AioProducer",
    "ArrowBatch",
    "BatchFuture",
    "Broker",
    "ClosedError",
    "Consumer",
    "ConsumerGroupMetadata",
    "CorruptRecordError",
    "DataDirectoryNotFoundError",
    "DiskFullError",
    "FutureRecordMetadata",
    "GroupMemberConflictError",
    "GroupNotEmptyError",
    "IllegalStateError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "InvalidTxnStateError",
    "NoOffsetForPartitionError",
    "OffsetAndTimestamp",
    "OffsetMetadataTooLargeError",
    "OffsetOutOfRangeError",
    "OttlaError",
    "OttlaTimeoutError",
    "Producer",
    "ProducerFencedError",
    "Record",
    "RecordIter",
    "RecordMetadata",
    "RecordTooLargeError",
    "RecordWaiter",
    "RemoteBoundSend",
    "RemoteFutureRecordMetadata",
    "RemoteSendMethod",
    "RemoteSender",
    "SendFuture",
    "SendManyFuture",
    "StorageError",
    "TopicAlreadyExistsError",
    "UnknownTopicOrPartitionError",
    "UnsupportedCompressionError",
    "_Admin",
    "__version__",
    "acls",
    "create_acls",
    "delete_acls",
    "delete_scram_user",
    "first_error",
    "make_certificates",
    "message_fields_direct",
    "message_values",
    "record_iter_direct",
    "records_allocated_directly",
    "records_freed_directly",
    "records_kept",
    "refcounts_in_place",
    "remote_record",
    "remote_record_iter",
    "remote_records",
    "scram_users",
    "set_scram_user",
]

__version__: str
"""The version of the installed ottla package."""

_Path: TypeAlias = str | PathLike[str]
_BytesLike: TypeAlias = bytes | bytearray | memoryview | str
_Headers: TypeAlias = Sequence[tuple[str, _BytesLike | None]] | Mapping[str, _BytesLike | None]
_TP: TypeAlias = TopicPartition | tuple[str, int]
# Kafka's acks: 0, 1, -1/"all", also as strings (Kafka's config files).
_Acks: TypeAlias = Literal[0, 1, -1, "all", "0", "1", "-1"]
_RebalanceCallback: TypeAlias = Callable[[Any, list[TopicPartition]], Any]
# Kafka's names, and the older ones its clients still accept.
_OffsetReset: TypeAlias = Literal[
    "earliest", "latest", "none", "smallest", "beginning", "largest", "end"
]

# ---- errors ------------------------------------------------------------------

class OttlaError(Exception):
    """Base class of every error ottla raises."""

class InvalidTopicError(OttlaError):
    """A topic name breaks Kafka's naming rules."""

class UnknownTopicOrPartitionError(OttlaError):
    """The topic or partition does not exist."""

class TopicAlreadyExistsError(OttlaError):
    """``create_topic()`` of a topic that exists."""

class InvalidPartitionsError(OttlaError):
    """A partition count that is not allowed."""

class InvalidConfigError(OttlaError):
    """An unknown setting or a bad value."""

class OffsetMetadataTooLargeError(OttlaError):
    """Commit metadata longer than 4096 bytes (Kafka's ``offset.metadata.max.bytes``)."""

class OffsetOutOfRangeError(OttlaError):
    """An offset below the log start or past the log end."""

class NoOffsetForPartitionError(OttlaError):
    """No committed offset and ``auto_offset_reset='none'``."""

class RecordTooLargeError(OttlaError):
    """A record larger than ``max.message.bytes``."""

class CorruptRecordError(OttlaError):
    """A stored batch failed its checksum or framing; the message names the
    file and byte position."""

class InvalidRecordError(OttlaError):
    """A record batch that is not valid record format v2."""

class UnsupportedCompressionError(OttlaError):
    """A batch compressed with a codec this build cannot read."""

class StorageError(OttlaError):
    """An operating-system error on a file of the data directory."""

class DiskFullError(StorageError):
    """The disk (or a file size limit) ran out of room; the log stays readable."""

class GroupMemberConflictError(OttlaError):
    """The group is coordinated by the other door (a broker on this
    directory), so this member cannot join."""

class GroupNotEmptyError(OttlaError):
    """A group operation that needs the group empty (delete, reset offsets)
    while it has live members."""

class IllegalStateError(OttlaError):
    """An operation that does not fit the object's state."""

class OttlaTimeoutError(OttlaError):
    """A blocking call ran out of time."""

class ClosedError(OttlaError):
    """The producer or consumer has been closed."""

class ProducerFencedError(OttlaError):
    """A newer producer with the same ``transactional_id`` took over, or
    this producer's transaction timed out and was aborted (Kafka's
    PRODUCER_FENCED): close this producer."""

class InvalidTxnStateError(OttlaError):
    """A transactional call out of order, e.g. ``commit_transaction()``
    with no transaction begun, or a send outside a transaction (Kafka's
    INVALID_TXN_STATE)."""

class DataDirectoryNotFoundError(OttlaError):
    """The path given to a Consumer or Admin is not an ottla data directory
    (it does not exist, or has no .ottla/ inside); only a Producer, a Broker
    or Admin(path, create=True) creates one."""

# ---- values ------------------------------------------------------------------

@final
class RecordMetadata:
    """Where an acknowledged record was stored (``offset`` is -1 for a
    producer with ``acks=0``, as in Kafka's clients). Picklable."""

    def __new__(cls, topic: str, partition: int, offset: int, timestamp: int) -> Self: ...
    def __getnewargs__(self) -> tuple[str, int, int, int]: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

    @property
    def topic(self) -> str:
        """The record's topic."""
    @property
    def partition(self) -> int:
        """The partition the record was appended to."""
    @property
    def offset(self) -> int:
        """The record's offset in its partition."""
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch (the record's create time)."""
    @property
    def topic_partition(self) -> TopicPartition:
        """``TopicPartition(topic, partition)``."""

@final
class Record:
    """A record read from a topic.

    ``topic``, ``key`` and ``value`` are plain read-only fields; a record of
    a cluster's consumer (``bootstrap_servers``, no deserializers) reads its
    partition, offset, timestamp and headers from librdkafka's message when
    they are asked for. It behaves as any other record.

    Records pickle (for ``multiprocessing``) and copy; ``copy.copy`` returns
    the record itself, as it is immutable. ``Record(...)`` makes one by hand:

    >>> r = ottla.Record("orders", 0, 41, 1_700_000_000_000, key=b"k", value=b"v",
    ...                  headers=[("trace", b"1")])
    >>> r
    Record(topic='orders', partition=0, offset=41, timestamp=1700000000000, key=b'k', value=b'v', headers=[('trace', b'1')])
    >>> import pickle
    >>> pickle.loads(pickle.dumps(r)).headers
    [('trace', b'1')]
    """

    def __new__(
        cls,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: Any = None,
        value: Any = None,
        headers: Iterable[tuple[str, bytes | None]] | None = None,
    ) -> Self: ...
    def __reduce__(
        self,
    ) -> tuple[type[Record], tuple[str, int, int, int, Any, Any, list[tuple[str, bytes | None]]]]:
        """Pickling (and ``copy.deepcopy``): the constructor and its arguments."""
    def __copy__(self) -> Self:
        """The record itself: it is immutable."""

    @property
    def topic(self) -> str:
        """The record's topic."""
    @property
    def partition(self) -> int:
        """The record's partition."""
    @property
    def offset(self) -> int:
        """The record's offset in its partition."""
    @property
    def timestamp(self) -> int:
        """Milliseconds since the epoch (create time, or the time given to ``send``)."""
    @property
    def key(self) -> Any:
        """bytes (or the key_deserializer's result), or None."""
    @property
    def value(self) -> Any:
        """bytes (or the value_deserializer's result), or None."""
    @property
    def headers(self) -> list[tuple[str, bytes | None]]:
        """``[(key, value), ...]`` with ``str`` keys and ``bytes | None`` values."""
    @property
    def topic_partition(self) -> TopicPartition:
        """``TopicPartition(topic, partition)``."""

# ---- the consumer of a cluster (python/ottla/remote/consumer.py) -------------

def remote_records(
    messages: list[Any],
    key_deserializer: Callable[[bytes], Any] | None = None,
    value_deserializer: Callable[[bytes], Any] | None = None,
) -> tuple[list[Record], BaseException | None]:
    """``(records, error)``: a :class:`Record` for each confluent-kafka
    ``Message`` (without an error) of ``messages``, in one call. A
    deserializer that raises stops there: ``records`` are those before the
    message it failed on and ``error`` its exception (else ``None``)."""

def remote_record_iter(messages: list[Any], start: int, stop: int) -> RecordIter:
    """The :class:`Record` s of ``messages[start:stop]`` (confluent-kafka
    ``Message`` s without an error), without deserializers, each made as it
    is handed out: the remote consumer's iteration."""

@final
class RecordIter:
    """An iterator over the records of a range of fetched messages
    (:func:`remote_record_iter`); like a list's iterator, it tells how
    many are left and can be moved."""

    def __iter__(self) -> RecordIter: ...
    def __next__(self) -> Record: ...
    def __length_hint__(self) -> int:
        """How many records are left."""

    def __setstate__(self, state: int) -> None:
        """Moves the iterator to the ``state``-th message of its range (the
        end if past it)."""

def record_iter_direct() -> bool:
    """Whether :class:`RecordIter`'s ``next()`` is ottla's own C function
    (the type's layout checked when the module loads); otherwise PyO3's,
    slower."""

def remote_record(
    message: Any,
    key_deserializer: Callable[[bytes], Any] | None = None,
    value_deserializer: Callable[[bytes], Any] | None = None,
) -> Record:
    """The :class:`Record` of one confluent-kafka ``Message``; a
    deserializer's exception propagates."""

def first_error(messages: list[Any]) -> int:
    """The index of the first confluent-kafka ``Message`` of ``messages``
    with an error, or -1 if none has one."""

def message_values(messages: list[Any]) -> list[Any]:
    """``[m.value() for m in messages]``, one C call a message."""

def message_fields_direct() -> bool:
    """Whether a ``Message``'s fields are read by calling confluent-kafka's
    C functions directly (their layout checked at first use); otherwise
    through the method descriptors, slower."""

def records_allocated_directly() -> bool:
    """Whether records are made with ``PyObject_GC_New`` and their value
    moved into place (PyO3's object layout checked when the module loads);
    otherwise through PyO3's generic constructor, slower."""

def records_freed_directly() -> bool:
    """Whether ``Record``'s ``tp_dealloc`` is ottla's own (the type's
    layout checked when the module loads); otherwise PyO3's, slower."""

def records_kept() -> int:
    """How many freed records' memory is kept now for the next records
    (at most 512; only where ``Record``'s own ``tp_dealloc`` is in place
    and counts change in place)."""

def refcounts_in_place() -> bool:
    """Whether the per-record paths change reference counts in place, as a
    C extension built for the stable ABI does (CPython without reference
    debugging); otherwise through the interpreter's functions."""

# ---- the producer of a cluster (python/ottla/remote/producer.py) -------------

@final
class RemoteFutureRecordMetadata:
    """The pending result of one remote ``send()``
    (``ottla.remote.producer.FutureRecordMetadata``): the methods of
    :class:`FutureRecordMetadata`, completed by librdkafka's delivery
    report, which calls the future itself with ``(error, message)``."""

    _owner: Any
    """The ``Producer`` that sent the record."""
    _msg: Any
    """librdkafka's delivered message, once acknowledged."""
    _md: RecordMetadata | None
    """The :class:`RecordMetadata`, made from ``_msg`` when asked for."""
    _exc: BaseException | None
    """The send's error, once failed."""
    _callbacks: list[Callable[[RecordMetadata], Any]] | None
    """``add_callback`` functions waiting for the acknowledgement."""
    _errbacks: list[Callable[[BaseException], Any]] | None
    """``add_errback`` functions waiting for an error."""

    def __new__(cls, owner: Any) -> Self: ...
    def __call__(self, err: Any, msg: Any) -> None:
        """librdkafka's delivery report: ``(KafkaError | None, Message)``."""
    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (seconds; None: forever) for the broker's acknowledgement and
        return the :class:`RecordMetadata`; raises the send's error."""
    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Same as ``get()``."""
    def _metadata(self) -> RecordMetadata: ...
    def _reported(self) -> None: ...
    def _is_done(self) -> bool: ...
    @property
    def is_done(self) -> bool:
        """True once acknowledged or failed."""
    def done(self) -> bool:
        """True once acknowledged or failed."""
    def succeeded(self) -> bool:
        """True once acknowledged."""
    def failed(self) -> bool:
        """True once failed."""
    @property
    def exception(self) -> BaseException | None:
        """The send's error, else None."""
    def add_callback(self, f: Callable[[RecordMetadata], Any]) -> Self:
        """Call ``f(record_metadata)`` once acknowledged; returns this future."""
    def add_errback(self, f: Callable[[BaseException], Any]) -> Self:
        """Call ``f(exception)`` if the send fails; returns this future."""

@final
class RemoteSender:
    """A remote producer's send state (its ``_sender``): what
    ``send(topic, value)`` with a ``bytes`` value to a topic the producer
    knows needs to be done in one call, and no reference to the producer
    (``serve`` and ``produce_slow`` are the class's functions, called with
    the producer first)."""

    def __new__(
        cls,
        produce: Callable[..., Any],
        fast: dict[str, list[int]],
        batch_size: int,
        poll_every: int,
        serve: Callable[[Any], Any],
        produce_slow: Callable[..., Any],
    ) -> Self: ...

@final
class RemoteSendMethod:
    """``ottla.remote.producer.Producer.send``: a descriptor over the Python
    method; read from a producer with a ``_sender``, a
    :class:`RemoteBoundSend`."""

    def __new__(cls, function: Callable[..., RemoteFutureRecordMetadata]) -> Self: ...
    def __get__(self, obj: Any, owner_type: Any = None, /) -> Any: ...
    @property
    def __func__(self) -> Callable[..., RemoteFutureRecordMetadata]:
        """The Python ``send`` function."""

@final
class RemoteBoundSend:
    """``producer.send`` of a cluster's producer: the common case in one
    call, anything else through the Python method."""

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteFutureRecordMetadata:
        """``send(topic, value=None, key=None, partition=None,
        timestamp_ms=None, headers=None, *, timestamp=None)``."""
    @property
    def __self__(self) -> Any:
        """The producer."""
    @property
    def __func__(self) -> Callable[..., RemoteFutureRecordMetadata]:
        """The Python ``send`` function."""

@final
class ConsumerGroupMetadata:
    """What ``Producer.send_offsets_to_transaction`` needs to know of a
    consumer's group (``Consumer.consumer_group_metadata()``)."""

    @property
    def group_id(self) -> str:
        """The group's id."""
    @property
    def generation_id(self) -> int:
        """-1: embedded groups have no generations to fence with."""
    @property
    def member_id(self) -> str:
        """Empty for embedded groups."""

@final
class OffsetAndTimestamp:
    """Result entry of ``Consumer.offsets_for_times``."""

    def __new__(cls, offset: int, timestamp: int) -> Self: ...
    def __getnewargs__(self) -> tuple[int, int]: ...
    def __eq__(self, other: object, /) -> bool: ...
    __hash__: None  # type: ignore[assignment]

    @property
    def offset(self) -> int:
        """Offset of the earliest record at or after the asked timestamp."""
    @property
    def timestamp(self) -> int:
        """That record's timestamp (ms since the epoch)."""

# ---- producer ----------------------------------------------------------------

@final
class FutureRecordMetadata:
    """The pending result of one ``Producer.send()``.

    With ``acks=0`` it is done as soon as ``send()`` returns: ``get()`` gives
    metadata with offset -1 at once, callbacks run at once, errbacks never
    (a failed append is raised by ``flush()``/``close()``).

    A free list keeps the objects of a ``send()`` loop that drops its futures
    from going through the allocator.
    """

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (seconds; None waits forever) until the record is in the log
        and return its :class:`RecordMetadata`; raises the append's error if
        it failed."""
    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Same as ``get()``, as in ``concurrent.futures``."""
    @property
    def is_done(self) -> bool:
        """True once the record's batch was appended or failed."""
    def done(self) -> bool:
        """True once the record's batch was appended or failed."""
    def succeeded(self) -> bool:
        """True once the record is in the log."""
    def failed(self) -> bool:
        """True once the record's append failed."""
    @property
    def exception(self) -> BaseException | None:
        """The exception if the send failed, else None."""
    def add_callback(self, f: Callable[[RecordMetadata], Any]) -> Self:
        """Call ``f(record_metadata)`` once the record is appended; returns
        this future."""
    def add_errback(self, f: Callable[[BaseException], Any]) -> Self:
        """Call ``f(exception)`` if the send fails; returns this future."""

@final
class BatchFuture:
    """The pending result of one ``Producer.send_many()``."""

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        """Wait for every record; returns a list of :class:`RecordMetadata`
        in send order (raises the first failed append's error)."""
    def wait(self, timeout: float | None = None) -> None:
        """Wait for every record without building metadata objects."""
    def done(self) -> bool:
        """True once every record's batch was appended or failed."""
    def __len__(self) -> int:
        """The number of records sent."""

@disjoint_base
class Producer:
    """Appends records to topics in a data directory (``ottla.Producer``
    subclasses this; see its docstring for the settings and the order
    guarantees on failure).

    >>> with ottla.Producer("data") as producer:
    ...     md = producer.send("events", b"hello", key=b"user-1").get()
    ...     futures = producer.send_many("events", [b"a", b"b"]).get()
    >>> md.topic, md.partition, md.offset
    ('events', 0, 0)
    >>> [m.offset for m in futures]
    [1, 2]
    """

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
    ) -> Self:
        """Open a producer on the data directory ``path`` (created if
        missing; a config dict is a ``TypeError``: settings are keywords).
        ``client_id`` is accepted for Kafka compatibility.

        ``acks`` (default 1; anything but 0, 1, -1, ``"all"`` or those as
        strings is a ``ValueError``) says when a send's future is done:
        ``0`` as soon as ``send()`` returns (offset -1; errors reach only
        ``flush()``/``close()``), ``1`` and ``"all"`` (the same, with no
        replicas) once the record is in the log, after its fsync with
        ``fsync="always"``. Durability is ``fsync``'s (docs/configuration.md).

        ``retention_check_interval_ms`` (Kafka's
        ``log.retention.check.interval.ms``, default five minutes): how
        often, while the producer is open, segments past their topic's
        ``retention.ms`` or ``retention.bytes`` are deleted in every topic
        of the directory, even when nothing rolls a segment. One process
        at a time does a round; the others skip it.

        ``transactional_id`` (Kafka's ``transactional.id``) makes a
        transactional producer: call ``init_transactions()`` once, then
        send records between ``begin_transaction()`` and
        ``commit_transaction()`` / ``abort_transaction()``. A transaction
        open longer than ``transaction_timeout_ms`` (Kafka's
        ``transaction.timeout.ms``, at most 900000) is aborted by the next
        coordinator that looks (another producer's ``init_transactions()``,
        a broker on the directory)."""
    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: _Headers | None = None,
        *,
        timestamp: int | None = None,
    ) -> FutureRecordMetadata:
        """Queue a record; the future resolves once it is in the log.

        With no ``partition``, a keyed record goes to Kafka's murmur2
        partition of its key, an unkeyed one to a sticky partition.
        ``timestamp_ms`` (kafka-python's and aiokafka's name; ``timestamp``
        is the same setting, giving both is a ``TypeError``) is ms since the
        epoch (default: now).

        After an append of the partition fails, the record fails (through
        its future; ``send()`` does not raise) until the error has reached
        the caller: ``flush()`` raising it, or a failed future of the
        partition raising or returning it. The log never skips a failed
        batch to append a later one.
        """
    def send_many(
        self,
        topic: str,
        values: Iterable[Any],
        keys: Iterable[Any] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        *,
        timestamp: int | None = None,
    ) -> BatchFuture:
        """Send many values (and optionally as many keys) to one topic in one
        call; the returned :class:`BatchFuture`'s ``get()`` waits for all.
        ``timestamp_ms`` (or ``timestamp``) applies to every record."""
    def flush(self, timeout: float | None = None) -> None:
        """Append every queued record; raises the error of a failed append
        not yet reported (which lets the failed partitions take records
        again). Appends are local writes, so ``timeout`` (accepted for Kafka
        compatibility) never cuts one short."""
    def init_transactions(self, timeout: float | None = None) -> None:
        """Kafka's ``init_transactions()``: registers ``transactional_id``
        and fences any older producer with it, in any process or through a
        broker on the directory (its open transaction is aborted, its later
        calls raise :class:`ProducerFencedError`). ``timeout`` is accepted
        for Kafka compatibility."""
    def begin_transaction(self) -> None:
        """Kafka's ``begin_transaction()``; sends outside a transaction
        raise :class:`InvalidTxnStateError`."""
    def commit_transaction(self, timeout: float | None = None) -> None:
        """Append every record sent, then commit them and the offsets sent
        with ``send_offsets_to_transaction`` atomically: read_committed
        consumers see all of them or none."""
    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: read_committed consumers never see its
        records, and its offsets are dropped."""
    def send_offsets_to_transaction(
        self,
        offsets: Mapping[_TP, Any] | Iterable[Any],
        group_metadata: ConsumerGroupMetadata | str,
        timeout: float | None = None,
    ) -> None:
        """Commit a consumer group's offsets with the transaction:
        ``{TopicPartition: offset | OffsetAndMetadata}`` or a list of
        objects with ``topic``, ``partition``, ``offset`` (the next offset
        to read, as a commit); the group as
        ``Consumer.consumer_group_metadata()`` or its id."""
    def close(self, timeout: float | None = None) -> None:
        """Flush and release; later sends raise :class:`ClosedError`."""
    def partitions_for(self, topic: str) -> list[int]:
        """Partition numbers of a topic (created if ``auto_create_topics``
        allows)."""
    @property
    def path(self) -> str:
        """The data directory."""
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
    def __enter__(self) -> Self: ...
    def __exit__(self, _exc_type: object, _exc: object, _tb: object, /) -> Literal[False]:
        """``close()``; exceptions propagate."""

# ---- consumer ----------------------------------------------------------------

@final
class ArrowBatch:
    """Records in Kafka's shape as Arrow columns, owned by Rust and lent to
    Arrow libraries through the Arrow PyCapsule interface
    (``pyarrow.record_batch(b)``; polars and DuckDB import it too).
    ``ottla.Consumer.poll_arrow`` returns it converted to pyarrow."""

    @property
    def num_rows(self) -> int:
        """The number of records."""
    def __len__(self) -> int:
        """The number of records."""
    def __arrow_c_schema__(self) -> object:
        """The schema as an ``arrow_schema`` PyCapsule."""
    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]:
        """``(arrow_schema, arrow_array)`` PyCapsules of the batch as a struct
        array; ``requested_schema`` is accepted and ignored, as the protocol
        allows (the caller casts if it wants another type)."""

@disjoint_base
class Consumer:
    """Reads records from topics in a data directory (``ottla.Consumer``
    subclasses this and adds the Arrow and pandas readers; see its docstring
    for groups and settings).

    >>> with ottla.Producer("data") as p:
    ...     _ = p.send_many("events", [b"a", b"b", b"c"]).get()
    >>> with ottla.Consumer("data", "events", auto_offset_reset="earliest",
    ...                     consumer_timeout_ms=500) as c:
    ...     [(r.offset, r.value) for r in c]
    [(0, b'a'), (1, b'b'), (2, b'c')]
    """

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
    ) -> Self:
        """Open a consumer on the data directory ``path``, subscribed to
        ``topics`` if any are given. Settings have Kafka's names and
        defaults (``auto_offset_reset`` also takes the older names
        ``smallest``/``beginning`` and ``largest``/``end``); ``topics``
        are names, or one list of names (``Consumer(path, ["a", "b"])``);
        ``consumer_timeout_ms`` (None: never) ends an iteration that waited
        that long for a record. ``path`` must be an existing data directory
        (made by a Producer, a Broker or ``Admin(path, create=True)``), else
        ``DataDirectoryNotFoundError``; a subscribed topic that does not
        exist is waited for, not created, unless ``auto_create_topics=True``."""
    def subscribe(
        self,
        topics: str | Sequence[str] | None = None,
        pattern: str | None = None,
        *,
        on_assign: _RebalanceCallback | None = None,
        on_revoke: _RebalanceCallback | None = None,
        on_lost: _RebalanceCallback | None = None,
        listener: Any | None = None,
    ) -> None:
        """Subscribe to topics, or to every topic matching ``pattern`` (a
        regex over the whole name; a topic given as ``"^..."`` is a pattern
        too, as in confluent-kafka). With a ``group_id`` this joins the
        group. Rebalance callbacks: ``on_assign(consumer, partitions)``,
        ``on_revoke(...)``, ``on_lost(...)``, or a ``listener`` with
        ``on_partitions_assigned/revoked/lost(partitions)``; they run inside
        ``poll()``/iteration on the calling thread."""
    def unsubscribe(self) -> None:
        """Leave the group (revoking, after an auto-commit) or drop the
        subscription."""
    def subscription(self) -> set[str]:
        """The subscribed topic names."""
    def assign(self, partitions: Iterable[_TP]) -> None:
        """Read exactly these partitions, with no group membership; a
        partition that does not exist raises ``UnknownTopicOrPartitionError``
        (unless ``auto_create_topics=True`` and its topic is missing)."""
    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads."""
    def poll(
        self, timeout_ms: float = 0.0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Fetch records: ``{TopicPartition: [Record, ...]}``, waiting up to
        ``timeout_ms`` when none are ready (``{}`` if none came)."""
    def poll_values(self, max_records: int = 100000, timeout_ms: float = 0.0) -> list[bytes | None]:
        """Bulk read: up to ``max_records`` values (bytes, or None for a null
        value) across the assigned partitions, with no ``Record`` objects.
        Positions advance exactly as with ``poll``. Deserializers are not
        applied. Waits up to ``timeout_ms`` when nothing is ready."""
    def _poll_arrow(
        self, max_records: int = 100000, max_bytes: int | None = None, timeout_ms: float = 0.0
    ) -> ArrowBatch:
        """Bulk read into Arrow columns (see ``ottla.Consumer.poll_arrow``)."""
    def _read_arrow(
        self, max_records: int | None = None, max_bytes: int | None = None
    ) -> list[ArrowBatch]:
        """Everything up to the end offsets at call time, as ``ArrowBatch``es
        (see ``ottla.Consumer.read_arrow``)."""
    def __iter__(self) -> Iterator[Record]:
        """Records one at a time, blocking; ends after ``consumer_timeout_ms``
        without a record, or at ``close()``."""
    def __next__(self) -> Record: ...
    def seek(self, partition: _TP, offset: int) -> None:
        """Read ``partition`` from ``offset`` next (``offset >= 0``)."""
    def seek_to_beginning(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to their log start."""
    def seek_to_end(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to their log end (a
        read_committed consumer: their last stable offset)."""
    def position(self, partition: _TP) -> int:
        """Offset of the next record this consumer will return for ``partition``."""
    def committed(self, partition: _TP) -> int | None:
        """The group's committed offset for ``partition``, or None."""
    def highwater(self, partition: _TP) -> int | None:
        """kafka-python's ``highwater``: the high watermark (the log end
        offset; every appended record is readable at once) of an assigned
        ``partition``, None if it is not assigned; for a read_committed
        consumer the last stable offset (see :meth:`end_offsets`):

        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("events", [b"a", b"b"]).get()
        >>> with ottla.Consumer("data", "events") as c:
        ...     c.highwater(("events", 0)), c.highwater(("other", 0))
        (2, None)
        """
    def consumer_group_metadata(self) -> ConsumerGroupMetadata:
        """Kafka's ``consumer_group_metadata()``, for
        ``Producer.send_offsets_to_transaction``; needs a ``group_id``
        (:class:`IllegalStateError` otherwise)."""
    def commit(self, offsets: Mapping[_TP, Any] | None = None) -> None:
        """Commit the current positions, or ``{TopicPartition: offset}`` (an
        int or an ``OffsetAndMetadata``) if given. A consumer that is not a
        member (a hand-made ``assign``) commits only while the group has no
        members: ``GroupNotEmptyError``, or ``GroupMemberConflictError`` while
        a broker coordinates the group."""
    def offsets_for_times(
        self, timestamps: Mapping[_TP, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """``{TopicPartition: OffsetAndTimestamp | None}`` for the earliest
        record at or after each timestamp (ms); None where there is none
        (a read_committed consumer finds only records below the last stable
        offset, as Kafka's ListOffsets)."""
    def beginning_offsets(self, partitions: Iterable[_TP]) -> dict[TopicPartition, int]:
        """``{TopicPartition: log start offset}``."""
    def end_offsets(self, partitions: Iterable[_TP]) -> dict[TopicPartition, int]:
        """``{TopicPartition: log end offset}`` (the offset the next record
        will get). For a read_committed consumer, the last stable offset
        (the first offset of the oldest open transaction, else the log
        end), as Kafka's ListOffsets with ``isolation_level=read_committed``:
        the end its reads stop at, so lag counts to it."""
    def pause(self, *partitions: _TP) -> None:
        """Stop returning records from these assigned ``partitions`` until
        resumed."""
    def resume(self, *partitions: _TP) -> None:
        """Return records from paused ``partitions`` again."""
    def paused(self) -> set[TopicPartition]:
        """The paused partitions."""
    def topics(self) -> set[str]:
        """Topics in the directory (internal ones hidden)."""
    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition numbers of ``topic``, or None if it does not exist."""
    def close(self, autocommit: bool = True) -> None:
        """Commit (with auto-commit on and ``autocommit``) and leave the group."""
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
    @property
    def path(self) -> str:
        """The data directory."""
    @property
    def group_id(self) -> str | None:
        """The consumer group, or None."""
    @property
    def isolation_level(self) -> Literal["read_uncommitted", "read_committed"]:
        """The ``isolation_level`` the consumer was made with."""
    @property
    def member_id(self) -> str | None:
        """This consumer's member id in its group (None unless subscribed
        with a group_id)."""
    def __enter__(self) -> Self: ...
    def __exit__(self, _exc_type: object, _exc: object, _tb: object, /) -> Literal[False]:
        """``close()`` (committing if auto-commit is on); exceptions propagate."""

# ---- admin (python/ottla/admin.py wraps this) ----------------------------------

@final
class _Admin:
    """The engine's topic and group administration; ``ottla.Admin`` wraps it
    with dataclass results."""

    def __new__(cls, path: _Path, *, create: bool = False) -> Self:
        """Open the data directory ``path``; raises
        ``DataDirectoryNotFoundError`` if it is not one, unless ``create``."""
    def create_topic(
        self, name: str, partitions: int = 1, config: dict[str, Any] | None = None
    ) -> None:
        """Create a topic; raises ``TopicAlreadyExistsError`` if it exists."""
    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
    def list_topics(self, internal: bool = False) -> list[str]:
        """Topic names, sorted; ``internal=True`` includes internal topics."""
    def describe_topic(
        self, name: str
    ) -> tuple[list[tuple[int, int, int, int, int]], dict[str, str], dict[str, str], str]:
        """``([(partition, start, end, size_bytes, segments)], config, overrides,
        topic_id)``; ``topic_id`` is Kafka's topic id as Kafka prints it (22
        characters of URL-safe base64), made when the topic was created."""
    def create_partitions(self, name: str, total: int) -> None:
        """Grow a topic to ``total`` partitions (1 to 100000)."""
    def alter_topic_config(self, name: str, config: dict[str, Any]) -> None:
        """Set (or, with a None value, remove) per-topic config overrides."""
    def enforce_retention(self, name: str) -> int:
        """Apply retention now on every partition of ``name``; returns the
        number of segments deleted."""
    def delete_records(self, requests: list[tuple[str, int, int]]) -> list[int]:
        """Move each ``(topic, partition, offset)``'s log start offset up to
        ``offset`` (-1: the high watermark); the low watermarks after, in
        order."""
    def compact(self, name: str) -> tuple[int, int, int, int, int, int, int]:
        """Compact a compacted topic now: ``(segments_before, segments_after,
        bytes_before, bytes_after, records_before, records_after,
        tombstones_removed)``, summed over partitions."""
    def list_groups(self) -> list[str]:
        """Groups with committed offsets or live members."""
    def group_offsets(self, group: str) -> list[tuple[str, int, int, int]]:
        """``[(topic, partition, committed offset, log end offset)]``."""
    def describe_group(
        self, group: str
    ) -> tuple[
        str,
        str,
        str,
        list[tuple[str, str, str, list[tuple[str, int]]]],
        list[tuple[str, int, int, int, int]],
    ]:
        """``(group_id, state, protocol, [(member_id, client_id, host,
        [(topic, partition)])], [(topic, partition, committed, end_offset,
        lag)])``."""
    def delete_group(self, group: str) -> None:
        """Forget a group's committed offsets; ``GroupNotEmptyError`` while it
        has live members."""
    def reset_offsets(
        self,
        group: str,
        topics: list[str] | None = None,
        to_earliest: bool = False,
        to_latest: bool = False,
        to_datetime_ms: int | None = None,
        to_offsets: list[tuple[str, int, int]] | None = None,
    ) -> list[tuple[str, int, int]]:
        """Move a group's committed offsets to exactly one target; returns
        ``[(topic, partition, new offset)]``."""
    @property
    def path(self) -> str:
        """The data directory."""

# ---- asyncio door (python/ottla/aio.py wraps these) ------------------------

@final
class SendFuture:
    """The pending result of ``ottla.aio.Producer.send``: ``await`` it for the
    record's ``RecordMetadata``. Cancelling an await leaves the record queued;
    the future can be awaited again."""

    def __await__(self) -> Generator[Any, None, RecordMetadata]: ...
    def done(self) -> bool:
        """True once the record is in the log (or its batch failed)."""
    def result(self) -> RecordMetadata:
        """The metadata of a done send; raises its error, or
        ``asyncio.InvalidStateError`` while pending."""
    def exception(self) -> BaseException | None:
        """The error of a failed send, None if it succeeded
        (``asyncio.InvalidStateError`` while pending)."""

@final
class SendManyFuture:
    """The pending result of ``ottla.aio.Producer.send_many``: ``await`` it
    until every record is in the log."""

    def __await__(self) -> Generator[Any]: ...
    def done(self) -> bool:
        """True once every record is in the log (or a batch failed)."""
    def metadata(self) -> list[RecordMetadata]:
        """Every record's metadata in send order, once done."""
    def __len__(self) -> int:
        """The number of records sent."""

@disjoint_base
class AioProducer:
    """The asyncio producer's engine; ``ottla.aio.Producer`` subclasses it
    (see its docstring)."""

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
    ) -> Self:
        """Settings as for ``ottla.Producer``; with ``acks=0`` an awaited
        send is done at once (offset -1)."""
    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: _Headers | None = None,
        *,
        timestamp: int | None = None,
    ) -> SendFuture:
        """Queue a record now; await the returned future for its metadata.
        ``timestamp`` is an alias of ``timestamp_ms``."""
    def send_many(
        self,
        topic: str,
        values: Iterable[Any],
        keys: Iterable[Any] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        *,
        timestamp: int | None = None,
    ) -> SendManyFuture:
        """Queue many records to one topic now; await the returned future."""
    def flush(self) -> Awaitable[None]:
        """Append every queued record (runs off the event loop); raises the
        first error of a failed batch."""
    def init_transactions(self) -> Awaitable[None]:
        """As ``ottla.Producer.init_transactions`` (runs off the loop)."""
    def begin_transaction(self) -> None:
        """As ``ottla.Producer.begin_transaction``."""
    def commit_transaction(self) -> Awaitable[None]:
        """As ``ottla.Producer.commit_transaction`` (runs off the loop)."""
    def abort_transaction(self) -> Awaitable[None]:
        """As ``ottla.Producer.abort_transaction`` (runs off the loop)."""
    def send_offsets_to_transaction(
        self,
        offsets: Mapping[_TP, Any] | Iterable[Any],
        group_metadata: ConsumerGroupMetadata | str,
    ) -> Awaitable[None]:
        """As ``ottla.Producer.send_offsets_to_transaction``."""
    def close(self) -> Awaitable[None]:
        """Flush and stop; later sends raise ``ClosedError``."""
    def partitions_for(self, topic: str) -> list[int]:
        """Partition numbers of a topic (created if ``auto_create_topics``
        allows)."""
    @property
    def path(self) -> str:
        """The data directory."""
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""

@final
class RecordWaiter:
    """Awaitable "new records may be there" for one data directory.

    ``seq()`` reads the directory's append sequence; after finding nothing to
    read, ``await wait(seen, timeout_ms)`` returns True once any process has
    appended since ``seen`` (False on timeout or after ``close()``, which
    wakes every wait at once).
    """

    def __new__(cls, path: _Path) -> Self: ...
    def seq(self) -> int:
        """The directory's append sequence (moves on every append, and on
        topic metadata changes)."""
    def wait(self, seen: int, timeout_ms: float | None = None) -> Awaitable[bool]:
        """Awaitable: True once the append sequence moved past ``seen``;
        False after ``timeout_ms`` (None: no limit) or once the waiter is
        closed."""
    def close(self) -> None:
        """Wake every wait (they return False) and make later waits return
        at once."""
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
    @property
    def waiting(self) -> int:
        """Waits in progress on this waiter (0 once cancelled ones are gone)."""

# ---- broker ------------------------------------------------------------------

@final
class Broker:
    """A Kafka wire-protocol broker serving a data directory.

    Listening when the constructor returns (a port in use raises OSError);
    any Kafka client can produce to and consume from it while embedded
    Producers and Consumers use the same directory:

    >>> import confluent_kafka
    >>> with ottla.Broker("data") as broker:
    ...     producer = confluent_kafka.Producer(
    ...         {"bootstrap.servers": broker.bootstrap_servers})
    ...     producer.produce("events", b"over the wire")
    ...     unsent = producer.flush(10)
    >>> unsent
    0
    >>> with ottla.Consumer("data", "events", auto_offset_reset="earliest",
    ...                     consumer_timeout_ms=500) as c:
    ...     [r.value for r in c]
    [b'over the wire']
    """

    def __new__(
        cls,
        path: _Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auto_create_topics: bool = True,
        num_partitions: int = 1,
        max_request_bytes: int = 104857600,
        fsync: str = "never",
        retention_check_interval_ms: int = 300000,
        queued_max_request_bytes: int = 524288000,
        fetch_max_bytes: int = 57671680,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        max_open_files: int | None = None,
        group_initial_rebalance_delay_ms: int = 0,
        group_consumer_heartbeat_interval_ms: int = 1000,
        group_consumer_session_timeout_ms: int = 45000,
        broker_rack: str | None = None,
        group_consumer_migration_policy: str = "bidirectional",
        node_id: int | None = None,
        controller_listen: str | None = None,
        controller_quorum_voters: str | None = None,
        default_replication_factor: int = 1,
        min_insync_replicas: int = 1,
        replica_lag_time_max_ms: int = 10000,
        broker_heartbeat_interval_ms: int = 200,
        broker_session_timeout_ms: int = 1000,
        controller_quorum_election_timeout_ms: int = 250,
        offsets_topic_replication_factor: int = 3,
        listeners: Sequence[str] | None = None,
        advertised_listeners: Sequence[str] | None = None,
        ssl_certfile: _Path | None = None,
        ssl_keyfile: _Path | None = None,
        ssl_cafile: _Path | None = None,
        ssl_client_auth: str = "none",
        sasl_enabled_mechanisms: Sequence[str] | None = None,
        connections_max_reauth_ms: int = 0,
        authorizer: str | None = None,
        super_users: Sequence[str] | None = None,
        allow_everyone_if_no_acl_found: bool = False,
        inter_broker_listener_name: str | None = None,
        inter_broker_sasl_mechanism: str | None = None,
        inter_broker_sasl_username: str | None = None,
        inter_broker_sasl_password: str | None = None,
        controller_listener_security_protocol: str = "PLAINTEXT",
    ) -> Self:
        """Serve ``path`` on ``host:port`` (port 0: a free one), on the
        broker's own threads. Every ``retention_check_interval_ms``
        (Kafka's ``log.retention.check.interval.ms``) segments past their
        topic's retention are deleted, as an embedded Producer does.

        Memory: a request frame larger than ``max_request_bytes`` closes its
        connection; request frames being read or handled hold at most
        ``queued_max_request_bytes`` across all connections (Kafka's
        ``queued.max.request.bytes``; at least ``max_request_bytes``, -1 for
        no bound), and connections wait without reading while it is spent;
        a Fetch response carries at most ``fetch_max_bytes`` of records
        (Kafka's broker ``fetch.max.bytes``) except one first batch larger
        than that.

        ``max_connections`` (Kafka's ``max.connections``; default a quarter
        of the open-file limit, ``ulimit -n``) and ``max_connections_per_ip``
        (Kafka's ``max.connections.per.ip``; default no limit of its own)
        bound the connections open at once: one past either is closed as
        soon as it is accepted, and the others are served on.
        ``max_open_files`` sets the process's open-file budget for partition
        files (default half the open-file limit; see
        docs/configuration.md): past it, the least recently used are closed
        and reopened when next needed.

        ``group_initial_rebalance_delay_ms`` (Kafka's
        ``group.initial.rebalance.delay.ms``; default 0, at once) delays the
        first rebalance of an empty consumer group, and again by as much
        while new members keep joining (up to the rebalance timeout), so
        consumers started together get one assignment.

        Consumer-protocol groups (KIP-848, ``group.protocol=consumer``):
        members heartbeat every ``group_consumer_heartbeat_interval_ms``
        (Kafka's ``group.consumer.heartbeat.interval.ms``; default 1000,
        Kafka's is 5000) and one silent for
        ``group_consumer_session_timeout_ms`` (Kafka's
        ``group.consumer.session.timeout.ms``, 45000) is fenced and its
        partitions move.

        ``broker_rack`` (Kafka's ``broker.rack``; default none) names the
        broker's rack: Metadata and DescribeCluster report it, and the
        consumer-protocol assignors give partitions (all of whose replicas
        are on this broker) first to members whose ``client.rack`` matches
        it, each member keeping its share.

        ``group_consumer_migration_policy`` (Kafka's
        ``group.consumer.migration.policy``, KIP-848's online migration):
        ``"bidirectional"`` (the default, as in Kafka 4.x) lets a classic
        group joined by a ``group.protocol=consumer`` member become a
        consumer group, its classic members staying members, and a consumer
        group whose consumer-protocol members all left become a classic
        group again; ``"upgrade"`` and ``"downgrade"`` allow one way only,
        ``"disabled"`` neither (a consumer member is refused from a classic
        group with GROUP_ID_NOT_FOUND; a classic member of a consumer group
        with members is served under every policy, as by Kafka). Any case.

        A node of a replicated cluster (docs/design/replication.md): with
        ``node_id`` (Kafka's ``node.id``), ``controller_listen``
        (``"HOST:PORT"`` of its controller listener) and
        ``controller_quorum_voters`` (``"1@host:port,2@host:port,..."``,
        Kafka's ``controller.quorum.voters``) it joins the cluster's
        metadata quorum, as a voter when its id is among the voters and as
        a broker-only node otherwise. Topics created without a replication
        factor get ``default_replication_factor`` replicas and, unless
        given, ``min_insync_replicas``; followers out of sync for
        ``replica_lag_time_max_ms`` leave the in-sync set. The node
        heartbeats every ``broker_heartbeat_interval_ms`` (Kafka: 2000) and
        is fenced, its leaderships moved, after ``broker_session_timeout_ms``
        (Kafka: 9000) without one; a voter that hears no active controller
        for ``controller_quorum_election_timeout_ms`` to twice that (Kafka's
        ``controller.quorum.election.timeout.ms``, 1000) starts an election.
        A group's coordinator is the leader of ``__consumer_offsets``,
        created on first use with ``offsets_topic_replication_factor``
        replicas (Kafka's ``offsets.topic.replication.factor``), fewer when
        fewer brokers are up then.
        The directory is marked as the node's:
        another node id, or an embedded Producer, is refused on it.

        Security (docs/security.md): ``listeners`` (Kafka's ``listeners``)
        replaces ``host``/``port`` with one or more ``NAME://HOST:PORT``,
        NAME one of ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``,
        ``SASL_SSL``; ``advertised_listeners`` (same form) sets the address
        clients are told per listener. TLS listeners use ``ssl_certfile`` and
        ``ssl_keyfile`` (PEM); ``ssl_client_auth`` (``none``, ``requested``,
        ``required``) asks for client certificates signed by ``ssl_cafile``,
        whose subject becomes the principal. SASL listeners serve
        ``sasl_enabled_mechanisms`` (default PLAIN, SCRAM-SHA-256,
        SCRAM-SHA-512; OAUTHBEARER, unsecured tokens for tests, only when
        named) against the directory's SCRAM users (``ottla users``,
        AlterUserScramCredentials); ``connections_max_reauth_ms`` (KIP-368,
        0 = none) bounds a SASL session's lifetime. A listener reachable
        from other machines without authentication is warned about on
        stderr. A new data directory is created with mode 0700.
        ``authorizer="standard"`` checks every request against the
        directory's ACLs (Kafka's StandardAuthorizer; :func:`create_acls`,
        ``ottla acls``, CreateAcls): ``super_users`` (``"User:admin"``) may
        do everything, and ``allow_everyone_if_no_acl_found`` allows what no
        ACL names a resource for (Kafka's default, False: refused). Without
        an authorizer everything is allowed.

        On a cluster node (``node_id``), ACLs and SCRAM users are the
        cluster's, in its metadata log (changes over the wire go to the
        active controller; the directory's files are not used).
        ``inter_broker_listener_name`` (Kafka's
        ``inter.broker.listener.name``; default the first listener) is the
        listener the other nodes' replica fetchers use: on SSL ones this
        node presents ``ssl_certfile``/``ssl_keyfile`` and trusts
        ``ssl_cafile``; on SASL ones it logs in with
        ``inter_broker_sasl_mechanism`` (PLAIN, SCRAM-SHA-256,
        SCRAM-SHA-512), ``inter_broker_sasl_username`` and
        ``inter_broker_sasl_password``.
        ``controller_listener_security_protocol="SSL"`` puts the controller
        listener and the nodes' connections to it under mutual TLS with the
        same files (a peer without a certificate from ``ssl_cafile`` is
        dropped); the default, ``"PLAINTEXT"``, is for private addresses
        only."""
    @property
    def listeners(self) -> dict[str, str]:
        """Each listener's name and bound ``"host:port"``, in the order
        given; the first is ``bootstrap_servers``."""
    @property
    def bootstrap_servers(self) -> str:
        """``"host:port"`` to give Kafka clients as ``bootstrap.servers``."""
    @property
    def host(self) -> str:
        """The address listened on."""
    @property
    def port(self) -> int:
        """The port listened on (the one chosen, when 0 was asked)."""
    @property
    def path(self) -> str:
        """The data directory served."""
    @property
    def node_id(self) -> int | None:
        """This node's id in a cluster, or None for a broker alone."""
    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
    @property
    def waiting_fetches(self) -> int:
        """How many Fetch requests are parked now: long polls waiting, up to
        their ``max_wait_ms``, for an append to one of their partitions. A
        connection that closes drops its parked Fetch at once. 0 once
        closed."""
    def serve_forever(self) -> None:
        """Block until ``close()`` (from another thread) or Ctrl-C."""
    def close(self) -> None:
        """Stop accepting, close connections, release the port and the
        directory."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> Literal[False]:
        """``close()``; exceptions propagate."""

# ---- security ----------------------------------------------------------------

def scram_users(path: _Path) -> list[tuple[str, str, int]]:
    """The SCRAM users of data directory ``path``: ``(user, mechanism,
    iterations)`` per credential, sorted by user."""

def set_scram_user(
    path: _Path,
    user: str,
    password: str,
    *,
    mechanisms: Sequence[str] | None = None,
    iterations: int = 4096,
) -> None:
    """Add ``user``, or change their password, for each of ``mechanisms``
    (default SCRAM-SHA-256 and SCRAM-SHA-512), salted and hashed with
    ``iterations`` (4096 to 16384); a running broker on ``path`` sees it
    at the user's next login."""

def delete_scram_user(path: _Path, user: str, *, mechanisms: Sequence[str] | None = None) -> bool:
    """Remove ``user``'s credentials for ``mechanisms`` (default all);
    True if there were any."""

_AclTuple = tuple[str, str, str, str, str, str, str]

def acls(
    path: _Path,
    *,
    resource_type: str = "ANY",
    name: str | None = None,
    pattern_type: str = "ANY",
    principal: str | None = None,
    host: str | None = None,
    operation: str = "ANY",
    permission: str = "ANY",
) -> list[_AclTuple]:
    """The ACL bindings of data directory ``path`` the filter selects (all
    by default): ``(resource_type, name, pattern_type, principal, host,
    operation, permission)`` tuples in Kafka's names (``"TOPIC"``,
    ``"PREFIXED"``, ``"User:alice"``, ``"*"``, ``"WRITE"``, ``"ALLOW"``).
    ``pattern_type="MATCH"`` selects every binding that applies to
    ``name``."""

def create_acls(path: _Path, bindings: Sequence[_AclTuple]) -> None:
    """Add ACL bindings (tuples as :func:`acls` returns) to ``path``; a
    running broker sees them within a second. ValueError, and nothing
    added, if one is invalid."""

def delete_acls(
    path: _Path,
    *,
    resource_type: str = "ANY",
    name: str | None = None,
    pattern_type: str = "ANY",
    principal: str | None = None,
    host: str | None = None,
    operation: str = "ANY",
    permission: str = "ANY",
) -> list[_AclTuple]:
    """Remove the bindings of ``path`` the filter selects; returns them."""

def make_certificates(
    dir: _Path, *, hosts: Sequence[str] | None = None, clients: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Write a throw-away CA, a server certificate for ``hosts`` (default
    localhost, 127.0.0.1, ::1) and a client certificate (``CN=<name>``) per
    name of ``clients`` into ``dir`` as PEM files; ``(what, path)`` pairs.
    Use :func:`ottla.testing.make_certificates`."""
