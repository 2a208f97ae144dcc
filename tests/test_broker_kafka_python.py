"""kafka-python against ottla.Broker (it infers the broker version from the
advertised API ranges, and turns idempotence on by default from 3.0)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

import ottla

pytest.importorskip("kafka")
import kafka
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError

from helpers import kafka_poll as consume

SESSION_MS = 6000


def producer(b: ottla.Broker, **kw: object) -> kafka.KafkaProducer:
    return kafka.KafkaProducer(bootstrap_servers=b.bootstrap_servers, linger_ms=5, **kw)


def consumer(b: ottla.Broker, *topics: str, group: str, **kw: object) -> kafka.KafkaConsumer:
    return kafka.KafkaConsumer(
        *topics,
        bootstrap_servers=b.bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
        **kw,
    )


def test_broker_version_is_inferred_for_record_batch_v2(broker: ottla.Broker) -> None:
    p = producer(broker)
    try:
        assert p.config["api_version"] >= (2, 0)  # so magic 2 record batches
    finally:
        p.close()


def test_keys_and_headers_round_trip(broker: ottla.Broker, data_dir: Path) -> None:
    p = producer(broker)
    futures = [
        p.send("kh", key=b"key-%d" % i, value=b"value-%d" % i, headers=[("trace", b"t%d" % i)])
        for i in range(20)
    ]
    p.flush(15)
    offsets = [f.get(10).offset for f in futures]
    p.close()
    assert offsets == list(range(20))
    c = consumer(broker, "kh", group="kh")
    got = consume(c, 20)
    c.close()
    assert [(m.key, m.value) for m in got] == [(b"key-%d" % i, b"value-%d" % i) for i in range(20)]
    assert got[5].headers == [("trace", b"t5")]
    with ottla.Consumer(
        data_dir, "kh", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == [m.value for m in got]


class Member(threading.Thread):
    """One group member polling in its own thread, as applications do.

    (kafka-python drops a JoinGroup/SyncGroup result that completes while
    its consumer is not inside poll() and joins again, so members polled in
    turn from one thread would keep the group rebalancing.)"""

    def __init__(self, b: ottla.Broker, group: str) -> None:
        super().__init__(daemon=True)
        self.consumer = consumer(b, "six", group=group)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._parts: set[int] = set()
        self.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.consumer.poll(timeout_ms=100)
                with self._lock:
                    self._parts = {tp.partition for tp in self.consumer.assignment()}
        finally:
            self.consumer.close()  # LeaveGroup

    def parts(self) -> set[int]:
        with self._lock:
            return set(self._parts)

    def leave(self) -> None:
        self.stop.set()
        self.join(30)


def test_group_of_three_over_six_partitions_takes_over_on_leave(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("six", partitions=6)
    group = "g3-" + uuid.uuid4().hex[:6]
    # Kafka's advice for consumers started together: a short initial
    # rebalance delay, so the leader's first assignment sees the topic
    # (kafka-python 3.0.x may otherwise lose the rebalance its leader then
    # starts; docs/COMPATIBILITY.md).
    broker = ottla.Broker(data_dir, group_initial_rebalance_delay_ms=500)
    members = [Member(broker, group) for _ in range(3)]
    try:

        def wait_balanced(ms: list[Member], each: int) -> None:
            deadline = time.monotonic() + 40
            while True:
                ps = [m.parts() for m in ms]
                if all(len(p) == each for p in ps) and set().union(*ps) == set(range(6)):
                    return
                assert time.monotonic() < deadline, ps
                time.sleep(0.05)

        wait_balanced(members, 2)
        members.pop().leave()
        wait_balanced(members, 3)
    finally:
        for m in members:
            m.leave()
        broker.close()


def test_commit_restart_resume(broker: ottla.Broker) -> None:
    p = producer(broker)
    for i in range(10):
        p.send("resume", b"%d" % i)
    p.flush(15)
    p.close()
    c = consumer(broker, "resume", group="r", max_poll_records=6)
    first = consume(c, 6)[:6]
    tp = kafka.TopicPartition("resume", 0)
    c.commit({tp: kafka.OffsetAndMetadata(first[-1].offset + 1, "", -1)})
    c.close()
    c = consumer(broker, "resume", group="r")
    rest = consume(c, 4)
    assert c.committed(tp) == 6
    c.close()
    assert [m.value for m in rest] == [b"6", b"7", b"8", b"9"]


def test_admin_create_describe_alter_and_delete(broker: ottla.Broker, data_dir: Path) -> None:
    a = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        a.create_topics([NewTopic("adm", 2, 1, topic_configs={"retention.ms": "60000"})])
        assert "adm" in a.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic("adm", 1, 1)])
        [desc] = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "adm")])
        assert desc is not None
        a.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "adm", configs={"retention.ms": "90000"})]
        )
        assert ottla.Admin(data_dir).describe_topic("adm").config["retention.ms"] == "90000"
        a.create_partitions({"adm": NewPartitions(4)})
        assert len(ottla.Admin(data_dir).describe_topic("adm").partitions) == 4
        a.delete_topics(["adm"])
        assert "adm" not in a.list_topics()
    finally:
        a.close()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec(broker: ottla.Broker, data_dir: Path, codec: str) -> None:
    topic = "z-" + codec
    values = [(b"%s-%d-" % (codec.encode(), i)) * 20 for i in range(100)]
    p = producer(broker, compression_type=codec)
    for v in values:
        p.send(topic, v)
    p.flush(15)
    p.close()
    c = consumer(broker, topic, group=topic)
    assert [m.value for m in consume(c, 100)] == values
    c.close()
    with ottla.Consumer(
        data_dir, topic, auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == values


def test_idempotent_producer(broker: ottla.Broker, data_dir: Path) -> None:
    p = producer(broker, enable_idempotence=True, acks="all")
    fs = [p.send("idem", b"%d" % i, key=b"k%d" % (i % 3)) for i in range(300)]
    p.flush(15)
    assert all(f.get(10).offset >= 0 for f in fs)
    p.close()
    with ottla.Consumer(
        data_dir, "idem", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert sorted(int(r.value) for r in ec) == list(range(300))


@pytest.mark.parametrize("partitions", [1, 3, 8, 13])
def test_ottla_producer_picks_the_partition_kafka_python_picks(
    broker: ottla.Broker, data_dir: Path, partitions: int
) -> None:
    topic = f"parts-{partitions}"
    ottla.Admin(data_dir).create_topic(topic, partitions=partitions)
    keys = [b"user-%d" % i for i in range(60)] + [b"", b"\x00\xff", "ключ".encode()]
    p = producer(broker)
    theirs = [p.send(topic, b"v", key=k).get(10).partition for k in keys]
    p.close()
    with ottla.Producer(data_dir) as op:
        ours = [op.send(topic, b"v", key=k).get(timeout=10).partition for k in keys]
    assert ours == theirs
    # The keys spread over the partitions, so the comparison means something.
    assert partitions == 1 or len(set(theirs)) > 1


def test_list_and_describe_groups(broker: ottla.Broker) -> None:
    p = producer(broker)
    p.send("lg", b"x")
    p.flush(10)
    p.close()
    c = consumer(broker, "lg", group="listed")
    consume(c, 1)
    c.commit()
    a = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        groups = {g["group_id"] if isinstance(g, dict) else g[0] for g in a.list_groups()}
        assert "listed" in groups
        desc = a.describe_groups(["listed"])
        text = repr(desc)
        assert "Stable" in text or "CompletingRebalance" in text
        offsets = a.list_group_offsets("listed")["listed"]
        assert offsets[kafka.TopicPartition("lg", 0)].offset == 1
    finally:
        c.close()
        a.close()


def test_fetch_after_topic_is_deleted_and_created_again(
    broker: ottla.Broker, data_dir: Path
) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("again")
    with ottla.Producer(data_dir) as p:
        for i in range(10):
            p.send("again", b"old-%d" % i)
    c = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        tp = kafka.TopicPartition("again", 0)
        c.assign([tp])
        first = consume(c, 10)
        assert [m.value for m in first][:2] == [b"old-0", b"old-1"]
        admin.delete_topic("again")
        admin.create_topic("again")
        with ottla.Producer(data_dir) as p:
            for i in range(20):
                p.send("again", b"new-value-of-another-size-%d" % i).get(timeout=10)
        # Offset 10 is where this connection's last fetch of the old log
        # ended; in the new log it sits at another byte position.
        c.seek(tp, 10)
        got = consume(c, 10)
        assert [m.value for m in got] == [
            b"new-value-of-another-size-%d" % i for i in range(10, 20)
        ]
    finally:
        c.close()
