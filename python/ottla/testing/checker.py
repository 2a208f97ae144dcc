"""A checker of a replicated log's guarantees, from what clients saw and
what every replica holds (issue 14's fault harness uses it; so can any
test of an application against ``ottla.Cluster``).

Three inputs:

* the producers' acknowledgments (:class:`History.ack`): each record the
  cluster said it wrote, with its topic, partition, offset and an id the
  test gave it (a producer name and sequence number, say), and whether the
  producer was idempotent;
* the consumers' reads (:class:`History.read`): each record a consumer was
  handed, by topic, partition, offset and id;
* each replica's partition log, read after the cluster settled (every
  replica back in sync): the ``(offset, id)`` of every record, in order
  (:func:`read_partition_log` reads a stopped node's data directory), and
  the partition's high watermark.

:func:`check` proves, for every partition, below its high watermark:

* every acknowledged record is in every replica at its acknowledged offset
  (``lost``: missing from some replica; ``misplaced``: present, elsewhere;
  an acknowledged offset at or past the high watermark is lost too);
* a record of an idempotent producer is there once (``duplicated``); plain
  producers may write a record twice after a retry (at least once):
  counted as ``plain_duplicates``, not a violation;
* the replicas hold the same record at every offset (``divergent``);
* no replica misses an offset (``gaps``; offsets start at the log start);
* no consumer read a record that is not the committed one at its offset
  (``phantom_reads``: it was read, then disappeared or was replaced);
* given the replicas' raw record batches (:func:`read_partition_batches`),
  every replica holds the same bytes, batch for batch, below the high
  watermark (``byte_mismatches``);
* with ``settled=True`` (producers stopped, every replica in sync), no
  replica holds a record at or past the high watermark (``stale_tail``: an
  old leader's unreplicated tail that was never truncated).

>>> from ottla.testing.checker import History, check
>>> h = History()
>>> h.ack("t", 0, 0, "p-1", idempotent=True)
>>> h.read("t", 0, 0, "p-1")
>>> result = check(h, {("t", 0): {1: [(0, "p-1")], 2: [(0, "p-1")]}}, {("t", 0): 1})
>>> result.ok, result.acked, result.lost
(True, 1, 0)
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Ack",
    "CheckResult",
    "History",
    "Read",
    "check",
    "read_partition_batches",
    "read_partition_log",
]

#: A partition: ``(topic, partition)``.
TP = tuple[str, int]
#: A replica's log: ``(offset, record id)`` in offset order.
ReplicaLog = Sequence[tuple[int, "str | None"]]
#: A replica's record batches: ``(base offset, last offset, bytes)`` in order.
ReplicaBatches = Sequence[tuple[int, int, bytes]]


@dataclass(frozen=True)
class Ack:
    """A record the cluster acknowledged."""

    topic: str
    partition: int
    offset: int
    id: str
    #: True for an idempotent producer: the record must be there exactly once.
    idempotent: bool = True
    producer: str = ""
    #: ``time.monotonic()`` when the acknowledgment arrived (0: unknown).
    at: float = 0.0


@dataclass(frozen=True)
class Read:
    """A record a consumer was handed."""

    topic: str
    partition: int
    offset: int
    id: str | None
    consumer: str = ""


class History:
    """What the clients saw, recorded from any number of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.acks: list[Ack] = []
        self.reads: list[Read] = []
        #: Sends that failed (no acknowledgment): ``(producer, id, error)``.
        self.failures: list[tuple[str, str, str]] = []

    def ack(
        self,
        topic: str,
        partition: int,
        offset: int,
        record_id: str,
        *,
        idempotent: bool,
        producer: str = "",
    ) -> None:
        """The cluster acknowledged ``record_id`` at ``offset``."""
        a = Ack(topic, partition, offset, record_id, idempotent, producer, time.monotonic())
        with self._lock:
            self.acks.append(a)

    def read(
        self, topic: str, partition: int, offset: int, record_id: str | None, consumer: str = ""
    ) -> None:
        """A consumer was handed ``record_id`` at ``offset``."""
        r = Read(topic, partition, offset, record_id, consumer)
        with self._lock:
            self.reads.append(r)

    def failed(self, producer: str, record_id: str, error: str) -> None:
        """A send of ``record_id`` failed (it may or may not be in the log)."""
        with self._lock:
            self.failures.append((producer, record_id, error))

    def partitions(self) -> set[TP]:
        """Every partition an ack or a read names."""
        with self._lock:
            return {(a.topic, a.partition) for a in self.acks} | {
                (r.topic, r.partition) for r in self.reads
            }


@dataclass
class CheckResult:
    """The counts of :func:`check` and a readable report (``str()``)."""

    acked: int = 0
    reads: int = 0
    partitions: int = 0
    replicas: int = 0
    records: int = 0
    lost: int = 0
    misplaced: int = 0
    duplicated: int = 0
    plain_duplicates: int = 0
    divergent: int = 0
    gaps: int = 0
    phantom_reads: int = 0
    byte_mismatches: int = 0
    stale_tail: int = 0
    #: Acknowledgments that came without an offset (checked for presence only).
    no_offset: int = 0
    #: Every acknowledgment counted lost or misplaced.
    lost_acks: list[Ack] = field(default_factory=list)
    #: One line per violation found (the first ``max_details`` of each kind).
    violations: list[str] = field(default_factory=list)
    #: Notes that are not violations (plain producers' duplicates, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if no guarantee was broken."""
        return not (
            self.lost
            or self.misplaced
            or self.duplicated
            or self.divergent
            or self.gaps
            or self.phantom_reads
            or self.byte_mismatches
            or self.stale_tail
        )

    def counts(self) -> dict[str, int]:
        """Every count by name."""
        return {
            "acked": self.acked,
            "reads": self.reads,
            "partitions": self.partitions,
            "replicas": self.replicas,
            "records": self.records,
            "lost": self.lost,
            "misplaced": self.misplaced,
            "duplicated": self.duplicated,
            "plain_duplicates": self.plain_duplicates,
            "divergent": self.divergent,
            "gaps": self.gaps,
            "phantom_reads": self.phantom_reads,
            "byte_mismatches": self.byte_mismatches,
            "stale_tail": self.stale_tail,
        }

    def report(self) -> str:
        """A few lines: the verdict, the counts, then each violation."""
        verdict = "OK" if self.ok else "VIOLATIONS"
        c = self.counts()
        lines = [
            f"checker: {verdict}: {c['acked']} acknowledged, {c['reads']} read, "
            f"{c['records']} records in {c['partitions']} partitions x replicas ({c['replicas']} logs)",
            "  "
            + ", ".join(
                f"{k} {v}"
                for k, v in c.items()
                if k not in ("acked", "reads", "partitions", "replicas", "records")
            ),
        ]
        lines += [f"  ! {v}" for v in self.violations]
        lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def check(
    history: History | tuple[Iterable[Ack], Iterable[Read]],
    replicas: Mapping[TP, Mapping[int, ReplicaLog]],
    high_watermarks: Mapping[TP, int],
    *,
    log_starts: Mapping[TP, int] | None = None,
    batches: Mapping[TP, Mapping[int, ReplicaBatches]] | None = None,
    settled: bool = False,
    max_details: int = 10,
) -> CheckResult:
    """Check ``history`` against ``replicas`` (per partition, per node id:
    its log as ``(offset, id)``) below each partition's high watermark.
    Every partition the history names must be in ``replicas`` and
    ``high_watermarks``. ``log_starts`` gives partitions whose logs do not
    start at offset 0. ``batches`` (per partition, per node id: its
    :func:`read_partition_batches`) adds the byte-for-byte comparison;
    ``settled`` says nothing was being written when the logs were read and
    every replica was in sync, so nothing may lie past the high watermark."""
    if isinstance(history, History):
        acks, reads = list(history.acks), list(history.reads)
    else:
        acks, reads = list(history[0]), list(history[1])
    res = CheckResult(acked=len(acks), reads=len(reads))
    shown: Counter[str] = Counter()

    def violation(kind: str, text: str) -> None:
        shown[kind] += 1
        if shown[kind] <= max_details:
            res.violations.append(f"{kind}: {text}")
        elif shown[kind] == max_details + 1:
            res.violations.append(f"{kind}: ... (more not shown)")

    acks_by_tp: dict[TP, list[Ack]] = defaultdict(list)
    for a in acks:
        acks_by_tp[(a.topic, a.partition)].append(a)
    reads_by_tp: dict[TP, list[Read]] = defaultdict(list)
    for r in reads:
        reads_by_tp[(r.topic, r.partition)].append(r)

    tps = set(acks_by_tp) | set(reads_by_tp) | set(replicas)
    res.partitions = len(tps)
    idempotent_ids = {a.id for a in acks if a.idempotent}
    plain_ids = {a.id for a in acks if not a.idempotent}
    for tp in sorted(tps):
        name = f"{tp[0]}[{tp[1]}]"
        logs = replicas.get(tp)
        hw = high_watermarks.get(tp)
        if not logs or hw is None:
            violation("lost", f"{name}: no replica logs or high watermark given to the checker")
            res.lost += len(acks_by_tp.get(tp, []))
            continue
        start = (log_starts or {}).get(tp, 0)
        res.replicas += len(logs)
        # Each replica's records below the high watermark, by offset.
        at: dict[int, dict[int, str | None]] = {}
        where: dict[int, dict[str, list[int]]] = {}
        for node, log in sorted(logs.items()):
            by_offset: dict[int, str | None] = {}
            ids: dict[str, list[int]] = defaultdict(list)
            for offset, rid in log:
                if offset >= hw and settled:
                    res.stale_tail += 1
                    violation(
                        "stale tail",
                        f"{name} node {node}: offset {offset} ({rid!r}) past the high "
                        f"watermark {hw} of a settled partition",
                    )
                if start <= offset < hw:
                    if offset in by_offset:
                        violation("divergent", f"{name} node {node}: offset {offset} twice")
                        res.divergent += 1
                    by_offset[offset] = rid
                    if rid is not None:
                        ids[rid].append(offset)
            at[node] = by_offset
            where[node] = ids
            res.records += len(by_offset)
            missing = [o for o in range(start, hw) if o not in by_offset]
            if missing:
                res.gaps += len(missing)
                if missing == list(range(missing[0], hw)):
                    # Nothing after the first missing offset: the log ends
                    # early (lost its tail, or a follower that had not
                    # learned the high watermark when it stopped).
                    what = f"ends at offset {missing[0]}, before the high watermark {hw}"
                else:
                    what = f"{len(missing)} offsets below the high watermark {hw} missing"
                violation("gaps", f"{name} node {node}: {what} ({_ranges(missing)})")
            for rid, offsets in ids.items():
                if len(offsets) > 1:
                    if rid in idempotent_ids:
                        res.duplicated += len(offsets) - 1
                        violation(
                            "duplicated",
                            f"{name} node {node}: idempotent record {rid!r} at offsets {offsets}",
                        )
                    elif rid in plain_ids:
                        res.plain_duplicates += len(offsets) - 1
        # The replicas agree at every offset both hold.
        nodes = sorted(at)
        for offset in range(start, hw):
            held = {n: at[n][offset] for n in nodes if offset in at[n]}
            if len(set(held.values())) > 1:
                res.divergent += 1
                violation("divergent", f"{name} offset {offset}: {held}")
        # Every acknowledged record, in every replica, at its offset.
        for a in acks_by_tp.get(tp, []):
            if a.offset is None or a.offset < 0:
                # Acknowledged without an offset (a client that did not
                # say): it must be there, at some offset.
                res.no_offset += 1
                lacking = [n for n in nodes if a.id not in where[n]]
                if lacking:
                    res.lost += 1
                    res.lost_acks.append(a)
                    violation(
                        "lost", f"{name}: {a.id!r} acknowledged (no offset), not in nodes {lacking}"
                    )
                continue
            if a.offset >= hw:
                res.lost += 1
                res.lost_acks.append(a)
                violation(
                    "lost",
                    f"{name}: {a.id!r} acknowledged at {a.offset}, at or past the high watermark {hw}",
                )
                continue
            lacking = [n for n in nodes if a.id not in where[n]]
            if lacking:
                res.lost += 1
                res.lost_acks.append(a)
                violation(
                    "lost", f"{name}: {a.id!r} acknowledged at {a.offset}, not in nodes {lacking}"
                )
                continue
            off = [n for n in nodes if at[n].get(a.offset) != a.id]
            if off:
                res.misplaced += 1
                res.lost_acks.append(a)
                elsewhere = {n: where[n][a.id] for n in off}
                violation(
                    "misplaced",
                    f"{name}: {a.id!r} acknowledged at {a.offset}, found at {elsewhere}",
                )
        # Every read is the committed record at its offset.
        for r in reads_by_tp.get(tp, []):
            if r.offset >= hw or r.offset < start:
                bad = f"at {r.offset}, outside the log [{start}, {hw})"
            else:
                held = {n: at[n].get(r.offset, "<missing>") for n in nodes}
                if all(v == r.id for v in held.values()):
                    continue
                bad = f"at {r.offset}, the replicas hold {held}"
            res.phantom_reads += 1
            who = f" by {r.consumer}" if r.consumer else ""
            violation("phantom read", f"{name}: {r.id!r} read{who} {bad}")
        # The replicas' bytes, batch for batch, below the high watermark.
        raw = (batches or {}).get(tp)
        if raw:
            below = {
                n: [(b, last, data) for b, last, data in bs if start <= b and last < hw]
                for n, bs in sorted(raw.items())
            }
            ref_node, ref = next(iter(below.items()))
            for n, bs in below.items():
                if n == ref_node:
                    continue
                for i in range(max(len(ref), len(bs))):
                    mine = bs[i] if i < len(bs) else None
                    theirs = ref[i] if i < len(ref) else None
                    if mine == theirs:
                        continue
                    res.byte_mismatches += 1
                    where_ = (mine or theirs or (0, 0, b""))[:2]
                    violation(
                        "bytes differ",
                        f"{name} node {n} vs node {ref_node}: batch {i} (offsets "
                        f"{where_[0]}-{where_[1]}): "
                        + (
                            "missing on one"
                            if mine is None or theirs is None
                            else f"{_first_diff(mine, theirs)}"
                        ),
                    )
    if res.no_offset:
        by = Counter(a.producer or "?" for a in acks if a.offset is None or a.offset < 0)
        who = ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
        res.notes.append(
            f"{res.no_offset} acknowledgments came without an offset ({who}): "
            "checked for presence only"
        )
    if res.plain_duplicates:
        res.notes.append(
            f"{res.plain_duplicates} extra copies of plain (non-idempotent) producers' "
            "records: allowed (at least once)"
        )
    return res


def _ranges(offsets: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` as ``"1-3, 7"`` (at most 5 ranges)."""
    out: list[str] = []
    i = 0
    while i < len(offsets) and len(out) < 5:
        j = i
        while j + 1 < len(offsets) and offsets[j + 1] == offsets[j] + 1:
            j += 1
        out.append(str(offsets[i]) if i == j else f"{offsets[i]}-{offsets[j]}")
        i = j + 1
    if i < len(offsets):
        out.append("...")
    return ", ".join(out)


def _first_diff(a: tuple[int, int, bytes], b: tuple[int, int, bytes]) -> str:
    if a[:2] != b[:2]:
        return f"offsets {a[0]}-{a[1]} vs {b[0]}-{b[1]}"
    i = next((i for i, (x, y) in enumerate(zip(a[2], b[2], strict=False)) if x != y), None)
    if i is None:
        return f"lengths {len(a[2])} vs {len(b[2])}"
    return f"first differing byte at {i} of {len(a[2])}"


def _key_id(record: Any) -> str | None:
    key = record.key
    return key.decode(errors="replace") if isinstance(key, bytes) else None


def read_partition_log(
    path: str | Path,
    topic: str,
    partition: int,
    *,
    record_id: Callable[[Any], str | None] = _key_id,
    timeout: float = 30.0,
) -> list[tuple[int, str | None]]:
    """Every record of ``topic``'s ``partition`` in the data directory
    ``path`` (a stopped node's, say), as ``(offset, record_id(record))``;
    the id is the record's key by default."""
    import ottla

    tp = ottla.TopicPartition(topic, partition)
    out: list[tuple[int, str | None]] = []
    consumer = ottla.Consumer(path, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning()
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] in {path} took over {timeout} s")
            for recs in consumer.poll(timeout_ms=200).values():
                out.extend((r.offset, record_id(r)) for r in recs)
    finally:
        consumer.close()
    return out


# Record batch v2: base offset (8 bytes), batch length (4, the bytes after
# it), partition leader epoch (4), magic (1), CRC (4), attributes (2),
# last offset delta (4), ...
_BATCH_PREFIX = 12
_LAST_DELTA_AT = 23


def read_partition_batches(
    path: str | Path, topic: str, partition: int
) -> list[tuple[int, int, bytes]]:
    """Every record batch of ``topic``'s ``partition`` in the data directory
    ``path`` (a stopped node's), as ``(base offset, last offset, bytes)``,
    read from its segment files (``<topic>-<partition>/*.log``, Kafka's
    record batch v2). A torn batch at a segment's end (a node killed while
    it appended) ends that segment's list; the checker only compares
    batches below the high watermark."""
    import struct

    out: list[tuple[int, int, bytes]] = []
    directory = Path(path) / f"{topic}-{partition}"
    segments = sorted(
        (p for p in directory.glob("*.log") if p.stem.isdigit()), key=lambda p: int(p.stem)
    )
    for seg in segments:
        data = seg.read_bytes()
        pos = 0
        while pos + _LAST_DELTA_AT + 4 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            end = pos + _BATCH_PREFIX + length
            if length <= 0 or end > len(data):
                break  # zeros past the end, or a torn batch
            (delta,) = struct.unpack_from(">i", data, pos + _LAST_DELTA_AT)
            out.append((base, base + delta, data[pos:end]))
            pos = end
    return out
