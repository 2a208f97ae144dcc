"""The newest versions of three APIs, which kafka-protocol 0.18 has no schema
for and the broker serves with its own codec (issue 13): OffsetCommit v10 and
OffsetFetch v10 (KIP-848: topics named by topic id) and InitProducerId v6
(KIP-939: two-phase commit, which a broker without
``transaction.two.phase.commit.enable`` refuses). No client library sends
these yet (the Java client 4.1 does), so raw frames; kafka-python reads back
what a v10 commit wrote."""

from __future__ import annotations

import base64
import socket
import struct
import uuid
from pathlib import Path

import pytest

import kafka_wire
import ottla
from kafka_wire import compact_str, uvarint

pytest.importorskip("kafka")
from kafka import KafkaConsumer, TopicPartition

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
INIT_PRODUCER_ID = 22
NONE = 0
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
UNKNOWN_TOPIC_ID = 100
TAGS = uvarint(0)


def topic_id(data_dir: Path, topic: str) -> uuid.UUID:
    text = ottla.Admin(data_dir).describe_topic(topic).topic_id
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))


def request(b: ottla.Broker, api: int, version: int, body: bytes) -> kafka_wire.Reader:
    return kafka_wire.Reader(kafka_wire.flexible_request(b.host, b.port, api, version, body))


def commit_v10(
    b: ottla.Broker, group: str, topics: list[tuple[uuid.UUID, list[tuple[int, int, int, str]]]]
) -> list[tuple[uuid.UUID, list[tuple[int, int]]]]:
    """OffsetCommit v10 outside any generation; (id, [(partition, error)])."""
    body = compact_str(group) + struct.pack(">i", -1) + compact_str("") + compact_str(None)
    body += uvarint(len(topics) + 1)
    for tid, partitions in topics:
        body += tid.bytes + uvarint(len(partitions) + 1)
        for p, offset, epoch, meta in partitions:
            body += struct.pack(">iqi", p, offset, epoch) + compact_str(meta) + TAGS
        body += TAGS
    body += TAGS
    r = request(b, OFFSET_COMMIT, 10, body)
    assert r.i32() == 0  # throttle
    out = []
    for _ in range(r.count()):
        tid = uuid.UUID(bytes=r.take(16))
        parts = []
        for _ in range(r.count()):
            parts.append((r.i32(), r.i16()))
            r.tags()
        r.tags()
        out.append((tid, parts))
    r.tags()
    r.done()
    return out


Fetched = tuple[int, int, int, str | None, int]


def fetch_v10(
    b: ottla.Broker, group: str, topics: list[tuple[uuid.UUID, list[int]]] | None
) -> tuple[int, dict[uuid.UUID, list[Fetched]]]:
    """OffsetFetch v10 of one group: its error and, per topic id,
    [(partition, offset, leader epoch, metadata, error)]."""
    body = uvarint(2) + compact_str(group) + compact_str(None) + struct.pack(">i", -1)
    if topics is None:
        body += uvarint(0)
    else:
        body += uvarint(len(topics) + 1)
        for tid, partitions in topics:
            body += tid.bytes + uvarint(len(partitions) + 1)
            body += b"".join(struct.pack(">i", p) for p in partitions) + TAGS
    body += TAGS + b"\x00" + TAGS  # group tags, require_stable false, tags
    r = request(b, OFFSET_FETCH, 10, body)
    assert r.i32() == 0
    assert r.count() == 1
    assert r.cstr() == group
    got: dict[uuid.UUID, list[Fetched]] = {}
    for _ in range(r.count()):
        tid = uuid.UUID(bytes=r.take(16))
        parts: list[Fetched] = []
        for _ in range(r.count()):
            parts.append((r.i32(), r.i64(), r.i32(), r.cstr(), r.i16()))
            r.tags()
        r.tags()
        got[tid] = parts
    error = r.i16()
    r.tags()
    r.tags()
    r.done()
    return error, got


def test_v10_and_v6_are_advertised(broker: ottla.Broker) -> None:
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        ranges = {k: (lo, hi) for k, lo, hi in kafka_wire.api_versions(s)}
    assert ranges[OFFSET_COMMIT] == (2, 10)
    assert ranges[OFFSET_FETCH] == (1, 10)
    assert ranges[INIT_PRODUCER_ID] == (0, 6)


def test_offset_commit_v10_by_topic_id_reads_back(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("by-id", 2)
    tid = topic_id(data_dir, "by-id")
    got = commit_v10(broker, "g10", [(tid, [(0, 5, 3, "m"), (1, 7, -1, "")])])
    assert got == [(tid, [(0, NONE), (1, NONE)])]

    error, fetched = fetch_v10(broker, "g10", [(tid, [0, 1])])
    assert error == NONE
    assert fetched == {tid: [(0, 5, 3, "m", NONE), (1, 7, -1, "", NONE)]}
    # Every committed partition (topics null): named by id too.
    error, fetched = fetch_v10(broker, "g10", None)
    assert error == NONE
    assert sorted(fetched[tid]) == [(0, 5, 3, "m", NONE), (1, 7, -1, "", NONE)]

    # A client of the older versions (by name) reads the same offsets.
    c = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        group_id="g10",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    try:
        assert c.committed(TopicPartition("by-id", 0)) == 5
        assert c.committed(TopicPartition("by-id", 1)) == 7
    finally:
        c.close()


def test_unknown_topic_id_is_answered_unknown_topic_id(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic("known", 1)
    known = topic_id(data_dir, "known")
    stranger = uuid.uuid4()
    got = commit_v10(
        broker, "gu", [(stranger, [(0, 1, -1, ""), (3, 1, -1, "")]), (known, [(0, 9, -1, "")])]
    )
    assert sorted(got, key=lambda t: t[0] == stranger) == [
        (known, [(0, NONE)]),
        (stranger, [(0, UNKNOWN_TOPIC_ID), (3, UNKNOWN_TOPIC_ID)]),
    ]
    error, fetched = fetch_v10(broker, "gu", [(stranger, [0]), (known, [0])])
    assert error == NONE
    assert fetched == {
        stranger: [(0, -1, -1, "", UNKNOWN_TOPIC_ID)],
        known: [(0, 9, -1, "", NONE)],
    }

    # A topic deleted and created again has another id: the old one is unknown.
    ottla.Admin(data_dir).delete_topic("known")
    ottla.Admin(data_dir).create_topic("known", 1)
    got = commit_v10(broker, "gu", [(known, [(0, 1, -1, "")])])
    assert got == [(known, [(0, UNKNOWN_TOPIC_ID)])]


def init_producer_id_v6(
    b: ottla.Broker, transactional_id: str | None, enable_2pc: bool
) -> tuple[int, int, int, int, int]:
    """(error, producer id, epoch, ongoing txn producer id, its epoch)."""
    body = compact_str(transactional_id) + struct.pack(">iqh", 60_000, -1, -1)
    body += bytes([int(enable_2pc), 0]) + TAGS
    r = request(b, INIT_PRODUCER_ID, 6, body)
    assert r.i32() == 0
    out = (r.i16(), r.i64(), r.i16(), r.i64(), r.i16())
    r.tags()
    r.done()
    return out


def test_init_producer_id_v6(broker: ottla.Broker) -> None:
    error, pid, epoch, ongoing_pid, ongoing_epoch = init_producer_id_v6(broker, "tx-v6", False)
    assert (error, epoch, ongoing_pid, ongoing_epoch) == (NONE, 0, -1, -1)
    assert pid >= 0
    # Again: the same producer id, its epoch bumped (as v5).
    again = init_producer_id_v6(broker, "tx-v6", False)
    assert again == (NONE, pid, 1, -1, -1)
    # Idempotent (no transactional id): enable_2pc means nothing there.
    error, pid2, epoch2, _, _ = init_producer_id_v6(broker, None, False)
    assert (error, epoch2) == (NONE, 0)
    assert pid2 >= 0 and pid2 != pid
    # Two-phase commit is not enabled on this broker: Kafka's answer.
    assert init_producer_id_v6(broker, "tx-2pc", True) == (
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        -1,
        -1,
        -1,
        -1,
    )
