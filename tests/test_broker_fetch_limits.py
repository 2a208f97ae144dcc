"""Fetch's size limits (KIP-74): the records of a response fit the request's
``max_bytes`` and each partition's ``partition_max_bytes``, except one
first batch of the response larger than them, returned whole so that a
consumer always progresses. Checked with hand-built Fetch requests and with
librdkafka, which refuses a response larger than it asked for."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import ottla
from kafka_wire import batch_sizes, fetch

TOPIC = "big"
PARTITIONS = 4
BATCHES = 3
VALUE = 400_000


def fill(data_dir: Path) -> None:
    """PARTITIONS partitions of BATCHES batches, one incompressible record of
    VALUE bytes each."""
    ottla.Admin(data_dir).create_topic(TOPIC, partitions=PARTITIONS)
    with ottla.Producer(data_dir) as p:
        for part in range(PARTITIONS):
            for _ in range(BATCHES):
                p.send(TOPIC, os.urandom(VALUE), partition=part).get(timeout=30)


def connect(b: ottla.Broker) -> socket.socket:
    host, port = b.bootstrap_servers.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    return s


def counts(parts: list[tuple[int, int, int, bytes]]) -> list[tuple[int, int]]:
    """[(partition, whole batches)], each batch checked to be whole."""
    out = []
    for p, err, _hw, records in parts:
        assert err == 0, (p, err)
        sizes = batch_sizes(records)
        assert sum(sizes) == len(records), f"partition {p}: a partial batch"
        assert all(n > VALUE for n in sizes)
        out.append((p, len(sizes)))
    return out


def test_the_response_limit_holds_after_the_first_partition(
    broker: ottla.Broker, data_dir: Path
) -> None:
    fill(data_dir)
    everything = [(p, 0) for p in range(PARTITIONS)]
    with connect(broker) as s:
        # Two batches fit the first partition's share; the next partition's
        # batch does not fit what is left, so it returns none, and nor do the others.
        size, parts = fetch(
            s, TOPIC, everything, max_bytes=1_000_000, partition_max_bytes=1_000_000
        )
        assert counts(parts) == [(0, 2), (1, 0), (2, 0), (3, 0)]
        assert sum(len(r) for *_, r in parts) <= 1_000_000
        assert size <= 1_000_000 + 1024
        assert [hw for _, _, hw, _ in parts] == [BATCHES] * PARTITIONS

        # A per-partition limit below one batch: only the response's first
        # batch may exceed it.
        _, parts = fetch(s, TOPIC, everything, max_bytes=50_000_000, partition_max_bytes=100_000)
        assert counts(parts) == [(0, 1), (1, 0), (2, 0), (3, 0)]

        # A response limit below one batch: the first batch, whole, alone.
        _, parts = fetch(s, TOPIC, everything, max_bytes=100_000, partition_max_bytes=1_000_000)
        assert counts(parts) == [(0, 1), (1, 0), (2, 0), (3, 0)]

        # The exception goes to the first partition with records, in request
        # order: partition 0 is read to its end, partition 3 asked for first.
        order = [(0, BATCHES), (3, 0), (1, 0), (2, 0)]
        _, parts = fetch(s, TOPIC, order, max_bytes=100_000, partition_max_bytes=100_000)
        assert counts(parts) == [(0, 0), (3, 1), (1, 0), (2, 0)]


@pytest.mark.timeout(120)
def test_librdkafka_consumes_batches_larger_than_its_share(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ck = pytest.importorskip("confluent_kafka")
    fill(data_dir)
    errors: list[str] = []
    c = ck.Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "limits",
            "enable.auto.commit": False,
            "fetch.max.bytes": 1_000_000,
            "max.partition.fetch.bytes": 1_000_000,
            # librdkafka's floor: a response larger than this is refused
            # ("Invalid response size") and the connection dropped.
            "receive.message.max.bytes": 1_000_512,
            "error_cb": lambda e: errors.append(str(e)),
        }
    )
    try:
        c.assign([ck.TopicPartition(TOPIC, p, ck.OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while sum(got.values()) < PARTITIONS * BATCHES and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            assert m.error() is None, m.error()
            assert len(m.value()) == VALUE
            got[m.partition()] = got.get(m.partition(), 0) + 1
        assert errors == []
        assert got == {p: BATCHES for p in range(PARTITIONS)}
    finally:
        c.close()
