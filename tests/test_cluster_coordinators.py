"""The group coordinator in a cluster (issue 14): it lives with the leader
of ``__consumer_offsets`` (a replicated internal topic, created on the
first FindCoordinator), and when its broker is killed with ``kill -9`` the
coordinator moves to the new leader, with every committed offset: a
consumer group carries on from its last commit, re-reading nothing before
it (confluent-kafka and kafka-python). A killed coordinator restarted as a
follower answers group requests with NOT_COORDINATOR. Real ``ottla serve``
processes (``ottla_cluster``), loopback only, all stopped at the end."""

from __future__ import annotations

import socket
import struct
import time
import uuid
from typing import Any

import pytest

import kafka_wire
from helpers import wait_until
from ottla import Cluster

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

pytestmark = pytest.mark.timeout(240)

OFFSETS_TOPIC = "__consumer_offsets"
FIND_COORDINATOR = 10
NOT_COORDINATOR = 16
PARTITIONS = 3
RECORDS = 300


def find_coordinator(address: str, group: str) -> tuple[int, int]:
    """FindCoordinator v0 for ``group`` sent to ``address``: (error, node id)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(kafka_wire.frame(FIND_COORDINATOR, 0, 5, kafka_wire._str(group)))
        _, body = kafka_wire.response(s)
    error, node = struct.unpack(">hi", body[:6])
    return error, node


def coordinator(cluster: Cluster, group: str, timeout: float = 30.0) -> int:
    """The running node every running node names as ``group``'s coordinator."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        named = set()
        for n in cluster.running:
            try:
                last = find_coordinator(cluster.address(n), group)
            except OSError as e:
                last = e
                continue
            named.add(last[1] if last[0] == 0 else -1)
        if len(named) == 1 and (only := named.pop()) in cluster.running:
            return only
        time.sleep(0.1)
    raise AssertionError(f"no coordinator for {group} after {timeout} s: {last}")


def heartbeat_v0(address: str, group: str) -> int:
    """A Heartbeat (v0) for an unknown member of ``group``: its error code."""
    host, port = address.rsplit(":", 1)
    body = kafka_wire._str(group) + struct.pack(">i", 1) + kafka_wire._str("nobody")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(kafka_wire.frame(12, 0, 6, body))
        _, data = kafka_wire.response(s)
    (error,) = struct.unpack(">h", data[:2])
    return int(error)


def make_topic(cluster: Cluster) -> str:
    topic = f"coord-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(cluster.client_config())
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 3)]).values():
        f.result(30)
    cluster.wait_in_sync(topic)
    p = confluent_kafka.Producer(
        {**cluster.client_config(), "acks": "all", "enable.idempotence": True}
    )
    for i in range(RECORDS):
        p.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0
    return topic


def kill_the_coordinator(cluster: Cluster, group: str) -> int:
    """``kill -9`` of the group's coordinator; waits until another node
    coordinates it, and returns that one."""
    old = coordinator(cluster, group)
    cluster.kill(old)
    new = coordinator(cluster, group)
    assert new != old
    return new


def assert_led_by_the_offsets_leader(cluster: Cluster, group: str) -> None:
    assert coordinator(cluster, group) == cluster.leader(OFFSETS_TOPIC, timeout=5)


def committed_by_a_new_consumer(cluster: Cluster, topic: str, group: str) -> dict[int, int]:
    c = confluent_kafka.Consumer({**cluster.client_config(), "group.id": group})
    try:
        tps = [confluent_kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=30)}
    finally:
        c.close()


def test_a_group_carries_on_from_its_commits_after_kill_9_of_its_coordinator_confluent_kafka(
    ottla_cluster: Cluster,
) -> None:
    cluster = ottla_cluster
    topic = make_topic(cluster)
    group = f"g-{uuid.uuid4().hex[:8]}"
    c = confluent_kafka.Consumer(
        {
            **cluster.client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    try:
        c.subscribe([topic])
        before: list[Any] = []
        deadline = time.monotonic() + 60
        while len(before) < RECORDS // 2:
            assert time.monotonic() < deadline, f"read {len(before)} records"
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                before.append(m)
        c.commit(asynchronous=False)
        tps = [confluent_kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=30)}
        for m in before:
            assert m.offset() < committed[m.partition()]
        assert committed_by_a_new_consumer(cluster, topic, group) == committed

        kill_the_coordinator(cluster, group)

        # The commits moved with the coordinator, and the group resumes
        # from them: nothing before a commit is read again.
        assert committed_by_a_new_consumer(cluster, topic, group) == committed
        after: list[Any] = []
        seen = {m.value() for m in before}
        deadline = time.monotonic() + 90
        while len(seen) < RECORDS:
            assert time.monotonic() < deadline, f"read {len(seen)} of {RECORDS} records"
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                after.append(m)
                seen.add(m.value())
        for m in after:
            assert m.offset() >= committed[m.partition()], (m.partition(), m.offset())
        # The new coordinator takes the next commit (once the member is
        # back in the group: it polls meanwhile).
        end = {p: RECORDS // PARTITIONS for p in range(PARTITIONS)}
        final = [confluent_kafka.TopicPartition(topic, p, o) for p, o in end.items()]
        deadline = time.monotonic() + 60
        while True:
            try:
                c.commit(offsets=final, asynchronous=False)
                break
            except confluent_kafka.KafkaException:
                assert time.monotonic() < deadline, "no commit through the new coordinator"
                c.poll(0.2)
        assert committed_by_a_new_consumer(cluster, topic, group) == end
        assert_led_by_the_offsets_leader(cluster, group)
    finally:
        c.close()


def test_a_group_carries_on_after_kill_9_of_its_coordinator_kafka_python(
    ottla_cluster: Cluster,
) -> None:
    kafka = pytest.importorskip("kafka")
    cluster = ottla_cluster
    topic = make_topic(cluster)
    group = f"kp-{uuid.uuid4().hex[:8]}"
    c = kafka.KafkaConsumer(
        topic,
        **cluster.client_config("kafka-python"),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        metadata_max_age_ms=500,
        retry_backoff_ms=100,
    )
    try:
        before: list[Any] = []
        deadline = time.monotonic() + 60
        while len(before) < RECORDS // 2:
            assert time.monotonic() < deadline, f"read {len(before)} records"
            for recs in c.poll(timeout_ms=200, max_records=RECORDS // 2 - len(before)).values():
                before.extend(recs)
        c.commit()
        committed = {p: c.committed(kafka.TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)}
        assert sum(committed.values()) == len(before)
        assert committed_by_a_new_consumer(cluster, topic, group) == committed

        kill_the_coordinator(cluster, group)

        assert committed_by_a_new_consumer(cluster, topic, group) == committed
        seen = {r.value for r in before}
        after: list[Any] = []
        deadline = time.monotonic() + 90
        while len(seen) < RECORDS:
            assert time.monotonic() < deadline, f"read {len(seen)} of {RECORDS} records"
            for recs in c.poll(timeout_ms=200).values():
                after.extend(recs)
                seen.update(r.value for r in recs)
        for r in after:
            assert r.offset >= committed[r.partition], (r.partition, r.offset)
        assert_led_by_the_offsets_leader(cluster, group)
    finally:
        c.close()


def test_a_coordinator_restarted_as_a_follower_no_longer_answers_for_the_group(
    ottla_cluster: Cluster,
) -> None:
    cluster = ottla_cluster
    group = f"f-{uuid.uuid4().hex[:8]}"
    old = coordinator(cluster, group)
    # Named as soon as the image has the topic; coordinating once it took
    # the leadership and loaded the (no) groups.
    assert wait_until(
        lambda: heartbeat_v0(cluster.address(old), group) != NOT_COORDINATOR, timeout=30
    )
    for n in cluster.running:
        if n != old:
            assert heartbeat_v0(cluster.address(n), group) == NOT_COORDINATOR
    new = kill_the_coordinator(cluster, group)
    cluster.start(old)
    assert coordinator(cluster, group) == new
    assert new != old, "leadership of __consumer_offsets moved back"
    # The restarted broker follows the offsets partition: group requests
    # there are refused so that clients find the new coordinator, which
    # FindCoordinator on the restarted broker names too.
    assert heartbeat_v0(cluster.address(old), group) == NOT_COORDINATOR
    assert find_coordinator(cluster.address(old), group) == (0, new)
    assert wait_until(
        lambda: heartbeat_v0(cluster.address(new), group) != NOT_COORDINATOR, timeout=30
    )


@pytest.mark.skipif(
    tuple(int(x) for x in confluent_kafka.libversion()[0].split(".")[:2]) < (2, 10),
    reason="librdkafka before 2.10 has no group.protocol=consumer",
)
@pytest.mark.ottla_cluster(group_consumer_heartbeat_interval_ms=250)
def test_a_consumer_protocol_group_keeps_its_assignment_across_kill_9_of_its_coordinator(
    ottla_cluster: Cluster,
) -> None:
    """KIP-848: the new coordinator reads the group's epochs and
    assignments back from ``__consumer_offsets``, so the member heartbeats
    on at its epoch with its partitions (no revocation, nothing lost)."""
    cluster = ottla_cluster
    topic = make_topic(cluster)
    group = f"k-{uuid.uuid4().hex[:8]}"
    events: list[tuple[str, list[int]]] = []

    def assigned(_c: Any, tps: list[Any]) -> None:
        events.append(("assign", sorted(tp.partition for tp in tps)))

    def revoked(_c: Any, tps: list[Any]) -> None:
        events.append(("revoke", sorted(tp.partition for tp in tps)))

    c = confluent_kafka.Consumer(
        {
            **cluster.client_config(),
            "group.id": group,
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "reconnect.backoff.max.ms": 200,
        }
    )
    seen: list[Any] = []

    def consume_until(n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len({m.value() for m in seen}) < n:
            assert time.monotonic() < deadline, (len(seen), events)
            m = c.poll(0.1)
            if m is None or m.error() is not None:
                continue
            seen.append(m)
            try:
                c.commit(message=m, asynchronous=False)
            except confluent_kafka.KafkaException:
                pass  # the coordinator is moving: this one may come again

    try:
        c.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
        consume_until(RECORDS // 2)
        assert events == [("assign", [0, 1, 2])], events
        kill_the_coordinator(cluster, group)
        consume_until(RECORDS)
        assert events == [("assign", [0, 1, 2])], events
        # Each record committed once read: at most the one in hand when the
        # coordinator died comes again.
        assert len(seen) - len({m.value() for m in seen}) <= 1
        assert_led_by_the_offsets_leader(cluster, group)
    finally:
        c.close()
