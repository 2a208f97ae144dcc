"""Static group membership (KIP-345, ``group.instance.id``) on ottla.Broker:
a restarted static member takes its place back without a rebalance, its
old member id is fenced, it still leaves by LeaveGroup or session timeout.
librdkafka, kafka-python and aiokafka as clients; raw frames
(tests/group_wire.py) for the fenced ids no client shows."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid

import pytest

import ottla
from group_wire import (
    FENCED_INSTANCE_ID,
    UNKNOWN_MEMBER_ID,
    describe_group,
    heartbeat,
    join_group,
    leave_group,
    offset_commit,
    sync_group,
)

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka.admin import AdminClient

# ConsumerProtocolSubscription v0: no topics, no user data.
SUBSCRIPTION = struct.pack(">hii", 0, 0, -1)


class Member:
    """A librdkafka consumer that records its rebalance callbacks."""

    def __init__(self, b: ottla.Broker, group: str, instance: str | None, **conf: object) -> None:
        settings: dict[str, object] = {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 100,
            "enable.auto.commit": False,
            **conf,
        }
        if instance is not None:
            settings["group.instance.id"] = instance
        self.c = ck.Consumer(settings)
        self.events: list[tuple[str, frozenset[int]]] = []

    def subscribe(self, topic: str) -> None:
        def on_assign(_c: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            self.events.append(("assign", frozenset(p.partition for p in parts)))

        def on_revoke(_c: ck.Consumer, parts: list[ck.TopicPartition]) -> None:
            self.events.append(("revoke", frozenset(p.partition for p in parts)))

        self.c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}

    def poll(self) -> None:
        m = self.c.poll(0.05)
        err = None if m is None else m.error()
        assert err is None or err.code() == ck.KafkaError._PARTITION_EOF, err


def poll_until(members: list[Member], pred, timeout: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, [(m.assignment(), m.events) for m in members]
        for m in members:
            m.poll()


def poll_for(members: list[Member], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll()


def described_members(b: ottla.Broker, group: str) -> list[tuple[str, str | None]]:
    """(member id, group.instance.id) of each member, as confluent-kafka's
    AdminClient describes the group (DescribeGroups v4+)."""
    admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=15)
    return sorted((m.member_id, m.group_instance_id) for m in desc.members)


def instances(members: list[tuple[str, str | None]]) -> list[str]:
    """The instance ids of ``members``, sorted; "-" for a dynamic member."""
    return sorted(inst or "-" for _, inst in members)


def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(
    broker: ottla.Broker,
) -> None:
    ottla.Admin(broker.path).create_topic("st", partitions=4)
    group = "static-" + uuid.uuid4().hex[:6]
    a = Member(broker, group, None)
    b = Member(broker, group, "b-1")
    b2: Member | None = None
    try:
        a.subscribe("st")
        b.subscribe("st")
        poll_until([a, b], lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2)
        a_events = list(a.events)
        b_had = b.assignment()
        members = described_members(broker, group)
        assert instances(members) == ["-", "b-1"]
        # A static member does not leave the group when it closes (KIP-345;
        # librdkafka sends no LeaveGroup): the group keeps it until its
        # session runs out.
        b.c.close()
        assert described_members(broker, group) == members
        b2 = Member(broker, group, "b-1")
        b2.subscribe("st")
        poll_until([a, b2], lambda: len(b2.assignment()) == 2)
        # Give a's heartbeats (every 100 ms) time to hear of a rebalance,
        # had there been one.
        poll_for([a, b2], 1.5)
        assert b2.assignment() == b_had, "the same partitions come back"
        assert b2.events == [("assign", frozenset(b_had))]
        assert a.events == a_events, "the other member saw no rebalance"
        after = described_members(broker, group)
        assert instances(after) == ["-", "b-1"]
        assert set(after) != set(members), "the instance has a new member id"
    finally:
        a.c.close()
        if b2 is not None:
            b2.c.close()


def test_a_static_member_gone_past_its_session_timeout_is_removed(
    broker: ottla.Broker,
) -> None:
    ottla.Admin(broker.path).create_topic("st", partitions=4)
    group = "static-gone-" + uuid.uuid4().hex[:6]
    a = Member(broker, group, None)
    b = Member(broker, group, "b-1", **{"session.timeout.ms": 2000})
    try:
        a.subscribe("st")
        b.subscribe("st")
        poll_until([a, b], lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2)
        b.c.close()
        poll_until([a], lambda: a.assignment() == {0, 1, 2, 3})
        assert instances(described_members(broker, group)) == ["-"]
    finally:
        a.c.close()


def test_an_old_member_id_of_a_static_member_is_fenced(broker: ottla.Broker) -> None:
    ottla.Admin(broker.path).create_topic("fence", partitions=1)
    g = "fence-" + uuid.uuid4().hex[:6]
    with (
        socket.create_connection(("127.0.0.1", broker.port), timeout=15) as s1,
        socket.create_connection(("127.0.0.1", broker.port), timeout=15) as s2,
    ):
        first = join_group(s1, g, "", "w-1")
        assert first.error == 0
        assert first.leader == first.member_id
        assert first.members == [(first.member_id, "w-1", b"meta")]
        assert sync_group(
            s1, g, first.generation, first.member_id, "w-1", [(first.member_id, b"A")]
        ) == (0, b"A")
        # The process restarts: same instance id, no member id.
        second = join_group(s2, g, "", "w-1")
        assert second.error == 0
        assert second.generation == first.generation, "no rebalance"
        assert second.member_id != first.member_id
        assert second.leader == second.member_id, "it keeps the leadership"
        # The leader's new assignment is not taken in a Stable group: the
        # member gets the one it had.
        assert sync_group(
            s2, g, second.generation, second.member_id, "w-1", [(second.member_id, b"B")]
        ) == (0, b"A")
        old, new = first.member_id, second.member_id
        gen = first.generation
        assert heartbeat(s1, g, gen, old, "w-1") == FENCED_INSTANCE_ID
        assert heartbeat(s1, g, gen, old, None) == UNKNOWN_MEMBER_ID
        assert heartbeat(s2, g, gen, new, "w-1") == 0
        assert sync_group(s1, g, gen, old, "w-1")[0] == FENCED_INSTANCE_ID
        assert offset_commit(s1, g, gen, old, "w-1", "fence", 0, 5) == FENCED_INSTANCE_ID
        assert offset_commit(s2, g, gen, new, "w-1", "fence", 0, 5) == 0
        assert join_group(s1, g, old, "w-1").error == FENCED_INSTANCE_ID
        d = describe_group(s2, g)
        assert (d.error, d.state, d.protocol) == (0, "Stable", "range")
        assert d.members == [(new, "w-1", "wire-test")]
        # A batch leave: per-member errors; a static member by instance id alone.
        error, results = leave_group(s2, g, [(old, "w-1"), ("", "nobody"), ("", "w-1")])
        assert error == 0
        assert results == [
            (old, "w-1", FENCED_INSTANCE_ID),
            ("", "nobody", UNKNOWN_MEMBER_ID),
            ("", "w-1", 0),
        ]
        d = describe_group(s2, g)
        assert (d.state, d.members) == ("Empty", [])


def test_kafka_python_removes_a_static_member_by_instance_id(broker: ottla.Broker) -> None:
    pytest.importorskip("kafka")
    from kafka import KafkaAdminClient
    from kafka.admin import MemberToRemove
    from kafka.errors import NoError, UnknownMemberIdError

    g = "kp-remove-" + uuid.uuid4().hex[:6]
    with socket.create_connection(("127.0.0.1", broker.port), timeout=15) as s:
        j = join_group(s, g, "", "pod-7", session_ms=60000, metadata=SUBSCRIPTION)
        sync_group(s, g, j.generation, j.member_id, "pod-7", [(j.member_id, b"")])
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            groups = admin.describe_groups([g])
            assert [m["group_instance_id"] for m in groups[g]["members"]] == ["pod-7"]
            gone = admin.remove_group_members(g, [MemberToRemove(group_instance_id="pod-7")])
            assert list(gone.values()) == [NoError]
            again = admin.remove_group_members(g, [MemberToRemove(group_instance_id="pod-7")])
            assert list(again.values()) == [UnknownMemberIdError]
        finally:
            admin.close()
        assert heartbeat(s, g, j.generation, j.member_id, "pod-7") == UNKNOWN_MEMBER_ID


def test_aiokafka_static_member_is_described_with_its_instance_id(broker: ottla.Broker) -> None:
    pytest.importorskip("aiokafka")
    from aiokafka import AIOKafkaConsumer

    ottla.Admin(broker.path).create_topic("aio-static", partitions=2)
    g = "aio-static-" + uuid.uuid4().hex[:6]

    async def run() -> None:
        c = AIOKafkaConsumer(
            "aio-static",
            bootstrap_servers=broker.bootstrap_servers,
            group_id=g,
            group_instance_id="aio-1",
            session_timeout_ms=6000,
            heartbeat_interval_ms=100,
        )
        await c.start()
        try:
            deadline = time.monotonic() + 30
            while len(c.assignment()) < 2:
                assert time.monotonic() < deadline
                await c.getmany(timeout_ms=100)
            members = await asyncio.to_thread(described_members, broker, g)
            assert instances(members) == ["aio-1"]
        finally:
            await c.stop()

    asyncio.run(asyncio.wait_for(run(), 60))
