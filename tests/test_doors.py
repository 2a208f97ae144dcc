"""One consumer group, two doors: the embedded API and the broker on the same
directory share committed offsets, and a group is coordinated by only one
of them at a time (the `.door` lock), whichever came first."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import ottla

pytest.importorskip("kafka")
import kafka
from kafka.errors import InconsistentGroupProtocolError

from helpers import kafka_poll as poll_until


def kafka_consumer(b: ottla.Broker, topic: str, group: str) -> kafka.KafkaConsumer:
    return kafka.KafkaConsumer(
        topic,
        bootstrap_servers=b.bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


def fill(data_dir: Path, topic: str, n: int) -> None:
    with ottla.Producer(data_dir) as p:
        for i in range(n):
            p.send(topic, b"v%d" % i, partition=0)


def test_committed_offsets_are_shared_between_the_doors(
    broker: ottla.Broker, data_dir: Path
) -> None:
    fill(data_dir, "t", 10)
    tp = kafka.TopicPartition("t", 0)

    # Through the broker: read 4, commit offset 4, leave.
    kc = kafka_consumer(broker, "t", "shared")
    try:
        got = poll_until(kc, 1)
        assert got[0].offset == 0
        kc.commit({tp: kafka.structs.OffsetAndMetadata(4, "", -1)})
    finally:
        kc.close()

    # Embedded: the same group resumes at 4 and commits 7.
    with ottla.Consumer(
        data_dir,
        "t",
        group_id="shared",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    ) as c:
        first = next(iter(c))
        assert first.offset == 4
        c.commit({ottla.TopicPartition("t", 0): 7})

    # Through the broker again: resumes at 7.
    kc = kafka_consumer(broker, "t", "shared")
    try:
        assert poll_until(kc, 1)[0].offset == 7
    finally:
        kc.close()


def test_an_embedded_group_refuses_broker_members(broker: ottla.Broker, data_dir: Path) -> None:
    fill(data_dir, "t", 3)
    with ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", consumer_timeout_ms=500
    ) as c:
        assert [r.offset for r in c] == [0, 1, 2]
        kc = kafka_consumer(broker, "t", "g")
        try:
            with pytest.raises(InconsistentGroupProtocolError):
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    kc.poll(timeout_ms=200)
        finally:
            kc.close()
    # Once the embedded member is gone the broker may coordinate the group.
    kc = kafka_consumer(broker, "t", "g")
    try:
        deadline = time.monotonic() + 20
        while not kc.assignment():
            assert time.monotonic() < deadline, "never joined"
            kc.poll(timeout_ms=200)
    finally:
        kc.close()


def test_a_broker_group_refuses_embedded_members(broker: ottla.Broker, data_dir: Path) -> None:
    fill(data_dir, "t", 3)
    kc = kafka_consumer(broker, "t", "g")
    try:
        assert len(poll_until(kc, 3)) == 3  # joined and fetching through the broker
        c = ottla.Consumer(data_dir, group_id="g", auto_offset_reset="earliest")
        try:
            with pytest.raises(ottla.GroupMemberConflictError, match="broker"):
                c.subscribe(["t"])
        finally:
            c.close()
    finally:
        kc.close()
