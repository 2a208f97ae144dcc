"""confluent-kafka (librdkafka) against ottla.Broker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

import ottla
from helpers import Spawn

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

SESSION_MS = 6000


def producer(b: ottla.Broker, **conf: object) -> ck.Producer:
    return ck.Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 5, **conf})


def consumer(b: ottla.Broker, group: str, **conf: object) -> ck.Consumer:
    return ck.Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 500,
            "enable.auto.commit": False,
            **conf,
        }
    )


def consume(c: ck.Consumer, n: int, timeout: float = 20.0) -> list[ck.Message]:
    out: list[ck.Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"got {len(out)} of {n} messages"
        m = c.poll(0.2)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append(m)
    return out


def flush(p: ck.Producer) -> None:
    assert p.flush(15) == 0, "messages left unacknowledged"


def test_keys_and_headers_round_trip(broker: ottla.Broker, data_dir: Path) -> None:
    p = producer(broker)
    for i in range(20):
        p.produce(
            "kh",
            key=b"key-%d" % i,
            value=b"value-%d" % i,
            headers=[("trace", b"t%d" % i), ("empty", b"")],
        )
    flush(p)
    c = consumer(broker, "kh-group")
    c.subscribe(["kh"])
    got = consume(c, 20)
    c.close()
    got.sort(key=lambda m: (m.partition(), m.offset()))
    assert [m.key() for m in got] == [b"key-%d" % i for i in range(20)]
    assert [m.value() for m in got] == [b"value-%d" % i for i in range(20)]
    assert got[3].headers() == [("trace", b"t3"), ("empty", b"")]
    # The same records through the embedded door.
    with ottla.Consumer(
        data_dir, "kh", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        recs = list(ec)
    assert [(r.key, r.value) for r in recs] == [(m.key(), m.value()) for m in got]
    assert dict(recs[3].headers) == {"trace": b"t3", "empty": b""}


def assignment(c: ck.Consumer) -> set[int]:
    return {tp.partition for tp in c.assignment()}


def poll_until(consumers: list[ck.Consumer], pred, timeout: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, [sorted(assignment(c)) for c in consumers]
        for c in consumers:
            m = c.poll(0.05)
            err = None if m is None else m.error()
            assert err is None or err.code() == ck.KafkaError._PARTITION_EOF


def test_group_of_three_over_six_partitions_takes_over_on_leave(broker: ottla.Broker) -> None:
    ottla.Admin(broker.path).create_topic("six", partitions=6)
    group = "g3-" + uuid.uuid4().hex[:6]
    cs = [consumer(broker, group) for _ in range(3)]
    try:
        for c in cs:
            c.subscribe(["six"])

        def balanced(members: list[ck.Consumer], each: int) -> bool:
            parts = [assignment(c) for c in members]
            union: set[int] = set().union(*parts)
            return all(len(p) == each for p in parts) and union == set(range(6))

        poll_until(cs, lambda: balanced(cs, 2))
        leaving = cs.pop()
        left_with = assignment(leaving)
        leaving.close()
        poll_until(cs, lambda: balanced(cs, 3))
        assert left_with <= assignment(cs[0]) | assignment(cs[1])
    finally:
        for c in cs:
            c.close()


def test_commit_restart_resume(broker: ottla.Broker, data_dir: Path) -> None:
    p = producer(broker)
    for i in range(10):
        p.produce("resume", value=b"%d" % i)
    flush(p)
    c = consumer(broker, "resumers")
    c.subscribe(["resume"])
    first = consume(c, 6)
    c.commit(message=first[-1], asynchronous=False)
    c.close()
    # The commit is in the shared offset store: the embedded door sees it.
    with ottla.Consumer(data_dir, group_id="resumers") as ec:
        assert ec.committed(ottla.TopicPartition("resume", 0)) == 6
    c = consumer(broker, "resumers")
    c.subscribe(["resume"])
    rest = consume(c, 4)
    c.close()
    assert [m.value() for m in rest] == [b"6", b"7", b"8", b"9"]


def test_admin_create_alter_grow_and_delete_topics(broker: ottla.Broker, data_dir: Path) -> None:
    a = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    fs = a.create_topics(
        [NewTopic("adm", num_partitions=3, replication_factor=1, config={"retention.ms": "60000"})]
    )
    fs["adm"].result(15)
    md = a.list_topics(timeout=10)
    assert len(md.topics["adm"].partitions) == 3
    with pytest.raises(ck.KafkaException) as e:
        a.create_topics([NewTopic("adm", num_partitions=1)])["adm"].result(15)
    assert e.value.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS
    res = ConfigResource(ConfigResource.Type.TOPIC, "adm")
    cfg = a.describe_configs([res])[res].result(15)
    assert cfg["retention.ms"].value == "60000"
    assert cfg["segment.bytes"].is_default
    res2 = ConfigResource(ConfigResource.Type.TOPIC, "adm", set_config={"retention.ms": "120000"})
    with pytest.warns(DeprecationWarning):
        a.alter_configs([res2])[res2].result(15)  # AlterConfigs
    assert ottla.Admin(data_dir).describe_topic("adm").config["retention.ms"] == "120000"
    inc = ConfigResource(
        ConfigResource.Type.TOPIC,
        "adm",
        incremental_configs=[
            ck.admin.ConfigEntry(
                "segment.ms", "3600000", incremental_operation=ck.admin.AlterConfigOpType.SET
            ),
            ck.admin.ConfigEntry(
                "retention.ms", None, incremental_operation=ck.admin.AlterConfigOpType.DELETE
            ),
        ],
    )
    a.incremental_alter_configs([inc])[inc].result(15)
    config = ottla.Admin(data_dir).describe_topic("adm").config
    assert config["segment.ms"] == "3600000"
    assert config["retention.ms"] == str(7 * 24 * 3600 * 1000)
    a.create_partitions([NewPartitions("adm", 5)])["adm"].result(15)
    assert len(ottla.Admin(data_dir).describe_topic("adm").partitions) == 5
    a.delete_topics(["adm"])["adm"].result(15)
    assert "adm" not in ottla.Admin(data_dir).list_topics()
    with pytest.raises(ck.KafkaException):
        a.delete_topics(["adm"])["adm"].result(15)


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec(broker: ottla.Broker, data_dir: Path, codec: str) -> None:
    topic = "z-" + codec
    p = producer(broker, **{"compression.type": codec})
    values = [(b"%s-%d-" % (codec.encode(), i)) * 20 for i in range(200)]
    for v in values:
        p.produce(topic, value=v)
    flush(p)
    c = consumer(broker, "z-" + codec)
    c.subscribe([topic])
    assert [m.value() for m in consume(c, 200)] == values
    c.close()
    # Stored compressed, as sent: the segment is smaller than the values.
    log = data_dir / f"{topic}-0" / ("0" * 20 + ".log")
    assert log.stat().st_size < sum(map(len, values)) // 2
    with ottla.Consumer(
        data_dir, topic, auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == values


def test_idempotent_producer(broker: ottla.Broker, data_dir: Path) -> None:
    p = producer(broker, **{"enable.idempotence": True, "acks": "all"})
    for i in range(500):
        p.produce("idem", key=b"k%d" % (i % 7), value=b"%d" % i)
        if i % 100 == 0:
            p.poll(0)
    flush(p)
    with ottla.Consumer(
        data_dir, "idem", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        values = sorted(int(r.value) for r in ec)
    assert values == list(range(500))


def test_offsets_for_times_and_watermarks(broker: ottla.Broker) -> None:
    p = producer(broker)
    base = int(time.time() * 1000) - 100_000
    for i in range(10):
        p.produce("times", value=b"%d" % i, timestamp=base + i * 1000)
    flush(p)
    c = consumer(broker, "times")
    lo, hi = c.get_watermark_offsets(ck.TopicPartition("times", 0), timeout=10)
    assert (lo, hi) == (0, 10)
    [found] = c.offsets_for_times([ck.TopicPartition("times", 0, base + 4500)], timeout=10)
    assert found.offset == 5
    c.close()


def test_embedded_and_broker_doors_share_the_directory(
    broker: ottla.Broker, data_dir: Path
) -> None:
    # Embedded producer writes while the broker serves; a Kafka client reads.
    with ottla.Producer(data_dir) as ep:
        for i in range(5):
            ep.send("shared", b"embedded-%d" % i, key=b"e")
    # A Kafka client writes; the embedded consumer reads both.
    p = producer(broker)
    for i in range(5):
        p.produce("shared", key=b"k", value=b"kafka-%d" % i)
    flush(p)
    c = consumer(broker, "shared-g")
    c.subscribe(["shared"])
    got = [m.value() for m in consume(c, 10)]
    c.close()
    assert got == [b"embedded-%d" % i for i in range(5)] + [b"kafka-%d" % i for i in range(5)]
    with ottla.Consumer(
        data_dir, "shared", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == got


def test_unknown_topic_without_auto_create(data_dir: Path) -> None:
    with ottla.Broker(data_dir, auto_create_topics=False) as b:
        p = producer(b, **{"message.timeout.ms": 2000})
        errors: list[tuple[object, object]] = []
        p.produce("missing", value=b"x", on_delivery=lambda err, msg: errors.append((err, msg)))
        p.flush(10)
        assert len(errors) == 1 and errors[0][0] is not None


def test_plugin_fixture(ottla_broker: ottla.Broker) -> None:
    p = producer(ottla_broker)
    p.produce("orders", key=b"k", value=b"v")
    flush(p)
    c = consumer(ottla_broker, "g")
    c.subscribe(["orders"])
    [m] = consume(c, 1)
    c.close()
    assert m.value() == b"v"


def test_session_plugin_fixture(ottla_broker_session: ottla.Broker) -> None:
    md = ck.admin.AdminClient(
        {"bootstrap.servers": ottla_broker_session.bootstrap_servers}
    ).list_topics(timeout=10)
    assert md.cluster_id == "ottla"
    assert {b.id for b in md.brokers.values()} == {0}


def test_out_of_range_fetch_resets_by_policy(broker: ottla.Broker) -> None:
    p = producer(broker)
    for i in range(10):
        p.produce("oor", value=b"%d" % i)
    flush(p)
    c = consumer(broker, "oor-g")
    c.assign([ck.TopicPartition("oor", 0, 1000)])  # past the end
    got = consume(c, 10)
    c.close()
    assert [m.offset() for m in got] == list(range(10))


def test_batch_over_max_message_bytes_is_refused(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("small", config={"max.message.bytes": "10000"})
    p = producer(broker, **{"message.max.bytes": 1_000_000, "message.timeout.ms": 5000})
    errors: list[ck.KafkaError | None] = []
    p.produce("small", value=b"x" * 50_000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)  # its own batch: a refused batch fails every record in it
    p.produce("small", value=b"fits", on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert len(errors) == 2
    big, ok = errors
    assert big is not None and big.code() == ck.KafkaError.MSG_SIZE_TOO_LARGE
    assert ok is None
    with ottla.Consumer(
        data_dir, "small", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == [b"fits"]


def test_a_killed_member_is_expired_and_its_partitions_taken_over(
    spawn: Spawn, broker: ottla.Broker
) -> None:
    ottla.Admin(broker.path).create_topic("six", partitions=6)
    group = "killed-" + uuid.uuid4().hex[:6]
    code = """
import sys, time, confluent_kafka as ck
c = ck.Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                 "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
c.subscribe(["six"])
while True:
    c.poll(0.1)
    print(sorted(tp.partition for tp in c.assignment()), flush=True)
"""
    child = spawn(code, broker.bootstrap_servers, group)
    mine = consumer(broker, group)
    try:
        mine.subscribe(["six"])
        deadline = time.monotonic() + 40

        def child_has_three() -> bool:
            lines = child.lines()
            return bool(lines) and lines[-1].count(",") == 2

        while not (len(assignment(mine)) == 3 and child_has_three()):
            assert time.monotonic() < deadline, (assignment(mine), child.lines()[-1:])
            mine.poll(0.1)
        child.sigkill()  # no LeaveGroup: only the session timeout tells the broker
        poll_until([mine], lambda: assignment(mine) == set(range(6)), timeout=40)
    finally:
        mine.close()
