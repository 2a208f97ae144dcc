"""What the broker reports of transactions, on the wire: DescribeTransactions
(65) and ListTransactions (66) show the coordinator's state, and
DescribeProducers (61) the open transaction's first offset per producer."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import kafka_wire
import ottla
from kafka_wire import Reader, compact_str, uvarint

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck

TRANSACTIONAL_ID_NOT_FOUND = 105


def describe_transactions(b: ottla.Broker, ids: list[str]) -> list[dict[str, Any]]:
    body = uvarint(len(ids) + 1) + b"".join(compact_str(i) for i in ids) + uvarint(0)
    r = Reader(kafka_wire.flexible_request(b.host, b.port, 65, 0, body))
    r.i32()
    out = []
    for _ in range(r.count()):
        t: dict[str, Any] = {"error": r.i16(), "id": r.cstr(), "state": r.cstr()}
        t["timeout_ms"], t["start_ms"] = r.i32(), r.i64()
        t["producer_id"], t["epoch"] = r.i64(), r.i16()
        t["topics"] = {}
        for _ in range(r.count()):
            name = r.cstr()
            t["topics"][name] = [r.i32() for _ in range(r.count())]
            r.tags()
        r.tags()
        out.append(t)
    r.tags()
    r.done()
    return out


def list_transactions(b: ottla.Broker, states: list[str]) -> tuple[list[str | None], list[Any]]:
    # v1: state filters, no producer id filter, duration filter -1.
    body = (
        uvarint(len(states) + 1)
        + b"".join(compact_str(s) for s in states)
        + uvarint(1)
        + struct.pack(">q", -1)
        + uvarint(0)
    )
    r = Reader(kafka_wire.flexible_request(b.host, b.port, 66, 1, body))
    r.i32()
    assert r.i16() == 0
    unknown = [r.cstr() for _ in range(r.count())]
    listed = []
    for _ in range(r.count()):
        listed.append((r.cstr(), r.i64(), r.cstr()))
        r.tags()
    r.tags()
    r.done()
    return unknown, listed


def describe_producers(b: ottla.Broker, topic: str) -> list[tuple[int, int, int]]:
    """(producer id, coordinator epoch, current transaction start offset)."""
    body = uvarint(2) + compact_str(topic) + uvarint(2) + struct.pack(">i", 0) + uvarint(0)
    body += uvarint(0)
    r = Reader(kafka_wire.flexible_request(b.host, b.port, 61, 0, body))
    r.i32()
    out = []
    for _ in range(r.count()):
        r.cstr()
        for _ in range(r.count()):
            r.i32()
            assert r.i16() == 0
            r.cstr()
            for _ in range(r.count()):
                pid, _epoch, _seq, _ts = r.i64(), r.i32(), r.i32(), r.i64()
                out.append((pid, r.i32(), r.i64()))
                r.tags()
            r.tags()
        r.tags()
    r.tags()
    r.done()
    return out


def test_describe_list_and_producers_report_the_real_state(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic("d", partitions=1)
    plain = ck.Producer({"bootstrap.servers": broker.bootstrap_servers})
    plain.produce("d", b"first")
    plain.flush(30)
    p = ck.Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": "tx-d",
            "transaction.timeout.ms": 50_000,
        }
    )
    p.init_transactions(30)
    (t,) = describe_transactions(broker, ["tx-d"])
    assert (t["error"], t["state"], t["timeout_ms"], t["epoch"]) == (0, "Empty", 50_000, 0)
    p.begin_transaction()
    p.produce("d", b"x")
    p.flush(30)
    (t,) = describe_transactions(broker, ["tx-d"])
    assert t["state"] == "Ongoing" and t["topics"] == {"d": [0]} and t["start_ms"] > 0
    pid = t["producer_id"]
    assert (pid, 1) in [(p_, start) for p_, _, start in describe_producers(broker, "d")]
    unknown, listed = list_transactions(broker, ["Ongoing", "Bogus"])
    assert unknown == ["Bogus"]
    assert listed == [("tx-d", pid, "Ongoing")]
    p.commit_transaction(30)
    (t,) = describe_transactions(broker, ["tx-d"])
    assert (t["state"], t["topics"]) == ("CompleteCommit", {})
    assert describe_producers(broker, "d") == [(pid, 0, -1)]
    assert list_transactions(broker, ["Ongoing"]) == ([], [])
    (missing,) = describe_transactions(broker, ["nope"])
    assert missing["error"] == TRANSACTIONAL_ID_NOT_FOUND
