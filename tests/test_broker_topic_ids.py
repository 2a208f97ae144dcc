"""Topic ids on the wire (issue 13): Metadata v10+ carries each topic's
stable id, the one ``Admin.describe_topic`` shows; a topic deleted and
created again has a new id, so a client holding the old one notices; a
topic asked for by id alone (v12+) is found, and an unknown id answers
UNKNOWN_TOPIC_ID as Kafka does."""

from __future__ import annotations

import base64
import socket
import struct
import uuid
from pathlib import Path

import pytest

import kafka_wire
import ottla

pytest.importorskip("confluent_kafka")
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

METADATA = 3
UNKNOWN_TOPIC_ID = 100


def described_id(b: ottla.Broker, topic: str) -> str:
    """The topic's id as librdkafka reads it from Metadata, in Kafka's text
    form (URL-safe base64; librdkafka prints the standard alphabet)."""
    a = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    fut = a.describe_topics(TopicCollection([topic]), request_timeout=10)[topic]
    tid = fut.result(timeout=15).topic_id
    raw = struct.pack(">qq", tid.get_most_significant_bits(), tid.get_least_significant_bits())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_metadata_carries_the_topic_id_and_a_recreated_topic_gets_a_new_one(
    broker: ottla.Broker, data_dir: Path
) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("orders", partitions=2)
    stored = admin.describe_topic("orders").topic_id
    assert len(stored) == 22
    assert described_id(broker, "orders") == stored
    # Asked again (another connection, the broker's cache): the same id.
    assert described_id(broker, "orders") == stored
    admin.delete_topic("orders")
    admin.create_topic("orders", partitions=1)
    renewed = admin.describe_topic("orders").topic_id
    assert renewed != stored
    assert described_id(broker, "orders") == renewed


# ---------------------------------------------- Metadata v12 by id, raw


def metadata_v12_by_id(b: ottla.Broker, topic_id: bytes) -> list[tuple[int, str | None, bytes]]:
    """(error code, name, id) of each topic in a Metadata v12 answer to a
    request naming one topic by id alone."""
    # Header v2: key, version, correlation id, client id, no tags.
    header = struct.pack(">hhi", METADATA, 12, 7) + kafka_wire._str("ids") + kafka_wire.uvarint(0)
    # Body: one topic (id, null name, no tags); no auto-create; no
    # authorized operations; no tags.
    body = (
        kafka_wire.uvarint(2)
        + topic_id
        + kafka_wire.uvarint(0)
        + kafka_wire.uvarint(0)
        + b"\x00\x00"
        + kafka_wire.uvarint(0)
    )
    msg = header + body
    with socket.create_connection((b.host, b.port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        (n,) = struct.unpack(">i", kafka_wire.recv_exact(s, 4))
        r = kafka_wire.Reader(kafka_wire.recv_exact(s, n))
    assert r.i32() == 7
    r.tags()  # response header v1
    r.i32()  # throttle time
    for _ in range(r.uvarint() - 1):  # brokers
        r.i32()
        r.cstr()
        r.i32()
        r.cstr()
        r.tags()
    r.cstr()  # cluster id
    r.i32()  # controller id
    topics = []
    for _ in range(r.uvarint() - 1):
        error = r.i16()
        name = r.cstr()
        tid = r.take(16)
        r.take(1)  # is internal
        for _ in range(r.uvarint() - 1):  # partitions
            r.i16()
            r.i32()
            r.i32()
            r.i32()
            for _ in range(3):  # replicas, isr, offline replicas
                for _ in range(r.uvarint() - 1):
                    r.i32()
            r.tags()
        r.i32()  # authorized operations
        r.tags()
        topics.append((error, name, tid))
    return topics


def test_a_topic_asked_for_by_id_alone_is_found(broker: ottla.Broker, data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("by-id", partitions=3)
    text = admin.describe_topic("by-id").topic_id
    raw = base64.urlsafe_b64decode(text + "==")
    assert metadata_v12_by_id(broker, raw) == [(0, "by-id", raw)]


def test_an_unknown_topic_id_is_unknown_topic_id(broker: ottla.Broker) -> None:
    stranger = uuid.uuid4().bytes
    assert metadata_v12_by_id(broker, stranger) == [(UNKNOWN_TOPIC_ID, None, stranger)]
