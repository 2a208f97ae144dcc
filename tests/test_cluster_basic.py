"""Three ``ottla serve`` processes as a cluster (issue 14): they elect a
controller, register, and answer Metadata from the replicated metadata;
a topic with three replicas is visible from every node; ``kill -9`` of a
partition's leader moves its leadership; a producer with ``acks=all``
carries on after the fail-over and a consumer reads every acknowledged
record. Real processes (``ottla.Cluster``), free loopback ports, temporary
directories; every process is stopped and reaped at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import free_port, wait_until

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

pytestmark = pytest.mark.timeout(180)


class Cluster:
    """Three nodes, each a voter of the metadata quorum: an ``ottla.Cluster``
    without its proxies (clients and peers connect to the brokers' own
    listeners) nor its shortened timeouts."""

    def __init__(self, cluster: ottla.Cluster) -> None:
        self.cluster = cluster
        self.ids = cluster.node_ids

    def start(self, node_id: int) -> None:
        """Start the node again (same directory, same ports) once it listens;
        the test checks that the others list it."""
        self.cluster.start(node_id, wait=False)

    def bootstrap(self, only: list[int] | None = None) -> str:
        return ",".join(self.cluster.address(i) for i in (only or self.ids))

    def kill(self, node_id: int) -> None:
        self.cluster.kill(node_id)

    def stop(self, node_id: int) -> int | None:
        """SIGTERM, then the exit status."""
        return self.cluster.stop(node_id)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ottla.Cluster(tmp_path / "cluster", 3, fast=False, proxies=False) as c:
        yield Cluster(c)


def metadata(bootstrap: str, topic: str | None = None) -> Any:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.list_topics(topic=topic, timeout=10)


def live_brokers(bootstrap: str) -> set[int]:
    try:
        return set(metadata(bootstrap).brokers)
    except Exception:
        return set()


def partition(bootstrap: str, topic: str, p: int = 0) -> Any:
    """The partition as the cluster answers, asking again (as clients do)
    while a node answers an error for it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return metadata(bootstrap, topic).topics[topic].partitions[p]
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_for_cluster(c: Cluster) -> None:
    for i in c.ids:

        def lists_all(i: int = i) -> bool:
            return live_brokers(c.bootstrap([i])) == set(c.ids)

        assert wait_until(lists_all, timeout=60), f"node {i} never listed every broker"


def create_topic(bootstrap: str, name: str, partitions: int = 1, rf: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=10)
    futures[name].result(timeout=30)


def test_three_nodes_agree_on_brokers_topics_and_a_new_leader_after_kill_9(
    cluster: Cluster,
) -> None:
    c = cluster
    wait_for_cluster(c)
    create_topic(c.bootstrap([2]), "events", partitions=3, rf=3)
    for i in c.ids:
        for p in range(3):

            def all_in_sync(i: int = i, p: int = p) -> bool:
                return len(partition(c.bootstrap([i]), "events", p).isrs) == 3

            assert wait_until(all_in_sync, timeout=30)
            part = partition(c.bootstrap([i]), "events", p)
            assert sorted(part.replicas) == [1, 2, 3]
    leaders = [partition(c.bootstrap(), "events", p).leader for p in range(3)]
    assert sorted(leaders) == [1, 2, 3], "leaders spread over the brokers"
    victim = leaders[0]
    c.kill(victim)
    alive = [i for i in c.ids if i != victim]
    for i in alive:

        def new_leader(i: int = i) -> bool:
            return partition(c.bootstrap([i]), "events", 0).leader in alive

        def lists_the_alive(i: int = i) -> bool:
            return live_brokers(c.bootstrap([i])) == set(alive)

        assert wait_until(new_leader, timeout=30), "a new leader was elected"
        assert wait_until(lists_the_alive, timeout=30)
        assert victim not in partition(c.bootstrap([i]), "events", 0).isrs
    # Restarted from its directory: it registers again and is listed again.
    c.start(victim)
    assert wait_until(lambda: live_brokers(c.bootstrap(alive)) == set(c.ids), timeout=60)


def produce_one(producer: Any, topic: str, value: bytes, timeout: float = 30.0) -> bool:
    """Produce one record and wait for its acknowledgement: True if acked."""
    outcome: list[Any] = []
    producer.produce(topic, value, on_delivery=lambda err, msg: outcome.append(err))
    deadline = time.monotonic() + timeout
    while not outcome and time.monotonic() < deadline:
        producer.poll(0.05)
    return bool(outcome) and outcome[0] is None


def test_acks_all_producer_survives_kill_9_of_the_leader(cluster: Cluster) -> None:
    c = cluster
    wait_for_cluster(c)
    create_topic(c.bootstrap(), "orders", partitions=1, rf=3)
    assert wait_until(lambda: len(partition(c.bootstrap(), "orders").isrs) == 3, timeout=30)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": c.bootstrap(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            "message.timeout.ms": 60000,
            "topic.metadata.refresh.interval.ms": 500,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 200,
        }
    )
    acked: list[bytes] = []
    for n in range(50):
        v = f"before-{n}".encode()
        assert produce_one(producer, "orders", v), "produced before the kill"
        acked.append(v)
    leader = partition(c.bootstrap(), "orders").leader
    c.kill(leader)
    killed_at = time.monotonic()
    first_ack: float | None = None
    for n in range(50):
        v = f"after-{n}".encode()
        if produce_one(producer, "orders", v, timeout=60):
            acked.append(v)
            if first_ack is None:
                first_ack = time.monotonic() - killed_at
    producer.flush(30)
    assert first_ack is not None, "no record acknowledged after the fail-over"
    print(f"\nkill -9 of the leader -> first acks=all acknowledgement: {first_ack:.2f} s")
    alive = [i for i in c.ids if i != leader]
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": c.bootstrap(alive),
            "group.id": "check",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe(["orders"])
        seen: set[bytes] = set()
        deadline = time.monotonic() + 60
        while not set(acked) <= seen and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                seen.add(m.value())
    finally:
        consumer.close()
    missing = [v for v in acked if v not in seen]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"


def test_a_node_directory_refuses_an_embedded_producer_another_id_and_a_lone_broker(
    tmp_path: Path,
) -> None:
    port = free_port()
    voters = f"1@127.0.0.1:{port}"
    data = tmp_path / "n1"
    # A one-voter cluster is a cluster too.
    with ottla.Broker(
        data, node_id=1, controller_listen=f"127.0.0.1:{port}", controller_quorum_voters=voters
    ) as broker:
        assert broker.node_id == 1
        assert wait_until(lambda: live_brokers(broker.bootstrap_servers) == {1}, timeout=30)
        with pytest.raises(ottla.IllegalStateError, match=r"bootstrap\.servers=127\.0\.0\.1:"):
            ottla.Producer(data)
    with pytest.raises(ottla.InvalidConfigError, match="belongs to cluster node 1"):
        ottla.Broker(
            data,
            node_id=2,
            controller_listen=f"127.0.0.1:{port}",
            controller_quorum_voters=f"2@127.0.0.1:{port}",
        )
    with pytest.raises(ottla.InvalidConfigError, match="--node-id 1"):
        ottla.Broker(data)
    with pytest.raises(ValueError, match="controller_listen and controller_quorum_voters"):
        ottla.Broker(tmp_path / "other", node_id=1)
    with pytest.raises(ValueError, match="controller_quorum_voters"):
        ottla.Broker(
            tmp_path / "other",
            node_id=1,
            controller_listen="127.0.0.1:0",
            controller_quorum_voters="1@nowhere",
        )


def test_a_restarted_node_catches_up_and_a_graceful_stop_moves_leadership(
    cluster: Cluster,
) -> None:
    c = cluster
    wait_for_cluster(c)
    create_topic(c.bootstrap(), "audit", partitions=1, rf=3)
    assert wait_until(lambda: len(partition(c.bootstrap(), "audit").isrs) == 3, timeout=30)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": c.bootstrap(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    acked: list[bytes] = []

    def produce(prefix: str, n: int) -> None:
        for i in range(n):
            v = f"{prefix}-{i}".encode()
            if produce_one(producer, "audit", v, timeout=60):
                acked.append(v)

    produce("a", 20)
    first = partition(c.bootstrap(), "audit").leader
    c.kill(first)
    produce("b", 20)
    # Back from its directory: registers, catches up, rejoins the ISR.
    c.start(first)
    assert wait_until(lambda: len(partition(c.bootstrap(), "audit").isrs) == 3, timeout=60)
    produce("c", 20)
    # SIGTERM: a controlled shutdown moves the leadership before it stops.
    second = partition(c.bootstrap(), "audit").leader
    assert c.stop(second) == 0
    alive = [i for i in c.ids if i != second]
    assert partition(c.bootstrap(alive), "audit").leader in alive
    produce("d", 20)
    producer.flush(30)
    assert len(acked) == 80, f"only {len(acked)} of 80 acknowledged"
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": c.bootstrap(alive),
            "group.id": "audit-check",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe(["audit"])
        seen: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(set(seen)) < len(acked) and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                seen.append(m.value())
    finally:
        consumer.close()
    assert set(seen) == set(acked)
