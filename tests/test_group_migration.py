"""KIP-848's online migration (``group.consumer.migration.policy``): a
classic group joined by a ``group.protocol=consumer`` member becomes a
consumer group whose classic members stay members (served JoinGroup,
SyncGroup and Heartbeat by the consumer-group coordinator), and it becomes
a classic group again when its last consumer-protocol member leaves.

Real clients (confluent-kafka in both protocols, kafka-python classic only)
check that no partition is ever held by two members and no record is lost;
raw requests check the codes clients do not expose (REBALANCE_IN_PROGRESS,
ILLEGAL_GENERATION, the JoinGroup answer in a consumer group, the policy's
refusals) and a broker restart in the middle of a migration."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import kafka
import pytest
from confluent_kafka import ConsumerGroupType
from confluent_kafka.admin import AdminClient

import group_wire
import kafka_wire
import ottla
from helpers import CLI_CODE, Spawn, free_port

pytestmark = pytest.mark.skipif(
    tuple(int(x) for x in ck.libversion()[0].split(".")[:2]) < (2, 10),
    reason="librdkafka before 2.10 has no group.protocol=consumer",
)

HEARTBEAT_MS = 200
SESSION_MS = 3000

NONE = 0
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
REBALANCE_IN_PROGRESS = 27
GROUP_ID_NOT_FOUND = 69


def start(data_dir: Path, policy: str = "bidirectional") -> ottla.Broker:
    return ottla.Broker(
        data_dir,
        group_consumer_heartbeat_interval_ms=HEARTBEAT_MS,
        group_consumer_session_timeout_ms=SESSION_MS,
        group_consumer_migration_policy=policy,
    )


@pytest.fixture
def kb(data_dir: Path) -> Iterator[ottla.Broker]:
    b = start(data_dir)
    try:
        yield b
    finally:
        b.close()


def group_name() -> str:
    return "mig-" + uuid.uuid4().hex[:8]


def produce(b: ottla.Broker, topic: str, partitions: int, start_at: int, n: int) -> set[bytes]:
    p = ck.Producer({"bootstrap.servers": b.bootstrap_servers})
    values = set()
    for i in range(start_at, start_at + n):
        p.produce(topic, value=b"%d" % i, partition=i % partitions)
        values.add(b"%d" % i)
    assert p.flush(15) == 0
    return values


Event = tuple[str, str, int]  # (member, "assign" | "revoke", partition)


def never_owned_twice(events: list[Event]) -> None:
    """Replaying the events, no partition is ever held by two members."""
    holder: dict[int, str] = {}
    for member, what, p in events:
        if what == "assign":
            assert p not in holder, f"{member} got {p} while {holder.get(p)} held it: {events}"
            holder[p] = member
        else:
            assert holder.get(p) == member, events
            del holder[p]


class Confluent:
    """A confluent-kafka consumer of either protocol recording its
    assignment events in a shared list; it commits what it consumed when
    it gives partitions up (at-least-once across the moves)."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        name: str,
        events: list[Event],
        protocol: str,
        **conf: Any,
    ) -> None:
        self.name = name
        self.events = events
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        if protocol == "classic":
            config |= {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}
        self.c = ck.Consumer(config | conf)
        self.values: list[bytes] = []
        self.owned: set[int] = set()

    def subscribe(self, topic: str) -> None:
        self.c.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, _c: Any, tps: list[ck.TopicPartition]) -> None:
        self.events.extend((self.name, "assign", tp.partition) for tp in tps)
        self.owned |= {tp.partition for tp in tps}

    def _revoked(self, c: Any, tps: list[ck.TopicPartition]) -> None:
        try:
            c.commit(asynchronous=False)
        except ck.KafkaException:
            pass  # nothing to commit, or the generation moved on
        self.events.extend((self.name, "revoke", tp.partition) for tp in tps)
        self.owned -= {tp.partition for tp in tps}

    def poll(self) -> None:
        m = self.c.poll(0.02)
        if m is None or m.error() is not None:
            return
        value = m.value()
        assert value is not None
        self.values.append(value)


def poll_until(members: list[Confluent], cond: Callable[[], bool], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, {m.name: m.owned for m in members}
        for m in members:
            m.poll()


def group_type(b: ottla.Broker, group: str) -> ConsumerGroupType:
    admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    types: dict[str, ConsumerGroupType] = {g.group_id: g.type for g in listed.valid}
    return types[group]


def test_classic_consumers_upgrade_to_a_consumer_group_and_back(kb: ottla.Broker) -> None:
    """Two classic members; a consumer-protocol member joins: the group is a
    consumer group, the three share the partitions, none held twice, every
    record read. It leaves: the group is classic again and goes on."""
    ottla.Admin(kb.path).create_topic("t", partitions=4)
    group = group_name()
    sent = produce(kb, "t", 4, 0, 200)
    events: list[Event] = []
    a = Confluent(kb.bootstrap_servers, group, "a", events, "classic")
    b = Confluent(kb.bootstrap_servers, group, "b", events, "classic")
    c = Confluent(kb.bootstrap_servers, group, "c", events, "consumer")
    all3 = [a, b, c]
    try:
        a.subscribe("t")
        b.subscribe("t")
        poll_until([a, b], lambda: len(a.owned) == 2 and len(b.owned) == 2)
        poll_until([a, b], lambda: set(a.values + b.values) >= sent)
        assert group_type(kb, group) == ConsumerGroupType.CLASSIC
        c.subscribe("t")
        poll_until(
            all3,
            lambda: bool(c.owned) and a.owned | b.owned | c.owned == {0, 1, 2, 3},
        )
        never_owned_twice(events)
        assert group_type(kb, group) == ConsumerGroupType.CONSUMER
        sent |= produce(kb, "t", 4, 200, 200)
        poll_until(all3, lambda: set(a.values + b.values + c.values) >= sent)
        # Each of the later records was read by the member owning its
        # partition: none of them twice.
        late = [v for v in a.values + b.values + c.values if int(v) >= 200]
        assert len(late) == len(set(late)) == 200
        never_owned_twice(events)
        # The consumer-protocol member leaves: a classic group again, the
        # classic members rebalance and take every partition.
        c.c.close()
        poll_until([a, b], lambda: len(a.owned) == 2 and len(b.owned) == 2)
        assert group_type(kb, group) == ConsumerGroupType.CLASSIC
        sent |= produce(kb, "t", 4, 400, 100)
        poll_until([a, b], lambda: set(a.values + b.values + c.values) >= sent)
        never_owned_twice(events)
    finally:
        for m in all3:
            m.c.close()


def test_kafka_python_classic_members_share_a_group_with_a_consumer_member(
    kb: ottla.Broker,
) -> None:
    """kafka-python speaks only the classic protocol: its member stays a
    classic member of the consumer group, with a share of the partitions."""
    ottla.Admin(kb.path).create_topic("t", partitions=4)
    group = group_name()
    sent = produce(kb, "t", 4, 0, 200)
    kp = kafka.KafkaConsumer(
        bootstrap_servers=kb.bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
    )
    events: list[Event] = []
    c = Confluent(kb.bootstrap_servers, group, "c", events, "consumer")
    got: list[bytes] = []

    def kp_poll() -> None:
        for records in kp.poll(timeout_ms=20).values():
            got.extend(r.value for r in records)

    def kp_owned() -> set[int]:
        return {tp.partition for tp in kp.assignment()}

    try:
        # The topic's metadata first: a kafka-python leader without it
        # assigns nothing ("No partition metadata") and waits.
        assert kp.partitions_for_topic("t") == {0, 1, 2, 3}
        kp.subscribe(["t"])
        deadline = time.monotonic() + 45
        while len(kp_owned()) != 4:
            assert time.monotonic() < deadline
            kp_poll()
        c.subscribe("t")
        deadline = time.monotonic() + 45
        while not (c.owned and kp_owned() | c.owned == {0, 1, 2, 3} and not kp_owned() & c.owned):
            assert time.monotonic() < deadline, (kp_owned(), c.owned)
            kp_poll()
            c.poll()
        assert group_type(kb, group) == ConsumerGroupType.CONSUMER
        sent |= produce(kb, "t", 4, 200, 100)
        deadline = time.monotonic() + 45
        while not set(got + c.values) >= sent:
            assert time.monotonic() < deadline
            kp_poll()
            c.poll()
        assert not kp_owned() & c.owned
    finally:
        kp.close()
        c.c.close()


def test_a_killed_broker_resumes_a_group_mid_migration(data_dir: Path, spawn: Spawn) -> None:
    """``ottla serve`` killed while a classic and a consumer-protocol member
    share a migrated group: started again, it reads the group back from
    ``__consumer_offsets`` and both members go on with their partitions (no
    revocation, no rebalance), reading what comes next."""
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    with ottla.Producer(data_dir) as p:
        for i in range(100):
            p.send("t", b"%d" % i, partition=i % 2)
    port = free_port()
    flags = (
        *("--group-consumer-heartbeat-interval-ms", "250"),
        *("--group-consumer-session-timeout-ms", "10000"),
        *("--group-consumer-migration-policy", "BIDIRECTIONAL"),
    )

    def serve() -> Any:
        server = spawn(
            CLI_CODE, "serve", "--data", data_dir, "--listen", f"127.0.0.1:{port}", *flags
        )
        server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
        return server

    server = serve()
    bootstrap = f"127.0.0.1:{port}"
    group = group_name()
    events: list[Event] = []
    backoff = {"reconnect.backoff.max.ms": 200}
    a = Confluent(
        bootstrap, group, "a", events, "classic", **backoff, **{"session.timeout.ms": 10000}
    )
    c = Confluent(bootstrap, group, "c", events, "consumer", **backoff)
    try:
        a.subscribe("t")
        poll_until([a], lambda: a.owned == {0, 1})
        c.subscribe("t")
        poll_until([a, c], lambda: len(a.owned) == 1 and len(c.owned) == 1)
        poll_until([a, c], lambda: len(set(a.values + c.values)) == 100)
        before = list(events)
        server.sigkill()
        server = serve()
        with ottla.Producer(data_dir) as p:
            for i in range(100, 200):
                p.send("t", b"%d" % i, partition=i % 2)
        poll_until([a, c], lambda: len(set(a.values + c.values)) == 200)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            a.poll()
            c.poll()
        # Both kept their partitions across the restart.
        assert events == before, events
        never_owned_twice(events)
        late = [v for v in a.values + c.values if int(v) >= 100]
        assert sorted(late, key=int) == [b"%d" % i for i in range(100, 200)]
    finally:
        a.c.close()
        c.c.close()
        server.kill()


# ---------------------------------------------------------------- raw requests


def subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0."""
    b = struct.pack(">hi", 0, len(topics))
    for t in topics:
        b += struct.pack(">h", len(t)) + t.encode()
    return b + struct.pack(">i", -1)


def assigned(assignment: bytes) -> dict[str, list[int]]:
    """A ConsumerProtocolAssignment's partitions."""
    r = group_wire.Reader(assignment)
    r.i16()
    out = {}
    for _ in range(r.i32()):
        t = r.str()
        out[t] = [r.i32() for _ in range(r.i32())]
    return out


def consumer_heartbeat(
    b: ottla.Broker, group: str, member: str, epoch: int, topics: list[str] | None = None
) -> tuple[int, str | None, int, list[int]]:
    """ConsumerGroupHeartbeat v1: (error, member id, epoch, partitions of
    the assignment, if one came)."""
    body = kafka_wire.compact_str(group) + kafka_wire.compact_str(member)
    body += struct.pack(">i", epoch) + kafka_wire.compact_str(None) + kafka_wire.compact_str(None)
    body += struct.pack(">i", 30000 if epoch == 0 else -1)
    if topics is None:
        body += kafka_wire.uvarint(0)
    else:
        body += kafka_wire.uvarint(len(topics) + 1)
        body += b"".join(kafka_wire.compact_str(t) for t in topics)
    body += kafka_wire.compact_str(None)  # regex
    body += kafka_wire.compact_str(None)  # assignor
    body += kafka_wire.uvarint(1 if epoch == 0 else 0)  # owned: [] on a join, else null
    body += kafka_wire.uvarint(0)
    host, port = b.bootstrap_servers.rsplit(":", 1)
    r = kafka_wire.Reader(kafka_wire.flexible_request(host, int(port), 68, 1, body))
    r.i32()
    error = r.i16()
    r.cstr()
    member_id = r.cstr()
    epoch = r.i32()
    r.i32()
    partitions: list[int] = []
    if r.i8() == 1:
        for _ in range(r.count()):
            r.take(16)
            partitions += [r.i32() for _ in range(r.count())]
            r.tags()
        r.tags()
    return error, member_id, epoch, partitions


def connect(b: ottla.Broker) -> socket.socket:
    host, port = b.bootstrap_servers.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=20)


def classic_member(s: socket.socket, group: str) -> tuple[str, int]:
    """A raw classic member alone in `group` with partitions 0 and 1 of t:
    (member id, generation)."""
    mid = group_wire.member_id(s, group)
    j = group_wire.join_group(s, group, mid, None, metadata=subscription(["t"]))
    assert (j.error, j.leader) == (NONE, mid), j
    mine = struct.pack(">hi", 0, 1) + struct.pack(">h", 1) + b"t" + struct.pack(">iii", 2, 0, 1)
    error, _ = group_wire.sync_group(s, group, j.generation, mid, None, [(mid, mine + b"\xff" * 4)])
    assert error == NONE
    return mid, j.generation


def test_a_classic_member_in_a_consumer_group_is_served_by_the_consumer_coordinator(
    kb: ottla.Broker,
) -> None:
    ottla.Admin(kb.path).create_topic("t", partitions=2)
    group = group_name()
    with connect(kb) as s:
        x, gen = classic_member(s, group)
        # A consumer-protocol member joins: the group is upgraded at the
        # classic generation, the new member waits for partitions.
        error, c, c_epoch, parts = consumer_heartbeat(kb, group, uuid.uuid4().hex, 0, ["t"])
        assert (error, c_epoch, parts) == (NONE, gen + 1, []), error
        assert c is not None
        # The classic member is told to join again, and gets one partition
        # at the new epoch, from no leader.
        assert group_wire.heartbeat(s, group, gen, x, None) == REBALANCE_IN_PROGRESS
        j = group_wire.join_group(s, group, x, None, metadata=subscription(["t"]))
        assert (j.error, j.generation, j.leader, j.members) == (NONE, gen + 1, "", [])
        assert j.protocol == "range"
        error, mine = group_wire.sync_group(s, group, j.generation, x, None)
        assert error == NONE
        kept = assigned(mine)["t"]
        assert len(kept) == 1
        assert group_wire.heartbeat(s, group, j.generation, x, None) == NONE
        # Commits carry the member epoch as the generation.
        assert group_wire.offset_commit(s, group, gen, x, None, "t", kept[0], 1) == (
            ILLEGAL_GENERATION
        )
        assert group_wire.offset_commit(s, group, j.generation, x, None, "t", kept[0], 1) == NONE
        # The consumer member gets the other partition, now released.
        error, _, _, parts = consumer_heartbeat(kb, group, c, c_epoch)
        assert (error, parts) == (NONE, [1 - kept[0]])
        # DescribeGroups: not a classic group now.
        assert group_wire.describe_group(s, group).error == GROUP_ID_NOT_FOUND
        # The consumer member leaves: a classic group again, at the classic
        # member's generation, rebalancing.
        assert consumer_heartbeat(kb, group, c, -1)[0] == NONE
        assert group_wire.heartbeat(s, group, j.generation, x, None) == REBALANCE_IN_PROGRESS
        assert group_wire.heartbeat(s, group, gen, x, None) == ILLEGAL_GENERATION
        again = group_wire.join_group(s, group, x, None, metadata=subscription(["t"]))
        assert again.error == NONE
        assert again.leader == x and [m[0] for m in again.members] == [x]
        assert again.generation > j.generation
        assert group_wire.describe_group(s, group).state == "CompletingRebalance"


def test_a_migrated_group_survives_a_broker_restart(data_dir: Path) -> None:
    b = start(data_dir)
    try:
        ottla.Admin(b.path).create_topic("t", partitions=2)
        group = group_name()
        with connect(b) as s:
            x, _gen = classic_member(s, group)
            _, c, c_epoch, _ = consumer_heartbeat(b, group, uuid.uuid4().hex, 0, ["t"])
            assert c is not None
            j = group_wire.join_group(s, group, x, None, metadata=subscription(["t"]))
            error, mine = group_wire.sync_group(s, group, j.generation, x, None)
            assert error == NONE
    finally:
        b.close()
    b = start(data_dir)
    try:
        with connect(b) as s:
            # Both members go on at their epochs: the classic one with its
            # generation and partition, the consumer one with the other.
            assert group_wire.heartbeat(s, group, j.generation, x, None) == NONE
            error, again = group_wire.sync_group(s, group, j.generation, x, None)
            assert (error, assigned(again)) == (NONE, assigned(mine))
            error, _, epoch, parts = consumer_heartbeat(b, group, c, c_epoch)
            assert (error, epoch) == (NONE, c_epoch)
            assert sorted(parts + assigned(mine)["t"]) == [0, 1]
    finally:
        b.close()


def test_the_disabled_policy_keeps_the_protocols_apart(data_dir: Path) -> None:
    b = start(data_dir, policy="DISABLED")
    try:
        ottla.Admin(b.path).create_topic("t", partitions=2)
        classic_group, consumer_group = group_name(), group_name()
        with connect(b) as s:
            x, gen = classic_member(s, classic_group)
            error, *_ = consumer_heartbeat(b, classic_group, uuid.uuid4().hex, 0, ["t"])
            assert error == GROUP_ID_NOT_FOUND
            assert group_wire.heartbeat(s, classic_group, gen, x, None) == NONE
            assert consumer_heartbeat(b, consumer_group, uuid.uuid4().hex, 0, ["t"])[0] == NONE
            # The policy governs conversions only: a classic member of a
            # consumer group with members is served by it (as Kafka 4.x).
            j = group_wire.join_group(s, consumer_group, "m", None, metadata=subscription(["t"]))
            assert j.error == NONE
    finally:
        b.close()
    with pytest.raises(ValueError, match="group_consumer_migration_policy"):
        start(data_dir, policy="sideways")


def test_a_classic_member_of_another_protocol_type_is_refused(kb: ottla.Broker) -> None:
    ottla.Admin(kb.path).create_topic("t", partitions=2)
    group = group_name()
    assert consumer_heartbeat(kb, group, uuid.uuid4().hex, 0, ["t"])[0] == NONE
    body = (
        kafka_wire._str(group)
        + struct.pack(">ii", 6000, 6000)
        + kafka_wire._str("m")
        + kafka_wire._str(None)
        + kafka_wire._str("connect")
        + struct.pack(">i", 1)
        + kafka_wire._str("range")
        + struct.pack(">i", 0)
    )
    with connect(kb) as s:
        s.sendall(kafka_wire.frame(group_wire.API_JOIN_GROUP, 5, 3, body))
        cid, data = kafka_wire.response(s)
    assert cid == 3
    assert struct.unpack_from(">h", data, 4)[0] == INCONSISTENT_GROUP_PROTOCOL
