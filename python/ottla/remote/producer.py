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
from typing import Any

from ottla._core import ClosedError, RecordMetadata, UnknownTopicOrPartitionError
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


class FutureRecordMetadata:
    """The pending result of one remote ``send()``: the same methods as
    :class:`ottla.FutureRecordMetadata`, completed by librdkafka's delivery
    report."""

    __slots__ = ("_callbacks", "_errbacks", "_exc", "_md", "_msg", "_owner")

    def __init__(self, owner: Producer) -> None:
        self._owner = owner
        self._msg: Any = None  # librdkafka's delivered message: done
        self._md: RecordMetadata | None = None  # made from _msg when asked for
        self._exc: BaseException | None = None
        self._callbacks: list[Callable[[RecordMetadata], Any]] | None = None
        self._errbacks: list[Callable[[BaseException], Any]] | None = None

    # librdkafka's on_delivery(err, msg), on a thread serving poll().
    def _deliver(self, err: Any, msg: Any) -> None:
        if err is None:
            # The common case costs one store: the RecordMetadata is made
            # when someone asks for it (get(), a callback).
            self._msg = msg
            if self._callbacks is not None:
                md = self._metadata()
                with self._owner._cond:
                    callbacks, self._callbacks = self._callbacks, []
                for cb in callbacks:
                    cb(md)
            return
        owner = self._owner
        exc = _kafka.error(err, f"sending to {msg.topic()!r}")
        with owner._cond:
            self._exc = exc
            errbacks = self._errbacks
            if owner._failed is None:
                owner._failed = exc
        for eb in errbacks or ():
            eb(exc)
        if errbacks:
            self._reported()

    def _metadata(self) -> RecordMetadata:
        md = self._md
        if md is None:
            msg = self._msg
            offset = msg.offset()
            md = RecordMetadata(
                msg.topic(),
                msg.partition(),
                -1 if offset is None or offset < 0 or self._owner._acks == 0 else offset,
                msg.timestamp()[1],
            )
            self._md = md
        return md

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Wait (seconds; None: forever) for the broker's acknowledgement and
        return the :class:`ottla.RecordMetadata`; raises the send's error."""
        if self._msg is None and self._exc is None:
            self._owner._wait(self._is_done, timeout)
        if self._exc is not None:
            self._reported()
            raise self._exc
        if self._msg is None:
            raise _kafka.OttlaTimeoutError(f"no acknowledgement within {timeout} s")
        return self._metadata()

    def _reported(self) -> None:
        """The error reached the caller: ``flush()`` need not raise it again."""
        owner = self._owner
        with owner._cond:
            if owner._failed is self._exc:
                owner._failed = None

    result = get

    def _is_done(self) -> bool:
        return self._msg is not None or self._exc is not None

    @property
    def is_done(self) -> bool:
        return self._is_done()

    def done(self) -> bool:
        return self._is_done()

    def succeeded(self) -> bool:
        return self._msg is not None

    def failed(self) -> bool:
        return self._exc is not None

    @property
    def exception(self) -> BaseException | None:
        if self._exc is not None:
            self._reported()
        return self._exc

    def add_callback(self, f: Callable[[RecordMetadata], Any]) -> FutureRecordMetadata:
        """Call ``f(record_metadata)`` once acknowledged; returns this future."""
        cond = self._owner._cond
        with cond:
            if self._msg is None:
                if self._exc is None:
                    if self._callbacks is None:
                        self._callbacks = []
                    self._callbacks.append(f)
                    queued = True
                else:
                    return self
            else:
                queued = False
        if queued:
            # A delivery between the look above and the append (it stores
            # _msg without the lock) did not see f: call it here, once.
            if self._msg is None:
                return self
            with cond:
                pending = self._callbacks or []
                if not any(g is f for g in pending):
                    return self
                pending.remove(f)
        f(self._metadata())
        return self

    def add_errback(self, f: Callable[[BaseException], Any]) -> FutureRecordMetadata:
        """Call ``f(exception)`` if the send fails; returns this future."""
        with self._owner._cond:
            exc = self._exc
            if exc is None:
                if self._msg is None:
                    if self._errbacks is None:
                        self._errbacks = []
                    self._errbacks.append(f)
                return self
        f(exc)
        return self


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
        if self._closed:
            raise ClosedError("producer is closed")
        if (
            key is None
            and partition is None
            and timestamp_ms is None
            and timestamp is None
            and headers is None
            and type(value) is bytes
            and self._value_ser is None
            and topic in self._known
        ):
            # The common case, with no per-argument work: an unkeyed value
            # to a known topic, on the sticky partition.
            future = FutureRecordMetadata(self)
            st = self._sticky_state.get(topic)
            if st is None or st[1] >= self._batch_size:
                part = self._sticky(topic, len(value))
            else:
                st[1] += len(value) + 70
                part = st[0]
            try:
                self._p.produce(topic, value, None, part, future._deliver)
            except BufferError:
                self._produce(
                    topic, value, None, {"partition": part, "on_delivery": future._deliver}
                )
                return future
            self._until_poll -= 1
            if not self._until_poll:
                self._serve_reports()
            return future
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
        kw: dict[str, Any] = {"on_delivery": future._deliver}
        if partition is not None:
            if not isinstance(partition, int) or isinstance(partition, bool):
                raise TypeError(f"partition must be int, not {type(partition).__name__}")
            if partition < 0:
                raise ValueError(f"partition must be >= 0, got {partition}")
            if partition not in self._known[topic]:
                self._known.pop(topic, None)
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
