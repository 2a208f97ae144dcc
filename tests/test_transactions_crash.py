"""Transactions across a broker killed with SIGKILL (``ottla serve`` in a
child process): committed transactions stay complete, an open one is
aborted by the restarted broker once its timeout passes, and a commit the
broker died in the middle of (PrepareCommit written, a marker not) is
finished by the next broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import CLI_CODE, Child, Spawn, free_port, wait_until

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, OffsetSpec

TIMEOUT = 30.0

# `ottla serve` under a file-size limit: writes past `limit` bytes into any
# file fail with EFBIG (Python ignores SIGXFSZ, and so do its children).
LIMITED_CLI = (
    "import resource, sys; limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); " + CLI_CODE.split("; ", 1)[1]
)


def serve(spawn: Spawn, data_dir: Path, port: int, limit: int | None = None) -> Child:
    deadline = time.monotonic() + 30
    while True:
        args: list[Any] = ["serve", "--data", data_dir, "--listen", f"127.0.0.1:{port}"]
        server = spawn(CLI_CODE, *args) if limit is None else spawn(LIMITED_CLI, limit, *args)
        try:
            server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
            return server
        except AssertionError:
            server.kill()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def committed_values(addr: str, topic: str, n: int) -> list[bytes]:
    """What a read_committed consumer reads of `topic` until `n` values or
    a quiet second after them."""
    c = ck.Consumer(
        {
            "bootstrap.servers": addr,
            "group.id": f"g-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    c.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                out.append(m.value() or b"")
                continue
            if len(out) >= n:
                quiet_until = quiet_until or time.monotonic() + 1.0
                if time.monotonic() > quiet_until:
                    break
    finally:
        c.close()
    return out


def lso(addr: str, topic: str) -> int:
    a = AdminClient({"bootstrap.servers": addr})
    spec = {ck.TopicPartition(topic, 0): OffsetSpec.latest()}  # type: ignore[no-untyped-call]
    f = a.list_offsets(spec, isolation_level=ck.IsolationLevel.READ_COMMITTED)
    return int(next(iter(f.values())).result(TIMEOUT).offset)


@pytest.mark.timeout(180)
def test_kill_mid_transaction_keeps_commits_and_aborts_the_open_one(
    data_dir: Path, spawn: Spawn
) -> None:
    ottla.Admin(data_dir).create_topic("k", partitions=1)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    server = serve(spawn, data_dir, port)
    p = ck.Producer(
        {"bootstrap.servers": addr, "transactional.id": "tx-kill", "transaction.timeout.ms": 3000}
    )
    p.init_transactions(TIMEOUT)
    p.begin_transaction()
    for i in range(100):
        p.produce("k", f"c{i}".encode())
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    for i in range(50):
        p.produce("k", f"open{i}".encode())
    p.flush(TIMEOUT)
    server.sigkill()
    del p

    server = serve(spawn, data_dir, port)
    # The restarted broker finds the transaction open in __transaction_state
    # and its records in the log; its timer aborts it after the timeout.
    assert wait_until(lambda: lso(addr, "k") == 152, timeout=30)
    values = committed_values(addr, "k", 100)
    assert values == [f"c{i}".encode() for i in range(100)]
    # The id works again, from a new epoch.
    q = ck.Producer({"bootstrap.servers": addr, "transactional.id": "tx-kill"})
    q.init_transactions(TIMEOUT)
    q.begin_transaction()
    q.produce("k", b"after")
    q.commit_transaction(TIMEOUT)
    assert committed_values(addr, "k", 101)[-1] == b"after"
    server.sigkill()


@pytest.mark.timeout(240)
def test_a_commit_cut_short_by_a_crash_is_finished_on_restart(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("a", partitions=1)
    admin.create_topic("b", partitions=1)
    limit = 12 << 20
    # Partition b already holds more than the limit: under it, no write to b
    # can land, while a and __transaction_state stay small.
    with ottla.Producer(data_dir) as filler:
        filler.send_many("b", [b"f" * 10_000] * 1_400)
        filler.flush()
    port = free_port()
    addr = f"127.0.0.1:{port}"
    server = serve(spawn, data_dir, port)
    p = ck.Producer({"bootstrap.servers": addr, "transactional.id": "tx-cut"})
    p.init_transactions(TIMEOUT)
    p.begin_transaction()
    p.produce("a", b"in-a")
    p.produce("b", b"in-b")
    p.flush(TIMEOUT)
    server.sigkill()

    # This broker writes PrepareCommit and a's marker, then fails on b's.
    server = serve(spawn, data_dir, port, limit=limit)
    with pytest.raises(ck.KafkaException):
        p.commit_transaction(10)
    assert wait_until(lambda: lso(addr, "a") == 2, timeout=TIMEOUT)
    assert lso(addr, "b") == 1_400, "b's marker cannot be written"
    # The broker's timer retries every second: only b's marker, a's is not
    # written again (a second one would move a's end).
    time.sleep(2.5)
    assert lso(addr, "a") == 2
    server.sigkill()
    del p

    # The next broker finds PrepareCommit and writes the markers again.
    server = serve(spawn, data_dir, port)
    assert wait_until(lambda: lso(addr, "b") == 1_402, timeout=TIMEOUT)
    assert committed_values(addr, "a", 1) == [b"in-a"]
    assert committed_values(addr, "b", 1_401)[-1] == b"in-b"
    server.sigkill()
