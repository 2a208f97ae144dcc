"""``ottla.Consumer(bootstrap_servers=...)``: the consumer's API over
librdkafka (confluent-kafka).

Records come from librdkafka's ``consume(num_messages)`` in batches into a
buffer here, and are handed out as :class:`ottla.Record` objects. Positions
are this class's: a record's offset + 1 once it has been *handed out*, so a
commit (by hand, automatic, on revoke, on close) covers exactly the records
the application received, as with a data directory. librdkafka's own
offset store and auto-commit are off; this class commits every
``auto_commit_interval_ms`` from ``poll()``/iteration.

A consumer without a ``group_id`` reads every partition of its topics (as
ottla's directory consumer does), through a manual assignment: librdkafka
needs a group id anyway, so it gets a private one it never joins or
commits to.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ottla._core import (
    ClosedError,
    IllegalStateError,
    InvalidTopicError,
    NoOffsetForPartitionError,
    OffsetAndTimestamp,
    OffsetOutOfRangeError,
    OttlaTimeoutError,
    Record,
    RecordIter,
    UnknownTopicOrPartitionError,
    first_error,
    message_values,
    remote_record,
    remote_record_iter,
    remote_records,
)
from ottla.remote import _kafka
from ottla.types import OffsetAndMetadata, TopicPartition

_TP = TopicPartition | tuple[str, int]
_Key = tuple[str, int]
_INTERNAL = frozenset({"__consumer_offsets", "__transaction_state"})
_RESETS = {
    "earliest": "earliest",
    "smallest": "earliest",
    "beginning": "earliest",
    "latest": "latest",
    "largest": "latest",
    "end": "latest",
    "none": "error",
}
# Errors of a subscribed topic that does not exist yet: waited for, as Kafka's
# consumer (and ottla's) does.
_WAITED = frozenset({"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"})
# Local events that librdkafka retries by itself.
_TRANSIENT = frozenset(
    {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_PARTITION_EOF", "_MAX_POLL_EXCEEDED"}
)
# A group's coordinator moving or loading (a cluster electing the leader of
# `__consumer_offsets`): librdkafka finds the coordinator again and asks
# again; the error event it also emits is not the application's.
_COORDINATOR = frozenset(
    {"NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE", "COORDINATOR_LOAD_IN_PROGRESS", "_WAIT_COORD"}
)
_TIMEOUT_S = 30.0
# Errors of a lookup that are asked again: the cluster is moving a
# partition's leadership or a broker went away (librdkafka reconnects).
_RETRIED = frozenset(
    {
        "_DESTROY_BROKER", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_TIMED_OUT", "_WAIT_COORD",
        "_NOT_LEADER", "NOT_LEADER_FOR_PARTITION", "NOT_LEADER_OR_FOLLOWER",
        "LEADER_NOT_AVAILABLE", "REQUEST_TIMED_OUT", "BROKER_NOT_AVAILABLE",
        "_LEADER_UNAVAILABLE", "FENCED_LEADER_EPOCH", "UNKNOWN_LEADER_EPOCH",
    }
)  # fmt: skip
# The longest one librdkafka poll() lasts (a longer wait is several).
_SLICE_S = 0.2
# Messages taken from librdkafka in one consume() call. The same per-message
# work costs more CPU in bigger batches, their messages out of the CPU's
# caches by the time they are read (a raw consume() loop, main thread, per
# message: 0.26 us in batches of 100-500, 0.32-0.38 of 1000, 0.69 of
# 10 000; docs/PERFORMANCE.md "Over a cluster", step 4).
_CHUNK = 500


def _key(tp: Any) -> _Key:
    if not isinstance(tp, tuple) or len(tp) != 2:
        raise TypeError(
            f"a partition is TopicPartition(topic, partition) or (topic, partition), not {tp!r}"
        )
    topic, partition = tp
    if not isinstance(topic, str) or not isinstance(partition, int) or isinstance(partition, bool):
        raise TypeError(f"a partition is (topic: str, partition: int), not {tp!r}")
    return topic, partition


_LEGAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _check_topic(name: str) -> None:
    """Kafka's rule for topic names (InvalidTopicError otherwise)."""
    if not name or name in (".", "..") or len(name) > 249 or not set(name) <= _LEGAL:
        raise InvalidTopicError(
            f"invalid topic name {name!r}: 1 to 249 of [a-zA-Z0-9._-], not '.' or '..'"
        )


class Consumer:
    """A consumer of a Kafka-protocol cluster with the methods of
    :class:`ottla.Consumer`. Made by
    ``ottla.Consumer(*topics, bootstrap_servers="host:9092", **config)`` or
    ``ottla.Consumer("kafka://host:9092", *topics, **config)``."""

    _ottla_twin_of = "ottla.Consumer"

    def __init__(
        self,
        bootstrap_servers: str,
        *topics: str | Sequence[str],
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        consumer_timeout_ms: float | None = None,
        max_poll_records: int = 500,
        max_partition_fetch_bytes: int | None = None,
        check_crcs: bool | None = None,
        auto_create_topics: bool = False,
        num_partitions: int | None = None,
        key_deserializer: Callable[[bytes], Any] | None = None,
        value_deserializer: Callable[[bytes], Any] | None = None,
        client_id: str | None = None,
        partition_assignment_strategy: str | Sequence[str] | None = None,
        session_timeout_ms: int | None = None,
        **config: Any,
    ) -> None:
        ck = _kafka.ck()
        reset = _RESETS.get(str(auto_offset_reset))
        if reset is None:
            raise ValueError(
                f"auto_offset_reset must be one of {', '.join(map(repr, _RESETS))}, "
                f"got {auto_offset_reset!r}"
            )
        if consumer_timeout_ms is not None and not consumer_timeout_ms >= 0:
            raise ValueError(f"consumer_timeout_ms must be >= 0, got {consumer_timeout_ms}")
        if not isinstance(max_poll_records, int) or max_poll_records < 1:
            raise ValueError(f"max_poll_records must be >= 1, got {max_poll_records!r}")
        if group_id is not None and not isinstance(group_id, str):
            raise TypeError(f"group_id must be str or None, not {type(group_id).__name__}")
        # ottla's default, as the directory form's groups.
        strategy = partition_assignment_strategy or "cooperative-sticky"
        if not isinstance(strategy, str):
            strategy = ",".join(strategy)
        self._servers = bootstrap_servers
        self._group = group_id
        self._reset = reset
        self._auto_commit = bool(enable_auto_commit) and group_id is not None
        self._commit_every = auto_commit_interval_ms / 1000.0
        self._next_commit = time.monotonic() + self._commit_every
        self._timeout_ms = consumer_timeout_ms
        self._max_records = max_poll_records
        self._auto_create = bool(auto_create_topics)
        self._num_partitions = num_partitions
        self._kd = key_deserializer
        self._vd = value_deserializer
        self._conf = _kafka.librdkafka_config(
            "Consumer",
            bootstrap_servers,
            {
                "group_id": group_id or f"ottla-private-{uuid.uuid4().hex}",
                "auto_offset_reset": reset,
                "max_partition_fetch_bytes": max_partition_fetch_bytes,
                "check_crcs": check_crcs,
                "client_id": client_id,
                "partition_assignment_strategy": strategy,
                "session_timeout_ms": session_timeout_ms,
                "allow.auto.create.topics": bool(auto_create_topics),
                **config,
            },
            {
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # librdkafka backs a partition's fetching off this long once
                # its local queue passes queued.min.messages (default 1 s):
                # with records also held in this class's buffer, that stalled
                # reads for most of a second (bench/remote_bench.py).
                "fetch.queue.backoff.ms": 10,
            },
        )
        self._c = _kafka.make(ck.Consumer, "Consumer", self._conf, config)
        self._ck = ck
        self._buf: deque[Any] = deque()
        # The batch iteration is handing out (see _batches): its messages
        # and the iterator making their records (a ``RecordIter``: its
        # length hint says how many it has left, ``__setstate__`` moves it);
        # positions for it are computed when something needs them
        # (_settle).
        self._batch: tuple[list[Any], RecordIter] | None = None
        self._held: dict[_Key, list[Any]] = {}  # buffered records of paused partitions
        self._pos: dict[_Key, int] = {}
        self._paused: set[_Key] = set()
        self._assigned: set[_Key] = set()
        self._topics: set[str] = set()
        self._pattern: str | None = None
        self._manual = False
        self._next_look = 0.0
        self._closed = False
        self._admin: Any = None
        self._callbacks: tuple[Any, Any, Any, Any] = (None, None, None, None)
        self._joined = False
        self._closing_without_commit = False
        # librdkafka's handle is used by one thread at a time: a close()
        # while another thread waits in poll() waits for that poll's slice
        # (at most _SLICE_S), not for its whole timeout.
        self._io = threading.RLock()
        self._closing = False
        # The thread running a rebalance callback: librdkafka's close() from
        # there crashes (in on_assign) or hangs (in on_revoke), so a close()
        # in a callback is finished when the callback returns.
        self._callback_thread: int | None = None
        self._deferred_close: bool | None = None
        self._released = False  # librdkafka's handle closed
        names = [t for arg in topics for t in ([arg] if isinstance(arg, str) else arg)]
        if names:
            self.subscribe(names)

    # ---- helpers -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("consumer is closed")

    def _settle(self) -> None:
        """End the batch iteration is handing out (``_batches``): the
        positions of its records handed out so far, each partition's last
        one + 1; the rest go back to the front of the buffer, and the
        iteration takes them from there again. Every reader of the buffer or
        of the positions calls this first, so a commit after N records
        covers exactly those N."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        msgs, it = batch
        # The records its iterator has handed out, then the iterator
        # exhausted: iteration goes on from the buffer.
        handed = len(msgs) - it.__length_hint__()
        it.__setstate__(len(msgs))
        if handed < len(msgs):
            self._buf.extendleft(reversed(msgs[handed:]))
        pos = self._pos
        seen: set[_Key] = set()
        need = len(self._assigned)
        for j in range(handed - 1, -1, -1):
            m = msgs[j]
            k = (m.topic(), m.partition())
            if k not in seen:
                seen.add(k)
                pos[k] = m.offset() + 1
                if len(seen) >= need:
                    break

    def _tp(self, key: _Key, offset: int | None = None) -> Any:
        if offset is None:
            return self._ck.TopicPartition(key[0], key[1])
        return self._ck.TopicPartition(key[0], key[1], offset)

    def _metadata(self, topic: str | None = None) -> Any:
        with _kafka.raising("metadata"):
            if topic is None:
                return self._c.list_topics(timeout=_TIMEOUT_S)
            return self._c.list_topics(topic, timeout=_TIMEOUT_S)

    def _partitions_of(self, topic: str) -> list[int] | None:
        # Every topic's metadata: asking for one topic alone would let the
        # broker create it (allow.auto.create.topics).
        t = self._metadata().topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return sorted(t.partitions)

    def _create_missing(self, topics: Iterable[str]) -> None:
        """``auto_create_topics`` with ``num_partitions``: create missing
        topics here; without ``num_partitions`` the broker decides (its
        auto.create.topics.enable), as for any Kafka consumer."""
        if not self._auto_create:
            return
        if self._num_partitions is None:
            for t in topics:
                self._metadata(t)  # allow.auto.create.topics: the broker may create it
            return
        from ottla.remote.admin import create_if_missing

        for t in topics:
            if self._partitions_of(t) is None:
                create_if_missing(self._servers, self._conf, t, self._num_partitions)

    # ---- subscription and assignment ---------------------------------------

    def subscribe(
        self,
        topics: str | Sequence[str] | None = None,
        pattern: str | None = None,
        *,
        on_assign: Callable[[Any, list[TopicPartition]], Any] | None = None,
        on_revoke: Callable[[Any, list[TopicPartition]], Any] | None = None,
        on_lost: Callable[[Any, list[TopicPartition]], Any] | None = None,
        listener: Any | None = None,
    ) -> None:
        """Subscribe to topics, or to every topic matching ``pattern``
        (joining ``group_id`` through the cluster's group coordinator if set;
        otherwise every partition of them is read)."""
        self._check_open()
        if (topics is None) == (pattern is None):
            raise ValueError("subscribe() takes topics or pattern=..., exactly one")
        names: list[str] = []
        if topics is not None:
            names = [topics] if isinstance(topics, str) else list(topics)
            if not names:
                raise ValueError("subscribe() needs at least one topic (or pattern=...)")
            for n in names:
                if not isinstance(n, str):
                    raise TypeError(f"topic names are str, not {type(n).__name__}")
                if not n.startswith("^"):
                    _check_topic(n)
        if pattern is not None:
            import re

            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"pattern {pattern!r}: {e}") from None
            names = [f"^(?:{pattern})$"]
        self._create_missing(n for n in names if not n.startswith("^"))
        self._callbacks = (on_assign, on_revoke, on_lost, listener)
        self._joined = False
        self._drop_buffered(set(self._assigned))
        self._topics = set(names)
        self._manual = False
        if self._group is None:
            self._assign_topics(force=True)
            return
        with _kafka.raising("subscribe"):
            self._c.subscribe(
                names, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )

    def _user_callback(self, which: int, method: str, tps: list[TopicPartition]) -> None:
        cb = self._callbacks[which]
        listener = self._callbacks[3]
        if cb is not None:
            cb(self, tps)
        elif listener is not None and hasattr(listener, method):
            getattr(listener, method)(tps)

    def _in_callback(self, handler: Callable[[list[Any]], None], partitions: list[Any]) -> None:
        outer = self._callback_thread
        self._callback_thread = threading.get_ident()
        try:
            handler(partitions)
        finally:
            self._callback_thread = outer

    def _on_assign(self, _c: Any, partitions: list[Any]) -> None:
        self._in_callback(self._assigned_now, partitions)

    def _on_revoke(self, _c: Any, partitions: list[Any]) -> None:
        self._in_callback(self._revoked_now, partitions)

    def _on_lost(self, _c: Any, partitions: list[Any]) -> None:
        self._in_callback(self._lost_now, partitions)

    def _assigned_now(self, partitions: list[Any]) -> None:
        keys = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(keys)
        self._joined = True
        self._user_callback(
            0, "on_partitions_assigned", [TopicPartition(t, p) for t, p in sorted(keys)]
        )

    def _revoked_now(self, partitions: list[Any]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        if self._auto_commit and not self._closing_without_commit:
            try:
                self._commit_positions(keys)
            except Exception:
                pass  # the next owner reads them again: at least once
        self._forget(keys)
        self._user_callback(
            1, "on_partitions_revoked", [TopicPartition(t, p) for t, p in sorted(keys)]
        )

    def _lost_now(self, partitions: list[Any]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._forget(keys)
        which, method = (2, "on_partitions_lost")
        if self._callbacks[2] is None and not hasattr(self._callbacks[3], method):
            which, method = (1, "on_partitions_revoked")
        self._user_callback(which, method, [TopicPartition(t, p) for t, p in sorted(keys)])

    def _forget(self, keys: set[_Key]) -> None:
        self._drop_buffered(keys)
        self._assigned -= keys
        self._paused -= keys
        for k in keys:
            self._pos.pop(k, None)

    def _drop_buffered(self, keys: set[_Key]) -> None:
        self._settle()
        if not keys:
            return
        buf = self._buf
        if buf:
            # In place: an iteration in progress holds this deque.
            keep = [m for m in buf if (m.topic(), m.partition()) not in keys]
            buf.clear()
            buf.extend(keep)
        for k in keys:
            self._held.pop(k, None)

    def _assign_topics(self, force: bool = False) -> None:
        """A consumer without a group: every partition of the subscribed
        topics (looked up again now and then, for topics yet to exist and
        partitions added)."""
        now = time.monotonic()
        if not force and now < self._next_look:
            return
        self._next_look = now + 1.0
        import re

        md = self._metadata()
        want: set[_Key] = set()
        for name in self._topics:
            for t, tm in md.topics.items():
                if t in _INTERNAL or tm.error is not None:
                    continue
                if re.fullmatch(name[1:], t) if name.startswith("^") else t == name:
                    want.update((t, p) for p in tm.partitions)
        new = want - self._assigned
        if new:
            with _kafka.raising("assign"):
                self._c.incremental_assign([self._start(k) for k in sorted(new)])
            self._assigned |= new
            for k in new & self._paused:
                self._c.pause([self._tp(k)])

    def unsubscribe(self) -> None:
        """Leave the group (after an auto-commit) or drop the subscription."""
        self._check_open()
        if self._group is not None and not self._manual and self._topics:
            with _kafka.raising("unsubscribe"):
                self._c.unsubscribe()
        else:
            self._c.unassign()
        self._forget(set(self._assigned))
        self._topics = set()

    def subscription(self) -> set[str]:
        """The subscribed topics (a pattern's: the topics matching it now)."""
        names = {t for t in self._topics if not t.startswith("^")}
        patterns = [t[1:] for t in self._topics if t.startswith("^")]
        if patterns:
            import re

            for t in self._metadata().topics:
                if t not in _INTERNAL and any(re.fullmatch(p, t) for p in patterns):
                    names.add(t)
        return names

    def assign(self, partitions: Iterable[_TP]) -> None:
        """Read exactly these partitions, with no group membership; a
        missing partition raises :class:`ottla.UnknownTopicOrPartitionError`."""
        self._check_open()
        self._settle()
        keys = sorted({_key(tp) for tp in partitions})
        self._create_missing({t for t, _ in keys})
        known: dict[str, list[int] | None] = {}
        for t, p in keys:
            if t not in known:
                known[t] = self._partitions_of(t)
            if p not in (known[t] or ()):
                raise UnknownTopicOrPartitionError(f"unknown topic or partition: {t}-{p}")
        if self._topics and self._group is not None and not self._manual:
            self._c.unsubscribe()
        gone = self._assigned - set(keys)
        self._forget(gone)
        with _kafka.raising("assign"):
            self._c.assign(
                [self._tp(k, self._pos[k]) if k in self._pos else self._start(k) for k in keys]
            )
        self._topics = set()
        self._manual = True
        self._assigned = set(keys)
        for k in self._paused & self._assigned:
            self._c.pause([self._tp(k)])

    def _start(self, k: _Key) -> Any:
        """Where a partition assigned by hand starts: "latest" is the end
        offset *now*, as in the directory form (librdkafka would resolve it
        when its fetch starts, skipping records produced meanwhile)."""
        if self._reset == "latest" and self._group is None:
            hi = self._watermarks(k)[1]
            self._pos[k] = int(hi)
            return self._tp(k, int(hi))
        return self._tp(k)

    def _await_join(self) -> None:
        """A group member's first assignment, as the directory form has one
        when ``subscribe()`` returns: poll (buffering records, handing out
        none) until the coordinator's first answer."""
        if self._group is None or self._manual or not self._topics or self._joined:
            return
        deadline = time.monotonic() + _TIMEOUT_S
        while not self._joined and time.monotonic() < deadline and not self._closed:
            self._fill(0.1, 500)

    def assignment(self) -> set[TopicPartition]:
        self._check_open()
        self._await_join()
        if self._group is not None and not self._manual:
            try:
                self._assigned = {(p.topic, p.partition) for p in self._c.assignment()}
            except Exception:
                pass
        return {TopicPartition(t, p) for t, p in self._assigned}

    # ---- reading -----------------------------------------------------------

    def _fill(self, timeout: float, want: int) -> None:
        """Take ready records from librdkafka into the buffer: at once what
        is there, else wait up to ``timeout`` seconds for the first one."""
        if self._group is None and self._topics and not self._manual:
            self._assign_topics()
        if self._auto_commit and time.monotonic() >= self._next_commit:
            self._next_commit = time.monotonic() + self._commit_every
            self._commit_positions(None, asynchronous=True)
        c = self._c
        # A batch of _CHUNK whatever ``want`` is: iteration asks for one
        # record at a time (refilling 64 at a time was 15 times the calls
        # for the same records), and a bigger batch costs more CPU a record
        # (its messages no longer fit in the CPU's cache).
        n = _CHUNK
        with self._io:
            if self._closed:
                raise ClosedError("consumer is closed")
            with _kafka.raising("consume"):
                msgs = c.consume(n, 0)
                if not msgs and timeout > 0:
                    # In slices, so a close() from another thread waits for
                    # one slice, not for the whole timeout.
                    end = time.monotonic() + timeout
                    first = c.poll(min(timeout, _SLICE_S))
                    while first is None and not self._closing and self._deferred_close is None:
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                        first = c.poll(min(left, _SLICE_S))
                    if first is not None:
                        msgs = [first, *c.consume(n - 1, 0)]
            if self._deferred_close is not None:
                # close() was called in a rebalance callback: now it can be.
                self._finish_close(self._deferred_close)
                return
        if not msgs:
            return
        # One C call a message (kafka_message.rs), where a comprehension
        # calling m.error() cost 37 ns a message.
        bad = first_error(msgs)
        if bad < 0:
            self._buf.extend(msgs)
            return
        self._buf.extend(msgs[:bad])
        for m in msgs[bad:]:
            err = m.error()
            if err is None:
                self._buf.append(m)
            else:
                self._consume_error(err, m)

    def _consume_error(self, err: Any, m: Any) -> None:
        name = err.name()
        if name in _TRANSIENT or (name in _WAITED and not self._manual):
            return
        if name in _COORDINATOR and not err.fatal():
            return
        if name == "_AUTO_OFFSET_RESET":
            where = f"{m.topic()}-{m.partition()}"
            text = err.str()
            if "out of range" in text.lower() or "offset_out_of_range" in text.lower():
                exc: Exception = OffsetOutOfRangeError(f"{where}: {text}")
            else:
                exc = NoOffsetForPartitionError(
                    f"{where}: no committed offset and auto_offset_reset='none' ({text})"
                )
            exc.kafka_error = err  # type: ignore[attr-defined]
            raise exc
        if not err.fatal() and m.topic() is None and err.retriable():
            return
        raise _kafka.error(err, "consume")

    def _take(self, n: int) -> list[Any]:
        """Up to ``n`` buffered messages of unpaused partitions, marking
        them handed out."""
        self._settle()
        buf, pos, paused = self._buf, self._pos, self._paused
        if not paused:
            # The common case, in bulk: the buffer holds records of assigned
            # partitions only (a revoke drops the others), so take the first
            # n; a partition's position is its last record's offset + 1.
            if n >= len(buf):
                taken = list(buf)
                buf.clear()
            else:
                popleft = buf.popleft
                taken = [popleft() for _ in range(n)]
            # A partition's records are in log order: its position is its
            # last record's offset + 1. Looked for from the end, stopping
            # once every assigned partition was seen (one record, for a
            # consumer of one partition).
            last: dict[_Key, int] = {}
            need = len(self._assigned)
            for m in reversed(taken):
                k = (m.topic(), m.partition())
                if k not in last:
                    last[k] = m.offset() + 1
                    if len(last) >= need:
                        break
            pos.update(last)
            return taken
        out: list[Any] = []
        while buf and len(out) < n:
            m = buf.popleft()
            k = (m.topic(), m.partition())
            if k in paused:
                self._held.setdefault(k, []).append(m)
                continue
            if k not in self._assigned:
                continue
            pos[k] = m.offset() + 1
            out.append(m)
        return out

    def _record(self, m: Any) -> Record:
        return remote_record(m, self._kd, self._vd)

    def _behind(self) -> bool:
        """True while an assigned, unpaused partition's position is below
        its high watermark: records are in the log but not fetched yet.

        A read that would not wait (``timeout_ms`` spent, ``poll(0)``,
        ``consumer_timeout_ms=0``) still waits for those, so it returns what
        the log holds, as the directory form's does, not what happened to
        be on the wire already."""
        self._await_join()
        for k in self._assigned - self._paused:
            if k in self._held:
                continue
            pos = self.position(k)
            _lo, hi = self._c.get_watermark_offsets(self._tp(k), cached=True)
            if hi is None or hi < 0:
                hi = self._watermarks(k)[1]
            if pos < hi:
                return True
        return False

    def _high_watermarks(self) -> dict[_Key, int]:
        """The high watermarks of the assigned, unpaused partitions: the
        last librdkafka saw (no request), else asked for."""
        out = {}
        for k in self._assigned - self._paused:
            _lo, hi = self._c.get_watermark_offsets(self._tp(k), cached=True)
            if hi is None or hi < 0:  # not fetched from yet: ask
                hi = self._watermarks(k)[1]
            out[k] = int(hi)
        return out

    def _poll_msgs(
        self,
        timeout_ms: float,
        max_records: int,
        convert: Callable[[list[Any]], list[Any]] | None = None,
    ) -> list[Any]:
        """Up to ``max_records`` records: what the log holds now, as the
        directory form returns, waiting up to ``timeout_ms`` if it holds
        none past the positions. With ``convert``, what it makes of each
        batch taken (``poll_values``: the values, so a batch's messages are
        freed before the next one is fetched, not held to the end)."""
        self._check_open()
        if not timeout_ms >= 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        now = time.monotonic()
        deadline = now + timeout_ms / 1000.0
        catch_up = now + _TIMEOUT_S
        got: list[Any] = []
        targets: dict[_Key, int] | None = None
        while True:
            if self._closed:  # by a rebalance callback of this poll
                return got
            want = max_records - len(got)
            if len(self._buf) < want:
                left = deadline - time.monotonic()
                wait = 0.0 if self._buf else (max(left, 0.0) if not got else 0.02)
                self._fill(wait, want - len(self._buf))
            taken = self._take(max_records - len(got))
            got.extend(taken if convert is None else convert(taken))
            if len(got) >= max_records:
                return got
            now = time.monotonic()
            if got:
                # Records of the log as it was at this call but not fetched
                # yet come in the same answer (a snapshot: a steady stream
                # of new records does not hold the call).
                if targets is None:
                    targets = self._high_watermarks()
                if now < catch_up and any(self.position(k) < hi for k, hi in targets.items()):
                    continue
                return got
            if now >= deadline:
                if now >= catch_up or not self._behind():
                    return got
                deadline = now + 0.05

    def poll(
        self, timeout_ms: float = 0.0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """``{TopicPartition: [Record, ...]}``, waiting up to ``timeout_ms``
        when none are ready (``{}`` if none came)."""
        msgs = self._poll_msgs(timeout_ms, max_records or self._max_records)
        recs, err = remote_records(msgs, self._kd, self._vd)
        if err is not None:
            raise err
        groups: dict[_Key, list[Record]] = {}
        for r in recs:
            k = (r.topic, r.partition)
            batch = groups.get(k)
            if batch is None:
                groups[k] = [r]
            else:
                batch.append(r)
        return {TopicPartition(*k): batch for k, batch in groups.items()}

    def poll_values(self, max_records: int = 100000, timeout_ms: float = 0.0) -> list[Any]:
        """Up to ``max_records`` values (no ``Record`` objects, no
        deserializers); positions advance as with ``poll``."""
        return self._poll_msgs(timeout_ms, max_records, message_values)

    def __iter__(self) -> Iterator[Record]:
        # The records of each batch straight from a list iterator: no
        # Python frame runs per record (a generator's `yield from` resumed
        # one for each).
        return itertools.chain.from_iterable(self._batches())

    def _batches(self) -> Iterator[Iterator[Record]]:
        """Iteration, as iterators over batches of records, taken from the
        shared buffer, so ``next(c)``, ``poll()``, ``seek()`` and a revoke
        in the loop body see the same state.

        Without deserializers, the buffered messages are taken as a batch
        and handed out by a ``RecordIter``, which makes each ``Record`` as
        the loop asks for it, with no Python code per record (its
        ``next()`` is a C function of the extension's own). The batch is
        ``self._batch`` meanwhile, and whatever reads the buffer or the
        positions first ends it (``_settle``): the positions of the records
        handed out so far, the rest back in the buffer, and the iterator
        exhausted. With a deserializer, one record at a time: each runs
        when its record is handed out, as in the directory form, and its
        position moves first."""
        buf, pos = self._buf, self._pos
        popleft = buf.popleft
        kd, vd = self._kd, self._vd
        while True:
            if buf and not self._paused:
                if kd is None and vd is None:
                    self._settle()  # another iteration's batch, handed out first
                    msgs = list(buf)
                    buf.clear()
                    batch = (msgs, remote_record_iter(msgs, 0, len(msgs)))
                    self._batch = batch
                    yield batch[1]
                    if self._batch is batch:  # else settled meanwhile
                        self._settle()
                    continue
                m = popleft()
                pos[(m.topic(), m.partition())] = m.offset() + 1
                yield iter((remote_record(m, kd, vd),))
                continue
            try:
                r = self.__next__()
            except StopIteration:
                return
            yield iter((r,))

    def __next__(self) -> Record:
        self._settle()
        buf = self._buf
        if buf:
            m = buf[0]
            k = (m.topic(), m.partition())
            if k in self._assigned and k not in self._paused:
                buf.popleft()
                self._pos[k] = m.offset() + 1
                return remote_record(m, self._kd, self._vd)
        if self._closed:
            raise StopIteration
        timeout = self._timeout_ms
        deadline = None if timeout is None else time.monotonic() + timeout / 1000.0
        while True:
            left = 0.1 if deadline is None else min(deadline - time.monotonic(), 0.1)
            try:
                got = self._poll_msgs(max(left, 0) * 1000.0, 1)
            except ClosedError:
                raise StopIteration from None
            if got:
                if not self._buf and len(got) == 1:
                    self._fill(0, self._max_records)
                return self._record(got[0])
            if self._closed or (deadline is not None and time.monotonic() >= deadline):
                raise StopIteration

    # ---- Arrow and pandas (built from fetched records) -----------------------

    def _arrow_of(self, msgs: list[Any]) -> Any:
        from ottla import _arrow

        pa = _arrow.pyarrow()
        topics = [m.topic() for m in msgs]
        names = sorted(set(topics))
        index = {t: i for i, t in enumerate(names)}
        header_type = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
        return pa.RecordBatch.from_arrays(
            [
                pa.DictionaryArray.from_arrays(
                    pa.array([index[t] for t in topics], pa.int32()), pa.array(names, pa.string())
                ),
                pa.array([m.partition() for m in msgs], pa.int32()),
                pa.array([m.offset() for m in msgs], pa.int64()),
                pa.array([m.timestamp()[1] for m in msgs], pa.timestamp("ms", tz="UTC")),
                pa.array([m.key() for m in msgs], pa.binary()),
                pa.array([m.value() for m in msgs], pa.binary()),
                pa.array(
                    [[{"key": k, "value": v} for k, v in (m.headers() or ())] for m in msgs],
                    header_type,
                ),
            ],
            names=["topic", "partition", "offset", "timestamp", "key", "value", "headers"],
        )

    @staticmethod
    def _limit(msgs: list[Any], max_bytes: int | None) -> int:
        if max_bytes is None:
            return len(msgs)
        total = 0
        for i, m in enumerate(msgs):
            total += len(m.key() or b"") + len(m.value() or b"")
            total += sum(len(k) + len(v or b"") for k, v in m.headers() or ())
            if total > max_bytes and i > 0:
                return i
        return len(msgs)

    def _take_bytes(self, timeout_ms: float, max_records: int, max_bytes: int | None) -> list[Any]:
        """Like ``_poll_msgs``, but a record past ``max_bytes`` goes back."""
        self._check_open()
        if not timeout_ms >= 0:
            raise ValueError(f"timeout_ms must be >= 0, got {timeout_ms}")
        self._settle()
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            if len(self._buf) < max_records:
                left = deadline - time.monotonic()
                self._fill(max(left, 0) if not self._buf else 0, max_records - len(self._buf))
            # Look before taking: positions move only past what is returned.
            ready = [
                m
                for m in list(self._buf)[:max_records]
                if (m.topic(), m.partition()) not in self._paused
            ]
            n = self._limit(ready, max_bytes)
            got = self._take(n) if n else []
            if got or time.monotonic() >= deadline:
                return got

    def _poll_arrow(
        self, max_records: int = 100000, max_bytes: int | None = None, timeout_ms: float = 0.0
    ) -> Any:
        return self._arrow_of(self._take_bytes(timeout_ms, max_records, max_bytes))

    def poll_arrow(
        self,
        timeout_ms: float = 0,
        max_records: int = 100_000,
        max_bytes: int | None = 52_428_800,
    ) -> Any:
        """Records as one ``pyarrow.RecordBatch`` in the columns of
        :meth:`ottla.Consumer.poll_arrow`."""
        from ottla import _arrow

        _arrow.require()
        return self._poll_arrow(max_records, max_bytes, timeout_ms)

    def _read_until(
        self, ends: Mapping[_Key, int], max_records: int | None, max_bytes: int | None
    ) -> list[Any]:
        """Records of the assigned partitions up to ``ends`` (exclusive)."""
        self._settle()
        out: list[Any] = []
        size = 0
        idle_until = time.monotonic() + _TIMEOUT_S
        while True:
            todo = {k for k, e in ends.items() if self.position(k) < e and k not in self._paused}
            if not todo or (max_records is not None and len(out) >= max_records):
                return out
            self._fill(0.2, 500)
            # Past the end (appended meanwhile): left in the buffer (the
            # same deque: an iteration in progress holds it).
            buf = self._buf
            keep: list[Any] = []
            took = False
            while buf:
                m = buf.popleft()
                k = (m.topic(), m.partition())
                if k not in todo or m.offset() >= ends[k]:
                    keep.append(m)
                    continue
                n = len(m.key() or b"") + len(m.value() or b"")
                if (max_records is not None and len(out) >= max_records) or (
                    max_bytes is not None and out and size + n > max_bytes
                ):
                    keep.append(m)
                    keep.extend(buf)
                    buf.clear()
                    buf.extend(keep)
                    return out
                size += n
                self._pos[k] = m.offset() + 1
                out.append(m)
                took = True
            buf.extend(keep)
            if took:
                idle_until = time.monotonic() + _TIMEOUT_S
            elif time.monotonic() > idle_until:
                raise OttlaTimeoutError(
                    f"read_arrow: no records from {sorted(todo)} for {_TIMEOUT_S:g} s"
                )

    def read_arrow(
        self,
        max_records: int | None = None,
        max_bytes: int | None = None,
        *,
        start: Any = None,
    ) -> Any:
        """:meth:`ottla.Consumer.read_arrow` over the cluster: the records
        from ``start`` up to the end offsets as they are when the call
        begins, as a ``pyarrow.Table``; a look (a private consumer) unless
        ``start="position"``."""
        from ottla import _arrow

        _arrow.require()
        self._check_open()
        pa = _arrow.pyarrow()
        if start == "position":
            keys = sorted(self._assigned - self._paused)
            ends = {k: v for k, v in self._ends(keys).items()}
            batch = self._arrow_of(self._read_until(ends, max_records, max_bytes))
            return pa.Table.from_batches([batch])
        pick = _arrow._start_rule(self, start)  # type: ignore[arg-type]
        tps = _arrow._partitions(self)  # type: ignore[arg-type]
        look = Consumer(self._servers, enable_auto_commit=False, **self._passthrough())
        try:
            look.assign(tps)
            lows = look.beginning_offsets(tps)
            ends2 = look.end_offsets(tps)
            for tp in tps:
                lo, end = lows[tp], ends2[tp]
                look.seek(tp, min(max(pick(look, tp, lo, end), lo), end))  # type: ignore[arg-type]
            msgs = look._read_until({_key(tp): ends2[tp] for tp in tps}, max_records, max_bytes)
            return pa.Table.from_batches([look._arrow_of(msgs)])
        finally:
            look.close(autocommit=False)

    def _passthrough(self) -> dict[str, Any]:
        """librdkafka settings given by the application (security, ...) for
        a private look consumer."""
        skip = {"group.id", "auto.offset.reset", "enable.auto.commit", "enable.auto.offset.store"}
        skip |= {"bootstrap.servers", "partition.assignment.strategy", "session.timeout.ms"}
        return {k: v for k, v in self._conf.items() if k not in skip}

    def to_pandas(
        self,
        max_records: int | None = None,
        max_bytes: int | None = None,
        *,
        start: Any = None,
        **to_pandas_kwargs: Any,
    ) -> Any:
        """``read_arrow(...)`` as a ``pandas.DataFrame``."""
        from ottla import _arrow

        _arrow.require(pandas=True)
        return _arrow.to_pandas(
            self.read_arrow(max_records, max_bytes, start=start), **to_pandas_kwargs
        )

    # ---- positions ---------------------------------------------------------

    def _ends(self, keys: Iterable[_Key]) -> dict[_Key, int]:
        out = {}
        for k in keys:
            out[k] = self._watermarks(k)[1]
        return out

    def _watermarks(self, k: _Key) -> tuple[int, int]:
        """A partition's log start and end, asked of its leader; what
        librdkafka retries by itself (a leader gone, its broker handle
        destroyed while leadership moves) is asked again, up to
        ``_TIMEOUT_S``, as a Kafka client's own lookups are. So is an
        unknown partition that is assigned to this consumer (it exists:
        librdkafka's metadata lacks it for a moment while leadership moves,
        as Kafka's clients treat UNKNOWN_TOPIC_OR_PARTITION as retriable);
        one asked by hand that is not assigned is an error at once."""
        deadline = time.monotonic() + _TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            try:
                lo, hi = self._c.get_watermark_offsets(
                    self._tp(k), timeout=max(min(left, 5.0), 0.1)
                )
                return int(lo), int(hi)
            except Exception as e:
                if type(e).__name__ != "KafkaException":
                    raise
                err: Any = e.args[0] if e.args else None
                name = err.name() if hasattr(err, "name") else ""
                again = (
                    name in _RETRIED
                    or (name in _WAITED and k in self._assigned)
                    or bool(hasattr(err, "retriable") and err.retriable())
                )
                if not again or time.monotonic() >= deadline:
                    raise _kafka.error(e, f"offsets of {k[0]}-{k[1]}") from e
            time.sleep(0.05)

    def seek(self, partition: _TP, offset: int) -> None:
        """Read ``partition`` from ``offset`` next."""
        self._check_open()
        k = _key(partition)
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        if k not in self._assigned:
            self.assignment()
            if k not in self._assigned:
                raise IllegalStateError(f"seek: {k[0]}-{k[1]} is not assigned to this consumer")
        self._settle()
        if offset != self._pos.get(k) and k in self._held:
            self._held.pop(k)
        self._drop_buffered({k})
        self._pos[k] = offset
        try:
            self._c.seek(self._tp(k, offset))
        except Exception as e:
            if type(e).__name__ != "KafkaException":
                raise
            # Not fetching yet (just assigned): assign it again at the offset.
            with _kafka.raising("seek"):
                self._c.incremental_unassign([self._tp(k)])
                self._c.incremental_assign([self._tp(k, offset)])
                if k in self._paused:
                    self._c.pause([self._tp(k)])

    def seek_to_beginning(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to their log start."""
        for k in [_key(tp) for tp in partitions] or sorted(self._assigned):
            self.seek(k, self.beginning_offsets([k])[TopicPartition(*k)])

    def seek_to_end(self, *partitions: _TP) -> None:
        """Seek ``partitions`` (all assigned if none) to their log end."""
        for k in [_key(tp) for tp in partitions] or sorted(self._assigned):
            self.seek(k, self._ends([k])[k])

    def position(self, partition: _TP) -> int:
        """Offset of the next record this consumer will return for ``partition``."""
        self._check_open()
        k = _key(partition)
        if k not in self._assigned:
            self.assignment()
            if k not in self._assigned:
                raise IllegalStateError(f"position: {k[0]}-{k[1]} is not assigned to this consumer")
        self._settle()
        got = self._pos.get(k)
        if got is not None:
            return got
        for m in (*self._held.get(k, ()), *self._buf):
            if (m.topic(), m.partition()) == k:
                return int(m.offset())
        off = self._c.position([self._tp(k)])[0].offset
        if off >= 0:
            return int(off)
        # Not fetched yet: where fetching will start, pinned there (so a
        # record produced meanwhile is not skipped by a later "latest").
        committed = self.committed(k)
        if committed is not None:
            return committed
        if self._reset == "error":
            raise NoOffsetForPartitionError(
                f"{k[0]}-{k[1]}: no committed offset and auto_offset_reset='none'"
            )
        lo, hi = self._watermarks(k)
        start = int(lo if self._reset == "earliest" else hi)
        self.seek(k, start)
        return start

    def committed(self, partition: _TP) -> int | None:
        """The group's committed offset for ``partition``, or None."""
        self._check_open()
        if self._group is None:
            return None
        k = _key(partition)
        with _kafka.raising("committed"):
            got = self._c.committed([self._tp(k)], timeout=_TIMEOUT_S)[0]
        if got.error is not None:
            raise _kafka.error(got.error, "committed")
        return None if got.offset < 0 else int(got.offset)

    def highwater(self, partition: _TP) -> int | None:
        """The high watermark of an assigned ``partition``, else None."""
        k = _key(partition)
        if k not in self._assigned:
            return None
        _lo, hi = self._c.get_watermark_offsets(self._tp(k), cached=True)
        if hi is None or hi < 0:
            return self._ends([k])[k]
        return int(hi)

    def beginning_offsets(self, partitions: Iterable[_TP]) -> dict[TopicPartition, int]:
        out = {}
        for tp in partitions:
            k = _key(tp)
            lo, _ = self._watermarks(k)
            out[TopicPartition(*k)] = int(lo)
        return out

    def end_offsets(self, partitions: Iterable[_TP]) -> dict[TopicPartition, int]:
        ends = self._ends(_key(tp) for tp in partitions)
        return {TopicPartition(*k): v for k, v in ends.items()}

    def offsets_for_times(
        self, timestamps: Mapping[_TP, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The earliest ``(offset, timestamp)`` at or after each timestamp
        (ms), None where there is none (the cluster's ListOffsets)."""
        admin_mod = _kafka.ck_admin()
        if self._admin is None:
            self._admin = admin_mod.AdminClient(self._passthrough_admin())
        specs = {
            self._tp(_key(tp)): admin_mod.OffsetSpec.for_timestamp(int(ts))
            for tp, ts in timestamps.items()
        }
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        if not specs:
            return out
        topics = self._metadata().topics
        for tp in specs:
            t = topics.get(tp.topic)
            if t is None or tp.partition not in t.partitions:
                raise UnknownTopicOrPartitionError(
                    f"unknown topic or partition: {tp.topic}-{tp.partition}"
                )
        with _kafka.raising("offsets_for_times"):
            futures = self._admin.list_offsets(specs, request_timeout=_TIMEOUT_S)
            for tp, f in futures.items():
                r = f.result()
                out[TopicPartition(tp.topic, tp.partition)] = (
                    None if r.offset < 0 else OffsetAndTimestamp(r.offset, r.timestamp)
                )
        return out

    def _passthrough_admin(self) -> dict[str, Any]:
        consumer_only = (
            "group.", "auto.", "enable.", "fetch.", "max.partition", "check.crcs",
            "partition.assignment", "session.timeout", "heartbeat", "max.poll",
            "allow.auto", "isolation", "queued.",
        )  # fmt: skip
        return {k: v for k, v in self._conf.items() if not k.startswith(consumer_only)}

    def pause(self, *partitions: _TP) -> None:
        """Stop returning records from ``partitions`` until resumed."""
        keys = {_key(tp) for tp in partitions}
        self._check_open()
        self._await_join()
        missing = keys - self._assigned
        if missing:
            raise IllegalStateError(f"pause: not assigned to this consumer: {sorted(missing)}")
        self._settle()  # the batch being handed out stops at the pause
        self._paused |= keys
        live = [self._tp(k) for k in keys if k in self._assigned]
        if live:
            with _kafka.raising("pause"):
                self._c.pause(live)

    def resume(self, *partitions: _TP) -> None:
        """Return records from paused ``partitions`` again."""
        keys = {_key(tp) for tp in partitions}
        self._settle()
        self._paused -= keys
        held = [m for k in keys for m in self._held.pop(k, [])]
        if held:
            self._buf.extendleft(reversed(held))
        live = [self._tp(k) for k in keys if k in self._assigned]
        if live:
            with _kafka.raising("resume"):
                self._c.resume(live)

    def paused(self) -> set[TopicPartition]:
        return {TopicPartition(*k) for k in self._paused}

    # ---- commits -----------------------------------------------------------

    def _commit_positions(self, keys: set[_Key] | None, asynchronous: bool = False) -> None:
        self._settle()
        todo = [
            self._tp(k, o)
            for k, o in self._pos.items()
            if (keys is None and k in self._assigned) or (keys is not None and k in keys)
        ]
        if not todo:
            return
        with _kafka.raising("commit"):
            self._c.commit(offsets=todo, asynchronous=asynchronous)

    def commit(self, offsets: Mapping[_TP, Any] | None = None) -> None:
        """Commit the positions (records handed out), or
        ``{TopicPartition: offset | OffsetAndMetadata}``, to the group's
        coordinator."""
        self._check_open()
        if self._group is None:
            raise IllegalStateError("commit needs a group_id")
        if offsets is None:
            self._commit_positions(None)
            return
        todo = []
        for tp, v in offsets.items():
            k = _key(tp)
            offset = getattr(v, "offset", v)
            meta = getattr(v, "metadata", None)
            if not isinstance(offset, int) or isinstance(offset, bool):
                raise TypeError(f"commit: an offset is an int, not {offset!r}")
            if offset < 0:
                raise ValueError(f"commit: offsets are >= 0, got {offset} for {k[0]}-{k[1]}")
            todo.append(
                self._ck.TopicPartition(k[0], k[1], int(offset), metadata=meta)
                if meta is not None
                else self._tp(k, int(offset))
            )
        if not todo:
            return
        with _kafka.raising("commit"):
            got = self._c.commit(offsets=todo, asynchronous=False)
        for r in got or ():
            if r.error is not None:
                raise _kafka.error(r.error, f"commit {r.topic}-{r.partition}")

    def commit_async(
        self,
        offsets: Mapping[_TP, Any] | None = None,
        callback: Callable[[dict[TopicPartition, OffsetAndMetadata], Exception | None], Any]
        | None = None,
    ) -> Any:
        """kafka-python's ``commit_async``: commit, then
        ``callback(offsets, exception)``; returns a done
        ``concurrent.futures.Future``."""
        import ottla

        return ottla.Consumer.commit_async(self, offsets, callback)  # type: ignore[arg-type]

    # ---- topics ------------------------------------------------------------

    def topics(self) -> set[str]:
        """Topics of the cluster (internal ones hidden)."""
        self._check_open()
        return {t for t in self._metadata().topics if t not in _INTERNAL}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        parts = self._partitions_of(topic)
        return None if parts is None else set(parts)

    # ---- lifecycle ---------------------------------------------------------

    def close(self, autocommit: bool = True) -> None:
        """Commit (with auto-commit on and ``autocommit``) and leave the group.

        In a rebalance callback, the consumer is closed at once for the
        application (calls raise :class:`ottla.ClosedError`, iteration ends)
        and librdkafka's handle when the callback has returned: closing it
        from inside its own callback crashes or hangs librdkafka."""
        if self._closed:
            return
        if self._callback_thread == threading.get_ident():
            self._settle()
            self._deferred_close = autocommit
            self._closed = True
            self._buf.clear()
            return
        self._closing = True
        with self._io:
            if self._deferred_close is None:
                self._finish_close(autocommit)

    def _finish_close(self, autocommit: bool) -> None:
        if self._released:
            return
        self._closing_without_commit = not autocommit
        self._settle()
        try:
            if autocommit and self._auto_commit:
                try:
                    self._commit_positions(None)
                except Exception:
                    pass
        finally:
            self._closed = True
            self._buf.clear()
            self._released = True
            self._deferred_close = None
            self._c.close()

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

    @property
    def group_id(self) -> str | None:
        return self._group

    @property
    def member_id(self) -> str | None:
        if self._group is None or self._manual or not self._topics or self._closed:
            return None
        return self._c.memberid() or None

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        group = f" group_id={self._group!r}" if self._group else ""
        parts = ",".join(f"{t}-{p}" for t, p in sorted(self._assigned))
        return (
            f"<ottla.Consumer bootstrap_servers={self._servers!r}{group} "
            f"assignment=[{parts}]{state}>"
        )

    def _repr_html_(self) -> str:
        from ottla import _display

        return _display.consumer_html(self)
