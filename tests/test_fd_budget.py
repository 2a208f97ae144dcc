"""Bounded descriptors: any number of partitions under a 1,024-descriptor
limit (the open-file budget closes the least recently used partition files
and reopens them on demand), and the broker's connection limits (Kafka's
``max.connections`` and ``max.connections.per.ip``).

The limits are real: each process under test sets ``RLIMIT_NOFILE`` on
itself before it imports ottla.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest

import ottla
from helpers import Child, Spawn, wait_until
from kafka_wire import (
    API_METADATA,
    _str,
    api_versions,
    closed_by_peer,
    fetch,
    frame,
    produce,
    record_batch,
    response,
)

EMBEDDED = """
import os, resource, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
import ottla

path, n = sys.argv[1], int(sys.argv[2])
peak = 0

def fds():
    global peak
    count = len(os.listdir("/proc/self/fd"))
    peak = max(peak, count)
    return count

admin = ottla.Admin(path, create=True)
admin.create_topic("wide", partitions=n)
producer = ottla.Producer(path)
for p in range(n):
    producer.send("wide", b"first-%d" % p, partition=p)
    if p % 100 == 0:
        fds()
producer.flush()
print("sent", fds(), flush=True)
d = admin.describe_topic("wide")
assert len(d.partitions) == n, len(d.partitions)
print("described", fds(), flush=True)
consumer = ottla.Consumer(path, auto_offset_reset="earliest")
consumer.assign([ottla.TopicPartition("wide", p) for p in range(n)])
seen = set()
deadline = time.monotonic() + 60
while len(seen) < n and time.monotonic() < deadline:
    for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
        for r in records:
            assert r.value == b"first-%d" % tp.partition, (tp, r.value)
            seen.add(tp.partition)
    fds()
assert len(seen) == n, len(seen)
print("consumed", fds(), flush=True)
futures = [producer.send("wide", b"second-%d" % p, partition=p) for p in range(n)]
producer.flush()
for f in futures:
    f.get(10)
ends = consumer.end_offsets([ottla.TopicPartition("wide", p) for p in range(n)])
assert all(v == 2 for v in ends.values()), sorted(set(ends.values()))
print("sent-again", fds(), flush=True)
print("peak", peak, flush=True)
producer.close()
consumer.close()
admin.close()
print("ok", flush=True)
"""


def test_embedded_2000_partitions_under_1024_descriptors(spawn: Spawn, tmp_path: Path) -> None:
    child = spawn(EMBEDDED, tmp_path / "data", 2000)
    child.wait_line(lambda s: s == "ok", timeout=100)
    assert child.wait(30) == 0, child.stderr
    lines = dict(line.split(" ", 1) for line in child.lines() if " " in line)
    peak = int(lines["peak"])
    assert peak < 1024, child.lines()
    # Well under: the budget is half the limit, the rest stays free.
    assert peak < 900, child.lines()


# `ottla serve`, under the common limit.
SERVE = (
    "import resource, sys\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))\n"
    "from ottla.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def serve(spawn: Spawn, data: Path, *flags: object) -> tuple[Child, int]:
    child = spawn(SERVE, "serve", "--data", data, "--listen", "127.0.0.1:0", *flags)
    line = child.wait_line(lambda s: s.startswith("listening on "), timeout=30)
    return child, int(line.rsplit(":", 1)[1])


def metadata_v0(sock: socket.socket, topic: str, correlation_id: int) -> tuple[int, int]:
    """Metadata v0 for one topic: (the topic's error code, its partitions)."""
    body = struct.pack(">i", 1) + _str(topic)
    sock.sendall(frame(API_METADATA, 0, correlation_id, body))
    cid, data = response(sock)
    assert cid == correlation_id
    at = 0
    (nbrokers,) = struct.unpack(">i", data[at : at + 4])
    at += 4
    for _ in range(nbrokers):
        (hlen,) = struct.unpack(">h", data[at + 4 : at + 6])
        at += 6 + hlen + 4
    (ntopics,) = struct.unpack(">i", data[at : at + 4])
    assert ntopics == 1
    err, tlen = struct.unpack(">hh", data[at + 4 : at + 8])
    at += 8 + tlen
    (nparts,) = struct.unpack(">i", data[at : at + 4])
    return err, nparts


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_broker_3000_partitions_under_1024_descriptors(spawn: Spawn, tmp_path: Path) -> None:
    data = tmp_path / "data"
    n = 3000
    with ottla.Admin(data, create=True) as admin:
        admin.create_topic("wide", partitions=n)
    child, port = serve(spawn, data, "--no-auto-create-topics")
    with connect(port) as s:
        for p in range(n):
            err, base = produce(s, "wide", p, record_batch([b"v-%d" % p]), correlation_id=p + 10)
            assert (err, base) == (0, 0), (p, err)
    assert open_fds(child.pid) < 1024
    # New clients still get metadata, produce and fetch.
    for round_ in range(3):
        with connect(port) as s:
            assert api_versions(s)
            assert metadata_v0(s, "wide", 2) == (0, n)
            p = (round_ * 997) % n
            err, base = produce(s, "wide", p, record_batch([b"again"]), correlation_id=3)
            assert (err, base) == (0, 1)
            _, parts = fetch(s, "wide", [(p, 0), (n - 1, 0)], 1 << 20, 1 << 16, correlation_id=4)
            assert [(q, e, hw) for q, e, hw, _ in parts] == [
                (p, 0, 2),
                (n - 1, 0, 1 + (p == n - 1)),
            ]
            assert b"v-%d" % p in parts[0][3] and b"again" in parts[0][3]
    assert open_fds(child.pid) < 1024
    assert child.proc.poll() is None, child.stderr


def test_max_connections_refuses_new_ones_and_frees_slots(data_dir: Path) -> None:
    with ottla.Broker(data_dir, max_connections=3) as broker:
        kept = []
        for _ in range(3):
            s = connect(broker.port)
            assert api_versions(s)
            kept.append(s)
        extra = connect(broker.port)
        assert closed_by_peer(extra, 10), "the connection past max_connections was kept"
        extra.close()
        for i, s in enumerate(kept):
            assert api_versions(s, correlation_id=10 + i), "an existing connection stopped"
        kept.pop().close()

        def one_more_served() -> bool:
            with connect(broker.port) as s:
                try:
                    return bool(api_versions(s))
                except (ConnectionError, OSError):
                    return False

        assert wait_until(one_more_served, timeout=10), "a closed connection's slot was not freed"
        for s in kept:
            s.close()


def test_max_connections_per_ip(data_dir: Path) -> None:
    with ottla.Broker(data_dir, max_connections_per_ip=2) as broker:
        a, b = connect(broker.port), connect(broker.port)
        assert api_versions(a) and api_versions(b)
        c = connect(broker.port)
        assert closed_by_peer(c, 10), "a third connection from one address was kept"
        c.close()
        assert api_versions(a, correlation_id=5) and api_versions(b, correlation_id=6)
        a.close()
        assert wait_until(lambda: _served(broker.port), timeout=10)
        b.close()


def _served(port: int) -> bool:
    with connect(port) as s:
        try:
            return bool(api_versions(s))
        except (ConnectionError, OSError):
            return False


def test_serve_flags(spawn: Spawn, data_dir: Path) -> None:
    child, port = serve(
        spawn,
        data_dir,
        "--max-connections",
        3,
        "--max-connections-per-ip",
        2,
        "--max-open-files",
        32,
    )
    a, b = connect(port), connect(port)
    assert api_versions(a) and api_versions(b)
    c = connect(port)
    assert closed_by_peer(c, 10), "a third connection from one address was kept"
    for s in (a, b, c):
        s.close()
    assert wait_until(lambda: _served(port), timeout=10)
    for flag in ("--max-connections", "--max-connections-per-ip", "--max-open-files"):
        bad = spawn(SERVE, "serve", "--data", data_dir, "--listen", "127.0.0.1:0", flag, 0)
        assert bad.wait(30) != 0
        assert f"{flag} must be at least 1" in bad.stderr
    assert child.proc.poll() is None


@pytest.mark.parametrize("value", [0, -1])
def test_connection_limits_must_be_positive(data_dir: Path, value: int) -> None:
    with pytest.raises(ValueError, match="max_connections"):
        ottla.Broker(data_dir, max_connections=value)
    with pytest.raises(ValueError, match="max_connections_per_ip"):
        ottla.Broker(data_dir, max_connections_per_ip=value)
    with pytest.raises(ValueError, match="max_open_files"):
        ottla.Broker(data_dir, max_open_files=value)


EMFILE_BROKER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
import ottla

broker = ottla.Broker(sys.argv[1], max_connections=100000)
print("port", broker.port, flush=True)
broker.serve_forever()
"""


def test_broker_out_of_descriptors_says_so_once_and_recovers(spawn: Spawn, data_dir: Path) -> None:
    child = spawn(EMFILE_BROKER, data_dir, env={"OTTLA_BROKER_LOG": "1"})
    port = int(child.wait_line(lambda s: s.startswith("port "), timeout=20).split()[1])
    socks = [connect(port) for _ in range(150)]
    assert wait_until(lambda: "cannot accept connections" in child.stderr, timeout=10), child.stderr
    time.sleep(0.5)  # long enough for a spinning loop to log many times
    assert child.stderr.count("cannot accept connections") == 1, child.stderr
    for s in socks:
        s.close()
    assert wait_until(lambda: _served(port), timeout=20), child.stderr
    assert child.proc.poll() is None
