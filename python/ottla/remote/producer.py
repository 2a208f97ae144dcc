"""``ottla.Producer(bootstrap_servers=...)``: the producer's API over
librdkafka (confluent-kafka).

``send()`` hands the record to librdkafka's ``produce()`` with a delivery
callback that completes its future; librdkafka batches, compresses and
retries. Delivery reports are served by ``poll()`` calls: one every
``_POLL_EVERY`` sends on the sending thread (cheap: no thread switch), and
a background thread's, so callbacks and futures also complete while the
application does not send.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ottla._core import (
    ClosedError,
    RecordMetadata,
    RemoteFutureRecordMetadata,
    RemoteSender,
    RemoteSendMethod,
    UnknownTopicOrPartitionError,
)
from ottla.remote import _kafka

_BytesLike = bytes | bytearray | memoryview | str


def _as_bytes(v: Any, what: str) -> bytes | str | None:
    if v is None or isinstance(v, (bytes, str)):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(
        f"{what} must be bytes, bytearray, memoryview, str or None, not {type(v).__name__}"
    )


def _serve(p: Any, stop: threading.Event, served: list[int]) -> None:
    """The background thread: serve delivery reports until stopped, unless
    the sending thread served them itself since the last look (it does every
    ``_POLL_EVERY`` sends): taking the GIL from a busy sender for every
    report cost a third of the send rate (bench/remote_bench.py)."""
    seen = -1
    while not stop.is_set():
        if served[0] != seen:
            seen = served[0]
            stop.wait(0.05)
            continue
        try:
            p.poll(0.05)
        except Exception:  # a callback's error: already on its future
            pass


def _headers(headers: Any) -> list[tuple[str, bytes | str | None]]:
    """Headers as a list of ``(str, bytes | None)``; a TypeError for
    anything else, as the directory producer says."""
    if isinstance(headers, Mapping):
        items: Iterable[Any] = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise TypeError(
            f"headers must be a list of (str, bytes) pairs or a dict, not {type(headers).__name__}"
        )
    out = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f"a header is a (str, bytes | None) pair, not {item!r}")
        k, v = item
        if not isinstance(k, str):
            raise TypeError(f"a header key must be str, not {type(k).__name__}")
        out.append((k, _as_bytes(v, "header value")))
    return out


# The future of one send() is ottla._core's ``FutureRecordMetadata`` of
# this module (crates/ottla-python/src/remote_future.rs): made without a
# Python frame, and itself librdkafka's delivery callback, which for a
# delivery without error nor callbacks waiting stores the message and
# nothing else. What it does beyond that is here, on its attributes:
# ``_owner`` (this module's Producer), ``_msg`` (librdkafka's delivered
# message: done), ``_md`` (the RecordMetadata, made from ``_msg`` when
# asked for), ``_exc`` (the send's error), ``_callbacks``, ``_errbacks``.
FutureRecordMetadata = RemoteFutureRecordMetadata


def _future_deliver(f: FutureRecordMetadata, err: Any, msg: Any) -> None:
    """librdkafka's ``on_delivery(err, msg)``, on a thread serving
    ``poll()``, for what the future's own ``__call__`` leaves: an error, or
    callbacks to call."""
    if err is None:
        # The common case costs one store: the RecordMetadata is made
        # when someone asks for it (get(), a callback).
        f._msg = msg
        if f._callbacks is not None:
            md = _future_metadata(f)
            with f._owner._cond:
                callbacks, f._callbacks = f._callbacks, []
            for cb in callbacks:
                cb(md)
        return
    owner = f._owner
    exc = _kafka.error(err, f"sending to {msg.topic()!r}")
    with owner._cond:
        f._exc = exc
        errbacks = f._errbacks
        if owner._failed is None:
            owner._failed = exc
    for eb in errbacks or ():
        eb(exc)
    if errbacks:
        _future_reported(f)


def _future_metadata(f: FutureRecordMetadata) -> RecordMetadata:
    md = f._md
    if md is None:
        msg = f._msg
        offset = msg.offset()
        md = RecordMetadata(
            msg.topic(),
            msg.partition(),
            -1 if offset is None or offset < 0 or f._owner._acks == 0 else offset,
            msg.timestamp()[1],
        )
        f._md = md
    return md


def _future_get(f: FutureRecordMetadata, timeout: float | None) -> RecordMetadata:
    """``get()``: wait (seconds; None: forever) for the broker's
    acknowledgement and return the :class:`ottla.RecordMetadata`; raises
    the send's error."""
    if f._msg is None and f._exc is None:
        f._owner._wait(f._is_done, timeout)
    if f._exc is not None:
        _future_reported(f)
        raise f._exc
    if f._msg is None:
        raise _kafka.OttlaTimeoutError(f"no acknowledgement within {timeout} s")
    return _future_metadata(f)


def _future_reported(f: FutureRecordMetadata) -> None:
    """The error reached the caller: ``flush()`` need not raise it again."""
    owner = f._owner
    with owner._cond:
        if owner._failed is f._exc:
            owner._failed = None


def _future_add_callback(
    f: FutureRecordMetadata, fn: Callable[[RecordMetadata], Any]
) -> FutureRecordMetadata:
    """``add_callback``: call ``fn(record_metadata)`` once acknowledged."""
    cond = f._owner._cond
    with cond:
        if f._msg is None:
            if f._exc is None:
                if f._callbacks is None:
                    f._callbacks = []
                f._callbacks.append(fn)
                queued = True
            else:
                return f
        else:
            queued = False
    if queued:
        # A delivery between the look above and the append (it stores
        # _msg without the lock) did not see fn: call it here, once.
        if f._msg is None:
            return f
        with cond:
            pending = f._callbacks or []
            if not any(g is fn for g in pending):
                return f
            pending.remove(fn)
    fn(_future_metadata(f))
    return f


def _future_add_errback(
    f: FutureRecordMetadata, fn: Callable[[BaseException], Any]
) -> FutureRecordMetadata:
    """``add_errback``: call ``fn(exception)`` if the send fails."""
    with f._owner._cond:
        exc = f._exc
        if exc is None:
            if f._msg is None:
                if f._errbacks is None:
                    f._errbacks = []
                f._errbacks.append(fn)
            return f
    fn(exc)
    return f


class BatchFuture:
    """The pending result of a remote ``send_many()``: ``get()`` (metadata
    in send order), ``wait()``, ``done()``, ``len()``."""

    __slots__ = ("_futures", "_owner")

    def __init__(self, owner: Producer, futures: list[FutureRecordMetadata]) -> None:
        self._owner = owner
        self._futures = futures

    def _all_done(self) -> bool:
        return all(f._is_done() for f in self._futures)

    def wait(self, timeout: float | None = None) -> None:
        if not self._all_done():
            self._owner._wait(self._all_done, timeout)
        for f in self._futures:
            if f._exc is not None:
                raise f._exc
        if not self._all_done():
            raise _kafka.OttlaTimeoutError(f"not every record acknowledged within {timeout} s")

    def get(self, timeout: float | None = None) -> list[RecordMetadata]:
        self.wait(timeout)
        return [f.get(0) for f in self._futures]

    def done(self) -> bool:
        return self._all_done()

    def __len__(self) -> int:
        return len(self._futures)


class Producer:
    """A producer of a Kafka-protocol cluster (``ottla serve``, Kafka,
    Redpanda) with the methods of :class:`ottla.Producer`. Made by
    ``ottla.Producer(bootstrap_servers="host:9092", **config)`` or
    ``ottla.Producer("kafka://host:9092", **config)``."""

    _POLL_EVERY = 1000
    _ottla_twin_of = "ottla.Producer"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        auto_create_topics: bool = True,
        num_partitions: int | None = None,
        key_serializer: Callable[[Any], _BytesLike | None] | None = None,
        value_serializer: Callable[[Any], _BytesLike | None] | None = None,
        acks: Any = None,
        linger_ms: int | None = None,
        batch_size: int | None = None,
        client_id: str | None = None,
        **config: Any,
    ) -> None:
        ck = _kafka.ck()
        if acks is not None:
            if acks in ("all", -1, "-1"):
                acks = -1
            elif acks in (0, 1, "0", "1") and not isinstance(acks, bool):
                acks = int(acks)
            else:
                raise ValueError(f"acks must be 0, 1, -1 or 'all', got {acks!r}")
        for name, value in (
            ("linger_ms", linger_ms),
            ("batch_size", batch_size),
            ("num_partitions", num_partitions),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"{name} must be int, not {type(value).__name__}")
        for name, fn in (
            ("key_serializer", key_serializer),
            ("value_serializer", value_serializer),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, not {type(fn).__name__}")
        if num_partitions is not None and num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._batch_size = 262144 if batch_size is None else batch_size
        self._sticky_state: dict[str, list[int]] = {}
        # send()'s fast path: the sticky state of each known topic, while
        # open and without a value serializer (see send()).
        self._fast: dict[str, list[int]] = {}
        self._acks = 1 if acks is None else acks
        conf = _kafka.librdkafka_config(
            "Producer",
            bootstrap_servers,
            {
                "linger_ms": 5 if linger_ms is None else linger_ms,
                "batch_size": self._batch_size,
                "acks": acks,
                "client_id": client_id,
                **config,
            },
            # Kafka's (and the Java client's) partitioner: murmur2 of the
            # key, as ottla's directory producer; unkeyed records sticky.
            {"partitioner": "murmur2_random"},
        )
        self._servers = bootstrap_servers
        self._auto_create = bool(auto_create_topics)
        self._num_partitions = num_partitions
        self._key_ser = key_serializer
        self._value_ser = value_serializer
        self._p = _kafka.make(ck.Producer, "Producer", conf, config)
        self._produce_c = self._p.produce
        self._conf = conf
        self._known: dict[str, list[int]] = {}
        self._cond = threading.Condition()
        self._failed: BaseException | None = None
        self._closed = False
        self._until_poll = self._POLL_EVERY
        self._served = [0]  # polls by the sending thread, for _serve
        self._stop = threading.Event()
        # The thread holds the librdkafka handle, not this object: a
        # producer dropped unclosed is collected, and its thread stops.
        self._poller = threading.Thread(
            target=_serve,
            args=(self._p, self._stop, self._served),
            name="ottla-remote-producer",
            daemon=True,
        )
        self._poller.start()
        weakref.finalize(self, self._stop.set)
        # send()'s common case (an unkeyed bytes value to a known topic)
        # in one call of the extension, the rest through send() below: the
        # state it needs (no reference to this producer, so no cycle), read
        # by RemoteSendMethod (crates/ottla-python/src/remote_send.rs).
        self._sender = RemoteSender(
            self._produce_c,
            self._fast,
            self._batch_size,
            self._POLL_EVERY,
            Producer._serve_reports,
            Producer._produce,
        )

    # ---- delivery reports ----------------------------------------------------

    def _wait(self, done: Callable[[], bool], timeout: float | None) -> None:
        """Wait until ``done()``: as the directory producer's ``get()``, a
        record waiting out ``linger_ms`` is sent now (librdkafka's flush
        ignores linger), and reports are served on this thread too."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            self._p.flush(0.05 if left is None else min(left, 0.05))

    # ---- topics --------------------------------------------------------------

    def _partitions(self, topic: str) -> list[int]:
        """The topic's partitions, creating it as ottla's producer does
        (``auto_create_topics``, ``num_partitions``) when the cluster lacks it."""
        known = self._known.get(topic)
        if known is not None:
            return known
        # Every topic's metadata: asking for this one alone would have the
        # broker create it (auto.create.topics.enable) with its defaults.
        with _kafka.raising(f"metadata of {topic!r}"):
            md = self._p.list_topics(timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            if not self._auto_create:
                raise UnknownTopicOrPartitionError(
                    f"unknown topic {topic!r} on {self._servers} (auto_create_topics=False)"
                )
            if self._num_partitions is None:
                # As any Kafka client: asking for the topic's metadata lets the
                # broker create it (its auto.create.topics.enable, num.partitions).
                with _kafka.raising(f"metadata of {topic!r}"):
                    self._p.list_topics(topic, timeout=10)
            else:
                from ottla.remote.admin import create_if_missing

                create_if_missing(self._servers, self._conf, topic, self._num_partitions)
            with _kafka.raising(f"metadata of {topic!r}"):
                md = self._p.list_topics(timeout=10)
            t = md.topics.get(topic)
            if t is None or not t.partitions:
                raise UnknownTopicOrPartitionError(
                    f"unknown topic {topic!r} on {self._servers}: the cluster did not create "
                    "it (its auto.create.topics.enable; num_partitions=N creates it here)"
                )
        parts = sorted(t.partitions)
        self._known[topic] = parts
        return parts

    def partitions_for(self, topic: str) -> list[int]:
        """Partition numbers of ``topic`` (created if ``auto_create_topics``)."""
        self._check_open()
        self._known.pop(topic, None)
        self._fast.pop(topic, None)
        return list(self._partitions(topic))

    # ---- sending -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("producer is closed")

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
    ) -> FutureRecordMetadata:
        """Queue a record (see :meth:`ottla.Producer.send`); the future
        completes with the broker's acknowledgement."""
        if (
            key is None
            and partition is None
            and timestamp_ms is None
            and timestamp is None
            and headers is None
            and type(value) is bytes
        ):
            # The common case, with no per-argument work: an unkeyed value
            # to a known topic, on the sticky partition. ``_fast`` holds the
            # sticky state of the topics it applies to: known, no value
            # serializer, the producer open (emptied by close()).
            st = self._fast.get(topic)
            if st is not None:
                future = FutureRecordMetadata(self)
                if st[1] >= self._batch_size:
                    part = self._sticky(topic, len(value))
                else:
                    st[1] += len(value) + 70
                    part = st[0]
                try:
                    self._produce_c(topic, value, None, part, future)
                except BufferError:
                    self._produce(topic, value, None, {"partition": part, "on_delivery": future})
                    return future
                self._until_poll -= 1
                if not self._until_poll:
                    self._serve_reports()
                return future
        if self._closed:
            raise ClosedError("producer is closed")
        if timestamp is not None:
            if timestamp_ms is not None:
                raise TypeError("send() takes timestamp_ms or timestamp, not both")
            timestamp_ms = timestamp
        if topic not in self._known:
            if not isinstance(topic, str):
                raise TypeError(f"topic must be str, not {type(topic).__name__}")
            self._partitions(topic)
        if key is not None and self._key_ser is not None:
            key = self._key_ser(key)
        if value is not None and self._value_ser is not None:
            value = self._value_ser(value)
        value = _as_bytes(value, "value")
        key = _as_bytes(key, "key")
        future = FutureRecordMetadata(self)
        kw: dict[str, Any] = {"on_delivery": future}
        if partition is not None:
            if not isinstance(partition, int) or isinstance(partition, bool):
                raise TypeError(f"partition must be int, not {type(partition).__name__}")
            if partition < 0:
                raise ValueError(f"partition must be >= 0, got {partition}")
            if partition not in self._known[topic]:
                self._known.pop(topic, None)
                self._fast.pop(topic, None)
                if partition not in self._partitions(topic):
                    raise UnknownTopicOrPartitionError(
                        f"unknown topic or partition: {topic}-{partition}"
                    )
            kw["partition"] = partition
        elif key is None:
            kw["partition"] = self._sticky(topic, 0 if value is None else len(value))
        if timestamp_ms is not None:
            if not isinstance(timestamp_ms, int) or isinstance(timestamp_ms, bool):
                raise TypeError(f"timestamp_ms must be int, not {type(timestamp_ms).__name__}")
            kw["timestamp"] = timestamp_ms
        if headers:
            kw["headers"] = _headers(headers)
        self._produce(topic, value, key, kw)
        return future

    def _sticky(self, topic: str, size: int) -> int:
        """The partition of an unkeyed record: Kafka's sticky partitioner
        (KIP-794), as ottla's directory producer: one partition until
        ``batch_size`` bytes went to it, then another at random."""
        st = self._sticky_state.get(topic)
        if st is None or st[1] >= self._batch_size:
            parts = self._known[topic]
            choice = parts[0]
            if len(parts) > 1:
                import random

                while True:
                    choice = random.choice(parts)
                    if st is None or choice != st[0]:
                        break
            st = [choice, 0]
            self._sticky_state[topic] = st
        if self._value_ser is None and not self._closed and topic in self._known:
            self._fast[topic] = st
        st[1] += size + 70  # the record's bytes and its share of a batch's overhead
        return st[0]

    def _produce(self, topic: str, value: Any, key: Any, kw: dict[str, Any]) -> None:
        p = self._p
        while True:
            try:
                p.produce(topic, value, key, **kw)
                break
            except BufferError:  # librdkafka's queue is full: serve reports, retry
                p.poll(0.05)
            except Exception as e:
                if type(e).__name__ == "KafkaException":
                    raise _kafka.error(e, f"sending to {topic!r}") from e
                raise
        self._until_poll -= 1
        if not self._until_poll:
            self._serve_reports()

    def _serve_reports(self) -> None:
        """Every ``_POLL_EVERY`` sends: serve the delivery reports here."""
        self._until_poll = self._POLL_EVERY
        self._served[0] += 1
        self._p.poll(0)

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
        """Send many values (and as many keys) to one topic; one
        :class:`BatchFuture` for all. One timestamp for every record: the
        one given, or the call's."""
        if timestamp is not None:
            if timestamp_ms is not None:
                raise TypeError("send_many() takes timestamp_ms or timestamp, not both")
            timestamp_ms = timestamp
        if timestamp_ms is None:
            timestamp_ms = int(time.time() * 1000)
        values = list(values)
        key_list = [None] * len(values) if keys is None else list(keys)
        if len(key_list) != len(values):
            raise ValueError(f"send_many(): {len(values)} values but {len(key_list)} keys")
        futures = [
            self.send(topic, v, k, partition, timestamp_ms)
            for v, k in zip(values, key_list, strict=True)
        ]
        return BatchFuture(self, futures)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is acknowledged (or failed); raises
        the first send error since the last ``flush()``."""
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        with _kafka.raising("flush"):
            left = self._p.flush(-1 if timeout is None else timeout)
        with self._cond:
            failed, self._failed = self._failed, None
        if failed is not None:
            raise failed
        if left:
            raise _kafka.OttlaTimeoutError(
                f"flush: {left} records not acknowledged within {timeout} s"
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop; later sends raise :class:`ottla.ClosedError`."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self._fast.clear()  # in place: the RemoteSender holds it
            self._stop.set()
            self._poller.join(5)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def path(self) -> str:
        """The address (``kafka://host:port``): there is no directory."""
        return _kafka.SCHEME + self._servers

    @property
    def bootstrap_servers(self) -> str:
        return self._servers

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<ottla.Producer bootstrap_servers={self._servers!r} "
            f"linger_ms={self._conf.get('linger.ms')} batch_size={self._batch_size}{state}>"
        )


if not TYPE_CHECKING:
    # producer.send: the Python method above, or, for a producer with a
    # _sender, an extension object doing its common case in one call.
    Producer.send = RemoteSendMethod(Producer.send)
