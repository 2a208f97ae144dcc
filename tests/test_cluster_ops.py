"""Cluster operations (issue 14): a broker added and a partition
reassigned onto it, a broker removed, and a rolling restart, each while an
``acks=all`` idempotent producer (confluent-kafka) and a consumer group
run; afterwards the checker proves that no acknowledged record was lost or
duplicated and that the replicas agree, and the consumer saw only
retriable errors. Then the ``ottla cluster`` command's subcommands:
describe, reassign (one partition, a JSON plan, --list, --cancel),
elect-leaders (preferred, unclean) and remove-broker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_until
from ottla.cluster import (
    Cluster,
    alter_reassignments,
    describe,
    list_reassignments,
    move_off_broker,
    unregister_broker,
)
from ottla.testing.checker import History, check, read_partition_log

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

TOPIC = "ops"

# librdkafka's own transient conditions, reported while brokers come and go.
TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._PARTITION_EOF,
    KafkaError._RESOLVE,
}


def create_topic(bootstrap: str, name: str, partitions: int = 3, rf: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, partitions, rf)])[name]
    fut.result(30)


class Load:
    """An idempotent acks=all producer and a consumer group member, each in
    a thread, recording into a checker History."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.history = History()
        self.consumer_errors: list[tuple[int, str, bool]] = []
        self.stopping = threading.Event()
        self.consuming = threading.Event()
        self.sent = 0
        self._producer_thread = threading.Thread(target=self._produce, daemon=True)
        self._consumer_thread = threading.Thread(target=self._consume, daemon=True)
        self._read_ids: set[str] = set()

    def __enter__(self) -> Load:
        self._producer_thread.start()
        self._consumer_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _produce(self) -> None:
        p = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                "message.timeout.ms": 120000,
            }
        )

        def delivered(err: Any, msg: Any) -> None:
            key = msg.key().decode()
            if err is not None:
                self.history.failed("p", key, str(err))
            else:
                self.history.ack(
                    msg.topic(), msg.partition(), msg.offset(), key, idempotent=True, producer="p"
                )

        n = 0
        while not self.stopping.is_set():
            # Bursts of ten, every 5 ms: a couple of thousand records a second.
            for _ in range(10):
                try:
                    p.produce(
                        self.topic, key=f"p-{n}".encode(), value=b"x" * 100, on_delivery=delivered
                    )
                    n += 1
                except BufferError:
                    break
            p.poll(0.005)
        self.sent = n
        remaining = p.flush(120)
        assert remaining == 0, f"{remaining} records never delivered"

    def _consume(self) -> None:
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "ops-group",
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        c.subscribe([self.topic])
        try:
            while not self.consuming.is_set():
                msg = c.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    self.consumer_errors.append((err.code(), err.str(), err.retriable()))
                    continue
                raw = msg.key()
                key = raw.decode() if isinstance(raw, bytes) else None
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic is not None and partition is not None and offset is not None
                self.history.read(topic, partition, offset, key, "c")
                if key is not None:
                    self._read_ids.add(key)
        finally:
            c.close()

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._producer_thread.join(180)
        # The consumer reads on until it has seen every acknowledged record.
        acked = {a.id for a in self.history.acks}
        wait_until(lambda: acked <= self._read_ids, timeout=120, interval=0.2)
        self.consuming.set()
        self._consumer_thread.join(30)

    def assert_clean(self) -> None:
        assert not self.history.failures, self.history.failures[:5]
        assert len(self.history.acks) == self.sent > 0
        bad = [e for e in self.consumer_errors if not e[2] and e[0] not in TRANSIENT]
        assert not bad, bad
        unread = {a.id for a in self.history.acks} - self._read_ids
        assert not unread, f"{len(unread)} acknowledged records never consumed"


def wait_for_more_acks(load: Load, n: int) -> None:
    target = len(load.history.acks) + n
    wait_until(lambda: len(load.history.acks) > target, timeout=60)


def check_replicas(c: Cluster, topic: str, history: History) -> str:
    parts = c.wait_in_sync(topic, timeout=120)
    hws = {(topic, p.partition): c.high_watermark(topic, p.partition) for p in parts}
    time.sleep(2)  # followers learn the last high watermark from their next fetch
    for i in c.node_ids:
        if c.state(i) == "running":
            c.stop(i)
    logs = {
        (topic, p.partition): {
            r: read_partition_log(c.data_dir(r), topic, p.partition) for r in p.replicas
        }
        for p in parts
    }
    result = check(history, logs, hws)
    assert result.ok, result.report()
    return result.report()


def replicas_of(bootstrap: str, topic: str) -> dict[int, tuple[int, ...]]:
    return {p.partition: p.replicas for p in describe(bootstrap)[2] if p.topic == topic}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "cluster", 3) as c:
        yield c


@pytest.mark.timeout(400)
def test_add_broker_reassign_onto_it_then_remove_it_under_load(cluster: Cluster) -> None:
    c = cluster
    create_topic(c.bootstrap_servers, TOPIC)
    with Load(c.bootstrap_servers, TOPIC) as load:
        wait_until(lambda: len(load.history.acks) > 2000, timeout=60)
        # (a) a new broker, and partition 0 moved onto it (off broker 1).
        new = c.add_broker()
        assert new == 4
        before = replicas_of(c.bootstrap_servers, TOPIC)[0]
        target = [4 if r == 1 else r for r in before]
        answers = alter_reassignments(c.bootstrap_servers, {(TOPIC, 0): target})
        assert answers == {(TOPIC, 0): (0, None)}
        assert wait_until(
            lambda: (
                not list_reassignments(c.bootstrap_servers)
                and replicas_of(c.bootstrap_servers, TOPIC)[0] == tuple(target)
            ),
            timeout=120,
            interval=0.2,
        ), (list_reassignments(c.bootstrap_servers), replicas_of(c.bootstrap_servers, TOPIC))
        acked_mid = len(load.history.acks)
        wait_until(lambda: len(load.history.acks) > acked_mid + 2000, timeout=60)
        # (b) the broker removed again: its replicas move back off it, and
        # it deletes its copy of the topic (it holds no partition of it).
        move_off_broker(c.bootstrap_servers, new)
        gone = c.data_dir(new) / ".ottla" / "topics" / TOPIC
        assert wait_until(lambda: not gone.exists(), timeout=30), "the moved replica kept its data"
        c.remove_broker(new)
        assert new not in c.node_ids
        brokers = {b[0] for b in describe(c.bootstrap_servers)[0]}
        assert brokers == {1, 2, 3}
        assert all(4 not in r for r in replicas_of(c.bootstrap_servers, TOPIC).values())
        acked_mid = len(load.history.acks)
        wait_until(lambda: len(load.history.acks) > acked_mid + 2000, timeout=60)
    load.assert_clean()
    print(check_replicas(c, TOPIC, load.history))


@pytest.mark.timeout(400)
def test_rolling_restart_under_load(cluster: Cluster) -> None:
    c = cluster
    create_topic(c.bootstrap_servers, TOPIC)
    with Load(c.bootstrap_servers, TOPIC) as load:
        wait_until(lambda: len(load.history.acks) > 2000, timeout=60)
        for node in c.node_ids:
            c.stop(node)
            c.start(node)
            c.wait_in_sync(TOPIC, timeout=120)
            wait_for_more_acks(load, 1000)
    load.assert_clean()
    print(check_replicas(c, TOPIC, load.history))


def cli(bootstrap: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ottla", "-b", bootstrap, "cluster", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


@pytest.mark.timeout(400)
def test_cluster_cli_describe_reassign_elect_remove(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    b = c.bootstrap_servers
    create_topic(b, "t", partitions=2)
    r = cli(b, "describe")
    assert r.returncode == 0, r.stderr
    assert "controller:" in r.stdout and "under-replicated partitions: 0" in r.stdout
    for node in (1, 2, 3):
        assert f"{node}  " in r.stdout
    # Errors in Kafka's codes: unknown broker, nothing to cancel.
    r = cli(b, "reassign", "--topic", "t", "--partition", "0", "--replicas", "1,9")
    assert r.returncode == 1 and "error 39" in r.stderr, r.stderr
    r = cli(b, "reassign", "--cancel", "--topic", "t", "--partition", "0")
    assert r.returncode == 1 and "error 85" in r.stderr, r.stderr
    r = cli(b, "reassign", "--list")
    assert r.returncode == 0 and "no reassignment in progress" in r.stdout
    # Preferred election: leadership moved by a restart goes back.
    leader = c.leader("t", 0)
    preferred = replicas_of(b, "t")[0][0]
    assert leader == preferred
    c.stop(preferred)
    assert wait_until(lambda: c.leader("t", 0) != preferred, timeout=30)
    c.start(preferred)
    c.wait_in_sync("t", timeout=120)
    assert c.leader("t", 0) != preferred
    r = cli(b, "elect-leaders", "--preferred", "--topic", "t", "--partition", "0")
    assert r.returncode == 0 and "t-0: elected" in r.stdout, (r.stdout, r.stderr)
    assert wait_until(lambda: c.leader("t", 0) == preferred, timeout=30)
    r = cli(b, "elect-leaders", "--preferred", "--topic", "t", "--partition", "0")
    assert r.returncode == 0 and "not needed" in r.stdout, (r.stdout, r.stderr)
    # A fourth broker; a plan moves partition 1 onto it, with --wait.
    c.add_broker()
    current = replicas_of(b, "t")[1]
    target = [4, *current[1:]]
    plan = {"version": 1, "partitions": [{"topic": "t", "partition": 1, "replicas": target}]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    r = cli(b, "reassign", "--plan", str(path), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    assert "t-1: reassigning" in r.stdout and "done" in r.stdout
    assert replicas_of(b, "t")[1] == tuple(target)
    # A reassignment that cannot finish (its new replica is stopped) is
    # listed, then cancelled back to the original replicas.
    c.stop(4)
    original = replicas_of(b, "t")[0]
    r = cli(b, "reassign", "--topic", "t", "--partition", "0", "--replicas", "4,2,3")
    assert r.returncode == 0, r.stderr
    r = cli(b, "reassign", "--list")
    assert r.returncode == 0 and "t" in r.stdout and "4" in r.stdout, r.stdout
    r = cli(b, "reassign", "--cancel", "--topic", "t", "--partition", "0")
    assert r.returncode == 0 and "cancelled" in r.stdout, r.stderr
    assert wait_until(lambda: not list_reassignments(b), timeout=30)
    assert set(replicas_of(b, "t")[0]) == set(original)
    c.start(4)
    # remove-broker: broker 4 holds partition 1's replica; moved off, then
    # the command waits for it to stop, and unregisters it.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ottla",
            "-b",
            b,
            "cluster",
            "remove-broker",
            "4",
            "--timeout",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(
            lambda: all(4 not in r for r in replicas_of(b, "t").values()), timeout=120
        )
        c.stop(4)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "unregistered" in out
    assert {x[0] for x in describe(b)[0]} == {1, 2, 3}
    # Unregistering it again: Kafka's BROKER_ID_NOT_REGISTERED (102).
    with pytest.raises(Exception, match="error 102"):
        unregister_broker(b, 4)
    # A broker holding replicas is not unregistered.
    with pytest.raises(Exception, match="holds replicas"):
        unregister_broker(b, 1)


@pytest.mark.timeout(300)
def test_unclean_election_of_an_out_of_sync_replica(tmp_path: Path) -> None:
    # One controller (node 1), so that brokers 2 and 3 may both stop.
    with Cluster(tmp_path / "cluster", 3, controllers=1, min_insync_replicas=1) as c:
        b = c.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": b})
        fut = admin.create_topics([NewTopic("u", 1, replica_assignment=[[2, 3]])])["u"]
        fut.result(30)
        assert replicas_of(b, "u")[0] == (2, 3)
        c.stop(3)
        p = Producer({"bootstrap.servers": b, "acks": "all"})
        p.produce("u", b"after 3 stopped")
        assert p.flush(30) == 0
        c.stop(2)  # the last in-sync replica: the partition has no leader
        c.start(3)
        assert wait_until(lambda: 3 in {x[0] for x in describe(b)[0]}, 30)
        part = next(x for x in describe(b)[2] if x.topic == "u")
        assert part.leader is None and part.isr == (2,)
        r = cli(b, "elect-leaders", "--preferred", "--topic", "u", "--partition", "0")
        assert r.returncode == 1 and "PREFERRED_LEADER_NOT_AVAILABLE" in r.stderr, r.stderr
        r = cli(b, "elect-leaders", "--unclean", "--topic", "u", "--partition", "0")
        assert r.returncode == 0 and "u-0: elected" in r.stdout, (r.stdout, r.stderr)

        def unclean_leader() -> bool:
            part = next(x for x in describe(b)[2] if x.topic == "u")
            return (part.leader, part.isr) == (3, (3,))

        assert wait_until(unclean_leader, timeout=30)
