"""Transactions through ``ottla serve`` with kafka-python's and aiokafka's
transactional producers and read_committed consumers: a committed
transaction is read, an aborted one is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ottla
from helpers import kafka_poll


def test_kafka_python_transactions(broker: ottla.Broker, data_dir: Path) -> None:
    pytest.importorskip("kafka")
    from kafka import KafkaConsumer, KafkaProducer

    ottla.Admin(data_dir).create_topic("kp", partitions=1)
    p = KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, transactional_id="tx-kp", max_block_ms=30000
    )
    try:
        p.init_transactions()
        p.begin_transaction()
        for i in range(5):
            p.send("kp", f"c{i}".encode())
        p.commit_transaction()
        p.begin_transaction()
        p.send("kp", b"aborted")
        p.flush()
        p.abort_transaction()
        p.begin_transaction()
        p.send("kp", b"c-last")
        p.commit_transaction()
    finally:
        p.close(timeout=5)
    c = KafkaConsumer(
        "kp",
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    try:
        got = [r.value for r in kafka_poll(c, 6)]
        assert got == [b"c0", b"c1", b"c2", b"c3", b"c4", b"c-last"]
        assert c.poll(timeout_ms=500) == {}
    finally:
        c.close()


def test_aiokafka_transactions(broker: ottla.Broker, data_dir: Path) -> None:
    pytest.importorskip("aiokafka")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    ottla.Admin(data_dir).create_topic("aio", partitions=1)

    async def run() -> list[bytes]:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id="tx-aio")
        await asyncio.wait_for(p.start(), 30)
        try:
            async with p.transaction():
                for i in range(3):
                    await p.send("aio", f"c{i}".encode())
            with pytest.raises(RuntimeError):
                async with p.transaction():
                    await p.send("aio", b"aborted")
                    raise RuntimeError("abort it")
            async with p.transaction():
                await p.send("aio", b"c-last")
        finally:
            await p.stop()
        c = AIOKafkaConsumer(
            "aio",
            bootstrap_servers=broker.bootstrap_servers,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        await asyncio.wait_for(c.start(), 30)
        out: list[bytes] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(out) < 4 and loop.time() < deadline:
                batches = await c.getmany(timeout_ms=200)
                for recs in batches.values():
                    out.extend(r.value for r in recs if r.value is not None)
            more = await c.getmany(timeout_ms=500)
            out.extend(r.value for recs in more.values() for r in recs if r.value is not None)
        finally:
            await c.stop()
        return out

    assert asyncio.run(run()) == [b"c0", b"c1", b"c2", b"c-last"]
