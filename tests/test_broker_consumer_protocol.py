"""The KIP-848 consumer group protocol (``group.protocol=consumer``) with a
real client, confluent-kafka (librdkafka 2.x): the broker assigns
partitions (``uniform`` or ``range``), members give partitions up before
others get them, a killed member is fenced after the session timeout, and
commits are checked against the member epoch."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient

import kafka_wire
import ottla
from helpers import CLI_CODE, Spawn

pytestmark = pytest.mark.skipif(
    tuple(int(x) for x in ck.libversion()[0].split(".")[:2]) < (2, 10),
    reason="librdkafka before 2.10 has no group.protocol=consumer",
)

# Heartbeats every 200 ms so partitions move within a second; members
# silent for 3 s are fenced.
HEARTBEAT_MS = 200
SESSION_MS = 3000


@pytest.fixture
def kb(data_dir: Path) -> Iterator[ottla.Broker]:
    b = ottla.Broker(
        data_dir,
        group_consumer_heartbeat_interval_ms=HEARTBEAT_MS,
        group_consumer_session_timeout_ms=SESSION_MS,
    )
    try:
        yield b
    finally:
        b.close()


def make_topic(b: ottla.Broker, name: str, partitions: int, records: int = 0) -> None:
    ottla.Admin(b.path).create_topic(name, partitions=partitions)
    if records:
        p = ck.Producer({"bootstrap.servers": b.bootstrap_servers})
        for i in range(records):
            p.produce(name, value=b"%d" % i, partition=i % partitions)
        assert p.flush(15) == 0


Event = tuple[str, str, int]  # (member, "assign" | "revoke", partition)


class Member:
    """A ``group.protocol=consumer`` consumer recording its (incremental)
    assignment events in one shared list."""

    def __init__(
        self, b: ottla.Broker, group: str, name: str, events: list[Event], **conf: Any
    ) -> None:
        self.name = name
        self.events = events
        self.c = ck.Consumer(
            {
                "bootstrap.servers": b.bootstrap_servers,
                "group.id": group,
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **conf,
            }
        )
        self.values: list[bytes] = []
        self.errors: list[ck.KafkaError] = []

    def subscribe(self, topics: list[str]) -> None:
        self.c.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, _c: Any, tps: list[ck.TopicPartition]) -> None:
        self.events.extend((self.name, "assign", tp.partition) for tp in tps)

    def _revoked(self, _c: Any, tps: list[ck.TopicPartition]) -> None:
        self.events.extend((self.name, "revoke", tp.partition) for tp in tps)

    def poll(self) -> None:
        m = self.c.poll(0.05)
        if m is None:
            return
        error = m.error()
        if error is not None:
            self.errors.append(error)
            return
        value = m.value()
        assert value is not None
        self.values.append(value)

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.c.assignment()}


def poll_until(members: list[Member], cond: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, {m.name: m.owned() for m in members}
        for m in members:
            m.poll()


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


def group_name() -> str:
    return "cg-" + uuid.uuid4().hex[:8]


def test_partitions_move_between_members_without_being_held_twice(kb: ottla.Broker) -> None:
    make_topic(kb, "t", 4, records=40)
    group = group_name()
    events: list[Event] = []
    a = Member(kb, group, "a", events)
    b = Member(kb, group, "b", events)
    try:
        a.subscribe(["t"])
        poll_until([a], lambda: a.owned() == {0, 1, 2, 3} and len(a.values) == 40)
        b.subscribe(["t"])
        poll_until([a, b], lambda: len(a.owned()) == 2 and len(b.owned()) == 2)
        assert a.owned() | b.owned() == {0, 1, 2, 3}
        never_owned_twice(events)
        # b leaves: a takes its partitions back.
        b.c.close()
        poll_until([a], lambda: a.owned() == {0, 1, 2, 3})
        never_owned_twice(events)
    finally:
        a.c.close()


def test_commits_are_kept_and_a_new_member_resumes_from_them(kb: ottla.Broker) -> None:
    make_topic(kb, "t", 2, records=20)
    group = group_name()
    events: list[Event] = []
    a = Member(kb, group, "a", events)
    try:
        a.subscribe(["t"])
        poll_until([a], lambda: len(a.values) == 20)
        # Committed with the member id and member epoch (librdkafka sends
        # the epoch in the generation field before OffsetCommit v9).
        committed = a.c.commit(asynchronous=False)
        assert committed is not None
        assert sorted((tp.partition, tp.offset, tp.error) for tp in committed) == [
            (0, 10, None),
            (1, 10, None),
        ]
    finally:
        a.c.close()
    p = ck.Producer({"bootstrap.servers": kb.bootstrap_servers})
    for i in range(4):
        p.produce("t", value=b"new%d" % i, partition=i % 2)
    assert p.flush(15) == 0
    b = Member(kb, group, "b", events)
    try:
        b.subscribe(["t"])
        poll_until([b], lambda: len(b.values) == 4)
        assert sorted(b.values) == [b"new0", b"new1", b"new2", b"new3"]
        got = b.c.committed([ck.TopicPartition("t", 0), ck.TopicPartition("t", 1)], timeout=10)
        assert [tp.offset for tp in got] == [10, 10]
    finally:
        b.c.close()


def test_the_range_assignor_and_consumer_group_describe(kb: ottla.Broker) -> None:
    make_topic(kb, "r", 4)
    group = group_name()
    events: list[Event] = []
    conf = {"group.remote.assignor": "range"}
    a = Member(kb, group, "a", events, **conf)
    b = Member(kb, group, "b", events, **conf)
    admin = AdminClient({"bootstrap.servers": kb.bootstrap_servers})
    try:
        a.subscribe(["r"])
        b.subscribe(["r"])
        poll_until([a, b], lambda: len(a.owned()) == 2 and len(b.owned()) == 2)
        # Range: contiguous ranges.
        assert sorted([sorted(a.owned()), sorted(b.owned())]) == [[0, 1], [2, 3]]
        never_owned_twice(events)
        # ConsumerGroupDescribe (librdkafka uses it for consumer groups).
        desc = admin.describe_consumer_groups([group])[group].result(10)
        assert desc.partition_assignor == "range"
        assert desc.type == ck.ConsumerGroupType.CONSUMER
        assert str(desc.state).endswith("STABLE"), desc.state
        members = {m.member_id: m for m in desc.members}
        assert len(members) == 2
        assigned = sorted(
            sorted(tp.partition for tp in m.assignment.topic_partitions) for m in desc.members
        )
        assert assigned == [[0, 1], [2, 3]]
        # ListGroups lists it as a "consumer" group.
        listed = admin.list_consumer_groups().result(10).valid
        mine = [g for g in listed if g.group_id == group]
        assert len(mine) == 1 and mine[0].type == ck.ConsumerGroupType.CONSUMER
    finally:
        a.c.close()
        b.c.close()


def test_a_killed_member_is_fenced_after_the_session_timeout(
    spawn: Spawn, kb: ottla.Broker
) -> None:
    make_topic(kb, "six", 6)
    group = group_name()
    code = """
import sys, confluent_kafka as ck
c = ck.Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                 "group.protocol": "consumer"})
c.subscribe(["six"])
while True:
    c.poll(0.1)
    print(sorted(tp.partition for tp in c.assignment()), flush=True)
"""
    child = spawn(code, kb.bootstrap_servers, group)
    events: list[Event] = []
    mine = Member(kb, group, "mine", events)
    try:
        mine.subscribe(["six"])

        def child_has_three() -> bool:
            lines = child.lines()
            return bool(lines) and lines[-1].count(",") == 2

        poll_until([mine], lambda: len(mine.owned()) == 3 and child_has_three(), timeout=40)
        child.sigkill()  # no leave heartbeat: only the session timeout tells the broker
        poll_until([mine], lambda: mine.owned() == set(range(6)), timeout=40)
    finally:
        mine.c.close()


def test_a_classic_member_joins_a_consumer_group_whatever_the_migration_policy(
    data_dir: Path,
) -> None:
    """``group.consumer.migration.policy`` governs conversions only: with it
    disabled a classic member still joins a consumer group with members
    (served by the consumer-group coordinator, as Kafka 4.x serves it), and
    a partition is never owned by both members at once
    (tests/test_group_migration.py: the conversions)."""
    kb = ottla.Broker(
        data_dir,
        group_consumer_heartbeat_interval_ms=HEARTBEAT_MS,
        group_consumer_session_timeout_ms=SESSION_MS,
        group_consumer_migration_policy="disabled",
    )
    make_topic(kb, "t", 2)
    group = group_name()
    events: list[Event] = []
    a = Member(kb, group, "a", events)
    classic = ck.Consumer(
        {
            "bootstrap.servers": kb.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        a.subscribe(["t"])
        poll_until([a], lambda: a.owned() == {0, 1})
        classic.subscribe(["t"])
        deadline = time.monotonic() + 30
        mine: set[int] = set()
        while time.monotonic() < deadline and not mine:
            classic.poll(0.1)
            a.poll()
            mine = {tp.partition for tp in classic.assignment()}
            assert not mine & a.owned(), (mine, a.owned())
        assert len(mine) == 1, "the classic member never got a partition"
        poll_until([a], lambda: a.owned() == {0, 1} - mine)
    finally:
        classic.close()
        a.c.close()
        kb.close()


def test_an_unknown_server_assignor_is_refused(kb: ottla.Broker) -> None:
    make_topic(kb, "t", 1)
    errors: list[ck.KafkaError] = []
    c = ck.Consumer(
        {
            "bootstrap.servers": kb.bootstrap_servers,
            "group.id": group_name(),
            "group.protocol": "consumer",
            "group.remote.assignor": "sticky",
            "error_cb": errors.append,
        }
    )
    try:
        c.subscribe(["t"])
        deadline = time.monotonic() + 15
        while not errors and time.monotonic() < deadline:
            msg = c.poll(0.1)
            error = None if msg is None else msg.error()
            if error is not None:
                errors.append(error)
        assert errors, "no error reported"
        # librdkafka makes UNSUPPORTED_ASSIGNOR a fatal error, quoting it.
        assert any(e.code() == ck.KafkaError._FATAL and "assignor" in e.str() for e in errors), (
            errors
        )
        assert c.assignment() == []
    finally:
        c.close()


def test_embedded_members_and_consumer_protocol_members_keep_apart(
    kb: ottla.Broker, data_dir: Path
) -> None:
    """One group name, two doors: whoever holds the group first keeps the
    other out, so no partition is assigned by both."""
    make_topic(kb, "t", 2, records=4)
    group = group_name()
    events: list[Event] = []
    a = Member(kb, group, "a", events)
    try:
        a.subscribe(["t"])
        poll_until([a], lambda: a.owned() == {0, 1})
        with pytest.raises(ottla.GroupMemberConflictError, match="coordinated by a broker"):
            ottla.Consumer(data_dir, "t", group_id=group)
    finally:
        a.c.close()
    # Now embedded members hold the group: a consumer-protocol member is
    # refused (GROUP_ID_NOT_FOUND: "not a consumer group"), fatally for
    # librdkafka.
    with ottla.Consumer(data_dir, "t", group_id=group, auto_offset_reset="earliest") as embedded:
        embedded.poll(timeout_ms=500)
        assert embedded.assignment() == {ottla.TopicPartition("t", 0), ottla.TopicPartition("t", 1)}
        b = Member(kb, group, "b", events)
        try:
            b.subscribe(["t"])
            deadline = time.monotonic() + 15
            while not b.errors and time.monotonic() < deadline:
                b.poll()
            assert b.errors, "no error reported"
            error = b.errors[0]
            assert error.code() == ck.KafkaError._FATAL, error
            assert "group id does not exist" in error.str(), error
            assert b.owned() == set()
        finally:
            b.c.close()


def test_a_regex_subscription_follows_new_topics(kb: ottla.Broker) -> None:
    """librdkafka sends a ``^`` subscription as SubscribedTopicRegex (v1);
    the broker matches it against every topic, and a topic created later
    bumps the group epoch and joins the assignment."""
    make_topic(kb, "re-a", 2)
    make_topic(kb, "other", 1)
    events: list[Event] = []
    a = Member(kb, group_name(), "a", events)

    def owned() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in a.c.assignment()}

    try:
        a.c.subscribe(["^re-.*"])
        poll_until([a], lambda: owned() == {("re-a", 0), ("re-a", 1)})
        make_topic(kb, "re-b", 1)
        poll_until([a], lambda: owned() == {("re-a", 0), ("re-a", 1), ("re-b", 0)})
    finally:
        a.c.close()


@pytest.mark.parametrize(
    ("interval", "session"), [(0, 45000), (1000, 1000), (2**31, 2**31 + 1), (1000, -1)]
)
def test_consumer_protocol_timing_settings_are_checked(
    data_dir: Path, interval: int, session: int
) -> None:
    with pytest.raises(ValueError, match="group_consumer_heartbeat_interval_ms"):
        ottla.Broker(
            data_dir,
            group_consumer_heartbeat_interval_ms=interval,
            group_consumer_session_timeout_ms=session,
        )


def test_members_join_again_after_a_broker_restart(data_dir: Path) -> None:
    """The broker forgets consumer groups when it stops (their offsets
    stay); a member's next heartbeat gets UNKNOWN_MEMBER_ID, not a fatal
    error, and it joins again and resumes from its commits."""

    def start(port: int = 0) -> ottla.Broker:
        return ottla.Broker(
            data_dir,
            port=port,
            group_consumer_heartbeat_interval_ms=HEARTBEAT_MS,
            group_consumer_session_timeout_ms=SESSION_MS,
        )

    b = start()
    port = b.port
    make_topic(b, "t", 2, records=10)
    events: list[Event] = []
    a = Member(b, group_name(), "a", events, **{"enable.auto.commit": True})
    try:
        a.subscribe(["t"])
        poll_until([a], lambda: len(a.values) == 10)
        a.c.commit(asynchronous=False)
        b.close()
        b = start(port)
        p = ck.Producer({"bootstrap.servers": b.bootstrap_servers})
        p.produce("t", value=b"after", partition=1)
        assert p.flush(15) == 0
        poll_until([a], lambda: len(a.values) == 11, timeout=40)
        assert a.values[-1] == b"after"
        assert not [e for e in a.errors if e.fatal()], a.errors
        assert a.owned() == {0, 1}
    finally:
        a.c.close()
        b.close()


def test_ottla_serve_takes_the_consumer_protocol_settings(data_dir: Path, spawn: Spawn) -> None:
    """``ottla serve --group-consumer-heartbeat-interval-ms`` reaches the
    members (a raw ConsumerGroupHeartbeat v0 reads it back); a session
    timeout not above the interval is refused at start."""
    flags = ["--group-consumer-heartbeat-interval-ms", "250"]
    flags += ["--group-consumer-session-timeout-ms", "4000"]
    server = spawn(CLI_CODE, "serve", "--data", data_dir, "--listen", "127.0.0.1:0", *flags)
    addr = server.wait_line(lambda s: s.startswith("listening on "), timeout=30).split()[-1]
    host, port = addr.rsplit(":", 1)
    # group, member id "" (v0: the broker names it), epoch 0, no instance or
    # rack, rebalance timeout, topics ["t"], no assignor, no owned partitions.
    body = kafka_wire.compact_str("serve-settings") + kafka_wire.compact_str("")
    body += struct.pack(">i", 0) + kafka_wire.compact_str(None) + kafka_wire.compact_str(None)
    body += struct.pack(">i", 30000) + kafka_wire.uvarint(2) + kafka_wire.compact_str("t")
    body += kafka_wire.compact_str(None) + kafka_wire.uvarint(1) + kafka_wire.uvarint(0)
    answer = kafka_wire.flexible_request(host, int(port), 68, 0, body)
    _throttle, error = struct.unpack(">ih", answer[:6])
    assert error == 0, answer
    at = 6
    for _ in range(2):  # error message, member id (compact nullable strings)
        n = answer[at]
        at += 1 + max(n - 1, 0)
    _epoch, interval = struct.unpack(">ii", answer[at : at + 8])
    assert interval == 250
    bad = subprocess.run(
        [
            *(sys.executable, "-c", CLI_CODE, "serve", "--data", str(data_dir / "b")),
            *("--listen", "127.0.0.1:0", flags[0], "5000", flags[2], "5000"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "group_consumer_heartbeat_interval_ms" in bad.stderr, bad.stderr
