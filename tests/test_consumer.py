"""ottla.Consumer: iteration, poll, assignment, seeking, commits, offset
reset policies, group membership, deserializers and waking on new data."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import Spawn, wait_until
from ottla import TopicPartition as TP


def produce(
    path: Path,
    topic: str,
    n: int,
    partition: int = 0,
    prefix: str = "v",
    start: int = 0,
    timestamp: int | None = None,
) -> list[ottla.RecordMetadata]:
    with ottla.Producer(path) as p:
        bf = p.send_many(
            topic,
            [f"{prefix}{i}".encode() for i in range(start, start + n)],
            partition=partition,
            timestamp=timestamp,
        )
        return bf.get(10)


def drain(c: ottla.Consumer, want: int, timeout: float = 10.0) -> list[ottla.Record]:
    """Poll until ``want`` records arrived (or time runs out)."""
    out: list[ottla.Record] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=100).values():
            out.extend(recs)
    return out


def test_iteration_with_consumer_timeout(data_dir: Path) -> None:
    produce(data_dir, "t", 10)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=300) as c:
        t0 = time.monotonic()
        recs = list(c)
        elapsed = time.monotonic() - t0
    assert [r.value for r in recs] == [b"v%d" % i for i in range(10)]
    assert [r.offset for r in recs] == list(range(10))
    assert 0.25 <= elapsed < 5, elapsed


def test_iteration_stops_immediately_with_zero_timeout(data_dir: Path) -> None:
    produce(data_dir, "t", 3)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        assert len(list(c)) == 3
        t0 = time.monotonic()
        assert list(c) == []
        assert time.monotonic() - t0 < 1


def test_poll_returns_dict_of_topic_partition_to_records(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=3)
    for part in range(3):
        produce(data_dir, "t", 5, partition=part, prefix=f"p{part}-")
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        got: dict[TP, list[ottla.Record]] = {}
        deadline = time.monotonic() + 10
        while sum(len(v) for v in got.values()) < 15 and time.monotonic() < deadline:
            res = c.poll(timeout_ms=200)
            assert isinstance(res, dict)
            for tp, recs in res.items():
                assert isinstance(tp, ottla.TopicPartition)
                assert isinstance(recs, list)
                assert all(isinstance(r, ottla.Record) for r in recs)
                assert all(r.topic_partition == tp for r in recs)
                got.setdefault(tp, []).extend(recs)
        assert set(got) == {TP("t", 0), TP("t", 1), TP("t", 2)}
        for part in range(3):
            assert [r.value for r in got[TP("t", part)]] == [
                f"p{part}-{i}".encode() for i in range(5)
            ]
        assert c.poll(timeout_ms=50) == {}


def test_poll_max_records_and_timeout(data_dir: Path) -> None:
    produce(data_dir, "t", 20)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", max_poll_records=7) as c:
        first = c.poll(timeout_ms=1000)
        assert sum(len(v) for v in first.values()) == 7
        second = c.poll(timeout_ms=1000, max_records=3)
        assert [r.offset for r in second[TP("t", 0)]] == [7, 8, 9]
        rest = drain(c, 10)
        assert [r.offset for r in rest] == list(range(10, 20))
        t0 = time.monotonic()
        assert c.poll(timeout_ms=300) == {}
        assert 0.25 <= time.monotonic() - t0 < 3
    with pytest.raises(ValueError):
        ottla.Consumer(data_dir, "t", max_poll_records=0)


def test_assign_and_assignment(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=3)
    produce(data_dir, "t", 4, partition=1)
    produce(data_dir, "t", 4, partition=2, prefix="two-")
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        assert c.assignment() == set()
        c.assign([TP("t", 1)])
        assert c.assignment() == {TP("t", 1)}
        recs = drain(c, 4)
        assert [(r.partition, r.value) for r in recs] == [(1, b"v%d" % i) for i in range(4)]
        c.assign([("t", 2), TP("t", 0)])  # tuples are accepted
        assert c.assignment() == {TP("t", 2), TP("t", 0)}
        recs = drain(c, 4)
        assert [r.value for r in recs] == [b"two-%d" % i for i in range(4)]
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            c.assign([TP("t", 3)])
        with pytest.raises(TypeError):
            c.assign(["t"])  # type: ignore[list-item]  # what the test checks
        with pytest.raises(ottla.IllegalStateError):
            c.position(TP("t", 1))  # no longer assigned


def test_subscribe_and_subscription(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("a", partitions=2)
    admin.create_topic("b")
    produce(data_dir, "a", 3, partition=1)
    produce(data_dir, "b", 2)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        assert c.subscription() == set()
        c.subscribe(["a", "b"])
        assert c.subscription() == {"a", "b"}
        assert c.assignment() == {TP("a", 0), TP("a", 1), TP("b", 0)}
        recs = drain(c, 5)
        assert sorted((r.topic, r.value) for r in recs) == sorted(
            [("a", b"v0"), ("a", b"v1"), ("a", b"v2"), ("b", b"v0"), ("b", b"v1")]
        )
        # partitions added later are picked up
        admin.create_partitions("a", 3)
        produce(data_dir, "a", 2, partition=2, prefix="new-")
        recs = drain(c, 2)
        assert [(r.partition, r.value) for r in recs] == [(2, b"new-0"), (2, b"new-1")]
        assert TP("a", 2) in c.assignment()
        c.unsubscribe()
        assert c.subscription() == set() and c.assignment() == set()
        with pytest.raises(ValueError):
            c.subscribe([])
        c.subscribe(pattern="a.*")  # a regex over the whole name: not "b"
        assert c.subscription() == {"a"}
        assert c.assignment() == {TP("a", 0), TP("a", 1), TP("a", 2)}
        with pytest.raises(ValueError):
            c.subscribe(["a"], pattern="b")
        with pytest.raises(ottla.InvalidTopicError):
            c.subscribe(["bad/name"])


def test_topics_and_partitions_for_topic(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("x", partitions=4)
    with ottla.Consumer(data_dir) as c:
        assert "x" in c.topics()
        assert not any(t.startswith("__") for t in c.topics())
        assert c.partitions_for_topic("x") == {0, 1, 2, 3}
        assert c.partitions_for_topic("missing") is None


def test_seek_and_position(data_dir: Path) -> None:
    produce(data_dir, "t", 10)
    tp = TP("t", 0)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([tp])
        assert c.position(tp) == 0
        c.seek(tp, 6)
        assert c.position(tp) == 6
        assert [r.offset for r in drain(c, 4)] == [6, 7, 8, 9]
        assert c.position(tp) == 10
        c.seek(("t", 0), 3)
        assert [r.value for r in drain(c, 7)][:1] == [b"v3"]
        c.seek_to_beginning(tp)
        assert c.position(tp) == 0
        assert drain(c, 1)[0].offset == 0
        c.seek_to_end(tp)
        assert c.position(tp) == 10
        assert c.poll(timeout_ms=50) == {}
        c.seek_to_beginning()  # no args: every assigned partition
        assert c.position(tp) == 0
        c.seek_to_end()
        assert c.position(tp) == 10
        with pytest.raises(ValueError):
            c.seek(tp, -1)
        with pytest.raises(ottla.IllegalStateError):
            c.seek(TP("other", 0), 0)
        # past the end: out of range -> reset (earliest)
        c.seek(tp, 1000)
        assert drain(c, 1)[0].offset == 0


def test_commit_and_committed_persist_across_consumers(data_dir: Path) -> None:
    produce(data_dir, "t", 10)
    tp = TP("t", 0)
    c = ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        assert c.group_id == "g"
        assert c.committed(tp) is None
        recs: list[ottla.Record] = []
        while len(recs) < 4:
            recs.extend(c.poll(timeout_ms=500, max_records=4 - len(recs)).get(tp, []))
        assert [r.offset for r in recs] == [0, 1, 2, 3]
        c.commit()
        assert c.committed(tp) == 4
    finally:
        c.close()
    # A fresh consumer of the group resumes at the committed offset.
    with ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
    ) as c2:
        assert c2.committed(tp) == 4
        assert c2.position(tp) == 4
        assert [r.offset for r in drain(c2, 6)] == [4, 5, 6, 7, 8, 9]
    admin = ottla.Admin(data_dir)
    assert "g" in admin.list_groups()
    assert admin.group_offsets("g") == {("t", 0): {"committed": 4, "end": 10, "lag": 6}}


def test_commit_in_another_process_is_seen(data_dir: Path, spawn: Spawn) -> None:
    produce(data_dir, "t", 10)
    child = spawn(
        """
        import sys, ottla
        c = ottla.Consumer(sys.argv[1], "t", group_id="g2", enable_auto_commit=False)
        c.commit({ottla.TopicPartition("t", 0): 7})
        c.close()
        print("done")
        """,
        data_dir,
    )
    assert child.wait(20) == 0, child.stderr
    with ottla.Consumer(data_dir, "t", group_id="g2") as c:
        assert c.committed(TP("t", 0)) == 7
        assert c.position(TP("t", 0)) == 7


def test_commit_explicit_offsets(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    produce(data_dir, "t", 10, partition=0)
    produce(data_dir, "t", 10, partition=1)
    with ottla.Consumer(data_dir, "t", group_id="g", enable_auto_commit=False) as c:
        c.commit({TP("t", 0): 3})
        assert c.committed(TP("t", 0)) == 3
        assert c.committed(("t", 1)) is None
        c.commit({TP("t", 1): ottla.OffsetAndMetadata(5, "checkpoint-7")})
        assert c.committed(TP("t", 1)) == 5
        c.commit({("t", 0): ottla.OffsetAndMetadata(6)})
        assert c.committed(TP("t", 0)) == 6
        with pytest.raises(ValueError):
            c.commit({TP("t", 0): -1})
        with pytest.raises(TypeError):
            c.commit({TP("t", 0): "five"})
        with pytest.raises(TypeError):
            c.commit({"t": 1})  # type: ignore[dict-item]  # what the test checks
    with ottla.Consumer(data_dir, "t", group_id="g", auto_offset_reset="earliest") as c:
        assert c.position(TP("t", 0)) == 6
        assert c.position(TP("t", 1)) == 5


def test_commit_without_group_raises(data_dir: Path) -> None:
    produce(data_dir, "t", 1)
    with ottla.Consumer(data_dir, "t") as c:
        assert c.group_id is None
        assert c.committed(TP("t", 0)) is None
        with pytest.raises(ottla.IllegalStateError):
            c.commit()


def test_auto_commit_on_close(data_dir: Path) -> None:
    produce(data_dir, "t", 10)
    tp = TP("t", 0)
    c = ottla.Consumer(data_dir, "t", group_id="auto", auto_offset_reset="earliest")
    got: list[ottla.Record] = []
    while len(got) < 5:
        got.extend(c.poll(timeout_ms=500, max_records=5 - len(got)).get(tp, []))
    c.close()
    assert c.closed
    with pytest.raises(ottla.ClosedError):
        c.poll()
    c.close()  # idempotent
    with ottla.Consumer(data_dir, "t", group_id="auto", auto_offset_reset="earliest") as c2:
        assert c2.committed(tp) == 5
        assert [r.offset for r in drain(c2, 5)] == [5, 6, 7, 8, 9]
    # the with-block closed c2 and committed 10
    with ottla.Consumer(data_dir, "t", group_id="auto") as c3:
        assert c3.committed(tp) == 10


def test_close_without_autocommit(data_dir: Path) -> None:
    produce(data_dir, "t", 5)
    tp = TP("t", 0)
    c = ottla.Consumer(data_dir, "t", group_id="g", auto_offset_reset="earliest")
    assert len(drain(c, 5)) == 5
    c.close(autocommit=False)
    c = ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
    )
    assert c.committed(tp) is None
    assert len(drain(c, 5)) == 5
    c.close()  # auto commit disabled: still nothing
    with ottla.Consumer(data_dir, "t", group_id="g") as c:
        assert c.committed(tp) is None


def test_auto_commit_interval(data_dir: Path) -> None:
    produce(data_dir, "t", 5)
    tp = TP("t", 0)
    with ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", auto_commit_interval_ms=100
    ) as c:
        assert len(drain(c, 5)) == 5
        time.sleep(0.15)
        c.poll(timeout_ms=0)  # auto commit happens inside poll
        assert c.committed(tp) == 5


def test_offsets_for_times(data_dir: Path) -> None:
    # retention.ms=-1: these 1970 timestamps would be past any finite retention
    ottla.Admin(data_dir).create_topic("t", config={"retention.ms": -1})
    with ottla.Producer(data_dir) as p:
        for i, ts in enumerate([1000, 2000, 3000, 3000, 5000]):
            p.send("t", b"%d" % i, timestamp=ts)
        p.flush()
    tp = TP("t", 0)
    with ottla.Consumer(data_dir) as c:

        def offset_for_time(key: TP | tuple[str, int], ts: int) -> ottla.OffsetAndTimestamp:
            r = c.offsets_for_times({key: ts})[tp]
            assert r is not None
            return r

        res = c.offsets_for_times({tp: 1500})
        assert set(res) == {tp}
        assert (offset_for_time(tp, 1500).offset, offset_for_time(tp, 1500).timestamp) == (1, 2000)
        assert offset_for_time(tp, 0).offset == 0
        assert offset_for_time(tp, 1000).offset == 0
        assert offset_for_time(("t", 0), 3000).offset == 2
        r = c.offsets_for_times({tp: 4000})[tp]
        assert isinstance(r, ottla.OffsetAndTimestamp)
        assert (r.offset, r.timestamp) == (4, 5000)
        assert c.offsets_for_times({tp: 5001})[tp] is None
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            c.offsets_for_times({TP("nope", 0): 0})


@pytest.mark.directory_only("counts the directory's segments, which a cluster does not report")
def test_offsets_for_times_across_segments(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic(
        "t", config={"segment.bytes": 300, "index.interval.bytes": 1}
    )
    base = int(time.time() * 1000) - 60_000  # recent: inside the 7-day retention
    with ottla.Producer(data_dir) as p:
        for i in range(200):
            p.send("t", b"x" * 20, timestamp=base + i * 10).get(10)
    tp = TP("t", 0)
    assert ottla.Admin(data_dir).describe_topic("t").partitions[0].segments > 5
    with ottla.Consumer(data_dir) as c:
        for i in (0, 1, 57, 123, 199):
            r = c.offsets_for_times({tp: base + i * 10})[tp]
            assert r is not None and (r.offset, r.timestamp) == (i, base + i * 10)
            r = c.offsets_for_times({tp: base + i * 10 - 5})[tp]
            assert r is not None and r.offset == i
        assert c.offsets_for_times({tp: base + 2000})[tp] is None


def test_old_timestamps_fall_to_default_retention(data_dir: Path) -> None:
    """Records stamped long ago (1970) are past the default 7-day retention
    and go once their segment closes, as in Kafka."""
    ottla.Admin(data_dir).create_topic("t", config={"segment.bytes": 300})
    with ottla.Producer(data_dir) as p:
        for i in range(50):
            p.send("t", b"x" * 20, timestamp=10_000 + i).get(10)
    d = ottla.Admin(data_dir).describe_topic("t").partitions[0]
    assert d.end_offset == 50
    assert d.start_offset > 0


def test_beginning_and_end_offsets(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    produce(data_dir, "t", 7, partition=1)
    with ottla.Consumer(data_dir) as c:
        tps = [TP("t", 0), TP("t", 1)]
        assert c.beginning_offsets(tps) == {TP("t", 0): 0, TP("t", 1): 0}
        assert c.end_offsets(tps) == {TP("t", 0): 0, TP("t", 1): 7}
        assert c.end_offsets([("t", 1)]) == {TP("t", 1): 7}
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            c.end_offsets([TP("t", 2)])


def test_pause_and_resume(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    produce(data_dir, "t", 3, partition=0, prefix="a")
    produce(data_dir, "t", 3, partition=1, prefix="b")
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        c.pause(TP("t", 0))
        assert c.paused() == {TP("t", 0)}
        recs = drain(c, 3)
        assert {r.partition for r in recs} == {1}
        assert c.poll(timeout_ms=100) == {}
        c.resume(TP("t", 0))
        assert c.paused() == set()
        assert [r.value for r in drain(c, 3)] == [b"a0", b"a1", b"a2"]
        with pytest.raises(ottla.IllegalStateError):
            c.pause(TP("t", 9))


def test_paused_partition_does_not_wake_iteration(data_dir: Path) -> None:
    produce(data_dir, "t", 3)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=200) as c:
        c.pause(TP("t", 0))
        t0 = time.monotonic()
        assert list(c) == []
        assert time.monotonic() - t0 < 3


def test_auto_offset_reset_earliest_latest(data_dir: Path) -> None:
    produce(data_dir, "t", 5)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        assert c.position(TP("t", 0)) == 0
        assert len(drain(c, 5)) == 5
    with ottla.Consumer(data_dir, "t") as c:  # default: latest
        assert c.position(TP("t", 0)) == 5
        assert c.poll(timeout_ms=50) == {}
        produce(data_dir, "t", 2, start=5)
        assert [r.value for r in drain(c, 2)] == [b"v5", b"v6"]
    for alias in ("smallest", "beginning"):
        with ottla.Consumer(data_dir, "t", auto_offset_reset=alias) as c:
            assert c.position(TP("t", 0)) == 0
    with pytest.raises(ValueError):
        ottla.Consumer(data_dir, "t", auto_offset_reset="sometimes")  # type: ignore[call-overload]


def test_auto_offset_reset_none(data_dir: Path) -> None:
    produce(data_dir, "t", 5)
    with ottla.Consumer(data_dir, "t", group_id="g", auto_offset_reset="none") as c:
        with pytest.raises(ottla.NoOffsetForPartitionError):
            c.poll(timeout_ms=100)
        with pytest.raises(ottla.NoOffsetForPartitionError):
            c.position(TP("t", 0))
        c.commit({TP("t", 0): 2})
    with ottla.Consumer(data_dir, "t", group_id="g", auto_offset_reset="none") as c:
        assert [r.value for r in drain(c, 3)] == [b"v2", b"v3", b"v4"]
    with ottla.Consumer(data_dir, "t", auto_offset_reset="none") as c:  # no group at all
        with pytest.raises(ottla.NoOffsetForPartitionError):
            next(iter(c))
        c.seek(TP("t", 0), 1)  # an explicit position needs no reset
        assert drain(c, 4)[0].offset == 1


@pytest.mark.directory_only(
    "which of two new members keeps the one partition: the directory form joins in the constructor, a cluster's consumer when it polls (as Kafka's), and the coordinator chooses"
)
def test_second_group_member_joins(data_dir: Path) -> None:
    produce(data_dir, "t", 3)
    first = ottla.Consumer(data_dir, "t", group_id="solo", auto_offset_reset="earliest")
    try:
        # One partition, two members: the first keeps it (sticky), the
        # second is a member with nothing assigned.
        second = ottla.Consumer(data_dir, "t", group_id="solo")
        assert first.assignment() == {TP("t", 0)}
        second.poll(timeout_ms=50)
        assert second.assignment() == set()
        assert second.member_id is not None and second.member_id != first.member_id
        # a different group is independent
        with ottla.Consumer(data_dir, "t", group_id="other") as other:
            assert other.assignment() == {TP("t", 0)}
    finally:
        first.close()
    # the first member left: the second takes the partition on its next poll
    assert wait_until(lambda: bool(second.poll(timeout_ms=50)) or bool(second.assignment()))
    assert second.assignment() == {TP("t", 0)}
    second.close()


@pytest.mark.directory_only(
    "a group without a server (members in other processes on the directory); a cluster's groups are its coordinator's"
)
def test_dead_member_in_another_process_hands_over(data_dir: Path, spawn: Spawn) -> None:
    produce(data_dir, "t", 1)
    child = spawn(
        """
        import sys, time, ottla
        c = ottla.Consumer(sys.argv[1], "t", group_id="xproc")
        print("joined", sorted(tp.partition for tp in c.assignment()), flush=True)
        time.sleep(60)
        """,
        data_dir,
    )
    child.wait_line(lambda s: s == "joined [0]", timeout=15)
    with ottla.Consumer(data_dir, "t", group_id="xproc") as c:
        c.poll(timeout_ms=50)
        assert c.assignment() == set()  # the live child owns the only partition
        child.sigkill()  # its locks die with it; the group reassigns
        assert wait_until(lambda: (c.poll(timeout_ms=50), c.assignment())[1] == {TP("t", 0)})


@pytest.mark.directory_only(
    "the directory form's conflict with a broker coordinating the same group"
)
def test_group_coordinated_by_a_broker_is_refused(data_dir: Path) -> None:
    import fcntl
    import struct

    produce(data_dir, "t", 1)
    door = data_dir / ".ottla" / "groups" / "viabroker.door"
    with open(door, "a+b") as f:
        # What the broker does: byte 0 of the door, exclusive OFD lock.
        fcntl.fcntl(
            f.fileno(), fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 1, 0)
        )
        with pytest.raises(ottla.GroupMemberConflictError, match="coordinated by a broker"):
            ottla.Consumer(data_dir, "t", group_id="viabroker")
    with ottla.Consumer(data_dir, "t", group_id="viabroker") as c:  # the broker let go
        assert c.assignment() == {TP("t", 0)}


def test_deserializers(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("t", b'{"a": 1}', key=b"k1")
        p.send("t", None, key=None)
        p.send("t", b"[2]", key=b"k3")
        p.flush()
    with ottla.Consumer(
        data_dir,
        "t",
        auto_offset_reset="earliest",
        key_deserializer=lambda b: b.decode(),
        value_deserializer=json.loads,
    ) as c:
        recs = drain(c, 3)
    assert [(r.key, r.value) for r in recs] == [("k1", {"a": 1}), (None, None), ("k3", [2])]


def test_deserializer_error_propagates(data_dir: Path) -> None:
    produce(data_dir, "t", 1)

    def boom(b: bytes) -> Any:
        raise ValueError("cannot decode")

    with (
        ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", value_deserializer=boom) as c,
        pytest.raises(ValueError, match="cannot decode"),
    ):
        c.poll(timeout_ms=1000)


def test_record_fields_and_repr(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", config={"retention.ms": -1})
    with ottla.Producer(data_dir) as p:
        p.send(
            "t", b"value-1", key=b"key-1", timestamp=1_700_000_000_000, headers=[("h", b"1")]
        ).get(10)
        p.send("t", b"x" * 500).get(10)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        r, big = drain(c, 2)
    assert r.topic == "t"
    assert r.partition == 0
    assert r.offset == 0
    assert r.timestamp == 1_700_000_000_000
    assert r.key == b"key-1"
    assert r.value == b"value-1"
    assert r.headers == [("h", b"1")]
    assert r.topic_partition == TP("t", 0)
    s = repr(r)
    assert s.startswith("Record(") and "offset=0" in s and "b'key-1'" in s and "b'value-1'" in s
    assert len(repr(big)) < 300 and "..." in repr(big)
    with pytest.raises(AttributeError):
        r.offset = 5  # type: ignore[misc]  # frozen: what the test checks


def test_topic_partition_type() -> None:
    a = TP("t", 1)
    assert a == TP("t", 1) and a != TP("t", 2)
    assert hash(a) == hash(TP("t", 1))
    assert tuple(a) == ("t", 1)
    topic, part = a
    assert (topic, part) == ("t", 1)
    assert sorted([TP("b", 0), TP("a", 2), TP("a", 1)]) == [TP("a", 1), TP("a", 2), TP("b", 0)]
    assert repr(a) == "TopicPartition(topic='t', partition=1)"
    import pickle

    assert pickle.loads(pickle.dumps(a)) == a


def test_consumer_wakes_for_records_produced_later(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t")
    results = []
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=5000) as c:
        assert c.poll(timeout_ms=0) == {}
        sent_at = {}

        def produce_later() -> None:
            time.sleep(0.3)
            with ottla.Producer(data_dir, linger_ms=0) as p:
                for i in range(5):
                    sent_at[i] = time.monotonic()
                    p.send("t", b"%d" % i).get(10)
                    time.sleep(0.05)

        t = threading.Thread(target=produce_later)
        t.start()
        try:
            for rec in c:
                results.append((rec.value, time.monotonic()))
                if len(results) == 5:
                    break
        finally:
            t.join(15)
    assert [v for v, _ in results] == [b"%d" % i for i in range(5)]
    lags = [at - sent_at[i] for i, (_, at) in enumerate(results)]
    assert max(lags) < 1.0, lags


@pytest.mark.directory_only(
    "repr() shows the assignment right after the constructor: a cluster's consumer joins its group when it polls, as Kafka's"
)
def test_consumer_close_state_and_repr(data_dir: Path) -> None:
    produce(data_dir, "t", 1)
    c = ottla.Consumer(data_dir, "t", group_id="grp", client_id="me")
    assert "grp" in repr(c) and "t-0" in repr(c)
    c.close()
    assert c.closed and "closed" in repr(c)
    with pytest.raises(ottla.ClosedError):
        c.commit()
    with pytest.raises(ottla.ClosedError):
        c.position(TP("t", 0))
    with pytest.raises(ottla.ClosedError):
        next(iter(c))


def test_consumer_auto_create_topics_false(data_dir: Path) -> None:
    with ottla.Consumer(data_dir, auto_create_topics=False) as c:
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            c.assign([TP("missing", 0)])
        c.subscribe(["missing"])  # waits for the topic to appear
        assert c.assignment() == set()
        assert c.poll(timeout_ms=50) == {}
    assert "missing" not in ottla.Admin(data_dir).list_topics()
    with ottla.Consumer(data_dir, "created", auto_create_topics=True, num_partitions=2) as c:
        assert c.assignment() == {TP("created", 0), TP("created", 1)}


def test_poll_values_bulk_read_advances_positions(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("bulk", partitions=2)
    with ottla.Producer(data_dir) as p:
        for i in range(300):
            p.send("bulk", f"v{i}".encode() if i % 50 else None, partition=i % 2)
    c = ottla.Consumer(data_dir, "bulk", auto_offset_reset="earliest", group_id="bulk-g")
    try:
        first = c.poll_values(max_records=100)
        assert len(first) == 100
        rest = c.poll_values(max_records=1000, timeout_ms=100)
        got = first + rest
        assert len(got) == 300
        assert got.count(None) == 6
        assert sorted(v for v in got if v is not None) == sorted(
            f"v{i}".encode() for i in range(300) if i % 50
        )
        assert c.poll_values(timeout_ms=10) == []
        assert c.position(TP("bulk", 0)) == 150 and c.position(TP("bulk", 1)) == 150
        c.commit()
    finally:
        c.close()
    with ottla.Consumer(data_dir, "bulk", group_id="bulk-g") as c2:
        assert c2.poll_values(timeout_ms=10) == []
