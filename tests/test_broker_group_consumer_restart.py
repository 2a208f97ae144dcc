"""A KIP-848 consumer group survives a broker restart (issue 13).

Kafka keeps a consumer group's epochs, members and assignments in
``__consumer_offsets``; a restarted ottla broker reads them back, so a
running ``group.protocol=consumer`` member goes on heartbeating at its epoch
with its partitions instead of being fenced and rebalanced."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest

import ottla
from helpers import CLI_CODE, Child, Spawn, free_port

pytestmark = pytest.mark.skipif(
    tuple(int(x) for x in ck.libversion()[0].split(".")[:2]) < (2, 10),
    reason="librdkafka before 2.10 has no group.protocol=consumer",
)

TOPIC = "restart"
FLAGS = (
    *("--group-consumer-heartbeat-interval-ms", "250"),
    *("--group-consumer-session-timeout-ms", "6000"),
)


def serve(spawn: Spawn, data_dir: Path, port: int) -> Child:
    server = spawn(CLI_CODE, "serve", "--data", data_dir, "--listen", f"127.0.0.1:{port}", *FLAGS)
    server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
    return server


def produce(data_dir: Path, start: int, n: int) -> None:
    with ottla.Producer(data_dir) as p:
        for i in range(start, start + n):
            p.send(TOPIC, b"%d" % i, partition=i % 3)


def test_a_consumer_group_resumes_after_a_broker_restart(data_dir: Path, spawn: Spawn) -> None:
    ottla.Admin(data_dir).create_topic(TOPIC, partitions=3)
    produce(data_dir, 0, 300)
    port = free_port()
    server = serve(spawn, data_dir, port)
    events: list[tuple[str, list[int]]] = []

    def assigned(_c: Any, tps: list[ck.TopicPartition]) -> None:
        events.append(("assign", sorted(tp.partition for tp in tps)))

    def revoked(_c: Any, tps: list[ck.TopicPartition]) -> None:
        events.append(("revoke", sorted(tp.partition for tp in tps)))

    c = ck.Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "group.id": "resume-" + uuid.uuid4().hex[:6],
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "reconnect.backoff.max.ms": 200,
        }
    )
    values: list[int] = []
    try:
        c.subscribe([TOPIC], on_assign=assigned, on_revoke=revoked, on_lost=revoked)

        def consume_until(n: int, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while len(values) < n:
                assert time.monotonic() < deadline, (len(values), events)
                m = c.poll(0.1)
                if m is None or m.error() is not None:
                    continue
                value = m.value()
                assert value is not None
                values.append(int(value))
                try:
                    c.commit(message=m, asynchronous=False)
                except ck.KafkaException:
                    pass  # the broker is down: this one may come again

        consume_until(150)
        assert events == [("assign", [0, 1, 2])], events
        server.sigkill()
        server = serve(spawn, data_dir, port)
        produce(data_dir, 300, 300)
        consume_until(600)
        # Let a few heartbeats go by against the restarted broker.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            m = c.poll(0.1)
            value = None if m is None or m.error() is not None else m.value()
            if value is not None:
                values.append(int(value))
        # The member kept its partitions: no revoke, no lost, no second assign.
        assert events == [("assign", [0, 1, 2])], events
        assert sorted(set(values)) == list(range(600))
        # Each record was committed once processed: at most the one in hand
        # when the broker died comes again.
        assert len(values) - len(set(values)) <= 1, len(values)
    finally:
        c.close()
        server.kill()
