"""APIs of issue 13 served with Kafka 4.x semantics: DescribeCluster (60),
DescribeLogDirs (35), DescribeProducers (61), DescribeTopicPartitions (75),
GetTelemetrySubscriptions (71) and authorized operations in Metadata, each
through a real client (kafka-python's and librdkafka's admin clients) and,
for what no client shows, raw frames."""

from __future__ import annotations

import base64
import struct
import uuid
from pathlib import Path

import pytest

import kafka_wire
import ottla

pytest.importorskip("kafka")
pytest.importorskip("confluent_kafka")
import kafka.errors
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient
from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

CLUSTER_OPS = {"CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS"}
CLUSTER_OPS |= {"ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
TOPIC_OPS = {"READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE"}
TOPIC_OPS |= {"DESCRIBE_CONFIGS", "ALTER_CONFIGS"}
INVALID_REQUEST = 42
UNKNOWN_TOPIC_OR_PARTITION = 3
UNKNOWN_TOPIC_ID = 100
MISMATCHED_ENDPOINT_TYPE = 114


def kp_admin(b: ottla.Broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=b.bootstrap_servers, request_timeout_ms=10_000)


# ------------------------------------------------------- DescribeCluster


def test_describe_cluster(broker: ottla.Broker) -> None:
    a = kp_admin(broker)
    try:
        got = a.describe_cluster()
    finally:
        a.close()
    assert got["cluster_id"] == "ottla"
    assert got["controller_id"] == 0
    assert [(x["broker_id"], x["host"], x["port"]) for x in got["brokers"]] == [
        (0, broker.host, broker.port)
    ]
    assert set(got["authorized_operations"]) == CLUSTER_OPS

    c = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    r = c.describe_cluster(include_authorized_operations=True, request_timeout=10).result(15)
    assert r.cluster_id == "ottla"
    assert r.controller.id == 0
    assert [n.id for n in r.nodes] == [0]
    assert {op.name for op in r.authorized_operations} == CLUSTER_OPS
    r = c.describe_cluster(request_timeout=10).result(15)
    assert not r.authorized_operations


def flexible_request(b: ottla.Broker, api: int, version: int, body: bytes) -> bytes:
    """One request with header v2; the response body after its header v1."""
    return kafka_wire.flexible_request(b.host, b.port, api, version, body)


def test_describe_cluster_asked_for_controllers_is_a_mismatched_endpoint(
    broker: ottla.Broker,
) -> None:
    # v1: include authorized operations (false), endpoint type 2
    # (controllers), no tags.
    body = flexible_request(broker, 60, 1, b"\x00\x02" + kafka_wire.uvarint(0))
    _throttle, error = struct.unpack(">ih", body[:6])
    assert error == MISMATCHED_ENDPOINT_TYPE


# ------------------------------------------- authorized operations, Metadata


def test_metadata_answers_authorized_operations_when_asked(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic("ops", partitions=2)
    c = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    fut = c.describe_topics(
        TopicCollection(["ops"]), include_authorized_operations=True, request_timeout=10
    )["ops"]
    ops = fut.result(timeout=15).authorized_operations
    assert {op.name for op in ops} == TOPIC_OPS
    assert AclOperation.IDEMPOTENT_WRITE not in ops
    fut = c.describe_topics(TopicCollection(["ops"]), request_timeout=10)["ops"]
    assert not fut.result(timeout=15).authorized_operations
    a = kp_admin(broker)
    try:
        (t,) = a.describe_topics(["ops"])
    finally:
        a.close()
    assert set(t["authorized_operations"]) == TOPIC_OPS


# ------------------------------------------------------- DescribeLogDirs


def test_describe_log_dirs(broker: ottla.Broker, data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("dirs", partitions=2)
    admin.create_topic("other", partitions=1)
    with ottla.Producer(data_dir) as p:
        for _ in range(100):
            p.send("dirs", value=b"x" * 100, partition=0)
    a = kp_admin(broker)
    try:
        (b0,) = a.describe_log_dirs({"dirs": [0, 1, 7]})
        (ball,) = a.describe_log_dirs()
    finally:
        a.close()
    assert b0["broker"] == 0
    (d,) = b0["log_dirs"]
    assert d["error_code"] == 0
    assert Path(d["log_dir"]) == data_dir.resolve()
    assert 0 < d["usable_bytes"] <= d["total_bytes"]
    (t,) = d["topics"]
    assert t["name"] == "dirs"
    sizes = {p["partition_index"]: p["partition_size"] for p in t["partitions"]}
    on_disk = sum(f.stat().st_size for f in (data_dir / "dirs-0").glob("*.log"))
    assert sizes == {0: on_disk, 1: 0}  # partition 7 does not exist: left out
    assert on_disk > 100 * 100
    assert all(p["offset_lag"] == 0 and not p["is_future_key"] for p in t["partitions"])
    (dall,) = ball["log_dirs"]
    assert {t["name"] for t in dall["topics"]} >= {"dirs", "other"}


# ------------------------------------------------------ DescribeProducers


def test_describe_producers(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("prod", partitions=2)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, enable_idempotence=True)
    try:
        for _ in range(7):
            p.send("prod", b"v", partition=1)
        p.flush(timeout=30)
    finally:
        p.close(timeout=10)
    a = kp_admin(broker)
    try:
        got = a.describe_producers([TopicPartition("prod", 0), TopicPartition("prod", 1)])
        with pytest.raises(kafka.errors.UnknownTopicOrPartitionError):
            a.describe_producers([TopicPartition("prod", 5)], broker_id=0)
    finally:
        a.close()
    assert got[TopicPartition("prod", 0)].active_producers == []
    (state,) = got[TopicPartition("prod", 1)].active_producers
    assert state.producer_id >= 0
    assert state.producer_epoch == 0
    assert state.last_sequence == 6
    assert state.last_timestamp > 0
    assert state.coordinator_epoch == -1
    assert state.current_transaction_start_offset == -1


# ------------------------------------------------ DescribeTopicPartitions


def test_describe_topic_partitions_pages_with_a_cursor(
    broker: ottla.Broker, data_dir: Path
) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("pa", partitions=3)
    admin.create_topic("pb", partitions=2)
    a = kp_admin(broker)
    pages = []
    try:
        cursor = None
        while True:
            page = a.describe_topic_partitions(
                ["pb", "pa"], response_partition_limit=2, cursor=cursor
            )
            pages.append(
                [
                    (t["name"], [p["partition_index"] for p in t["partitions"]])
                    for t in page["topics"]
                ]
            )
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 10
        first = a.describe_topic_partitions(["pa", "nope"])
        stray = a.describe_topic_partitions(
            ["pa"], cursor={"topic_name": "pb", "partition_index": 0}
        )
    finally:
        a.close()
    # Sorted by name, at most two partitions a page, the cursor resumes
    # mid-topic and then at the next topic.
    assert pages == [[("pa", [0, 1])], [("pa", [2]), ("pb", [0])], [("pb", [1])]]
    by_name = {t["name"]: t for t in first["topics"]}
    assert by_name["nope"]["error_code"] == UNKNOWN_TOPIC_OR_PARTITION
    pa = by_name["pa"]
    assert pa["error_code"] == 0
    assert str(pa["topic_id"]) != "00000000-0000-0000-0000-000000000000"
    assert pa["topic_authorized_operations"] == 3576
    assert [p["leader_id"] for p in pa["partitions"]] == [0, 0, 0]
    assert first["next_cursor"] is None
    # A cursor at a topic not asked for: Kafka's INVALID_REQUEST for each.
    assert [(t["name"], t["error_code"]) for t in stray["topics"]] == [("pa", INVALID_REQUEST)]


# ---------------------------------------------- GetTelemetrySubscriptions


def _telemetry(
    b: ottla.Broker, instance: bytes
) -> tuple[int, bytes, int, list[int], int, list[str]]:
    body = flexible_request(b, 71, 0, instance + kafka_wire.uvarint(0))
    _throttle, error = struct.unpack(">ih", body[:6])
    at = 6
    got_id = body[at : at + 16]
    at += 16
    (subscription,) = struct.unpack(">i", body[at : at + 4])
    at += 4
    n = body[at] - 1  # compact array, fewer than 127 entries
    at += 1
    codecs = list(struct.unpack(f">{n}b", body[at : at + n]))
    at += n
    push_ms, _max_bytes = struct.unpack(">ii", body[at : at + 8])
    at += 9  # and delta temporality
    metrics = []
    for _ in range(body[at] - 1):
        at += 1
        ln = body[at] - 1
        metrics.append(body[at + 1 : at + 1 + ln].decode())
        at += ln
    del codecs[len(codecs) :]
    return error, got_id, subscription, codecs, push_ms, metrics


def test_get_telemetry_subscriptions_says_there_is_none(broker: ottla.Broker) -> None:
    error, got_id, subscription, codecs, push_ms, metrics = _telemetry(broker, bytes(16))
    assert error == 0
    # The zero id asks the broker for one (KIP-714).
    assert got_id != bytes(16)
    assert uuid.UUID(bytes=got_id).version == 4
    assert subscription == 0
    assert metrics == []  # nothing to push
    assert push_ms > 0
    assert set(codecs) <= {1, 2, 3, 4}
    mine = uuid.uuid4().bytes
    assert _telemetry(broker, mine)[1] == mine


# ---------------------------------------------------------------- topic ids


def stored_id(data_dir: Path, topic: str) -> uuid.UUID:
    text = ottla.Admin(data_dir).describe_topic(topic).topic_id
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))


def test_create_topics_answers_the_topic_id(broker: ottla.Broker, data_dir: Path) -> None:
    a = kp_admin(broker)
    try:
        got = a.create_topics({"with-id": {"num_partitions": 2}})
        checked = a.create_topics({"checked": {"num_partitions": 1}}, validate_only=True)
    finally:
        a.close()
    (t,) = got["topics"]
    assert t["error_code"] == 0
    # kafka-python shows ids as text.
    assert uuid.UUID(str(t["topic_id"])) == stored_id(data_dir, "with-id")
    (c,) = checked["topics"]
    assert c["topic_id"] is None  # validate_only: the zero id, nothing made


def test_delete_topics_by_id(broker: ottla.Broker, data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("doomed", partitions=2)
    admin.create_topic("by-name", partitions=1)
    doomed = stored_id(data_dir, "doomed")
    by_name = stored_id(data_dir, "by-name")
    stranger = uuid.uuid4()
    a = kp_admin(broker)
    try:
        got = a.delete_topics([doomed], raise_errors=False)
        again = a.delete_topics([doomed, stranger], raise_errors=False)
        named = a.delete_topics(["by-name"], raise_errors=False)
    finally:
        a.close()
    # kafka-python shows ids as text.
    (r,) = got["topics"]
    assert (r["name"], r["topic_id"], r["error_code"]) == ("doomed", str(doomed), 0)
    assert "doomed" not in admin.list_topics()
    # The id of a deleted topic, and one no topic ever had: UNKNOWN_TOPIC_ID,
    # without a name.
    assert [(x["name"], x["topic_id"], x["error_code"]) for x in again["topics"]] == [
        (None, str(doomed), UNKNOWN_TOPIC_ID),
        (None, str(stranger), UNKNOWN_TOPIC_ID),
    ]
    # By name (v6): the answer carries the id the topic had.
    (n,) = named["topics"]
    assert (n["name"], n["topic_id"], n["error_code"]) == ("by-name", str(by_name), 0)


def fetch_v13(b: ottla.Broker, topic_id: bytes, offset: int) -> tuple[bytes, int, int]:
    """Fetch v13 of partition 0 of the topic ``topic_id``, without waiting:
    (the response's topic id, the partition's error code, its high
    watermark)."""
    partition = struct.pack(">iiqiqi", 0, -1, offset, -1, -1, 1 << 20) + kafka_wire.uvarint(0)
    topic = topic_id + kafka_wire.uvarint(2) + partition + kafka_wire.uvarint(0)
    body = struct.pack(">iiiibii", -1, 0, 0, 1 << 20, 0, 0, -1)
    body += (
        kafka_wire.uvarint(2)
        + topic
        + kafka_wire.uvarint(1)
        + kafka_wire.uvarint(1)
        + kafka_wire.uvarint(0)
    )
    data = flexible_request(b, 1, 13, body)
    at = 4 + 2 + 4  # throttle time, error code, session id
    assert data[at] == 2, "one topic"
    at += 1
    got_id = data[at : at + 16]
    at += 16
    assert data[at] == 2, "one partition"
    at += 1
    _p, error, hw = struct.unpack(">ihq", data[at : at + 14])
    return got_id, error, hw


def test_fetch_by_topic_id(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("fid", partitions=1)
    with ottla.Producer(data_dir) as p:
        for i in range(3):
            p.send("fid", value=b"%d" % i)
    tid = stored_id(data_dir, "fid").bytes
    assert fetch_v13(broker, tid, 0) == (tid, 0, 3)
    stranger = uuid.uuid4().bytes
    assert fetch_v13(broker, stranger, 0) == (stranger, UNKNOWN_TOPIC_ID, -1)
    # Deleted and created again: the old id is unknown, the new one reads.
    ottla.Admin(data_dir).delete_topic("fid")
    ottla.Admin(data_dir).create_topic("fid", partitions=1)
    assert fetch_v13(broker, tid, 0)[1] == UNKNOWN_TOPIC_ID
    fresh = stored_id(data_dir, "fid").bytes
    assert fetch_v13(broker, fresh, 0) == (fresh, 0, 0)


def test_librdkafka_consumes_with_fetch_by_id(broker: ottla.Broker, data_dir: Path) -> None:
    from confluent_kafka import Consumer

    ottla.Admin(data_dir).create_topic("rdk", partitions=2)
    with ottla.Producer(data_dir) as p:
        for i in range(20):
            p.send("rdk", value=b"%d" % i, partition=i % 2)
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "rdk",
            "auto.offset.reset": "earliest",
        }
    )
    got: list[bytes] = []
    try:
        c.subscribe(["rdk"])
        for _ in range(60):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                value = m.value()
                assert value is not None
                got.append(value)
            if len(got) == 20:
                break
    finally:
        c.close()
    assert sorted(int(v) for v in got) == list(range(20))
