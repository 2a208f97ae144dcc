"""asyncio classes: :class:`Producer` and :class:`Consumer` for event loops.

They run on any running loop (``asyncio.run``, Jupyter's loop, one loop per
thread), with aiokafka's method names:

>>> import asyncio
>>> import ottla.aio
>>> async def main() -> None:
...     async with ottla.aio.Producer("data") as producer:
...         md = await producer.send("events", b"hello", key=b"user-1")
...         await producer.send_many("events", [b"a", b"b", b"c"])
...     async with ottla.aio.Consumer("data", "events", auto_offset_reset="earliest",
...                                   consumer_timeout_ms=500) as consumer:
...         batch = await consumer.getmany(timeout_ms=1000, max_records=2)
...         async for record in consumer:
...             print(record.offset, record.value)
>>> asyncio.run(main())
2 b'b'
3 b'c'

Nothing here runs blocking calls in a thread pool. The producer appends on
the engine's own threads and resolves asyncio futures from there; the
consumer reads on the loop's thread with non-blocking calls and, when there
is nothing to read, awaits a wait that holds neither the GIL nor a Python
thread (see docs/design/append.md and docs/design/fetch.md, "asyncio").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import Any, Literal, overload

from ottla import _arrow
from ottla._core import (
    AioProducer as _CoreAioProducer,
    ClosedError,
    Consumer as _CoreConsumer,
    ConsumerGroupMetadata,
    OffsetAndTimestamp,
    Record,
    RecordMetadata,
    RecordWaiter as _RecordWaiter,
    SendFuture,
    SendManyFuture,
)
from ottla.remote._door import Door as _Door
from ottla.types import TopicPartition

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing_extensions import Self

    from ottla._core import _Acks, _BytesLike, _Path

_TP = TopicPartition | tuple[str, int]

__all__ = ["Consumer", "Producer", "SendFuture", "SendManyFuture"]


def _tp_key(tp: _TP) -> tuple[str, int]:
    topic, partition = tp
    return str(topic), int(partition)


class Producer(_CoreAioProducer, metaclass=_Door):
    """Appends records to topics, for asyncio code.

    ``Producer(path, **config)`` takes the settings of :class:`ottla.Producer`
    (``linger_ms``, ``batch_size``, ``fsync``, ``fsync_interval_ms``, ``acks``,
    ``auto_create_topics``, ``num_partitions``, ``key_serializer``,
    ``value_serializer``, ``retention_check_interval_ms``):

    >>> import asyncio
    >>> async def main() -> None:
    ...     async with ottla.aio.Producer("data", fsync="always") as p:
    ...         md = await p.send("events", b"v", key=b"k")
    ...         print(md.partition, md.offset)
    >>> asyncio.run(main())
    0 0

    ``send()`` is not a coroutine: it queues the record at once and returns a
    :class:`SendFuture`. Await it for the record's :class:`RecordMetadata`;
    awaiting asks for the record's batch to be appended when the current
    loop iteration ends, so records sent by every task in that iteration
    share one append. Records nobody awaits are appended after ``linger_ms``
    or ``batch_size``, or on ``flush()``/``close()``, as with the sync
    producer. Cancelling an await does not take the record back: it is
    appended (or fails) anyway, and awaiting the same future again, or its
    ``done()``/``result()``, tells which offset it got.

    A failed append fails the partition's queued batches behind it, and the
    partition's later sends, until the error reaches you (an awaited future
    or ``flush()`` raising it, ``result()``/``exception()``): the log keeps
    the order records were sent in, as with :class:`ottla.Producer`.

    ``Producer(bootstrap_servers="host:9092", **config)`` (or
    ``Producer("kafka://host:9092")``) produces to a Kafka-protocol cluster
    instead, with the same methods (``pip install 'ottla[kafka]'``;
    docs/remote.md).
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
    def __new__(cls, path: None = None, *, bootstrap_servers: str, **config: Any) -> Self: ...
    def __new__(
        cls,
        path: str | PathLike[str] | None = None,
        *,
        bootstrap_servers: str | None = None,
        **config: Any,
    ) -> Self:
        """A producer of the data directory ``path``, or of a cluster."""
        if bootstrap_servers is None and not (
            isinstance(path, str) and path.startswith("kafka://")
        ):
            if path is None:
                raise TypeError(
                    "Producer() needs a data directory path, a 'kafka://host:port' "
                    "address or bootstrap_servers='host:port'"
                )
            return super().__new__(cls, path, **config)
        from ottla.remote._kafka import target_servers
        from ottla.remote.aio import Producer as _Remote

        servers = target_servers("Producer", path, bootstrap_servers)
        assert servers is not None
        remote: Any = _Remote(servers, **config)
        return remote  # type: ignore[no-any-return]

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None = None,
    ) -> RecordMetadata:
        """``await send(...)``, under aiokafka's name."""
        return await self.send(topic, value, key, partition, timestamp_ms, headers)

    async def flush(self) -> None:
        """Append every queued record; raises the first error of a failed
        batch. The appends run on a tokio blocking thread, off the loop."""
        await _CoreAioProducer.flush(self)

    async def init_transactions(self) -> None:
        """As :meth:`ottla.Producer.init_transactions` (off the loop)."""
        await _CoreAioProducer.init_transactions(self)

    async def commit_transaction(self) -> None:
        """As :meth:`ottla.Producer.commit_transaction` (off the loop)."""
        await _CoreAioProducer.commit_transaction(self)

    async def abort_transaction(self) -> None:
        """As :meth:`ottla.Producer.abort_transaction` (off the loop)."""
        await _CoreAioProducer.abort_transaction(self)

    async def send_offsets_to_transaction(
        self,
        offsets: Mapping[_TP, Any] | Iterable[Any],
        group_metadata: ConsumerGroupMetadata | str,
    ) -> None:
        """As :meth:`ottla.Producer.send_offsets_to_transaction`."""
        await _CoreAioProducer.send_offsets_to_transaction(self, offsets, group_metadata)

    async def close(self) -> None:
        """Flush and stop; later sends raise :class:`ottla.ClosedError`."""
        await _CoreAioProducer.close(self)

    async def start(self) -> None:
        """aiokafka's ``start()``. The producer is ready when constructed, so
        this only checks it is not closed (:class:`ottla.ClosedError`); call
        it as often as you like. ``async with`` calls it."""
        if self.closed:
            raise ClosedError("producer is closed: a stopped producer cannot start again")

    async def stop(self) -> None:
        """aiokafka's ``stop()``: :meth:`close` (flush, then stop). A second
        call does nothing."""
        await self.close()

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Consumer:
    """Reads records from topics, for asyncio code.

    ``Consumer(path, *topics, **config)`` takes the settings of
    :class:`ottla.Consumer` (``group_id``, ``auto_offset_reset``,
    ``enable_auto_commit``, ``consumer_timeout_ms``, ``max_poll_records``,
    deserializers, ...):

    >>> import asyncio
    >>> with ottla.Producer("data") as p:
    ...     _ = p.send_many("events", [b"a", b"b", b"c"]).get()
    >>> async def main() -> None:
    ...     async with ottla.aio.Consumer("data", "events", group_id="billing",
    ...                                   auto_offset_reset="earliest",
    ...                                   consumer_timeout_ms=500) as c:
    ...         batches = await c.getmany(timeout_ms=1000, max_records=2)
    ...         for tp, records in batches.items():
    ...             for record in records:
    ...                 print(tp.partition, record.value)
    ...         await c.commit()
    ...         async for record in c:  # ends after consumer_timeout_ms idle, or at close()
    ...             print(record.value)
    >>> asyncio.run(main())
    0 b'a'
    0 b'b'
    b'c'

    Records are taken from the log only by a call that returns them to the
    task that asked, so a cancelled ``getone``/``getmany``/iteration loses
    nothing and positions (hence commits) cover only records handed out.
    ``close()`` wakes every waiting task: ``getone``/``getmany`` raise
    :class:`ottla.ClosedError`, ``async for`` ends.
    """

    __slots__ = ("_path", "_streak", "_sync", "_timeout_ms", "_waiter")

    def __new__(cls, *args: Any, bootstrap_servers: str | None = None, **config: Any) -> Consumer:
        """``Consumer(*topics, bootstrap_servers="host:9092", **config)`` or
        ``Consumer("kafka://host:9092", *topics, **config)``: the same
        consumer over a cluster (:mod:`ottla.remote.aio`)."""
        if bootstrap_servers is not None or (
            args and isinstance(args[0], str) and args[0].startswith("kafka://")
        ):
            from ottla.remote.aio import Consumer as _Remote

            return object.__new__(_Remote)
        return object.__new__(cls)

    # Records handed out without suspending, at most, before a call yields
    # to the loop: a consumer with a backlog must not starve other tasks
    # (a producer task in the same loop, say). The yield comes before a
    # call takes records, never after, so a cancellation there loses none.
    _STREAK = 256
    # Longest single wait, in ms: an idle consumer still calls into the
    # engine this often (the sync consumer does every 100 ms), so whatever
    # housekeeping the engine does on poll keeps running.
    _IDLE_MS = 500.0

    def __init__(
        self,
        path: str | PathLike[str],
        *topics: str | Sequence[str],
        bootstrap_servers: str | None = None,
        group_id: str | None = None,
        auto_offset_reset: Literal[
            "earliest", "latest", "none", "smallest", "beginning", "largest", "end"
        ] = "latest",
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
        **config: Any,
    ) -> None:
        """Settings as for :class:`ottla.Consumer`; any further keyword goes
        to it unchanged. (``bootstrap_servers``: see :meth:`__new__`.)"""
        del bootstrap_servers  # only the cluster form (ottla.remote.aio) has one
        if consumer_timeout_ms is not None and not consumer_timeout_ms >= 0:
            raise ValueError(f"consumer_timeout_ms must be >= 0, got {consumer_timeout_ms}")
        self._timeout_ms = consumer_timeout_ms
        self._waiter = _RecordWaiter(path)
        # consumer_timeout_ms=0 makes the sync consumer's iteration
        # non-blocking: this class does all the waiting, asynchronously.
        self._sync = _CoreConsumer(
            path,
            *topics,
            group_id=group_id,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=enable_auto_commit,
            auto_commit_interval_ms=auto_commit_interval_ms,
            consumer_timeout_ms=0,
            max_poll_records=max_poll_records,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            check_crcs=check_crcs,
            auto_create_topics=auto_create_topics,
            num_partitions=num_partitions,
            key_deserializer=key_deserializer,
            value_deserializer=value_deserializer,
            client_id=client_id,
            **config,
        )
        self._path = self._sync.path
        self._streak = 0

    # ---- reading -----------------------------------------------------------

    def _poll(
        self, partitions: tuple[_TP, ...], max_records: int | None
    ) -> dict[TopicPartition, list[Record]]:
        """Take what is ready now, without waiting (on the loop's thread)."""
        if not partitions:
            return self._sync.poll(0, max_records)
        wanted = {_tp_key(tp) for tp in partitions}
        assigned = {(tp.topic, tp.partition) for tp in self._sync.assignment()}
        missing = wanted - assigned
        if missing:
            raise ValueError(f"not assigned to this consumer: {sorted(missing)}")
        already = {(tp.topic, tp.partition) for tp in self._sync.paused()}
        hold = [TopicPartition(t, p) for (t, p) in assigned - wanted - already]
        if hold:
            self._sync.pause(*hold)
        try:
            return self._sync.poll(0, max_records)
        finally:
            if hold:
                self._sync.resume(*hold)

    async def getmany(
        self,
        *partitions: _TP,
        timeout_ms: float = 0,
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[Record]]:
        """``{TopicPartition: [Record, ...]}``: up to ``max_records``
        (default ``max_poll_records``), from ``partitions`` if given (else all
        assigned), waiting up to ``timeout_ms`` when nothing is ready; ``{}``
        if nothing came."""
        if not timeout_ms >= 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        waiter = self._waiter
        await asyncio.sleep(0)
        while True:
            # Read the sequence before looking, so an append in between
            # ends the wait at once.
            seen = waiter.seq()
            got = self._poll(partitions, max_records)
            if got:
                return got
            left = deadline - loop.time()
            if left <= 0:
                return got
            await waiter.wait(seen, min(left * 1000.0, self._IDLE_MS))
            if waiter.closed:
                raise ClosedError("consumer is closed")

    async def getmany_arrow(
        self,
        timeout_ms: float = 0,
        max_records: int = 100_000,
        max_bytes: int | None = 52_428_800,
    ) -> Any:
        """Records as one ``pyarrow.RecordBatch`` (see
        :meth:`ottla.Consumer.poll_arrow`: same columns, limits and
        positions), waiting up to ``timeout_ms`` when none are ready; zero
        rows if none came. Needs ``pip install 'ottla[arrow]'``:

        >>> import asyncio
        >>> with ottla.Producer("data") as p:
        ...     _ = p.send_many("events", [b"a", b"b"]).get()
        >>> async def main() -> None:
        ...     async with ottla.aio.Consumer("data", "events",
        ...                                   auto_offset_reset="earliest") as consumer:
        ...         batch = await consumer.getmany_arrow(timeout_ms=1000)
        ...         df = batch.to_pandas()
        ...         print(df["value"].tolist())
        >>> asyncio.run(main())
        [b'a', b'b']
        """
        if not timeout_ms >= 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        _arrow.require()  # fail before taking records if pyarrow is missing
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        waiter = self._waiter
        await asyncio.sleep(0)
        while True:
            seen = waiter.seq()
            # Takes records only inside this synchronous call: a cancelled
            # wait below has taken nothing.
            raw = self._sync._poll_arrow(max_records, max_bytes, 0)
            if len(raw) or deadline - loop.time() <= 0:
                return _arrow.record_batch(raw)
            await waiter.wait(seen, min((deadline - loop.time()) * 1000.0, self._IDLE_MS))
            if waiter.closed:
                raise ClosedError("consumer is closed")

    async def getone(self, *partitions: _TP) -> Record:
        """The next record (from ``partitions`` if given), waiting as long as
        it takes; raises :class:`ottla.ClosedError` once closed."""
        waiter = self._waiter
        self._streak += 1
        if self._streak >= self._STREAK:
            self._streak = 0
            await asyncio.sleep(0)
        while True:
            seen = waiter.seq()
            if partitions:
                got = self._poll(partitions, 1)
                for records in got.values():
                    return records[0]
            else:
                record = next(self._sync, None)
                if record is not None:
                    return record
            await waiter.wait(seen, self._IDLE_MS)
            if waiter.closed:
                raise ClosedError("consumer is closed")

    def __aiter__(self) -> AsyncIterator[Record]:
        return self._records()

    async def _records(self) -> AsyncIterator[Record]:
        # An async generator around the sync consumer's non-blocking
        # iteration: the cheapest way to hand out ready records (measured
        # against a coroutine, a resolved future and a custom awaitable per
        # record). A record is taken only right before it is yielded, so a
        # cancelled iteration (which ends this generator; a new `async for`
        # starts another) has taken nothing.
        sync, waiter = self._sync, self._waiter
        loop = asyncio.get_running_loop()
        streak = self._STREAK
        try:
            while True:
                # Runs of up to `streak` records, counted in C: zip() takes
                # from the budget before the consumer, so a spent budget
                # ends the run without taking a record.
                budget = iter(range(streak))
                for _, record in zip(budget, sync, strict=False):
                    yield record
                if next(budget, None) is None:
                    # A whole run: let other tasks in, then read on.
                    await asyncio.sleep(0)
                    continue
                # Nothing ready: wait, up to consumer_timeout_ms.
                timeout = self._timeout_ms
                deadline = None if timeout is None else loop.time() + timeout / 1000.0
                while True:
                    if waiter.closed:
                        return
                    seen = waiter.seq()
                    woke = next(sync, None)
                    if woke is not None:
                        yield woke
                        break
                    left_ms = self._IDLE_MS
                    if deadline is not None:
                        left = deadline - loop.time()
                        if left <= 0:
                            return
                        left_ms = min(left * 1000.0, left_ms)
                    await waiter.wait(seen, left_ms)
        except ClosedError:
            return

    # ---- positions and commits ---------------------------------------------

    async def commit(self, offsets: Mapping[_TP, Any] | None = None) -> None:
        """Commit current positions, or ``{TopicPartition: offset |
        OffsetAndMetadata}``. A commit is an append to the page cache
        (microseconds), done inline."""
        self._sync.commit(offsets)

    def highwater(self, partition: _TP) -> int | None:
        """aiokafka's ``highwater(tp)``: the high watermark (log end offset)
        of an assigned partition, None if ``partition`` is not assigned;
        for a read_committed consumer the last stable offset."""
        return self._sync.highwater(partition)

    def consumer_group_metadata(self) -> ConsumerGroupMetadata:
        """As :meth:`ottla.Consumer.consumer_group_metadata`."""
        return self._sync.consumer_group_metadata()

    async def committed(self, partition: _TP) -> int | None:
        """The group's committed offset for ``partition``, or None."""
        return self._sync.committed(partition)

    async def position(self, partition: _TP) -> int:
        """Offset of the next record this consumer will return for ``partition``."""
        return self._sync.position(partition)

    def seek(self, partition: _TP, offset: int) -> None:
        """Read ``partition`` from ``offset`` next."""
        self._sync.seek(partition, offset)

    async def seek_to_beginning(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to their log start."""
        self._sync.seek_to_beginning(*partitions)

    async def seek_to_end(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to their log end."""
        self._sync.seek_to_end(*partitions)

    async def seek_to_committed(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to the group's
        committed offsets (partitions without one are left alone)."""
        tps = partitions or tuple(self._sync.assignment())
        for tp in tps:
            off = self._sync.committed(tp)
            if off is not None:
                self._sync.seek(tp, off)

    async def beginning_offsets(self, partitions: Iterable[_TP]) -> dict[TopicPartition, int]:
        """``{TopicPartition: log start offset}``."""
        return self._sync.beginning_offsets(partitions)

    async def end_offsets(self, partitions: Iterable[_TP]) -> dict[TopicPartition, int]:
        """``{TopicPartition: log end offset}`` (the next record's offset);
        for a read_committed consumer the last stable offset."""
        return self._sync.end_offsets(partitions)

    async def offsets_for_times(
        self, timestamps: Mapping[_TP, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Earliest ``(offset, timestamp)`` at or after each timestamp (ms)."""
        return self._sync.offsets_for_times(timestamps)

    # ---- assignment --------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        """Subscribe to topics (joining ``group_id`` if set)."""
        self._sync.subscribe(list(topics))

    def unsubscribe(self) -> None:
        """Drop the subscription (and the group membership)."""
        self._sync.unsubscribe()

    def subscription(self) -> set[str]:
        """The subscribed topic names."""
        return self._sync.subscription()

    def assign(self, partitions: Iterable[_TP]) -> None:
        """Read exactly these partitions, with no group membership."""
        self._sync.assign(partitions)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer reads."""
        return self._sync.assignment()

    def pause(self, *partitions: _TP) -> None:
        """Stop returning records from ``partitions`` until resumed."""
        self._sync.pause(*partitions)

    def resume(self, *partitions: _TP) -> None:
        """Return records from paused ``partitions`` again."""
        self._sync.resume(*partitions)

    def paused(self) -> set[TopicPartition]:
        """The paused partitions."""
        return self._sync.paused()

    async def topics(self) -> set[str]:
        """Topics in the directory (internal ones hidden)."""
        return self._sync.topics()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition numbers of ``topic``, or None if it does not exist."""
        return self._sync.partitions_for_topic(topic)

    # ---- lifecycle ---------------------------------------------------------

    async def close(self, autocommit: bool = True) -> None:
        """Commit (with auto-commit on), leave the group, and wake every
        waiting task."""
        try:
            self._sync.close(autocommit)
        finally:
            self._waiter.close()

    async def start(self) -> None:
        """aiokafka's ``start()``. The consumer is ready when constructed
        (subscribed to the topics given), so this only checks it is not
        closed (:class:`ottla.ClosedError`); call it as often as you like.
        ``async with`` calls it."""
        if self.closed:
            raise ClosedError("consumer is closed: a stopped consumer cannot start again")

    async def stop(self) -> None:
        """aiokafka's ``stop()``: :meth:`close` (committing with auto-commit
        on, leaving the group, waking waiting tasks). A second call does
        nothing."""
        await self.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._waiter.closed or self._sync.closed

    @property
    def path(self) -> str:
        """The data directory."""
        return self._path

    @property
    def group_id(self) -> str | None:
        """The consumer group, or None."""
        return self._sync.group_id

    @property
    def waiting(self) -> int:
        """Tasks waiting for records right now (0 once cancelled ones are gone)."""
        return self._waiter.waiting

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        inner = repr(self._sync)
        return inner.replace("<ottla.Consumer", "<ottla.aio.Consumer", 1)
