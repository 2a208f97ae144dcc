"""Parked long-poll fetches (issue 12, item 7): hundreds of Fetch requests
waiting on idle partitions cost the broker next to nothing while another
partition is written every ~2 ms, and a connection that closes lets go of
its parked Fetch at once instead of after its ``max_wait_ms``.

Raw sockets (``kafka_wire``) park the fetches: a client library would not
hold hundreds of connections or close one mid-request on cue."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import ottla
from helpers import CLI_CODE, Child, Spawn, wait_until
from kafka_wire import API_FETCH, frame, recv_exact

IDLE = "idle"
BUSY = "busy"
IDLE_PARTITIONS = 30
MAX_WAIT_MS = 30_000


def parking_fetch(partition: int, correlation_id: int) -> bytes:
    """Fetch v4 of ``IDLE``/``partition`` from offset 0, waiting up to
    ``MAX_WAIT_MS`` for one byte."""
    body = struct.pack(">iiiib", -1, MAX_WAIT_MS, 1, 1 << 20, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(IDLE)) + IDLE.encode()
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, 0, 1 << 20)
    return frame(API_FETCH, 4, correlation_id, body)


def park(port: int, n: int) -> list[socket.socket]:
    """``n`` connections, each with a Fetch parked on an idle partition."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(parking_fetch(i % IDLE_PARTITIONS, i))
        socks.append(s)
    return socks


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime: fields 14 and 15 of stat(5), after pid and comm.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(spawn: Spawn, data_dir: Path) -> tuple[Child, int]:
    server = spawn(CLI_CODE, "serve", "--data", data_dir, "--listen", "127.0.0.1:0")
    line = server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
    return server, int(line.rsplit(":", 1)[1])


def setup_topics(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic(IDLE, partitions=IDLE_PARTITIONS)
    admin.create_topic(BUSY)


def test_parked_fetches_cost_little_while_another_partition_is_written(
    spawn: Spawn, data_dir: Path
) -> None:
    setup_topics(data_dir)
    server, port = serve(spawn, data_dir)
    socks = park(port, 300)
    try:
        # The fetches park within moments; their first look costs the same
        # in the old design and this one, so it is left out.
        time.sleep(1.0)
        producer = ottla.Producer(data_dir)
        try:
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            sent = 0
            while time.monotonic() - t0 < 3.0:
                producer.send(BUSY, b"tick", partition=0).get(timeout=10)
                sent += 1
                time.sleep(0.002)
            cpu, wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - t0
            # The old broker ran all 300 fetches again on every append:
            # both cores (~200% of one) for 300 fetches. Now an append costs
            # one look at each watched partition's head.
            assert cpu < 0.2 * wall, f"{cpu:.2f}s of CPU in {wall:.2f}s for {sent} appends"
            # They still wake: an append to idle/0 answers the fetches on it.
            producer.send(IDLE, b"wake", partition=0).get(timeout=10)
        finally:
            producer.close()
        for s in socks[::IDLE_PARTITIONS][:3]:
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            assert b"wake" in recv_exact(s, size)
    finally:
        for s in socks:
            s.close()
    assert server.proc.poll() is None, server.stderr[-2000:]


def test_a_closed_connection_lets_go_of_its_parked_fetch(data_dir: Path) -> None:
    setup_topics(data_dir)
    with ottla.Broker(data_dir) as broker:
        socks = park(broker.port, 100)
        try:
            assert wait_until(lambda: broker.waiting_fetches == 100, timeout=20), (
                broker.waiting_fetches
            )
        finally:
            for s in socks:
                s.close()
        # Not after MAX_WAIT_MS (30 s).
        assert wait_until(lambda: broker.waiting_fetches == 0, timeout=10), broker.waiting_fetches
        # The broker serves on: a new fetch parks and an append answers it.
        (s,) = park(broker.port, 1)
        with s:
            assert wait_until(lambda: broker.waiting_fetches == 1, timeout=20)
            with ottla.Producer(data_dir) as p:
                p.send(IDLE, b"late", partition=0).get(timeout=10)
            (size,) = struct.unpack(">i", recv_exact(s, 4))
            assert b"late" in recv_exact(s, size)
        assert wait_until(lambda: broker.waiting_fetches == 0, timeout=10)
    assert broker.waiting_fetches == 0
