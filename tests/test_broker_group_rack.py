"""``broker_rack`` (Kafka's ``broker.rack``): reported by Metadata and
DescribeCluster, and matched by the consumer-protocol assignors against the
members' ``client.rack`` (issue 13)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient

import ottla
from helpers import CLI_CODE, Spawn

pytestmark = pytest.mark.skipif(
    tuple(int(x) for x in ck.libversion()[0].split(".")[:2]) < (2, 10),
    reason="librdkafka before 2.10 has no group.protocol=consumer",
)


@pytest.fixture
def rb(data_dir: Path) -> Iterator[ottla.Broker]:
    b = ottla.Broker(
        data_dir,
        broker_rack="r1",
        group_consumer_heartbeat_interval_ms=200,
        group_consumer_session_timeout_ms=3000,
    )
    try:
        yield b
    finally:
        b.close()


def test_metadata_and_describe_cluster_report_the_rack(rb: ottla.Broker) -> None:
    admin = AdminClient({"bootstrap.servers": rb.bootstrap_servers})
    cluster = admin.describe_cluster().result(10)
    assert [(n.id, n.rack) for n in cluster.nodes] == [(0, "r1")]
    pytest.importorskip("kafka")
    import kafka

    c = kafka.KafkaConsumer(bootstrap_servers=rb.bootstrap_servers)
    try:
        c.topics()  # a Metadata round trip
        brokers: Any = c._client.cluster.brokers()
        assert [b.rack for b in brokers] == ["r1"]
    finally:
        c.close()


def test_without_a_rack_none_is_reported(broker: ottla.Broker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    assert [n.rack for n in admin.describe_cluster().result(10).nodes] == [None]


def test_an_empty_rack_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="broker_rack"):
        ottla.Broker(data_dir, broker_rack=" ")


def test_the_member_on_the_brokers_rack_gets_its_range_first(rb: ottla.Broker) -> None:
    """Two members of a ``range`` group over two partitions: one each,
    whatever the racks; the one on the broker's rack gets partition 0 (its
    range comes first). Without rack awareness the member id order decides.
    (``uniform`` is sticky first, so who joined first keeps what it had; its
    rack tie-break is checked in the coordinator's Rust tests.)"""
    assignor = "range"
    topic = "rack-" + assignor
    ottla.Admin(rb.path).create_topic(topic, partitions=2)
    group = "rack-" + uuid.uuid4().hex[:6]
    members = {
        rack: ck.Consumer(
            {
                "bootstrap.servers": rb.bootstrap_servers,
                "group.id": group,
                "group.protocol": "consumer",
                "group.remote.assignor": assignor,
                "client.rack": rack,
                "enable.auto.commit": False,
            }
        )
        for rack in ("r2", "r1")
    }
    try:
        for c in members.values():
            c.subscribe([topic])
        deadline = time.monotonic() + 30
        while True:
            owned = {r: {tp.partition for tp in c.assignment()} for r, c in members.items()}
            if owned == {"r1": {0}, "r2": {1}}:
                break
            assert time.monotonic() < deadline, owned
            for c in members.values():
                c.poll(0.05)
    finally:
        for c in members.values():
            c.close()


def test_ottla_serve_takes_broker_rack(data_dir: Path, spawn: Spawn) -> None:
    server = spawn(
        CLI_CODE, "serve", "--data", data_dir, "--listen", "127.0.0.1:0", "--broker-rack", "r9"
    )
    addr = server.wait_line(lambda s: s.startswith("listening on "), timeout=30).split()[-1]
    admin = AdminClient({"bootstrap.servers": addr})
    assert [n.rack for n in admin.describe_cluster().result(10).nodes] == ["r9"]
    bad = subprocess.run(
        [sys.executable, "-c", CLI_CODE, "serve", "--data", str(data_dir), "--broker-rack="],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "--broker-rack" in bad.stderr, bad.stderr
