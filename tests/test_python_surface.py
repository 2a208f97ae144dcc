"""The Python surface Kafka's Python clients taught users (issue 17).

kafka-python's and aiokafka's names and behaviours: ``timestamp_ms``,
validated ``acks``, ``commit_async``/``highwater``, aiokafka's
``start()``/``stop()``, the Admin batch calls with ``NewTopic`` and
``ConfigResource``, a picklable ``Record``, ``TopicPartition`` as a named
tuple, ``kafka.errors`` names, TypeErrors that name the argument, one repr
style, and a module that exports only its API.
"""

from __future__ import annotations

import asyncio
import copy
import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import pytest

import ottla
import ottla.aio
from ottla import TopicPartition as TP

aio = pytest.mark.asyncio


def produce(path: Path, topic: str, n: int, partitions: int = 1) -> None:
    with ottla.Producer(path, num_partitions=partitions) as p:
        for i in range(n):
            p.send(topic, b"v%d" % i, partition=i % partitions)


# ---- timestamp_ms ---------------------------------------------------------------


def test_send_takes_timestamp_ms_and_timestamp(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        a = p.send("t", b"a", timestamp_ms=1_600_000_000_001).get(10)
        b = p.send("t", b"b", timestamp=1_600_000_000_002).get(10)
        c = p.send_many("t", [b"c", b"d"], timestamp_ms=1_600_000_000_003).get(10)
        with pytest.raises(TypeError, match="timestamp_ms or timestamp"):
            p.send("t", b"x", timestamp_ms=1, timestamp=2)
        with pytest.raises(TypeError, match="timestamp_ms or timestamp"):
            p.send_many("t", [b"x"], timestamp_ms=1, timestamp=2)
    assert (a.timestamp, b.timestamp) == (1_600_000_000_001, 1_600_000_000_002)
    assert [m.timestamp for m in c] == [1_600_000_000_003] * 2
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=500) as co:
        assert [r.timestamp for r in co] == [
            1_600_000_000_001,
            1_600_000_000_002,
            1_600_000_000_003,
            1_600_000_000_003,
        ]


# ---- acks -----------------------------------------------------------------------


@pytest.mark.parametrize("acks", [0, 1, -1, "all", "0", "1", "-1", None])
def test_acks_accepts_kafkas_values(data_dir: Path, acks: Any) -> None:
    with ottla.Producer(data_dir, acks=acks) as p:
        p.send("t", b"v")
    ottla.aio.Producer(data_dir, acks=acks)


@pytest.mark.parametrize("acks", ["foo", 2, -2, True, 1.5, "ALL!", [1]])
def test_acks_rejects_anything_else(data_dir: Path, acks: Any) -> None:
    with pytest.raises(ValueError, match="acks must be 0, 1, -1 or 'all'"):
        ottla.Producer(data_dir, acks=acks)
    with pytest.raises(ValueError, match="acks must be"):
        ottla.aio.Producer(data_dir, acks=acks)


def test_acks_0_future_is_done_when_queued(data_dir: Path) -> None:
    """acks=0: done at once with offset -1 (as Kafka's clients), without
    waiting for the append; the record is in the log after flush()."""
    with ottla.Producer(data_dir, acks=0, linger_ms=60_000) as p:
        fut = p.send("t", b"v", key=b"k")
        assert fut.done() and fut.succeeded() and not fut.failed()
        md = fut.get(0)
        assert (md.topic, md.partition, md.offset) == ("t", 0, -1)
        seen: list[Any] = []
        fut.add_callback(seen.append)
        assert seen == [md] or seen[0].offset == -1
        many = p.send_many("t", [b"a", b"b"])
        assert many.done() and [m.offset for m in many.get(0)] == [-1, -1]
        # Nothing was appended yet (linger_ms is a minute): the futures did
        # not wait for the log.
        assert ottla.Admin(data_dir).describe_topic("t").partitions[0].end_offset == 0
        p.flush()
        assert ottla.Admin(data_dir).describe_topic("t").partitions[0].end_offset == 3
    with ottla.Producer(data_dir, acks=1, linger_ms=60_000) as p:
        assert p.send("t", b"w").get(10).offset == 3
    with ottla.Producer(data_dir, acks="all", linger_ms=60_000) as p:
        assert p.send("t", b"x").get(10).offset == 4


@aio
async def test_aio_acks_0(data_dir: Path) -> None:
    async with ottla.aio.Producer(data_dir, acks=0, linger_ms=60_000) as p:
        md = await p.send("t", b"v")
        assert md.offset == -1 and p.send("t", b"w").done()
        await p.send_many("t", [b"a"])
    async with ottla.aio.Producer(data_dir, acks="all") as p:
        assert (await p.send("t", b"x")).offset == 3


# ---- commit_async, highwater, start/stop ------------------------------------------


def test_commit_async_calls_back_and_returns_a_done_future(data_dir: Path) -> None:
    produce(data_dir, "t", 3)
    calls: list[tuple[Any, Any]] = []
    with ottla.Consumer(data_dir, "t", group_id="g", auto_offset_reset="earliest") as c:
        assert sum(len(v) for v in c.poll(timeout_ms=2000).values()) == 3
        fut = c.commit_async(callback=lambda offsets, exc: calls.append((offsets, exc)))
        assert fut.done() and fut.result() is None
        assert calls == [({TP("t", 0): ottla.OffsetAndMetadata(3)}, None)]
        assert c.committed(TP("t", 0)) == 3
        c.commit_async({TP("t", 0): 1}, lambda o, e: calls.append((o, e)))
        assert calls[-1] == ({TP("t", 0): ottla.OffsetAndMetadata(1)}, None)
        assert c.committed(TP("t", 0)) == 1
        assert c.commit_async({("t", 0): ottla.OffsetAndMetadata(2, "m")}).result() is None
        assert c.committed(TP("t", 0)) == 2
    # An error goes to the callback and the future; commit_async does not raise.
    fut = c.commit_async(callback=lambda o, e: calls.append((o, e)))
    assert isinstance(calls[-1][1], ottla.ClosedError)
    with pytest.raises(ottla.ClosedError):
        fut.result()


def test_highwater(data_dir: Path) -> None:
    produce(data_dir, "t", 5, partitions=2)
    produce(data_dir, "other", 1)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([TP("t", 0), ("t", 1)])
        assert c.highwater(TP("t", 0)) == 3
        assert c.highwater(("t", 1)) == 2
        assert c.highwater(TP("other", 0)) is None  # not assigned
        with ottla.Producer(data_dir) as p:
            p.send("t", b"more", partition=1).get(10)
        assert c.highwater(TP("t", 1)) == 3


@aio
async def test_aio_start_stop(data_dir: Path) -> None:
    produce(data_dir, "t", 2)
    p = ottla.aio.Producer(data_dir)
    await p.start()
    await p.start()  # idempotent
    await p.send("t", b"x")
    await p.stop()
    assert p.closed
    await p.stop()  # a second stop does nothing
    with pytest.raises(ottla.ClosedError):
        await p.start()

    c = ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest")
    await c.start()
    await c.start()
    got = await c.getmany(timeout_ms=2000)
    assert sum(len(v) for v in got.values()) == 3
    assert c.highwater(TP("t", 0)) == 3 and c.highwater(TP("x", 0)) is None
    await c.stop()
    assert c.closed
    await c.stop()
    with pytest.raises(ottla.ClosedError):
        await c.start()
    # async with still works, and refuses a stopped object.
    async with ottla.aio.Producer(data_dir) as p2:
        await p2.send("t", b"y")
    with pytest.raises(ottla.ClosedError):
        async with p2:
            pass


# ---- Admin batch calls -------------------------------------------------------------


def test_admin_create_and_delete_topics(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir, create=True)
    admin.create_topics(
        [
            ottla.NewTopic("a", 3),
            ottla.NewTopic("b", num_partitions=1, replication_factor=1),
            ottla.NewTopic("c", topic_configs={"retention.ms": 1000}),
        ]
    )
    assert admin.list_topics() == ["a", "b", "c"]
    assert len(admin.describe_topic("a").partitions) == 3
    assert len(admin.describe_topic("c").partitions) == 1
    assert admin.describe_topic("c").overrides == {"retention.ms": "1000"}
    # Every topic that can be created is; then the first error is raised.
    with pytest.raises(ottla.TopicAlreadyExistsError):
        admin.create_topics([ottla.NewTopic("a", 1), ottla.NewTopic("d", 2)])
    assert "d" in admin.list_topics()
    with pytest.raises(ottla.InvalidConfigError, match="replication_factor=3"):
        admin.create_topics([ottla.NewTopic("e", 1, 3)])
    with pytest.raises(TypeError, match="'num_partitions' must be int, not str"):
        admin.create_topics([ottla.NewTopic("e", "3")])  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match="NewTopic objects"):
        admin.create_topics(["e"])  # type: ignore[list-item]  # what the test checks
    assert "e" not in admin.list_topics()
    admin.create_partitions({"b": ottla.NewPartitions(4)})
    assert len(admin.describe_topic("b").partitions) == 4
    admin.create_partitions("b", 5)
    assert len(admin.describe_topic("b").partitions) == 5
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.delete_topics(["nope", "c"])
    assert "c" not in admin.list_topics()
    admin.delete_topics(["a", "b"])
    assert admin.list_topics() == ["d"]


def test_admin_describe_and_alter_configs(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir, create=True)
    admin.create_topic("t", config={"retention.ms": 60000})
    res = ottla.ConfigResource(ottla.ConfigResourceType.TOPIC, "t")
    every = admin.describe_configs([res])["t"]
    assert every["retention.ms"] == "60000" and "cleanup.policy" in every
    assert admin.describe_configs([ottla.ConfigResource("TOPIC", "t", ["retention.ms"])]) == {
        "t": {"retention.ms": "60000"}
    }
    admin.alter_configs(
        [ottla.ConfigResource(ottla.ConfigResourceType.TOPIC, "t", {"retention.ms": 5})]
    )
    assert admin.describe_topic("t").overrides == {"retention.ms": "5"}
    with pytest.raises(ottla.InvalidConfigError, match="topic configs only"):
        admin.describe_configs([ottla.ConfigResource(ottla.ConfigResourceType.BROKER, "1")])
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.describe_configs([ottla.ConfigResource(ottla.ConfigResourceType.TOPIC, "nope")])


def test_admin_consumer_group_calls(data_dir: Path) -> None:
    produce(data_dir, "t", 4, partitions=2)
    admin = ottla.Admin(data_dir)
    with ottla.Consumer(data_dir, "t", group_id="g1", auto_offset_reset="earliest") as c:
        assert sum(len(v) for v in c.poll(timeout_ms=2000).values()) == 4
        c.commit()
        assert admin.list_consumer_groups() == [("g1", "consumer")]
        (d,) = admin.describe_consumer_groups(["g1"])
        assert d.group_id == "g1" and d.state == "Stable" and len(d.members) == 1
        assert admin.delete_consumer_groups(["g1"])[0][0] == "g1"
        assert isinstance(admin.delete_consumer_groups(["g1"])[0][1], ottla.GroupNotEmptyError)
    assert admin.list_consumer_group_offsets("g1") == {
        TP("t", 0): ottla.OffsetAndMetadata(2),
        TP("t", 1): ottla.OffsetAndMetadata(2),
    }
    assert admin.list_consumer_group_offsets("g1", partitions=[TP("t", 1), ("t", 7)]) == {
        TP("t", 1): ottla.OffsetAndMetadata(2),
        TP("t", 7): ottla.OffsetAndMetadata(-1),
    }
    assert admin.delete_consumer_groups(["g1"]) == [("g1", None)]
    assert admin.list_consumer_groups() == []


# ---- Record and TopicPartition -------------------------------------------------------


def read_records(data_dir: Path) -> list[ottla.Record]:
    with ottla.Producer(data_dir) as p:
        p.send("t", b"v", key=b"k", timestamp_ms=5, headers=[("h", b"1"), ("n", None)])
        p.send("t", None)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=500) as c:
        return list(c)


def fields(r: ottla.Record) -> tuple[Any, ...]:
    return (r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)


def test_record_pickles_and_copies(data_dir: Path) -> None:
    records = read_records(data_dir)
    for r in records:
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            assert fields(pickle.loads(pickle.dumps(r, proto))) == fields(r)
        assert copy.copy(r) is r  # immutable
        assert fields(copy.deepcopy(r)) == fields(r)
    assert fields(records[0]) == ("t", 0, 0, 5, b"k", b"v", [("h", b"1"), ("n", None)])
    made = ottla.Record("t", 1, 2, 3, value=b"x", headers=[("a", b"b")])
    assert fields(made) == ("t", 1, 2, 3, None, b"x", [("a", b"b")])
    md = ottla.RecordMetadata("t", 0, 1, 2)
    assert pickle.loads(pickle.dumps(md)) == md


def _describe(r: ottla.Record) -> tuple[Any, ...]:
    return (r.offset, r.value, r.headers, r.topic_partition)


def test_records_go_through_a_multiprocessing_pool(data_dir: Path) -> None:
    records = read_records(data_dir)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.map(_describe, records, chunksize=1)
    assert out == [
        (0, b"v", [("h", b"1"), ("n", None)], TP("t", 0)),
        (1, None, [], TP("t", 0)),
    ]


def test_record_repr_shows_headers(data_dir: Path) -> None:
    r = read_records(data_dir)[0]
    assert repr(r) == (
        "Record(topic='t', partition=0, offset=0, timestamp=5, key=b'k', value=b'v', "
        "headers=[('h', b'1'), ('n', None)])"
    )


def test_topic_partition_is_kafka_pythons_named_tuple() -> None:
    tp = TP("orders", 0)
    assert tp == ("orders", 0)
    assert ("orders", 0) == tp  # noqa: SIM300  # the reflected comparison
    assert hash(tp) == hash(("orders", 0))
    by_tuple: dict[tuple[str, int], int] = {("orders", 0): 1}
    by_tp: dict[tuple[str, int], int] = {tp: 1}
    assert by_tuple[tp] == 1 and by_tp[("orders", 0)] == 1
    topic, partition = tp
    assert (topic, partition) == ("orders", 0)
    assert tp[0] == "orders" and tp[1] == 0 and len(tp) == 2
    assert tp.topic == "orders" and tp.partition == 0
    assert isinstance(tp, tuple)
    assert sorted([TP("b", 0), TP("a", 2), ("a", 1)]) == [("a", 1), ("a", 2), ("b", 0)]
    assert pickle.loads(pickle.dumps(tp)) == tp
    assert type(pickle.loads(pickle.dumps(tp))) is TP
    assert repr(tp) == "TopicPartition(topic='orders', partition=0)"


def test_consumer_returns_topic_partitions_that_equal_tuples(data_dir: Path) -> None:
    produce(data_dir, "t", 2, partitions=2)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        got = c.poll(timeout_ms=2000)
        while len(got) < 2:
            got.update(c.poll(timeout_ms=2000))
        assert set(got) == {("t", 0), ("t", 1)}
        assert all(type(tp) is TP for tp in got)
        assert c.assignment() == {("t", 0), ("t", 1)}
        assert all(type(tp) is TP for tp in c.assignment())
        assert c.end_offsets([("t", 0)]) == {("t", 0): 1}
        plain: Any = ("t", 0)  # a plain tuple finds the TopicPartition key
        record = got[plain][0]
        assert record.topic_partition == ("t", 0) and type(record.topic_partition) is TP
        with pytest.raises(TypeError, match=r"TopicPartition or a \(topic"):
            c.seek(("t",), 0)  # type: ignore[arg-type]  # what the test checks


# ---- errors ---------------------------------------------------------------------------


def test_kafka_python_error_names() -> None:
    aliases = {
        "KafkaError": ottla.OttlaError,
        "KafkaTimeoutError": ottla.OttlaTimeoutError,
        "MessageSizeTooLargeError": ottla.RecordTooLargeError,
        "CorruptRecordException": ottla.CorruptRecordError,
        "InvalidConfigurationError": ottla.InvalidConfigError,
        "UnsupportedCompressionTypeError": ottla.UnsupportedCompressionError,
        "UnsupportedCodecError": ottla.UnsupportedCompressionError,
        "KafkaStorageError": ottla.StorageError,
        "NonEmptyGroupError": ottla.GroupNotEmptyError,
        # Already Kafka's names:
        "OffsetOutOfRangeError": ottla.OffsetOutOfRangeError,
        "CorruptRecordError": ottla.CorruptRecordError,
        "InvalidTopicError": ottla.InvalidTopicError,
        "InvalidPartitionsError": ottla.InvalidPartitionsError,
        "NoOffsetForPartitionError": ottla.NoOffsetForPartitionError,
        "IllegalStateError": ottla.IllegalStateError,
        "TopicAlreadyExistsError": ottla.TopicAlreadyExistsError,
        "UnknownTopicOrPartitionError": ottla.UnknownTopicOrPartitionError,
        "OffsetMetadataTooLargeError": ottla.OffsetMetadataTooLargeError,
        "InvalidRecordError": ottla.InvalidRecordError,
    }
    kafka_errors = pytest.importorskip("kafka.errors")
    for name, cls in aliases.items():
        assert getattr(ottla, name) is cls, name
        assert name in ottla.__all__, name
        assert hasattr(kafka_errors, name), f"{name} is not a kafka.errors name"


def test_type_errors_name_the_argument(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir, create=True)
    with pytest.raises(
        TypeError, match=r"create_topic\(\) argument 'partitions' must be int, not str"
    ):
        admin.create_topic("t", partitions="3")  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match=r"create_topic\(\) argument 'name' must be str"):
        admin.create_topic(3)  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match=r"not a config dict.*keyword.*bootstrap_servers"):
        ottla.Producer({"bootstrap.servers": "localhost:9092"})  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match="not a config dict"):
        ottla.aio.Producer({"bootstrap.servers": "x"})  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match="not a config dict"):
        ottla.Consumer({"bootstrap.servers": "x"})  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match="not a config dict"):
        ottla.Admin({"bootstrap.servers": "x"})  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike.*not int"):
        ottla.Producer(5)  # type: ignore[arg-type]  # what the test checks
    with pytest.raises(TypeError, match=r"topics must be str.*got 5"):
        ottla.Consumer(data_dir, 5)  # type: ignore[arg-type]  # what the test checks


def test_consumer_takes_a_list_of_topics(data_dir: Path) -> None:
    produce(data_dir, "a", 1)
    produce(data_dir, "b", 1)
    with ottla.Consumer(
        data_dir,
        ["a", "b"],
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    ) as c:
        assert c.subscription() == {"a", "b"}
        assert sorted(r.topic for r in c) == ["a", "b"]


# ---- reprs and the module's names ----------------------------------------------------


def test_one_repr_style(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data_dir.parent)
    rel = data_dir.name
    where = f"path={str(data_dir.resolve())!r}"
    p = ottla.Producer(rel)
    c = ottla.Consumer(rel, "t", group_id="g")
    c2 = ottla.Consumer(rel)
    a = ottla.Admin(rel)
    ap = ottla.aio.Producer(rel)
    objs: list[Any] = [p, c, c2, a, ap]
    for o in objs:
        assert repr(o).startswith("<ottla."), repr(o)
        assert where in repr(o), repr(o)
        assert o.path == str(data_dir.resolve())
    assert repr(p).startswith(f"<ottla.Producer {where} acks=1 ")
    assert "fsync='never'" in repr(p)
    assert f"<ottla.Consumer {where} group_id='g' partitions=[" in repr(c)
    assert f"<ottla.Consumer {where} group_id=None partitions=[]>" == repr(c2)
    assert repr(a) == f"<ottla.Admin {where}>"
    assert repr(ap).startswith(f"<ottla.aio.Producer {where} acks=1 ")
    p.close()
    c.close()
    c2.close()
    assert repr(p).endswith(" closed>") and repr(c) == f"<ottla.Consumer {where} closed>"
    asyncio.run(ap.close())
    b = ottla.Broker(rel)
    assert b.path == str(data_dir.resolve())
    assert repr(b) == f"<ottla.Broker {where} bootstrap_servers={b.bootstrap_servers!r} serving>"
    b.close()
    assert repr(b).endswith(" closed>")


def test_module_exports_only_its_api() -> None:
    names = set(dir(ottla))
    for leaked in (
        "Any",
        "Optional",
        "annotations",
        "Callable",
        "Mapping",
        "Future",
        "TYPE_CHECKING",
    ):
        assert leaked not in names, leaked
    # ("@py_builtins"...: pytest's assertion rewriting of the plugin package.)
    public = {n for n in names if not n.startswith(("_", "@"))}
    # Besides __all__, only submodules.
    assert public - set(ottla.__all__) <= {
        "admin",
        "types",
        "aio",
        "cli",
        "pytest_plugin",
        "testing",
    }
    for n in ottla.__all__:
        assert hasattr(ottla, n), n
    assert len(ottla.__all__) == len(set(ottla.__all__))
    for n in ("NewTopic", "NewPartitions", "ConfigResource", "ConfigResourceType", "KafkaError"):
        assert n in ottla.__all__
