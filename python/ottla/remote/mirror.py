"""``ottla.mirror`` and ``ottla mirror``: copy topics between two places, a
data directory or a Kafka-protocol cluster, in any combination.

What is kept: each record's partition (target topics are created with the
source's partition count), key, value, headers and timestamp, in order.

Progress lives at the target, durably, as MirrorMaker 2 keeps its own:
a compacted checkpoint topic ``ottla-mirror.<name>`` holds, per copied
partition, a pair (next source offset, target end offset) written after
the records it covers were acknowledged. A mirror that was stopped (even
by ``kill -9``) continues from the pair: the target may hold records
written after it (acknowledged, but the checkpoint was not), and exactly
that many source records are skipped, as copies are written in order. So
nothing is copied twice and nothing is lost, as long as only the mirror
writes to its target topics.

Consumer groups: each source group's committed offsets for the copied
partitions are translated (a source offset maps to the target offset of
the same record, from the checkpoint pair and the count of source records
between them) and committed at the target under the same group id, as
MM2's checkpoints with ``sync.group.offsets.enabled``: a pipeline moved to
the target continues where it was. A target group with live members, or
committed ahead of the translation, is left alone.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any

from ottla._core import OttlaError, UnknownTopicOrPartitionError
from ottla.types import TopicPartition

#: The checkpoint topic's name is this prefix and the mirror's name.
CHECKPOINT_PREFIX = "ottla-mirror."
# Topic configs copied when a target topic is created (the source's own
# overrides only; the target's defaults for the rest).
_KEPT_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes", "max.message.bytes")
_INTERNAL = frozenset({"__consumer_offsets", "__transaction_state"})
# Records taken from the source per poll.
_POLL_RECORDS = 5000
_Key = tuple[str, int]


class MirrorError(OttlaError):
    """The mirror cannot continue safely (a target partition it did not
    write, a partition count that differs, ...); nothing was changed."""


@dataclass
class MirrorStats:
    """What :func:`mirror` did."""

    #: Topics copied, sorted.
    topics: list[str]
    #: Partitions copied.
    partitions: int
    #: Records written to the target by this run.
    records: int = 0
    #: Records found at the target already on start (written by a run that
    #: stopped before its checkpoint): not written again.
    skipped: int = 0
    #: Translated group offsets committed at the target, per group.
    groups: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    #: Groups not moved at the target, and why.
    groups_left: dict[str, str] = field(default_factory=dict)
    #: The timestamp (ms) of the newest record copied, -1 if none.
    last_timestamp_ms: int = -1


def _is_cluster(place: str) -> bool:
    return place.startswith("kafka://")


def _place(where: str | PathLike[str]) -> str:
    text = fspath(where)
    if not isinstance(text, str) or not text:
        raise TypeError(f"a place is a directory path or 'kafka://host:port', not {where!r}")
    return text


def _client_config(place: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    if config and not _is_cluster(place):
        raise TypeError(
            f"client settings ({', '.join(sorted(config))}) are for a cluster, not the "
            f"directory {place!r}"
        )
    return dict(config or {})


def _admin(place: str, config: dict[str, Any], create: bool) -> Any:
    import ottla

    if _is_cluster(place):
        return ottla.Admin(place, **config)
    return ottla.Admin(place, create=create)


def _consumer(place: str, config: dict[str, Any], **kw: Any) -> Any:
    import ottla

    return ottla.Consumer(
        place, enable_auto_commit=False, auto_offset_reset="earliest", **kw, **config
    )


def _producer(place: str, config: dict[str, Any]) -> Any:
    import ottla

    if _is_cluster(place):
        # In order, once each, acknowledged by every in-sync replica: what
        # makes the target a prefix of what was sent, and resuming exact.
        settings: dict[str, Any] = {"acks": "all", "enable_idempotence": True, **config}
        return ottla.Producer(place, **settings)
    return ottla.Producer(place)


def _select(names: Iterable[str], patterns: Iterable[str], what: str) -> list[str]:
    """Names matching any of ``patterns`` (names or shell globs); a plain
    name that does not exist is an error."""
    have = sorted(names)
    out: set[str] = set()
    for p in patterns:
        if any(ch in p for ch in "*?["):
            out.update(n for n in have if fnmatch.fnmatchcase(n, p))
        elif p in have:
            out.add(p)
        else:
            raise UnknownTopicOrPartitionError(f"no {what} {p!r} at the source")
    return sorted(out)


class _Run:
    """One mirror run's state; :func:`mirror` is its front."""

    def __init__(
        self,
        source: str,
        target: str,
        source_config: dict[str, Any],
        target_config: dict[str, Any],
        name: str,
    ) -> None:
        self.source, self.target = source, target
        self.scfg, self.tcfg = source_config, target_config
        self.checkpoints = CHECKPOINT_PREFIX + name
        self.src_admin = _admin(source, source_config, create=False)
        self.dst_admin = _admin(target, target_config, create=True)
        # Per partition: the next source offset to copy, the target's end
        # offset, source records still to skip (already at the target).
        self.next_source: dict[_Key, int] = {}
        self.target_end: dict[_Key, int] = {}
        self.skip: dict[_Key, int] = {}
        self.dirty: set[_Key] = set()
        self.last_future: dict[_Key, Any] = {}
        self.counted: dict[tuple[_Key, int, int], int] = {}
        self.translated: dict[tuple[str, _Key], int] = {}

    # ---- planning --------------------------------------------------------------

    def topics(self, patterns: Iterable[str]) -> dict[str, int]:
        """The source topics to copy and their partition counts; the target
        topics created (or checked) with the same counts."""
        names = [
            t
            for t in self.src_admin.list_topics()
            if t not in _INTERNAL and not t.startswith(CHECKPOINT_PREFIX)
        ]
        chosen = _select(names, patterns, "topic")
        have = set(self.dst_admin.list_topics())
        out: dict[str, int] = {}
        for t in chosen:
            d = self.src_admin.describe_topic(t)
            n = len(d.partitions)
            out[t] = n
            if t in have:
                m = len(self.dst_admin.describe_topic(t).partitions)
                if m != n:
                    raise MirrorError(
                        f"topic {t!r} has {n} partitions at the source but {m} at the target: "
                        "a mirror keeps partitions (make them equal, or mirror to another target)"
                    )
                continue
            config = {k: v for k, v in (d.overrides or {}).items() if k in _KEPT_CONFIGS}
            self.dst_admin.create_topic(t, n, config)
        if self.checkpoints not in have:
            self.dst_admin.create_topic(self.checkpoints, 1, {"cleanup.policy": "compact"})
        return out

    def read_checkpoints(self) -> dict[_Key, tuple[int, int]]:
        """The checkpoint topic's pairs, the last one per partition."""
        c = _consumer(self.target, self.tcfg)
        tp = TopicPartition(self.checkpoints, 0)
        out: dict[_Key, tuple[int, int]] = {}
        try:
            c.assign([tp])
            c.seek_to_beginning(tp)
            end = c.end_offsets([tp])[tp]
            idle_until = time.monotonic() + 30
            while c.position(tp) < end:
                got = c.poll(timeout_ms=200, max_records=10_000)
                for r in got.get(tp, ()):
                    if r.key is None or r.value is None:
                        continue
                    topic, partition = json.loads(r.key)
                    v = json.loads(r.value)
                    out[(topic, int(partition))] = (int(v["source"]), int(v["target"]))
                if got:
                    idle_until = time.monotonic() + 30
                elif time.monotonic() > idle_until:
                    raise MirrorError(f"could not read {self.checkpoints!r} at the target")
        finally:
            c.close(autocommit=False)
        return out

    def plan(self, topics: Mapping[str, int]) -> list[_Key]:
        """Where each partition starts: from its checkpoint, past what the
        target holds beyond it; a partition never copied from its log start."""
        saved = self.read_checkpoints()
        keys = [(t, p) for t in sorted(topics) for p in range(topics[t])]
        src = {t: self.src_admin.describe_topic(t) for t in topics}
        dst = {t: self.dst_admin.describe_topic(t) for t in topics}
        for t, p in keys:
            starts = {d.partition: d.start_offset for d in src[t].partitions}
            ends = {d.partition: d.end_offset for d in dst[t].partitions}
            held = ends[p]
            pair = saved.get((t, p))
            if pair is None:
                if held > 0:
                    raise MirrorError(
                        f"{t}-{p} at the target holds {held} records this mirror did not write "
                        f"(no checkpoint in {self.checkpoints!r}): mirror into an empty topic, "
                        "or give the run that wrote it its --name"
                    )
                self.next_source[(t, p)] = starts[p]
                self.target_end[(t, p)] = 0
                self.dirty.add((t, p))  # the first pair, before any copy
                continue
            s, written = pair
            if held < written:
                raise MirrorError(
                    f"{t}-{p} at the target ends at {held}, below this mirror's checkpoint "
                    f"({written}): the target lost records (recreated?)"
                )
            self.next_source[(t, p)] = s
            self.target_end[(t, p)] = held
            self.skip[(t, p)] = held - written
        return keys

    # ---- copying --------------------------------------------------------------

    def checkpoint(self, producer: Any) -> None:
        """Wait for every copy to be acknowledged, then record the pairs."""
        producer.flush()
        for k, fut in self.last_future.items():
            md = fut.get(0)
            if md.offset >= 0:
                self.target_end[k] = md.offset + 1
        self.last_future.clear()
        if not self.dirty:
            return
        for k in sorted(self.dirty):
            if self.skip.get(k):
                continue  # the pair stays the old one until the skip is done
            producer.send(
                self.checkpoints,
                json.dumps({"source": self.next_source[k], "target": self.target_end[k]}).encode(),
                json.dumps(list(k)).encode(),
                partition=0,
            )
        producer.flush()
        self.dirty = {k for k in self.dirty if self.skip.get(k)}

    def copy(
        self,
        keys: list[_Key],
        once: bool,
        stop: threading.Event | None,
        interval_s: float,
        stats: MirrorStats,
        advance: Callable[[int], None],
        on_checkpoint: Callable[[], None],
    ) -> None:
        consumer = _consumer(self.source, self.scfg)
        producer = _producer(self.target, self.tcfg)
        try:
            tps = [TopicPartition(*k) for k in keys]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self.next_source[(tp.topic, tp.partition)])
            ends = consumer.end_offsets(tps) if once else {}
            self.checkpoint(producer)  # first pairs of partitions never copied
            next_checkpoint = time.monotonic() + interval_s
            send = producer.send
            left = list(tps)
            while True:
                if once:
                    left = [tp for tp in left if not self._reached(consumer, tp, ends[tp])]
                    if not left:
                        break
                if stop is not None and stop.is_set():
                    break
                got = consumer.poll(timeout_ms=200, max_records=_POLL_RECORDS)
                n = 0
                for tp, records in got.items():
                    k = (tp.topic, tp.partition)
                    skip = self.skip.get(k, 0)
                    if skip:
                        # Already at the target (written after the last
                        # checkpoint, before the stop): not again.
                        dropped = records[:skip]
                        records = records[skip:]
                        self.skip[k] = skip - len(dropped)
                        stats.skipped += len(dropped)
                        self.next_source[k] = dropped[-1].offset + 1
                        self.dirty.add(k)
                    if not records:
                        continue
                    fut = None
                    for r in records:
                        fut = send(
                            tp.topic,
                            r.value,
                            r.key,
                            partition=tp.partition,
                            timestamp_ms=r.timestamp,
                            headers=r.headers or None,
                        )
                    self.last_future[k] = fut
                    self.next_source[k] = records[-1].offset + 1
                    self.dirty.add(k)
                    n += len(records)
                    stats.last_timestamp_ms = max(stats.last_timestamp_ms, records[-1].timestamp)
                if n:
                    stats.records += n
                    advance(n)
                if time.monotonic() >= next_checkpoint:
                    self.checkpoint(producer)
                    on_checkpoint()
                    next_checkpoint = time.monotonic() + interval_s
        finally:
            try:
                # Stopped by an exception (SIGTERM, Ctrl-C): what was
                # acknowledged is checkpointed; the rest is skipped on resume.
                self.checkpoint(producer)
            except Exception:
                pass
            producer.close()
            consumer.close(autocommit=False)

    def _reached(self, consumer: Any, tp: TopicPartition, end: int) -> bool:
        """Whether ``tp`` is copied up to ``end``; the position also moves
        past offsets without a record (compacted away, transaction markers)."""
        k = (tp.topic, tp.partition)
        if self.next_source[k] >= end:
            return True
        if self.skip.get(k):
            return False
        pos = int(consumer.position(tp))
        if pos > self.next_source[k]:
            self.next_source[k] = pos
            self.dirty.add(k)
        return pos >= end

    # ---- groups ---------------------------------------------------------------

    def _count(self, k: _Key, lo: int, hi: int) -> int:
        """Records of source partition ``k`` in ``[lo, hi)``."""
        if lo >= hi:
            return 0
        cached = self.counted.get((k, lo, hi))
        if cached is not None:
            return cached
        c = _consumer(self.source, self.scfg)
        tp = TopicPartition(*k)
        n = 0
        try:
            c.assign([tp])
            c.seek(tp, lo)
            idle_until = time.monotonic() + 30
            while c.position(tp) < hi:
                got = c.poll(timeout_ms=200, max_records=10_000).get(tp, [])
                n += sum(1 for r in got if r.offset < hi)
                if got:
                    idle_until = time.monotonic() + 30
                elif time.monotonic() > idle_until:
                    raise MirrorError(f"could not read {k[0]}-{k[1]} [{lo}, {hi}) at the source")
        finally:
            c.close(autocommit=False)
        self.counted[(k, lo, hi)] = n
        return n

    def translate(self, patterns: Iterable[str], keys: list[_Key], stats: MirrorStats) -> None:
        """Commit each source group's translated offsets at the target."""
        wanted = set(keys)
        groups = [g for g in self.src_admin.list_groups() if not g.startswith(CHECKPOINT_PREFIX)]
        try:
            chosen = _select(groups, patterns, "group")
        except UnknownTopicOrPartitionError as e:
            raise MirrorError(str(e)) from None
        for g in chosen:
            moves: dict[TopicPartition, int] = {}
            for k, o in self.src_admin.group_offsets(g).items():
                k = (k[0], k[1])
                committed = o["committed"]
                if k not in wanted or committed < 0 or self.skip.get(k):
                    continue
                s, t = self.next_source[k], self.target_end[k]
                if committed > s:
                    continue  # past what is copied yet: a later checkpoint
                # The same record at the target: as many records before the
                # pair as at the source.
                to = t - self._count(k, committed, s)
                if self.translated.get((g, k)) != to:
                    moves[TopicPartition(*k)] = max(to, 0)
            if not moves:
                continue
            there = self.dst_admin.group_offsets(g) if g in self.dst_admin.list_groups() else {}
            for tp in list(moves):
                now = there.get((tp.topic, tp.partition), {}).get("committed", -1)
                if now >= moves[tp]:
                    # There already, or the pipeline runs at the target,
                    # further on.
                    self.translated[(g, (tp.topic, tp.partition))] = moves.pop(tp)
            if not moves:
                continue
            try:
                done = self.dst_admin.reset_offsets(g, to_offsets=moves)
            except OttlaError as e:
                if type(e).__name__ != "GroupNotEmptyError":
                    raise
                stats.groups_left[g] = f"live members at the target: {e}"
                continue
            for tp, to in done.items():
                self.translated[(g, (tp.topic, tp.partition))] = moves.get(tp, to)
                stats.groups.setdefault(g, {})[tp] = to

    def close(self) -> None:
        for a in (self.src_admin, self.dst_admin):
            try:
                a.close()
            except Exception:
                pass


def mirror(
    source: str | PathLike[str],
    target: str | PathLike[str],
    topics: Iterable[str] = ("*",),
    *,
    groups: Iterable[str] | None = ("*",),
    once: bool = True,
    name: str = "mirror",
    source_config: Mapping[str, Any] | None = None,
    target_config: Mapping[str, Any] | None = None,
    checkpoint_interval_ms: int = 1000,
    progress: bool | None = None,
    stop: threading.Event | None = None,
) -> MirrorStats:
    """Copy ``topics`` (names or shell globs) from ``source`` to ``target``,
    each a data directory path or ``"kafka://host:port"``, keeping
    partitions, keys, values, headers and timestamps; then translate the
    committed offsets of ``groups`` (names or globs; None: none) at the
    target.

    ``once=True`` copies up to the end offsets the source has when it
    starts, then returns; ``once=False`` follows the source until ``stop``
    is set (or an exception such as ``KeyboardInterrupt``), checkpointing
    and translating every ``checkpoint_interval_ms``. A run continues where
    the last one with the same ``name`` stopped, without copying a record
    twice (see the module's docstring). ``source_config`` and
    ``target_config`` are a cluster client's settings (security, ...).
    ``progress``: a bar on stderr (None: when stderr is a terminal).

    >>> import ottla
    >>> with ottla.Producer("data") as p:
    ...     _ = p.send("orders", b"v", key=b"k", headers=[("h", b"1")]).get()
    >>> stats = ottla.mirror("data", "copy", ["orders"])
    >>> stats.records, stats.topics
    (1, ['orders'])
    """
    src, dst = _place(source), _place(target)
    if src == dst:
        raise ValueError(f"source and target are the same place: {src!r}")
    if not name or not all(ch.isalnum() or ch in "._-" for ch in name):
        raise ValueError(f"name must be letters, digits, '.', '_' or '-', not {name!r}")
    if isinstance(topics, str):
        topics = [topics]
    if isinstance(groups, str):
        groups = [groups]
    if checkpoint_interval_ms <= 0:
        raise ValueError(f"checkpoint_interval_ms must be > 0, got {checkpoint_interval_ms}")
    run = _Run(
        src,
        dst,
        _client_config(src, source_config),
        _client_config(dst, target_config),
        name,
    )
    try:
        chosen = run.topics(list(topics))
        keys = run.plan(chosen)
        stats = MirrorStats(topics=sorted(chosen), partitions=len(keys))
        total: int | None = None
        if once and keys:
            c = _consumer(src, run.scfg)
            try:
                tps = [TopicPartition(*k) for k in keys]
                ends = c.end_offsets(tps)
                total = sum(
                    max(ends[tp] - run.next_source[(tp.topic, tp.partition)], 0) for tp in tps
                )
            finally:
                c.close(autocommit=False)
        from ottla.cli.progress import Progress

        bar = Progress("mirror", total=total, enabled=progress if progress is not None else None)
        group_list = list(groups) if groups is not None else None

        def on_checkpoint() -> None:
            if group_list and not once:
                run.translate(group_list, keys, stats)

        try:
            if keys:
                run.copy(
                    keys,
                    once,
                    stop,
                    checkpoint_interval_ms / 1000.0,
                    stats,
                    bar.advance,
                    on_checkpoint,
                )
            if group_list:
                run.translate(group_list, keys, stats)
        finally:
            bar.close()
        return stats
    finally:
        run.close()
