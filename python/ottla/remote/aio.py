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
from ottla.remote.producer import (
    BatchFuture,
    FutureRecordMetadata,
    Producer as _SyncProducer,
)


class SendFuture:
    """``await`` it for the record's :class:`ottla.RecordMetadata`; also
    ``done()``, ``result()``, ``exception()``. Awaiting sends the record
    now rather than after ``linger_ms``, as the directory form does."""

    __slots__ = ("_owner", "_sync")

    def __init__(self, sync: FutureRecordMetadata, owner: Producer) -> None:
        self._sync = sync
        self._owner = owner

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        return self._wait(asyncio.get_running_loop())  # RuntimeError outside a loop

    def _wait(self, loop: asyncio.AbstractEventLoop) -> Generator[Any, None, RecordMetadata]:
        sync = self._sync
        if sync.done():
            return sync.get(0)
        self._owner._kick(loop)
        future: asyncio.Future[None] = loop.create_future()
        _wake_when(loop, future, [sync])
        yield from asyncio.shield(future).__await__()
        return sync.get(0)

    def done(self) -> bool:
        return self._sync.done()

    def result(self) -> RecordMetadata:
        if not self._sync.done():
            raise asyncio.InvalidStateError("send is pending")
        return self._sync.get(0)

    def exception(self) -> BaseException | None:
        if not self._sync.done():
            raise asyncio.InvalidStateError("send is pending")
        return self._sync.exception

    def __repr__(self) -> str:
        sync = self._sync
        if not sync.done():
            return "<ottla.aio.SendFuture pending>"
        if sync.exception is not None:
            return f"<ottla.aio.SendFuture failed {sync.exception!r}>"
        md = sync.get(0)
        return (
            f"<ottla.aio.SendFuture topic={md.topic!r} partition={md.partition} offset={md.offset}>"
        )


class SendManyFuture:
    """``await`` it until every record is acknowledged; ``metadata()``."""

    __slots__ = ("_batch", "_owner")

    def __init__(self, batch: BatchFuture, owner: Producer) -> None:
        self._batch = batch
        self._owner = owner

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait(asyncio.get_running_loop())

    def _wait(self, loop: asyncio.AbstractEventLoop) -> Generator[Any, None, None]:
        batch = self._batch
        if not batch.done():
            self._owner._kick(loop)
            future: asyncio.Future[None] = loop.create_future()
            _wake_when(loop, future, batch._futures)
            yield from asyncio.shield(future).__await__()
        batch.wait(0)

    def done(self) -> bool:
        return self._batch.done()

    def metadata(self) -> list[RecordMetadata]:
        if not self._batch.done():
            raise asyncio.InvalidStateError("send_many is pending")
        return self._batch.get(0)

    def __len__(self) -> int:
        return len(self._batch)

    def __repr__(self) -> str:
        return f"<ottla.aio.SendManyFuture records={len(self._batch)} done={self.done()}>"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake_when(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], syncs: list[FutureRecordMetadata]
) -> None:
    """Resolve ``future`` (on its loop) once every one of ``syncs`` is done."""
    pending = [f for f in syncs if not f.done()]
    left = [len(pending)]
    lock = threading.Lock()

    def one(_: object) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # the loop is closed: nobody waits there
                pass

    if not pending:
        future.set_result(None)
        return
    for f in pending:
        # A record done meanwhile calls one() at once.
        f.add_callback(one).add_errback(one)


class Producer:
    """:class:`ottla.aio.Producer` of a cluster: ``send()`` queues at once
    and returns an awaitable; ``flush()``/``close()`` run off the loop."""

    _ottla_twin_of = "ottla.aio.Producer"

    def __init__(self, bootstrap_servers: str, **config: Any) -> None:
        self._sync = _SyncProducer(bootstrap_servers, **config)
        # _kick's worker: one at a time, running flushes while asked to.
        self._kick_lock = threading.Lock()
        self._kick_wanted = False
        self._kick_running = False

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what is queued now (librdkafka's flush ignores linger.ms),
        on a worker thread: records every task sent in this loop iteration
        go together, and nobody waits out linger_ms. A record sent while a
        flush is finishing (librdkafka's flush returns once its queue was
        empty, and does not see a record produced after that) asks the
        worker for one more flush; the lock makes the worker either see that
        request or have left, in which case a new worker starts."""
        with self._kick_lock:
            self._kick_wanted = True
            if self._kick_running:
                return
            self._kick_running = True
        try:
            loop.run_in_executor(None, self._flush_while_wanted)
        except BaseException:
            with self._kick_lock:
                self._kick_running = False
            raise

    def _flush_while_wanted(self) -> None:
        try:
            while True:
                with self._kick_lock:
                    if not self._kick_wanted:
                        self._kick_running = False
                        return
                    self._kick_wanted = False
                try:
                    self._sync._p.flush(30.0)
                except Exception:
                    if self._sync.closed:
                        raise  # nothing left to send
                    # A delivery callback's error (librdkafka's flush serves
                    # delivery reports and passes their exceptions on): its
                    # own future's business, not a reason to stop sending
                    # what other tasks await.
        except BaseException:
            with self._kick_lock:
                self._kick_running = False
            raise

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
        sync = self._sync.send(
            topic, value, key, partition, timestamp_ms, headers, timestamp=timestamp
        )
        return SendFuture(sync, self)

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
        batch = self._sync.send_many(
            topic, values, keys, partition, timestamp_ms, timestamp=timestamp
        )
        return SendManyFuture(batch, self)

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
