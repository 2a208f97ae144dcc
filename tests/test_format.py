"""The on-disk format, checked with kafka-python's independent record-batch
reader: every ``.log`` file is a sequence of Kafka v2 record batches whose
offsets, keys, values, headers and timestamps are what the producer sent;
``.index`` / ``.timeindex`` hold 8- and 12-byte entries."""

from __future__ import annotations

import base64
import random
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka.record import MemoryRecords

import ottla
from helpers import log_files

SEGMENT_NAME_LEN = len("00000000000000000000.log")

# What was sent: (key, value, headers, timestamp).
Header = tuple[str, bytes | None]
Sent = tuple[bytes | None, bytes | bytearray | None, list[Header], int]


def parse_log(path: Path) -> list[tuple[Any, list[Any]]]:
    """[(batch, [records])] of one .log file, via kafka-python."""
    data = path.read_bytes()
    mr = MemoryRecords(data)
    out: list[tuple[Any, list[Any]]] = []
    while True:
        batch = mr.next_batch()
        if batch is None:
            break
        assert batch.magic == 2
        if hasattr(batch, "validate_crc"):
            assert batch.validate_crc(), f"CRC mismatch in {path.name} batch {batch.base_offset}"
        recs = list(batch)
        out.append((batch, recs))
    assert not mr.has_next()
    assert mr.valid_bytes() == len(data), f"{path.name}: trailing bytes after the last batch"
    return out


def parse_partition(part_dir: Path) -> list[tuple[int, Any, list[Any]]]:
    """[(segment_base, batch, records)] over every segment, in order."""
    out: list[tuple[int, Any, list[Any]]] = []
    for f in log_files(part_dir):
        assert len(f.name) == SEGMENT_NAME_LEN and f.stem.isdigit()
        base = int(f.stem)
        batches = parse_log(f)
        if batches:
            assert batches[0][0].base_offset == base, (
                f"{f.name} starts at {batches[0][0].base_offset}"
            )
        for b, recs in batches:
            out.append((base, b, recs))
    return out


def make_sent(n: int, seed: int = 7, base_ts: int | None = None) -> list[Sent]:
    rng = random.Random(seed)
    base_ts = base_ts if base_ts is not None else int(time.time() * 1000) - 100_000
    sent: list[Sent] = []
    for i in range(n):
        key = None if i % 7 == 0 else (b"" if i % 11 == 0 else f"key-{i}".encode())
        value = (
            None if i % 13 == 0 else bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        )
        headers: list[Header] = []
        if i % 3 == 0:
            headers = [("h1", f"hv{i}".encode()), ("null-h", None)]
        if i % 5 == 0:
            headers.append(("ümlaut", b"\x00\x01\xff"))
        ts = base_ts + i * 3 + rng.randrange(0, 3)
        sent.append((key, value, headers, ts))
    return sent


def produce(data_dir: Path, topic: str, sent: Sequence[Sent]) -> list[ottla.RecordMetadata]:
    with ottla.Producer(data_dir) as p:
        futs = []
        for i, (k, v, h, ts) in enumerate(sent):
            futs.append(p.send(topic, v, key=k, headers=h or None, timestamp=ts, partition=0))
            if i % 17 == 0:
                p.flush()  # vary batch sizes
        mds = [f.get(10) for f in futs]
    return mds


def check_records(parsed: list[tuple[int, Any, list[Any]]], sent: Sequence[Sent]) -> None:
    offsets = []
    for _base, batch, recs in parsed:
        assert batch.compression_type == 0
        assert not batch.is_control_batch
        assert batch.records_count == len(recs)
        assert [r.offset for r in recs] == list(range(batch.base_offset, batch.last_offset + 1))
        assert batch.max_timestamp == max(r.timestamp for r in recs)
        assert batch.first_timestamp == recs[0].timestamp
        for r in recs:
            offsets.append(r.offset)
            key, value, headers, ts = sent[r.offset]
            assert r.key == key, r.offset
            assert r.value == value, r.offset
            assert r.timestamp == ts, r.offset
            assert [(k, v) for k, v in r.headers] == headers, r.offset
    assert offsets == list(range(len(sent))), "offsets must be 0..n-1, gap-free, in order"


def test_log_parses_with_kafka_python_single_segment(data_dir: Path) -> None:
    sent = make_sent(300)
    mds = produce(data_dir, "fmt", sent)
    assert [m.offset for m in mds] == list(range(300))
    part = data_dir / "fmt-0"
    assert [f.name for f in log_files(part)] == ["00000000000000000000.log"]
    parsed = parse_partition(part)
    assert len(parsed) > 5  # several batches
    check_records(parsed, sent)


def test_log_parses_with_kafka_python_many_segments(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic(
        "fmt", config={"segment.bytes": 2048, "index.interval.bytes": 200}
    )
    sent = make_sent(600, seed=11)
    produce(data_dir, "fmt", sent)
    part = data_dir / "fmt-0"
    logs = log_files(part)
    assert len(logs) >= 5, [f.name for f in logs]
    parsed = parse_partition(part)
    check_records(parsed, sent)
    # Segments tile the offsets: each file name is its first offset and the
    # next segment starts right after the previous one ends.
    bases = [int(f.stem) for f in logs]
    assert bases[0] == 0
    for f, nxt in zip(logs, bases[1:], strict=False):
        last = parse_log(f)[-1][0]
        assert last.next_offset == nxt
    for f in logs[:-1]:
        assert (
            f.stat().st_size <= 2048 + 1024
        )  # a segment rolls before growing much past segment.bytes


def test_read_back_through_ottla_matches_sent(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("fmt", config={"segment.bytes": 4096})
    sent = make_sent(400, seed=3)
    produce(data_dir, "fmt", sent)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([ottla.TopicPartition("fmt", 0)])
        got: list[ottla.Record] = []
        deadline = time.monotonic() + 10
        while len(got) < 400 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=100).values():
                got.extend(recs)
    assert [r.offset for r in got] == list(range(400))
    for r in got:
        key, value, headers, ts = sent[r.offset]
        assert (r.key, r.value, r.timestamp, r.headers) == (key, value, ts, headers)


def test_producer_batches_records(data_dir: Path) -> None:
    with ottla.Producer(data_dir, linger_ms=60_000) as p:
        p.send_many("b", [b"%d" % i for i in range(100)]).wait(10)
    parsed = parse_partition(data_dir / "b-0")
    assert len(parsed) == 1
    _, batch, recs = parsed[0]
    assert (batch.base_offset, batch.last_offset) == (0, 99)
    assert [r.value for r in recs] == [b"%d" % i for i in range(100)]
    # Kafka's "no producer id" markers
    assert batch.producer_id == -1
    assert batch.producer_epoch == -1
    assert batch.base_sequence == -1


def test_crc32c_is_checked_independently(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        for i in range(5):
            p.send("c", b"payload-%d" % i).get(10)
    f = data_dir / "c-0" / "00000000000000000000.log"
    parsed = parse_log(f)
    assert len(parsed) == 5
    # Flip a value byte: kafka-python now sees a bad CRC too (so the CRC
    # ottla wrote really is Kafka's CRC-32C over the batch).
    raw = bytearray(f.read_bytes())
    i = raw.index(b"payload-2")
    raw[i] ^= 0x01
    bad = MemoryRecords(bytes(raw))
    crcs = []
    while True:
        b = bad.next_batch()
        if b is None:
            break
        crcs.append(b.validate_crc())
    assert crcs == [True, True, False, True, True]


def read_index(path: Path, entry: int) -> list[bytes]:
    data = path.read_bytes()
    assert len(data) % entry == 0, f"{path.name}: {len(data)} bytes is not a multiple of {entry}"
    return [data[i : i + entry] for i in range(0, len(data), entry)]


def test_index_and_timeindex_entries(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic(
        "ix",
        config={"segment.bytes": 4096, "index.interval.bytes": 100, "segment.index.bytes": 1000},
    )
    sent = make_sent(500, seed=5)
    produce(data_dir, "ix", sent)
    part = data_dir / "ix-0"
    logs = log_files(part)
    assert len(logs) >= 3
    active = logs[-1]
    for f in logs:
        idx, tidx = f.with_suffix(".index"), f.with_suffix(".timeindex")
        assert idx.exists() and tidx.exists()
        offs = read_index(idx, 8)
        times = read_index(tidx, 12)
        if f == active:
            continue  # preallocated; only the entry size is checked
        base = int(f.stem)
        batches = parse_log(f)
        positions = {}
        pos = 0
        for b, _ in batches:
            positions[pos] = b
            pos += b.size_in_bytes
        assert offs, f"no index entries in {idx.name}"
        last_pos = -1
        for e in offs:
            rel, position = struct.unpack(">iI", e)
            assert position > last_pos
            last_pos = position
            assert position in positions, f"{idx.name}: position {position} is not a batch start"
            b = positions[position]
            assert b.base_offset <= base + rel <= b.last_offset
        assert times, f"no time index entries in {tidx.name}"
        last_ts = None
        seg_max = max(r.timestamp for _, recs in batches for r in recs)
        for e in times:
            ts, rel = struct.unpack(">qi", e)
            assert last_ts is None or ts >= last_ts
            last_ts = ts
            assert 0 <= rel <= batches[-1][0].last_offset - base
        # the closed segment's last time entry is its largest timestamp
        assert last_ts == seg_max


def test_segment_files_and_partition_files(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("lay", partitions=2, config={"segment.bytes": 1024})
    with ottla.Producer(data_dir) as p:
        for _i in range(100):
            p.send("lay", b"x" * 50, partition=0).get(10)
    part = data_dir / "lay-0"
    names = sorted(x.name for x in part.iterdir())
    assert "partition.head" in names and "partition.lock" in names
    logs = [n for n in names if n.endswith(".log")]
    assert len(logs) > 3
    for n in logs:
        stem = n[:-4]
        assert len(stem) == 20 and stem.isdigit()
        assert stem + ".index" in names and stem + ".timeindex" in names
    assert (data_dir / ".ottla" / "topics" / "lay").read_text().count("partitions=2") == 1


def test_consumer_offsets_topic_is_kafka_format(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("t", b"x").get(10)
    with ottla.Consumer(data_dir, "t", group_id="fmt-group", enable_auto_commit=False) as c:
        c.commit({ottla.TopicPartition("t", 0): 1})
    parsed = parse_partition(data_dir / "__consumer_offsets-0")
    recs = [r for _, _, rs in parsed for r in rs]
    assert recs
    r = recs[-1]
    # key v1: version, group, topic, partition
    ver, glen = struct.unpack_from(">hh", r.key)
    assert ver == 1
    group = r.key[4 : 4 + glen].decode()
    (tlen,) = struct.unpack_from(">h", r.key, 4 + glen)
    topic = r.key[6 + glen : 6 + glen + tlen].decode()
    (partition,) = struct.unpack_from(">i", r.key, 6 + glen + tlen)
    assert (group, topic, partition) == ("fmt-group", "t", 0)
    # value v4 (Kafka's flexible version): version, offset, leader epoch,
    # compact-string metadata, commit timestamp, then one tagged field
    # (tag 0: the topic id, 16 bytes)
    vver, offset, epoch, mlen = struct.unpack_from(">hqib", r.value)
    assert (vver, offset, epoch, mlen) == (4, 1, -1, 1)
    assert r.value[23:26] == bytes([1, 0, 16])
    assert len(r.value) == 23 + 3 + 16
    topic_id = ottla.Admin(data_dir).describe_topic("t").topic_id
    assert base64.urlsafe_b64encode(r.value[26:]).decode().rstrip("=") == topic_id


def test_segment_ms_rolls_segments(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("ms", config={"segment.ms": 200})
    with ottla.Producer(data_dir) as p:
        p.send("ms", b"1").get(10)
        p.send("ms", b"2").get(10)
        time.sleep(0.3)
        p.send("ms", b"3").get(10)
    names = [f.name for f in log_files(data_dir / "ms-0")]
    assert names == ["00000000000000000000.log", "00000000000000000002.log"]
    assert [r.value for _, _, recs in parse_partition(data_dir / "ms-0") for r in recs] == [
        b"1",
        b"2",
        b"3",
    ]


def test_small_segment_index_forces_rolls(data_dir: Path) -> None:
    # 64 bytes hold 8 offset entries / 5 time entries: a full index rolls the segment.
    ottla.Admin(data_dir).create_topic(
        "ix", config={"segment.index.bytes": 64, "index.interval.bytes": 1}
    )
    with ottla.Producer(data_dir) as p:
        for i in range(100):
            p.send("ix", b"%d" % i).get(10)
    part = data_dir / "ix-0"
    logs = log_files(part)
    assert len(logs) > 5
    for f in logs:
        assert f.with_suffix(".index").stat().st_size <= 64
        assert f.with_suffix(".timeindex").stat().st_size <= 64
        read_index(f.with_suffix(".index"), 8)
        read_index(f.with_suffix(".timeindex"), 12)
    recs = [r for _, _, rs in parse_partition(part) for r in rs]
    assert [(r.offset, r.value) for r in recs] == [(i, b"%d" % i) for i in range(100)]


def test_bulk_send_many_decodes_with_kafka_python(data_dir: Path) -> None:
    """send_many with a plain list of bytes takes the batch-at-a-time
    encoder; kafka-python must read back exactly what a record-at-a-time
    send writes: every value, null values, lengths across varint widths,
    batches split at batch_size, one timestamp for the call."""
    rng = random.Random(3)
    sizes = [0, 1, 63, 64, 100, 8191, 8192, 20000]
    values: list[bytes | bytearray | memoryview | str | None] = [
        None if i % 97 == 5 else bytes([i % 251]) * rng.choice(sizes) for i in range(3000)
    ]
    # A bytearray, a memoryview and a str far into the list: their chunk
    # takes the general path, and the records are the same.
    values += [b"tail-%d" % i for i in range(17000)]
    values[12000] = bytearray(b"from-a-bytearray")
    values[15000] = memoryview(b"from-a-memoryview")
    values[16000] = "from-a-str"
    with ottla.Producer(data_dir, linger_ms=60_000, batch_size=64 * 1024) as p:
        mds = p.send_many("bulk", values, timestamp=1_600_000_000_000).get(10)
    assert [m.offset for m in mds] == list(range(len(values)))
    parsed = parse_partition(data_dir / "bulk-0")
    assert len(parsed) > 10, "batches are split at batch_size"
    for _, batch, _ in parsed:
        assert batch.size_in_bytes <= 64 * 1024 or batch.last_offset == batch.base_offset
    got = [r for _, _, recs in parsed for r in recs]
    expect = [
        bytes(v)
        if isinstance(v, (bytearray, memoryview))
        else v.encode()
        if isinstance(v, str)
        else v
        for v in values
    ]
    assert [r.offset for r in got] == list(range(len(values)))
    assert [r.value for r in got] == expect
    assert all(r.key is None and r.timestamp == 1_600_000_000_000 and not r.headers for r in got)


def test_large_values_written_from_the_callers_buffer_decode(data_dir: Path) -> None:
    """A value that fills a batch by itself is written straight from the
    caller's bytes (pwritev, no copy into a batch): kafka-python must read
    the same records a copying send writes, in send order, keys, headers,
    timestamps and all, interleaved with small records of the same
    partition, with fsync on and off."""
    rng = random.Random(11)
    for fsync in ("never", "always"):
        topic = f"large-{fsync}"
        ottla.Admin(data_dir).create_topic(topic, 1, {"max.message.bytes": 4 * 1024 * 1024})
        sent: list[Sent] = []
        for i in range(24):
            value: bytes | bytearray | None
            if i % 3 == 0:
                value = bytes(rng.getrandbits(8) for _ in range(64)) * rng.choice(
                    [1024, 4096, 16384]
                )
            elif i % 3 == 1:
                value = b"small-%d" % i
            else:
                value = bytearray(b"a bytearray is copied") * 20000 if i % 6 == 2 else None
            key = None if i % 4 == 0 else f"key-{i}".encode()
            headers = [("h", f"hv{i}".encode()), ("null-h", None)] if i % 5 == 0 else []
            sent.append((key, value, headers, 1_600_000_000_000 + i))
        with ottla.Producer(data_dir, fsync=fsync, batch_size=64 * 1024, linger_ms=60_000) as p:
            futs = [
                p.send(topic, v, key=k, headers=h or None, timestamp=ts, partition=0)
                for k, v, h, ts in sent
            ]
            mds = [f.get(10) for f in futs]
        assert [m.offset for m in mds] == list(range(len(sent)))
        expect = [(k, bytes(v) if isinstance(v, bytearray) else v, h, ts) for k, v, h, ts in sent]
        check_records(parse_partition(data_dir / f"{topic}-0"), expect)
        with ottla.Consumer(
            data_dir, topic, auto_offset_reset="earliest", consumer_timeout_ms=2000
        ) as c:
            got = [(r.key, r.value) for r in c]
        assert got == [(k, v) for k, v, _, _ in expect]


def test_large_value_over_max_message_bytes_is_refused(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("big", 1, {"max.message.bytes": 512 * 1024})
    with ottla.Producer(data_dir, batch_size=64 * 1024) as p:
        with pytest.raises(ottla.RecordTooLargeError):
            p.send("big", b"x" * (600 * 1024))
        # The producer is still usable, and nothing was written.
        assert p.send("big", b"y" * (200 * 1024)).get(10).offset == 0
