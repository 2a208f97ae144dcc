"""Retention: by size (retention.bytes) and by time (retention.ms)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import ottla
from helpers import Spawn, log_files, read_values, wait_until

TP0 = ottla.TopicPartition("r", 0)


def fill(
    data_dir: Path,
    n: int,
    size: int = 100,
    topic: str = "r",
    timestamp: int | None = None,
    start: int = 0,
) -> None:
    with ottla.Producer(data_dir) as p:
        for i in range(start, start + n):
            p.send(topic, b"%06d" % i + b"x" * (size - 6), partition=0, timestamp=timestamp).get(10)


def test_retention_bytes_deletes_oldest_segments(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024})
    fill(data_dir, 200)
    part = data_dir / "r-0"
    n_before = len(log_files(part))
    assert n_before > 10
    d = admin.describe_topic("r").partitions[0]
    assert (d.start_offset, d.end_offset) == (0, 200)

    admin.alter_topic_config("r", {"retention.bytes": 3000})  # applied at once
    logs = log_files(part)
    assert len(logs) < n_before
    assert len(logs) <= 5
    d = admin.describe_topic("r").partitions[0]
    assert d.start_offset > 0 and d.end_offset == 200
    assert d.size_bytes <= 3000 + 1024 + 200
    assert int(logs[0].stem) == d.start_offset  # the oldest remaining segment starts the log
    # .index and .timeindex went with their .log
    for f in part.iterdir():
        if f.suffix in (".index", ".timeindex"):
            assert f.with_suffix(".log").exists(), f.name

    with ottla.Consumer(data_dir) as c:
        assert c.beginning_offsets([TP0]) == {TP0: d.start_offset}
        assert c.end_offsets([TP0]) == {TP0: 200}
    vals = read_values(data_dir, "r")
    assert [o for o, _, _ in vals] == list(range(d.start_offset, 200))
    assert all(v.startswith(b"%06d" % o) for o, _, v in vals)


def test_retention_bytes_applies_while_producing(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.bytes": 2048})
    fill(data_dir, 300)
    part = data_dir / "r-0"
    assert len(log_files(part)) <= 4
    d = admin.describe_topic("r").partitions[0]
    assert d.end_offset == 300 and d.start_offset > 200
    assert admin.enforce_retention("r") == 0  # nothing more to do


def test_consumer_below_log_start(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.bytes": 2048})
    fill(data_dir, 200)
    start = admin.describe_topic("r").partitions[0].start_offset
    assert start > 0

    with ottla.Consumer(data_dir, auto_offset_reset="none") as c:
        c.assign([TP0])
        c.seek(TP0, 0)
        with pytest.raises(ottla.OffsetOutOfRangeError) as ei:
            c.poll(timeout_ms=200)
        assert ottla.OffsetOutOfRange is ottla.OffsetOutOfRangeError
        assert "out of range" in str(ei.value)
        c.seek(TP0, start)
        recs = c.poll(timeout_ms=1000)[TP0]
        assert recs[0].offset == start

    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([TP0])
        c.seek(TP0, 3)
        recs = c.poll(timeout_ms=1000)[TP0]
        assert recs[0].offset == start
        assert recs[0].value.startswith(b"%06d" % start)

    with ottla.Consumer(data_dir, auto_offset_reset="latest") as c:
        c.assign([TP0])
        c.seek(TP0, 3)
        assert c.poll(timeout_ms=200) == {}
        assert c.position(TP0) == 200


def test_committed_offset_below_log_start_is_reset(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024})
    fill(data_dir, 50)
    with ottla.Consumer(data_dir, "r", group_id="slow", enable_auto_commit=False) as c:
        c.commit({TP0: 5})
    admin.alter_topic_config("r", {"retention.bytes": 1024})
    fill(data_dir, 100, start=50)
    start = admin.describe_topic("r").partitions[0].start_offset
    assert start > 5
    with ottla.Consumer(data_dir, "r", group_id="slow", auto_offset_reset="earliest") as c:
        recs = c.poll(timeout_ms=1000)[TP0]
        assert recs[0].offset == start


def test_consumer_reading_while_retention_deletes(data_dir: Path) -> None:
    """A consumer that fell behind while segments were deleted under it skips
    to the new start (earliest) and never sees a wrong record."""
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024})
    fill(data_dir, 100)
    with ottla.Consumer(data_dir, "r", auto_offset_reset="earliest") as c:
        first = c.poll(timeout_ms=1000, max_records=5)[TP0]
        assert [r.offset for r in first] == [0, 1, 2, 3, 4]
        admin.alter_topic_config("r", {"retention.bytes": 1024})
        start = admin.describe_topic("r").partitions[0].start_offset
        got: list[ottla.Record] = []
        deadline = time.monotonic() + 10
        while (not got or got[-1].offset < 99) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=100).values():
                got.extend(recs)
        offsets = [r.offset for r in got]
        for r in got:
            assert r.value.startswith(b"%06d" % r.offset)
        # Records already fetched before the deletion may still be handed
        # out (as in Kafka); then the consumer continues at the new start.
        low = [o for o in offsets if o < start]
        assert low == list(range(5, 5 + len(low)))
        assert [o for o in offsets if o >= start] == list(range(start, 100))


def test_retention_ms_enforce_retention(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 2048})
    old = int(time.time() * 1000) - 3_600_000
    fill(data_dir, 60, timestamp=old)
    assert admin.describe_topic("r").partitions[0].segments > 1
    assert admin.describe_topic("r").partitions[0].start_offset == 0
    # alter_topic_config applies the new retention at once ...
    admin.alter_topic_config("r", {"retention.ms": 1000})
    # ... and an explicit pass finds nothing left to do.
    admin.enforce_retention("r")
    d = admin.describe_topic("r").partitions[0]
    assert d.start_offset == d.end_offset == 60
    assert read_values(data_dir, "r") == []
    # appending continues at the old end
    with ottla.Producer(data_dir) as p:
        assert p.send("r", b"fresh", partition=0).get(10).offset == 60
    assert read_values(data_dir, "r") == [(60, None, b"fresh")]


def test_retention_ms_explicit_enforce_retention_call(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 2048, "retention.ms": 1000})
    now = int(time.time() * 1000)
    # Fresh records: nothing expires yet.
    fill(data_dir, 40, timestamp=now)
    n_segments = admin.describe_topic("r").partitions[0].segments
    assert n_segments > 1
    assert admin.enforce_retention("r") == 0
    time.sleep(1.3)  # now they are older than retention.ms
    deleted = admin.enforce_retention("r")
    assert deleted >= n_segments - 1
    d = admin.describe_topic("r").partitions[0]
    assert d.start_offset == d.end_offset == 40


def test_retention_ms_on_segment_roll(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.ms": 1000})
    old = int(time.time() * 1000) - 3_600_000
    fill(data_dir, 40, timestamp=old)
    part = data_dir / "r-0"
    d = admin.describe_topic("r").partitions[0]
    # Each roll applied retention: every closed (expired) segment is gone,
    # only the active segment with the newest old records is left.
    assert d.end_offset == 40
    assert d.segments == 1 and len(log_files(part)) == 1
    assert 0 < d.start_offset < 40
    assert int(log_files(part)[0].stem) == d.start_offset
    # The expired active segment goes on an explicit pass.
    assert admin.enforce_retention("r") >= 1
    d = admin.describe_topic("r").partitions[0]
    assert d.start_offset == d.end_offset == 40
    fill(data_dir, 5, start=40)  # current timestamps: kept
    assert admin.enforce_retention("r") == 0
    vals = read_values(data_dir, "r")
    assert [o for o, _, _ in vals] == list(range(40, 45))
    for o, _, v in vals:
        assert v.startswith(b"%06d" % o)


def test_retention_keeps_recent_records(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.ms": 60_000})
    fill(data_dir, 100)
    assert admin.enforce_retention("r") == 0
    d = admin.describe_topic("r").partitions[0]
    assert (d.start_offset, d.end_offset) == (0, 100)


def test_unlimited_retention(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.ms": -1})
    fill(data_dir, 50, timestamp=1000)  # 1970: would expire under any finite retention
    assert admin.enforce_retention("r") == 0
    assert admin.describe_topic("r").partitions[0].start_offset == 0


def test_retention_in_another_process_is_seen(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024})
    fill(data_dir, 100)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([TP0])
        assert c.beginning_offsets([TP0]) == {TP0: 0}
        child = spawn(
            """
            import sys, ottla
            ottla.Admin(sys.argv[1]).alter_topic_config("r", {"retention.bytes": 1024})
            print("done")
            """,
            data_dir,
        )
        assert child.wait(20) == 0, child.stderr
        start = c.beginning_offsets([TP0])[TP0]
        assert start > 0
        recs = c.poll(timeout_ms=1000)[TP0]
        assert recs[0].offset == start
        for r in recs:
            assert r.value.startswith(b"%06d" % r.offset)


def test_periodic_retention_check_in_an_idle_producer(data_dir: Path) -> None:
    """Expired closed segments go while the producer stays open but idle:
    no roll, no open, no config change, no explicit call."""
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.ms": 1000})
    part = data_dir / "r-0"
    with ottla.Producer(data_dir, retention_check_interval_ms=100) as p:
        deadline = time.monotonic() + 0.5  # fresh records: none expire while writing
        i = 0
        while time.monotonic() < deadline or len(log_files(part)) < 4:
            p.send("r", b"%06d" % i + b"x" * 94, partition=0).get(10)
            i += 1
        n_before = len(log_files(part))
        assert int(log_files(part)[0].stem) == 0
        # Idle from here on: only the periodic check can delete.
        assert wait_until(lambda: len(log_files(part)) < n_before, timeout=10), (
            "expired segments were never deleted"
        )
        assert int(log_files(part)[0].stem) > 0
    d = admin.describe_topic("r").partitions[0]
    assert d.start_offset > 0 and d.end_offset == i


def test_retention_check_interval_must_be_positive(data_dir: Path) -> None:
    with pytest.raises(ottla.InvalidConfigError):
        ottla.Producer(data_dir, retention_check_interval_ms=0)


@pytest.mark.skipif(not hasattr(ottla, "Broker"), reason="built without the broker")
def test_periodic_retention_check_in_the_broker(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)  # keeps the partition open in this process
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.ms": 1000})
    fill(data_dir, 40)
    part = data_dir / "r-0"
    n_before = len(log_files(part))
    assert n_before > 1
    time.sleep(1.2)  # expired now, and nothing deletes them on its own
    assert len(log_files(part)) == n_before
    with ottla.Broker(data_dir, retention_check_interval_ms=100):
        assert wait_until(lambda: int(log_files(part)[0].stem) > 0, timeout=10)
    assert admin.describe_topic("r").partitions[0].start_offset > 0
