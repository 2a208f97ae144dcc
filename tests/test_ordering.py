"""A partition's log holds a prefix of what the producer sent to it, up to the
first failed append the caller has not been told about: when an append
fails, the batches behind it in its partition fail too (a smaller one that
would still fit must not take the lost records' offsets), and later sends to
the partition fail until the error reaches the caller (flush() raising it, a
future raising or returning it). Failures come from RLIMIT_FSIZE in a child
process, as in test_crash.test_disk_full."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import ottla
from helpers import Spawn, read_values

# The child fills nothing: it gives the active segment exactly ROOM bytes
# more to grow (the soft RLIMIT_FSIZE), so a 1500-byte record cannot be
# appended while a 100-byte one could.
PRELUDE = """
import json, os, resource, signal, sys, time
import ottla
path = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
out = {}
BIG, SMALL = b"A" * 1500, b"s" * 100

def limit_room(room):
    part = os.path.join(path, "ord-0")
    seg = sorted(f for f in os.listdir(part) if f.endswith(".log"))[-1]
    size = os.path.getsize(os.path.join(part, seg))
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + room, hard))

def unlimit():
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

def wait_done(f):
    deadline = time.monotonic() + 10
    while not f.done():
        assert time.monotonic() < deadline, "future never completed"
        time.sleep(0.001)

def err_name(f):
    try:
        f()
        return "ok"
    except ottla.OttlaError as e:
        return type(e).__name__

def offset(f):
    # The offset the record got, or the name of the error it failed with.
    try:
        return f.get(10).offset
    except ottla.OttlaError as e:
        return type(e).__name__
"""

SYNC_CHILD = (
    PRELUDE
    + """
p = ottla.Producer(path, linger_ms=600000, batch_size=1024)
p.send("ord", b"first", partition=0).get(10)
limit_room(1000)

# 1. A (too big to fit) fails; B, sealed behind it, would fit but fails too.
fa = p.send("ord", BIG, partition=0)
fb = p.send("ord", SMALL, partition=0)
out["flush1"] = err_name(p.flush)
out["a"] = type(fa.exception).__name__
out["b"] = type(fb.exception).__name__
# flush() raised: the partition takes records again, at the next offset.
fx = p.send("ord", b"x" * 100, partition=0)
out["flush2"] = err_name(p.flush)
out["x"] = offset(fx)

# 2. A fails in the background; a record sent before anyone is told fails
# at once (its future, not send()), and so does a send_many.
fc = p.send("ord", BIG, partition=0)  # fills a batch: sealed and appended
wait_done(fc)
fd = p.send("ord", SMALL, partition=0)
out["d_failed_at_once"] = fd.done() and fd.failed()
fm = p.send_many("ord", [b"m1", b"m2"], partition=0)
out["m"] = err_name(lambda: fm.get(10))  # delivers the error: lifts the fence
out["d"] = err_name(lambda: fd.get(10))
out["g"] = offset(p.send("ord", b"g" * 100, partition=0))

# 3. The direct path (a large value, written from its own buffer) fails;
# the small record behind it fails until get() hands the error over.
fh = p.send("ord", b"H" * 70000, partition=0)
out["h_failed"] = fh.failed()
fi = p.send("ord", b"i" * 50, partition=0)
out["i"] = err_name(lambda: fi.get(10))
out["j"] = offset(p.send("ord", b"j" * 50, partition=0))

# 4. exception() hands the error over too.
fk = p.send("ord", BIG, partition=0)
wait_done(fk)
fl = p.send("ord", SMALL, partition=0)
out["l"] = type(fl.exception).__name__
out["n"] = offset(p.send("ord", b"n" * 50, partition=0))

# Without the limit, appending continues gap-free.
unlimit()
out["big"] = offset(p.send("ord", BIG, partition=0))
p.close()
print("result", json.dumps(out), flush=True)
"""
)


def run_child(data_dir: Path, spawn: Spawn, code: str) -> Any:
    ottla.Admin(data_dir).create_topic("ord", config={"segment.index.bytes": 4096})
    gc.collect()
    child = spawn(code, data_dir)
    rc = child.wait(25)
    lines = child.lines()
    assert rc == 0, (rc, lines[-5:], child.stderr[-3000:])
    res = [ln for ln in lines if ln.startswith("result ")]
    assert res, (lines, child.stderr[-3000:])
    return json.loads(res[0][len("result ") :])


def test_failed_append_fails_the_smaller_batches_behind_it(data_dir: Path, spawn: Spawn) -> None:
    out = run_child(data_dir, spawn, SYNC_CHILD)
    assert out["flush1"] == "DiskFullError"
    assert out["a"] == "DiskFullError"
    assert out["b"] == "DiskFullError"  # it would have fit: it must not jump A
    assert out["flush2"] == "ok" and out["x"] == 1
    assert out["d_failed_at_once"] is True
    assert out["m"] == "DiskFullError" and out["d"] == "DiskFullError"
    assert out["g"] == 2
    assert out["h_failed"] is True and out["i"] == "DiskFullError"
    assert out["j"] == 3
    assert out["l"] == "DiskFullError" and out["n"] == 4
    assert out["big"] == 5
    vals = read_values(data_dir, "ord")
    assert [v for _, _, v in vals] == [
        b"first",
        b"x" * 100,
        b"g" * 100,
        b"j" * 50,
        b"n" * 50,
        b"A" * 1500,
    ]
    assert [o for o, _, _ in vals] == list(range(6))


AIO_CHILD = (
    PRELUDE
    + """
import asyncio
import ottla.aio

async def main():
    p = ottla.aio.Producer(path, linger_ms=600000, batch_size=1024)
    await p.send("ord", b"first", partition=0)
    limit_room(1000)

    fa = p.send("ord", BIG, partition=0)
    fb = p.send("ord", SMALL, partition=0)
    try:
        await p.flush()
        out["flush1"] = "ok"
    except ottla.OttlaError as e:
        out["flush1"] = type(e).__name__
    out["a"] = type(fa.exception()).__name__
    out["b"] = type(fb.exception()).__name__
    out["x"] = (await p.send("ord", b"x" * 100, partition=0)).offset

    # An awaited future hands the error over.
    fc = p.send("ord", BIG, partition=0)
    deadline = time.monotonic() + 10
    while not fc.done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    fd = p.send("ord", SMALL, partition=0)
    out["d_failed_at_once"] = fd.done()
    try:
        await fd
        out["d"] = "ok"
    except ottla.OttlaError as e:
        out["d"] = type(e).__name__
    out["g"] = (await p.send("ord", b"g" * 100, partition=0)).offset

    # So does an awaited send_many, whose records all fail.
    fe = p.send("ord", BIG, partition=0)
    deadline = time.monotonic() + 10
    while not fe.done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    fm = p.send_many("ord", [b"m1", b"m2"], partition=0)
    try:
        await fm
        out["m"] = "ok"
    except ottla.OttlaError as e:
        out["m"] = type(e).__name__
    out["h"] = (await p.send("ord", b"h" * 100, partition=0)).offset
    unlimit()
    out["big"] = (await p.send("ord", BIG, partition=0)).offset
    await p.close()

asyncio.run(main())
print("result", json.dumps(out), flush=True)
"""
)


def test_aio_failed_append_fences_until_delivered(data_dir: Path, spawn: Spawn) -> None:
    out = run_child(data_dir, spawn, AIO_CHILD)
    assert out["flush1"] == "DiskFullError"
    assert out["a"] == "DiskFullError" and out["b"] == "DiskFullError"
    assert out["x"] == 1
    assert out["d_failed_at_once"] is True and out["d"] == "DiskFullError"
    assert out["g"] == 2
    assert out["m"] == "DiskFullError" and out["h"] == 3
    assert out["big"] == 4
    vals = read_values(data_dir, "ord")
    assert [v for _, _, v in vals] == [
        b"first",
        b"x" * 100,
        b"g" * 100,
        b"h" * 100,
        b"A" * 1500,
    ]
    assert [o for o, _, _ in vals] == list(range(5))
