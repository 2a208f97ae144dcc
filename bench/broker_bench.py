"""The broker beside librdkafka's mock cluster, same client, same run.

    python bench/broker_bench.py [--quick]

confluent-kafka produces N records to, then consumes them from, an
``ottla.Broker`` and librdkafka's in-process mock cluster
(``test.mock.num.brokers``); plus the broker's start-up time (constructor to
listening, and to the first ApiVersions answer). ``rows(quick)`` returns the
results as dicts for ``bench/run.py``'s table.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import tempfile
import time
from typing import Any, Dict, List, Tuple

QUIET = {"log_level": 3}


def _produce(ck: Any, conf: Dict[str, Any], topic: str, n: int, value: bytes) -> float:
    p = ck.Producer({**conf, "linger.ms": 5, "batch.num.messages": 10000, **QUIET})
    p.produce(topic, b"warm-up")  # topic creation and connection set-up, not timed
    if p.flush(30) != 0:
        raise RuntimeError("warm-up record not acknowledged")
    produce, poll = p.produce, p.poll
    t0 = time.perf_counter()
    for _ in range(n):
        try:
            produce(topic, value)
        except BufferError:
            poll(0.05)
            produce(topic, value)
    if p.flush(120) != 0:
        raise RuntimeError("records left unacknowledged")
    return time.perf_counter() - t0


def _consume(ck: Any, bootstrap: str, topic: str) -> float:
    """Records per second reading everything the broker retains (the mock
    cluster keeps only part of what was produced), timed from the first one."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench",
                     "enable.auto.commit": False, "queued.min.messages": 1_000_000, **QUIET})
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


def _against_ottla(ck: Any, ottla: Any, n: int, value: bytes) -> Tuple[float, float]:
    """(produce seconds for n records, consume records/s)."""
    with tempfile.TemporaryDirectory() as d, ottla.Broker(d) as b:
        conf = {"bootstrap.servers": b.bootstrap_servers}
        return _produce(ck, conf, "t", n, value), _consume(ck, b.bootstrap_servers, "t")


def _against_mock(ck: Any, n: int, value: bytes) -> Tuple[float, float]:
    owner = ck.Producer({"test.mock.num.brokers": 1, **QUIET})
    try:
        md = owner.list_topics(timeout=10)
        bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())
        conf = {"bootstrap.servers": bootstrap}
        return _produce(ck, conf, "t", n, value), _consume(ck, bootstrap, "t")
    finally:
        del owner


def startup_ms(ottla: Any, repeats: int) -> Tuple[float, float]:
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


def rows(quick: bool = False) -> List[Dict[str, Any]]:
    """Result rows: keyword arguments for bench/run.py's ``Results.add``."""
    import confluent_kafka as ck

    import ottla

    n = 50_000 if quick else 300_000
    value = b"x" * 100
    out: List[Dict[str, Any]] = []
    listen, ready = startup_ms(ottla, 5 if quick else 20)
    out.append(dict(workload="broker start-up", system="ottla.Broker() listening", value=listen,
                    unit="ms", ottla=True, kind="ottla", baseline=True, n=None,
                    note="constructor returns; port bound"))
    out.append(dict(workload="broker start-up", system="ottla.Broker() first response", value=ready,
                    unit="ms", ottla=True, kind="ottla", baseline=False, n=None,
                    note="to the first ApiVersions answer"))
    o_prod, o_cons = _against_ottla(ck, ottla, n, value)
    m_prod, m_cons = _against_mock(ck, n, value)
    for workload, system, rate, is_ottla in [
        ("broker produce 100 B", "confluent-kafka -> ottla.Broker", n / o_prod, True),
        ("broker produce 100 B", "confluent-kafka -> librdkafka mock", n / m_prod, False),
        ("broker consume 100 B", "confluent-kafka <- ottla.Broker", o_cons, True),
        ("broker consume 100 B", "confluent-kafka <- librdkafka mock", m_cons, False),
    ]:
        out.append(dict(workload=workload, system=system, value=rate, unit="rec/s",
                        ottla=is_ottla, kind="ottla" if is_ottla else "peer",
                        baseline=is_ottla, n=n, note="same client, same process"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in rows(args.quick):
        print(f"{r['workload']:<22} {r['system']:<40} {r['value']:>14,.2f} {r['unit']}")


if __name__ == "__main__":
    main()
