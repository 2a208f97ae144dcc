"""DeleteRecords (issue 13): a partition's log start offset moved by hand,
inside a segment, through the broker (librdkafka's
``AdminClient.delete_records``) and the embedded ``Admin.delete_records``.
Reads below it are out of range, ``earliest`` is it, segments wholly below
it are deleted, and it survives ``kill -9`` of the process that moved it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import kafka_wire
import ottla
from helpers import CLI_CODE, Child, Spawn, free_port

pytest.importorskip("confluent_kafka")
from confluent_kafka import KafkaException, TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17


def fill(data_dir: Path, topic: str, n: int, partitions: int = 1) -> None:
    ottla.Admin(data_dir).create_topic(topic, partitions=partitions, config={"segment.bytes": 1024})
    with ottla.Producer(data_dir) as p:
        for i in range(n):
            for part in range(partitions):
                p.send(topic, value=b"v%04d" % i + bytes(60), partition=part)
            if i % 5 == 4:
                p.flush()  # small batches: several 1 KiB segments


def first_offset(data_dir: Path, topic: str, partition: int = 0) -> int:
    """The first offset an embedded consumer starting at ``earliest`` reads."""
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([ottla.TopicPartition(topic, partition)])
        records = [r for rs in c.poll(timeout_ms=10_000).values() for r in rs]
        assert records, "nothing to read"
        return records[0].offset


def commit_once(data_dir: Path, topic: str) -> None:
    """Commit an offset, so that ``__consumer_offsets`` exists."""
    tp = ottla.TopicPartition(topic, 0)
    with ottla.Consumer(data_dir, group_id="committer") as c:
        c.assign([tp])
        c.commit({tp: 1})


def watermarks(data_dir: Path, topic: str, partition: int) -> tuple[int, int]:
    tp = ottla.TopicPartition(topic, partition)
    with ottla.Consumer(data_dir) as c:
        return c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]


def segment_bases(data_dir: Path, topic: str, partition: int = 0) -> list[int]:
    return sorted(int(p.stem) for p in (data_dir / f"{topic}-{partition}").glob("*.log"))


def rdkafka_delete(
    b: ottla.Broker, topic: str, offsets: dict[int, int]
) -> dict[int, int | KafkaException]:
    """librdkafka's DeleteRecords: partition -> low watermark, or the error."""
    a = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    futs = a.delete_records(
        [KafkaTopicPartition(topic, p, o) for p, o in offsets.items()], request_timeout=10
    )
    out: dict[int, int | KafkaException] = {}
    for tp, fut in futs.items():
        try:
            out[tp.partition] = fut.result(timeout=15).low_watermark
        except KafkaException as e:
            out[tp.partition] = e
    return out


def kafka_error_code(e: int | KafkaException) -> int:
    assert isinstance(e, KafkaException), f"expected an error, got {e!r}"
    code: int = e.args[0].code()
    return code


def test_rdkafka_delete_records_moves_the_start_inside_a_segment(
    broker: ottla.Broker, data_dir: Path
) -> None:
    fill(data_dir, "trim", 300)
    bases = segment_bases(data_dir, "trim")
    assert len(bases) > 3
    target = bases[2] + 3
    assert rdkafka_delete(broker, "trim", {0: target}) == {0: target}
    # Earliest, through the broker (ListOffsets) and embedded.
    a = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    from confluent_kafka import Consumer as KafkaConsumer

    c = KafkaConsumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "wm"})
    try:
        assert c.get_watermark_offsets(KafkaTopicPartition("trim", 0), timeout=10) == (
            target,
            300,
        )
    finally:
        c.close()
    del a
    assert first_offset(data_dir, "trim") == target
    # Fetch below the start: OFFSET_OUT_OF_RANGE; at it, the batch holding it.
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        _, parts = kafka_wire.fetch(s, "trim", [(0, target - 1)], 1 << 20, 1 << 20)
        assert parts[0][1] == OFFSET_OUT_OF_RANGE
        _, parts = kafka_wire.fetch(s, "trim", [(0, target)], 1 << 20, 1 << 20, correlation_id=5)
        assert parts[0][1] == 0 and parts[0][3]
    # Segments wholly below the start are gone, the one holding it stays.
    assert segment_bases(data_dir, "trim")[0] == bases[2]
    # A lower offset changes nothing.
    assert rdkafka_delete(broker, "trim", {0: 5}) == {0: target}


def test_minus_one_past_the_end_and_unknown_partitions(
    broker: ottla.Broker, data_dir: Path
) -> None:
    fill(data_dir, "ends", 50, partitions=3)
    commit_once(data_dir, "ends")
    got = rdkafka_delete(broker, "ends", {0: -1, 1: 51, 2: 10})
    assert got[0] == 50
    assert kafka_error_code(got[1]) == OFFSET_OUT_OF_RANGE
    assert got[2] == 10
    assert watermarks(data_dir, "ends", 0) == (50, 50)
    # librdkafka refuses partitions without a leader before asking: raw.
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        assert kafka_wire.delete_records(s, "ends", [(7, 1), (-1, 1), (0, -2)]) == [
            (7, -1, UNKNOWN_TOPIC_OR_PARTITION),
            (-1, -1, UNKNOWN_TOPIC_OR_PARTITION),
            (0, -1, OFFSET_OUT_OF_RANGE),
        ]
        assert kafka_wire.delete_records(s, "nope", [(0, 1)], correlation_id=7) == [
            (0, -1, UNKNOWN_TOPIC_OR_PARTITION)
        ]
        # Every group's commits: refused, as Kafka refuses internal topics.
        internal = kafka_wire.delete_records(s, "__consumer_offsets", [(0, -1)], correlation_id=8)
        assert internal == [(0, -1, INVALID_TOPIC_EXCEPTION)]


def test_embedded_delete_records(data_dir: Path) -> None:
    fill(data_dir, "emb", 100, partitions=2)
    commit_once(data_dir, "emb")
    admin = ottla.Admin(data_dir)
    got = admin.delete_records({ottla.TopicPartition("emb", 0): 40, ("emb", 1): -1})
    assert got == {ottla.TopicPartition("emb", 0): 40, ottla.TopicPartition("emb", 1): 100}
    assert first_offset(data_dir, "emb", 0) == 40
    assert watermarks(data_dir, "emb", 1) == (100, 100)
    with pytest.raises(ottla.OffsetOutOfRangeError):
        admin.delete_records({("emb", 0): 101})
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.delete_records({("emb", 5): 1})
    with pytest.raises(ottla.InvalidTopicError):
        admin.delete_records({("__consumer_offsets", 0): -1})
    # Seeking below the start and reading: out of range, as Kafka's fetch.
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        tp = ottla.TopicPartition("emb", 0)
        c.assign([tp])
        c.seek(tp, 10)
        records = [r for rs in c.poll(timeout_ms=10_000).values() for r in rs]
        # auto_offset_reset=earliest resets to the new start.
        assert records and records[0].offset == 40


EMBEDDED_CHILD = """
import sys, time, ottla
admin = ottla.Admin(sys.argv[1])
print("low", admin.delete_records({("kill", 0): int(sys.argv[2])})[ottla.TopicPartition("kill", 0)], flush=True)
time.sleep(600)
"""


def test_the_start_survives_kill_9_of_the_embedded_process(data_dir: Path, spawn: Spawn) -> None:
    fill(data_dir, "kill", 200)
    child = spawn(EMBEDDED_CHILD, data_dir, 123)
    assert child.wait_line(lambda s: s.startswith("low "), timeout=30) == "low 123"
    child.sigkill()
    child.wait(30)
    assert first_offset(data_dir, "kill") == 123
    assert watermarks(data_dir, "kill", 0) == (123, 200)


def serve(spawn: Spawn, data_dir: Path, port: int) -> Child:
    server = spawn(CLI_CODE, "serve", "--data", data_dir, "--listen", f"127.0.0.1:{port}")
    server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
    return server


@pytest.mark.timeout(120)
def test_the_start_survives_kill_9_of_the_broker(data_dir: Path, spawn: Spawn) -> None:
    fill(data_dir, "bkill", 200)
    port = free_port()
    server = serve(spawn, data_dir, port)
    a = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    fut = a.delete_records([KafkaTopicPartition("bkill", 0, 77)], request_timeout=10)
    (only,) = fut.values()
    assert only.result(timeout=15).low_watermark == 77
    server.sigkill()
    server.wait(30)
    assert first_offset(data_dir, "bkill") == 77
    server = serve(spawn, data_dir, port)
    from confluent_kafka import Consumer as KafkaConsumer

    c = KafkaConsumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "after"})
    try:
        lo, hi = c.get_watermark_offsets(KafkaTopicPartition("bkill", 0), timeout=10)
    finally:
        c.close()
    assert (lo, hi) == (77, 200)


def test_kafka_python_and_aiokafka_delete_records(broker: ottla.Broker, data_dir: Path) -> None:
    pytest.importorskip("kafka")
    pytest.importorskip("aiokafka")
    import asyncio

    import kafka
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition as AioTopicPartition
    from kafka.admin import KafkaAdminClient

    fill(data_dir, "clients", 40, partitions=2)
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=10_000)
    try:
        got = a.delete_records({kafka.TopicPartition("clients", 0): 17})
    finally:
        a.close()
    assert got[kafka.TopicPartition("clients", 0)]["low_watermark"] == 17

    async def aio() -> dict[AioTopicPartition, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            tp = AioTopicPartition("clients", 1)
            lows: dict[AioTopicPartition, int] = await admin.delete_records(
                {tp: RecordsToDelete(before_offset=25)}
            )
            return lows
        finally:
            await admin.close()

    assert asyncio.run(aio()) == {AioTopicPartition("clients", 1): 25}
    assert watermarks(data_dir, "clients", 0) == (17, 40)
    assert watermarks(data_dir, "clients", 1) == (25, 40)
