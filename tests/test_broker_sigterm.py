"""A graceful stop under load: ``ottla serve --fsync always`` is sent
SIGTERM while a plain (not idempotent) kafka-python producer with acks=1 and
retries writes to it. The broker must answer every request it appended
before it closes a connection (or not append it), so the retrying producer
never writes a record twice, and every record it was told is written is."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import ottla
from helpers import CLI_CODE, Child, Spawn, free_port, read_all, wait_until

pytest.importorskip("kafka")

TOPIC = "load"
ROUNDS = 3

# Sends "0", "1", ... until the stop file appears, then flushes. Prints
# "a N" when N is acknowledged, "f N" when N failed for good, then "done".
PRODUCER = """
import os, sys, time
import kafka

addr, stop = sys.argv[1], sys.argv[2]
p = kafka.KafkaProducer(
    bootstrap_servers=addr,
    acks=1,
    retries=1000,
    enable_idempotence=False,
    max_in_flight_requests_per_connection=5,
    linger_ms=2,
    retry_backoff_ms=50,
    reconnect_backoff_ms=50,
    reconnect_backoff_max_ms=200,
    request_timeout_ms=20000,
    delivery_timeout_ms=60000,
)
print("ready", flush=True)

def acked(n):
    return lambda _md: print("a", n, flush=True)

def failed(n):
    return lambda e: print("f", n, repr(e), flush=True)

n = 0
while not os.path.exists(stop):
    p.send("load", str(n).encode()).add_callback(acked(n)).add_errback(failed(n))
    n += 1
    if n % 100 == 0:
        time.sleep(0.002)
p.flush(timeout=60)
p.close(timeout=10)
print("done", n, flush=True)
"""


def serve(spawn: Spawn, data_dir: Path, port: int) -> Child:
    """``ottla serve --fsync always`` on ``port``, once it listens (the port
    may still be held for a moment by the previous broker's sockets)."""
    deadline = time.monotonic() + 30
    while True:
        server = spawn(
            CLI_CODE,
            "serve",
            "--data",
            data_dir,
            "--listen",
            f"127.0.0.1:{port}",
            "--fsync",
            "always",
        )
        try:
            server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
            return server
        except AssertionError:
            server.kill()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def acked_count(producer: Child) -> int:
    return sum(1 for line in producer.lines() if line.startswith("a "))


def wait_acked(producer: Child, more: int) -> None:
    """Wait until ``more`` further values are acknowledged."""
    want = acked_count(producer) + more
    assert wait_until(lambda: acked_count(producer) >= want, timeout=60), producer.stderr[-2000:]


@pytest.mark.timeout(240)
def test_sigterm_under_load_neither_loses_nor_duplicates(
    data_dir: Path, tmp_path: Path, spawn: Spawn
) -> None:
    ottla.Admin(data_dir).create_topic(TOPIC, partitions=1)
    port = free_port()
    stop = tmp_path / "stop"
    server = serve(spawn, data_dir, port)
    producer = spawn(PRODUCER, f"127.0.0.1:{port}", stop)
    producer.wait_line(lambda s: s == "ready", timeout=30)
    for _ in range(ROUNDS):
        # Mid-load: the producer has requests in flight when the signal lands.
        wait_acked(producer, 3000)
        os.kill(server.pid, signal.SIGTERM)
        assert server.wait(30) == 0, server.stderr[-2000:]
        assert "Traceback" not in server.stderr
        server = serve(spawn, data_dir, port)
    wait_acked(producer, 1000)
    stop.touch()
    done = producer.wait_line(lambda s: s.startswith("done "), timeout=90)
    assert producer.wait(30) == 0
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(30) == 0

    sent = int(done.split()[1])
    acked = {int(line.split()[1]) for line in producer.lines() if line.startswith("a ")}
    values = [int(r.value) for r in read_all(data_dir, TOPIC, timeout=60)[0]]
    seen: set[int] = set()
    dups: set[int] = set()
    for v in values:
        (dups if v in seen else seen).add(v)
    assert not dups, f"{len(dups)} values written twice, e.g. {sorted(dups)[:10]}"
    assert acked <= seen, f"{len(acked - seen)} acknowledged values missing"
    assert seen <= set(range(sent))
