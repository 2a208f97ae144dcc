"""aiokafka through ``kill -9`` of a partition leader (issue 14): an
idempotent ``acks=all`` aiokafka producer keeps writing numbered records
while the leader of its partition is killed and restarted, and an aiokafka
consumer group reads them. Every acknowledged record is in the log exactly
once, at the offset the producer was given, and the group read every one of
them. Real ``ottla serve`` processes (``ottla_cluster``), loopback only."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from ottla import Cluster

aiokafka = pytest.importorskip("aiokafka")
aiokafka_admin = pytest.importorskip("aiokafka.admin")

pytestmark = pytest.mark.timeout(240)

PARTITIONS = 2
RECORDS = 600


async def produce_through_a_kill(cluster: Cluster, topic: str) -> dict[bytes, tuple[int, int]]:
    """Numbered records; the leader of partition 0 is killed a third of the
    way and started again two thirds of the way. Returns what was
    acknowledged: value -> (partition, offset)."""
    producer = aiokafka.AIOKafkaProducer(
        **cluster.client_config("aiokafka"),
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
        metadata_max_age_ms=1000,
    )
    await producer.start()
    acked: dict[bytes, tuple[int, int]] = {}
    killed: int | None = None
    try:
        for i in range(RECORDS):
            if i == RECORDS // 3:
                killed = cluster.leader(topic, 0)
                cluster.kill(killed)
            if i == 2 * RECORDS // 3 and killed is not None:
                cluster.start(killed)
            value = str(i).encode()
            md = await asyncio.wait_for(
                producer.send_and_wait(topic, value, partition=i % PARTITIONS), 60
            )
            acked[value] = (md.partition, md.offset)
    finally:
        await producer.stop()
    assert killed is not None
    return acked


async def read_as_a_group(cluster: Cluster, topic: str, want: int) -> list[tuple[int, int, bytes]]:
    consumer = aiokafka.AIOKafkaConsumer(
        topic,
        **cluster.client_config("aiokafka"),
        group_id=f"aio-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    got: list[tuple[int, int, bytes]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while len(got) < want:
            assert loop.time() < deadline, f"read {len(got)} of {want}"
            batches = await consumer.getmany(timeout_ms=500)
            for recs in batches.values():
                got.extend((r.partition, r.offset, r.value) for r in recs)
    finally:
        await consumer.stop()
    return got


def test_aiokafka_producer_and_group_through_kill_9_of_the_leader(
    ottla_cluster: Cluster,
) -> None:
    cluster = ottla_cluster
    topic = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        admin = aiokafka_admin.AIOKafkaAdminClient(**cluster.client_config("aiokafka"))
        await admin.start()
        try:
            await admin.create_topics(
                [aiokafka_admin.NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)]
            )
        finally:
            await admin.close()
        cluster.wait_in_sync(topic)
        acked = await produce_through_a_kill(cluster, topic)
        assert len(acked) == RECORDS
        cluster.wait_in_sync(topic)
        read = await read_as_a_group(cluster, topic, RECORDS)
        values = [v for _, _, v in read]
        assert len(values) == len(set(values)), "a record was read twice"
        at = {v: (p, o) for p, o, v in read}
        for value, where in acked.items():
            assert at.get(value) == where, (value, where, at.get(value))

    asyncio.run(main())
