"""Transactions in a compacted topic, through ``ottla serve`` with librdkafka
(confluent-kafka): the log cleaner removes aborted transactions' records,
compacts committed ones like any others, and removes markers once their
transaction has no record left and ``delete.retention.ms`` has passed
(KIP-534). read_committed and read_uncommitted consumers then both see only
the committed latest values, and the partition is smaller on disk."""

from __future__ import annotations

import struct
import time
import uuid
from pathlib import Path

import pytest

import ottla
from helpers import log_files, read_values

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck

TIMEOUT = 30.0
CONTROL = 0x20
ABORT = 0


def varint(b: bytes, at: int) -> tuple[int, int]:
    """A zigzag varint at ``at``: (value, next position)."""
    shift = raw = 0
    while True:
        byte = b[at]
        at += 1
        raw |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), at


def markers(part_dir: Path) -> list[int]:
    """The control type (0 ABORT, 1 COMMIT) of every marker on disk."""
    out: list[int] = []
    for f in log_files(part_dir):
        data = f.read_bytes()
        at = 0
        while at + 61 <= len(data):
            (length,) = struct.unpack_from(">i", data, at + 8)
            (attributes,) = struct.unpack_from(">h", data, at + 21)
            (count,) = struct.unpack_from(">i", data, at + 57)
            if attributes & CONTROL and count > 0:
                # The record: length, attributes, timestamp and offset
                # deltas, key length, key = version (int16), type (int16).
                p = at + 61
                _, p = varint(data, p)
                p += 1
                _, p = varint(data, p)
                _, p = varint(data, p)
                _, p = varint(data, p)
                out.append(struct.unpack_from(">h", data, p + 2)[0])
            at += 12 + length
    return out


def disk_bytes(part_dir: Path) -> int:
    return sum(f.stat().st_size for f in log_files(part_dir))


def latest(c: ck.Consumer, topic: str, quiet: float = 1.5) -> tuple[dict[bytes, bytes], set[bytes]]:
    """(key -> last value, every value) `c` hands out until nothing new came
    for `quiet` seconds."""
    c.subscribe([topic])
    view: dict[bytes, bytes] = {}
    values: set[bytes] = set()
    deadline = time.monotonic() + TIMEOUT
    last = time.monotonic()
    assigned = False
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            assigned = assigned or bool(c.assignment())
            if assigned and time.monotonic() - last > quiet:
                break
            continue
        err = m.error()
        if err is not None:
            if err.code() == ck.KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(err)
        k, v = m.key(), m.value()
        assert k is not None and v is not None
        view[k] = v
        values.add(v)
        last = time.monotonic()
    c.close()
    return view, values


def consumer(b: ottla.Broker, isolation: str) -> ck.Consumer:
    return ck.Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )


def test_aborted_records_and_their_markers_are_cleaned_away(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic(
        "ct",
        config={
            "cleanup.policy": "compact",
            "segment.bytes": 4096,
            "min.cleanable.dirty.ratio": 0.5,
            "delete.retention.ms": 200,
        },
    )
    p = ck.Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": "tx-compact",
            "linger.ms": 5,
        }
    )
    p.init_transactions(TIMEOUT)
    pad = b"x" * 150
    expected: dict[bytes, bytes] = {}
    aborted: set[bytes] = set()
    written = 0
    # 30 transactions over 10 keys, every third aborted, then 3 committed
    # ones that fill more than a segment (so the active segment, which is
    # never cleaned, holds no aborted record).
    for t in range(33):
        p.begin_transaction()
        n = 20 if t < 30 else 40
        sent: dict[bytes, bytes] = {}
        for i in range(n):
            k = b"k%d" % (i % 10)
            v = b"t%d-%d-" % (t, i) + pad
            p.produce("ct", v, key=k, partition=0)
            sent[k] = v
            written += len(k) + len(v)
        if t < 30 and t % 3 == 2:
            p.abort_transaction(TIMEOUT)
            aborted.update(sent.values())
        else:
            p.commit_transaction(TIMEOUT)
            expected.update(sent)
    p.flush(TIMEOUT)
    part = data_dir / "ct-0"
    before = disk_bytes(part)

    # Three passes: aborted records go, then their markers get a delete
    # horizon, then (past it) the markers go. The broker also cleans on
    # its rolls; all share one cleaner per partition.
    admin = ottla.Admin(data_dir)
    for _ in range(3):
        admin.compact("ct")
        time.sleep(0.3)
    admin.compact("ct")
    after = disk_bytes(part)
    assert after < before, (before, after)
    assert after < written / 3, (written, after)
    assert ABORT not in markers(part), markers(part)

    for isolation in ("read_committed", "read_uncommitted"):
        view, values = latest(consumer(broker, isolation), "ct")
        assert view == expected, isolation
        assert not values & aborted, isolation
        # The embedded door reads the same cleaned log the same way.
        records = read_values(data_dir, "ct", isolation_level=isolation)
        assert {k: v for _, k, v in records} == expected, isolation
        assert not {v for _, _, v in records} & aborted, isolation
