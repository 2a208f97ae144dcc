"""A read_committed embedded consumer's "end" is the last stable offset (issue 15).

Kafka's read_committed consumer asks ListOffsets with
``isolation_level=READ_COMMITTED``: "latest" is the LSO, the first offset of
the oldest open transaction. So ``end_offsets``, ``highwater``, lag,
``auto_offset_reset="latest"``, ``seek_to_end``, ``offsets_for_times`` and
the Arrow readers of ``ottla.Consumer(..., isolation_level="read_committed")``
stop at the LSO while another process holds a transaction open, and move
once it commits; librdkafka through ``ottla.Broker`` on the same directory
answers the same."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import ottla
import ottla.aio
from helpers import Child, Spawn
from ottla import TopicPartition

TIMEOUT = 30.0
TP = TopicPartition("t", 0)
# Record timestamps: recent (retention must keep the records), spaced so
# each lookup by time has one answer.
BASE = int(time.time() * 1000) - 60_000
PLAIN_TS = BASE  # offsets 0-2: BASE, BASE + 1, BASE + 2
OPEN_TS = BASE + 100  # offsets 3-4: BASE + 100, BASE + 101

# Holds a transaction open (offsets 3 and 4, after three plain records)
# until the file argv[2] exists, then commits (its marker is offset 5).
OPEN = """
import os, sys, time, ottla
d, go, ts = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = ottla.Producer(d, transactional_id="open")
p.init_transactions()
p.begin_transaction()
p.send("t", b"o1", partition=0, timestamp_ms=ts)
p.send("t", b"o2", partition=0, timestamp_ms=ts + 1)
p.flush()
print("open", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.01)
p.commit_transaction()
p.close()
print("committed", flush=True)
"""


def setup_open_transaction(d: Path, spawn: Spawn, go: Path) -> Child:
    """Three plain records (offsets 0-2, from PLAIN_TS), then a
    transaction left open by another process (offsets 3-4)."""
    ottla.Admin(d).create_topic("t", partitions=1)
    with ottla.Producer(d) as p:
        for i in range(3):
            p.send("t", f"a{i}".encode(), partition=0, timestamp_ms=PLAIN_TS + i)
    child = spawn(OPEN, d, go, OPEN_TS)
    assert child.wait_line(lambda s: s == "open", timeout=TIMEOUT) == "open"
    return child


def committed_consumer(d: Path, **extra: Any) -> ottla.Consumer:
    c = ottla.Consumer(d, isolation_level="read_committed", enable_auto_commit=False, **extra)
    c.assign([TP])
    return c


def poll_values(c: ottla.Consumer, n: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=100).values():
            got.extend(r.value or b"" for r in recs)
    return got


def ck_consumer(ck: Any, servers: str, isolation: str) -> Any:
    return ck.Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"g-{uuid.uuid4()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
        }
    )


def ck_answers(ck: Any, servers: str, isolation: str) -> tuple[int, int, int]:
    """(high watermark, offset for PLAIN_TS + 1, offset for OPEN_TS) as
    librdkafka's ListOffsets at `isolation` answers them (-1: none)."""
    c = ck_consumer(ck, servers, isolation)
    try:
        _, hi = c.get_watermark_offsets(ck.TopicPartition("t", 0), timeout=TIMEOUT)
        # One partition per request: librdkafka asks each partition once.
        found = [
            c.offsets_for_times([ck.TopicPartition("t", 0, ts)], timeout=TIMEOUT)[0]
            for ts in (PLAIN_TS + 1, OPEN_TS)
        ]
        return int(hi), int(found[0].offset), int(found[1].offset)
    finally:
        c.close()


def embedded_answers(c: ottla.Consumer) -> tuple[int, int, int]:
    """The same three answers from an embedded consumer."""
    hi = c.end_offsets([TP])[TP]
    plain = c.offsets_for_times({TP: PLAIN_TS + 1})[TP]
    opened = c.offsets_for_times({TP: OPEN_TS})[TP]
    return (
        hi,
        -1 if plain is None else plain.offset,
        -1 if opened is None else opened.offset,
    )


def test_read_committed_end_is_the_lso_and_both_doors_agree(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    ck = pytest.importorskip("confluent_kafka")
    go = tmp_path / "go"
    child = setup_open_transaction(data_dir, spawn, go)
    with ottla.Broker(data_dir) as b:
        rc = committed_consumer(data_dir, auto_offset_reset="earliest")
        ru = ottla.Consumer(data_dir, enable_auto_commit=False, auto_offset_reset="earliest")
        ru.assign([TP])
        latest = committed_consumer(data_dir, auto_offset_reset="latest")
        try:
            # The open transaction starts at 3: read_committed ends there.
            assert embedded_answers(rc) == (3, 1, -1)
            assert ck_answers(ck, b.bootstrap_servers, "read_committed") == (3, 1, -1)
            assert embedded_answers(ru) == (5, 1, 3)
            assert ck_answers(ck, b.bootstrap_servers, "read_uncommitted") == (5, 1, 3)
            assert rc.highwater(TP) == 3
            assert ru.highwater(TP) == 5
            # Lag counts to the LSO: a read_committed reader that read all
            # it may is caught up.
            assert poll_values(rc, 3) == [b"a0", b"a1", b"a2"]
            assert rc.end_offsets([TP])[TP] - rc.position(TP) == 0
            assert rc.poll(timeout_ms=200) == {}
            # "latest" starts at the LSO, so the transaction is read once
            # it commits; seek_to_end goes there too.
            assert latest.position(TP) == 3
            rc.seek_to_end()
            assert rc.position(TP) == 3
            ru.seek_to_end()
            assert ru.position(TP) == 5

            go.touch()
            assert child.wait_line(lambda s: s == "committed", timeout=TIMEOUT)
            assert child.wait(TIMEOUT) == 0

            # Committed: the end moves past the marker, for both doors.
            assert embedded_answers(rc) == (6, 1, 3)
            assert ck_answers(ck, b.bootstrap_servers, "read_committed") == (6, 1, 3)
            assert rc.highwater(TP) == 6
            assert poll_values(latest, 2) == [b"o1", b"o2"]
            assert latest.position(TP) == 6
            assert latest.end_offsets([TP])[TP] - latest.position(TP) == 0
            assert poll_values(rc, 2) == [b"o1", b"o2"]
        finally:
            rc.close()
            ru.close()
            latest.close()


def test_a_partition_not_assigned_answers_its_lso_too(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    setup_open_transaction(data_dir, spawn, go)
    with ottla.Consumer(data_dir, isolation_level="read_committed") as c:
        assert c.end_offsets([TP]) == {TP: 3}
        assert c.offsets_for_times({TP: OPEN_TS}) == {TP: None}
        assert c.highwater(TP) is None  # not assigned
    go.touch()


def test_aio_read_committed_end_is_the_lso(data_dir: Path, spawn: Spawn, tmp_path: Path) -> None:
    go = tmp_path / "go"
    child = setup_open_transaction(data_dir, spawn, go)

    async def main() -> None:
        c = ottla.aio.Consumer(
            data_dir,
            auto_offset_reset="latest",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        try:
            c.assign([TP])
            assert await c.end_offsets([TP]) == {TP: 3}
            assert c.highwater(TP) == 3
            assert await c.position(TP) == 3
            assert await c.getmany(timeout_ms=200) == {}
            go.touch()
            got: list[bytes] = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < 2 and time.monotonic() < deadline:
                for recs in (await c.getmany(timeout_ms=100)).values():
                    got.extend(r.value or b"" for r in recs)
            assert got == [b"o1", b"o2"]
            assert await c.end_offsets([TP]) == {TP: 6}
            await c.seek_to_end()
            assert await c.position(TP) == 6
        finally:
            await c.close()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert child.wait(TIMEOUT) == 0


def test_arrow_readers_of_a_read_committed_consumer_stop_at_the_lso(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    go = tmp_path / "go"
    setup_open_transaction(data_dir, spawn, go)
    with ottla.Consumer(
        data_dir, "t", isolation_level="read_committed", auto_offset_reset="earliest"
    ) as c:
        # A look (a private consumer): the same isolation as `c`.
        assert c.read_arrow().column("value").to_pylist() == [b"a0", b"a1", b"a2"]
        assert c.read_arrow(start="latest").num_rows == 0
        # The consumer's own read, from its position, to the LSO.
        assert c.read_arrow(start="position").column("value").to_pylist() == [
            b"a0",
            b"a1",
            b"a2",
        ]
        assert c.position(TP) == 3
    go.touch()
