"""Leader epochs (KIP-101, KIP-320) on the broker: leader epoch 0 in
Metadata, stamped into every stored batch and kept in each partition's
``leader-epoch-checkpoint``; OffsetForLeaderEpoch v2-3 and the
current-leader-epoch checks of Fetch and ListOffsets, in hand-built frames;
and librdkafka validating its positions with them, as against Kafka.
(OffsetForLeaderEpoch v4 and Fetch v12+'s diverging epochs are checked in
the broker's Rust tests, ``api::epochs``.)"""

from __future__ import annotations

import logging
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

import kafka_wire
import ottla
from kafka_wire import _str, frame, response

API_LIST_OFFSETS = 2
API_OFFSET_FOR_LEADER_EPOCH = 23

NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


class Reader:
    """Big-endian fields of a response body, read in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        n = struct.calcsize(fmt)
        v = struct.unpack(fmt, self.data[self.at : self.at + n])
        self.at += n
        return v

    def int(self, fmt: str) -> int:
        (v,) = self.take(fmt)
        return v

    def str(self) -> str | None:
        n = self.int(">h")
        if n < 0:
            return None
        s = self.data[self.at : self.at + n].decode()
        self.at += n
        return s

    def bytes(self) -> bytes:
        n = self.int(">i")
        b = self.data[self.at : self.at + max(n, 0)]
        self.at += max(n, 0)
        return b


def call(sock: socket.socket, api: int, version: int, body: bytes, cid: int) -> Reader:
    sock.sendall(frame(api, version, cid, body))
    got, data = response(sock)
    assert got == cid
    return Reader(data)


def metadata_v7(sock: socket.socket, topic: str) -> list[tuple[int, int, int, int]]:
    """Metadata v7 of one topic: [(partition, error, leader, leader epoch)]."""
    body = struct.pack(">i", 1) + _str(topic) + b"\x00"
    r = call(sock, kafka_wire.API_METADATA, 7, body, 31)
    r.int(">i")  # throttle
    for _ in range(r.int(">i")):  # brokers
        r.int(">i")
        r.str()
        r.int(">i")
        r.str()
    r.str()  # cluster id
    r.int(">i")  # controller
    assert r.int(">i") == 1
    err = r.int(">h")
    assert err == NONE, err
    assert r.str() == topic
    r.int(">b")  # is internal
    out = []
    for _ in range(r.int(">i")):
        perr, p, leader, epoch = r.take(">hiii")
        for _ in range(3):  # replicas, isr, offline replicas
            for _ in range(r.int(">i")):
                r.int(">i")
        out.append((p, perr, leader, epoch))
    return out


def offset_for_leader_epoch(
    sock: socket.socket, version: int, topic: str, asks: list[tuple[int, int, int]]
) -> list[tuple[int, int, int, int]]:
    """OffsetForLeaderEpoch v2 or v3 of ``asks`` [(partition, current leader
    epoch, leader epoch)]: [(partition, error, leader epoch, end offset)]."""
    body = struct.pack(">i", -1) if version >= 3 else b""
    body += struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(asks))
    for p, current, epoch in asks:
        body += struct.pack(">iii", p, current, epoch)
    r = call(sock, API_OFFSET_FOR_LEADER_EPOCH, version, body, 32)
    r.int(">i")  # throttle
    assert r.int(">i") == 1
    assert r.str() == topic
    out = []
    for _ in range(r.int(">i")):
        err, p, epoch, end = r.take(">hiiq")
        out.append((p, err, epoch, end))
    return out


def list_offsets_v4(
    sock: socket.socket, topic: str, asks: list[tuple[int, int, int]]
) -> list[tuple[int, int, int, int, int]]:
    """ListOffsets v4 of ``asks`` [(partition, current leader epoch,
    timestamp)]: [(partition, error, timestamp, offset, leader epoch)]."""
    body = struct.pack(">ib", -1, 0) + struct.pack(">i", 1) + _str(topic)
    body += struct.pack(">i", len(asks))
    for p, current, ts in asks:
        body += struct.pack(">iiq", p, current, ts)
    r = call(sock, API_LIST_OFFSETS, 4, body, 33)
    r.int(">i")  # throttle
    assert r.int(">i") == 1
    assert r.str() == topic
    return [r.take(">ihqqi") for _ in range(r.int(">i"))]  # type: ignore[misc]


def fetch_v11(
    sock: socket.socket, topic: str, partition: int, offset: int, current: int
) -> tuple[int, bytes]:
    """Fetch v11 of one partition with ``current`` as its current leader
    epoch, without waiting: (error, records)."""
    body = struct.pack(">iiiibii", -1, 0, 0, 1 << 20, 0, 0, -1)
    body += struct.pack(">i", 1) + _str(topic) + struct.pack(">i", 1)
    body += struct.pack(">iiqqi", partition, current, offset, -1, 1 << 20)
    body += struct.pack(">i", 0) + _str("")
    r = call(sock, kafka_wire.API_FETCH, 11, body, 34)
    r.take(">ihi")  # throttle, error, session
    assert r.int(">i") == 1
    assert r.str() == topic
    assert r.int(">i") == 1
    _p, err, _hw, _lso, _start = r.take(">ihqqq")
    for _ in range(max(r.int(">i"), 0)):  # aborted transactions
        r.take(">qq")
    r.int(">i")  # preferred read replica
    return err, r.bytes()


def batch_epochs(records: bytes) -> list[int]:
    """The partition leader epoch of each batch in ``records``."""
    out = []
    at = 0
    while at + 16 <= len(records):
        (n,) = struct.unpack(">i", records[at + 8 : at + 12])
        (epoch,) = struct.unpack(">i", records[at + 12 : at + 16])
        out.append(epoch)
        at += 12 + n
    return out


def client_batch(values: list[bytes]) -> bytes:
    """A record batch whose header says epoch -1, as a client's does."""
    b = bytearray(kafka_wire.record_batch(values))
    b[12:16] = struct.pack(">i", -1)
    return bytes(b)


def produce(sock: socket.socket, topic: str, n: int) -> int:
    err, base = kafka_wire.produce(sock, topic, 0, client_batch([b"v%d" % i for i in range(n)]))
    assert err == NONE, err
    return base


def test_metadata_offset_for_leader_epoch_and_the_checkpoint(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic("ep", partitions=2)
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        assert metadata_v7(s, "ep") == [(0, NONE, 0, 0), (1, NONE, 0, 0)]
        # An empty partition: the current epoch starts (and ends) at 0.
        for v in (2, 3):
            assert offset_for_leader_epoch(s, v, "ep", [(0, 0, 0)]) == [(0, NONE, 0, 0)]
        assert produce(s, "ep", 3) == 0
        assert produce(s, "ep", 2) == 3
        # Batches are stored with the leader's epoch, whatever the client wrote.
        err, records = fetch_v11(s, "ep", 0, 0, 0)
        assert err == NONE
        assert batch_epochs(records) == [0, 0]
        for v in (2, 3):
            got = offset_for_leader_epoch(
                s,
                v,
                "ep",
                [(0, 0, 0), (0, -1, 0), (0, -1, -1), (0, -1, 1), (0, 1, 0), (0, -2, 0), (7, -1, 0)],
            )
            assert got == [
                (0, NONE, 0, 5),  # the current epoch ends at the log end
                (0, NONE, 0, 5),  # -1: no current epoch to check
                (0, NONE, -1, -1),  # UNDEFINED_EPOCH asked
                (0, NONE, -1, -1),  # above every epoch
                (0, UNKNOWN_LEADER_EPOCH, -1, -1),
                (0, FENCED_LEADER_EPOCH, -1, -1),
                (7, UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
            ], f"v{v}"
        assert offset_for_leader_epoch(s, 3, "nope", [(0, -1, 0)]) == [
            (0, UNKNOWN_TOPIC_OR_PARTITION, -1, -1)
        ]
    # Kafka's leader-epoch-checkpoint: version, count, "epoch start" lines.
    assert (data_dir / "ep-0" / "leader-epoch-checkpoint").read_text() == "0\n1\n0 0\n"


def test_fetch_and_list_offsets_check_the_current_leader_epoch(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic("fl", partitions=1)
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        produce(s, "fl", 4)
        # Fetch v9+: 0 is the partition's epoch; 1 is a leader this broker
        # does not know yet; any negative epoch skips the check.
        assert fetch_v11(s, "fl", 0, 0, 0)[0] == NONE
        assert fetch_v11(s, "fl", 0, 0, 1) == (UNKNOWN_LEADER_EPOCH, b"")
        assert fetch_v11(s, "fl", 0, 0, -1)[0] == NONE
        assert fetch_v11(s, "fl", 0, 0, -2)[0] == NONE
        got = list_offsets_v4(
            s, "fl", [(0, 0, -2), (0, 0, -1), (0, -1, 0), (0, -1, 1 << 50), (0, -1, -3)]
        )
        # Each answer with the epoch its offset was written in; -1 for none.
        assert [(p, e, off, ep) for p, e, _ts, off, ep in got[:4]] == [
            (0, NONE, 0, 0),
            (0, NONE, 4, 0),
            (0, NONE, 0, 0),
            (0, NONE, -1, -1),
        ]
        _p, err, _ts, offset, epoch = got[4]  # the largest timestamp's record
        assert (err, epoch) == (NONE, 0) and 0 <= offset < 4
        got = list_offsets_v4(s, "fl", [(0, 1, -1), (0, -2, -1)])
        assert [(e, off, ep) for _p, e, _ts, off, ep in got] == [
            (UNKNOWN_LEADER_EPOCH, -1, -1),
            (FENCED_LEADER_EPOCH, -1, -1),
        ]


def ck_poll(c: Any, n: int, timeout: float = 20.0) -> list[Any]:
    """``n`` messages from a confluent-kafka consumer, none an error."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"got {len(out)} of {n}"
        m = c.poll(0.2)
        if m is not None:
            assert m.error() is None, m.error()
            out.append(m)
    return out


class Lines(logging.Handler):
    """librdkafka's log lines, as confluent-kafka hands them to a logger."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_librdkafka_validates_positions_with_offset_for_leader_epoch(
    broker: ottla.Broker,
) -> None:
    ck = pytest.importorskip("confluent_kafka")
    topic = "validated"
    p = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for i in range(20):
        p.produce(topic, value=b"m%d" % i, partition=0)
    assert p.flush(15) == 0
    lines = Lines()
    log = logging.getLogger("test_leader_epochs.librdkafka")
    log.addHandler(lines)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    c = ck.Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "g-validated",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "debug": "fetch",
            "logger": log,
        }
    )
    try:

        def poll_one() -> Any:
            return ck_poll(c, 1)[0]

        c.assign([ck.TopicPartition(topic, 0, 0)])
        first = poll_one()
        assert (first.offset(), first.leader_epoch()) == (0, 0)
        # A seek with an epoch is validated before fetching: the broker's
        # end offset of epoch 0 (20) is at or past the position.
        c.seek(ck.TopicPartition(topic, 0, 15, leader_epoch=0))
        m = poll_one()
        assert (m.offset(), m.value()) == (15, b"m15")
        deadline = time.monotonic() + 10
        while not any("validation succeeded" in x for x in lines.lines):
            assert time.monotonic() < deadline, lines.lines[-20:]
            c.poll(0.1)
        # A position past the end of its epoch was truncated away (KIP-320):
        # the consumer goes back to where the epoch ends, not to
        # auto.offset.reset's earliest as an out-of-range fetch would.
        seen = len(lines.lines)
        c.seek(ck.TopicPartition(topic, 0, 25, leader_epoch=0))
        deadline = time.monotonic() + 10
        while not any("Fetch topic validated [0] at offset 20 " in x for x in lines.lines[seen:]):
            assert time.monotonic() < deadline, lines.lines[-20:]
            assert c.poll(0.1) is None
        p.produce(topic, value=b"after", partition=0)
        assert p.flush(15) == 0
        m = poll_one()
        assert (m.offset(), m.value()) == (20, b"after")
    finally:
        c.close()
        log.removeHandler(lines)


def test_a_committed_position_keeps_its_epoch_and_is_validated_when_restored(
    broker: ottla.Broker,
) -> None:
    ck = pytest.importorskip("confluent_kafka")
    topic = "committed"
    p = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for i in range(10):
        p.produce(topic, value=b"m%d" % i, partition=0)
    assert p.flush(15) == 0
    conf = {
        "bootstrap.servers": broker.bootstrap_servers,
        "group.id": "g-committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    c = ck.Consumer(conf)
    c.assign([ck.TopicPartition(topic, 0, 0)])
    got = ck_poll(c, 6)
    c.commit(message=got[-1], asynchronous=False)
    c.close()

    lines = Lines()
    log = logging.getLogger("test_leader_epochs.committed")
    log.addHandler(lines)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    c = ck.Consumer({**conf, "debug": "fetch", "logger": log})
    try:
        # The committed offset comes back with the epoch of the record
        # before it (OffsetFetch v5+).
        committed = c.committed([ck.TopicPartition(topic, 0)], timeout=10)[0]
        assert (committed.offset, committed.leader_epoch) == (6, 0)
        # Restored by hand, it is validated before the consumer fetches.
        c.assign([committed])
        c.seek(committed)
        rest = ck_poll(c, 4)
        assert [m.offset() for m in rest] == [6, 7, 8, 9]
        deadline = time.monotonic() + 10
        while not any("validation succeeded" in x for x in lines.lines):
            assert time.monotonic() < deadline, lines.lines[-20:]
            c.poll(0.1)
    finally:
        c.close()
        log.removeHandler(lines)
