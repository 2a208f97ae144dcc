"""The log cleaner (``cleanup.policy=compact``): what survives, the on-disk
format of cleaned segments (read by kafka-python), ``kill -9`` in the middle
of a swap, a reader in another process across a clean, and committed
offsets in ``__consumer_offsets`` after compaction."""

from __future__ import annotations

import gc
import json
import signal
from pathlib import Path

import pytest
from kafka.record import MemoryRecords

import ottla
from helpers import Spawn, log_files, read_values, wait_until
from ottla.admin import ConfigValue

COMPACT: dict[str, ConfigValue] = {
    "cleanup.policy": "compact",
    "segment.bytes": 4096,
    "min.cleanable.dirty.ratio": 1,
}


# What was sent: {offset: (key, value)}.
Sent = dict[int, tuple[bytes, bytes]]


def produce(path: Path, topic: str, n: int, keys: int, start: int = 0) -> Sent:
    """Send n keyed records; returns {offset: (key, value)}."""
    sent: Sent = {}
    # Small batches, so the topic's 4 KiB segments roll many times.
    with ottla.Producer(path, batch_size=600) as p:
        futs = []
        for i in range(start, start + n):
            k = b"key-%d" % ((i * 7) % keys)
            v = b"value-%d-" % i + b"x" * (i % 50)
            futs.append((p.send(topic, v, key=k, partition=0), k, v))
        p.flush()
        for f, k, v in futs:
            sent[f.get(10).offset] = (k, v)
    return sent


def latest_per_key(sent: Sent, below: int) -> set[int]:
    """Offsets a compaction with clean end ``below`` keeps."""
    latest: dict[bytes, int] = {}
    for o, (k, _) in sorted(sent.items()):
        if o < below and k is not None:
            latest[k] = o
    return {o for o, (k, _) in sent.items() if o >= below or k is None or latest.get(k) == o}


def clean_end(data_dir: Path, topic: str) -> int:
    text = (data_dir / f"{topic}-0" / "cleaner-offset-checkpoint").read_text().split()
    return int(text[-1])


def check_read(data_dir: Path, topic: str, sent: Sent) -> set[int]:
    """Offsets strictly increase, each record is what was sent at its offset,
    and the latest value of every key is there. Returns the offsets read."""
    vals = read_values(data_dir, topic)
    offsets = [o for o, _, _ in vals]
    assert offsets == sorted(set(offsets)), "duplicates or disorder"
    for o, k, v in vals:
        assert sent[o] == (k, v), o
    latest: dict[bytes, int] = {}
    for o, (k, _) in sorted(sent.items()):
        latest[k] = o
    assert set(latest.values()) <= set(offsets), "a latest value was lost"
    gc.collect()
    return set(offsets)


def test_compact_keeps_latest_per_key_in_kafka_format(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("prices", config=COMPACT)
    sent = produce(data_dir, "prices", 600, keys=8)
    before = admin.describe_topic("prices").partitions[0]
    stats = admin.compact("prices")
    assert isinstance(stats, ottla.CompactionStats)
    assert stats.bytes_after < stats.bytes_before
    assert stats.records_after < stats.records_before
    after = admin.describe_topic("prices").partitions[0]
    assert (after.start_offset, after.end_offset) == (before.start_offset, before.end_offset)
    assert after.size_bytes < before.size_bytes
    end = clean_end(data_dir, "prices")
    assert check_read(data_dir, "prices", sent) == latest_per_key(sent, end)

    # Every cleaned .log is a valid sequence of v2 batches for kafka-python,
    # with the offsets, keys and values the producer sent.
    seen = []
    for f in log_files(data_dir / "prices-0"):
        data = f.read_bytes()
        mr = MemoryRecords(data)
        while True:
            batch = mr.next_batch()
            if batch is None:
                break
            assert batch.magic == 2
            assert batch.validate_crc(), f.name
            assert batch.base_offset >= int(f.stem)
            for r in batch:
                assert sent[r.offset] == (r.key, r.value)
                seen.append(r.offset)
        assert mr.valid_bytes() == len(data)
    assert seen == sorted(latest_per_key(sent, end))

    # A topic that is not compacted cannot be compacted.
    admin.create_topic("plain")
    with pytest.raises(ottla.InvalidConfigError):
        admin.compact("plain")


def test_tombstones_are_removed_after_delete_retention(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", config={**COMPACT, "delete.retention.ms": 0})
    with ottla.Producer(data_dir) as p:
        p.send("t", b"v", key=b"gone", partition=0)
        p.send("t", None, key=b"gone", partition=0)
    produce(data_dir, "t", 200, keys=3)
    admin.compact("t")
    keys = [k for _, k, _ in read_values(data_dir, "t")]
    assert keys.count(b"gone") == 1, "the tombstone survives its first cleaning"
    stats = admin.compact("t")
    assert stats.tombstones_removed == 1
    assert b"gone" not in [k for _, k, _ in read_values(data_dir, "t")]


CLEAN_CHILD = """
import sys
import ottla
print(ottla.Admin(sys.argv[1]).compact(sys.argv[2]), flush=True)
"""


@pytest.mark.parametrize("step", ["cleaned", "swap", "index", "deleted"])
@pytest.mark.parametrize("reader_open", [False, True])
def test_kill_9_during_a_clean(data_dir: Path, spawn: Spawn, step: str, reader_open: bool) -> None:
    """The cleaning process dies at each step of its first swap. Reopened,
    or read on by a process that had the partition open all along, the log
    loses no record that should survive and shows none twice; the next
    clean (or open) completes or discards the leftovers."""
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", config=COMPACT)
    sent = produce(data_dir, "t", 500, keys=6)
    reader = None
    if not reader_open:
        # Nothing of this process keeps the partition open: the next open
        # is the first, and runs the loader.
        del admin
        gc.collect()
    else:
        # This process keeps the partition open (as a live reader would),
        # so no loader runs: the leftovers are seen as they are.
        reader = ottla.Consumer(data_dir, auto_offset_reset="earliest", enable_auto_commit=False)
        reader.assign([ottla.TopicPartition("t", 0)])
        assert wait_until(lambda: bool(reader.poll(timeout_ms=100)), timeout=20)
    child = spawn(CLEAN_CHILD, data_dir, "t", env={"OTTLA_CLEANER_CRASH_AT": step})
    assert child.wait() == -signal.SIGKILL
    names = sorted(p.name for p in (data_dir / "t-0").iterdir())
    leftovers = [n for n in names if n.endswith((".cleaned", ".swap"))]
    assert leftovers, f"the crash at {step!r} left no cleaner files: {names}"
    check_read(data_dir, "t", sent)
    if not reader_open:
        names = sorted(p.name for p in (data_dir / "t-0").iterdir())
        assert not [n for n in names if n.endswith((".cleaned", ".swap"))], names
    more = produce(data_dir, "t", 50, keys=6, start=500)
    sent.update(more)
    check_read(data_dir, "t", sent)
    if reader is not None:
        reader.close()
    gc.collect()
    # The next clean (or, for the first opener, the loader) finishes the job.
    ottla.Admin(data_dir).compact("t")
    names = sorted(p.name for p in (data_dir / "t-0").iterdir())
    assert not [n for n in names if n.endswith((".cleaned", ".swap"))], names
    got = check_read(data_dir, "t", sent)
    assert got == latest_per_key(sent, clean_end(data_dir, "t"))


READER_CHILD = """
import json, os, sys, time
import ottla
path, topic, half, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = ottla.Consumer(path, auto_offset_reset="earliest", enable_auto_commit=False,
                   max_partition_fetch_bytes=512)
tp = ottla.TopicPartition(topic, 0)
c.assign([tp])
out = []
while c.position(tp) < half:
    for r in c.poll(timeout_ms=1000, max_records=5).get(tp, []):
        out.append([r.offset, r.value.decode()])
print("half", c.position(tp), flush=True)
while not os.path.exists(path + "/go"):
    time.sleep(0.01)
while c.position(tp) < end:
    for r in c.poll(timeout_ms=1000).get(tp, []):
        out.append([r.offset, r.value.decode()])
print(json.dumps(out), flush=True)
"""


def test_reader_in_another_process_reads_on_across_a_clean(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", config=COMPACT)
    sent = produce(data_dir, "t", 600, keys=5)
    end = admin.describe_topic("t").partitions[0].end_offset
    child = spawn(READER_CHILD, data_dir, "t", 200, end)
    pos = int(child.wait_line(lambda s: s.startswith("half"), timeout=30).split()[1])
    stats = admin.compact("t")
    assert stats.segments_before > 0
    (data_dir / "go").write_text("")
    out = json.loads(child.wait_line(lambda s: s.startswith("["), timeout=30))
    assert child.wait() == 0
    offsets = [o for o, _ in out]
    assert offsets == sorted(set(offsets)), "a record read twice or out of order"
    for o, v in out:
        assert sent[o][1].decode() == v
    survivors = latest_per_key(sent, clean_end(data_dir, "t"))
    assert {o for o in survivors if o >= pos} <= set(offsets), "a surviving record was skipped"


OFFSETS_CHILD = """
import json, os, sys, time
import ottla
path, go = sys.argv[1], sys.argv[2]
a = ottla.Admin(path)
def show():
    print(json.dumps(sorted([k[1], v["committed"]] for k, v in a.group_offsets("g").items())), flush=True)
show()
if go:
    while not os.path.exists(os.path.join(path, go)):
        time.sleep(0.01)
    show()
"""


def test_committed_offsets_resolve_after_compacting_consumer_offsets(
    data_dir: Path, spawn: Spawn
) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=10)
    tps = [ottla.TopicPartition("t", p) for p in range(10)]
    c = ottla.Consumer(data_dir, group_id="g", enable_auto_commit=False)
    c.assign(tps)
    c.commit({tp: 1 for tp in tps})
    # Another process has read the offsets topic incrementally up to here.
    child = spawn(OFFSETS_CHILD, data_dir, "go")
    first = json.loads(child.wait_line(lambda s: s.startswith("["), timeout=30))
    assert first == [[p, 1] for p in range(10)]
    admin.alter_topic_config("__consumer_offsets", {"segment.bytes": 2048})
    for n in range(2, 120):
        c.commit({tp: n * 10 + tp.partition for tp in tps})
    stats = admin.compact("__consumer_offsets")
    # The log cleaner may have compacted most of it already as segments
    # rolled; then this pass only merges the small cleaned segments.
    assert stats.bytes_after < stats.bytes_before or stats.segments_after < stats.segments_before
    (data_dir / "go").write_text("")
    last = json.loads(
        child.wait_line(lambda s: s.startswith("[") and s != json.dumps(first), timeout=30)
    )
    assert last == [[p, 1190 + p] for p in range(10)]
    assert child.wait() == 0
    for tp in tps:
        assert c.committed(tp) == 1190 + tp.partition
    c.close(autocommit=False)
    # A fresh process resolves the same offsets from the compacted topic.
    fresh = spawn(OFFSETS_CHILD, data_dir, "")
    assert json.loads(fresh.wait_line(timeout=30)) == last
    assert fresh.wait() == 0


PRODUCER_CHILD = """
import sys
import ottla
path, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with ottla.Producer(path, batch_size=600, linger_ms=0) as p:
    for i in range(n):
        k = b"key-%d" % (i % 7)
        p.send(topic, b"value-%d" % i, key=k, partition=0)
        if i % 50 == 49:
            p.flush()
    p.flush()
print("done", flush=True)
"""


def test_cleaning_while_another_process_appends(data_dir: Path, spawn: Spawn) -> None:
    """Passes in this process while another process appends (and rolls,
    and cleans on roll): the append lock orders every swap with the
    appends, so the log ends up with every latest value, each record at the
    offset it was written at, and nothing twice."""
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", config={**COMPACT, "min.cleanable.dirty.ratio": 0.5})
    child = spawn(PRODUCER_CHILD, data_dir, "t", 1500)
    passes = 0
    while child.proc.poll() is None and passes < 500:
        admin.compact("t")
        passes += 1
    assert child.wait(timeout=60) == 0
    child.wait_line(lambda s: s == "done")
    admin.compact("t")
    vals = read_values(data_dir, "t")
    offsets = [o for o, _, _ in vals]
    assert offsets == sorted(set(offsets))
    latest = {}
    for _o, k, v in vals:
        assert v.startswith(b"value-")
        latest[k] = int(v.split(b"-")[1])
    # The last value sent for each of the 7 keys is there.
    assert latest == {b"key-%d" % r: max(i for i in range(1500) if i % 7 == r) for r in range(7)}
    # Values were sent in offset order: a record's value grows with its offset.
    nums = [int(v.split(b"-")[1]) for _, _, v in vals]
    assert nums == sorted(nums)
