"""Answers a Kafka 4.x broker gives, checked with the clients that ask:
ListOffsets' max-timestamp query (KIP-734), CreateTopics' replica checks,
committed leader epochs and keyless records on a compacted topic (issue 13,
"answered differently today"); transactions are in test_transactions_*.py."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest

import kafka_wire
import ottla

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

INVALID_REPLICATION_FACTOR = 38
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_RECORD = 87


def admin(b: ottla.Broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap_servers})


def create(a: AdminClient, topic: NewTopic) -> None:
    a.create_topics([topic], operation_timeout=10)[topic.topic].result(timeout=15)


def create_error(a: AdminClient, topic: NewTopic) -> ck.KafkaError:
    fut = a.create_topics([topic], operation_timeout=10)[topic.topic]
    with pytest.raises(ck.KafkaException) as e:
        fut.result(timeout=15)
    err: ck.KafkaError = e.value.args[0]
    return err


def produce_with_timestamps(b: ottla.Broker, topic: str, stamps: list[int]) -> None:
    p = ck.Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 50})
    for i, ts in enumerate(stamps):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0, timestamp=ts)
    assert p.flush(15) == 0


# ------------------------------------------------------------ ListOffsets -3


def test_max_timestamp_offset_spec_finds_the_newest_record(broker: ottla.Broker) -> None:
    a = admin(broker)
    create(a, NewTopic("maxts", 1, 1))
    create(a, NewTopic("maxts-empty", 1, 1))
    t0 = 1_700_000_000_000
    # The largest timestamp (t0+500) first at offset 2, again at offset 5;
    # the last record is older: "latest" would answer offset 7.
    stamps = [t0, t0 + 100, t0 + 500, t0 + 200, t0 + 300, t0 + 500, t0 + 50]
    produce_with_timestamps(broker, "maxts", stamps)

    tp = ck.TopicPartition("maxts", 0)
    empty = ck.TopicPartition("maxts-empty", 0)
    max_ts = OffsetSpec.max_timestamp()  # type: ignore[no-untyped-call]
    futs = a.list_offsets({tp: max_ts, empty: max_ts})
    got = futs[tp].result(timeout=15)
    assert (got.offset, got.timestamp) == (2, t0 + 500)
    # Kafka answers an empty partition with -1/-1.
    none = futs[empty].result(timeout=15)
    assert (none.offset, none.timestamp) == (-1, -1)
    spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    latest = a.list_offsets({tp: spec})[tp].result(timeout=15)
    assert latest.offset == len(stamps)


def test_max_timestamp_with_kafka_python(broker: ottla.Broker) -> None:
    pytest.importorskip("kafka")
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    create(admin(broker), NewTopic("maxts-kp", 1, 1))
    t0 = 1_700_000_000_000
    produce_with_timestamps(broker, "maxts-kp", [t0 + 9, t0 + 90, t0 + 3])
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        tp = TopicPartition("maxts-kp", 0)
        got = ka.list_partition_offsets({tp: -3})[tp]
        assert (got.offset, got.timestamp) == (1, t0 + 90)
    finally:
        ka.close()


# ------------------------------------------------------------- CreateTopics


def test_replication_factor_above_the_broker_count_is_refused(
    broker: ottla.Broker, data_dir: Path
) -> None:
    a = admin(broker)
    err = create_error(a, NewTopic("rf3", 1, 3))
    assert err.code() == INVALID_REPLICATION_FACTOR, err
    assert (
        "Unable to replicate the partition 3 time(s): The target replication factor of 3 "
        "cannot be reached because only 1 broker(s) are registered." in err.str()
    ), err.str()
    # The default (-1) and 1 are what one broker can place.
    create(a, NewTopic("rf-default", 2))
    create(a, NewTopic("rf1", 1, 1))
    # An explicit assignment may name this broker (id 0) only.
    create(a, NewTopic("assigned", 2, replica_assignment=[[0], [0]]))
    err = create_error(a, NewTopic("assigned-elsewhere", 2, replica_assignment=[[0], [1]]))
    assert err.code() == INVALID_REPLICA_ASSIGNMENT, err
    assert "includes broker 1, but no such broker is registered" in err.str(), err.str()
    names = ottla.Admin(data_dir).list_topics()
    assert "rf3" not in names and "assigned-elsewhere" not in names
    assert {"rf-default", "rf1", "assigned"} <= set(names)
    assert len(ottla.Admin(data_dir).describe_topic("assigned").partitions) == 2


def test_create_partitions_checks_replica_assignments(broker: ottla.Broker, data_dir: Path) -> None:
    from confluent_kafka.admin import NewPartitions

    a = admin(broker)
    create(a, NewTopic("grow", 1, 1))

    def grow(total: int, assignment: list[list[int]]) -> None:
        fut = a.create_partitions([NewPartitions("grow", total, assignment)])["grow"]
        fut.result(timeout=15)

    with pytest.raises(ck.KafkaException) as e:
        grow(3, [[0]])
    err = e.value.args[0]
    assert err.code() == INVALID_REPLICA_ASSIGNMENT, err
    assert "Attempted to add 2 additional partition(s), but only 1 assignment(s)" in err.str()
    with pytest.raises(ck.KafkaException) as e:
        grow(3, [[0], [2]])
    err = e.value.args[0]
    assert err.code() == INVALID_REPLICA_ASSIGNMENT, err
    assert "includes broker 2, but no such broker is registered" in err.str(), err.str()
    assert len(ottla.Admin(data_dir).describe_topic("grow").partitions) == 1
    grow(3, [[0], [0]])
    assert len(ottla.Admin(data_dir).describe_topic("grow").partitions) == 3


def test_non_positive_replication_factors_are_refused(broker: ottla.Broker, data_dir: Path) -> None:
    pytest.importorskip("kafka")
    from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    from kafka.errors import InvalidReplicationFactorError

    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        for rf in (0, -2):
            with pytest.raises(InvalidReplicationFactorError) as e:
                ka.create_topics([KNewTopic(f"rf{rf}", 1, rf)])
            assert "must be larger than 0, or -1" in str(e.value), e.value
        ka.create_topics([KNewTopic("rf-minus-one", 1, -1)])
    finally:
        ka.close()
    assert ottla.Admin(data_dir).list_topics() == ["rf-minus-one"]


# ------------------------------------------------- committed leader epochs


def test_committed_leader_epoch_is_read_back(broker: ottla.Broker) -> None:
    create(admin(broker), NewTopic("epochs", 2, 1))
    conf: dict[str, Any] = {
        "bootstrap.servers": broker.bootstrap_servers,
        "group.id": "g-epochs",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    # A consumer outside the group (no subscription) commits partition 0.
    c = ck.Consumer(conf)
    try:
        c.commit(offsets=[ck.TopicPartition("epochs", 0, 5, leader_epoch=1)], asynchronous=False)
        (got,) = c.committed([ck.TopicPartition("epochs", 0)], timeout=15)
        assert (got.offset, got.leader_epoch) == (5, 1)
    finally:
        c.close()
    # A member of the group commits partition 1.
    m = ck.Consumer({**conf, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    try:
        m.subscribe(["epochs"])
        deadline = time.monotonic() + 30
        while len(m.assignment()) < 2:
            assert time.monotonic() < deadline, "never assigned"
            m.poll(0.2)
        m.commit(offsets=[ck.TopicPartition("epochs", 1, 7, leader_epoch=4)], asynchronous=False)
        both = m.committed([ck.TopicPartition("epochs", 0), ck.TopicPartition("epochs", 1)], 15)
        assert [(g.offset, g.leader_epoch) for g in both] == [(5, 1), (7, 4)]
    finally:
        m.close()


def test_consumers_resume_from_a_commit_with_a_leader_epoch(broker: ottla.Broker) -> None:
    """A returned leader epoch must not make a client validate its position
    with OffsetForLeaderEpoch (not served yet): each resumes where the
    group committed."""
    pytest.importorskip("kafka")
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    create(admin(broker), NewTopic("resume", 1, 1))
    produce_with_timestamps(broker, "resume", [1_700_000_000_000 + i for i in range(5)])
    conf: dict[str, Any] = {
        "bootstrap.servers": broker.bootstrap_servers,
        "group.id": "g-resume",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    c = ck.Consumer(conf)
    c.commit(offsets=[ck.TopicPartition("resume", 0, 2, leader_epoch=1)], asynchronous=False)
    c.close()
    c = ck.Consumer(conf)
    try:
        c.subscribe(["resume"])
        first = None
        deadline = time.monotonic() + 30
        while first is None:
            assert time.monotonic() < deadline, "nothing consumed"
            m = c.poll(0.2)
            if m is not None:
                assert m.error() is None, m.error()
                first = m.offset()
        assert first == 2
    finally:
        c.close()
    tp = TopicPartition("resume", 0)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id="g-resume-kp")
    try:
        kc.assign([tp])
        kc.commit({tp: OffsetAndMetadata(3, "", 1)})
    finally:
        kc.close()
    kc = KafkaConsumer(
        "resume",
        bootstrap_servers=broker.bootstrap_servers,
        group_id="g-resume-kp",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    try:
        assert [m.offset for m in kc][:2] == [3, 4]
    finally:
        kc.close()


def test_committed_leader_epoch_with_kafka_python(broker: ottla.Broker) -> None:
    pytest.importorskip("kafka")
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    create(admin(broker), NewTopic("epochs-kp", 1, 1))
    c = KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id="g-kp", enable_auto_commit=False
    )
    try:
        tp = TopicPartition("epochs-kp", 0)
        c.assign([tp])
        c.commit({tp: OffsetAndMetadata(3, "m", 2)})
        got = c.committed(tp, metadata=True)
        assert got is not None
        assert (got.offset, got.metadata, got.leader_epoch) == (3, "m", 2)
    finally:
        c.close()


# -------------------------------------------- keyless records, compacted


def test_keyless_record_on_a_compacted_topic_is_refused(
    broker: ottla.Broker, data_dir: Path
) -> None:
    create(admin(broker), NewTopic("compacted", 1, 1, config={"cleanup.policy": "compact"}))
    reports: list[tuple[bytes | None, ck.KafkaError | None]] = []

    def report(err: ck.KafkaError | None, msg: ck.Message) -> None:
        reports.append((msg.key(), err))

    p = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    p.produce("compacted", key=b"k", value=b"keyed", on_delivery=report)
    assert p.flush(15) == 0
    p.produce("compacted", value=b"no key", on_delivery=report)
    assert p.flush(15) == 0
    p.produce("compacted", key=b"k2", value=b"keyed again", on_delivery=report)
    assert p.flush(15) == 0
    assert [k for k, _ in reports] == [b"k", None, b"k2"]
    assert reports[0][1] is None and reports[2][1] is None
    err = reports[1][1]
    assert err is not None and err.code() == INVALID_RECORD, err
    # Nothing of the refused batch was stored.
    (part,) = ottla.Admin(data_dir).describe_topic("compacted").partitions
    assert (part.start_offset, part.end_offset) == (0, 2)


def test_keyless_refusal_carries_kafkas_record_errors(broker: ottla.Broker) -> None:
    """Produce v8+ carries per-record errors (batch index, message) and a
    summary, as Kafka's; kafka-python raises with the record's message."""
    pytest.importorskip("kafka")
    from kafka import KafkaProducer
    from kafka.errors import InvalidRecordError

    create(admin(broker), NewTopic("compacted-kp", 1, 1, config={"cleanup.policy": "compact"}))
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, retries=0)
    try:
        with pytest.raises(InvalidRecordError) as e:
            kp.send("compacted-kp", value=b"no key", partition=0).get(timeout=15)
        # kafka-python shows the record error Kafka's LogValidator gives.
        assert (
            "Compacted topic cannot accept message without key in topic partition "
            "compacted-kp-0." in str(e.value)
        ), e.value
        kp.send("compacted-kp", key=b"k", value=b"v", partition=0).get(timeout=15)
    finally:
        kp.close()


def test_keyless_refusal_names_each_record_and_stores_nothing(broker: ottla.Broker) -> None:
    """The raw Produce v8 answer: Kafka's record errors (the index of each
    keyless record in its batch) and summary; the keyed records of the
    same request are not stored either."""
    create(admin(broker), NewTopic("compacted-raw", 1, 1, config={"cleanup.policy": "compact"}))
    keyed = kafka_wire.record_batch([b"a", b"b"], keys=[b"ka", b"kb"])
    mixed = kafka_wire.record_batch([b"a", b"b", b"c", b"d"], keys=[b"ka", None, b"kc", None])
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        err, base, errors, message = kafka_wire.produce_v8(s, "compacted-raw", 0, keyed + mixed)
        assert (err, base) == (INVALID_RECORD, -1)
        why = (
            "Compacted topic cannot accept message without key in topic partition compacted-raw-0."
        )
        assert errors == [(1, why), (3, why)]
        assert message is not None
        assert message.startswith("One or more records have been rejected due to 2 record errors")
        err, base, errors, _ = kafka_wire.produce_v8(s, "compacted-raw", 0, keyed, 4)
        assert (err, base, errors) == (0, 0, [])


def test_embedded_producer_refuses_keyless_records_on_a_compacted_topic(data_dir: Path) -> None:
    a = ottla.Admin(data_dir)
    a.create_topic("compacted-emb", config={"cleanup.policy": "compact,delete"})
    message = (
        "Compacted topic cannot accept message without key in topic partition compacted-emb-0."
    )
    with ottla.Producer(data_dir) as p:
        with pytest.raises(ottla.InvalidRecordError, match=message):
            p.send("compacted-emb", b"no key")
        with pytest.raises(ottla.InvalidRecordError, match=message):
            p.send_many("compacted-emb", [b"a", b"b"])
        with pytest.raises(ottla.InvalidRecordError, match=message):
            p.send("compacted-emb", b"x" * 500_000)  # large values take the direct path
        p.send("compacted-emb", b"keyed", key=b"k").result(timeout=10)
        p.send_many("compacted-emb", [b"a", b"b"], keys=[b"k1", b"k2"])
        p.flush()
    (part,) = a.describe_topic("compacted-emb").partitions
    assert (part.start_offset, part.end_offset) == (0, 3)
