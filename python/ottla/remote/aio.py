"""``ottla.aio.Producer`` and ``ottla.aio.Consumer`` of a cluster.

The producer resolves asyncio futures from librdkafka's delivery reports
(``loop.call_soon_threadsafe``). The consumer is :class:`ottla.aio.Consumer`
over the remote sync consumer: what the directory form awaits on the
directory's futex, this one awaits on a worker thread blocked in
librdkafka's ``poll`` (no GIL held); records it fetches go to the
consumer's buffer, so a cancelled wait loses none.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ottla._core import ClosedError, RecordMetadata
from ottla.aio import Consumer as _AioConsumer
from ottla.remote import _kafka
from ottla.remote.consumer import Consumer as _SyncConsumer
from ottla.remote.producer import FutureRecordMetadata, Producer as _SyncProducer


class SendFuture:
    """``await`` it for the record's :class:`ottla.RecordMetadata`; also
    ``done()``, ``result()``, ``exception()``."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[RecordMetadata]) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        return asyncio.shield(self._future).__await__()

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> RecordMetadata:
        return self._future.result()

    def exception(self) -> BaseException | None:
        return self._future.exception()


class SendManyFuture:
    """``await`` it until every record is acknowledged; ``metadata()``."""

    __slots__ = ("_futures",)

    def __init__(self, futures: list[asyncio.Future[RecordMetadata]]) -> None:
        self._futures = futures

    def __await__(self) -> Generator[Any, None, None]:
        async def wait() -> None:
            await asyncio.gather(*(asyncio.shield(f) for f in self._futures))

        return wait().__await__()

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def metadata(self) -> list[RecordMetadata]:
        return [f.result() for f in self._futures]

    def __len__(self) -> int:
        return len(self._futures)


def _bridge(
    loop: asyncio.AbstractEventLoop, sync: FutureRecordMetadata
) -> asyncio.Future[RecordMetadata]:
    future: asyncio.Future[RecordMetadata] = loop.create_future()

    def ok(md: RecordMetadata) -> None:
        loop.call_soon_threadsafe(lambda: future.done() or future.set_result(md))

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(lambda: future.done() or future.set_exception(exc))

    sync.add_callback(ok).add_errback(failed)
    return future


class Producer:
    """:class:`ottla.aio.Producer` of a cluster: ``send()`` queues at once
    and returns an awaitable; ``flush()``/``close()`` run off the loop."""

    _ottla_twin_of = "ottla.aio.Producer"

    def __init__(self, bootstrap_servers: str, **config: Any) -> None:
        self._sync = _SyncProducer(bootstrap_servers, **config)

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, Any]] | Mapping[str, Any] | None = None,
        *,
        timestamp: int | None = None,
    ) -> SendFuture:
        loop = asyncio.get_running_loop()
        sync = self._sync.send(
            topic, value, key, partition, timestamp_ms, headers, timestamp=timestamp
        )
        return SendFuture(_bridge(loop, sync))

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
        loop = asyncio.get_running_loop()
        batch = self._sync.send_many(
            topic, values, keys, partition, timestamp_ms, timestamp=timestamp
        )
        return SendManyFuture([_bridge(loop, f) for f in batch._futures])

    async def send_and_wait(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, Any]] | Mapping[str, Any] | None = None,
    ) -> RecordMetadata:
        return await self.send(topic, value, key, partition, timestamp_ms, headers)

    async def flush(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._sync.flush)

    async def close(self) -> None:
        if not self._sync.closed:
            await asyncio.get_running_loop().run_in_executor(None, self._sync.close)

    async def start(self) -> None:
        if self.closed:
            raise ClosedError("producer is closed: a stopped producer cannot start again")

    async def stop(self) -> None:
        await self.close()

    def partitions_for(self, topic: str) -> list[int]:
        return self._sync.partitions_for(topic)

    @property
    def path(self) -> str:
        return self._sync.path

    @property
    def bootstrap_servers(self) -> str:
        return self._sync.bootstrap_servers

    @property
    def closed(self) -> bool:
        return self._sync.closed

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

    def __repr__(self) -> str:
        return repr(self._sync).replace("<ottla.Producer", "<ottla.aio.Producer", 1)


class _Waiter:
    """The directory's ``RecordWaiter`` for a cluster: ``wait`` fetches on a
    worker thread into the consumer's buffer."""

    def __init__(self, sync: _SyncConsumer) -> None:
        self._sync = sync
        self._seq = 0
        self._closed = False
        self._waiting = 0
        self._lock = threading.Lock()

    def seq(self) -> int:
        return self._seq

    def _fetch(self, timeout_s: float) -> None:
        with self._lock:
            if self._closed or self._sync.closed or self._sync._buf:
                return
            try:
                self._sync._fill(timeout_s, 500)
            except ClosedError:
                return
            if self._sync._buf:
                self._seq += 1

    async def wait(self, seen: int, timeout_ms: float | None = None) -> bool:
        if self._closed:
            return False
        if self.seq() != seen:
            return True
        if self._sync._buf:
            # Records are buffered, but not of the partitions asked for.
            await asyncio.sleep(0.01 if timeout_ms is None else min(timeout_ms / 1000.0, 0.01))
            return True
        timeout_s = 0.5 if timeout_ms is None else max(min(timeout_ms / 1000.0, 0.5), 0.0)
        self._waiting += 1
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._fetch, timeout_s)
        finally:
            self._waiting -= 1
        return not self._closed and self.seq() != seen

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        return self._waiting


class Consumer(_AioConsumer):
    """:class:`ottla.aio.Consumer` of a cluster (the same methods)."""

    __slots__ = ()

    def __init__(
        self,
        *args: Any,
        bootstrap_servers: str | None = None,
        consumer_timeout_ms: float | None = None,
        **config: Any,
    ) -> None:
        if bootstrap_servers is not None:
            servers = _kafka.target_servers("Consumer", None, bootstrap_servers)
            topics = args
        else:
            servers = _kafka.target_servers("Consumer", args[0] if args else None, None)
            topics = args[1:]
        assert servers is not None
        if consumer_timeout_ms is not None and not consumer_timeout_ms >= 0:
            raise ValueError(f"consumer_timeout_ms must be >= 0, got {consumer_timeout_ms}")
        self._timeout_ms = consumer_timeout_ms
        sync = _SyncConsumer(servers, *topics, consumer_timeout_ms=0, **config)
        self._sync = sync  # type: ignore[assignment]
        self._waiter = _Waiter(sync)  # type: ignore[assignment]
        self._path = sync.path
        self._streak = 0

    async def close(self, autocommit: bool = True) -> None:
        self._waiter.close()
        # Wait for a fetch in flight on a worker thread before closing.
        waiter: Any = self._waiter
        await asyncio.get_running_loop().run_in_executor(None, waiter._lock.acquire)
        try:
            self._sync.close(autocommit)
        finally:
            waiter._lock.release()

    def __repr__(self) -> str:
        return repr(self._sync).replace("<ottla.Consumer", "<ottla.aio.Consumer", 1)

