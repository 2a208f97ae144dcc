"""The per-record read paths (``for r in consumer``, ``poll()``): positions
and commits stay exact record by record and across batch boundaries, the
order over several partitions is the one ``poll(max_records=1)`` gives, all
record fields survive, a record that cannot be decoded in the middle of a
batch is raised after the records before it, and records stay out of the
cyclic GC only when nothing in them can form a cycle."""

from __future__ import annotations

import gc
import itertools
import struct
from pathlib import Path

import pytest

import ottla
from helpers import Spawn, log_files
from ottla import TopicPartition as TP

BATCH = 5  # records per batch in these tests


def produce_batches(
    path: Path,
    topic: str,
    n_batches: int,
    partition: int = 0,
    start: int = 0,
    per_batch: int = BATCH,
) -> None:
    """``n_batches`` batches of ``per_batch`` records each, one flush apiece."""
    with ottla.Producer(path) as p:
        for b in range(n_batches):
            first = start + b * per_batch
            p.send_many(
                topic,
                [b"p%d-%d" % (partition, i) for i in range(first, first + per_batch)],
                partition=partition,
            ).get(10)


@pytest.mark.parametrize("k", [0, 1, BATCH - 1, BATCH, BATCH + 1, 2 * BATCH, 3 * BATCH - 1])
def test_position_and_commit_after_k_records(data_dir: Path, k: int) -> None:
    produce_batches(data_dir, "t", 3)
    tp = TP("t", 0)
    with ottla.Consumer(
        data_dir,
        "t",
        group_id="g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=0,
    ) as c:
        it = iter(c)
        got = [next(it) for _ in range(k)]
        assert [r.offset for r in got] == list(range(k))
        # Position and commit after every single record, not just at the end.
        assert c.position(tp) == k
        c.commit()
        assert c.committed(tp) == k
    with ottla.Consumer(
        data_dir,
        "t",
        group_id="g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=0,
    ) as c2:
        rest = list(c2)
        assert [r.offset for r in rest] == list(range(k, 3 * BATCH))


def test_position_moves_one_record_at_a_time(data_dir: Path) -> None:
    produce_batches(data_dir, "t", 3)
    tp = TP("t", 0)
    with ottla.Consumer(
        data_dir,
        "t",
        group_id="g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=0,
    ) as c:
        for i, r in enumerate(c):
            assert r.offset == i
            assert c.position(tp) == i + 1
            if i % 3 == 0:
                c.commit()
                assert c.committed(tp) == i + 1
        assert c.position(tp) == 3 * BATCH


def test_seek_in_the_middle_of_a_batch_while_iterating(data_dir: Path) -> None:
    produce_batches(data_dir, "t", 2)
    tp = TP("t", 0)
    with ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        it = iter(c)
        assert [next(it).offset for _ in range(3)] == [0, 1, 2]
        c.seek(tp, 1)
        assert [next(it).offset for _ in range(2)] == [1, 2]
        c.seek(tp, 7)
        assert [r.offset for r in c] == [7, 8, 9]


@pytest.mark.directory_only(
    "the order in which partitions take turns is the directory engine's; a cluster's records come in the order its fetch responses bring them"
)
def test_iteration_order_over_partitions_is_poll_one_at_a_time(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("m", partitions=3)
    produce_batches(data_dir, "m", 3, partition=0)
    produce_batches(data_dir, "m", 1, partition=1, per_batch=2)
    produce_batches(data_dir, "m", 2, partition=2, per_batch=7)
    total = 3 * BATCH + 2 + 14

    def key(r: ottla.Record) -> tuple[int, int, bytes]:
        return (r.partition, r.offset, r.value)

    with ottla.Consumer(data_dir, "m", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        iterated = [key(r) for r in c]
    with ottla.Consumer(data_dir, "m", auto_offset_reset="earliest") as c:
        polled: list[tuple[int, int, bytes]] = []
        for _ in range(total + 5):
            for recs in c.poll(max_records=1).values():
                polled.extend(key(r) for r in recs)
    assert iterated == polled
    assert len(iterated) == total
    for p in range(3):
        offs = [o for (q, o, _) in iterated if q == p]
        assert offs == list(range(len(offs)))
    # several partitions take turns rather than one draining first
    assert len({q for (q, _, _) in iterated[:3]}) > 1


def test_iteration_hands_out_key_headers_and_null_value(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("h", b"plain")
        p.send("h", None, key=b"k1", headers=[("a", b"1"), ("b", None)])
        p.send("h", b"after", key="text-key")
        p.flush()
    with ottla.Consumer(data_dir, "h", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        recs = list(c)
    assert [(r.key, r.value, r.headers) for r in recs] == [
        (None, b"plain", []),
        (b"k1", None, [("a", b"1"), ("b", None)]),
        (b"text-key", b"after", []),
    ]
    assert [r.offset for r in recs] == [0, 1, 2]
    assert all(r.topic == "h" and r.partition == 0 for r in recs)
    assert all(isinstance(r.timestamp, int) and r.timestamp > 0 for r in recs)
    # a Record's headers are a fresh list each time: changing one changes nothing
    recs[1].headers.append(("c", b"3"))
    assert recs[1].headers == [("a", b"1"), ("b", None)]


def _crc32c(data: bytes) -> int:
    from kafka.record.util import calc_crc32c

    crc: int = calc_crc32c(data)
    return crc


def _varint_len_at(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(zig-zag decoded value, bytes) of the varint at ``pos``."""
    v, shift, n = 0, 0, 0
    while True:
        b = buf[pos + n]
        v |= (b & 0x7F) << shift
        n += 1
        if b < 0x80:
            return (v >> 1) ^ -(v & 1), n
        shift += 7


def _break_record(seg: Path, batch_index: int, record_index: int) -> int:
    """Make one record of a batch undecodable (its length field says 0)
    while the batch's CRC stays valid; returns that record's offset."""
    raw = bytearray(seg.read_bytes())
    pos = 0
    for _ in range(batch_index):
        pos += 12 + struct.unpack_from(">i", raw, pos + 8)[0]
    base: int = struct.unpack_from(">q", raw, pos)[0]
    size = 12 + struct.unpack_from(">i", raw, pos + 8)[0]
    at = pos + 61  # the batch header's length
    for _ in range(record_index):
        length, n = _varint_len_at(raw, at)
        at += n + length
    length, n = _varint_len_at(raw, at)
    assert n == 1 and length > 0
    raw[at] = 0  # zig-zag 0: a record of no bytes, which cannot hold its fields
    crc = _crc32c(bytes(raw[pos + 21 : pos + size]))
    struct.pack_into(">I", raw, pos + 17, crc)
    seg.write_bytes(bytes(raw))
    return base + record_index


@pytest.mark.directory_only(
    "bytes written into the directory's log file behind the engine; over the wire a broker's batch is librdkafka's to decode"
)
def test_undecodable_record_mid_batch_comes_after_the_records_before_it(data_dir: Path) -> None:
    produce_batches(data_dir, "bad", 3)
    seg = log_files(Path(data_dir) / "bad-0")[0]
    bad = _break_record(seg, batch_index=1, record_index=2)
    assert bad == BATCH + 2
    tp = TP("bad", 0)
    with ottla.Consumer(data_dir, "bad", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        got = []
        with pytest.raises(ottla.InvalidRecordError, match="bad-0"):
            for r in c:
                got.append(r)
        assert [r.offset for r in got] == list(range(bad))
        assert [r.value for r in got] == [b"p0-%d" % i for i in range(bad)]
        assert c.position(tp) == bad
        # asking again does not skip the damage
        with pytest.raises(ottla.InvalidRecordError):
            next(iter(c))
        assert c.position(tp) == bad
        # a seek past it reads on
        c.seek(tp, 2 * BATCH)
        assert [r.offset for r in c] == list(range(2 * BATCH, 3 * BATCH))


@pytest.mark.directory_only(
    "as test_undecodable_record_mid_batch_comes_after_the_records_before_it"
)
def test_poll_with_an_undecodable_record_hands_out_the_records_before_it(data_dir: Path) -> None:
    produce_batches(data_dir, "bad", 3)
    seg = log_files(Path(data_dir) / "bad-0")[0]
    bad = _break_record(seg, batch_index=1, record_index=2)
    with ottla.Consumer(data_dir, "bad", auto_offset_reset="earliest") as c:
        first = c.poll(max_records=100)
        assert [r.offset for r in first[TP("bad", 0)]] == list(range(bad))
        with pytest.raises(ottla.InvalidRecordError):
            c.poll(max_records=100)
        assert c.position(TP("bad", 0)) == bad


def test_records_without_deserializers_stay_out_of_the_gc(data_dir: Path) -> None:
    produce_batches(data_dir, "g", 4)
    with ottla.Consumer(data_dir, "g", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        it = iter(c)
        kept = list(itertools.islice(it, 7))  # some fresh, some recycled
        assert not any(gc.is_tracked(r) for r in kept)
        polled = [r for recs in c.poll(max_records=100).values() for r in recs]
        assert len(kept) + len(polled) == 4 * BATCH
        assert not any(gc.is_tracked(r) for r in polled)
        assert [r.offset for r in kept + polled] == list(range(4 * BATCH))


class _Box:
    """A deserialized value that can point back at its record."""

    freed = 0

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.record: object = None

    def __del__(self) -> None:
        _Box.freed += 1


@pytest.mark.directory_only("the engine's record free list and its GC tracking of records")
def test_deserialized_records_are_tracked_so_cycles_are_collected(data_dir: Path) -> None:
    produce_batches(data_dir, "g", 2)
    # Fill the record free list with untracked records first.
    with ottla.Consumer(data_dir, "g", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        for _ in c:
            pass
    _Box.freed = 0
    with ottla.Consumer(
        data_dir, "g", auto_offset_reset="earliest", consumer_timeout_ms=0, value_deserializer=_Box
    ) as c:
        recs = list(c)
        assert len(recs) == 2 * BATCH
        assert all(gc.is_tracked(r) for r in recs)
        assert recs[3].value.raw == b"p0-3"
        for r in recs:
            r.value.record = r  # record -> box -> record
        del r
    del recs
    gc.collect()
    assert _Box.freed == 2 * BATCH


@pytest.mark.not_on_cluster("writes a compressed batch into the directory's files")
def test_iteration_through_a_compressed_batch(data_dir: Path, spawn: Spawn) -> None:
    pytest.importorskip("kafka")
    from test_arrow import PLAIN_WRITER, _write_gzip_batch

    assert spawn(PLAIN_WRITER, data_dir).wait(60) == 0
    _write_gzip_batch(Path(data_dir) / "gz-0", 3, [b"zipped-%d" % i for i in range(4)])
    tp = TP("gz", 0)
    with ottla.Consumer(data_dir, "gz", auto_offset_reset="earliest", consumer_timeout_ms=0) as c:
        got = []
        for r in c:
            got.append((r.offset, r.value))
            assert c.position(tp) == r.offset + 1
    assert got == [(i, b"plain-%d" % i) for i in range(3)] + [
        (3 + i, b"zipped-%d" % i) for i in range(4)
    ]
