"""Two kafka-python consumers of one classic group split a topic's partitions.

The report behind this file: with kafka-python 3.0.x, a two-member group
sometimes ended with one member holding every partition. The cause is in
the client (see docs/COMPATIBILITY.md, "kafka-python 3.0.x"): when its leader
rejoins because its view of the topic changed (its first assignment was
computed before it had the topic's metadata) and ``poll()`` returns before the
rebalance completes, the completed JoinGroup/SyncGroup is never applied; the
member stays "rebalancing" with heartbeats off, its session runs out and the
other member takes everything. These tests hold the broker to what Kafka
does for a group started together and for one joined later, with Kafka's
``group.initial.rebalance.delay.ms`` set as its docs advise for consumers
started together, so the leader's first assignment sees the topic.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import ottla

pytest.importorskip("kafka")
import kafka

TOPIC = "four"
PARTITIONS = set(range(4))


class Member(threading.Thread):
    """One consumer polling in its own thread, publishing its assignment."""

    def __init__(self, b: ottla.Broker, group: str, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.consumer = kafka.KafkaConsumer(
            TOPIC,
            bootstrap_servers=b.bootstrap_servers,
            group_id=group,
            client_id=name,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=200,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._parts: frozenset[int] = frozenset()
        self.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.consumer.poll(timeout_ms=200)
                with self._lock:
                    self._parts = frozenset(tp.partition for tp in self.consumer.assignment())
        finally:
            self.consumer.close()

    def parts(self) -> frozenset[int]:
        with self._lock:
            return self._parts

    def leave(self) -> None:
        self.stop.set()
        self.join(30)


@pytest.fixture
def group_broker(data_dir: Path) -> Iterator[ottla.Broker]:
    ottla.Admin(data_dir).create_topic(TOPIC, partitions=4)
    with ottla.Producer(data_dir) as p:
        for i in range(200):
            p.send(TOPIC, b"v%d" % i, key=b"k%d" % i)
    b = ottla.Broker(data_dir, group_initial_rebalance_delay_ms=500)
    try:
        yield b
    finally:
        b.close()


def split(members: list[Member]) -> list[frozenset[int]]:
    """Wait until the members hold two partitions each, all four between
    them; the assignments seen last if they never do."""
    deadline = time.monotonic() + 40
    while True:
        parts = [m.parts() for m in members]
        if all(len(p) == 2 for p in parts) and parts[0] | parts[1] == PARTITIONS:
            return parts
        if time.monotonic() > deadline:
            return parts
        time.sleep(0.05)


@pytest.mark.parametrize("stagger", [False, True], ids=["together", "one-after-the-other"])
def test_two_members_split_four_partitions(group_broker: ottla.Broker, stagger: bool) -> None:
    for round_ in range(3):
        group = f"two-{round_}-" + uuid.uuid4().hex[:6]
        members = [Member(group_broker, group, f"{group}-a")]
        try:
            if stagger:
                # The first member alone holds all four, then shares them.
                deadline = time.monotonic() + 40
                while members[0].parts() != PARTITIONS:
                    assert time.monotonic() < deadline, members[0].parts()
                    time.sleep(0.05)
            members.append(Member(group_broker, group, f"{group}-b"))
            first = split(members)
            assert sorted(map(sorted, first)) == [[0, 1], [2, 3]], (round_, first)
            if round_ == 2:
                # Still split once a session timeout has passed: no member
                # stopped heartbeating and dropped out.
                time.sleep(7)
                assert split(members) == first, (round_, first)
        finally:
            for m in members:
                m.leave()
