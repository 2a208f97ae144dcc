#!/usr/bin/env python3
"""ottla benchmark suite: every workload, one run, one table.

    python bench/run.py [--quick] [--out DIR]

Prints one table, writes DIR/latest.json, DIR/results-<timestamp>.json and
DIR/latest.png (DIR defaults to bench/results). See bench/README.md for what
each workload measures and how coordinated omission is handled.

Exit status is 0 unless an ottla workload fails; a peer that cannot be
imported or fails is reported in the table ("unavailable" / "failed").
"""

from __future__ import annotations

import argparse
import array
import datetime as _dt
import gc
import itertools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
THIS = str(Path(__file__).resolve())

KiB = 1024
MiB = 1024 * 1024

# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------

QUICK = dict(
    repeats=1,
    n_100=200_000,  # ottla / file / confluent, 100 B records
    n_1k=50_000,  # 1 KiB records
    n_1m=32,  # 1 MiB records with fsync="always"
    n_codec=50_000,  # 1 KiB compressible records per compression.type
    disk_mib=64,  # disk bandwidth probe size
    n_consume=200_000,  # records pre-written for the consume workloads
    n_slow=2_000,  # persist-queue, litequeue
    n_mid=5_000,  # diskcache
    n_kafka=100_000,  # confluent-kafka mock cluster
    lat_rate=10_000,  # records/s offered in the latency test
    lat_secs=2.0,
    lat_warmup_s=0.2,
    lat_busy_poll_rows=False,  # the busy_poll_us=50 latency rows (full mode only)
    open_topics=100,
    open_parts=8,
    open_reps=1,
    crash_mib=64,
)

FULL = dict(
    repeats=3,
    n_100=2_000_000,
    n_1k=500_000,
    n_1m=256,
    n_codec=500_000,
    disk_mib=256,
    n_consume=2_000_000,
    n_slow=5_000,
    n_mid=20_000,
    n_kafka=1_000_000,
    lat_rate=50_000,
    lat_secs=10.0,
    lat_warmup_s=0.5,
    lat_busy_poll_rows=True,
    open_topics=100,
    open_parts=8,
    open_reps=3,
    crash_mib=1024,
)

CHILD_TIMEOUT = 300.0

# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def import_ottla(attempts: int = 20, delay: float = 3.0) -> Any:
    """Import ottla, retrying: the package may be mid-reinstall."""
    last: BaseException | None = None
    for _ in range(attempts):
        try:
            import ottla

            return ottla
        except ImportError as e:  # includes a half-written extension module
            last = e
            for name in [m for m in sys.modules if m == "ottla" or m.startswith("ottla.")]:
                del sys.modules[name]
            time.sleep(delay)
    raise RuntimeError(f"cannot import ottla: {last}")


class Unavailable(Exception):
    """A peer that cannot be imported here."""


def need(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except Exception as e:  # ImportError, or a broken install
        raise Unavailable(f"{module}: {type(e).__name__}: {e}") from None


class TempDir:
    """A fresh directory under the chosen temp root, removed afterwards."""

    root: str | None = None

    def __init__(self, tag: str) -> None:
        self.path = tempfile.mkdtemp(prefix=f"ottla-bench-{tag}-", dir=TempDir.root)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def percentile(sorted_vals: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return float(sorted_vals[k])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

HIGHER_IS_BETTER = {"rec/s", "MB/s"}


class Results:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.ottla_failed = False

    def add(
        self,
        workload: str,
        system: str,
        value: float | None,
        unit: str,
        *,
        ottla: bool,
        baseline: bool = False,
        kind: str = "peer",
        n: int | None = None,
        samples: list[float] | None = None,
        p50: float | None = None,
        p99: float | None = None,
        p999: float | None = None,
        status: str = "ok",
        note: str = "",
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.rows.append(
            dict(
                workload=workload,
                system=system,
                value=value,
                unit=unit,
                ottla=ottla,
                baseline=baseline,
                kind=kind,  # "ottla", "peer", "ceiling"
                n=n,
                samples=samples,
                p50_us=p50,
                p99_us=p99,
                p999_us=p999,
                ratio=None,
                status=status,
                note=note,
                extra=extra or {},
            )
        )

    def fail(
        self,
        workload: str,
        system: str,
        unit: str,
        err: BaseException,
        *,
        ottla: bool,
        kind: str = "peer",
        baseline: bool = False,
    ) -> None:
        status = "unavailable" if isinstance(err, Unavailable) else "failed"
        msg = f"{type(err).__name__}: {err}" if status == "failed" else str(err)
        if ottla:
            self.ottla_failed = True
            log(f"!! ottla workload failed: {workload} / {system}")
            traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
        else:
            log(f"-- {system} {status}: {msg}")
        self.add(
            workload,
            system,
            None,
            unit,
            ottla=ottla,
            kind=kind,
            baseline=baseline,
            status=status,
            note=msg[:200],
        )

    def compute_ratios(self) -> None:
        """ratio = ottla baseline / peer for rates; peer / ottla for times."""
        base: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            if r["baseline"] and r["status"] == "ok":
                base[r["workload"]] = r
        for r in self.rows:
            b = base.get(r["workload"])
            if r["ottla"] or b is None or r["status"] != "ok" or not r["value"]:
                continue
            if r["unit"] != b["unit"]:
                continue
            if r["unit"] in HIGHER_IS_BETTER:
                r["ratio"] = b["value"] / r["value"]
            else:
                r["ratio"] = r["value"] / b["value"]


def timed_rate(
    results: Results,
    workload: str,
    system: str,
    n: int,
    repeats: int,
    fn: Callable[[int], float],
    *,
    ottla: bool,
    kind: str,
    baseline: bool = False,
    note: str = "",
    unit: str = "rec/s",
    scale: float = 1.0,
) -> None:
    """Run fn(n) -> seconds `repeats` times; report the median rate."""
    try:
        samples = []
        for _ in range(repeats):
            dt = fn(n)
            samples.append(n * scale / dt)
        results.add(
            workload,
            system,
            median(samples),
            unit,
            ottla=ottla,
            kind=kind,
            baseline=baseline,
            n=n,
            samples=samples,
            note=note,
        )
        log(f"   {workload:<22} {system:<40} {median(samples):>14,.1f} {unit}")
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        results.fail(workload, system, unit, e, ottla=ottla, kind=kind, baseline=baseline)


def interleaved(
    runs: list[tuple[Callable[[int], float], int]], repeats: int
) -> list[Callable[[int], float]]:
    """Run each (fn, n) `repeats` times, alternating between them (a, b, c,
    a, b, c, ...), and return stand-ins for timed_rate that replay each one's
    timings in order. Rows compared with each other on a shared disk then
    see the same conditions rather than whatever the disk did in their own
    minute. A failure is replayed as that row's failure."""
    timings: list[list[Any]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, (fn, n) in enumerate(runs):
            if timings[i] and isinstance(timings[i][-1], BaseException):
                continue
            try:
                timings[i].append(fn(n))
            except Exception as e:
                timings[i].append(e)

    def replay(i: int) -> Callable[[int], float]:
        left = list(timings[i])

        def run(_n: int) -> float:
            t = left.pop(0)
            if isinstance(t, BaseException):
                raise t
            return float(t)

        return run

    return [replay(i) for i in range(len(runs))]


# --------------------------------------------------------------------------
# ottla produce / consume
# --------------------------------------------------------------------------


def ottla_send_loop(value: bytes, **cfg: Any) -> Callable[[int], float]:
    def run(n: int) -> float:
        ottla = import_ottla()
        with TempDir("send") as d:
            p = ottla.Producer(d, **cfg)
            p.partitions_for("t")  # create the topic outside the timed loop
            s = p.send
            t0 = time.perf_counter()
            for _ in range(n):
                s("t", value)
            p.flush()
            dt = time.perf_counter() - t0
            p.close()
            return dt

    return run


def compressible_values(count: int = 4096, size: int = KiB) -> list[bytes]:
    """``count`` different values of ``size`` bytes of JSON events, the kind
    of payload logs and metrics carry: repetitive field names, varying
    numbers (no two values share an event)."""
    out = []
    for k in range(count):
        events: list[dict[str, object]] = []
        i = k * 16  # no two values share an event
        while len(json.dumps(events)) < size:
            events.append(
                {
                    "user": 1000 + i * 7919 % 100_003,
                    "event": ("page_view", "click", "purchase")[i % 3],
                    "url": f"/products/{i * 31 % 5000}",
                    "ms": 120 + i * 13 % 977,
                }
            )
            i += 1
        out.append(json.dumps(events).encode()[:size])
    return out


def ottla_send_codec(values: list[bytes], codec: str, disk: list[int]) -> Callable[[int], float]:
    """The send() loop (cycling through ``values``) into a topic created with
    ``compression.type=codec``; appends the bytes its log files take on disk
    to ``disk``."""

    def run(n: int) -> float:
        ottla = import_ottla()
        m = len(values)
        with TempDir("codec") as d:
            ottla.Admin(d, create=True).create_topic("t", config={"compression.type": codec})
            p = ottla.Producer(d)
            s = p.send
            t0 = time.perf_counter()
            for i in range(n):
                s("t", values[i % m])
            p.flush()
            dt = time.perf_counter() - t0
            p.close()
            disk.append(sum(f.stat().st_size for f in Path(d, "t-0").glob("*.log")))
            return dt

    return run


def ottla_send_many(value: bytes) -> Callable[[int], float]:
    def run(n: int) -> float:
        ottla = import_ottla()
        values = [value] * n
        with TempDir("sendmany") as d:
            p = ottla.Producer(d)
            p.partitions_for("t")
            t0 = time.perf_counter()
            p.send_many("t", values).wait()
            dt = time.perf_counter() - t0
            p.close()
            return dt

    return run


def ottla_send_1m_fsync(value: bytes) -> Callable[[int], float]:
    def run(n: int) -> float:
        ottla = import_ottla()
        with TempDir("fsync") as d:
            # A 1 MiB value plus record/batch overhead is over the default
            # max.message.bytes (1048588, Kafka's default), so the topic needs
            # a larger limit; auto-created topics cannot be given one.
            ottla.Admin(d, create=True).create_topic("t", 1, {"max.message.bytes": 2 * MiB})
            p = ottla.Producer(d, fsync="always")
            s = p.send
            t0 = time.perf_counter()
            for _ in range(n):
                s("t", value)
            p.flush()
            dt = time.perf_counter() - t0
            p.close()
            return dt

    return run


def prewrite(ottla: Any, d: str, n: int, value: bytes) -> None:
    p = ottla.Producer(d)
    chunk = 100_000
    for i in range(0, n, chunk):
        p.send_many("t", [value] * min(chunk, n - i))
    p.flush()
    p.close()


def ottla_consume(n: int, value: bytes, how: str) -> Callable[[int], float]:
    def run(n_: int) -> float:
        ottla = import_ottla()
        with TempDir("consume") as d:
            prewrite(ottla, d, n_, value)
            c = ottla.Consumer(d, "t", auto_offset_reset="earliest", consumer_timeout_ms=100)
            got = 0
            if how == "iter":
                t0 = time.perf_counter()
                for _r in itertools.islice(c, n_):
                    pass
                dt = time.perf_counter() - t0
                got = c.position(ottla.TopicPartition("t", 0))
            elif how in ("poll", "poll500"):
                poll = c.poll
                mr = 100_000 if how == "poll" else 500
                t0 = time.perf_counter()
                while True:
                    batch = poll(timeout_ms=0, max_records=mr)
                    if not batch:
                        break
                    for recs in batch.values():
                        got += len(recs)
                dt = time.perf_counter() - t0
            elif how == "poll_values":
                pv = c.poll_values

                # Its exact signature is not known to this script; the first
                # call tries the poll()-like forms, later calls reuse the one
                # that worked.
                forms = [
                    ((), {"timeout_ms": 0, "max_records": 100_000}),
                    ((0, 100_000), {}),
                    ((), {"max_records": 100_000}),
                ]
                t0 = time.perf_counter()
                while True:
                    while True:
                        args, kw = forms[0]
                        try:
                            batch = pv(*args, **kw)
                            break
                        except TypeError:
                            if len(forms) == 1:
                                raise
                            forms.pop(0)
                    if not batch:
                        break
                    if isinstance(batch, dict):
                        got += sum(len(v) for v in batch.values())
                    else:
                        got += len(batch)
                dt = time.perf_counter() - t0
            elif how == "poll_arrow":
                # pyarrow.RecordBatches built in Rust: no Python object per record.
                pa_poll = c.poll_arrow
                t0 = time.perf_counter()
                while True:
                    rows = pa_poll(timeout_ms=0, max_records=100_000).num_rows
                    if not rows:
                        break
                    got += rows
                dt = time.perf_counter() - t0
            else:
                raise ValueError(how)
            c.close()
            if got != n_:
                raise RuntimeError(f"{how}: read {got} records, expected {n_}")
            return dt

    return run


def ottla_aio(value: bytes, how: str) -> Callable[[int], float]:
    """ottla.aio workloads, each timed inside one asyncio.run(): produce
    ("send", "send_many") or consume a pre-written topic ("iter", "getmany")."""
    import asyncio

    def run(n: int) -> float:
        ottla = import_ottla()
        import ottla.aio as oa

        async def main(d: str) -> float:
            if how in ("send", "send_many"):
                p = oa.Producer(d)
                p.partitions_for("t")
                values = [value] * n if how == "send_many" else []
                s = p.send
                t0 = time.perf_counter()
                if how == "send":
                    for _ in range(n):
                        s("t", value)
                    await p.flush()
                else:
                    await p.send_many("t", values)
                dt = time.perf_counter() - t0
                await p.close()
                return dt
            prewrite(ottla, d, n, value)
            c = oa.Consumer(d, "t", auto_offset_reset="earliest", consumer_timeout_ms=100)
            got = 0
            t0 = time.perf_counter()
            if how == "iter":
                async for _r in c:
                    got += 1
                    if got == n:
                        break
            else:
                while got < n:
                    batch = await c.getmany(timeout_ms=100, max_records=100_000)
                    if not batch:
                        break
                    got += sum(len(v) for v in batch.values())
            dt = time.perf_counter() - t0
            await c.close()
            if got != n:
                raise RuntimeError(f"aio {how}: read {got} records, expected {n}")
            return dt

        with TempDir("aio") as d:
            return asyncio.run(main(d))

    return run


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------


def file_write(value: bytes) -> Callable[[int], float]:
    def run(n: int) -> float:
        with TempDir("file") as d:
            t0 = time.perf_counter()
            with open(os.path.join(d, "f"), "wb") as f:
                w = f.write
                for _ in range(n):
                    w(value)
            return time.perf_counter() - t0

    return run


def file_read(value: bytes) -> Callable[[int], float]:
    def run(n: int) -> float:
        with TempDir("file") as d:
            path = os.path.join(d, "f")
            with open(path, "wb") as f:
                f.write(value * n)
            size = len(value)
            t0 = time.perf_counter()
            with open(path, "rb") as f:
                r = f.read
                for _ in range(n):
                    r(size)
            return time.perf_counter() - t0

    return run


class QueuePeer:
    """put(v) loop, then (reopened) get loop, for the queue-like peers."""

    def __init__(
        self,
        put_name: str,
        get_name: str,
        module: str,
        open_put: Callable[[Any, str], tuple[Any, Callable[..., Any]]],
        open_get: Callable[[Any, str], tuple[Any, Callable[..., Any]]],
    ) -> None:
        self.name = put_name
        self.put_name = put_name
        self.get_name = get_name
        self.module = module
        self.open_put = open_put
        self.open_get = open_get

    def run(self, n: int, value: bytes, do_get: bool) -> tuple[float, float | None]:
        mod = need(self.module)
        with TempDir("peer") as d:
            q, put = self.open_put(mod, d)
            t0 = time.perf_counter()
            for _ in range(n):
                put(value)
            put_s = time.perf_counter() - t0
            close_quietly(q)
            del q, put
            if not do_get:
                return put_s, None
            q, get = self.open_get(mod, d)
            t0 = time.perf_counter()
            last = None
            for _ in range(n):
                last = get()
            get_s = time.perf_counter() - t0
            if last is None:
                raise RuntimeError(f"{self.name}: get returned None")
            close_quietly(q)
            return put_s, get_s


def close_quietly(q: Any) -> None:
    for meth in ("close",):
        f = getattr(q, meth, None)
        if callable(f):
            try:
                f()
            except Exception:
                pass


def _pq_file(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.Queue(os.path.join(d, "q"))
    return q, q.put


def _pq_file_get(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.Queue(os.path.join(d, "q"))
    return q, q.get


def _pq_sql(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.SQLiteQueue(os.path.join(d, "s"), auto_commit=True)
    return q, q.put


def _pq_sql_get(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.SQLiteQueue(os.path.join(d, "s"), auto_commit=True)
    return q, q.get


def _lq(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.LiteQueue(os.path.join(d, "q.sqlite3"))
    return q, q.put


def _lq_get(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.LiteQueue(os.path.join(d, "q.sqlite3"))
    return q, q.pop


def _dc(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.Deque(directory=os.path.join(d, "dq"))
    return q, q.append


def _dc_get(mod: Any, d: str) -> tuple[Any, Callable[..., Any]]:
    q = mod.Deque(directory=os.path.join(d, "dq"))
    return q, q.popleft


QUEUE_PEERS = [
    (
        QueuePeer(
            "persist-queue Queue (file) put",
            "persist-queue Queue (file) get",
            "persistqueue",
            _pq_file,
            _pq_file_get,
        ),
        "n_slow",
    ),
    (
        QueuePeer(
            "persist-queue SQLiteQueue put",
            "persist-queue SQLiteQueue get",
            "persistqueue",
            _pq_sql,
            _pq_sql_get,
        ),
        "n_slow",
    ),
    (QueuePeer("litequeue put", "litequeue pop", "litequeue", _lq, _lq_get), "n_slow"),
    (
        QueuePeer("diskcache Deque append", "diskcache Deque popleft", "diskcache", _dc, _dc_get),
        "n_mid",
    ),
]


def kafka_mock(n: int, value: bytes, do_consume: bool) -> dict[str, Any]:
    """confluent-kafka against librdkafka's in-process mock cluster.

    The mock cluster belongs to the client created with
    ``test.mock.num.brokers``; its brokers listen on 127.0.0.1, and their
    addresses come from the metadata (``list_topics().brokers``), so a second
    client (the consumer) can use them as ``bootstrap.servers``.
    """
    ck = need("confluent_kafka")
    quiet = {"log_level": 3}  # hide the "Mock cluster enabled" notice
    p = ck.Producer({"test.mock.num.brokers": 1, **quiet})
    out: dict[str, Any] = {}
    try:
        md = p.list_topics(timeout=10)
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
        topic = "t"
        p.produce(topic, b"warm-up")  # creates the topic outside the timing
        if p.flush(10) != 0:
            raise RuntimeError("mock cluster did not acknowledge the warm-up record")
        errors = [0]

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors[0] += 1

        produce, poll = p.produce, p.poll
        t0 = time.perf_counter()
        for _ in range(n):
            try:
                produce(topic, value)
            except BufferError:  # local queue full: serve delivery reports, retry
                poll(0.05)
                produce(topic, value)
        left = p.flush(120)
        out["produce_s"] = time.perf_counter() - t0
        if left:
            raise RuntimeError(f"{left} records not acknowledged after flush")
        if not do_consume:
            return out

        # queued.min.messages: with the default (100k) librdkafka stops
        # prefetching once 100k records are queued and, by default, waits
        # fetch.queue.backoff.ms (1 s) before fetching again: a 1 s stall in
        # the middle of a 180k-record read. Let it prefetch everything instead.
        c = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench",
                "enable.auto.commit": False,
                "queued.min.messages": 1_000_000,
                **quiet,
            }
        )
        try:
            parts = sorted(p.list_topics(topic, timeout=10).topics[topic].partitions)
            assign, target = [], 0
            for part in parts:
                lo, hi = c.get_watermark_offsets(ck.TopicPartition(topic, part), timeout=10)
                target += hi - lo
                assign.append(ck.TopicPartition(topic, part, lo))
            out["retained"] = target
            consume = c.consume
            c.assign(assign)
            # Connection set-up and the first fetch round trip are not timed
            # (they can take ~1 s); the clock starts at the first record.
            got = 0
            deadline = time.perf_counter() + 120
            while got == 0 and time.perf_counter() < deadline:
                got = sum(1 for m in consume(1, 1.0) if m.error() is None)
            t0 = time.perf_counter()
            first = got
            while got < target and time.perf_counter() < deadline:
                msgs = consume(min(10_000, target - got), 1.0)
                for m in msgs:
                    if m.error() is None:
                        got += 1
            out["consume_s"] = time.perf_counter() - t0
            out["consumed"] = got - first
            if got < target:
                raise RuntimeError(f"consumed {got} of {target} records")
            if got <= first:
                raise RuntimeError("the mock broker retained too few records to time")
        finally:
            c.close()
        return out
    finally:
        del p


def disk_write(total_mib: int, fsync_each: bool) -> Callable[[int], float]:
    def run(_n: int) -> float:
        block = os.urandom(MiB)
        with TempDir("disk") as d:
            fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                t0 = time.perf_counter()
                for _ in range(total_mib):
                    os.write(fd, block)
                    if fsync_each:
                        os.fsync(fd)
                os.fsync(fd)
                return time.perf_counter() - t0
            finally:
                os.close(fd)

    return run


# --------------------------------------------------------------------------
# End-to-end latency
# --------------------------------------------------------------------------

LAT_VALUE = struct.Struct("<q92x")  # intended send time + padding = 100 bytes
LAT_TIME = struct.Struct("<q")


def low_timer_slack() -> None:
    """Ask Linux for 1 ns timer slack on this thread (default 50 us), so that
    time.sleep() in the paced sender overshoots by ~15 us instead of ~80 us."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except Exception:
        pass


def paced_send(
    producer: Any, topic: str, n: int, rate: float, lag: array.array[int]
) -> tuple[int, int]:
    """Send n records on a fixed schedule; each carries its intended send time.

    The schedule is fixed in advance (t0 + i / rate), so a stall of the sender
    or of ottla does not push later sends back: records that should have been
    sent during the stall are stamped with their intended time and their
    latency includes the stall (no coordinated omission). lag[i] records how
    late the sender itself was (the harness's share of the latency).
    """
    low_timer_slack()
    pack = LAT_VALUE.pack
    s = producer.send
    now = time.monotonic_ns
    sleep = time.sleep
    interval = 1e9 / rate
    t0 = now() + 20_000_000
    for i in range(n):
        intended = t0 + int(i * interval)
        ahead = intended - now()
        if ahead > 0:
            sleep(ahead / 1e9)  # releases the GIL; overshoot counts as latency
        lag[i] = now() - intended
        s(topic, pack(intended))
    t_end = now()
    producer.flush()
    return t0, t_end


def consume_latencies(consumer: Any, n: int, out: array.array[int]) -> int:
    """Receive n records; out[i] = receive time - intended send time (ns)."""
    now = time.monotonic_ns
    unpack = LAT_TIME.unpack_from
    i = 0
    for r in consumer:
        out[i] = now() - unpack(r.value)[0]
        i += 1
        if i == n:
            break
    return i


def latency_stats(
    lat: array.array[int], received: int, warmup: int, lag: array.array[int]
) -> dict[str, float]:
    vals = sorted(lat[warmup:received])
    lags = sorted(lag[warmup:])
    return dict(
        p50=percentile(vals, 0.50) / 1e3,
        p99=percentile(vals, 0.99) / 1e3,
        p999=percentile(vals, 0.999) / 1e3,
        max=(vals[-1] / 1e3) if vals else float("nan"),
        samples=len(vals),
        sender_lag_p50=percentile(lags, 0.50) / 1e3,
        sender_lag_p99=percentile(lags, 0.99) / 1e3,
        sender_lag_p999=percentile(lags, 0.999) / 1e3,
    )


def latency_in_process(p: dict[str, Any], busy_poll_us: int = 0) -> dict[str, Any]:
    ottla = import_ottla()
    rate, n = p["lat_rate"], int(p["lat_rate"] * p["lat_secs"])
    with TempDir("lat") as d:
        ottla.Admin(d, create=True).create_topic("lat", 1)
        c = ottla.Consumer(
            d,
            "lat",
            auto_offset_reset="earliest",
            consumer_timeout_ms=5000,
            busy_poll_us=busy_poll_us,
        )
        lat = array.array("q", bytes(8 * n))
        got = [0]

        cpu = [0.0]

        def consumer_thread() -> None:
            c0 = time.thread_time()
            got[0] = consume_latencies(c, n, lat)
            cpu[0] = time.thread_time() - c0

        th = threading.Thread(target=consumer_thread, daemon=True)
        th.start()
        prod = ottla.Producer(d, linger_ms=0)
        lag = array.array("q", bytes(8 * n))
        try:
            t0, t_end = paced_send(prod, "lat", n, rate, lag)
        finally:
            prod.close()
        th.join(60)
        c.close()
        if th.is_alive():
            raise RuntimeError("consumer thread did not finish")
        st = latency_stats(lat, got[0], int(rate * p["lat_warmup_s"]), lag)
        st.update(
            received=got[0],
            sent=n,
            achieved_rate=n / ((t_end - t0) / 1e9),
            receiver_cpu=cpu[0] / ((t_end - t0) / 1e9),
        )
        return st


def latency_cross_process(p: dict[str, Any], busy_poll_us: int = 0) -> dict[str, Any]:
    ottla = import_ottla()
    rate, n = p["lat_rate"], int(p["lat_rate"] * p["lat_secs"])
    with TempDir("latx") as d:
        ottla.Admin(d, create=True).create_topic("lat", 1)
        out_path = os.path.join(d, "latencies.bin")
        child = subprocess.Popen(
            [
                sys.executable,
                THIS,
                "--child",
                "latency-consumer",
                d,
                str(n),
                out_path,
                str(busy_poll_us),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = read_line(child, 120)
            if line.strip() != "ready":
                raise RuntimeError(f"consumer child said {line!r}: {child_stderr(child)}")
            prod = ottla.Producer(d, linger_ms=0)
            lag = array.array("q", bytes(8 * n))
            try:
                t0, t_end = paced_send(prod, "lat", n, rate, lag)
            finally:
                prod.close()
            return child_latency(child, "consumer", out_path, p, n, rate, lag, t0, t_end)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


class _QueueSender:
    """Stands in for a producer in the in-memory latency references."""

    def __init__(self, put: Callable[[bytes], Any]) -> None:
        self._put = put

    def send(self, _topic: str, value: bytes) -> None:
        self._put(value)

    def flush(self) -> None:
        pass


def latency_ref_threads(p: dict[str, Any]) -> dict[str, Any]:
    """The same paced sender and receiver, through queue.SimpleQueue: the floor
    that two Python threads on this machine can reach."""
    import queue

    rate, n = p["lat_rate"], int(p["lat_rate"] * p["lat_secs"])
    q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    lat = array.array("q", bytes(8 * n))
    lag = array.array("q", bytes(8 * n))
    got = [0]

    def receiver() -> None:
        now = time.monotonic_ns
        unpack = LAT_TIME.unpack_from
        get = q.get
        i = 0
        while i < n:
            v = get(timeout=10)
            lat[i] = now() - unpack(v)[0]
            i += 1
        got[0] = i

    th = threading.Thread(target=receiver, daemon=True)
    th.start()
    t0, t_end = paced_send(_QueueSender(q.put), "lat", n, rate, lag)
    th.join(60)
    st = latency_stats(lat, got[0], int(rate * p["lat_warmup_s"]), lag)
    st.update(received=got[0], sent=n, achieved_rate=n / ((t_end - t0) / 1e9))
    return st


def latency_ref_pipe(p: dict[str, Any]) -> dict[str, Any]:
    """The same paced sender, 100-byte writes to a pipe read by a child
    process: the floor for two Python processes on this machine."""
    rate, n = p["lat_rate"], int(p["lat_rate"] * p["lat_secs"])
    with TempDir("latpipe") as d:
        out_path = os.path.join(d, "latencies.bin")
        child = subprocess.Popen(
            [sys.executable, THIS, "--child", "latency-pipe", str(n), out_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = read_line(child, 120)
            if line.strip() != "ready":
                raise RuntimeError(f"pipe child said {line!r}: {child_stderr(child)}")
            fd = child.stdin.fileno()  # type: ignore[union-attr]
            write = os.write
            lag = array.array("q", bytes(8 * n))
            t0, t_end = paced_send(_QueueSender(lambda v: write(fd, v)), "lat", n, rate, lag)
            return child_latency(child, "pipe", out_path, p, n, rate, lag, t0, t_end)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


def child_latency(
    child: subprocess.Popen[str],
    what: str,
    out_path: str,
    p: dict[str, Any],
    n: int,
    rate: float,
    lag: array.array[int],
    t0: int,
    t_end: int,
) -> dict[str, Any]:
    """Collect a receiving child's latencies (written to ``out_path``) into stats."""
    summary = json.loads(read_line(child, 120) or "{}")
    child.wait(60)
    if "received" not in summary:
        raise RuntimeError(f"{what} child failed: {child_stderr(child)}")
    lat = array.array("q")
    with open(out_path, "rb") as f:
        lat.frombytes(f.read())
    st = latency_stats(lat, summary["received"], int(rate * p["lat_warmup_s"]), lag)
    st.update(received=summary["received"], sent=n, achieved_rate=n / ((t_end - t0) / 1e9))
    if "cpu" in summary:
        st.update(receiver_cpu=summary["cpu"] / ((t_end - t0) / 1e9))
    return st


def read_line(child: subprocess.Popen[str], timeout: float) -> str:
    """readline() from a child's stdout with a timeout."""
    box: list[str] = []
    th = threading.Thread(target=lambda: box.append(child.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    th.start()
    th.join(timeout)
    if not box:
        child.kill()
        raise RuntimeError(f"child gave no answer within {timeout:.0f} s")
    return box[0]


def child_stderr(child: subprocess.Popen[str]) -> str:
    if child.poll() is None:
        child.kill()
    try:
        _, err = child.communicate(timeout=10)
    except Exception:
        return "?"
    return (err or "").strip()[-800:]


def run_child(args: list[str], timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    """Run `run.py --child ...` in a fresh interpreter; return its JSON line."""
    proc = subprocess.run(
        [sys.executable, THIS, "--child", *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"child {args[0]} exited {proc.returncode}: {proc.stderr.strip()[-800:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {args[0]} printed no result: {proc.stdout[-300:]}")
    return dict(json.loads(lines[-1]))


# --------------------------------------------------------------------------
# Open and crash-reopen
# --------------------------------------------------------------------------


def topic_names(n: int) -> list[str]:
    return [f"topic-{i:03d}" for i in range(n)]


def setup_open_dir(ottla: Any, d: str, n_topics: int, n_parts: int) -> None:
    admin = ottla.Admin(d, create=True)
    for t in topic_names(n_topics):
        admin.create_topic(t, n_parts)
    p = ottla.Producer(d)
    for t in topic_names(n_topics):
        for part in range(n_parts):
            p.send(t, b"x" * 100, partition=part)
    p.close()
    admin.close()


def setup_crash_dir(ottla: Any, d: str, total_bytes: int) -> dict[str, Any]:
    seg = total_bytes + 256 * MiB
    ottla.Admin(d, create=True).create_topic("crash", 1, {"segment.bytes": seg})
    child = subprocess.Popen(
        [sys.executable, THIS, "--child", "crash-writer", d, str(total_bytes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(child, CHILD_TIMEOUT)
        if not line.startswith("{"):
            raise RuntimeError(f"crash writer said {line!r}: {child_stderr(child)}")
        info = dict(json.loads(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        info["killed_by"] = -child.returncode if child.returncode is not None else None
        return info
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


# --------------------------------------------------------------------------
# Children (run in fresh interpreters)
# --------------------------------------------------------------------------


def child_main(argv: list[str]) -> int:
    what = argv[0]
    ottla = import_ottla()
    if what == "latency-consumer":
        d, n, out_path, busy_poll_us = argv[1], int(argv[2]), argv[3], int(argv[4])
        c = ottla.Consumer(
            d,
            "lat",
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
            busy_poll_us=busy_poll_us,
        )
        c.position(ottla.TopicPartition("lat", 0))  # assignment resolved before "ready"
        lat = array.array("q", bytes(8 * n))
        print("ready", flush=True)
        c0 = time.process_time()
        got = consume_latencies(c, n, lat)
        cpu = time.process_time() - c0
        c.close()
        with open(out_path, "wb") as f:
            f.write(lat[:got].tobytes())
        print(json.dumps({"received": got, "cpu": cpu}), flush=True)
        return 0

    if what == "latency-pipe":
        n, out_path = int(argv[1]), argv[2]
        lat = array.array("q", bytes(8 * n))
        now = time.monotonic_ns
        unpack = LAT_TIME.unpack_from
        read = os.read
        size = LAT_VALUE.size
        print("ready", flush=True)
        i = 0
        while i < n:
            v = read(0, size)
            if not v:
                break
            while len(v) < size:  # writes of <= PIPE_BUF are atomic; be safe anyway
                more = read(0, size - len(v))
                if not more:
                    break
                v += more
            lat[i] = now() - unpack(v)[0]
            i += 1
        with open(out_path, "wb") as f:
            f.write(lat[:i].tobytes())
        print(json.dumps({"received": i}), flush=True)
        return 0

    if what == "open-consumer":
        d, nt, npart = argv[1], int(argv[2]), int(argv[3])
        names = topic_names(nt)
        t0 = time.perf_counter()
        c = ottla.Consumer(d, *names, auto_offset_reset="earliest")
        t1 = time.perf_counter()
        got, seen = 0, set()
        deadline = t0 + 60
        while got < nt * npart and time.perf_counter() < deadline:
            for tp, recs in c.poll(timeout_ms=100, max_records=10_000).items():
                got += len(recs)
                seen.add((tp.topic, tp.partition))
        t2 = time.perf_counter()
        c.close(autocommit=False)
        print(
            json.dumps(
                {
                    "ms": (t2 - t0) * 1e3,
                    "construct_ms": (t1 - t0) * 1e3,
                    "records": got,
                    "partitions": len(seen),
                }
            )
        )
        return 0

    if what == "open-producer":
        d, nt, npart = argv[1], int(argv[2]), int(argv[3])
        names = topic_names(nt)
        v = b"y" * 100
        t0 = time.perf_counter()
        p = ottla.Producer(d)
        t1 = time.perf_counter()
        for t in names:
            for part in range(npart):
                p.send(t, v, partition=part)
        p.flush()
        t2 = time.perf_counter()
        p.close()
        print(json.dumps({"ms": (t2 - t0) * 1e3, "construct_ms": (t1 - t0) * 1e3}))
        return 0

    if what == "open-admin":
        d = argv[1]
        t0 = time.perf_counter()
        topics = ottla.Admin(d).list_topics()
        t1 = time.perf_counter()
        print(json.dumps({"ms": (t1 - t0) * 1e3, "topics": len(topics)}))
        return 0

    if what == "crash-writer":
        d, total = argv[1], int(argv[2])
        value_len = 1024
        n = total // (value_len + 70)  # ~70 bytes of record + batch overhead each
        p = ottla.Producer(d)
        s = p.send
        pad = b"z" * (value_len - 8)
        pack = struct.Struct("<q").pack
        for i in range(n):
            s("crash", pack(i) + pad)
        p.flush()
        print(json.dumps({"acked": n}), flush=True)
        i = n
        while True:  # keep appending until SIGKILL arrives
            s("crash", pack(i) + pad)
            i += 1

    if what in ("crash-reopen", "crash-reopen-producer"):
        d = argv[1]
        tp = ottla.TopicPartition("crash", 0)
        t0 = time.perf_counter()
        if what == "crash-reopen-producer":
            p = ottla.Producer(d)
            md = p.send("crash", b"after-crash").get()
            t1 = time.perf_counter()
            p.close()
            print(json.dumps({"ms": (t1 - t0) * 1e3, "offset": md.offset}))
            return 0
        c = ottla.Consumer(d)
        c.assign([tp])
        end = c.end_offsets([tp])[tp]
        c.seek(tp, end - 1)
        recs: list[Any] = []
        while not recs and time.perf_counter() - t0 < 60:
            recs = c.poll(timeout_ms=1000, max_records=1).get(tp, [])
        t1 = time.perf_counter()
        c.close(autocommit=False)
        last = recs[-1] if recs else None
        idx = None
        if (
            last is not None
            and last.value is not None
            and len(last.value) >= 8
            and last.value != b"after-crash"
        ):
            idx = LAT_TIME.unpack_from(last.value)[0]
        print(
            json.dumps(
                {
                    "ms": (t1 - t0) * 1e3,
                    "end": end,
                    "last_offset": last.offset if last else None,
                    "last_index": idx,
                }
            )
        )
        return 0

    raise SystemExit(f"unknown child {what!r}")


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def run_all(P: dict[str, Any], results: Results) -> None:
    R = P["repeats"]
    v100, v1k = b"x" * 100, b"x" * KiB
    v1m = os.urandom(MiB)

    # ---- produce, 100 B -------------------------------------------------
    W = "produce 100 B"
    log(f"== {W}")
    n = P["n_100"]
    timed_rate(
        results,
        W,
        "ottla send() loop + flush",
        n,
        R,
        ottla_send_loop(v100),
        ottla=True,
        kind="ottla",
        baseline=True,
    )
    timed_rate(
        results,
        W,
        "ottla send_many().wait()",
        n,
        R,
        ottla_send_many(v100),
        ottla=True,
        kind="ottla",
    )
    timed_rate(
        results,
        W,
        "ottla.aio send() loop + await flush()",
        n,
        R,
        ottla_aio(v100, "send"),
        ottla=True,
        kind="ottla",
    )
    timed_rate(
        results,
        W,
        "ottla.aio await send_many()",
        n,
        R,
        ottla_aio(v100, "send_many"),
        ottla=True,
        kind="ottla",
    )
    timed_rate(
        results,
        W,
        "Python f.write() loop, buffered file (ceiling)",
        n,
        R,
        file_write(v100),
        ottla=False,
        kind="ceiling",
    )
    queue_runs: dict[str, Any] = {}
    for peer, nkey in QUEUE_PEERS:
        pn = P[nkey]
        samples_put, samples_get = [], []
        try:
            for _ in range(R):
                put_s, get_s = peer.run(pn, v100, do_get=True)
                samples_put.append(pn / put_s)
                samples_get.append(pn / (get_s or float("nan")))
            queue_runs[peer.name] = (pn, samples_put, samples_get, None)
            results.add(
                W,
                peer.put_name,
                median(samples_put),
                "rec/s",
                ottla=False,
                n=pn,
                samples=samples_put,
            )
            log(f"   {W:<22} {peer.put_name:<40} {median(samples_put):>14,.1f} rec/s")
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            queue_runs[peer.name] = (pn, None, None, e)
            results.fail(W, peer.name, "rec/s", e, ottla=False)
    kafka_consume: list[float] = []
    kafka_err: BaseException | None = None
    kafka_retained = 0
    try:
        samples = []
        for _ in range(R):
            k = kafka_mock(P["n_kafka"], v100, do_consume=True)
            samples.append(P["n_kafka"] / k["produce_s"])
            kafka_consume.append(k["consumed"] / k["consume_s"])
            kafka_retained = k["consumed"]
        results.add(
            W,
            "confluent-kafka produce (mock cluster)",
            median(samples),
            "rec/s",
            ottla=False,
            n=P["n_kafka"],
            samples=samples,
            note="librdkafka mock broker on 127.0.0.1; flush() included",
        )
        log(f"   {W:<22} {'confluent-kafka produce':<40} {median(samples):>14,.1f} rec/s")
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        kafka_err = e
        results.fail(W, "confluent-kafka produce (mock cluster)", "rec/s", e, ottla=False)

    # ---- produce, 1 KiB -------------------------------------------------
    W = "produce 1 KiB"
    log(f"== {W}")
    n = P["n_1k"]
    timed_rate(
        results,
        W,
        "ottla send() loop + flush",
        n,
        R,
        ottla_send_loop(v1k),
        ottla=True,
        kind="ottla",
        baseline=True,
    )
    timed_rate(
        results,
        W,
        "Python f.write() loop, buffered file (ceiling)",
        n,
        R,
        file_write(v1k),
        ottla=False,
        kind="ceiling",
    )
    for peer, nkey in QUEUE_PEERS:
        pn = P[nkey]
        timed_rate(
            results,
            W,
            peer.put_name,
            pn,
            R,
            lambda k, peer=peer: peer.run(k, v1k, do_get=False)[0],
            ottla=False,
            kind="peer",
        )

    def kafka_1k(k: int) -> float:
        return float(kafka_mock(k, v1k, do_consume=False)["produce_s"])

    timed_rate(
        results,
        W,
        "confluent-kafka produce (mock cluster)",
        P["n_kafka"] // 2,
        R,
        kafka_1k,
        ottla=False,
        kind="peer",
    )

    # ---- produce, 1 MiB fsync=always ----------------------------------------
    W = "produce 1 MiB fsync"
    log(f"== {W}")
    dm = P["disk_mib"]
    # Alternated rep by rep: the disk's speed drifts between runs on a VM.
    ottla_1m, disk_once, disk_each = interleaved(
        [
            (ottla_send_1m_fsync(v1m), P["n_1m"]),
            (disk_write(dm, fsync_each=False), dm),
            (disk_write(dm, fsync_each=True), dm),
        ],
        R,
    )
    timed_rate(
        results,
        W,
        'ottla send() loop, fsync="always"',
        P["n_1m"],
        R,
        ottla_1m,
        ottla=True,
        kind="ottla",
        baseline=True,
        unit="MB/s",
        scale=MiB / 1e6,
    )
    timed_rate(
        results,
        W,
        f"disk: {dm} x 1 MiB os.write + one fsync",
        dm,
        R,
        disk_once,
        ottla=False,
        kind="ceiling",
        unit="MB/s",
        scale=MiB / 1e6,
    )
    timed_rate(
        results,
        W,
        "disk: os.write + fsync per 1 MiB",
        dm,
        R,
        disk_each,
        ottla=False,
        kind="ceiling",
        unit="MB/s",
        scale=MiB / 1e6,
    )

    # ---- produce, 1 KiB, compression.type ------------------------------
    W = "produce 1 KiB codec"
    log(f"== {W}")
    n = P["n_codec"]
    vjson = compressible_values()
    codecs = ["producer", "lz4", "zstd"]
    disks: dict[str, list[int]] = {c: [] for c in codecs}
    replays = interleaved([(ottla_send_codec(vjson, c, disks[c]), n) for c in codecs], R)
    for codec, replay in zip(codecs, replays, strict=True):
        mb = median([b / 1e6 for b in disks[codec]])
        timed_rate(
            results,
            W,
            f"ottla send() loop, compression.type={codec}",
            n,
            R,
            replay,
            ottla=True,
            kind="ottla",
            baseline=codec == "producer",
            note=f"{mb:.1f} MB on disk for {n * KiB / 1e6:.0f} MB of JSON values",
        )

    # ---- consume, 100 B -------------------------------------------------
    W = "consume 100 B"
    log(f"== {W}")
    n = P["n_consume"]
    timed_rate(
        results,
        W,
        "ottla for r in consumer",
        n,
        R,
        ottla_consume(n, v100, "iter"),
        ottla=True,
        kind="ottla",
        baseline=True,
    )
    timed_rate(
        results,
        W,
        "ottla poll(max_records=100000)",
        n,
        R,
        ottla_consume(n, v100, "poll"),
        ottla=True,
        kind="ottla",
    )
    timed_rate(
        results,
        W,
        "ottla poll() (max_poll_records=500)",
        n,
        R,
        ottla_consume(n, v100, "poll500"),
        ottla=True,
        kind="ottla",
    )
    ottla = import_ottla()
    if hasattr(ottla.Consumer, "poll_values"):
        timed_rate(
            results,
            W,
            "ottla poll_values(max_records=100000)",
            n,
            R,
            ottla_consume(n, v100, "poll_values"),
            ottla=True,
            kind="ottla",
        )
    try:
        import pyarrow  # noqa: F401  (optional: ottla[arrow])

        has_pyarrow = True
    except ImportError:
        has_pyarrow = False
    if hasattr(ottla.Consumer, "poll_arrow") and has_pyarrow:
        timed_rate(
            results,
            W,
            "ottla poll_arrow(max_records=100000)",
            n,
            R,
            ottla_consume(n, v100, "poll_arrow"),
            ottla=True,
            kind="ottla",
        )
    timed_rate(
        results,
        W,
        "ottla.aio async for r in consumer",
        n,
        R,
        ottla_aio(v100, "iter"),
        ottla=True,
        kind="ottla",
    )
    timed_rate(
        results,
        W,
        "ottla.aio getmany(max_records=100000)",
        n,
        R,
        ottla_aio(v100, "getmany"),
        ottla=True,
        kind="ottla",
    )
    timed_rate(
        results,
        W,
        "Python f.read(100) loop, buffered file (ceiling)",
        n,
        R,
        file_read(v100),
        ottla=False,
        kind="ceiling",
    )
    for peer, _nkey in QUEUE_PEERS:
        pn, _sp, sg, err = queue_runs[peer.name]
        name = peer.get_name
        if err is not None:
            results.fail(W, name, "rec/s", err, ottla=False)
        else:
            results.add(W, name, median(sg), "rec/s", ottla=False, n=pn, samples=sg)
            log(f"   {W:<22} {name:<40} {median(sg):>14,.1f} rec/s")
    if kafka_err is not None:
        results.fail(W, "confluent-kafka consume (mock cluster)", "rec/s", kafka_err, ottla=False)
    else:
        results.add(
            W,
            "confluent-kafka consume (mock cluster)",
            median(kafka_consume),
            "rec/s",
            ottla=False,
            n=kafka_retained,
            samples=kafka_consume,
            note="records the mock broker retains; timed from the first record; "
            "queued.min.messages=1e6",
        )
        log(f"   {W:<22} {'confluent-kafka consume':<40} {median(kafka_consume):>14,.1f} rec/s")

    # ---- end-to-end latency ----------------------------------------------
    W = "e2e latency 100 B"
    log(f"== {W} ({P['lat_rate']:,}/s for {P['lat_secs']} s)")
    # The busy_poll_us=50 rows measure the consumer's opt-in spin beside the
    # default (off); see docs/PERFORMANCE.md, "Latency".
    lat_rows: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], bool, int | None]] = [
        ("ottla 2 threads, 1 process", latency_in_process, True, 0),
        ("ottla 2 processes, 1 directory", latency_cross_process, True, 0),
        ("queue.SimpleQueue, 2 threads (in-memory floor)", latency_ref_threads, False, None),
        ("os.pipe, 2 processes (in-memory floor)", latency_ref_pipe, False, None),
        ("ottla 2 threads, busy_poll_us=50", lambda q: latency_in_process(q, 50), True, 50),
        ("ottla 2 processes, busy_poll_us=50", lambda q: latency_cross_process(q, 50), True, 50),
    ]
    for system, fn, is_ottla, bp in lat_rows:
        if bp and not P["lat_busy_poll_rows"]:
            continue
        try:
            st = fn(P)
            note = (
                f"offered {P['lat_rate']:,}/s, linger_ms=0; first {P['lat_warmup_s']} s dropped; "
                f"max {st['max']:,.0f} us; sender's own lateness p50/p99/p99.9 "
                f"{st['sender_lag_p50']:,.0f}/{st['sender_lag_p99']:,.0f}/"
                f"{st['sender_lag_p999']:,.0f} us"
            )
            if "receiver_cpu" in st:
                note += (
                    f"; consumer busy_poll_us={bp}, its CPU "
                    f"{st['receiver_cpu']:.0%} of the sending time"
                )
            if st["received"] != st["sent"]:
                note += f"; LOST {st['sent'] - st['received']}"
            results.add(
                W,
                system,
                st["achieved_rate"],
                "rec/s",
                ottla=is_ottla,
                kind="ottla" if is_ottla else "ceiling",
                n=st["samples"],
                p50=st["p50"],
                p99=st["p99"],
                p999=st["p999"],
                note=note,
                extra=st,
            )
            log(
                f"   {W:<22} {system:<40} p50 {st['p50']:.0f} us  p99 {st['p99']:.0f} us  "
                f"p99.9 {st['p999']:.0f} us  max {st['max']:.0f} us"
            )
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            results.fail(
                W, system, "rec/s", e, ottla=is_ottla, kind="ottla" if is_ottla else "ceiling"
            )

    # ---- open 100 topics x 8 partitions -------------------------------------
    nt, npart = P["open_topics"], P["open_parts"]
    W = f"open {nt}x{npart} partitions"
    log(f"== {W}")
    try:
        with TempDir("open") as d:
            t0 = time.perf_counter()
            setup_open_dir(ottla, d, nt, npart)
            log(
                f"   setup (create {nt} topics, 1 record per partition): {time.perf_counter() - t0:.2f} s"
            )
            for system, child, check in (
                ("ottla Consumer() + read 1 rec/partition", "open-consumer", "records"),
                ("ottla Producer() + append 1 rec/partition", "open-producer", None),
                ("ottla Admin().list_topics()", "open-admin", "topics"),
            ):
                try:
                    outs = [
                        run_child([child, d, str(nt), str(npart)]) for _ in range(P["open_reps"])
                    ]
                    if check == "records" and any(o["records"] != nt * npart for o in outs):
                        raise RuntimeError(
                            f"read {[o['records'] for o in outs]} records, expected {nt * npart}"
                        )
                    if check == "topics" and any(o["topics"] != nt for o in outs):
                        raise RuntimeError(f"list_topics gave {[o['topics'] for o in outs]}")
                    ms = [o["ms"] for o in outs]
                    note = "fresh process, warm page cache; import excluded"
                    if "construct_ms" in outs[0]:
                        note += f"; constructor {median([o['construct_ms'] for o in outs]):.1f} ms"
                    results.add(
                        W,
                        system,
                        median(ms),
                        "ms",
                        ottla=True,
                        kind="ottla",
                        n=nt * npart,
                        samples=ms,
                        note=note,
                    )
                    log(f"   {W:<22} {system:<40} {median(ms):>10.1f} ms")
                except BaseException as e:
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    results.fail(W, system, "ms", e, ottla=True, kind="ottla")
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        results.fail(W, "ottla (setup)", "ms", e, ottla=True, kind="ottla")

    # ---- crash reopen -----------------------------------------------------
    cm = P["crash_mib"]
    W = f"reopen after kill -9, {cm} MiB segment"
    log(f"== {W}")
    try:
        with TempDir("crash") as d:
            t0 = time.perf_counter()
            info = setup_crash_dir(ottla, d, cm * MiB)
            log(
                f"   writer acked {info['acked']:,} records, killed by signal {info['killed_by']} "
                f"({time.perf_counter() - t0:.1f} s)"
            )
            head = os.path.join(d, "crash-0", "partition.head")
            for system, child, before in (
                ("ottla Consumer() + read last record (1st open)", "crash-reopen", None),
                ("ottla Producer() + send().get() (2nd open)", "crash-reopen-producer", None),
                ("ottla Consumer() + read last, head file removed", "crash-reopen", head),
            ):
                try:
                    if before is not None:
                        # No head: the engine must re-validate every batch from
                        # the files, as after a reboot that may have lost pages.
                        os.unlink(before)
                    o = run_child([child, d])
                    note = ""
                    if "last_offset" in o:
                        if o["last_offset"] is None or o["last_offset"] + 1 < info["acked"]:
                            raise RuntimeError(
                                f"acknowledged records lost: last record {o}, acked {info['acked']}"
                            )
                        if o["last_index"] is not None and o["last_index"] != o["last_offset"]:
                            raise RuntimeError(
                                f"last record's payload does not match its offset: {o}"
                            )
                        note = (
                            f"end offset {o['end']:,} (acked {info['acked']:,}); "
                            "fresh process, warm page cache"
                        )
                        if before is not None:
                            note += "; full re-validation (as after a reboot)"
                    results.add(
                        W, system, o["ms"], "ms", ottla=True, kind="ottla", note=note, extra=o
                    )
                    log(f"   {W:<22} {system:<40} {o['ms']:>10.1f} ms  {o}")
                except BaseException as e:
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    results.fail(W, system, "ms", e, ottla=True, kind="ottla")
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        results.fail(W, "ottla (setup)", "ms", e, ottla=True, kind="ottla")


# --------------------------------------------------------------------------
# Machine info, table, JSON, chart
# --------------------------------------------------------------------------


def git_commit() -> str | None:
    """HEAD's commit, read from .git without running git."""
    git = REPO_DIR / ".git"
    try:
        if git.is_file():  # worktree: "gitdir: ..."
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(" ", 1)[1].strip()
        for base in (git, Path(str(git).split("/worktrees/")[0])):
            f = base / ref
            if f.is_file():
                return f.read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except Exception:
        return None
    return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    tmp = TempDir.root or tempfile.gettempdir()
    fs = None
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if os.path.realpath(tmp).startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {mnt} ({dev})"
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in (
        "ottla",
        "persist-queue",
        "litequeue",
        "diskcache",
        "confluent-kafka",
        "matplotlib",
    ):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except Exception:
        versions["librdkafka"] = None
    ottla_version = None
    try:
        ottla_version = import_ottla(attempts=3).__version__
    except Exception:
        pass
    return dict(
        cpu_model=cpu,
        cores=os.cpu_count(),
        memory_bytes=mem,
        platform=platform.platform(),
        python=sys.version.split()[0],
        python_impl=platform.python_implementation(),
        ottla_version=ottla_version,
        git_commit=git_commit(),
        temp_dir=tmp,
        temp_fs=fs,
        package_versions=versions,
        hostname=platform.node(),
    )


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "rec/s":
        return f"{v:,.0f}"
    if unit == "MB/s":
        return f"{v:,.1f}"
    return f"{v:,.1f}"


def fmt_us(v: float | None) -> str:
    return "" if v is None else f"{v:,.0f}"


def render_table(results: Results) -> str:
    head = [
        "workload",
        "system",
        "result",
        "unit",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "ottla x",
        "n / note",
    ]
    rows = []
    for r in results.rows:
        res = r["status"] if r["status"] != "ok" else fmt_value(r["value"], r["unit"])
        system = r["system"] + (" *" if r["baseline"] else "")
        ratio = "" if r["ratio"] is None else f"{r['ratio']:,.2f}"
        if r["status"] != "ok":
            note = r["note"]
        else:
            note = "; ".join(x for x in ((f"n={r['n']:,}" if r["n"] else ""), r["note"]) if x)
        rows.append(
            [
                r["workload"],
                system,
                res,
                r["unit"],
                fmt_us(r["p50_us"]),
                fmt_us(r["p99_us"]),
                fmt_us(r["p999_us"]),
                ratio,
                note,
            ]
        )
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    widths[-1] = len(head[-1])
    right = {2, 4, 5, 6, 7}

    def line(cells: list[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            if i == len(cells) - 1:
                out.append(c)
            elif i in right:
                out.append(c.rjust(widths[i]))
            else:
                out.append(c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(head), line(["-" * w for w in widths[:-1]] + ["-" * 8])]
    prev = None
    for row in rows:
        if prev is not None and row[0] != prev:
            lines.append("")
        shown = list(row)
        if row[0] == prev:
            shown[0] = ""
        prev = row[0]
        lines.append(line(shown))
    return "\n".join(lines)


def write_chart(results: Results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: list[str] = []
    for r in results.rows:
        if r["workload"] not in groups:
            groups.append(r["workload"])
    ncols = 2
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(16, 3.4 * nrows + 0.8), squeeze=False)
    colors = {"ottla": "#1f77b4", "peer": "#ff7f0e", "ceiling": "#9e9e9e"}
    for ax, g in zip(axes.flat, groups, strict=False):
        rows = [r for r in results.rows if r["workload"] == g]
        is_lat = any(r["p50_us"] is not None for r in rows)
        if is_lat:
            labels, vals, cols = [], [], []
            for r in rows:
                if r["status"] != "ok":
                    continue
                shades = (
                    ("#aec7e8", "#1f77b4", "#08306b")
                    if r["kind"] == "ottla"
                    else ("#d9d9d9", "#9e9e9e", "#525252")
                )
                for (q, key), shade in zip(
                    (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")),
                    shades,
                    strict=False,
                ):
                    labels.append(f"{r['system']} {q}")
                    vals.append(r[key])
                    cols.append(shade)
            unit = "microseconds (lower is better)"
        else:
            labels = [
                r["system"] + ("" if r["status"] == "ok" else f" ({r['status']})") for r in rows
            ]
            vals = [r["value"] if r["status"] == "ok" and r["value"] else 0 for r in rows]
            cols = [colors.get(r["kind"], "#888") for r in rows]
            unit = rows[0]["unit"] + (
                " (higher is better)"
                if rows[0]["unit"] in HIGHER_IS_BETTER
                else " (lower is better)"
            )
        y = list(range(len(labels)))[::-1]
        ax.barh(y, vals, color=cols)
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_title(g, fontsize=10, loc="left")
        ax.set_xlabel(unit, fontsize=8)
        positive = [v for v in vals if v and v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        for yi, v in zip(y, vals, strict=False):
            if v:
                ax.text(v, yi, f" {v:,.0f}" if v >= 100 else f" {v:,.1f}", va="center", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        if positive:
            lo, hi = ax.get_xlim()
            ax.set_xlim(lo, hi * (3 if ax.get_xscale() == "log" else 1.15))
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(color=colors["ottla"], label="ottla"),
            Patch(color=colors["peer"], label="peer"),
            Patch(color=colors["ceiling"], label="ceiling / reference"),
        ],
        loc="upper right",
        fontsize=8,
        ncol=3,
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small N; well under a minute")
    ap.add_argument(
        "--out",
        default=str(BENCH_DIR / "results"),
        help="where latest.json, latest.png and the timestamped copy go (default: bench/results)",
    )
    ap.add_argument("--tmp", default=None, help="root for the temporary data directories")
    args = ap.parse_args()

    TempDir.root = args.tmp
    mode = "quick" if args.quick else "full"
    P = dict(QUICK if args.quick else FULL)
    started = time.time()
    t0 = time.perf_counter()
    results = Results()
    try:
        import_ottla()
    except Exception as e:
        log(f"cannot import ottla: {e}")
        return 1
    info = machine_info()
    info["loadavg_at_start"] = os.getloadavg()
    if info["loadavg_at_start"][0] > 0.5 * (os.cpu_count() or 1):
        log(
            f"warning: load average {info['loadavg_at_start'][0]:.2f} at start: "
            "something else is running; numbers will be noisy"
        )
    log(
        f"ottla {info['ottla_version']} ({(info['git_commit'] or '?')[:12]}), Python {info['python']}, "
        f"{info['cpu_model']} x{info['cores']}, mode={mode}, temp={info['temp_fs']}"
    )
    try:
        run_all(P, results)
        # The Kafka-protocol broker beside librdkafka's mock cluster.
        sys.path.insert(0, str(BENCH_DIR))
        try:
            import broker_bench

            for row in broker_bench.rows(args.quick):
                results.add(**row)
        except ImportError as e:  # confluent-kafka missing: a peer, not an ottla failure
            results.fail("broker", "ottla.Broker", "rec/s", Unavailable(str(e)), ottla=False)
        except Exception as e:
            results.fail("broker", "ottla.Broker", "rec/s", e, ottla=True, kind="ottla")
        # `ottla serve` start-up beside librdkafka's mock cluster compiled in C.
        try:
            import startup_bench

            for row in startup_bench.rows(args.quick):
                results.add(**row)
        except Exception as e:
            results.fail("serve start-up", "ottla serve", "ms", e, ottla=True, kind="ottla")
        # A replicated cluster: RF 3 against RF 1, latency, failover (issue 14).
        try:
            import cluster_bench

            for row in cluster_bench.rows(args.quick):
                results.add(**row)
        except ImportError as e:  # confluent-kafka missing: a peer, not an ottla failure
            results.fail("cluster", "3 x ottla serve", "rec/s", Unavailable(str(e)), ottla=False)
        except Exception as e:
            results.fail("cluster", "3 x ottla serve", "rec/s", e, ottla=True, kind="ottla")
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    elapsed = time.perf_counter() - t0
    info["loadavg_at_end"] = os.getloadavg()
    results.compute_ratios()

    table = render_table(results)
    print()
    print(
        f"ottla benchmark ({mode}), {info['cpu_model']}, {info['cores']} cores, "
        f"Python {info['python']}, ottla {info['ottla_version']} @ {(info['git_commit'] or '?')[:12]}"
    )
    print(table)
    print()
    print(
        '* = the ottla row that "ottla x" compares to: ottla rate / peer rate '
        "(> 1: ottla faster), or peer time / ottla time."
    )
    print(
        f"total {elapsed:.1f} s; load average at start {info['loadavg_at_start'][0]:.2f}, "
        f"at end {info['loadavg_at_end'][0]:.2f} ({info['cores']} cores)"
    )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.fromtimestamp(started).strftime("%Y%m%d-%H%M%S")
    doc = dict(
        schema=1,
        mode=mode,
        started=_dt.datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds"),
        elapsed_s=round(elapsed, 2),
        machine=info,
        params=P,
        results=results.rows,
        table=table,
    )
    text = json.dumps(doc, indent=2, default=str)
    (out / "latest.json").write_text(text + "\n")
    (out / f"results-{stamp}-{mode}.json").write_text(text + "\n")
    written = [out / "latest.json", out / f"results-{stamp}-{mode}.json"]
    try:
        write_chart(
            results,
            out / "latest.png",
            f"ottla {info['ottla_version']} ({(info['git_commit'] or '?')[:10]}) {mode} run - "
            f"{info['cpu_model']}, {info['cores']} cores, Python {info['python']}",
        )
        written.append(out / "latest.png")
    except Exception as e:  # the chart is a nicety; the table and JSON are written
        log(f"chart not written: {type(e).__name__}: {e}")
        (out / "latest.png").unlink(missing_ok=True)  # never leave a stale chart
    print("wrote " + ", ".join(str(p) for p in written))
    return 1 if results.ottla_failed else 0


if __name__ == "__main__":
    gc.collect()
    sys.exit(main())
