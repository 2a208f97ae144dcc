"""Producer state on disk (issue 15, step 2): a partition's producer-state
snapshots (``<offset>.snapshot``) and aborted-transaction indexes
(``<base>.txnindex``, Kafka's 34-byte entries) are written once a roll
puts a segment behind the state, and a later reader (a restarted process)
loads them and replays only the tail. A corrupt or missing file is rebuilt
from the log, with a line on stderr saying so, and nothing is lost."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import ottla

TIMEOUT = 60.0

READER = r"""
import sys, ottla
with ottla.Consumer(sys.argv[1], "t", auto_offset_reset="earliest",
                    isolation_level="read_committed", consumer_timeout_ms=300) as c:
    print(",".join((r.value or b"").decode() for r in c))
"""


def read_in_child(d: Path) -> tuple[list[str], str]:
    r = subprocess.run(
        [sys.executable, "-c", READER, str(d)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert r.returncode == 0, r.stderr
    return [v for v in r.stdout.strip().split(",") if v], r.stderr


def write(d: Path) -> list[str]:
    """Transactions over many small segments: every third aborted, the last open."""
    ottla.Admin(d).create_topic("t", partitions=1, config={"segment.bytes": "1024"})
    p = ottla.Producer(d, transactional_id="tx")
    p.init_transactions()
    kept: list[str] = []
    for t in range(30):
        p.begin_transaction()
        batch = [f"{t}-{i}" for i in range(3)]
        for v in batch:
            p.send("t", v.encode())
        if t % 3 == 2:
            p.abort_transaction()
        else:
            p.commit_transaction()
            kept.extend(batch)
    p.begin_transaction()
    p.send("t", b"open")
    p.flush()
    p.close()  # the open transaction stays open (no timeout has passed)
    return kept


def test_snapshots_and_indexes_are_written_and_a_restart_uses_them(data_dir: Path) -> None:
    kept = write(data_dir)
    pdir = data_dir / "t-0"
    assert len(list(pdir.glob("*.log"))) > 5
    got, _ = read_in_child(data_dir)  # scans the log, leaves the files
    assert got == kept
    snaps = sorted(pdir.glob("*.snapshot"))
    assert snaps, "a snapshot after the rolls"
    newest = int(snaps[-1].name.split(".")[0])
    indexes = {int(p.name.split(".")[0]): p for p in pdir.glob("*.txnindex")}
    bases = sorted(int(p.name.split(".")[0]) for p in pdir.glob("*.log"))
    closed = [b for b, nxt in itertools.pairwise(bases) if nxt <= newest]
    assert closed and all(b in indexes for b in closed)
    # Kafka's entry size; one entry per aborted transaction of the segment.
    sizes = [indexes[b].stat().st_size for b in closed]
    assert all(s % 34 == 0 for s in sizes) and sum(sizes) > 0
    got, err = read_in_child(data_dir)  # from the snapshot
    assert got == kept
    assert "rebuilding" not in err


def test_a_corrupt_snapshot_or_a_missing_index_is_rebuilt_from_the_log(data_dir: Path) -> None:
    kept = write(data_dir)
    pdir = data_dir / "t-0"
    assert read_in_child(data_dir)[0] == kept
    for s in pdir.glob("*.snapshot"):
        b = bytearray(s.read_bytes())
        b[-1] ^= 0xFF
        s.write_bytes(bytes(b))
    got, err = read_in_child(data_dir)
    assert got == kept
    assert "is corrupt; rebuilding its producer state from the log" in err
    # The rebuild left new files; now lose an index instead.
    index = min(pdir.glob("*.txnindex"))
    index.unlink()
    got, err = read_in_child(data_dir)
    assert got == kept
    assert "is missing or corrupt; rebuilding" in err
