"""Transactions in a cluster (issue 15): the transaction coordinator lives
with the leader of ``__transaction_state`` (a replicated internal topic
created on the first transactional FindCoordinator) and moves with it;
markers for partitions other brokers lead travel to them as
WriteTxnMarkers. Real ``ottla serve`` processes (``ottla_cluster``),
``kill -9`` of the coordinator's broker between transactions, mid-commit
and under a consume-transform-produce loop; zombie fencing across brokers;
the raw protocol's NOT_COORDINATOR and WriteTxnMarkers' authorization.
Loopback only, every process stopped at the end."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kafka_wire
import ottla
from ottla import Cluster

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaError, KafkaException, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

pytestmark = pytest.mark.timeout(300)

TXN_TOPIC = "__transaction_state"
METADATA = 3
FIND_COORDINATOR = 10
INIT_PRODUCER_ID = 22
WRITE_TXN_MARKERS = 27
TRANSACTION_KEY = 1
NOT_LEADER_OR_FOLLOWER = 6
NOT_COORDINATOR = 16
CLUSTER_AUTHORIZATION_FAILED = 31
PARTITIONS = 3


def _address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def find_txn_coordinator(address: str, transactional_id: str) -> tuple[int, int]:
    """FindCoordinator v1 (key type 1) sent to ``address``: (error, node)."""
    body = kafka_wire._str(transactional_id) + struct.pack(">b", TRANSACTION_KEY)
    with socket.create_connection(_address(address), timeout=10) as s:
        s.sendall(kafka_wire.frame(FIND_COORDINATOR, 1, 5, body))
        _, data = kafka_wire.response(s)
    (error,) = struct.unpack(">h", data[4:6])
    (n,) = struct.unpack(">h", data[6:8])
    (node,) = struct.unpack(">i", data[8 + max(n, 0) : 12 + max(n, 0)])
    return error, node


def txn_coordinator(cluster: Cluster, transactional_id: str, timeout: float = 60.0) -> int:
    """The running node every running node names as the coordinator."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        named = set()
        for n in cluster.running:
            try:
                last = find_txn_coordinator(cluster.address(n), transactional_id)
            except OSError as e:
                last = e
                named.add(-2)
                continue
            named.add(last[1] if last[0] == 0 else -1)
        if len(named) == 1 and (only := named.pop()) in cluster.running:
            return only
        time.sleep(0.1)
    raise AssertionError(f"no coordinator for {transactional_id} after {timeout} s: {last}")


def listed_brokers_v1(address: str) -> set[int]:
    """The broker ids a Metadata v1 answer (no topics) from ``address`` lists."""
    with socket.create_connection(_address(address), timeout=10) as s:
        s.sendall(kafka_wire.frame(METADATA, 1, 3, struct.pack(">i", 0)))
        _, data = kafka_wire.response(s)
    (n,) = struct.unpack(">i", data[:4])
    at, ids = 4, set()
    for _ in range(n):
        (node,) = struct.unpack(">i", data[at : at + 4])
        (host,) = struct.unpack(">h", data[at + 4 : at + 6])
        at += 6 + host + 4
        (rack,) = struct.unpack(">h", data[at : at + 2])
        at += 2 + max(rack, 0)
        ids.add(node)
    return ids


def init_producer_id_v0(address: str, transactional_id: str) -> int:
    """InitProducerId v0 for ``transactional_id``: its error code."""
    body = kafka_wire._str(transactional_id) + struct.pack(">i", 60_000)
    with socket.create_connection(_address(address), timeout=30) as s:
        s.sendall(kafka_wire.frame(INIT_PRODUCER_ID, 0, 7, body))
        _, data = kafka_wire.response(s)
    (error,) = struct.unpack(">h", data[4:6])
    return int(error)


def write_txn_markers_v1(address: str, topic: str, partition: int) -> int:
    """WriteTxnMarkers v1 (an ABORT of producer 1234567, epoch 0) for one
    partition: that partition's error code."""
    body = (
        kafka_wire.uvarint(2)
        + struct.pack(">qhb", 1234567, 0, 0)
        + kafka_wire.uvarint(2)
        + kafka_wire.compact_str(topic)
        + kafka_wire.uvarint(2)
        + struct.pack(">i", partition)
        + kafka_wire.uvarint(0)
        + struct.pack(">i", 0)
        + kafka_wire.uvarint(0)
        + kafka_wire.uvarint(0)
    )
    host, port = _address(address)
    r = kafka_wire.Reader(kafka_wire.flexible_request(host, port, WRITE_TXN_MARKERS, 1, body))
    assert r.count() == 1
    assert r.i64() == 1234567
    assert r.count() == 1
    assert r.cstr() == topic
    assert r.count() == 1
    assert r.i32() == partition
    return r.i16()


def make_topic(cluster: Cluster, partitions: int = PARTITIONS) -> str:
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(cluster.client_config())
    for f in admin.create_topics([NewTopic(topic, partitions, 3)]).values():
        f.result(30)
    cluster.wait_in_sync(topic)
    return topic


def producer(cluster: Cluster, transactional_id: str) -> Any:
    return confluent_kafka.Producer(
        {
            **cluster.client_config(),
            "transactional.id": transactional_id,
            "topic.metadata.refresh.interval.ms": 500,
            "retry.backoff.ms": 50,
        }
    )


def retried(call: Callable[[], None], timeout: float = 120.0) -> bool:
    """``call`` (a commit or an abort) again while it fails retriably: True
    once it succeeded, False if the transaction must be aborted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return True
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if err.txn_requires_abort():
                return False
            if err.retriable() and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise


def transaction(p: Any, topic: str, values: list[bytes]) -> None:
    """One committed transaction of ``values`` (spread over the partitions),
    aborted and done again for as long as the client says it must."""
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, "no commit"
        p.begin_transaction()
        for i, v in enumerate(values):
            p.produce(topic, v, partition=i % PARTITIONS)
        if retried(lambda: p.commit_transaction(30)):
            return
        assert retried(lambda: p.abort_transaction(30))


def committed_values(cluster: Cluster, topic: str, partitions: int = PARTITIONS) -> list[bytes]:
    """Everything a read_committed consumer reads from ``topic`` up to its end."""
    c = confluent_kafka.Consumer(
        {
            **cluster.client_config(),
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        c.assign(
            [TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partitions)]
        )
        out: list[bytes] = []
        eof: set[int] = set()
        deadline = time.monotonic() + 60
        while len(eof) < partitions:
            assert time.monotonic() < deadline, f"read {len(out)} records, ends of {eof}"
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                continue
            eof.discard(m.partition())
            out.append(m.value())
        return out
    finally:
        c.close()


def values(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


def test_commits_are_read_and_aborts_are_not_over_partitions_of_different_brokers(
    ottla_cluster: Cluster,
) -> None:
    cluster = ottla_cluster
    topic = make_topic(cluster)
    tid = f"t-{uuid.uuid4().hex[:8]}"
    p = producer(cluster, tid)
    p.init_transactions(60)
    coordinator = txn_coordinator(cluster, tid)
    assert coordinator == cluster.leader(TXN_TOPIC, timeout=5)
    leaders = {cluster.leader(topic, i) for i in range(PARTITIONS)}
    # Markers go to other brokers: some partition is led elsewhere.
    assert leaders - {coordinator}, (leaders, coordinator)
    first, aborted, second = values("c1", 30), values("a", 30), values("c2", 30)
    transaction(p, topic, first)
    p.begin_transaction()
    for i, v in enumerate(aborted):
        p.produce(topic, v, partition=i % PARTITIONS)
    assert p.flush(30) == 0
    p.abort_transaction(30)
    transaction(p, topic, second)
    assert sorted(committed_values(cluster, topic)) == sorted(first + second)


def test_a_kafka_python_transaction_commits_in_the_cluster(ottla_cluster: Cluster) -> None:
    kafka = pytest.importorskip("kafka")
    cluster = ottla_cluster
    topic = make_topic(cluster)
    p = kafka.KafkaProducer(
        **cluster.client_config("kafka-python"), transactional_id=f"kp-{uuid.uuid4().hex[:8]}"
    )
    try:
        p.init_transactions()
        p.begin_transaction()
        sent = values("kp", 30)
        for i, v in enumerate(sent):
            p.send(topic, value=v, partition=i % PARTITIONS)
        p.commit_transaction()
        p.begin_transaction()
        for i, v in enumerate(values("kp-aborted", 9)):
            p.send(topic, value=v, partition=i % PARTITIONS)
        p.flush()
        p.abort_transaction()
    finally:
        p.close(timeout=10)
    assert sorted(committed_values(cluster, topic)) == sorted(sent)


def test_kill_9_of_the_coordinator_between_transactions_and_mid_commit(
    ottla_cluster: Cluster,
) -> None:
    cluster = ottla_cluster
    topic = make_topic(cluster)
    tid = f"k-{uuid.uuid4().hex[:8]}"
    p = producer(cluster, tid)
    p.init_transactions(60)
    expected = values("before", 30)
    transaction(p, topic, expected)
    took = []
    for round in range(3):
        old = txn_coordinator(cluster, tid)
        start = time.monotonic()
        cluster.kill(old)
        batch = values(f"after-kill-{round}", 30)
        transaction(p, topic, batch)
        took.append(time.monotonic() - start)
        expected += batch
        assert txn_coordinator(cluster, tid) != old
        cluster.start(old)
        cluster.wait_in_sync(topic)
        cluster.wait_in_sync(TXN_TOPIC)
    print(f"kill -9 of the transaction coordinator to the next commit: {took}")

    # Mid-commit: the coordinator is killed while EndTxn is in flight.
    for round in range(2):
        old = txn_coordinator(cluster, tid)
        batch = values(f"mid-commit-{round}", 30)
        p.begin_transaction()
        for i, v in enumerate(batch):
            p.produce(topic, v, partition=i % PARTITIONS)
        assert p.flush(30) == 0
        outcome: dict[str, Any] = {}

        def commit(outcome: dict[str, Any]) -> None:
            try:
                outcome["ok"] = retried(lambda: p.commit_transaction(60))
            except KafkaException as e:
                outcome["error"] = e

        t = threading.Thread(target=commit, args=(outcome,))
        t.start()
        cluster.kill(old)
        t.join(150)
        assert not t.is_alive()
        assert "error" not in outcome, outcome
        if outcome["ok"]:
            expected += batch
        else:
            assert retried(lambda: p.abort_transaction(30))
        cluster.start(old)
        cluster.wait_in_sync(topic)
        cluster.wait_in_sync(TXN_TOPIC)
    transaction(p, topic, values("last", 10))
    expected += values("last", 10)
    got = committed_values(cluster, topic)
    assert len(got) == len(set(got)), "a record read twice"
    assert sorted(got) == sorted(expected)


def restart_once_moved(cluster: Cluster, transactional_id: str, old: int) -> threading.Thread:
    """Start the killed node ``old`` again once another node coordinates
    ``transactional_id`` (in a thread: the caller may be blocked in the
    client): a crashed broker that restarts, as in production. librdkafka
    (2.16) sends TxnOffsetCommit to the group coordinator it cached once
    that broker is back (then follows its NOT_COORDINATOR); the restarted
    node answered Metadata before it was unfenced, leaving itself out, so
    librdkafka dropped the cached broker and waited for it forever
    (docs/design/transactions.md): this test hung about one run in three."""

    def run() -> None:
        txn_coordinator(cluster, transactional_id)
        cluster.start(old)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(150)
def test_consume_transform_produce_through_a_coordinator_kill(ottla_cluster: Cluster) -> None:
    cluster = ottla_cluster
    source = make_topic(cluster)
    sink = make_topic(cluster)
    inputs = values("in", 300)
    plain = confluent_kafka.Producer(
        {**cluster.client_config(), "acks": "all", "enable.idempotence": True}
    )
    for i, v in enumerate(inputs):
        plain.produce(source, v, partition=i % PARTITIONS)
    assert plain.flush(30) == 0
    group = f"ctp-{uuid.uuid4().hex[:8]}"
    tid = f"ctp-{uuid.uuid4().hex[:8]}"
    c = confluent_kafka.Consumer(
        {
            **cluster.client_config(),
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 500,
        }
    )
    p = producer(cluster, tid)
    p.init_transactions(60)
    done = 0
    restarted: threading.Thread | None = None
    deadline = time.monotonic() + 200
    try:
        c.subscribe([source])
        while done < len(inputs):
            assert time.monotonic() < deadline, f"{done} records processed"
            msgs = [m for m in c.consume(50, 0.5) if m.error() is None]
            if not msgs:
                continue
            p.begin_transaction()
            try:
                for m in msgs:
                    p.produce(sink, m.value(), partition=m.partition())
                p.send_offsets_to_transaction(
                    c.position(c.assignment()), c.consumer_group_metadata(), 30
                )
                ok = retried(lambda: p.commit_transaction(30))
            except KafkaException as e:
                if e.args[0].fatal():
                    raise
                ok = False
            if ok:
                done += len(msgs)
            else:
                # Aborted: the input is read again from the last commit.
                assert retried(lambda: p.abort_transaction(30))
                for tp in c.committed(c.assignment(), timeout=30):
                    if tp.offset < 0:
                        tp.offset = confluent_kafka.OFFSET_BEGINNING
                    c.seek(tp)
            if done >= 100 and restarted is None:
                old = txn_coordinator(cluster, tid)
                cluster.kill(old)
                restarted = restart_once_moved(cluster, tid, old)
    finally:
        c.close()
    assert restarted is not None
    restarted.join(120)
    got = committed_values(cluster, sink)
    assert len(got) == len(set(got)), "a record written twice"
    assert sorted(got) == sorted(inputs)


def test_a_restarted_broker_lists_itself_before_it_is_unfenced(ottla_cluster: Cluster) -> None:
    """What made the loop above hang: a node back from kill -9 answered
    Metadata before the controller unfenced it, leaving itself out while its
    peers still listed it; librdkafka decommissioned the broker it had
    cached as group coordinator and never sent TxnOffsetCommit again. It
    answers once unfenced now (as KRaft brokers open their listeners):
    every answer of the restarted node lists it."""
    cluster = ottla_cluster
    victim = cluster.node_ids[0]
    address = cluster.address(victim)
    cluster.kill(victim)
    cluster.start(victim, wait=False)
    answers: list[set[int]] = []
    deadline = time.monotonic() + 60
    while not answers or answers[-1] != set(cluster.node_ids):
        assert time.monotonic() < deadline, answers
        try:
            answers.append(listed_brokers_v1(address))
        except OSError:
            time.sleep(0.02)
    assert all(victim in a for a in answers), answers


def test_a_zombie_is_fenced_after_the_coordinator_moved(ottla_cluster: Cluster) -> None:
    cluster = ottla_cluster
    topic = make_topic(cluster)
    tid = f"z-{uuid.uuid4().hex[:8]}"
    zombie = producer(cluster, tid)
    zombie.init_transactions(60)
    transaction(zombie, topic, values("zombie-ok", 6))
    old = txn_coordinator(cluster, tid)
    cluster.kill(old)
    heir = producer(cluster, tid)
    heir.init_transactions(90)
    assert txn_coordinator(cluster, tid) != old
    transaction(heir, topic, values("heir", 6))
    with pytest.raises(KafkaException) as fenced:
        zombie.begin_transaction()
        for i, v in enumerate(values("zombie-late", 6)):
            zombie.produce(topic, v, partition=i % PARTITIONS)
        zombie.commit_transaction(30)
    err: KafkaError = fenced.value.args[0]
    assert err.fatal() or err.txn_requires_abort(), err
    assert sorted(committed_values(cluster, topic)) == sorted(
        values("zombie-ok", 6) + values("heir", 6)
    )


def test_raw_not_coordinator_and_markers_only_from_leaders(ottla_cluster: Cluster) -> None:
    cluster = ottla_cluster
    topic = make_topic(cluster, partitions=1)
    tid = f"raw-{uuid.uuid4().hex[:8]}"
    p = producer(cluster, tid)
    p.init_transactions(60)
    coordinator = txn_coordinator(cluster, tid)
    for n in cluster.running:
        if n != coordinator:
            assert init_producer_id_v0(cluster.address(n), tid) == NOT_COORDINATOR
    assert init_producer_id_v0(cluster.address(coordinator), tid) == 0
    # A marker sent to a follower of the partition is refused; its leader
    # writes it (an ABORT for a producer with no open transaction: a no-op).
    leader = cluster.leader(topic)
    for n in cluster.running:
        want = 0 if n == leader else NOT_LEADER_OR_FOLLOWER
        assert write_txn_markers_v1(cluster.address(n), topic, 0) == want


def test_write_txn_markers_needs_cluster_action(tmp_path: Path) -> None:
    with (
        ottla.Broker(
            tmp_path / "data",
            listeners=["PLAINTEXT://127.0.0.1:0"],
            authorizer="standard",
            super_users=["User:admin"],
        ) as b,
        ottla.Broker(tmp_path / "open") as open_broker,
    ):
        admin = AdminClient({"bootstrap.servers": open_broker.bootstrap_servers})
        for f in admin.create_topics([NewTopic("m", 1)]).values():
            f.result(30)
        assert write_txn_markers_v1(open_broker.bootstrap_servers, "m", 0) == 0
        # User:ANONYMOUS, without CLUSTER_ACTION on the cluster.
        address = b.listeners["PLAINTEXT"]
        assert write_txn_markers_v1(address, "m", 0) == CLUSTER_AUTHORIZATION_FAILED
