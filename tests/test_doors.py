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
from kafka.errors import (
    CommitFailedError,
    InconsistentGroupProtocolError,
    OffsetMetadataTooLargeError,
    UnknownMemberIdError,
)

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


def test_a_broker_commit_cannot_overwrite_a_live_embedded_group(
    broker: ottla.Broker, data_dir: Path
) -> None:
    """Kafka refuses an offset commit from outside an active group
    (UNKNOWN_MEMBER_ID), whichever door the group's members came through."""
    fill(data_dir, "t", 10)
    tp = kafka.TopicPartition("t", 0)
    admin = ottla.Admin(data_dir)
    with ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
    ) as c:
        assert next(iter(c)).offset == 0
        c.commit({ottla.TopicPartition("t", 0): 3})
        # Not a member: assigned by hand, so kafka-python commits with
        # generation -1 and no member id (a "simple" commit).
        kc = kafka.KafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, group_id="g", enable_auto_commit=False
        )
        try:
            kc.assign([tp])
            with pytest.raises((CommitFailedError, UnknownMemberIdError)):
                kc.commit({tp: kafka.structs.OffsetAndMetadata(9, "", -1)})
        finally:
            kc.close()
        assert admin.group_offsets("g")[("t", 0)]["committed"] == 3
    # The group is empty now: a simple commit is allowed, as in Kafka.
    kc = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id="g", enable_auto_commit=False
    )
    try:
        kc.assign([tp])
        kc.commit({tp: kafka.structs.OffsetAndMetadata(9, "", -1)})
    finally:
        kc.close()
    assert admin.group_offsets("g")[("t", 0)]["committed"] == 9


def test_an_embedded_commit_cannot_overwrite_an_active_group(
    broker: ottla.Broker, data_dir: Path
) -> None:
    fill(data_dir, "t", 3)
    tp = ottla.TopicPartition("t", 0)
    admin = ottla.Admin(data_dir)
    outsider = ottla.Consumer(data_dir, group_id="g", enable_auto_commit=False)
    try:
        outsider.assign([tp])
        # A group coordinated by the broker.
        kc = kafka_consumer(broker, "t", "g")
        try:
            assert len(poll_until(kc, 3)) == 3
            kc.commit()
            with pytest.raises(ottla.GroupMemberConflictError, match="broker"):
                outsider.commit({tp: 1})
        finally:
            kc.close()
        assert admin.group_offsets("g")[("t", 0)]["committed"] == 3
        # A group with live embedded members: refused like Admin.reset_offsets.
        with ottla.Consumer(
            data_dir, "t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
        ) as member:
            member.poll(timeout_ms=500)
            assert member.assignment() == {tp}
            with pytest.raises(ottla.GroupNotEmptyError):
                outsider.commit({tp: 1})
            with pytest.raises(ottla.GroupNotEmptyError):
                admin.reset_offsets("g", to_offsets={tp: 1})
        assert admin.group_offsets("g")[("t", 0)]["committed"] == 3
        # Nobody in the group: the outsider may commit.
        outsider.commit({tp: 1})
        assert admin.group_offsets("g")[("t", 0)]["committed"] == 1
    finally:
        outsider.close()


def test_commits_are_checked_as_kafka_checks_them(broker: ottla.Broker, data_dir: Path) -> None:
    """Kafka checks a commit's metadata size (offset.metadata.max.bytes,
    4096), not its offset; the same at both doors."""
    fill(data_dir, "t", 3)
    tp = ottla.TopicPartition("t", 0)
    admin = ottla.Admin(data_dir)
    with ottla.Consumer(data_dir, group_id="g", enable_auto_commit=False) as c:
        c.assign([tp])
        with pytest.raises(ottla.OffsetMetadataTooLargeError):
            c.commit({tp: ottla.OffsetAndMetadata(1, "é" * 20_000)})
        c.commit({tp: ottla.OffsetAndMetadata(1, "m" * 4096)})
    assert admin.group_offsets("g")[("t", 0)]["committed"] == 1
    ktp = kafka.TopicPartition("t", 0)
    kc = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers, group_id="g", enable_auto_commit=False
    )
    try:
        kc.assign([ktp])
        with pytest.raises(OffsetMetadataTooLargeError):
            kc.commit({ktp: kafka.structs.OffsetAndMetadata(2, "m" * 4097, -1)})
        assert admin.group_offsets("g")[("t", 0)]["committed"] == 1
        # An offset past the log end is stored, as Kafka stores it...
        kc.commit({ktp: kafka.structs.OffsetAndMetadata(2**62, "", -1)})
    finally:
        kc.close()
    assert admin.group_offsets("g")[("t", 0)]["committed"] == 2**62
    # ...and a consumer resuming from it starts where auto_offset_reset says.
    with ottla.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as c:
        assert [r.offset for r in c] == [0, 1, 2]
