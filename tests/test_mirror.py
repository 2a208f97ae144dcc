"""``ottla.mirror`` and ``ottla mirror`` (issue 16): topics copied between a
data directory and a cluster with partitions, keys, headers and timestamps
kept, continuing exactly where a stopped (killed) run was, and a group's
committed offsets translated so a pipeline moves without losing its place."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import CLI_CODE, Spawn
from ottla import TopicPartition as TP
from ottla.remote.mirror import MirrorError

pytest.importorskip("confluent_kafka")

# Recent timestamps (the retention of a data directory is 7 days), distinct
# from the time of the copy.
BASE_TS = int(time.time() * 1000) - 3_600_000
TOPICS = {"orders": 3, "audit": 1, "events.clicks": 2}

Content = dict[tuple[str, int], list[tuple[int, Any, Any, Any, int]]]


def fill(path: Path, per_topic: int = 40) -> None:
    """Three topics (3, 1 and 2 partitions) of keyed records with headers,
    explicit timestamps and a null value among them."""
    admin = ottla.Admin(path, create=True)
    for t, n in TOPICS.items():
        admin.create_topic(t, n)
    with ottla.Producer(path) as p:
        for t, n in TOPICS.items():
            for i in range(per_topic):
                p.send(
                    t,
                    None if i == 7 else b"%s-%d" % (t.encode(), i),
                    key=b"k%d" % (i % 5),
                    partition=i % n,
                    timestamp_ms=BASE_TS + i * 10,
                    headers=[("seq", b"%d" % i), ("empty", None)] if i % 3 else None,
                )


def content(place: str | Path, topics: dict[str, int] = TOPICS) -> Content:
    """Every record of ``topics``: (offset, key, value, headers, timestamp)."""
    out: Content = {}
    with ottla.Consumer(place, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        tps = [TP(t, p) for t, n in topics.items() for p in range(n)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        ends = c.end_offsets(tps)
        deadline = time.monotonic() + 30
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "could not read everything back"
            for tp, records in c.poll(timeout_ms=200, max_records=10_000).items():
                out.setdefault((tp.topic, tp.partition), []).extend(
                    (r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in records
                )
    return out


def held(place: Path) -> int:
    """Records of TOPICS at ``place`` (0 until every topic exists there)."""
    if not place.exists() or not set(TOPICS) <= set(ottla.Admin(place).list_topics()):
        return 0
    return sum(map(len, content(place).values()))


def commit(path: str | Path, group: str, positions: dict[TP, int]) -> None:
    with ottla.Consumer(path, group_id=group, enable_auto_commit=False) as c:
        todo: dict[TP | tuple[str, int], Any] = {tp: o for tp, o in positions.items()}
        c.commit(todo)


def committed(place: str | Path, group: str) -> dict[TP, int]:
    admin = ottla.Admin(place)
    try:
        return {TP(t, p): o["committed"] for (t, p), o in admin.group_offsets(group).items()}
    finally:
        admin.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ottla.Broker]:
    """An ``ottla serve`` broker (``ottla.Broker``) over an empty directory."""
    b = ottla.Broker(tmp_path / "served")
    try:
        yield b
    finally:
        b.close()


def test_directory_to_broker_and_back(tmp_path: Path, served: ottla.Broker) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    fill(src)
    # A pipeline's place: part way through orders and events.clicks.
    place = {TP("orders", 0): 5, TP("orders", 2): 13, TP("events.clicks", 1): 20}
    commit(src, "billing", place)
    cluster = "kafka://" + served.bootstrap_servers

    first = ottla.mirror(src, cluster, ["orders", "audit", "events.*"], progress=False)
    assert first.topics == sorted(TOPICS)
    assert (first.partitions, first.records, first.skipped) == (6, 120, 0)
    assert first.groups == {"billing": place}

    with ottla.Admin(cluster) as admin:
        assert {t: len(admin.describe_topic(t).partitions) for t in TOPICS} == TOPICS
    assert committed(cluster, "billing") == place

    # Back into a new directory (every topic: the first mirror's checkpoint
    # topic at the broker is not one of them).
    second = ottla.mirror(cluster, back, progress=False)
    assert second.topics == sorted(TOPICS)
    assert second.records == 120
    expected = content(src)
    assert content(back) == expected
    assert sum(len(v) for v in expected.values()) == 120
    assert any(v[2] is None for rs in expected.values() for v in rs)  # a null value
    assert any(v[3] for rs in expected.values() for v in rs)  # headers
    assert committed(back, "billing") == place

    # A second run has nothing to do; a group that moved on is moved on.
    commit(src, "billing", {TP("orders", 0): 9})
    again = ottla.mirror(src, cluster, progress=False)
    assert (again.records, again.skipped) == (0, 0)
    assert again.groups == {"billing": {TP("orders", 0): 9}}
    assert committed(cluster, "billing")[TP("orders", 0)] == 9


def test_group_offsets_are_translated_where_offsets_differ(tmp_path: Path) -> None:
    """The source's log starts at 4 (records deleted), the copy's at 0: a
    group's place is the same record, at another offset."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    with ottla.Producer(src) as p:
        for i in range(10):
            p.send("t", b"v%d" % i)
    ottla.Admin(src).delete_records({TP("t", 0): 4})
    commit(src, "app", {TP("t", 0): 6})
    stats = ottla.mirror(src, dst, progress=False)
    assert stats.groups == {"app": {TP("t", 0): 2}}
    with ottla.Consumer(dst, "t", group_id="app", consumer_timeout_ms=500) as c:
        assert [r.value for r in c] == [b"v%d" % i for i in range(6, 10)]
    # Moved on at the source (at the end): moved on at the target.
    commit(src, "app", {TP("t", 0): 10})
    commit(dst, "app", {TP("t", 0): 2})
    assert ottla.mirror(src, dst, progress=False).groups == {"app": {TP("t", 0): 6}}


def test_follow_mode_copies_what_comes_until_stopped(tmp_path: Path) -> None:
    import threading

    src, dst = tmp_path / "src", tmp_path / "dst"
    fill(src, per_topic=10)
    stop = threading.Event()
    done: list[ottla.MirrorStats] = []
    t = threading.Thread(
        target=lambda: done.append(
            ottla.mirror(src, dst, once=False, stop=stop, checkpoint_interval_ms=50)
        )
    )
    t.start()
    try:
        deadline = time.monotonic() + 30
        while held(dst) < 30:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with ottla.Producer(src) as p:
            p.send("audit", b"late", timestamp_ms=BASE_TS)
        while len(content(dst).get(("audit", 0), [])) < 11:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(30)
    assert done and done[0].records == 31
    assert content(dst) == content(src)


# The child: a mirror that kill -9s itself when SENDS copies were handed to
# its producer ("sent": some may be lost with the process) or at the next
# checkpoint once they were acknowledged ("flushed": the target holds
# records past the last checkpoint). A checkpoint chance every 100 records.
KILLER = """
import os, signal, sys
import ottla
from ottla.remote import mirror as m

source, target, sends = sys.argv[1], sys.argv[2], int(sys.argv[3])
flushed = sys.argv[4] == "flushed"
make = m._producer

class Killing:
    # The mirror's producer, with a kill -9 at the SENDS-th copy.

    def __init__(self, p):
        self.p = p
        self.count = 0

    def send(self, topic, *args, **kw):
        if not topic.startswith("ottla-mirror."):
            self.count += 1
            if self.count == sends and not flushed:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.p.send(topic, *args, **kw)

    def __getattr__(self, name):
        return getattr(self.p, name)


def producer(place, config):
    return Killing(make(place, config))


m._producer = producer
m._POLL_RECORDS = 100  # a checkpoint chance every 100 records
orig = m._Run.checkpoint


def noisy_checkpoint(self, producer):
    if flushed and producer.count >= sends:
        # The copies acknowledged, their checkpoint not written.
        producer.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    orig(self, producer)
    print("checkpoint", flush=True)


m._Run.checkpoint = noisy_checkpoint
ottla.mirror(source, target, checkpoint_interval_ms=1, progress=False)
print("finished", flush=True)
"""


@pytest.mark.parametrize("to", ["directory", "broker"])
def test_killed_mid_way_resumes_without_duplicates_or_loss(
    tmp_path: Path, spawn: Spawn, served: ottla.Broker, to: str
) -> None:
    src = tmp_path / "src"
    fill(src, per_topic=3000)
    commit(src, "billing", {TP("orders", 1): 700, TP("audit", 0): 2999})
    target = str(tmp_path / "dst") if to == "directory" else "kafka://" + served.bootstrap_servers
    total = 3 * 3000
    # Copies per run: about 7500 of the 9000 before the last kill.
    for sends, how in ((2000, "sent"), (2000, "flushed"), (2000, "sent"), (1500, "flushed")):
        child = spawn(KILLER, src, target, sends, how)
        assert child.wait(60) == -signal.SIGKILL, child.stderr
        assert "finished" not in child.lines()
        assert child.lines().count("checkpoint") >= 2
        held = sum(map(len, content(target).values()))
        assert 0 < held < total

    stats = ottla.mirror(src, target, progress=False)
    got = content(target)
    assert got == content(src)  # offsets included: no duplicate, no gap
    assert stats.skipped > 0  # acknowledged before the last kill, not checkpointed
    assert stats.records + stats.skipped <= total
    assert committed(target, "billing") == {TP("orders", 1): 700, TP("audit", 0): 2999}


def test_a_target_it_did_not_write_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill(src, per_topic=5)
    with ottla.Producer(dst) as p:
        p.send("audit", b"someone else's")
    with pytest.raises(MirrorError, match="did not write"):
        ottla.mirror(src, dst, ["audit"], progress=False)
    ottla.Admin(dst).create_topic("orders", 2)
    with pytest.raises(MirrorError, match="3 partitions at the source but 2"):
        ottla.mirror(src, dst, ["orders"], progress=False)
    with pytest.raises(ottla.UnknownTopicOrPartitionError, match="no topic 'nope'"):
        ottla.mirror(src, dst, ["nope"], progress=False)
    with pytest.raises(ValueError, match="same place"):
        ottla.mirror(src, src, progress=False)


def test_cli_mirror_once(tmp_path: Path, served: ottla.Broker) -> None:
    src = tmp_path / "src"
    fill(src, per_topic=10)
    commit(src, "billing", {TP("orders", 0): 2})
    run = subprocess.run(
        [sys.executable, "-c", CLI_CODE, "mirror", str(src), "--once", "-t", "orders",
         "--target-bootstrap", served.bootstrap_servers, "--target-config", "linger.ms=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # Not a terminal: no progress bar, a summary line.
    assert "\r" not in run.stderr
    assert "mirrored 10 records of 1 topics (3 partitions)" in run.stderr
    assert "group billing: 1 partitions' offsets translated" in run.stderr
    cluster = "kafka://" + served.bootstrap_servers
    assert content(cluster, {"orders": 3}) == content(src, {"orders": 3})
    bad = subprocess.run(
        [sys.executable, "-c", CLI_CODE, "mirror", str(src)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "give SOURCE and TARGET" in bad.stderr


def test_cli_follow_mode_stops_on_sigterm_with_a_checkpoint(tmp_path: Path, spawn: Spawn) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill(src, per_topic=20)
    # A checkpoint interval far longer than the test: only the stop writes one.
    child = spawn(CLI_CODE, "mirror", src, dst, "--checkpoint-interval-ms", "3600000")
    deadline = time.monotonic() + 60
    while held(dst) < 60:
        assert time.monotonic() < deadline, child.stderr
        time.sleep(0.05)
    child.proc.send_signal(signal.SIGTERM)
    assert child.wait(60) == 128 + signal.SIGTERM, child.stderr
    again = ottla.mirror(src, dst, progress=False)
    # Nothing to copy and nothing to skip: the stop recorded where it was.
    assert (again.records, again.skipped) == (0, 0)
    assert content(dst) == content(src)


def test_progress_bar_when_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    fill(src, per_topic=10)
    ottla.mirror(src, tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
    ottla.mirror(src, tmp_path / "drawn", progress=True)  # as on a terminal
    err = capsys.readouterr().err
    assert "\rmirror [" in err and "/30 records" in err
    assert err.endswith("\r\x1b[K")  # erased at the end
