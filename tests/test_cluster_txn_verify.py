"""Produce's verification of transactional batches in a cluster (KIP-890
part 1): a partition's leader appends a transactional batch that would open
its producer's transaction there only once the transaction coordinator,
on another broker, confirmed that the partition is in the producer's open
transaction (AddPartitionsToTxn v4 ``verify_only`` between brokers).

Without it, a batch for a partition never added to the transaction, or one
arriving after the transaction's marker (a retry, a zombie), would open a
transaction no coordinator knows of: the partition's last stable offset
would stay behind it for good and read_committed consumers would stop
there. Raw protocol against real ``ottla serve`` processes, and a
read_committed confluent-kafka consumer; loopback only."""

from __future__ import annotations

import socket
import struct
import time
import uuid

import pytest

import kafka_wire
from ottla import Cluster
from test_cluster_transactions import (
    PARTITIONS,
    _address,
    committed_values,
    make_topic,
    txn_coordinator,
)

pytest.importorskip("kafka")  # kafka-python's record batch encoder
from kafka.record.default_records import DefaultRecordBatchBuilder

pytestmark = pytest.mark.timeout(180)

PRODUCE = 0
INIT_PRODUCER_ID = 22
ADD_PARTITIONS_TO_TXN = 24
END_TXN = 26
NOT_ENOUGH_REPLICAS = 19
INVALID_TXN_STATE = 48
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
COORDINATOR_NOT_READY = (14, 15, 16)


def call(address: str, api: int, version: int, body: bytes) -> bytes:
    with socket.create_connection(_address(address), timeout=30) as s:
        s.sendall(kafka_wire.frame(api, version, 9, body))
        _, data = kafka_wire.response(s)
    return data


def init_producer_id(address: str, transactional_id: str) -> tuple[int, int]:
    """InitProducerId v1, again while the coordinator is not ready (as a
    client retries): (producer id, epoch)."""
    deadline = time.monotonic() + 60
    while True:
        data = call(
            address,
            INIT_PRODUCER_ID,
            1,
            kafka_wire._str(transactional_id) + struct.pack(">i", 60_000),
        )
        _throttle, error, pid, epoch = struct.unpack(">ihqh", data[:16])
        if error in COORDINATOR_NOT_READY and time.monotonic() < deadline:
            time.sleep(0.1)
            continue
        assert error == 0, error
        return pid, epoch


def add_partition(address: str, txn: str, pid: int, epoch: int, topic: str, p: int) -> int:
    """AddPartitionsToTxn v2 of one partition: its error code."""
    body = (
        kafka_wire._str(txn)
        + struct.pack(">qh", pid, epoch)
        + struct.pack(">i", 1)
        + kafka_wire._str(topic)
        + struct.pack(">ii", 1, p)
    )
    data = call(address, ADD_PARTITIONS_TO_TXN, 2, body)
    # throttle, [topic, [partition, error]]
    (tlen,) = struct.unpack(">h", data[8:10])
    at = 10 + tlen + 4
    _p, error = struct.unpack(">ih", data[at : at + 6])
    return int(error)


def end_txn(address: str, txn: str, pid: int, epoch: int, commit: bool) -> int:
    body = kafka_wire._str(txn) + struct.pack(">qhb", pid, epoch, commit)
    data = call(address, END_TXN, 1, body)
    (error,) = struct.unpack(">h", data[4:6])
    return int(error)


def produce_txn(
    address: str, txn: str, topic: str, p: int, pid: int, epoch: int, seq: int, value: bytes
) -> int:
    """Produce v3 (acks=all) of one transactional batch: its error code."""
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=True,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        batch_size=1 << 20,
    )
    b.append(0, timestamp=None, key=None, value=value, headers=[])
    records = bytes(b.build())
    body = (
        kafka_wire._str(txn)
        + struct.pack(">hi", -1, 10_000)
        + struct.pack(">i", 1)
        + kafka_wire._str(topic)
        + struct.pack(">i", 1)
        + struct.pack(">ii", p, len(records))
        + records
    )
    data = call(address, PRODUCE, 3, body)
    (tlen,) = struct.unpack(">h", data[4:6])
    at = 6 + tlen + 4
    _p, error = struct.unpack(">ih", data[at : at + 6])
    return int(error)


def test_a_leader_asks_the_coordinator_on_another_broker(ottla_cluster: Cluster) -> None:
    cluster = ottla_cluster
    topic = make_topic(cluster)
    txn = f"verify-{uuid.uuid4().hex[:8]}"
    coordinator = txn_coordinator(cluster, txn)
    # A partition led by another broker than the coordinator.
    p = next(
        (i for i in range(PARTITIONS) if cluster.leader(topic, i) != coordinator),
        None,
    )
    assert p is not None, "every partition is led by the coordinator"
    leader = cluster.address(cluster.leader(topic, p))
    pid, epoch = init_producer_id(cluster.address(coordinator), txn)

    # Never added to the transaction: refused by the leader.
    assert produce_txn(leader, txn, topic, p, pid, epoch, 0, b"stray") == INVALID_TXN_STATE

    # Added: the leader's question gets a yes, the batch is appended, and
    # the commit makes it visible.
    assert add_partition(cluster.address(coordinator), txn, pid, epoch, topic, p) == 0
    assert produce_txn(leader, txn, topic, p, pid, epoch, 0, b"in") == 0
    assert produce_txn(leader, txn, topic, p, pid, epoch, 1, b"in-2") == 0
    assert end_txn(cluster.address(coordinator), txn, pid, epoch, True) == 0

    # After the marker, a late batch of the same epoch would open a
    # transaction the coordinator does not know: refused.
    late = produce_txn(leader, txn, topic, p, pid, epoch, 2, b"late")
    assert late == INVALID_TXN_STATE

    # Nothing hangs: read_committed readers get everything committed.
    assert sorted(committed_values(cluster, topic)) == [b"in", b"in-2"]
