"""A disk that fills up while a partition is being appended to.

The log's bytes are written with ``pwrite`` (a full disk is an ENOSPC the
append reports), but the partition's indexes, head and the directory's
beacon are written through memory maps: a store into a page the filesystem
cannot allocate is not an error code but SIGBUS, which kills the process
without a word. These tests fill a small tmpfs from outside while records
go in one acknowledged send at a time, with the writer in a child process so
that a SIGBUS shows up as its exit status, and check that the writer instead
sees a disk-full error, loses nothing it acknowledged, and goes on once
space is freed.

They need to mount a tmpfs (root, or a user namespace that allows it) and
are skipped otherwise.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
from pathlib import Path

import ottla
from helpers import Child, Spawn, fill_filesystem as fill, read_values
from kafka_wire import _str, frame, record_batch, response

RECORD = 4096
# Records acknowledged before the disk is filled: past 1 MiB of log, so the
# segment has space reserved ahead (an append then fits while the index
# entry beside it needs a page the filesystem no longer has).
BEFORE_FULL = 400
# Upper bound on sends while the disk is full: the preallocated 8 MiB hold
# about 2,000 such records, so without a disk-full error by then something
# is wrong.
MAX_WHILE_FULL = 4000
AFTER_FREE = 50


def value(i: int) -> bytes:
    head = b"rec-%06d-" % i
    return head + b"v" * (RECORD - len(head))


def assert_no_sigbus(rc: int, child: Child) -> None:
    assert rc != -signal.SIGBUS, (
        "writer died of SIGBUS: a store through a mapping hit a page the full "
        f"filesystem could not allocate; stdout tail={child.lines()[-5:]!r}"
    )


EMBEDDED_CHILD = """
import os, sys, time
import ottla

data, go_full, go_free = sys.argv[1], sys.argv[2], sys.argv[3]
before, max_full, after, size = map(int, sys.argv[4:8])

def value(i):
    head = b"rec-%06d-" % i
    return head + b"v" * (size - len(head))

def wait_for(path):
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            print("gave up waiting", path, flush=True)
            sys.exit(3)
        time.sleep(0.01)

p = ottla.Producer(data, linger_ms=0)
i = 0
def send():
    global i
    md = p.send("t", value(i), partition=0).get(10)
    print("ack", md.offset, i, flush=True)
    i += 1

for _ in range(before):
    send()
print("full?", flush=True)
wait_for(go_full)
err = None
for _ in range(max_full):
    try:
        send()
    except ottla.OttlaError as e:
        err = e
        i += 1
        break
print("error", type(err).__name__, isinstance(err, ottla.DiskFullError), flush=True)
print("message", err, flush=True)
# Still full: still a clean error, nothing written.
try:
    send()
    print("still-full ok", flush=True)
except ottla.OttlaError as e:
    i += 1
    print("still-full", type(e).__name__, flush=True)
print("free?", flush=True)
wait_for(go_free)
for _ in range(after):
    send()
p.close()
print("exit", flush=True)
"""


def test_embedded_producer_on_a_full_tmpfs_gets_disk_full_not_sigbus(
    tmpfs: Path, tmp_path: Path, spawn: Spawn
) -> None:
    data = tmpfs / "data"
    ottla.Admin(data, create=True).create_topic("t", partitions=1)
    go_full, go_free = tmp_path / "go-full", tmp_path / "go-free"
    child = spawn(
        EMBEDDED_CHILD, data, go_full, go_free, BEFORE_FULL, MAX_WHILE_FULL, AFTER_FREE, RECORD
    )
    child.wait_line(lambda line: line == "full?", timeout=60)
    filler = fill(tmpfs)
    go_full.touch()
    try:
        child.wait_line(lambda line: line == "free?", timeout=120)
    except AssertionError:
        assert_no_sigbus(child.wait(10), child)
        raise
    filler.unlink()
    go_free.touch()
    rc = child.wait(60)
    assert_no_sigbus(rc, child)
    lines = child.lines()
    assert rc == 0, (rc, lines[-5:], child.stderr[-3000:])
    err = next(x for x in lines if x.startswith("error")).split()
    assert err[1:] == ["DiskFullError", "True"], (
        err,
        [x for x in lines if x.startswith("message")],
    )
    # Space a failed append had reserved ahead may have been given back,
    # so the next send may fit; if not, it fails the same clean way.
    still = next(x for x in lines if x.startswith("still-full")).split()
    assert still[1] in ("ok", "DiskFullError"), still
    acks = [tuple(map(int, x.split()[1:])) for x in lines if x.startswith("ack")]
    assert len(acks) >= BEFORE_FULL + AFTER_FREE
    # Offsets are dense: failed sends took none.
    assert [o for o, _ in acks] == list(range(len(acks)))
    vals = read_values(data, "t")
    # Every acknowledged record, exactly once and in order; nothing else.
    assert [(o, v) for o, _, v in vals] == [(o, value(i)) for o, i in acks]


def produce_v8(
    sock: socket.socket, topic: str, partition: int, records: bytes, correlation_id: int
) -> tuple[int, int, str]:
    """Produce v8 (the first version whose response carries an error
    message) of one partition: (error code, base offset, error message)."""
    body = (
        _str(None)
        + struct.pack(">hi", 1, 10000)
        + struct.pack(">i", 1)
        + _str(topic)
        + struct.pack(">i", 1)
        + struct.pack(">ii", partition, len(records))
        + records
    )
    sock.sendall(frame(0, 8, correlation_id, body))
    cid, data = response(sock)
    assert cid == correlation_id
    at = 0
    (ntopics,) = struct.unpack_from(">i", data, at)
    assert ntopics == 1
    (tlen,) = struct.unpack_from(">h", data, at + 4)
    at += 6 + tlen
    (nparts,) = struct.unpack_from(">i", data, at)
    assert nparts == 1
    _p, err, base, _append_time, _start = struct.unpack_from(">ihqqq", data, at + 4)
    at += 4 + 30
    (nrec_errors,) = struct.unpack_from(">i", data, at)
    at += 4
    for _ in range(max(nrec_errors, 0)):
        at += 4
        (n,) = struct.unpack_from(">h", data, at)
        at += 2 + max(n, 0)
    (n,) = struct.unpack_from(">h", data, at)
    msg = data[at + 2 : at + 2 + n].decode() if n >= 0 else ""
    return err, base, msg


KAFKA_STORAGE_ERROR = 56


def test_broker_on_a_full_tmpfs_answers_kafka_storage_error_and_resumes(
    tmpfs: Path, tmp_path: Path
) -> None:
    data = tmpfs / "data"
    ottla.Admin(data, create=True).create_topic("t", partitions=1)
    broker = Child(
        "import sys; from ottla.cli import main; sys.exit(main())",
        "serve",
        "--data",
        data,
        "--listen",
        "127.0.0.1:0",
    )
    sock = None
    try:
        line = broker.wait_line(lambda line: line.startswith("listening on"), timeout=30)
        host, port = line.split()[-1].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=30)
        acked: list[tuple[int, int]] = []
        cid = 0

        def send(i: int) -> tuple[int, int, str]:
            nonlocal cid
            cid += 1
            try:
                err, base, msg = produce_v8(sock, "t", 0, record_batch([value(i)]), cid)
            except ConnectionError:
                try:
                    rc = broker.proc.wait(10)
                except subprocess.TimeoutExpired:
                    raise AssertionError("broker closed the connection but is alive") from None
                assert rc != -signal.SIGBUS, "broker died of SIGBUS"
                raise AssertionError(
                    f"broker exited with {rc}: {broker.stderr[-2000:]!r}"
                ) from None
            if err == 0:
                acked.append((base, i))
            return err, base, msg

        i = 0
        for _ in range(BEFORE_FULL):
            assert send(i)[0] == 0
            i += 1
        filler = fill(tmpfs)
        failure = None
        for _ in range(MAX_WHILE_FULL):
            err, _, msg = send(i)
            i += 1
            if err != 0:
                failure = (err, msg)
                break
        assert broker.proc.poll() is None, (
            f"broker exited with {broker.proc.poll()} on a full disk; "
            f"stderr={broker.stderr[-2000:]!r}"
        )
        assert failure is not None, "no error while the disk was full"
        assert failure[0] == KAFKA_STORAGE_ERROR, failure
        assert "No space left on device" in failure[1], failure
        # Still full (or some reserved space given back): a clean answer,
        # and the broker stays up.
        assert send(i)[0] in (0, KAFKA_STORAGE_ERROR)
        i += 1
        filler.unlink()
        for _ in range(AFTER_FREE):
            assert send(i)[0] == 0
            i += 1
        assert broker.proc.poll() is None
        assert [o for o, _ in acked] == list(range(len(acked)))
        vals = read_values(data, "t")
        assert [(o, v) for o, _, v in vals] == [(o, value(i)) for o, i in acked]
    finally:
        if sock is not None:
            sock.close()
        if broker.proc.poll() is None:
            broker.proc.send_signal(signal.SIGTERM)
            try:
                broker.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        rc = broker.proc.poll()
        broker.kill()
    assert rc != -signal.SIGBUS, "broker died of SIGBUS"
