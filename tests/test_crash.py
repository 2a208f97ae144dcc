"""Crash safety with real processes: kill -9 while producing, concurrent
appenders in two processes, a tailing consumer in another process, on-disk
corruption, torn tails of the active segment, and a full disk."""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from kafka.record import MemoryRecords

import ottla
from helpers import Child, Spawn, log_files, read_values

PRODUCER_CHILD = """
import random, sys, time
import ottla
path, topic, mode, start, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)
p = ottla.Producer(path, fsync=mode, linger_ms=rng.choice([0, 1, 5]))
i = start
print("ready", flush=True)
while True:
    n = rng.randint(1, 20)
    futs = []
    for k in range(n):
        futs.append((i, p.send(topic, b"v%d-" % i + b"p" * rng.randrange(0, 60), partition=0)))
        i += 1
    if rng.random() < 0.5:
        p.flush()
    out = []
    for j, f in futs:
        md = f.get(10)
        out.append("%d %d\\n" % (md.offset, j))
    sys.stdout.write("".join(out))
    sys.stdout.flush()
    time.sleep(0.0002)  # bounds the log to a size the parent re-reads quickly
"""


def acked_pairs(child: Child) -> list[tuple[int, int]]:
    """(offset, index) pairs the child printed as acknowledged."""
    out: list[tuple[int, int]] = []
    for line in child.lines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out.append((int(parts[0]), int(parts[1])))
    return out


def end_offset(data_dir: Path, topic: str) -> int:
    d = ottla.Admin(data_dir).describe_topic(topic)
    return d.partitions[0].end_offset


def check_log(data_dir: Path, topic: str, acked: Iterable[tuple[int, int]]) -> int:
    """Every record is v<offset>-..., offsets gap-free from the log start (0
    unless retention deleted segments) to the end, every ack present."""
    part = ottla.Admin(data_dir).describe_topic(topic).partitions[0]
    vals = read_values(data_dir, topic)
    offsets = [o for o, _, _ in vals]
    assert offsets == list(range(part.start_offset, part.end_offset)), "offsets must be gap-free"
    for o, k, v in vals:
        assert k is None
        assert v.startswith(b"v%d-" % o), (o, v[:20])  # in order, no duplicates
    end = part.end_offset
    for o, j in acked:
        assert o == j, (o, j)
        assert o < end, f"acknowledged offset {o} lost (log ends at {end})"
    gc.collect()
    return end


def append_more(data_dir: Path, topic: str, n: int = 10) -> int:
    end = end_offset(data_dir, topic)
    with ottla.Producer(data_dir) as p:
        futures = [p.send(topic, b"v%d-after" % (end + i), partition=0) for i in range(n)]
        mds = [f.get(10) for f in futures]
    assert [m.offset for m in mds] == list(range(end, end + n))
    gc.collect()
    return end + n


# ---------------------------------------------------------------------------
# (1) kill -9 of a producing process
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,config",
    [
        ("never", {}),
        ("always", {}),
        # small segments: the kill also lands in segment rolls and retention passes
        ("never", {"segment.bytes": 2048, "retention.bytes": 30000}),
        ("always", {"segment.bytes": 4096}),
    ],
    ids=["never", "always", "never-rolling", "always-rolling"],
)
def test_kill_9_while_producing(
    data_dir: Path, spawn: Spawn, mode: str, config: dict[str, int]
) -> None:
    rng = random.Random(sum(map(ord, mode)) + len(config))
    ottla.Admin(data_dir).create_topic("crash", config=config)
    gc.collect()
    expect_end = 0
    for it in range(3):
        # In the middle iteration this process keeps the partition open
        # (a live reader) while the child dies; otherwise it has let go, so
        # reopening runs the loader's crash recovery.
        holder = None
        if it == 1:
            holder = ottla.Consumer(data_dir, auto_offset_reset="earliest")
            holder.assign([ottla.TopicPartition("crash", 0)])
            holder.poll(timeout_ms=0)
        child = spawn(PRODUCER_CHILD, data_dir, "crash", mode, expect_end, rng.randrange(1 << 30))
        try:
            child.wait_line(lambda s: s[:1].isdigit(), timeout=20)  # producing
            time.sleep(rng.uniform(0.2, 1.0))
            child.sigkill()
        finally:
            child.kill()
        acked = acked_pairs(child)
        assert acked, child.stderr
        assert acked[0][0] == expect_end
        if holder is not None:
            holder.close()
            del holder
            gc.collect()
        end = check_log(data_dir, "crash", acked)
        assert end >= acked[-1][0] + 1
        expect_end = append_more(data_dir, "crash")
        check_log(data_dir, "crash", [])


# ---------------------------------------------------------------------------
# (2) two processes appending to one partition
# ---------------------------------------------------------------------------

APPENDER_CHILD = """
import os, sys, time
import ottla
path, prefix, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p = ottla.Producer(path, linger_ms=1, batch_size=2048)
print("ready", flush=True)
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.001)
futs = []
for i in range(n):
    futs.append(p.send("shared", ("%s-%d" % (prefix, i)).encode(), partition=0))
    if i % 37 == 0:
        p.flush()
p.flush()
offs = [f.get(10).offset for f in futs]
p.close()
print("done", offs[0], offs[-1], flush=True)
"""


def test_two_processes_append_to_one_partition(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    ottla.Admin(data_dir).create_topic("shared")
    gc.collect()
    go = tmp_path / "go"
    a = spawn(APPENDER_CHILD, data_dir, "A", 2000, go)
    b = spawn(APPENDER_CHILD, data_dir, "B", 2000, go)
    a.wait_line(lambda s: s == "ready", timeout=20)
    b.wait_line(lambda s: s == "ready", timeout=20)
    go.write_text("go")
    assert a.wait(25) == 0, a.stderr
    assert b.wait(25) == 0, b.stderr
    vals = read_values(data_dir, "shared")
    assert [o for o, _, _ in vals] == list(range(4000))
    values = [v.decode() for _, _, v in vals]
    assert len(set(values)) == 4000
    for prefix in "AB":
        mine = [v for v in values if v.startswith(prefix + "-")]
        assert mine == [f"{prefix}-{i}" for i in range(2000)]
    # the file on disk is a valid Kafka log
    n = 0
    for f in log_files(data_dir / "shared-0"):
        mr = MemoryRecords(f.read_bytes())
        while True:
            batch = mr.next_batch()
            if batch is None:
                break
            assert batch.validate_crc()
            n += len(list(batch))
    assert n == 4000


SURVIVOR_CHILD = """
import sys
import ottla
p = ottla.Producer(sys.argv[1], linger_ms=0)
pre = sys.argv[2].encode()
i = 0
while True:
    futs = [p.send("k", pre + b"-%08d" % j, partition=0) for j in range(i, i + 5)]
    p.flush()
    sys.stdout.write("".join("%d %d\\n" % (f.get(10).offset, j) for j, f in zip(range(i, i + 5), futs)))
    sys.stdout.flush()
    i += 5
"""


def test_kill_9_of_one_writer_while_another_appends(data_dir: Path, spawn: Spawn) -> None:
    """A writer in this process keeps appending while writers in child
    processes are killed -9 one after another on the same partition."""
    import threading

    ottla.Admin(data_dir).create_topic("k", config={"segment.bytes": 8192})
    rng = random.Random(99)
    stop = threading.Event()
    parent_acks: list[tuple[int, int]] = []
    errors: list[Exception] = []

    def parent_writer() -> None:
        try:
            with ottla.Producer(data_dir, linger_ms=0) as p:
                i = 0
                while not stop.is_set():
                    parent_acks.append((p.send("k", b"P-%08d" % i, partition=0).get(10).offset, i))
                    i += 1
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=parent_writer)
    t.start()
    acked = {}
    try:
        for it in range(6):
            pre = f"C{it}"
            child = spawn(SURVIVOR_CHILD, data_dir, pre)
            try:
                child.wait_line(lambda s: s[:1].isdigit(), timeout=20)
                time.sleep(rng.uniform(0.05, 0.3))
                child.sigkill()
            finally:
                child.kill()
            acked[pre] = [tuple(map(int, ln.split())) for ln in child.lines() if ln.count(" ") == 1]
            assert acked[pre], child.stderr
    finally:
        stop.set()
        t.join(20)
    assert not errors, errors
    assert len(parent_acks) > 10
    gc.collect()
    vals = read_values(data_dir, "k")
    assert [o for o, _, _ in vals] == list(range(len(vals)))
    by_offset = {o: v for o, _, v in vals}
    seqs: dict[str, list[int]] = {}
    for _, _, v in vals:
        pre, i = v.split(b"-")
        seqs.setdefault(pre.decode(), []).append(int(i))
    for pre, seq in seqs.items():
        assert seq == list(range(len(seq))), pre  # each writer's records in order, once
    for pre, pairs in acked.items():
        for o, j in pairs:
            assert by_offset[o] == pre.encode() + b"-%08d" % j
    for o, j in parent_acks:
        assert by_offset[o] == b"P-%08d" % j


RETENTION_WRITER = """
import sys
import ottla
p = ottla.Producer(sys.argv[1], linger_ms=0)
pre = sys.argv[2].encode()
for i in range(int(sys.argv[3])):
    p.send("s", pre + b"%08d" % i + b"x" * 40, partition=0)
    if i % 5 == 0:
        p.flush()
p.close()
print("done", flush=True)
"""


def test_reader_follows_two_writer_processes_with_retention(data_dir: Path, spawn: Spawn) -> None:
    """Two processes append (rolling small segments that retention deletes)
    while this process reads: offsets only grow, each writer's records come
    in order, the reader never sees a wrong record, and it reads every
    record still in the log when it is done.

    The reader falls behind on purpose, further than retention.bytes, so
    retention deletes records before it gets to them (it then resets to the
    earliest offset, as Kafka's auto_offset_reset="earliest" does). Which
    records those are depends on the timing; that the ones kept are all
    read, without a gap up to the end, does not."""
    ottla.Admin(data_dir).create_topic(
        "s", config={"segment.bytes": 4096, "retention.bytes": 16384}
    )
    gc.collect()
    n = 10000
    writers = [spawn(RETENTION_WRITER, data_dir, x, n) for x in "AB"]
    last = {"A": -1, "B": -1}
    last_offset = -1
    seen = set()
    count = 0
    with ottla.Consumer(data_dir, "s", auto_offset_reset="earliest", consumer_timeout_ms=2000) as c:
        deadline = time.monotonic() + 25
        for r in c:
            assert r.offset > last_offset
            last_offset = r.offset
            seen.add(r.offset)
            pre, i = r.value[:1].decode(), int(r.value[1:9])
            assert i > last[pre], (pre, last[pre], i)
            assert r.value == r.value[:9] + b"x" * 40
            last[pre] = i
            count += 1
            if count % 1000 == 0:
                time.sleep(0.02)  # fall behind now and then
            if last_offset == 2 * n - 1 or time.monotonic() > deadline:
                break
    for w in writers:
        assert w.wait(20) == 0, w.stderr
    assert last_offset == 2 * n - 1
    assert n - 1 in last.values()  # the record at the end is a writer's last
    d = ottla.Admin(data_dir).describe_topic("s").partitions[0]
    assert d.end_offset == 2 * n and d.start_offset > 0
    unread = [o for o in range(d.start_offset, d.end_offset) if o not in seen]
    assert not unread, (d.start_offset, unread[:10])
    kept = read_values(data_dir, "s")
    assert [o for o, _, _ in kept] == list(range(d.start_offset, d.end_offset))
    for pre in "AB":  # each writer's newest record still kept was read
        mine = [int(v[1:9]) for _, _, v in kept if v[:1] == pre.encode()]
        assert not mine or last[pre] >= mine[-1], (pre, last[pre], mine[-1])


RACING_WRITER = """
import sys, time
import ottla
p = ottla.Producer(sys.argv[1], linger_ms=0)
pre = sys.argv[2].encode()
end = time.monotonic() + float(sys.argv[3])
i = 0
while time.monotonic() < end:
    p.send("s", pre + b"%08d" % i + b"x" * 40, partition=0)
    if i % 5 == 0:
        p.flush()
    i += 1
p.close()
print("done", i, flush=True)
"""


def test_reader_at_the_log_start_while_retention_deletes_it(data_dir: Path, spawn: Spawn) -> None:
    """The reader stays where retention deletes next (the log start) while
    two writer processes roll 4 KiB segments. A retention pass that lands
    between a read's look at the head and its listing of the directory
    takes the segment the read wants: that is offset out of range (the
    consumer resets to the new start), never a corrupt batch (it used to
    be "batch offsets ... do not continue the log", the flake of the test
    above). Records read are whole and in each writer's order."""
    ottla.Admin(data_dir).create_topic(
        "s", config={"segment.bytes": 4096, "retention.bytes": 16384}
    )
    gc.collect()
    seconds = 3
    writers = [spawn(RACING_WRITER, data_dir, x, seconds) for x in "AB"]
    tp = ottla.TopicPartition("s", 0)
    reads = records = 0
    with ottla.Consumer(data_dir, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([tp])
        deadline = time.monotonic() + seconds + 20
        while time.monotonic() < deadline and any(w.proc.poll() is None for w in writers):
            c.seek_to_beginning(tp)
            last_offset, last = -1, dict[str, int]()
            for r in c.poll(timeout_ms=0, max_records=50).get(tp, []):
                assert r.offset > last_offset
                last_offset = r.offset
                pre, i = r.value[:1], int(r.value[1:9])
                assert pre in (b"A", b"B") and r.value[9:] == b"x" * 40, r.value
                assert i > last.get(pre, -1), (pre, last, i)
                last[pre] = i
                records += 1
            reads += 1
    for w in writers:
        assert w.wait(20) == 0, w.stderr
    assert reads > 0 and records > 0
    d = ottla.Admin(data_dir).describe_topic("s").partitions[0]
    assert d.start_offset > 0


def test_bytes_of_a_killed_appender_do_not_reach_readers_after_a_roll(data_dir: Path) -> None:
    """A writer killed in the middle of an append leaves bytes past the
    head's end of the active segment (never published, never
    acknowledged). While another writer keeps the partition open nobody
    runs recovery, so when that writer rolls, the closed segment must end
    where the head said: readers read a closed segment to its file length
    and took the dead writer's bytes for a corrupt batch."""
    ottla.Admin(data_dir).create_topic("t", config={"segment.bytes": 8192})
    gc.collect()
    with ottla.Producer(data_dir, linger_ms=0) as p:
        for i in range(5):
            p.send("t", b"before-%d" % i, partition=0).get(10)
        (seg,) = log_files(data_dir / "t-0")
        with open(seg, "ab") as f:
            # A batch cut short: base offset 5, a 4 KiB length, 3 KB of it.
            f.write((5).to_bytes(8, "big") + (4096).to_bytes(4, "big") + b"\x5a" * 3000)
        p.send("t", b"after", partition=0).get(10)
        # Does not fit what is left of the segment: rolls it.
        big = p.send("t", b"B" * 7900, partition=0).get(10)
        p.send("t", b"last", partition=0).get(10)
        assert len(log_files(data_dir / "t-0")) == 2
        vals = read_values(data_dir, "t")
    assert [o for o, _, _ in vals] == list(range(big.offset + 2))
    assert [v for _, _, v in vals] == [b"before-%d" % i for i in range(5)] + [
        b"after",
        b"B" * 7900,
        b"last",
    ]


ROLL_SURVIVOR = """
import os, sys, time
import ottla
p = ottla.Producer(sys.argv[1], linger_ms=0)
for i in range(5):
    p.send("r", b"s-%05d" % i, partition=0).get(10)
print("ready", flush=True)
deadline = time.monotonic() + 20
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.01)
for i in range(5, 2005):
    p.send("r", b"s-%05d" % i, partition=0).get(10)
# Rolls past the dead writer's leftovers.
p.send("r", b"L" * 262000, partition=0).get(10)
p.send("r", b"s-last", partition=0).get(10)
p.close()
print("done", flush=True)
"""

ROLL_KILLED = """
import sys
import ottla
p = ottla.Producer(sys.argv[1], linger_ms=0)
p.send("r", b"K" * 262000, partition=0).get(10)
print("not killed", flush=True)
"""


@pytest.mark.parametrize("step", ["finalized", "created"])
def test_writer_killed_in_a_roll_while_another_appends(
    data_dir: Path, spawn: Spawn, tmp_path: Path, step: str
) -> None:
    """A writer is killed in the middle of a segment roll (after trimming
    the closing segment's indexes, or after creating the new segment's
    files), before publishing it; another writer process, whose batches
    still fit the segment, goes on appending to it, one index entry per
    batch. It must not write index entries past the trimmed file through
    the mapping it made before (a SIGBUS past the first page); when it
    rolls later, the dead roll's segment file (whose base its appends have
    passed) must not become a closed segment that readers take as holding
    those offsets; and its records read back whole and in order."""
    ottla.Admin(data_dir).create_topic(
        "r", config={"segment.bytes": 262144, "index.interval.bytes": 0}
    )
    gc.collect()
    go = tmp_path / "go"
    survivor = spawn(ROLL_SURVIVOR, data_dir, go)
    survivor.wait_line(lambda s: s == "ready", timeout=20)
    killed = spawn(ROLL_KILLED, data_dir, env={"OTTLA_ROLL_CRASH_AT": step})
    assert killed.wait(20) == -9, killed.stderr
    go.write_text("go")
    assert survivor.wait(30) == 0, survivor.stderr
    vals = read_values(data_dir, "r")
    assert [o for o, _, _ in vals] == list(range(2007))
    assert [v for _, _, v in vals] == [b"s-%05d" % i for i in range(2005)] + [
        b"L" * 262000,
        b"s-last",
    ]
    # The big record has a segment to itself; no stray file is left.
    assert [int(f.stem) for f in log_files(data_dir / "r-0")] == [0, 2005, 2006]


# ---------------------------------------------------------------------------
# (3) a consumer in another process tails what this one writes
# ---------------------------------------------------------------------------

TAIL_CHILD = """
import sys
import ottla
c = ottla.Consumer(sys.argv[1], "tail", auto_offset_reset="earliest", consumer_timeout_ms=20000)
c.poll(timeout_ms=0)
print("ready", flush=True)
for rec in c:
    print(rec.partition, rec.offset, rec.value.decode(), flush=True)
"""


def test_consumer_process_tails_topic(data_dir: Path, spawn: Spawn) -> None:
    ottla.Admin(data_dir).create_topic("tail", partitions=3)
    gc.collect()
    child = spawn(TAIL_CHILD, data_dir)
    child.wait_line(lambda s: s == "ready", timeout=20)
    pending: list[tuple[ottla.FutureRecordMetadata, str]] = []
    t0 = time.monotonic()
    with ottla.Producer(data_dir, linger_ms=2) as p:
        first = p.send("tail", b"first", key=b"k-first").get(10)
        sent = [(first.partition, first.offset, "first")]
        child.wait_line(lambda s: s.endswith(" first"), timeout=5)
        first_latency = time.monotonic() - t0
        for i in range(300):
            md = p.send("tail", f"msg-{i}".encode(), key=f"k{i}".encode())
            pending.append((md, f"msg-{i}"))
            if i % 50 == 0:
                time.sleep(0.05)
        p.flush()
        sent += [(f.get(10).partition, f.get(10).offset, v) for f, v in pending]
    t_sent = time.monotonic()
    got_all = child.wait_lines(len(sent) + 1, timeout=10)
    catch_up = time.monotonic() - t_sent
    fields = [ln.split(" ", 2) for ln in got_all[1:]]
    got = [(int(pa), int(o), v) for pa, o, v in fields]
    assert sorted(got) == sorted(sent), (len(got), len(sent))
    for part in range(3):
        offs = [o for pa, o, _ in got if pa == part]
        assert offs == sorted(offs)
    assert first_latency < 2.0, first_latency
    assert catch_up < 3.0, catch_up


# ---------------------------------------------------------------------------
# (4) corruption of stored bytes
# ---------------------------------------------------------------------------

CORRUPT_READER = """
import json, sys
import ottla
for d in sys.argv[1:]:
    res = {"dir": d, "records": [], "error": None, "again": None}
    c = ottla.Consumer(d, auto_offset_reset="earliest", enable_auto_commit=False)
    tp = ottla.TopicPartition("cor", 0)
    c.assign([tp])
    end = c.end_offsets([tp])[tp]
    try:
        idle = 0
        while idle < 3:
            batch = c.poll(timeout_ms=50).get(tp, [])
            idle = 0 if batch else idle + 1
            res["records"] += [[r.offset, r.value.decode("latin-1")] for r in batch]
    except ottla.OttlaError as e:
        res["error"] = [type(e).__name__, str(e)]
        try:
            again = c.poll(timeout_ms=50).get(tp, [])
            res["again"] = ["records", [[r.offset, r.value.decode("latin-1")] for r in again]]
        except ottla.OttlaError as e2:
            res["again"] = [type(e2).__name__, str(e2)]
    c.close()
    print(json.dumps(res), flush=True)
print("finished", flush=True)
"""


def value_of(i: int) -> str:
    return f"rec-{i:06d}-" + "x" * (i % 37)


def build_corruption_base(path: Path) -> list[Path]:
    ottla.Admin(path, create=True).create_topic("cor", config={"segment.bytes": 4096})
    with ottla.Producer(path) as p:
        for i in range(0, 600, 10):
            p.send_many("cor", [value_of(j).encode() for j in range(i, i + 10)], partition=0)
            p.flush()
    gc.collect()
    logs = log_files(path / "cor-0")
    assert len(logs) >= 4
    return logs


def batches_of(f: Path) -> list[tuple[int, int, int, int]]:
    """[(position, size, base_offset, last_offset)] via kafka-python."""
    mr = MemoryRecords(f.read_bytes())
    out: list[tuple[int, int, int, int]] = []
    pos = 0
    while True:
        b = mr.next_batch()
        if b is None:
            return out
        out.append((pos, b.size_in_bytes, b.base_offset, b.last_offset))
        pos += b.size_in_bytes


def run_reader(spawn: Spawn, dirs: Iterable[str]) -> list[Any]:
    child = spawn(CORRUPT_READER, *dirs)
    rc = child.wait(25)
    assert rc == 0, f"reader crashed (rc={rc}): {child.stderr[-3000:]}"
    return [json.loads(ln) for ln in child.lines() if ln.startswith("{")]


def test_random_corruption_of_old_segment(tmp_path: Path, spawn: Spawn) -> None:
    base = tmp_path / "base"
    logs = build_corruption_base(base)
    rng = random.Random(20240607)
    trials = []
    for t in range(12):
        d = tmp_path / f"trial{t}"
        shutil.copytree(base, d)
        seg = logs[rng.randrange(0, len(logs) - 1)]  # a closed (older) segment
        target = d / "cor-0" / seg.name
        bl = batches_of(target)
        pos, size, first, _last = bl[rng.randrange(1, len(bl) - 1)]  # a batch in the middle
        # Any byte but the base offset (0..7) and the leader epoch (12..15),
        # the two header fields the batch CRC does not cover.
        candidates = [i for i in range(size) if not (i < 8 or 12 <= i < 16)]
        at = pos + rng.choice(candidates)
        raw = bytearray(target.read_bytes())
        raw[at] ^= rng.randrange(1, 256)
        target.write_bytes(bytes(raw))
        trials.append((str(d), seg.name, first, at))
    results = run_reader(spawn, [t[0] for t in trials])
    assert len(results) == len(trials)
    for (trial_dir, seg_name, first, at), res in zip(trials, results, strict=True):
        recs = res["records"]
        assert [o for o, _ in recs] == list(range(len(recs))), trial_dir
        for o, v in recs:
            assert v == value_of(o), (trial_dir, o, v)  # never a wrong value
        assert len(recs) == first, (trial_dir, "records before the corrupt batch", len(recs), first)
        assert res["error"] is not None, (
            f"{trial_dir}: corruption at byte {at} of {seg_name} not detected"
        )
        name, msg = res["error"]
        assert name == "CorruptRecordError", res["error"]
        assert seg_name in msg and "byte" in msg, msg
        # asking again does not skip past the damage or return wrong data
        kind, again = res["again"]
        if kind == "records":
            for o, v in again:
                assert v == value_of(o)
        else:
            assert kind == "CorruptRecordError", res["again"]


def test_corruption_error_names_file_and_position_in_process(tmp_path: Path) -> None:
    base = tmp_path / "d"
    logs = build_corruption_base(base)
    seg = logs[1]
    bl = batches_of(seg)
    pos, size, first, _last = bl[2]
    raw = bytearray(seg.read_bytes())
    raw[pos + size - 3] ^= 0xFF  # inside the last record of the batch
    seg.write_bytes(bytes(raw))
    got = []
    with ottla.Consumer(base, auto_offset_reset="earliest") as c:
        c.assign([("cor", 0)])
        with pytest.raises(ottla.CorruptRecordError) as ei:
            for _ in range(200):
                for recs in c.poll(timeout_ms=20).values():
                    got.extend(recs)
    assert [r.offset for r in got] == list(range(first))
    assert all(r.value == value_of(r.offset).encode() for r in got)
    msg = str(ei.value)
    assert seg.name in msg and f"byte {pos}" in msg, msg
    # check_crcs=False trusts the bytes (documented): it must not crash either
    with ottla.Consumer(base, auto_offset_reset="earliest", check_crcs=False) as c:
        c.assign([("cor", 0)])
        try:
            for _ in range(100):
                c.poll(timeout_ms=10)
        except ottla.OttlaError:
            pass


def test_corrupt_base_offset_is_detected(tmp_path: Path) -> None:
    base = tmp_path / "d"
    logs = build_corruption_base(base)
    seg = logs[1]
    bl = batches_of(seg)
    pos, _size, first, _last = bl[2]
    raw = bytearray(seg.read_bytes())
    # baseOffset is the first 8 bytes of the batch: make it 1000 larger.
    old = int.from_bytes(raw[pos : pos + 8], "big")
    assert old == first
    raw[pos : pos + 8] = (first + 1000).to_bytes(8, "big")
    seg.write_bytes(bytes(raw))
    got = []
    try:
        with ottla.Consumer(base, auto_offset_reset="earliest") as c:
            c.assign([("cor", 0)])
            for _ in range(100):
                for recs in c.poll(timeout_ms=10).values():
                    got.extend(recs)
    except ottla.CorruptRecordError:
        pass
    for r in got:
        assert r.value == value_of(r.offset).encode(), (
            f"offset {r.offset} returned value {r.value!r}"
        )


ACTIVE_CHILD = """
import sys
import ottla
p = ottla.Producer(sys.argv[1], linger_ms=1)
i = 0
while True:
    futs = [p.send("act", ("rec-%06d-" % j).encode() + b"y" * (j % 23), partition=0)
            for j in range(i, i + 5)]
    p.flush()
    sys.stdout.write("".join("%d\\n" % f.get(10).offset for f in futs))
    sys.stdout.flush()
    i += 5
"""


def crash_active_writer(
    data_dir: Path, spawn: Spawn, segment_bytes: int = 1 << 30
) -> tuple[list[int], Path]:
    ottla.Admin(data_dir).create_topic("act", config={"segment.bytes": segment_bytes})
    gc.collect()
    child = spawn(ACTIVE_CHILD, data_dir)
    try:
        child.wait_line(lambda s: s.isdigit() and int(s) >= 1500, timeout=20)
        time.sleep(random.uniform(0.0, 0.2))
        child.sigkill()
    finally:
        child.kill()
    acked = [int(s) for s in child.lines() if s.isdigit()]
    assert acked == list(range(len(acked)))
    active = log_files(data_dir / "act-0")[-1]
    return acked, active


def check_act(data_dir: Path, allowed: int | Iterable[int]) -> None:
    """The log is a valid prefix: gap-free, right values, its length one of
    ``allowed``; then appending continues right after it."""
    vals = read_values(data_dir, "act")
    assert [o for o, _, _ in vals] == list(range(len(vals)))
    for o, _, v in vals:
        assert v == f"rec-{o:06d}-".encode() + b"y" * (o % 23)
    lengths = {allowed} if isinstance(allowed, int) else set(allowed)
    assert len(vals) in lengths, (len(vals), lengths)
    upto = len(vals)
    # appending continues right after the kept prefix, and the file is valid
    with ottla.Producer(data_dir) as p:
        mds = [p.send("act", b"after-%d" % i, partition=0) for i in range(5)]
        assert [f.get(10).offset for f in mds] == list(range(upto, upto + 5))
    gc.collect()
    vals = read_values(data_dir, "act")
    assert [o for o, _, _ in vals] == list(range(upto + 5))
    for f in log_files(data_dir / "act-0"):
        mr = MemoryRecords(f.read_bytes())
        while True:
            b = mr.next_batch()
            if b is None:
                break
            assert b.validate_crc()
        assert mr.valid_bytes() == f.stat().st_size


def test_torn_tail_of_active_segment_is_truncated(data_dir: Path, spawn: Spawn) -> None:
    _acked, active = crash_active_writer(data_dir, spawn)
    bl = batches_of(active)
    pos, size, first, _last = bl[-1]
    # Cut the last whole batch in half: a torn write.
    with open(active, "r+b") as f:
        f.truncate(pos + size // 2)
    check_act(data_dir, first)


def test_garbage_after_active_segment_is_cut(data_dir: Path, spawn: Spawn) -> None:
    acked, active = crash_active_writer(data_dir, spawn)
    bl = batches_of(active)
    _pos, _size, first, last = bl[-1]
    with open(active, "ab") as f:
        f.write(os.urandom(300))  # bytes of an append that never published
    # Every whole batch before the garbage survives: all of the last one if
    # its append had been published when the writer died, else none of it.
    # Every acknowledged record survives either way.
    assert last + 1 >= len(acked)  # every acknowledged record is in a whole batch
    allowed = {n for n in (first, last + 1) if n >= len(acked)}
    check_act(data_dir, allowed)


def test_corrupt_tail_with_lost_head_is_recovered_from_files(data_dir: Path, spawn: Spawn) -> None:
    _acked, _active = crash_active_writer(data_dir, spawn, segment_bytes=16384)
    logs = log_files(data_dir / "act-0")
    assert len(logs) >= 3
    # The newest segment holding a few batches (the active one may have
    # just been rolled and still be empty).
    seg = next(f for f in reversed(logs) if len(batches_of(f)) >= 3)
    bl = batches_of(seg)
    pos, size, first, _last = bl[-2]
    raw = bytearray(seg.read_bytes())
    raw[pos + size - 2] ^= 0x5A  # a record byte of the second-last batch
    seg.write_bytes(bytes(raw))
    (data_dir / "act-0" / "partition.head").unlink()  # forces a full scan
    check_act(data_dir, first)
    # segments past the truncation point are gone
    assert all(int(f.stem) <= first for f in log_files(data_dir / "act-0"))


# ---------------------------------------------------------------------------
# (5) disk full
# ---------------------------------------------------------------------------

DISK_FULL_CHILD = """
import resource, signal, sys
import ottla
path, limit = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
p = ottla.Producer(path, linger_ms=1)
p.partitions_for("full")
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
i = 0
last = -1
err = None
try:
    for _ in range(100000):
        futs = [p.send("full", ("rec-%06d-" % j).encode() + b"z" * 80, partition=0)
                for j in range(i, i + 7)]
        try:
            p.flush()
        finally:
            for f in futs:
                if f.succeeded():
                    last = f.get(0).offset
        for f in futs:
            last = f.get(10).offset
        i += 7
except ottla.StorageError as e:
    err = e
print("error", type(err).__name__, isinstance(err, ottla.DiskFullError), flush=True)
print("last", last, flush=True)
# the producer keeps failing cleanly (no crash, no partial records)
try:
    p.send("full", b"q" * 500, partition=0).get(10)
    print("second", "ok", flush=True)
except ottla.StorageError as e:
    print("second", type(e).__name__, flush=True)
p.close()
print("exit", flush=True)
"""


def test_disk_full(data_dir: Path, spawn: Spawn) -> None:
    ottla.Admin(data_dir).create_topic("full", config={"segment.index.bytes": 4096})
    gc.collect()
    child = spawn(DISK_FULL_CHILD, data_dir, 64 * 1024)
    rc = child.wait(25)
    lines = child.lines()
    assert rc == 0, (rc, lines[-5:], child.stderr[-3000:])
    assert "exit" in lines, lines
    err = next(ln for ln in lines if ln.startswith("error")).split()
    assert err[1] == "DiskFullError" and err[2] == "True", err
    last = int(next(ln for ln in lines if ln.startswith("last")).split()[1])
    assert last > 100
    vals = read_values(data_dir, "full")
    assert [o for o, _, _ in vals] == list(range(len(vals)))
    # The loop's records are a prefix of what it sent. The 500-byte record
    # sent once flush() had raised may still fit (when the loop's batches
    # were split, the room left varies): then it is the last record, and
    # the child saw it acknowledged.
    second = next(ln for ln in lines if ln.startswith("second")).split()
    if second[1] == "ok":
        assert vals[-1][2] == b"q" * 500
        vals = vals[:-1]
    else:
        assert second[1] == "DiskFullError", second
    assert len(vals) >= last + 1
    for o, _, v in vals:
        assert v == f"rec-{o:06d}-".encode() + b"z" * 80
    vals = read_values(data_dir, "full")
    seg = log_files(data_dir / "full-0")[-1]
    assert seg.stat().st_size <= 64 * 1024
    # without the limit, appending continues gap-free
    with ottla.Producer(data_dir) as p:
        mds = [p.send("full", b"more-%d" % i, partition=0) for i in range(100)]
        assert [f.get(10).offset for f in mds] == list(range(len(vals), len(vals) + 100))
    gc.collect()
    vals2 = read_values(data_dir, "full")
    assert [o for o, _, _ in vals2] == list(range(len(vals) + 100))


ROLL_FULL_CHILD = """
import resource, signal, sys
import ottla
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
p = ottla.Producer(sys.argv[1], linger_ms=1)
p.send("full", b"rec-000000-" + b"z" * 80, partition=0).get(10)  # opens the partition
# The next segment's index (preallocated to segment.index.bytes, 10 MiB by
# default) cannot be created under a 1 MiB file size limit.
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
for i in range(1, 300):
    try:
        md = p.send("full", ("rec-%06d-" % i).encode() + b"z" * 80, partition=0).get(10)
        print("ack", md.offset, i, flush=True)
    except ottla.OttlaError as e:
        print("err", i, type(e).__name__, flush=True)
p.close()
print("exit", flush=True)
"""


def test_disk_full_during_segment_roll(data_dir: Path, spawn: Spawn) -> None:
    ottla.Admin(data_dir).create_topic("full", config={"segment.bytes": 8192})
    gc.collect()
    child = spawn(ROLL_FULL_CHILD, data_dir)
    rc = child.wait(25)
    lines = child.lines()
    assert rc == 0, (rc, lines[-5:], child.stderr[-3000:])
    assert lines[-1] == "exit"
    acks = [tuple(map(int, ln.split()[1:])) for ln in lines if ln.startswith("ack")]
    errs = [ln.split() for ln in lines if ln.startswith("err")]
    assert acks and errs
    assert {e[2] for e in errs} == {"DiskFullError"}
    assert all(o == i for o, i in acks)
    vals = read_values(data_dir, "full")
    assert [o for o, _, _ in vals] == list(range(len(vals)))
    assert len(vals) == acks[-1][0] + 1  # failed sends left nothing behind
    for o, _, v in vals:
        assert v == f"rec-{o:06d}-".encode() + b"z" * 80
    with ottla.Producer(data_dir) as p:
        assert p.send("full", b"after", partition=0).get(10).offset == len(vals)
    gc.collect()
    assert read_values(data_dir, "full")[-1] == (len(vals), None, b"after")
