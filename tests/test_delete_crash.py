"""Deleting a topic survives kill -9: a process killed in the middle of
deleting a topic with many partitions leaves nothing that a topic created
or grown later under the same name adopts, and the next process to open
the directory removes what it left (Kafka renames a deleted partition's
directory to ``<topic>-<p>.<id>-delete`` first and removes it later; see
``store::log_dirs``). Through the embedded ``Admin.delete_topic`` and
through the broker's DeleteTopics."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from helpers import Spawn

PARTITIONS = 1500

# Creates topic "s", one record "secret-<p>" in each partition, then
# (unless told "fill-only") deletes it; prints "deleting" just before.
FILL_AND_DELETE = """
import sys, ottla
path, n, then = sys.argv[1], int(sys.argv[2]), sys.argv[3]
admin = ottla.Admin(path)
admin.create_topic("s", partitions=n)
with ottla.Producer(path, linger_ms=5) as p:
    futs = [p.send("s", b"secret-%d" % i, partition=i) for i in range(n)]
    p.flush()
    for f in futs:
        f.get(30)
print("filled", flush=True)
if then == "delete":
    print("deleting", flush=True)
    admin.delete_topic("s")
    print("deleted", flush=True)
"""

# A new process: what is left once the directory is opened, then the
# topic re-created with one partition and grown back, and read whole.
RECREATE_AND_READ = """
import json, os, sys, time, ottla
path, n = sys.argv[1], int(sys.argv[2])
admin = ottla.Admin(path)
report = {"topics": admin.list_topics()}
report["after_open"] = sorted(d for d in os.listdir(path) if d != ".ottla")
if "s" in report["topics"]:
    # Killed before the delete committed: the topic is whole.
    tps = [ottla.TopicPartition("s", p) for p in range(n)]
    c = ottla.Consumer(path, enable_auto_commit=False)
    report["survived"] = sum(c.end_offsets(tps).values())
    c.close()
    admin.delete_topic("s")
admin.create_topic("s", partitions=1)
admin.create_partitions("s", n)
tps = [ottla.TopicPartition("s", p) for p in range(n)]
c = ottla.Consumer(path, auto_offset_reset="earliest", enable_auto_commit=False)
c.assign(tps)
c.seek_to_beginning()
end = c.end_offsets(tps)
report["records"] = sum(end.values())
values = []
deadline = time.monotonic() + 60
while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
    for tp, recs in c.poll(timeout_ms=200).items():
        values.extend(r.value.decode() for r in recs)
c.close()
report["values"] = values[:20]
report["dirs"] = sorted(d for d in os.listdir(path) if d != ".ottla")
print(json.dumps(report), flush=True)
"""


def check_nothing_came_back(data_dir: Path, spawn: Spawn) -> None:
    child = spawn(RECREATE_AND_READ, data_dir, PARTITIONS)
    assert child.wait(180) == 0, child.stderr
    report = json.loads(child.lines()[-1])
    if "s" in report["topics"]:
        # The kill came before the delete's commit: nothing of it happened.
        assert report["survived"] == PARTITIONS
        assert report["after_open"] == sorted(f"s-{p}" for p in range(PARTITIONS))
    else:
        # The open swept every directory the killed delete left.
        assert report["after_open"] == [], report["after_open"][:10]
    # No partition of the new topic starts with an old record.
    assert report["records"] == 0, report["values"]
    assert report["values"] == []
    assert report["dirs"] == sorted(f"s-{p}" for p in range(PARTITIONS))
    for root, _dirs, files in os.walk(data_dir):
        for f in files:
            if f.endswith(".log"):
                assert b"secret-" not in (Path(root) / f).read_bytes(), f"{root}/{f}"


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_admin_delete_killed_midway_leaves_nothing_behind(
    data_dir: Path, spawn: Spawn, delay: float
) -> None:
    child = spawn(FILL_AND_DELETE, data_dir, PARTITIONS, "delete")
    child.wait_line(lambda s: s == "deleting", timeout=120)
    time.sleep(delay)
    child.sigkill()
    check_nothing_came_back(data_dir, spawn)


@pytest.mark.parametrize("step", ["committed", "moving", "moved"])
def test_admin_delete_killed_at_each_step_leaves_nothing_behind(
    data_dir: Path, spawn: Spawn, step: str
) -> None:
    child = spawn(
        FILL_AND_DELETE, data_dir, PARTITIONS, "delete", env={"OTTLA_TOPIC_CRASH_AT": step}
    )
    assert child.wait(120) == -9, child.stderr
    assert "deleted" not in child.lines()
    check_nothing_came_back(data_dir, spawn)


BROKER_CHILD = """
import sys, time, ottla
b = ottla.Broker(sys.argv[1])
print(b.port, flush=True)
time.sleep(600)
"""


def test_broker_delete_topics_killed_midway_leaves_nothing_behind(
    data_dir: Path, spawn: Spawn
) -> None:
    kafka = pytest.importorskip("kafka")
    filler = spawn(FILL_AND_DELETE, data_dir, PARTITIONS, "fill-only")
    assert filler.wait(120) == 0, filler.stderr
    broker = spawn(BROKER_CHILD, data_dir)
    port = int(broker.wait_line(timeout=30))
    admin = kafka.KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=5000)
    outcome: list[str] = []

    def delete() -> None:
        try:
            admin.delete_topics(["s"], timeout_ms=5000)
            outcome.append("ok")
        except Exception as e:  # the broker dies under the request
            outcome.append(repr(e))

    t = threading.Thread(target=delete, daemon=True)
    t.start()
    time.sleep(0.3)
    broker.sigkill()
    t.join(30)
    admin.close()
    check_nothing_came_back(data_dir, spawn)
