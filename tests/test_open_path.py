"""Opening many partitions: the descriptor table is grown once, ahead of
the partitions' files, and every partition opened that way reads and
appends exactly (a producer's first send to each, a consumer assigned all).
"""

import json
from pathlib import Path
from typing import Any

import ottla

CHILD = r"""
import json, sys, threading, ottla

def fd_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("FDSize:"):
                return int(line.split()[1])
    return -1

d, topics, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = fd_size()
names = [f"t{i}" for i in range(topics)]
p = ottla.Producer(d)
after_open = fd_size()
for t in names:
    for part in range(parts):
        p.send(t, b"v-%d" % part, partition=part).get(timeout=10)
c = ottla.Consumer(d, *names, auto_offset_reset="earliest")
got = {}
for _ in range(200):
    for tp, recs in c.poll(timeout_ms=50).items():
        got[f"{tp.topic}/{tp.partition}"] = [r.value.decode() for r in recs]
    if len(got) == topics * parts:
        break
c.close(autocommit=False)
p.close()
print(json.dumps({"before": before, "after_open": after_open, "got": got}), flush=True)
"""


def test_descriptor_table_grown_once_and_every_partition_exact(data_dir: Path, spawn: Any) -> None:
    admin = ottla.Admin(str(data_dir))
    for i in range(40):
        admin.create_topic(f"t{i}", 8)
    admin.close()
    child = spawn(CHILD, str(data_dir), 40, 8)
    line = child.wait_line(lambda s: s.startswith("{"), timeout=60)
    out = json.loads(line)
    # A fresh interpreter starts with a small table; opening the store
    # grows it at once to hold 1,024 partitions' files (3 descriptors each).
    assert out["before"] < 3 * 1024
    assert out["after_open"] >= 3 * 1024
    got = out["got"]
    assert len(got) == 320
    for i in range(40):
        for part in range(8):
            assert got[f"t{i}/{part}"] == [f"v-{part}"]
