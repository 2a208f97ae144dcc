"""The replication checker (ottla.testing.checker) on hand-made histories:
it passes a clean one and catches each kind of violation."""

from __future__ import annotations

from pathlib import Path

import ottla
from ottla.testing.checker import History, check, read_partition_log

TP = ("t", 0)


def clean_history(n: int = 5) -> History:
    h = History()
    for i in range(n):
        h.ack("t", 0, i, f"r{i}", idempotent=True, producer="p")
        h.read("t", 0, i, f"r{i}", consumer="c")
    return h


def log(n: int = 5) -> list[tuple[int, str | None]]:
    return [(i, f"r{i}") for i in range(n)]


def test_clean_history_passes() -> None:
    res = check(clean_history(), {TP: {1: log(), 2: log(), 3: log()}}, {TP: 5})
    assert res.ok, res.report()
    assert res.counts() == {
        "acked": 5,
        "reads": 5,
        "partitions": 1,
        "replicas": 3,
        "records": 15,
        "lost": 0,
        "misplaced": 0,
        "duplicated": 0,
        "plain_duplicates": 0,
        "divergent": 0,
        "gaps": 0,
        "phantom_reads": 0,
        "byte_mismatches": 0,
        "stale_tail": 0,
    }
    assert res.report().startswith("checker: OK")


def test_records_past_the_high_watermark_are_ignored() -> None:
    """A follower's unreplicated tail is not committed: no violation."""
    res = check(clean_history(), {TP: {1: log(), 2: [*log(), (5, "x"), (6, "y")]}}, {TP: 5})
    assert res.ok, res.report()


def test_lost_from_one_replica() -> None:
    follower = [(o, r) for o, r in log() if o != 3] + [(3, None)]
    follower.sort()
    res = check(clean_history(), {TP: {1: log(), 2: follower}}, {TP: 5})
    assert not res.ok
    assert res.lost == 1 and res.divergent == 1
    assert "'r3' acknowledged at 3, not in nodes [2]" in res.report()


def test_acknowledged_past_the_high_watermark_is_lost() -> None:
    res = check(clean_history(), {TP: {1: log(), 2: log()}}, {TP: 4})
    assert res.lost == 1 and res.phantom_reads == 1, res.report()


def test_misplaced() -> None:
    h = History()
    h.ack("t", 0, 1, "a", idempotent=True)
    res = check(h, {TP: {1: [(0, "a"), (1, "b")], 2: [(0, "a"), (1, "b")]}}, {TP: 2})
    assert res.misplaced == 1 and res.lost == 0, res.report()
    assert not res.ok


def test_idempotent_duplicate_is_a_violation_plain_is_not() -> None:
    h = History()
    h.ack("t", 0, 0, "idem", idempotent=True)
    h.ack("t", 0, 2, "plain", idempotent=False)
    both = [(0, "idem"), (1, "idem"), (2, "plain"), (3, "plain")]
    res = check(h, {TP: {1: both, 2: both}}, {TP: 4})
    assert res.duplicated == 2  # one extra copy in each of two replicas
    assert res.plain_duplicates == 2
    assert not res.ok
    only_plain = [(0, "idem"), (1, "plain"), (2, "plain")]
    h2 = History()
    h2.ack("t", 0, 0, "idem", idempotent=True)
    h2.ack("t", 0, 1, "plain", idempotent=False)
    res2 = check(h2, {TP: {1: only_plain}}, {TP: 3})
    assert res2.ok and res2.plain_duplicates == 1, res2.report()
    assert "allowed (at least once)" in res2.report()


def test_divergent_replicas() -> None:
    other = [(0, "r0"), (1, "r1"), (2, "zz"), (3, "r3"), (4, "r4")]
    h = History()  # nothing acknowledged at offset 2: only the divergence shows
    res = check(h, {TP: {1: log(), 2: other}}, {TP: 5})
    assert res.divergent == 1 and res.lost == 0, res.report()
    assert "offset 2" in res.report()


def test_gap() -> None:
    gappy = [(0, "r0"), (1, "r1"), (4, "r4")]
    res = check(History(), {TP: {1: log(), 2: gappy}}, {TP: 5})
    assert res.gaps == 2 and not res.ok
    assert "missing (2-3)" in res.report()
    short = check(History(), {TP: {1: log(), 2: log(3)}}, {TP: 5})
    assert short.gaps == 2 and "node 2: ends at offset 3, before the high watermark 5" in str(short)


def test_phantom_read() -> None:
    h = clean_history()
    h.read("t", 0, 2, "ghost", consumer="c2")  # read, then replaced
    h.read("t", 0, 7, "r7")  # read past the committed log
    res = check(h, {TP: {1: log(), 2: log()}}, {TP: 5})
    assert res.phantom_reads == 2, res.report()
    assert "'ghost' read by c2 at 2" in res.report()


def test_partition_without_logs_counts_its_acks_lost() -> None:
    res = check(clean_history(), {}, {})
    assert res.lost == 5 and not res.ok


def test_details_are_bounded() -> None:
    h = History()
    for i in range(50):
        h.ack("t", 0, i, f"x{i}", idempotent=True)
    res = check(h, {TP: {1: []}}, {TP: 50}, max_details=3)
    assert res.lost == 50 and res.gaps == 50
    assert sum(v.startswith("lost:") for v in res.violations) == 4  # 3 + "more not shown"


def test_tuple_history_and_log_start() -> None:
    h = clean_history()
    res = check((h.acks[2:], h.reads[2:]), {TP: {1: log()[2:]}}, {TP: 5}, log_starts={TP: 2})
    assert res.ok, res.report()


def test_read_partition_log(tmp_path: Path) -> None:
    with ottla.Producer(tmp_path) as p:
        for i in range(3):
            p.send("t", b"v", key=f"k{i}".encode())
        p.send("t", b"no key")
    assert read_partition_log(tmp_path, "t", 0) == [(0, "k0"), (1, "k1"), (2, "k2"), (3, None)]
    values = read_partition_log(tmp_path, "t", 0, record_id=lambda r: r.value.decode())
    assert values[-1] == (3, "no key")
