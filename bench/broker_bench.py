"""The broker beside librdkafka's mock cluster, same client, same run.

    python bench/broker_bench.py [--quick]

confluent-kafka produces N records to, then consumes them from, an
``ottla.Broker`` in this process (the way the pytest fixture runs it),
``ottla serve`` in a child process, and librdkafka's in-process mock cluster
(``test.mock.num.brokers``), with the same client settings and record count;
plus the broker's start-up time (constructor to listening, and to the first
ApiVersions answer). The machine is shared and noisy, so the three targets
run interleaved for several rounds (the order rotating each round) and the
median is reported, with the spread in the note. ``rows(quick)`` returns the
results as dicts for ``bench/run.py``'s table.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

QUIET = {"log_level": 3}


def _produce(ck: Any, conf: dict[str, Any], topic: str, n: int, value: bytes) -> float:
    p = ck.Producer({**conf, "linger.ms": 5, "batch.num.messages": 10000, **QUIET})
    p.produce(topic, b"warm-up")  # topic creation and connection set-up, not timed
    if p.flush(30) != 0:
        raise RuntimeError("warm-up record not acknowledged")
    produce, poll = p.produce, p.poll
    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                produce(topic, value)
                break
            except BufferError:  # queue.buffering.max.messages reached: wait for acks
                poll(0.05)
    if p.flush(120) != 0:
        raise RuntimeError("records left unacknowledged")
    return time.perf_counter() - t0


def _consume(ck: Any, bootstrap: str, topic: str) -> float:
    """Records per second reading everything the broker retains (the mock
    cluster keeps only part of what was produced), timed from the first one."""
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "enable.auto.commit": False,
            "queued.min.messages": 1_000_000,
            **QUIET,
        }
    )
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        assign, target = [], 0
        for p in sorted(parts):
            lo, hi = c.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)
            target += hi - lo
            assign.append(ck.TopicPartition(topic, p, lo))
        c.assign(assign)
        got, deadline = 0, time.perf_counter() + 120
        while got == 0 and time.perf_counter() < deadline:  # first fetch not timed
            got = sum(1 for m in c.consume(1, 1.0) if m.error() is None)
        t0 = time.perf_counter()
        first = got
        while got < target and time.perf_counter() < deadline:
            got += sum(1 for m in c.consume(10_000, 1.0) if m.error() is None)
        if got < target or got - first < 1000:
            raise RuntimeError(f"consumed {got} of {target}")
        return (got - first) / (time.perf_counter() - t0)
    finally:
        c.close()


def _measure(ck: Any, bootstrap: str, n: int, value: bytes) -> tuple[float, float]:
    """(produce records/s, consume records/s) against one target."""
    return n / _produce(ck, {"bootstrap.servers": bootstrap}, "t", n, value), _consume(
        ck, bootstrap, "t"
    )


def _against_ottla(ck: Any, ottla: Any, n: int, value: bytes) -> tuple[float, float]:
    """The broker in this process, as the ``ottla_broker`` fixture runs it."""
    with tempfile.TemporaryDirectory() as d, ottla.Broker(d) as b:
        return _measure(ck, b.bootstrap_servers, n, value)


@contextlib.contextmanager
def _serve() -> Iterator[str]:
    """``ottla serve`` in a child process on a fresh directory; its address."""
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ottla.cli", "serve", "--data", d, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "listening on HOST:PORT"
            if not line.startswith("listening on "):
                raise RuntimeError(f"ottla serve did not start: {line!r}")
            yield line.split()[-1]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _against_serve(ck: Any, n: int, value: bytes) -> tuple[float, float]:
    """``ottla serve`` in its own process: the broker's threads no longer
    share a process (and its scheduler accounting) with the client."""
    with _serve() as bootstrap:
        return _measure(ck, bootstrap, n, value)


def _against_mock(ck: Any, n: int, value: bytes) -> tuple[float, float]:
    owner = ck.Producer({"test.mock.num.brokers": 1, **QUIET})
    try:
        md = owner.list_topics(timeout=10)
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
        return _measure(ck, bootstrap, n, value)
    finally:
        del owner


def interleaved(
    targets: dict[str, Callable[[], tuple[float, float]]], rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """Every target once per round, the order rotating each round, so drift in
    the machine's load spreads over all of them alike."""
    names = list(targets)
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            out[k].append(targets[k]())
    return out


def startup_ms(ottla: Any, repeats: int) -> tuple[float, float]:
    """Median (constructor returns, first ApiVersions answered) in ms."""
    listen, ready = [], []
    req = struct.pack(">ihhih", 10, 18, 0, 1, -1)
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            b = ottla.Broker(d)
            t1 = time.perf_counter()
            with socket.create_connection((b.host, b.port)) as s:
                s.sendall(req)
                (size,) = struct.unpack(">i", s.recv(4))
                while size > 0:
                    size -= len(s.recv(size))
            t2 = time.perf_counter()
            b.close()
            listen.append((t1 - t0) * 1000)
            ready.append((t2 - t0) * 1000)
    return statistics.median(listen), statistics.median(ready)


def rows(quick: bool = False) -> list[dict[str, Any]]:
    """Result rows: keyword arguments for bench/run.py's ``Results.add``."""
    import confluent_kafka as ck

    import ottla

    n = 50_000 if quick else 300_000
    value = b"x" * 100
    out: list[dict[str, Any]] = []
    listen, ready = startup_ms(ottla, 5 if quick else 20)
    out.append(
        dict(
            workload="broker start-up",
            system="ottla.Broker() listening",
            value=listen,
            unit="ms",
            ottla=True,
            kind="ottla",
            baseline=True,
            n=None,
            note="constructor returns; port bound",
        )
    )
    out.append(
        dict(
            workload="broker start-up",
            system="ottla.Broker() first response",
            value=ready,
            unit="ms",
            ottla=True,
            kind="ottla",
            baseline=False,
            n=None,
            note="to the first ApiVersions answer",
        )
    )
    rounds = 3 if quick else 7
    runs = interleaved(
        {
            "ottla.Broker": lambda: _against_ottla(ck, ottla, n, value),
            "ottla serve": lambda: _against_serve(ck, n, value),
            "librdkafka mock": lambda: _against_mock(ck, n, value),
        },
        rounds,
    )
    for i, (what, arrow) in enumerate([("produce", "->"), ("consume", "<-")]):
        for name, where in [
            ("ottla.Broker", "in this process"),
            ("ottla serve", "child process"),
            ("librdkafka mock", "in this process"),
        ]:
            rates = [run[i] for run in runs[name]]
            out.append(
                dict(
                    workload=f"broker {what} 100 B",
                    system=f"confluent-kafka {arrow} {name}",
                    value=statistics.median(rates),
                    unit="rec/s",
                    ottla=name != "librdkafka mock",
                    kind="ottla" if name != "librdkafka mock" else "peer",
                    baseline=name == "ottla.Broker",
                    n=n,
                    samples=rates,
                    note=f"median of {rounds} interleaved rounds, {min(rates):,.0f}-{max(rates):,.0f}; "
                    f"broker {where}; same client settings",
                )
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in rows(args.quick):
        spread = ""
        if r.get("samples"):
            spread = f"   ({min(r['samples']):,.0f} .. {max(r['samples']):,.0f})"
        print(f"{r['workload']:<22} {r['system']:<36} {r['value']:>14,.2f} {r['unit']}{spread}")


if __name__ == "__main__":
    main()
