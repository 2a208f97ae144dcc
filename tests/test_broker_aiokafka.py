"""aiokafka against ottla.Broker (aiokafka refuses APIs a broker does not list)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import ottla

pytest.importorskip("aiokafka")
import aiokafka
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.structs import TopicPartition

SESSION_MS = 6000
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def consumer(b: ottla.Broker, *topics: str, group: str, **kw: Any) -> aiokafka.AIOKafkaConsumer:
    return aiokafka.AIOKafkaConsumer(
        *topics,
        bootstrap_servers=b.bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
        **kw,
    )


async def consume(c: aiokafka.AIOKafkaConsumer, n: int) -> list[Any]:
    out: list[Any] = []
    while len(out) < n:
        for recs in (await c.getmany(timeout_ms=200)).values():
            out.extend(recs)
    return out


def test_keys_and_headers_round_trip(broker: ottla.Broker, data_dir: Path) -> None:
    async def main() -> list[Any]:
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await p.start()
        try:
            for i in range(20):
                await p.send(
                    "kh", b"value-%d" % i, key=b"key-%d" % i, headers=[("trace", b"t%d" % i)]
                )
            await p.flush()
        finally:
            await p.stop()
        c = consumer(broker, "kh", group="kh")
        await c.start()
        try:
            return await consume(c, 20)
        finally:
            await c.stop()

    got = run(main())
    assert [(m.key, m.value) for m in got] == [(b"key-%d" % i, b"value-%d" % i) for i in range(20)]
    assert list(got[2].headers) == [("trace", b"t2")]
    with ottla.Consumer(
        data_dir, "kh", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == [m.value for m in got]


def test_group_of_three_over_six_partitions_takes_over_on_leave(broker: ottla.Broker) -> None:
    ottla.Admin(broker.path).create_topic("six", partitions=6)
    group = "g3-" + uuid.uuid4().hex[:6]

    async def main() -> None:
        cs = [consumer(broker, "six", group=group) for _ in range(3)]
        for c in cs:
            await c.start()

        def parts(c: aiokafka.AIOKafkaConsumer) -> set[int]:
            return {tp.partition for tp in c.assignment()}

        async def balanced(members: list[aiokafka.AIOKafkaConsumer], each: int) -> None:
            while True:
                ps = [parts(c) for c in members]
                if all(len(p) == each for p in ps) and set().union(*ps) == set(range(6)):
                    return
                await asyncio.gather(*(c.getmany(timeout_ms=50) for c in members))

        try:
            await asyncio.wait_for(balanced(cs, 2), 40)
            await cs.pop().stop()  # leaves the group
            await asyncio.wait_for(balanced(cs, 3), 40)
        finally:
            for c in cs:
                await c.stop()

    run(main(), 90)


def test_commit_restart_resume(broker: ottla.Broker) -> None:
    async def main() -> list[Any]:
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await p.start()
        for i in range(10):
            await p.send("resume", b"%d" % i)
        await p.stop()
        tp = TopicPartition("resume", 0)
        c = consumer(broker, "resume", group="r")
        await c.start()
        await consume(c, 1)
        await c.commit({tp: 6})
        await c.stop()
        c = consumer(broker, "resume", group="r")
        await c.start()
        try:
            assert await c.committed(tp) == 6
            return await consume(c, 4)
        finally:
            await c.stop()

    assert [m.value for m in run(main())] == [b"6", b"7", b"8", b"9"]


def test_admin_create_grow_and_delete(broker: ottla.Broker, data_dir: Path) -> None:
    async def main() -> None:
        a = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await a.start()
        try:
            await a.create_topics([NewTopic("adm", 2, 1)])
            assert "adm" in await a.list_topics()
            await a.create_partitions({"adm": NewPartitions(3)})
            assert len(ottla.Admin(data_dir).describe_topic("adm").partitions) == 3
            await a.delete_topics(["adm"])
            assert "adm" not in await a.list_topics()
        finally:
            await a.close()

    run(main())


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec(broker: ottla.Broker, data_dir: Path, codec: str) -> None:
    topic = "z-" + codec
    values = [(b"%s-%d-" % (codec.encode(), i)) * 20 for i in range(100)]

    async def main() -> list[Any]:
        p = aiokafka.AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, compression_type=codec, linger_ms=5
        )
        await p.start()
        try:
            for v in values:
                await p.send(topic, v)
            await p.flush()
        finally:
            await p.stop()
        c = consumer(broker, topic, group=topic)
        await c.start()
        try:
            return await consume(c, len(values))
        finally:
            await c.stop()

    assert [m.value for m in run(main())] == values
    with ottla.Consumer(
        data_dir, topic, auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert [r.value for r in ec] == values


def test_idempotent_producer(broker: ottla.Broker, data_dir: Path) -> None:
    async def main() -> None:
        p = aiokafka.AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, enable_idempotence=True, acks="all"
        )
        await p.start()
        try:
            futs = [await p.send("idem", b"%d" % i, key=b"k%d" % (i % 3)) for i in range(300)]
            await asyncio.gather(*futs)
        finally:
            await p.stop()

    run(main())
    with ottla.Consumer(
        data_dir, "idem", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as ec:
        assert sorted(int(r.value) for r in ec) == list(range(300))
