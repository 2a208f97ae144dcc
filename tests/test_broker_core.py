"""ottla.Broker itself: lifecycle, limits, bad input, idempotent
de-duplication and storage, exercised with raw sockets (tests/kafka_wire.py)
so that no client library hides what goes over the wire."""

from __future__ import annotations

import errno
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import Spawn
from kafka_wire import (
    API_API_VERSIONS,
    API_METADATA,
    api_versions,
    closed_by_peer,
    frame,
    init_producer_id,
    produce,
    record_batch,
    response,
)

pytest.importorskip("kafka")  # record_batch() uses kafka-python's encoder

CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
UNSUPPORTED_VERSION = 35


def connect(b: ottla.Broker) -> socket.socket:
    s = socket.create_connection((b.host, b.port), timeout=10)
    s.settimeout(10)
    return s


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def end_offset(path: Path, topic: str, partition: int = 0) -> int:
    c = ottla.Consumer(path)
    try:
        tp = ottla.TopicPartition(topic, partition)
        return c.end_offsets([tp])[tp]
    finally:
        c.close()


# ------------------------------------------------------------- lifecycle


def test_listening_when_constructed(data_dir: Path) -> None:
    started = time.perf_counter()
    b = ottla.Broker(data_dir)
    elapsed_ms = (time.perf_counter() - started) * 1000
    try:
        print(f"broker start-up: {elapsed_ms:.2f} ms")
        assert b.host == "127.0.0.1" and b.port > 0
        assert b.bootstrap_servers == f"127.0.0.1:{b.port}"
        assert b.path == str(data_dir)
        assert "serving" in repr(b)
        with connect(b) as s:
            keys = {k for k, _, _ in api_versions(s)}
        # The APIs the three client families need, all advertised.
        assert {
            0,
            1,
            2,
            3,
            8,
            9,
            10,
            11,
            12,
            13,
            14,
            15,
            16,
            18,
            19,
            20,
            22,
            32,
            33,
            37,
            44,
        } <= keys
        # Leader epochs (KIP-320): OffsetForLeaderEpoch is offered.
        assert 23 in keys
    finally:
        b.close()
    assert b.closed and "closed" in repr(b)


def test_close_releases_port_and_directory_and_marks_clean(data_dir: Path) -> None:
    b = ottla.Broker(data_dir)
    port = b.port
    with connect(b) as s:
        err, base = produce(s, "life", 0, record_batch([b"a", b"b"]))
        assert (err, base) == (0, 0)
    b.close()
    b.close()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The port can be bound again at once, by a new broker on the same directory.
    again = ottla.Broker(data_dir, port=port)
    try:
        with connect(again) as s:
            assert produce(s, "life", 0, record_batch([b"c"])) == (0, 2)
    finally:
        again.close()
    # The last process out left the clean-shutdown marker on the head.
    head = (data_dir / "life-0" / "partition.head").read_bytes()
    (clean,) = struct.unpack_from("<Q", head, 12 * 8)
    assert clean == 1
    assert end_offset(data_dir, "life") == 3


def test_context_manager_and_serve_forever(data_dir: Path) -> None:
    with ottla.Broker(data_dir) as b:
        served = threading.Event()

        def serve() -> None:
            b.serve_forever()
            served.set()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        time.sleep(0.1)
        assert not served.is_set()
        b.close()
        assert served.wait(10)
        t.join(10)
    assert b.closed
    b.serve_forever()  # returns at once on a closed broker


def test_bad_arguments(data_dir: Path) -> None:
    with pytest.raises(ValueError):
        ottla.Broker(data_dir, fsync="sometimes")
    with pytest.raises(ValueError):
        ottla.Broker(data_dir, num_partitions=0)
    with pytest.raises(ValueError):
        ottla.Broker(data_dir, max_request_bytes=10)
    with ottla.Broker(data_dir) as b:
        with pytest.raises(OSError) as e:
            ottla.Broker(data_dir, port=b.port)
        assert e.value.errno == errno.EADDRINUSE


def test_auto_create_can_be_turned_off(data_dir: Path) -> None:
    with ottla.Broker(data_dir, auto_create_topics=False) as b, connect(b) as s:
        err, _ = produce(s, "nope", 0, record_batch([b"x"]))
        assert err == UNKNOWN_TOPIC_OR_PARTITION
    assert "nope" not in ottla.Admin(data_dir).list_topics()


def test_auto_created_topics_get_num_partitions(data_dir: Path) -> None:
    with ottla.Broker(data_dir, num_partitions=4) as b, connect(b) as s:
        assert produce(s, "four", 3, record_batch([b"x"])) == (0, 0)
        err, _ = produce(s, "four", 4, record_batch([b"x"]))
        assert err == UNKNOWN_TOPIC_OR_PARTITION
    assert len(ottla.Admin(data_dir).describe_topic("four").partitions) == 4


# ------------------------------------------------------------- bad input


def test_2_gib_size_prefix_closes_only_that_connection(broker: ottla.Broker) -> None:
    before = rss_bytes()
    other = connect(broker)
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 64)
        assert closed_by_peer(s, 10)
    # Nothing near the claimed size was allocated, and the other client is fine.
    assert rss_bytes() - before < 256 << 20
    assert api_versions(other)
    other.close()


@pytest.mark.parametrize("prefix", [-1, -0x80000000])
def test_negative_size_prefix_closes_the_connection(broker: ottla.Broker, prefix: int) -> None:
    with connect(broker) as s:
        s.sendall(struct.pack(">i", prefix))
        assert closed_by_peer(s, 10)


def test_frame_over_max_request_bytes_is_refused(data_dir: Path) -> None:
    with ottla.Broker(data_dir, max_request_bytes=4096) as b:
        with connect(b) as s:
            s.sendall(frame(API_API_VERSIONS, 0, 1, b"x" * 5000))
            assert closed_by_peer(s, 10)
        with connect(b) as s:
            assert api_versions(s)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x12",  # shorter than a request header
        struct.pack(">hhi", 999, 0, 1) + b"\x00\x00",  # unknown API key
        struct.pack(">hhi", 3, 99, 1) + b"\x00\x00",  # unknown Metadata version
        struct.pack(">hhih", 3, 1, 1, 50) + b"abc",  # client id runs past the frame
        # Metadata v1 claiming 2^31-1 topics in a few bytes.
        struct.pack(">hhih", 3, 1, 1, 0) + struct.pack(">i", 0x7FFFFFFF),
        # Produce v3 whose topic array claims 2^31-1 entries.
        struct.pack(">hhih", 0, 3, 1, 0) + struct.pack(">hhii", -1, 1, 1000, 0x7FFFFFFF),
        # Metadata v9 (flexible): compact array claiming 2^32-2 topics.
        struct.pack(">hhih", 3, 9, 1, 0) + b"\x00" + b"\xff\xff\xff\xff\x0f",
    ],
)
def test_malformed_requests_close_only_that_connection(
    broker: ottla.Broker, payload: bytes
) -> None:
    before = rss_bytes()
    other = connect(broker)
    with connect(broker) as s:
        s.sendall(struct.pack(">i", len(payload)) + payload)
        assert closed_by_peer(s, 10)
    assert rss_bytes() - before < 256 << 20
    assert api_versions(other)
    other.close()


def test_newer_api_versions_request_gets_our_ranges(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        s.sendall(frame(API_API_VERSIONS, 9, 5, b"\x00\x00\x00"))
        cid, body = response(s)
        assert cid == 5
        assert struct.unpack(">h", body[:2])[0] == UNSUPPORTED_VERSION
        # The v0 answer lists our ranges, so the client can retry.
        assert api_versions(s, 6)


def test_client_that_stops_mid_frame_costs_only_its_connection(data_dir: Path) -> None:
    b = ottla.Broker(data_dir)
    stuck = connect(b)
    stuck.sendall(struct.pack(">i", 100) + b"\x00\x03\x00")  # 3 of 100 bytes
    try:
        for _ in range(3):
            with connect(b) as s:
                assert produce(s, "busy", 0, record_batch([b"v"]))[0] == 0
    finally:
        # close() does not wait for the stuck client's frame timeout.
        started = time.monotonic()
        b.close()
        closed_in = time.monotonic() - started
        stuck.close()
    print(f"close with a stuck client: {closed_in * 1000:.1f} ms")
    assert b.closed


def test_truncated_frame_then_disconnect(broker: ottla.Broker) -> None:
    s = connect(broker)
    s.sendall(struct.pack(">i", 64) + b"\x00\x03")
    s.close()
    with connect(broker) as s2:
        assert api_versions(s2)


# ------------------------------------------------------------- produce path


def test_batch_with_bad_crc_is_refused_and_not_stored(broker: ottla.Broker, data_dir: Path) -> None:
    batch = bytearray(record_batch([b"one", b"two"]))
    batch[-1] ^= 0xFF
    with connect(broker) as s:
        err, _ = produce(s, "crc", 0, bytes(batch))
        assert err == CORRUPT_MESSAGE
        assert produce(s, "crc", 0, record_batch([b"ok"])) == (0, 0)
    assert end_offset(data_dir, "crc") == 1


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_compressed_batches_are_stored_as_sent(
    broker: ottla.Broker, data_dir: Path, codec: int
) -> None:
    values = [b"value-%d-" % i + b"z" * 200 for i in range(20)]
    batch = record_batch(values, compression=codec)
    with connect(broker) as s:
        assert produce(s, "packed", 0, batch) == (0, 0)
    log = (data_dir / "packed-0" / ("0" * 20 + ".log")).read_bytes()
    # Byte for byte what the client sent (base offset 0 stamped, CRC untouched).
    assert log[: len(batch)] == batch
    with ottla.Consumer(
        data_dir, "packed", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as c:
        assert [r.value for r in c] == values


def test_idempotent_retry_is_not_stored_twice(broker: ottla.Broker, data_dir: Path) -> None:
    with connect(broker) as s:
        pid, epoch = init_producer_id(s)
        assert pid > 0 and epoch == 0
        first = record_batch([b"a", b"b", b"c"], pid, epoch, 0)
        assert produce(s, "idem", 0, first, correlation_id=10) == (0, 0)
        # The client never saw the ack and retries the very same batch.
        assert produce(s, "idem", 0, first, correlation_id=11) == (0, 0)
        second = record_batch([b"d"], pid, epoch, 3)
        assert produce(s, "idem", 0, second, correlation_id=12) == (0, 3)
        assert produce(s, "idem", 0, second, correlation_id=13) == (0, 3)
        # A gap in the sequence is refused.
        gap = record_batch([b"x"], pid, epoch, 10)
        assert produce(s, "idem", 0, gap, correlation_id=14)[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        # A different producer with the same sequence numbers is its own stream.
        pid2, _ = init_producer_id(s, correlation_id=15)
        assert pid2 != pid
        assert produce(s, "idem", 0, record_batch([b"e"], pid2, 0, 0), correlation_id=16) == (0, 4)
    with ottla.Consumer(
        data_dir, "idem", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as c:
        assert [r.value for r in c] == [b"a", b"b", b"c", b"d", b"e"]


def test_fetch_long_poll_wakes_on_embedded_append(broker: ottla.Broker, data_dir: Path) -> None:
    kafka = pytest.importorskip("kafka")
    ottla.Admin(data_dir).create_topic("poll")
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5000,
        consumer_timeout_ms=8000,
    )
    try:
        tp = kafka.TopicPartition("poll", 0)
        consumer.assign([tp])
        got: list[Any] = []

        def read() -> None:
            for m in consumer:
                got.append(m.value)
                return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.5)  # the fetch is now parked in the broker
        with ottla.Producer(data_dir) as p:
            p.send("poll", b"wake up").get(timeout=5)
        t.join(10)
        assert got == [b"wake up"]
    finally:
        consumer.close()


def test_metadata_v1_round_trip_names_this_broker(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        body = struct.pack(">i", 1) + struct.pack(">h", 4) + b"meta"
        s.sendall(frame(API_METADATA, 1, 7, body))
        cid, data = response(s)
        assert cid == 7
        (nbrokers,) = struct.unpack(">i", data[:4])
        assert nbrokers == 1
        node, hlen = struct.unpack(">ih", data[4:10])
        assert node == 0 and data[10 : 10 + hlen] == b"127.0.0.1"
        (port,) = struct.unpack(">i", data[10 + hlen : 14 + hlen])
        assert port == broker.port
    assert "meta" in ottla.Admin(broker.path).list_topics()


def test_serve_forever_stops_on_ctrl_c_and_a_killed_broker_loses_nothing(
    spawn: Spawn, data_dir: Path
) -> None:
    code = """
import sys, ottla
b = ottla.Broker(sys.argv[1])
print(b.port, flush=True)
try:
    b.serve_forever()
except KeyboardInterrupt:
    print("interrupted", flush=True)
b.close()
print("closed", flush=True)
"""
    child = spawn(code, str(data_dir))
    port = int(child.wait_line(timeout=20))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        assert produce(s, "ctrlc", 0, record_batch([b"kept"])) == (0, 0)
    child.proc.send_signal(signal.SIGINT)
    assert child.wait_line(lambda line: line == "closed", timeout=20) == "closed"
    assert "interrupted" in child.lines()
    assert child.wait(20) == 0
    # kill -9 of a serving broker: acknowledged records survive.
    child = spawn(code, str(data_dir))
    port = int(child.wait_line(timeout=20))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.settimeout(10)
        assert produce(s, "ctrlc", 0, record_batch([b"acked"])) == (0, 1)
    child.sigkill()
    with ottla.Consumer(
        data_dir, "ctrlc", auto_offset_reset="earliest", consumer_timeout_ms=1000
    ) as c:
        assert [r.value for r in c] == [b"kept", b"acked"]


def test_mutated_requests_never_take_the_broker_down(broker: ottla.Broker) -> None:
    """Seeded random damage to valid frames (bit flips, truncation, spliced
    length fields) of every API shape the tests build: each gets an answer or
    a closed connection, and the broker keeps serving."""
    import random

    rng = random.Random(20240611)
    seeds = [
        frame(API_API_VERSIONS, 0, 1, b""),
        frame(API_METADATA, 1, 2, struct.pack(">i", 1) + struct.pack(">h", 4) + b"fuzz"),
        frame(
            0,
            3,
            3,
            b"\xff\xff"
            + struct.pack(">hi", -1, 1000)
            + struct.pack(">i", 1)
            + struct.pack(">h", 4)
            + b"fuzz"
            + struct.pack(">i", 1)
            + struct.pack(">ii", 0, len(record_batch([b"v"])))
            + record_batch([b"v"]),
        ),
    ]
    for _ in range(200):
        body = bytearray(rng.choice(seeds)[4:])
        for _ in range(rng.randint(1, 4)):
            what = rng.random()
            at = rng.randrange(len(body))
            if what < 0.5:
                body[at] ^= 1 << rng.randrange(8)
            elif what < 0.7:
                del body[at:]
                body += b"\x00"
            else:
                body[at : at + 4] = struct.pack(">i", rng.choice([-1, 0x7FFFFFFF, 0x10000, 255]))
        with socket.create_connection((broker.host, broker.port), timeout=5) as s:
            s.sendall(struct.pack(">i", len(body)) + bytes(body))
            # An answer, a close, or (a parked Fetch/JoinGroup) nothing yet: all fine.
            closed_by_peer(s, 0.05)
    with connect(broker) as s:
        assert api_versions(s)
        assert produce(s, "after-fuzz", 0, record_batch([b"ok"])) == (0, 0)


def test_internal_offsets_topic_cannot_be_written_by_clients(
    broker: ottla.Broker, data_dir: Path
) -> None:
    with connect(broker) as s:
        err, _ = produce(s, "__consumer_offsets", 0, record_batch([b"garbage"]))
        assert err == 17  # INVALID_TOPIC_EXCEPTION
        # Nor is it auto-created by a metadata request with a plain topic's config.
        body = struct.pack(">i", 1) + struct.pack(">h", 18) + b"__consumer_offsets"
        s.sendall(frame(API_METADATA, 1, 9, body))
        assert response(s)[0] == 9
    assert "__consumer_offsets" not in ottla.Admin(data_dir).list_topics(internal=True)
