"""Kafka transactions through ``ottla serve`` with librdkafka (confluent-kafka):
a transactional producer against read_committed and read_uncommitted
consumers. Commits become visible, aborts never do, an open transaction
holds read_committed consumers back (not read_uncommitted ones), a second
producer with the same transactional.id fences the first, an open
transaction past its timeout is aborted by the broker, and
consume-transform-produce commits its input offsets with its output
(send_offsets_to_transaction)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import wait_until

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, OffsetSpec

TIMEOUT = 30.0


def producer(b: ottla.Broker, txn_id: str, **extra: Any) -> ck.Producer:
    p = ck.Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": txn_id, **extra})
    p.init_transactions(TIMEOUT)
    return p


def consumer(b: ottla.Broker, isolation: str, **extra: Any) -> ck.Consumer:
    return ck.Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            **extra,
        }
    )


def drain(c: ck.Consumer, topic: str, quiet: float = 1.5, limit: float = TIMEOUT) -> list[bytes]:
    """Every value `c` hands out until nothing new came for `quiet` seconds."""
    c.subscribe([topic])
    out: list[bytes] = []
    deadline = time.monotonic() + limit
    last = time.monotonic()
    assigned = False
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            assigned = assigned or bool(c.assignment())
            if assigned and time.monotonic() - last > quiet:
                break
            continue
        err = m.error()
        if err is not None:
            if err.code() == ck.KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(err)
        out.append(m.value() or b"")
        last = time.monotonic()
    return out


def create(data_dir: Path, topic: str, partitions: int = 1) -> None:
    ottla.Admin(data_dir).create_topic(topic, partitions=partitions)


def test_committed_is_visible_aborted_never(broker: ottla.Broker, data_dir: Path) -> None:
    create(data_dir, "t", 2)
    p = producer(broker, "tx-commit")
    p.begin_transaction()
    for i in range(10):
        p.produce("t", f"c{i}".encode(), partition=i % 2)
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    for i in range(10):
        p.produce("t", f"a{i}".encode(), partition=i % 2)
    p.flush(TIMEOUT)
    p.abort_transaction(TIMEOUT)
    p.begin_transaction()
    p.produce("t", b"c-last", partition=0)
    p.commit_transaction(TIMEOUT)

    committed = drain(consumer(broker, "read_committed"), "t")
    assert sorted(committed) == sorted([f"c{i}".encode() for i in range(10)] + [b"c-last"])
    # read_uncommitted sees the aborted records too, but never a marker.
    everything = drain(consumer(broker, "read_uncommitted"), "t")
    assert len(everything) == 21
    # The embedded consumer never hands out a marker either (records and Arrow).
    with ottla.Consumer(data_dir, group_id=None, auto_offset_reset="earliest") as c:
        c.assign([ottla.TopicPartition("t", 0), ottla.TopicPartition("t", 1)])
        values: list[bytes | None] = []
        deadline = time.monotonic() + TIMEOUT
        while len(values) < 21 and time.monotonic() < deadline:
            values += c.poll_values(max_records=100, timeout_ms=200)
        assert sorted(v or b"" for v in values) == sorted(everything)
        c.seek_to_beginning()
        rows = 0
        deadline = time.monotonic() + TIMEOUT
        while rows < 21 and time.monotonic() < deadline:
            rows += c.poll_arrow(timeout_ms=200).num_rows
        assert rows == 21
        assert c.poll_values(timeout_ms=300) == []


def test_an_open_transaction_holds_back_read_committed_only(
    broker: ottla.Broker, data_dir: Path
) -> None:
    create(data_dir, "held")
    plain = ck.Producer({"bootstrap.servers": broker.bootstrap_servers})
    plain.produce("held", b"before")
    plain.flush(TIMEOUT)
    p = producer(broker, "tx-open")
    p.begin_transaction()
    p.produce("held", b"open")
    p.flush(TIMEOUT)
    plain.produce("held", b"after")
    plain.flush(TIMEOUT)
    # The LSO is the open transaction's first offset: "after" waits too.
    assert drain(consumer(broker, "read_committed"), "held") == [b"before"]
    assert drain(consumer(broker, "read_uncommitted"), "held") == [b"before", b"open", b"after"]
    lc = consumer(broker, "read_committed")
    tp = ck.TopicPartition("held", 0)
    # librdkafka asks ListOffsets with the consumer's isolation level: the
    # high end a read_committed consumer sees is the LSO.
    assert lc.get_watermark_offsets(tp, TIMEOUT) == (0, 1)
    uc = consumer(broker, "read_uncommitted")
    assert uc.get_watermark_offsets(tp, TIMEOUT) == (0, 3)
    p.commit_transaction(TIMEOUT)
    assert drain(consumer(broker, "read_committed"), "held") == [b"before", b"open", b"after"]


def test_a_second_producer_fences_the_first_and_aborts_its_transaction(
    broker: ottla.Broker, data_dir: Path
) -> None:
    create(data_dir, "z")
    zombie = producer(broker, "tx-zombie")
    zombie.begin_transaction()
    zombie.produce("z", b"zombie")
    zombie.flush(TIMEOUT)
    fresh = producer(broker, "tx-zombie")
    # The zombie's transaction was aborted when the new producer started.
    assert drain(consumer(broker, "read_committed"), "z") == []
    fresh.begin_transaction()
    fresh.produce("z", b"fresh")
    fresh.commit_transaction(TIMEOUT)
    with pytest.raises(ck.KafkaException) as e:
        zombie.produce("z", b"late")
        zombie.commit_transaction(TIMEOUT)
    err: ck.KafkaError = e.value.args[0]
    assert err.fatal() or err.code() in (
        ck.KafkaError._FENCED,
        ck.KafkaError.PRODUCER_FENCED,
        ck.KafkaError.INVALID_PRODUCER_EPOCH,
    ), err
    assert drain(consumer(broker, "read_committed"), "z") == [b"fresh"]


def test_a_transaction_past_its_timeout_is_aborted(broker: ottla.Broker, data_dir: Path) -> None:
    create(data_dir, "slow")
    p = producer(broker, "tx-slow", **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce("slow", b"never")
    p.flush(TIMEOUT)
    assert lso(broker, "slow") == 0
    # The broker's timer aborts it (an ABORT marker at offset 1): the LSO
    # moves past it and read_committed consumers never see its record.
    assert wait_until(lambda: lso(broker, "slow") == 2, timeout=20)
    assert drain(consumer(broker, "read_committed"), "slow") == []
    # The producer was fenced by the abort: its commit fails.
    with pytest.raises(ck.KafkaException):
        p.commit_transaction(TIMEOUT)


def lso(b: ottla.Broker, topic: str) -> int:
    """ListOffsets latest under read_committed: the last stable offset."""
    a = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    spec = {ck.TopicPartition(topic, 0): OffsetSpec.latest()}  # type: ignore[no-untyped-call]
    f = a.list_offsets(spec, isolation_level=ck.IsolationLevel.READ_COMMITTED)
    return int(next(iter(f.values())).result(TIMEOUT).offset)


def test_list_offsets_read_committed_answers_the_lso(broker: ottla.Broker, data_dir: Path) -> None:
    create(data_dir, "lso")
    p = producer(broker, "tx-lso")
    p.begin_transaction()
    p.produce("lso", b"x")
    p.flush(TIMEOUT)
    assert lso(broker, "lso") == 0
    p.commit_transaction(TIMEOUT)
    assert lso(broker, "lso") == 2


def test_consume_transform_produce_commits_offsets_with_the_output(
    broker: ottla.Broker, data_dir: Path
) -> None:
    create(data_dir, "in")
    create(data_dir, "out")
    plain = ck.Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(6):
        plain.produce("in", str(i).encode())
    plain.flush(TIMEOUT)
    group = "ctp"

    def one_round(commit: bool, n: int) -> None:
        c = ck.Consumer(
            {
                "bootstrap.servers": broker.bootstrap_servers,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        c.subscribe(["in"])
        p = producer(broker, "tx-ctp")
        got: list[Any] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m)
        assert len(got) == n
        p.begin_transaction()
        for m in got:
            p.produce("out", m.value() * 2)
        offsets = [ck.TopicPartition("in", 0, got[-1].offset() + 1)]
        p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), TIMEOUT)
        if commit:
            p.commit_transaction(TIMEOUT)
        else:
            p.abort_transaction(TIMEOUT)
        c.close()

    one_round(True, 3)
    a = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    req = [ck.ConsumerGroupTopicPartitions(group, [ck.TopicPartition("in", 0)])]
    committed = a.list_consumer_group_offsets(req)[group].result(TIMEOUT)
    assert committed.topic_partitions[0].offset == 3
    # An aborted round leaves the group's offset where it was.
    one_round(False, 3)
    committed = a.list_consumer_group_offsets(req)[group].result(TIMEOUT)
    assert committed.topic_partitions[0].offset == 3
    one_round(True, 3)
    committed = a.list_consumer_group_offsets(req)[group].result(TIMEOUT)
    assert committed.topic_partitions[0].offset == 6
    assert sorted(drain(consumer(broker, "read_committed"), "out")) == sorted(
        [str(i).encode() * 2 for i in range(6)]
    )


def test_timeout_above_the_broker_maximum_is_refused(broker: ottla.Broker, data_dir: Path) -> None:
    p = ck.Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": "tx-long",
            "transaction.timeout.ms": 900_001,
        }
    )
    with pytest.raises(ck.KafkaException) as e:
        p.init_transactions(TIMEOUT)
    assert e.value.args[0].code() == ck.KafkaError.INVALID_TRANSACTION_TIMEOUT


def test_offsets_held_by_an_open_transaction_are_unstable_for_read_committed(
    broker: ottla.Broker, data_dir: Path
) -> None:
    """OffsetFetch with require_stable (librdkafka sets it under
    read_committed) answers UNSTABLE_OFFSET_COMMIT while a transaction holds
    the group's offset; the client retries until the transaction ends."""
    create(data_dir, "src")
    group = "stable"
    tp = ck.TopicPartition("src", 0)
    p = producer(broker, "tx-stable")
    p.begin_transaction()
    meta = ck.Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    p.send_offsets_to_transaction(
        [ck.TopicPartition("src", 0, 7)], meta.consumer_group_metadata(), TIMEOUT
    )
    meta.close()
    unc = consumer(broker, "read_uncommitted", **{"group.id": group})
    assert unc.committed([tp], 10)[0].offset == ck.OFFSET_INVALID
    com = consumer(broker, "read_committed", **{"group.id": group})
    with pytest.raises(ck.KafkaException):
        com.committed([tp], 3)
    p.commit_transaction(TIMEOUT)
    assert com.committed([tp], 10)[0].offset == 7
