"""Group administration on ottla.Broker: the initial rebalance delay
(``group_initial_rebalance_delay_ms``, Kafka's
``group.initial.rebalance.delay.ms``), DeleteGroups, OffsetDelete and
ListGroups v5 (state and type filters), with confluent-kafka's AdminClient,
kafka-python's KafkaAdminClient and raw frames (tests/group_wire.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import ottla
from group_wire import member_id, read_join, send_join
from helpers import CLI_CODE, Spawn

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka import ConsumerGroupState, ConsumerGroupType, KafkaException
from confluent_kafka.admin import AdminClient

NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69


@pytest.fixture
def delayed_broker(data_dir: Path) -> Iterator[ottla.Broker]:
    """A broker whose new groups wait 1.5 s for more members."""
    b = ottla.Broker(data_dir, group_initial_rebalance_delay_ms=1500)
    try:
        yield b
    finally:
        b.close()


def consumer(b: ottla.Broker, group: str, **conf: object) -> ck.Consumer:
    return ck.Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 100,
            "enable.auto.commit": False,
            **conf,
        }
    )


def poll_until(consumers: list[ck.Consumer], pred, timeout: float = 40.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, [c.assignment() for c in consumers]
        for c in consumers:
            m = c.poll(0.05)
            err = None if m is None else m.error()
            assert err is None or err.code() == ck.KafkaError._PARTITION_EOF, err


def test_members_started_together_get_one_assignment_each(delayed_broker: ottla.Broker) -> None:
    ottla.Admin(delayed_broker.path).create_topic("six", partitions=6)
    group = "together-" + uuid.uuid4().hex[:6]
    events: list[list[tuple[str, int]]] = [[], [], []]
    cs = [consumer(delayed_broker, group) for _ in range(3)]
    try:
        for i, c in enumerate(cs):

            def on_assign(_c: ck.Consumer, parts: list[ck.TopicPartition], i: int = i) -> None:
                events[i].append(("assign", len(parts)))

            def on_revoke(_c: ck.Consumer, parts: list[ck.TopicPartition], i: int = i) -> None:
                events[i].append(("revoke", len(parts)))

            c.subscribe(["six"], on_assign=on_assign, on_revoke=on_revoke)
        poll_until(cs, lambda: all(len(c.assignment()) == 2 for c in cs))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for c in cs:
                c.poll(0.05)
        # One rebalance: nobody got every partition first and gave some back.
        assert events == [[("assign", 2)]] * 3
    finally:
        for c in cs:
            c.close()


def test_without_a_delay_the_first_member_is_answered_alone(broker: ottla.Broker) -> None:
    g = "nodelay-" + uuid.uuid4().hex[:6]
    with socket.create_connection(("127.0.0.1", broker.port), timeout=20) as s1:
        send_join(s1, g, member_id(s1, g), None)
        j = read_join(s1)
        assert (j.error, j.generation, j.leader) == (0, 1, j.member_id)
        assert len(j.members) == 1


def two_joins(port: int, group: str) -> tuple[int, int]:
    """Two members join at once: (generation, members the leader sees)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as s1,
        socket.create_connection(("127.0.0.1", port), timeout=20) as s2,
    ):
        m1, m2 = member_id(s1, group), member_id(s2, group)
        send_join(s1, group, m1, None)
        send_join(s2, group, m2, None)
        first, second = read_join(s1), read_join(s2)
        assert (first.error, second.error) == (0, 0)
        assert first.generation == second.generation
        leader = first if first.leader == first.member_id else second
        return first.generation, len(leader.members)


def test_the_initial_delay_holds_the_first_join_for_later_members(
    delayed_broker: ottla.Broker,
) -> None:
    g = "delay-" + uuid.uuid4().hex[:6]
    assert two_joins(delayed_broker.port, g) == (1, 2), "both in the first generation"


def test_the_delay_is_checked() -> None:
    with pytest.raises(ValueError, match="group_initial_rebalance_delay_ms"):
        ottla.Broker("unused", group_initial_rebalance_delay_ms=-1)


def test_ottla_serve_takes_the_delay(data_dir: Path, spawn: Spawn) -> None:
    server = spawn(
        CLI_CODE,
        "serve",
        "--data",
        data_dir,
        "--listen",
        "127.0.0.1:0",
        "--group-initial-rebalance-delay-ms",
        1500,
    )
    addr = server.wait_line(lambda s: s.startswith("listening on "), timeout=30).split()[-1]
    port = int(addr.rsplit(":", 1)[1])
    assert two_joins(port, "cli-delay") == (1, 2)
    flags = ["--listen", "127.0.0.1:0", "--group-initial-rebalance-delay-ms", "-1"]
    bad = subprocess.run(
        [sys.executable, "-c", CLI_CODE, "serve", "--data", str(data_dir), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2, bad.stderr
    assert "--group-initial-rebalance-delay-ms" in bad.stderr


def commit(b: ottla.Broker, group: str, offsets: list[tuple[str, int, int]]) -> None:
    """A simple commit (no membership) of [(topic, partition, offset)]."""
    c = consumer(b, group)
    try:
        c.commit(
            offsets=[ck.TopicPartition(t, p, o) for t, p, o in offsets],
            asynchronous=False,
        )
    finally:
        c.close()


def error_code(fut: object) -> int | None:
    try:
        fut.result(timeout=20)  # type: ignore[attr-defined]
    except KafkaException as e:
        return int(e.args[0].code())
    return None


def test_delete_groups_with_confluent_admin(broker: ottla.Broker, data_dir: Path) -> None:
    admin_ = ottla.Admin(data_dir)
    admin_.create_topic("dg", partitions=2)
    done = "done-" + uuid.uuid4().hex[:6]
    active = "active-" + uuid.uuid4().hex[:6]
    embedded = "embedded-" + uuid.uuid4().hex[:6]
    commit(broker, done, [("dg", 0, 1), ("dg", 1, 2)])
    live = consumer(broker, active)
    ec = ottla.Consumer(data_dir, "dg", group_id=embedded)
    try:
        live.subscribe(["dg"])
        poll_until([live], lambda: len(live.assignment()) == 2)
        ec.poll(timeout_ms=100)
        client = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        futs = client.delete_consumer_groups(
            [done, active, embedded, "never-was"], request_timeout=10
        )
        codes = {g: error_code(f) for g, f in futs.items()}
        assert codes == {
            done: None,
            active: NON_EMPTY_GROUP,
            embedded: NON_EMPTY_GROUP,
            "never-was": GROUP_ID_NOT_FOUND,
        }
    finally:
        live.close()
        ec.close()
    # The same storage operation as Admin.delete_group: the embedded door
    # sees the group gone, and deleting it again finds nothing.
    assert done not in admin_.list_groups()
    assert admin_.group_offsets(done) == {}
    again = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    assert (
        error_code(again.delete_consumer_groups([done], request_timeout=10)[done])
        == GROUP_ID_NOT_FOUND
    )


def test_delete_groups_and_offsets_with_kafka_python(broker: ottla.Broker, data_dir: Path) -> None:
    pytest.importorskip("kafka")
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import (
        GroupIdNotFoundError,
        GroupSubscribedToTopicError,
        NoError,
        UnknownTopicOrPartitionError,
    )

    admin_ = ottla.Admin(data_dir)
    admin_.create_topic("subscribed", partitions=1)
    admin_.create_topic("other", partitions=1)
    g = "kp-" + uuid.uuid4().hex[:6]
    commit(broker, g, [("subscribed", 0, 3), ("other", 0, 4)])
    live = consumer(broker, g)
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        live.subscribe(["subscribed"])
        poll_until([live], lambda: len(live.assignment()) == 1)
        result = kp.delete_group_offsets(
            g,
            [
                TopicPartition("subscribed", 0),
                TopicPartition("other", 0),
                TopicPartition("nope", 0),
            ],
        )
        assert result == {
            TopicPartition("subscribed", 0): GroupSubscribedToTopicError,
            TopicPartition("other", 0): NoError,
            TopicPartition("nope", 0): UnknownTopicOrPartitionError,
        }
        left = {tp: o["committed"] for tp, o in admin_.group_offsets(g).items()}
        assert left == {("subscribed", 0): 3}
        with pytest.raises(GroupIdNotFoundError):
            kp.delete_group_offsets("never-was", [TopicPartition("other", 0)])
        assert kp.delete_groups([g]) == {g: "NonEmptyGroupError"}
        live.close()
        assert kp.delete_groups([g, "never-was"]) == {g: "OK", "never-was": "GroupIdNotFoundError"}
        assert admin_.group_offsets(g) == {}
    finally:
        kp.close()
        live.close()


def listed(b: ottla.Broker, **filters: object) -> dict[str, tuple[object, object]]:
    client = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    result = client.list_consumer_groups(request_timeout=15, **filters).result(timeout=20)
    assert not result.errors, result.errors
    return {g.group_id: (g.state, g.type) for g in result.valid}


def test_list_groups_by_state_and_type(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("lg", partitions=1)
    empty = "empty-" + uuid.uuid4().hex[:6]
    stable = "stable-" + uuid.uuid4().hex[:6]
    embedded = "embedded-" + uuid.uuid4().hex[:6]
    commit(broker, empty, [("lg", 0, 1)])
    live = consumer(broker, stable)
    ec = ottla.Consumer(data_dir, "lg", group_id=embedded)
    try:
        live.subscribe(["lg"])
        poll_until([live], lambda: len(live.assignment()) == 1)
        ec.poll(timeout_ms=100)
        everything = listed(broker)
        classic = ConsumerGroupType.CLASSIC
        assert everything == {
            empty: (ConsumerGroupState.EMPTY, classic),
            stable: (ConsumerGroupState.STABLE, classic),
            # Embedded members coordinate it, on the same directory.
            embedded: (ConsumerGroupState.STABLE, classic),
        }
        assert set(listed(broker, states={ConsumerGroupState.STABLE})) == {stable, embedded}
        assert set(listed(broker, states={ConsumerGroupState.EMPTY})) == {empty}
        assert listed(broker, types={ConsumerGroupType.CLASSIC}) == everything
        assert listed(broker, types={ConsumerGroupType.CONSUMER}) == {}
        pytest.importorskip("kafka")
        from kafka import KafkaAdminClient

        kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            groups = kp.list_groups(states_filter=["Empty"], types_filter=["classic"])
            assert [(g["group_id"], g["group_type"]) for g in groups] == [(empty, "classic")]
        finally:
            kp.close()
    finally:
        live.close()
        ec.close()
