"""Hand-built Kafka protocol frames, for tests that need bytes no client
library would send (bad input) or control a client would not give (a retried
idempotent batch). Only the few request versions the tests use are encoded."""

from __future__ import annotations

import socket
import struct

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_API_VERSIONS = 18
API_INIT_PRODUCER_ID = 22


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(
    api_key: int, version: int, correlation_id: int, body: bytes, client_id: str = "wire-test"
) -> bytes:
    """A whole request: size prefix, header v1, body."""
    msg = struct.pack(">hhi", api_key, version, correlation_id) + _str(client_id) + body
    return struct.pack(">i", len(msg)) + msg


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return buf


def response(sock: socket.socket) -> tuple[int, bytes]:
    """(correlation id, body) of the next response."""
    (n,) = struct.unpack(">i", recv_exact(sock, 4))
    data = recv_exact(sock, n)
    return struct.unpack(">i", data[:4])[0], data[4:]


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the broker closes the connection within ``timeout`` (any bytes
    it sends first are ignored)."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def api_versions(sock: socket.socket, correlation_id: int = 1) -> list[tuple[int, int, int]]:
    """ApiVersions v0 round trip: [(api key, min, max)]."""
    sock.sendall(frame(API_API_VERSIONS, 0, correlation_id, b""))
    cid, body = response(sock)
    assert cid == correlation_id
    (err,) = struct.unpack(">h", body[:2])
    assert err == 0, err
    (n,) = struct.unpack(">i", body[2:6])
    return [struct.unpack(">hhh", body[6 + 6 * i : 12 + 6 * i]) for i in range(n)]


def init_producer_id(sock: socket.socket, correlation_id: int = 2) -> tuple[int, int]:
    """InitProducerId v0 without a transactional id: (producer id, epoch)."""
    body = _str(None) + struct.pack(">i", 60000)
    sock.sendall(frame(API_INIT_PRODUCER_ID, 0, correlation_id, body))
    cid, data = response(sock)
    assert cid == correlation_id
    _throttle, err, pid, epoch = struct.unpack(">ihqh", data[:16])
    assert err == 0, err
    return pid, epoch


def _produce_body(topic: str, partition: int, records: bytes, acks: int) -> bytes:
    """A Produce body (v3-v8) with one partition's record batches, no
    transactional id and a 10 s timeout."""
    return (
        _str(None)
        + struct.pack(">hi", acks, 10000)
        + struct.pack(">i", 1)
        + _str(topic)
        + struct.pack(">i", 1)
        + struct.pack(">ii", partition, len(records))
        + records
    )


def produce(
    sock: socket.socket,
    topic: str,
    partition: int,
    records: bytes,
    correlation_id: int = 3,
    acks: int = -1,
) -> tuple[int, int]:
    """Produce v3 of one partition's record batches: (error code, base offset)."""
    body = _produce_body(topic, partition, records, acks)
    sock.sendall(frame(API_PRODUCE, 3, correlation_id, body))
    cid, data = response(sock)
    assert cid == correlation_id
    (ntopics,) = struct.unpack(">i", data[:4])
    assert ntopics == 1
    (tlen,) = struct.unpack(">h", data[4:6])
    at = 6 + tlen
    (nparts,) = struct.unpack(">i", data[at : at + 4])
    assert nparts == 1
    _p, err, base = struct.unpack(">ihq", data[at + 4 : at + 18])
    return err, base


def uvarint(n: int) -> bytes:
    """An unsigned varint, as flexible versions write lengths and tag counts."""
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def flexible_request(host: str, port: int, api: int, version: int, body: bytes) -> bytes:
    """One request with header v2 on a new connection; the response body
    after its header v1."""
    header = struct.pack(">hhi", api, version, 9) + _str("raw") + uvarint(0)
    msg = header + body
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        cid, data = response(s)
    assert cid == 9
    assert data[0] == 0, "response header tags"
    return data[1:]


def compact_str(s: str | None) -> bytes:
    """A compact (flexible-version) nullable string."""
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


class Reader:
    """Reads a response body, flexible versions' compact types included."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        b = self.data[self.pos : self.pos + n]
        assert len(b) == n, "response cut short"
        self.pos += n
        return b

    def _int(self, fmt: str) -> int:
        v: int = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return v

    def i8(self) -> int:
        return self._int(">b")

    def i16(self) -> int:
        return self._int(">h")

    def i32(self) -> int:
        return self._int(">i")

    def i64(self) -> int:
        return self._int(">q")

    def uvarint(self) -> int:
        n = shift = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def count(self) -> int:
        """A compact array's length."""
        return self.uvarint() - 1

    def cstr(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def cbytes(self) -> bytes:
        n = self.uvarint()
        return b"" if n == 0 else self.take(n - 1)

    def tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def done(self) -> None:
        assert self.pos == len(self.data), "bytes left over"


def produce_v8(
    sock: socket.socket,
    topic: str,
    partition: int,
    records: bytes,
    correlation_id: int = 3,
) -> tuple[int, int, list[tuple[int, str | None]], str | None]:
    """Produce v8 (acks -1) of one partition's record batches: (error code,
    base offset, record errors [(batch index, message)], error message)."""
    err, base, _append_time, errors, message = produce_v8_answer(
        sock, topic, partition, records, correlation_id=correlation_id
    )
    return err, base, errors, message


def produce_v8_answer(
    sock: socket.socket,
    topic: str,
    partition: int,
    records: bytes,
    acks: int = -1,
    correlation_id: int = 3,
) -> tuple[int, int, int, list[tuple[int, str | None]], str | None]:
    """Produce v8 of one partition's record batches, the whole answer:
    (error code, base offset, log append time, record errors [(batch index,
    message)], error message)."""
    body = _produce_body(topic, partition, records, acks)
    sock.sendall(frame(API_PRODUCE, 8, correlation_id, body))
    cid, data = response(sock)
    assert cid == correlation_id

    def read_str(at: int) -> tuple[str | None, int]:
        (n,) = struct.unpack(">h", data[at : at + 2])
        if n < 0:
            return None, at + 2
        return data[at + 2 : at + 2 + n].decode(), at + 2 + n

    (ntopics,) = struct.unpack(">i", data[:4])
    assert ntopics == 1
    _name, at = read_str(4)
    (nparts,) = struct.unpack(">i", data[at : at + 4])
    assert nparts == 1
    # index, error code, base offset, log append time, log start offset
    _p, err, base, append_time, _start = struct.unpack(">ihqqq", data[at + 4 : at + 34])
    at += 34
    (nerrors,) = struct.unpack(">i", data[at : at + 4])
    at += 4
    errors = []
    for _ in range(max(nerrors, 0)):
        (index,) = struct.unpack(">i", data[at : at + 4])
        message, at = read_str(at + 4)
        errors.append((index, message))
    message, at = read_str(at)
    return err, base, append_time, errors, message


def record_batch(
    values: list[bytes],
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    compression: int = 0,
    keys: list[bytes | None] | None = None,
) -> bytes:
    """A record batch v2, built by kafka-python's encoder (an independent
    implementation of the format); records have no key unless ``keys``."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 20,
    )
    for i, v in enumerate(values):
        key = keys[i] if keys is not None else None
        b.append(i, timestamp=None, key=key, value=v, headers=[])
    return bytes(b.build())


def fetch(
    sock: socket.socket,
    topic: str,
    partitions: list[tuple[int, int]],
    max_bytes: int,
    partition_max_bytes: int,
    correlation_id: int = 4,
) -> tuple[int, list[tuple[int, int, int, bytes]]]:
    """Fetch v4 of ``partitions`` [(partition, fetch offset)], in that order,
    without waiting: (response frame size, [(partition, error code, high
    watermark, records)])."""
    body = struct.pack(">iiiib", -1, 0, 0, max_bytes, 0)
    body += struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(partitions))
    for p, offset in partitions:
        body += struct.pack(">iqi", p, offset, partition_max_bytes)
    sock.sendall(frame(API_FETCH, 4, correlation_id, body))
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    data = recv_exact(sock, size)
    (cid,) = struct.unpack(">i", data[:4])
    assert cid == correlation_id
    at = 8  # correlation id, throttle time
    (ntopics,) = struct.unpack(">i", data[at : at + 4])
    assert ntopics == 1
    (tlen,) = struct.unpack(">h", data[at + 4 : at + 6])
    at += 6 + tlen
    (nparts,) = struct.unpack(">i", data[at : at + 4])
    at += 4
    out = []
    for _ in range(nparts):
        p, err, hw, _lso, naborted = struct.unpack(">ihqqi", data[at : at + 26])
        at += 26 + 16 * max(naborted, 0)
        (rlen,) = struct.unpack(">i", data[at : at + 4])
        at += 4
        records = data[at : at + max(rlen, 0)]
        at += max(rlen, 0)
        out.append((p, err, hw, records))
    return 4 + size, out


def batch_sizes(records: bytes) -> list[int]:
    """The sizes of the record batches in ``records``, a trailing partial
    batch included as what is there of it."""
    sizes = []
    at = 0
    while at + 12 <= len(records):
        (n,) = struct.unpack(">i", records[at + 8 : at + 12])
        sizes.append(min(12 + n, len(records) - at))
        at += 12 + n
    return sizes


API_DELETE_RECORDS = 21


def delete_records(
    sock: socket.socket, topic: str, offsets: list[tuple[int, int]], correlation_id: int = 6
) -> list[tuple[int, int, int]]:
    """DeleteRecords v1 of ``offsets`` [(partition, offset)] of one topic:
    [(partition, low watermark, error code)]."""
    body = struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(offsets))
    for p, offset in offsets:
        body += struct.pack(">iq", p, offset)
    body += struct.pack(">i", 10_000)
    sock.sendall(frame(API_DELETE_RECORDS, 1, correlation_id, body))
    cid, data = response(sock)
    assert cid == correlation_id
    at = 4  # throttle time
    (ntopics,) = struct.unpack(">i", data[at : at + 4])
    assert ntopics == 1
    (tlen,) = struct.unpack(">h", data[at + 4 : at + 6])
    at += 6 + tlen
    (nparts,) = struct.unpack(">i", data[at : at + 4])
    at += 4
    out = []
    for _ in range(nparts):
        p, low, err = struct.unpack(">iqh", data[at : at + 14])
        at += 14
        out.append((p, low, err))
    return out
