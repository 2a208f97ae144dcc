"""The active segment's preallocation (`fallocate(FALLOC_FL_KEEP_SIZE)` ahead
of the write, see `LogSegment::preallocate`): invisible to readers and
recovery, freed when a segment rolls, and exact after `kill -9` of a bulk
producer that was writing into preallocated space."""

from __future__ import annotations

import gc
import os
import random
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

import ottla
from helpers import Child, Spawn, log_files, read_values

MiB = 1 << 20

BULK_CHILD = """
import sys
import ottla
path, topic, mode, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = ottla.Producer(path, fsync=mode)
i = start
print("ready", flush=True)
while True:
    n = 3000
    values = [b"v%d-" % (i + k) + b"p" * (150 + (i + k) % 50) for k in range(n)]
    mds = p.send_many(topic, values, partition=0).get(10)
    print(mds[0].offset, mds[-1].offset, i, flush=True)
    i += n
"""


def acked_ranges(child: Child) -> list[tuple[int, int, int]]:
    """(first offset, last offset, first index) of every acknowledged call."""
    out: list[tuple[int, int, int]] = []
    for line in child.lines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            first, last, index = map(int, parts)
            out.append((first, last, index))
    return out


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def check_exact(data_dir: Path, topic: str, acked: Iterable[tuple[int, int, int]]) -> int:
    """Offsets gap-free from 0, every record where it was sent, every
    acknowledged record present, and the segment files end exactly where the
    last batch ends (no preallocated zeros read as records or counted)."""
    vals = read_values(data_dir, topic)
    assert [o for o, _, _ in vals] == list(range(len(vals)))
    for o, _, v in vals:
        assert v.startswith(b"v%d-" % o), (o, v[:20])
        assert len(v) == len(b"v%d-" % o) + 150 + o % 50
    for first, last, i in acked:
        assert first == i
        assert last < len(vals), f"acknowledged offset {last} lost (log ends at {len(vals)})"
    part = ottla.Admin(data_dir).describe_topic(topic).partitions[0]
    assert part.end_offset == len(vals)
    gc.collect()
    return len(vals)


@pytest.mark.parametrize("mode", ["never", "always"])
def test_kill_9_of_a_bulk_producer_writing_into_preallocated_space(
    data_dir: Path, spawn: Spawn, mode: str
) -> None:
    rng = random.Random(7 if mode == "never" else 11)
    ottla.Admin(data_dir).create_topic("pre")
    gc.collect()
    start = 0
    for _ in range(2):
        child = spawn(BULK_CHILD, data_dir, "pre", mode, start)
        try:
            # Past 1 MiB in the active segment, appends preallocate: wait for
            # ~3 MiB of acknowledged records, then kill at a random moment.
            child.wait_line(  # (called before the loop moves on)
                lambda s: s[:1].isdigit() and int(s.split()[1]) > start + 15000,  # noqa: B023
                timeout=30,
            )
            time.sleep(rng.uniform(0.0, 0.3))
            child.sigkill()
        finally:
            child.kill()
        acked = acked_ranges(child)
        assert acked, child.stderr
        end = check_exact(data_dir, "pre", acked)
        # Appending after the crash continues exactly at the end.
        with ottla.Producer(data_dir) as p:
            values = [b"v%d-" % (end + k) + b"p" * (150 + (end + k) % 50) for k in range(100)]
            mds = p.send_many("pre", values, partition=0).get(10)
        assert [m.offset for m in mds] == list(range(end, end + 100))
        start = check_exact(data_dir, "pre", [])


def test_preallocation_is_invisible_and_freed_on_roll(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("roll", 1, {"segment.bytes": 3 * MiB})
    value = b"x" * 1000
    part_dir = Path(data_dir) / "roll-0"
    with ottla.Producer(data_dir) as p:
        for _ in range(2):
            p.send_many("roll", [value] * 1000, partition=0).wait(10)
        # Past 1 MiB the active segment has blocks reserved ahead of its
        # end, up to where it will roll (3 MiB), while its size stays exact.
        (active,) = log_files(part_dir)
        size = os.stat(active).st_size
        assert 1 * MiB < size < 3 * MiB
        assert allocated(active) >= 3 * MiB
        for _ in range(8):
            p.send_many("roll", [value] * 1000, partition=0).wait(10)
        p.flush()
        logs = log_files(part_dir)
        assert len(logs) >= 3
        # Closed segments: exactly their batches, and no blocks reserved
        # past their end (the roll released them; 64 KiB of slack for the
        # filesystem's own rounding).
        for log in logs[:-1]:
            size = os.stat(log).st_size
            assert 2 * MiB < size <= 3 * MiB
            assert allocated(log) <= size + 64 * 1024, log
        # Every file ends exactly where its last batch ends: nothing reserved
        # past the end shows in a file's size.
        assert walk_batches(logs) == 10_000
        assert os.stat(logs[-1]).st_size <= 3 * MiB
    vals = read_values(data_dir, "roll")
    assert len(vals) == 10_000
    assert all(v == value for _, _, v in vals)


def walk_batches(logs: Iterable[Path]) -> int:
    """Step through every batch header of the files; returns the records
    counted. Fails if a file ends inside a batch or past its last one."""
    records = 0
    for log in logs:
        data = log.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            length = int.from_bytes(data[pos + 8 : pos + 12], "big")
            assert length > 49, f"{log}: no batch at byte {pos}"
            records += int.from_bytes(data[pos + 57 : pos + 61], "big")
            pos += 12 + length
        assert pos == len(data), f"{log} ends inside a batch or holds bytes past its last one"
    return records


def test_send_many_mixed_sizes_keys_and_partitions_round_trip(data_dir: Path) -> None:
    """The bulk encoder's fast paths (value-length template, offset deltas of
    one, two and three bytes: a 4 MiB batch of 1-byte values holds more than
    8192 records) and the general path (keys, bytearrays) in one log, read
    back exactly, then again through `send()` records in the same batches."""
    ottla.Admin(data_dir).create_topic("mix", 3)
    rng = random.Random(3)
    sizes = [0, 1, 63, 64, 100, 127, 128, 8191, 8192, 20000]
    expect: dict[int, list[tuple[bytes | None, bytes | None]]] = {0: [], 1: [], 2: []}
    with ottla.Producer(data_dir, batch_size=4 * MiB, linger_ms=1000) as p:
        tiny = [b"%c" % (i % 256) for i in range(20000)]
        p.send_many("mix", tiny, partition=0).wait(10)
        expect[0] += [(None, v) for v in tiny]
        for round_ in range(6):
            n = rng.randrange(1, 3000)
            values = [
                None if rng.random() < 0.05 else bytes([round_]) * rng.choice(sizes)
                for _ in range(n)
            ]
            part = round_ % 3
            if round_ % 2:
                keys = [b"k%d" % i for i in range(n)]
                p.send_many(
                    "mix",
                    [bytearray(v) if v is not None else None for v in values],
                    keys=keys,
                    partition=part,
                ).wait(10)
                expect[part] += list(zip(keys, values, strict=True))
            else:
                p.send_many("mix", values, partition=part).wait(10)
                expect[part] += [(None, v) for v in values]
            p.send("mix", b"one-%d" % round_, key=b"s", partition=part)
            expect[part].append((b"s", b"one-%d" % round_))
        p.flush()
    for part in range(3):
        got = [(k, v) for _, k, v in read_values(data_dir, "mix", part)]
        assert got == expect[part], f"partition {part}"
