"""ottla.Producer: futures, partitioning, headers, serializers, batching,
flush/close, limits and argument checking."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from kafka.partitioner.default import DefaultPartitioner, murmur2

import ottla
from helpers import read_all, read_values
from ottla.remote.producer import (
    BatchFuture as RemoteBatchFuture,
    FutureRecordMetadata as RemoteFuture,
)


def test_send_returns_future_with_record_metadata(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        before = int(time.time() * 1000)
        fut = p.send("events", b"hello", key=b"k")
        assert isinstance(fut, (ottla.FutureRecordMetadata, RemoteFuture))
        md = fut.get(timeout=10)
        after = int(time.time() * 1000)
        assert isinstance(md, ottla.RecordMetadata)
        assert md.topic == "events"
        assert md.partition == 0
        assert md.offset == 0
        assert before <= md.timestamp <= after
        assert md.topic_partition == ottla.TopicPartition("events", 0)
        assert fut.done() and fut.is_done and fut.succeeded() and not fut.failed()
        assert fut.exception is None
        assert fut.result(timeout=1) == md
        md2 = p.send("events", b"world").get(timeout=10)
        assert md2.offset == 1
    assert read_values(data_dir, "events") == [(0, b"k", b"hello"), (1, None, b"world")]


def test_explicit_timestamp_is_kept(data_dir: Path) -> None:
    # retention.ms=-1: a 2020 timestamp is past the default 7-day retention
    ottla.Admin(data_dir).create_topic("t", config={"retention.ms": -1})
    with ottla.Producer(data_dir) as p:
        md = p.send("t", b"x", timestamp=1_600_000_000_123).get(10)
        assert md.timestamp == 1_600_000_000_123
    rec = read_all(data_dir, "t")[0][0]
    assert rec.timestamp == 1_600_000_000_123


def test_explicit_partition(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=4)
    with ottla.Producer(data_dir) as p:
        for part in (3, 0, 2, 1, 3):
            md = p.send("t", f"p{part}".encode(), key=b"ignored-for-routing", partition=part).get(
                10
            )
            assert md.partition == part
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            p.send("t", b"x", partition=4)
        with pytest.raises(ValueError):
            p.send("t", b"x", partition=-1)
    got = read_all(data_dir, "t")
    assert [r.value for r in got[3]] == [b"p3", b"p3"]
    assert [r.value for r in got[0]] == [b"p0"]


class _Cluster:
    """The slice of kafka-python's ClusterMetadata its partitioner uses."""

    def __init__(self, topic: str, n: int) -> None:
        self._topic, self._n = topic, n

    def topics(self) -> set[str]:
        return {self._topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._n))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._n))


def test_keyed_partitioning_matches_kafka_python(data_dir: Path) -> None:
    rng = random.Random(1234)
    keys = [b"", b"a", b"21", b"foobar", b"abc", "ü-ñ".encode()]
    keys += [f"user-{i}".encode() for i in range(60)]
    keys += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40))) for _ in range(60)]
    admin = ottla.Admin(data_dir)
    partitioner = DefaultPartitioner()
    with ottla.Producer(data_dir, linger_ms=1) as p:
        for n in range(1, 13):
            topic = f"keyed-{n}"
            admin.create_topic(topic, partitions=n)
            assert p.partitions_for(topic) == list(range(n))
            futs = [(k, p.send(topic, b"v", key=k)) for k in keys]
            cluster = _Cluster(topic, n)
            for k, f in futs:
                md = f.get(10)
                want = (murmur2(k) & 0x7FFFFFFF) % n
                assert md.partition == want, (n, k)
                assert partitioner.partition(topic, k, k, b"v", b"v", cluster) == want
        # str keys are hashed as their UTF-8 bytes
        admin.create_topic("keyed-str", partitions=7)
        for s in ["alpha", "beta", "γάμμα", "delta-42"]:
            md = p.send("keyed-str", b"v", key=s).get(10)
            assert md.partition == (murmur2(s.encode()) & 0x7FFFFFFF) % 7


def test_same_key_always_same_partition_in_order(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=5)
    with ottla.Producer(data_dir) as p:
        futs = [p.send("t", str(i).encode(), key=b"customer-7") for i in range(200)]
        mds = [f.get(10) for f in futs]
    assert len({m.partition for m in mds}) == 1
    assert [m.offset for m in mds] == list(range(200))


def test_unkeyed_sticky_partitioning_spreads_over_batches(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=4)
    with ottla.Producer(data_dir, batch_size=512, linger_ms=1000) as p:
        futs = [p.send("t", b"x" * 40) for _ in range(2000)]
        p.flush()
        parts = [f.get(10).partition for f in futs]
    counts = {q: parts.count(q) for q in range(4)}
    assert all(counts[q] > 0 for q in range(4)), counts
    # Sticky: records go in runs (one batch per partition), not one by one.
    switches = sum(1 for a, b in itertools.pairwise(parts) if a != b)
    assert 4 <= switches < len(parts) / 5, switches
    got = read_all(data_dir, "t")
    assert sum(len(v) for v in got.values()) == 2000


def test_headers_list_and_dict_forms(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("t", b"1", headers=[("a", b"x"), ("b", None), ("a", b"dup"), ("s", "str")])
        p.send("t", b"2", headers={"k1": b"v1", "k2": None})
        p.send("t", b"3", headers=[])
        p.send("t", b"4", headers=[("bytes-like", bytearray(b"ba")), ("mv", memoryview(b"mv"))])
        p.send("t", b"5", headers=[("ünïcode", b"\x00\xff")])
        p.flush()
    recs = read_all(data_dir, "t")[0]
    assert recs[0].headers == [("a", b"x"), ("b", None), ("a", b"dup"), ("s", b"str")]
    assert recs[1].headers == [("k1", b"v1"), ("k2", None)]
    assert recs[2].headers == []
    assert recs[3].headers == [("bytes-like", b"ba"), ("mv", b"mv")]
    assert recs[4].headers == [("ünïcode", b"\x00\xff")]


def test_null_key_and_value_and_empty_bytes(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("t")  # null key and value
        p.send("t", None, key=b"k")
        p.send("t", b"v", key=None)
        p.send("t", b"", key=b"")
        p.flush()
    assert read_values(data_dir, "t") == [
        (0, None, None),
        (1, b"k", None),
        (2, None, b"v"),
        (3, b"", b""),
    ]


def test_str_bytearray_memoryview_values(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("t", "héllo", key="ключ")
        p.send("t", bytearray(b"ba"))
        p.send("t", memoryview(b"0123456789")[2:5])
        p.flush()
    assert read_values(data_dir, "t") == [
        (0, "ключ".encode(), "héllo".encode()),
        (1, None, b"ba"),
        (2, None, b"234"),
    ]


def test_serializers(data_dir: Path) -> None:
    with ottla.Producer(
        data_dir,
        key_serializer=lambda k: k.encode("utf-8"),
        value_serializer=lambda v: None if v == "drop" else json.dumps(v).encode(),
    ) as p:
        p.send("t", {"a": 1}, key="k1")
        p.send("t", [1, 2, 3])
        p.send("t", "drop", key="k3")  # serializer returns None -> null value
        p.send_many("t", [{"n": 1}, {"n": 2}], keys=["x", "y"]).wait(10)
        p.flush()
    assert read_values(data_dir, "t") == [
        (0, b"k1", b'{"a": 1}'),
        (1, None, b"[1, 2, 3]"),
        (2, b"k3", None),
        (3, b"x", b'{"n": 1}'),
        (4, b"y", b'{"n": 2}'),
    ]


def test_serializer_exception_propagates(data_dir: Path) -> None:
    def boom(v: object) -> bytes:
        raise RuntimeError("serializer failed")

    with (
        ottla.Producer(data_dir, value_serializer=boom) as p,
        pytest.raises(RuntimeError, match="serializer failed"),
    ):
        p.send("t", 1)


def test_send_many_batch_future(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=3, config={"retention.ms": -1})
    with ottla.Producer(data_dir, linger_ms=10_000) as p:
        bf = p.send_many("t", [f"v{i}".encode() for i in range(100)], partition=2)
        assert isinstance(bf, (ottla.BatchFuture, RemoteBatchFuture))
        assert len(bf) == 100
        mds = bf.get(timeout=10)
        assert bf.done()
        assert [m.offset for m in mds] == list(range(100))
        assert {m.partition for m in mds} == {2}
        bf2 = p.send_many(
            "t",
            [b"a", b"b", None],
            keys=[b"k1", None, b"k3"],
            partition=0,
            timestamp=1_500_000_000_000,
        )
        assert bf2.wait(timeout=10) is None  # type: ignore[func-returns-value]  # checked here
        assert bf2.done()
        mds2 = bf2.get(10)
        assert [m.timestamp for m in mds2] == [1_500_000_000_000] * 3
        # keyed without partition: routed by key
        bf3 = p.send_many("t", [b"x"] * 3, keys=[b"user-1", b"user-2", b"user-3"])
        for k, m in zip([b"user-1", b"user-2", b"user-3"], bf3.get(10), strict=True):
            assert m.partition == (murmur2(k) & 0x7FFFFFFF) % 3
        with pytest.raises(ValueError):
            p.send_many("t", [b"a", b"b"], keys=[b"only-one"])
        empty = p.send_many("t", [])
        assert len(empty) == 0 and empty.get(1) == []
        # a generator works
        assert len(p.send_many("t", (b"g%d" % i for i in range(5)), partition=1).get(10)) == 5
    got = read_all(data_dir, "t")
    assert [r.value for r in got[2][:100]] == [f"v{i}".encode() for i in range(100)]
    assert [(r.key, r.value) for r in got[0][:3]] == [(b"k1", b"a"), (None, b"b"), (b"k3", None)]


def test_flush_completes_pending_futures(data_dir: Path) -> None:
    with ottla.Producer(data_dir, linger_ms=60_000) as p:
        futs = [p.send("t", b"%d" % i) for i in range(50)]
        time.sleep(0.1)
        assert not any(f.done() for f in futs), "linger_ms=60000 must hold the batch"
        p.flush(timeout=10)
        assert all(f.done() and f.succeeded() for f in futs)
        assert [f.get(0).offset for f in futs] == list(range(50))


def test_close_then_send_raises_closed_error(data_dir: Path) -> None:
    p = ottla.Producer(data_dir, linger_ms=60_000)
    fut = p.send("t", b"before-close")
    assert not p.closed
    p.close()
    assert p.closed
    # close flushed the pending record
    assert fut.done() and fut.get(0).offset == 0
    with pytest.raises(ottla.ClosedError):
        p.send("t", b"after-close")
    with pytest.raises(ottla.ClosedError):
        p.send_many("t", [b"after-close"])
    p.close()  # idempotent
    assert "closed" in repr(p)
    assert read_values(data_dir, "t") == [(0, None, b"before-close")]


def test_context_manager(data_dir: Path) -> None:
    with ottla.Producer(data_dir, linger_ms=60_000) as p:
        assert isinstance(p, ottla.Producer)
        fut = p.send("t", b"x")
    assert p.closed
    assert fut.done()
    with pytest.raises(KeyError), ottla.Producer(data_dir) as p2:
        p2.send("t", b"y")
        raise KeyError("boom")  # not swallowed
    assert p2.closed
    assert [v for _, _, v in read_values(data_dir, "t")] == [b"x", b"y"]


@pytest.mark.directory_only(
    "send() raises at once from the topic's max.message.bytes in the directory; a cluster's "
    "broker refuses the record, so its future raises (tests/test_remote.py)"
)
def test_record_too_large(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("small", config={"max.message.bytes": 1000})
    with ottla.Producer(data_dir) as p:
        with pytest.raises(ottla.RecordTooLargeError):
            p.send("small", b"x" * 2000)
        with pytest.raises(ottla.RecordTooLargeError):
            p.send("small", b"x" * 500, key=b"k" * 600)
        with pytest.raises(ottla.RecordTooLargeError):
            p.send_many("small", [b"x" * 2000])
        assert ottla.RecordTooLarge is ottla.RecordTooLargeError
        md = p.send("small", b"y" * 800).get(10)  # fits
        assert md.offset == 0
    assert read_values(data_dir, "small") == [(0, None, b"y" * 800)]


@pytest.mark.directory_only("as test_record_too_large")
def test_record_too_large_after_alter_config(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t")
    with ottla.Producer(data_dir) as p:
        p.send("t", b"x" * 5000).get(10)
        admin.alter_topic_config("t", {"max.message.bytes": 1000})
        with pytest.raises(ottla.RecordTooLargeError):
            p.send("t", b"x" * 5000)


def test_linger_makes_record_visible_without_flush(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t")
    c = ottla.Consumer(data_dir, "t", auto_offset_reset="earliest")
    p = ottla.Producer(data_dir, linger_ms=20)
    try:
        assert c.poll(timeout_ms=0) == {}
        t0 = time.monotonic()
        fut = p.send("t", b"lingering")
        got: list[ottla.Record] = []
        while not got and time.monotonic() - t0 < 3:
            for recs in c.poll(timeout_ms=100).values():
                got.extend(recs)
        assert [r.value for r in got] == [b"lingering"]
        # Done without a flush; through a broker its acknowledgement may
        # reach the producer a moment after a consumer saw the record.
        while not fut.done() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert fut.done()
    finally:
        p.close()
        c.close()


def test_add_callback(data_dir: Path) -> None:
    called = threading.Event()
    seen: list[ottla.RecordMetadata] = []

    def on_done(md: ottla.RecordMetadata) -> None:
        seen.append(md)
        called.set()

    with ottla.Producer(data_dir, linger_ms=60_000) as p:
        fut = p.send("t", b"x")
        ret = fut.add_callback(on_done)
        assert ret is fut
        assert not called.is_set()
        p.flush()
        assert called.wait(5)
        assert len(seen) == 1 and seen[0].offset == 0 and seen[0].topic == "t"
        # on a completed future the callback runs at once
        later: list[ottla.RecordMetadata] = []
        fut.add_callback(later.append)
        assert later == [seen[0]]
        # errback of a successful send is never called
        errs: list[BaseException] = []
        fut.add_errback(errs.append)
        p.send("t", b"y").add_errback(errs.append).get(10)
        assert errs == []


def test_add_callback_fires_via_linger(data_dir: Path) -> None:
    called = threading.Event()
    with ottla.Producer(data_dir, linger_ms=10) as p:
        p.send("t", b"x").add_callback(lambda md: called.set())
        assert called.wait(5), "linger thread never completed the batch"


@pytest.mark.directory_only(
    "a cluster creates again a topic deleted under a producer still sending to it "
    "(auto.create.topics.enable): the queued record is delivered, not failed"
)
def test_add_errback_and_failed_future(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("doomed")
    errs: list[BaseException] = []
    oks: list[ottla.RecordMetadata] = []
    with ottla.Producer(data_dir, linger_ms=60_000) as p:
        p.send("doomed", b"first").get(10)
        fut = p.send("doomed", b"lost")
        fut.add_errback(errs.append)
        fut.add_callback(oks.append)
        admin.delete_topic("doomed")
        with pytest.raises(ottla.OttlaError):
            p.flush()
        assert fut.done() and fut.failed() and not fut.succeeded()
        assert isinstance(fut.exception, ottla.OttlaError)
        with pytest.raises(ottla.OttlaError):
            fut.get(1)
        assert len(errs) == 1 and isinstance(errs[0], ottla.OttlaError)
        assert oks == []
        late: list[BaseException] = []
        fut.add_errback(late.append)
        assert len(late) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(value=123),
        dict(value=1.5),
        dict(value=object()),
        dict(value=b"v", key=42),
        dict(value=b"v", headers=[("k", 1)]),
        dict(value=b"v", headers=[(1, b"v")]),
        dict(value=b"v", headers=[("k", b"v", b"extra")]),
        dict(value=b"v", headers=["not-a-pair"]),
        dict(value=b"v", headers=42),
        dict(value=b"v", partition="0"),
        dict(value=b"v", timestamp="now"),
    ],
)
def test_bad_argument_types_raise_type_error(data_dir: Path, kwargs: dict[str, Any]) -> None:
    with ottla.Producer(data_dir) as p:
        with pytest.raises(TypeError):
            p.send("t", **kwargs)
        # the producer is still usable
        assert p.send("t", b"ok").get(10).offset == 0


def test_bad_constructor_arguments(data_dir: Path) -> None:
    with pytest.raises(TypeError):
        ottla.Producer(data_dir, linger_ms="5")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        ottla.Producer(data_dir, value_serializer=5)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        ottla.Producer(data_dir, key_serializer="str")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        ottla.Producer(data_dir, no_such_option=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        ottla.Producer(data_dir, 5)  # type: ignore[call-overload]  # options are keyword-only
    with pytest.raises((ottla.InvalidConfigError, ValueError)):
        ottla.Producer(data_dir, batch_size=0)
    with pytest.raises((ottla.InvalidConfigError, ValueError)):
        ottla.Producer(data_dir, num_partitions=0)
    with ottla.Producer(data_dir) as p:
        with pytest.raises(TypeError):
            p.send(123, b"x")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            p.flush(timeout=-1)
        with pytest.raises(ValueError):
            p.send("t", b"x").get(timeout=-1)


@pytest.mark.directory_only(
    "fsync is the directory's durability; given with bootstrap_servers it is an "
    "InvalidConfigError naming it (tests/test_remote.py)"
)
@pytest.mark.parametrize("bad", ["sometimes", "", "ALWAYS", "none"])
def test_bad_fsync_value_raises_value_error(data_dir: Path, bad: Any) -> None:
    with pytest.raises(ValueError):
        ottla.Producer(data_dir, fsync=bad)


@pytest.mark.directory_only("as test_bad_fsync_value_raises_value_error")
@pytest.mark.parametrize("mode", ["never", "interval", "always"])
def test_fsync_modes_work(data_dir: Path, mode: Literal["never", "interval", "always"]) -> None:
    with ottla.Producer(data_dir, fsync=mode, fsync_interval_ms=50) as p:
        assert mode in repr(p)
        mds = [p.send("t", b"%d" % i).get(10) for i in range(20)]
        bf = p.send_many("t", [b"m%d" % i for i in range(100)])
        bf.wait(10)
        if mode == "interval":
            time.sleep(0.2)  # let the background flusher run at least once
    assert [m.offset for m in mds] == list(range(20))
    vals = read_values(data_dir, "t")
    assert len(vals) == 120
    assert [v for _, _, v in vals[:20]] == [b"%d" % i for i in range(20)]


def test_acks_and_client_id_accepted(data_dir: Path) -> None:
    with ottla.Producer(data_dir, acks="all", client_id="me") as p:
        assert p.send("t", b"x").get(10).offset == 0
        assert p.path.endswith("data") or str(data_dir) in p.path or p.path.startswith("kafka://")


def test_many_threads_share_a_producer(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        errors: list[BaseException] = []

        def work(tid: int) -> None:
            try:
                for i in range(200):
                    p.send("t", f"{tid}:{i}".encode(), partition=0)
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        p.flush()
        assert not errors
    vals = read_values(data_dir, "t")
    assert [o for o, _, _ in vals] == list(range(800))
    for tid in range(4):
        mine = [v for _, _, v in vals if v.startswith(f"{tid}:".encode())]
        assert mine == [f"{tid}:{i}".encode() for i in range(200)]


def test_auto_create_uses_num_partitions(data_dir: Path) -> None:
    with ottla.Producer(data_dir, num_partitions=3) as p:
        assert p.partitions_for("auto") == [0, 1, 2]
        p.send("auto2", b"x").get(10)
    admin = ottla.Admin(data_dir)
    assert "auto" in admin.list_topics() and "auto2" in admin.list_topics()
    assert len(admin.describe_topic("auto2").partitions) == 3


def test_send_many_records_share_the_call_timestamp(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        before = int(time.time() * 1000)
        mds = p.send_many("ts", [b"a"] * 5000).get(timeout=10)
        after = int(time.time() * 1000)
    assert len({md.timestamp for md in mds}) == 1
    assert before <= mds[0].timestamp <= after
    assert [md.offset for md in mds] == list(range(5000))


def test_send_many_honours_a_list_subclass_iteration(data_dir: Path) -> None:
    """The bulk path reads a list's storage directly; a list subclass that
    overrides iteration goes through the general path and is honoured."""

    class Doubled(list[bytes]):
        def __iter__(self) -> Iterator[bytes]:
            for v in super().__iter__():
                yield v + v

    with ottla.Producer(data_dir, linger_ms=60_000) as p:
        assert len(p.send_many("t", Doubled([b"a", b"b"])).get(10)) == 2
        assert len(p.send_many("t", [b"c", None, b"d"]).get(10)) == 3
    assert [v for _, _, v in read_values(data_dir, "t")] == [b"aa", b"bb", b"c", None, b"d"]
