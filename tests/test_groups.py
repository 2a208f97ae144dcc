"""Consumer groups without a server: members in several processes (or one)
split partitions, never overlap, survive kill -9 and session timeouts, and
the Admin group operations."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import ottla
from helpers import Spawn, wait_until
from ottla import TopicPartition as TP

TOPIC = "jobs"
PARTITIONS = 6

# A member process: joins group "workers", logs every event with
# time.monotonic() (CLOCK_MONOTONIC is one clock for every process):
#   A <p> <t>        partition assigned (logged after the lock is taken)
#   R <p> <t>        partition revoked (logged before the lock is released)
#   L <p> <t>        partition lost
#   C <p> <off> <t>  record consumed
#   K <p> <off> <t>  offset committed (after commit() returned)
# It commits after logging each poll's records, so only work after its
# last commit can be consumed again by someone else.
MEMBER = """
import os, sys, time, ottla
path, name, logpath, stop = sys.argv[1:5]
log = open(logpath, "a", buffering=1)
def ev(kind, tps):
    for tp in tps:
        log.write(f"{kind} {tp.partition} {time.monotonic()}\\n")
def on_assign(c, tps):
    ev("A", tps)
def on_revoke(c, tps):
    offsets = {tp: c.position(tp) for tp in tps}
    c.commit(offsets)
    for tp, o in offsets.items():
        log.write(f"K {tp.partition} {o} {time.monotonic()}\\n")
    ev("R", tps)
def on_lost(c, tps):
    ev("L", tps)
c = ottla.Consumer(path, group_id="workers", client_id=name, auto_offset_reset="earliest",
                   enable_auto_commit=False)
c.subscribe(["jobs"], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
print("joined", flush=True)
while not os.path.exists(stop):
    batch = c.poll(timeout_ms=50, max_records=50)
    if not batch:
        continue
    for tp, recs in batch.items():
        for r in recs:
            log.write(f"C {tp.partition} {r.offset} {time.monotonic()}\\n")
    offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
    c.commit(offsets)
    now = time.monotonic()
    for tp, o in offsets.items():
        log.write(f"K {tp.partition} {o} {now}\\n")
c.close()
log.write(f"X -1 {time.monotonic()}\\n")
print("closed", flush=True)
"""

PRODUCER = """
import sys, time, ottla
path, n = sys.argv[1], int(sys.argv[2])
with ottla.Producer(path, linger_ms=1) as p:
    for i in range(n):
        p.send("jobs", str(i).encode(), partition=i % 6)
        if i % 30 == 29:
            p.flush()
            time.sleep(0.01)
        if i == n // 3:
            print("third", flush=True)
print("done", flush=True)
"""


def parse(path: Path) -> list[tuple[str, int, float, int]]:
    """(kind, partition, time, offset or -1); lines cut by kill -9 skipped."""
    out: list[tuple[str, int, float, int]] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        f = line.split()
        try:
            if f[0] in ("C", "K") and len(f) == 4:
                out.append((f[0], int(f[1]), float(f[3]), int(f[2])))
            elif f[0] in ("A", "R", "L", "X") and len(f) == 3:
                out.append((f[0], int(f[1]), float(f[2]), -1))
        except ValueError:
            continue
    return out


def ownership_intervals(
    events: list[tuple[str, int, float, int]], end_time: float
) -> dict[int, list[tuple[float, float]]]:
    """Per partition, the [assigned, revoked/lost] intervals of one member;
    an interval still open ends at ``end_time``."""
    open_at: dict[int, float] = {}
    out: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for kind, p, t, _ in events:
        if kind == "A":
            assert p not in open_at, f"partition {p} assigned twice without a revoke"
            open_at[p] = t
        elif kind in ("R", "L"):
            assert p in open_at, f"partition {p} revoked without being assigned"
            out[p].append((open_at.pop(p), t))
    for p, t in open_at.items():
        out[p].append((t, end_time))
    return out


def test_three_processes_kill_one_no_overlap_nothing_lost(
    data_dir: Path, spawn: Spawn, tmp_path: Path
) -> None:
    ottla.Admin(data_dir).create_topic(TOPIC, partitions=PARTITIONS)
    stop = tmp_path / "stop"
    names = ["m0", "m1", "m2"]
    logs = {n: tmp_path / f"{n}.log" for n in names}
    members = {n: spawn(MEMBER, data_dir, n, logs[n], stop) for n in names}
    for m in members.values():
        m.wait_line(lambda s: s == "joined", timeout=30)
    # Let the group settle: every partition owned by someone.
    admin = ottla.Admin(data_dir)
    assert wait_until(
        lambda: (
            sum(len(m.assignment) for m in admin.describe_group("workers").members) == 6
            and admin.describe_group("workers").state == "Stable"
        ),
        timeout=30,
    )
    total = 3000
    producer = spawn(PRODUCER, data_dir, total)
    producer.wait_line(lambda s: s == "third", timeout=30)
    # kill -9 a member that is consuming.
    victim = "m1"
    assert wait_until(lambda: any(e[0] == "C" for e in parse(logs[victim])), timeout=30)
    members[victim].sigkill()
    producer.wait_line(lambda s: s == "done", timeout=60)
    assert producer.wait(30) == 0

    def consumed() -> set[tuple[int, int]]:
        return {(e[1], e[3]) for n in names for e in parse(logs[n]) if e[0] == "C"}

    expected = {(i % 6, i // 6) for i in range(total)}
    assert wait_until(lambda: expected <= consumed(), timeout=60), (
        f"missing {len(expected - consumed())} records"
    )
    stop.touch()
    for n in names:
        if n != victim:
            members[n].wait_line(lambda s: s == "closed", timeout=30)
            assert members[n].wait(30) == 0

    events = {n: parse(logs[n]) for n in names}
    # The victim's ownership ends no later than its last logged event: it
    # died after writing it, and the kernel released its locks at death.
    victim_end = max(e[2] for e in events[victim])
    intervals = {
        n: ownership_intervals(
            events[n], victim_end if n == victim else max(e[2] for e in events[n])
        )
        for n in names
    }
    # 1. No partition held by two live members at once.
    for p in range(PARTITIONS):
        spans = sorted((s, e, n) for n in names for s, e in intervals[n].get(p, []))
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            assert e1 <= s2, f"partition {p}: {n1} held it until {e1}, {n2} from {s2}"
    # 2. Records were consumed only while owned.
    for n in names:
        for kind, p, t, off in events[n]:
            if kind == "C":
                assert any(s <= t <= e for s, e in intervals[n].get(p, [])), (
                    f"{n} consumed {p}@{off} at {t} outside its ownership"
                )
    # 3. Every record consumed at least once (checked above); every record
    # consumed twice is uncommitted work of the killed member: at or after
    # its last commit on that partition.
    last_commit: dict[int, int] = {}
    for kind, p, _, off in events[victim]:
        if kind == "K":
            last_commit[p] = max(last_commit.get(p, 0), off)
    seen: dict[tuple[int, int], list[str]] = defaultdict(list)
    for n in names:
        for kind, p, _, off in events[n]:
            if kind == "C":
                seen[(p, off)].append(n)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    for (p, off), who in dups.items():
        assert who.count(victim) == 1 and len(who) == 2, f"{p}@{off} consumed by {who}"
        assert off >= last_commit.get(p, 0), (
            f"{p}@{off} re-consumed though the victim committed {last_commit.get(p)}"
        )
    # The victim held partitions when it died, and each went to a survivor
    # after its death; the survivors own every partition at the end.
    held_at_death = [p for p, spans in intervals[victim].items() if spans[-1][1] == victim_end]
    assert held_at_death, "the victim owned nothing when killed"
    for p in held_at_death:
        assert any(
            s >= victim_end for n in names if n != victim for s, _ in intervals[n].get(p, [])
        )
    taken = {p for n in names if n != victim for p in intervals[n]}
    assert taken == set(range(PARTITIONS))
    d = admin.describe_group("workers")
    assert d.state == "Empty" and d.members == []
    assert all(o.lag == 0 for o in d.offsets) and len(d.offsets) == PARTITIONS


def settle(
    consumers: Sequence[ottla.Consumer], done: Callable[[], bool], timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "group did not settle"
        for c in consumers:
            c.poll(timeout_ms=10)


def test_cooperative_sticky_moves_only_what_it_must(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=6)
    events: dict[str, list[tuple[str, set[TP]]]] = defaultdict(list)

    def member(name: str) -> ottla.Consumer:
        c = ottla.Consumer(data_dir, group_id="sticky", client_id=name)
        c.subscribe(
            ["t"],
            on_assign=lambda _c, tps: events[name].append(("assign", set(tps))),
            on_revoke=lambda _c, tps: events[name].append(("revoke", set(tps))),
        )
        return c

    a, b = member("a"), member("b")
    settle([a, b], lambda: len(a.assignment()) == 3 and len(b.assignment()) == 3)
    before = {"a": a.assignment(), "b": b.assignment()}
    events.clear()
    c = member("c")
    try:
        settle([a, b, c], lambda: all(len(x.assignment()) == 2 for x in (a, b, c)))
        for name, x in (("a", a), ("b", b)):
            # Each gave up exactly one partition, kept the rest, got nothing new.
            assert len(events[name]) == 1, events[name]
            kind, tps = events[name][0]
            assert kind == "revoke" and len(tps) == 1
            assert x.assignment() == before[name] - tps
        moved = set().union(*(tps for _, tps in events["c"]))
        assert all(kind == "assign" for kind, _ in events["c"])
        assert moved == c.assignment() and len(moved) == 2
        all_owned = a.assignment() | b.assignment() | c.assignment()
        assert len(all_owned) == 6
        assert ottla.Admin(data_dir).describe_group("sticky").protocol == "cooperative-sticky"
    finally:
        events.clear()
        c.close()
    # c's partitions go back; a and b revoke nothing.
    settle([a, b], lambda: len(a.assignment()) == 3 and len(b.assignment()) == 3)
    assert all(kind == "assign" for n in "ab" for kind, _ in events[n])
    a.close()
    b.close()


def test_range_and_roundrobin_strategies(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=4)
    for strategy, expect in (("range", [{0, 1}, {2, 3}]), ("roundrobin", [{0, 2}, {1, 3}])):
        group = f"g-{strategy}"
        cs = [
            ottla.Consumer(
                data_dir,
                "t",
                group_id=group,
                client_id=f"c{i}",
                partition_assignment_strategy=strategy,
            )
            for i in range(2)
        ]
        try:
            # (called before the loop moves on)
            settle(cs, lambda: all(len(c.assignment()) == 2 for c in cs))  # noqa: B023
            # Members sort by member id ("c0-...", "c1-...").
            got = [{tp.partition for tp in c.assignment()} for c in cs]
            assert got == expect, (strategy, got)
            assert admin.describe_group(group).protocol == strategy
            with pytest.raises(ottla.InvalidConfigError, match=strategy):
                ottla.Consumer(data_dir, "t", group_id=group)  # default is cooperative-sticky
        finally:
            for c in cs:
                c.close()
    with pytest.raises(ottla.InvalidConfigError):
        ottla.Consumer(data_dir, group_id="x", partition_assignment_strategy="sticky")
    with pytest.raises(ottla.InvalidConfigError):
        ottla.Consumer(data_dir, group_id="x", session_timeout_ms=50)


def test_session_timeout_of_a_member_that_stops_polling(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=4)
    lost: list[set[TP]] = []
    stuck = ottla.Consumer(
        data_dir, group_id="st", auto_offset_reset="earliest", session_timeout_ms=300
    )
    stuck.subscribe(["t"], on_lost=lambda _c, tps: lost.append(set(tps)))
    live = ottla.Consumer(data_dir, "t", group_id="st", auto_offset_reset="earliest")
    try:
        settle([stuck, live], lambda: len(stuck.assignment()) == 2 and len(live.assignment()) == 2)
        mine = stuck.assignment()
        with ottla.Producer(data_dir) as p:
            for i in range(40):
                p.send("t", b"%d" % i, partition=i % 4)
        # stuck reads and commits its partitions, then stops polling.
        got = 0
        deadline = time.monotonic() + 10
        while got < 20 and time.monotonic() < deadline:
            got += sum(len(v) for k, v in stuck.poll(timeout_ms=50).items())
        stuck.commit()
        assert got == 20
        # live keeps polling: it gets stuck's partitions once the session
        # times out, and resumes from the committed offsets (nothing re-read).
        taken: list[ottla.Record] = []
        deadline = time.monotonic() + 15
        while len(live.assignment()) < 4:
            assert time.monotonic() < deadline, "session timeout never handed over"
            for recs in live.poll(timeout_ms=20).values():
                taken.extend(recs)
        assert stuck.assignment() == set()
        with ottla.Producer(data_dir) as p:
            for tp in mine:
                p.send("t", b"new", partition=tp.partition)
        deadline = time.monotonic() + 10
        while sum(1 for r in taken if TP(r.topic, r.partition) in mine) < 2:
            assert time.monotonic() < deadline
            for recs in live.poll(timeout_ms=50).values():
                taken.extend(recs)
        assert [r.value for r in taken if TP(r.topic, r.partition) in mine] == [b"new", b"new"]
        # A commit for a lost partition is refused (its new owner is past it).
        with pytest.raises(ottla.IllegalStateError, match="not owned"):
            stuck.commit({next(iter(mine)): 0})
        # Polling again reports the loss and rejoins.
        settle([stuck, live], lambda: len(stuck.assignment()) == 2, timeout=15)
        assert lost and lost[0] == mine
    finally:
        stuck.close()
        live.close()


def test_callback_errors_and_listener_object(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    calls: list[tuple[str, set[TP]]] = []

    class Listener:
        def on_partitions_assigned(self, assigned: list[TP]) -> None:
            calls.append(("assigned", set(assigned)))

        def on_partitions_revoked(self, revoked: list[TP]) -> None:
            calls.append(("revoked", set(revoked)))

    with ottla.Consumer(data_dir, group_id="lst") as c:
        c.subscribe(["t"], listener=Listener())
        assert calls == [("assigned", {TP("t", 0), TP("t", 1)})]
        c.unsubscribe()
        assert calls[-1] == ("revoked", {TP("t", 0), TP("t", 1)})
        with pytest.raises(TypeError):
            c.subscribe(["t"], listener=object())

        def boom(_c: object, _tps: object) -> None:
            raise RuntimeError("from on_assign")

        with pytest.raises(RuntimeError, match="from on_assign"):
            c.subscribe(["t"], on_assign=boom)
        # The partitions were taken all the same: an application error does
        # not break the group.
        assert c.assignment() == {TP("t", 0), TP("t", 1)}


def test_pattern_subscription_sees_topics_created_later(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("orders-eu", partitions=1)
    admin.create_topic("payments", partitions=1)
    with ottla.Consumer(data_dir, group_id="pat", auto_offset_reset="earliest") as c:
        c.subscribe(pattern="orders-.*")
        assert c.assignment() == {TP("orders-eu", 0)}
        admin.create_topic("orders-us", partitions=2)
        with ottla.Producer(data_dir) as p:
            p.send("orders-us", b"x", partition=1).get(10)
            p.send("payments", b"no").get(10)
        got: list[ottla.Record] = []
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline, "new topic never picked up"
            for recs in c.poll(timeout_ms=100).values():
                got.extend(recs)
        assert [(r.topic, r.value) for r in got] == [("orders-us", b"x")]
        assert c.assignment() == {TP("orders-eu", 0), TP("orders-us", 0), TP("orders-us", 1)}
        assert c.subscription() == {"orders-eu", "orders-us"}
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:  # no group, confluent's "^"
        c.subscribe(["^orders-u.$"])
        assert c.assignment() == {TP("orders-us", 0), TP("orders-us", 1)}
    with pytest.raises(ottla.InvalidConfigError):
        ottla.Consumer(data_dir, group_id="pat").subscribe(pattern="(")


def test_reset_offsets_empty_group_and_refusal_while_live(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=2)
    base = int(time.time() * 1000) - 60_000  # recent: older records would expire (retention)
    with ottla.Producer(data_dir) as p:
        for i in range(10):
            p.send("t", b"%d" % i, partition=i % 2, timestamp=base + i).get(10)
    with ottla.Consumer(data_dir, "t", group_id="rs", auto_offset_reset="earliest") as c:
        n = 0
        while n < 10:
            n += sum(len(v) for v in c.poll(timeout_ms=100).values())
    d = admin.describe_group("rs")
    assert d.state == "Empty" and d.lag == 0
    assert [(o.topic, o.partition, o.committed, o.end_offset) for o in d.offsets] == [
        ("t", 0, 5, 5),
        ("t", 1, 5, 5),
    ]

    # Refused while a member lives, in another process.
    child = spawn(
        """
        import sys, time, ottla
        c = ottla.Consumer(sys.argv[1], "t", group_id="rs")
        print("joined", flush=True)
        while True:
            c.poll(timeout_ms=100)
        """,
        data_dir,
    )
    child.wait_line(lambda s: s == "joined", timeout=30)
    live = admin.describe_group("rs")
    assert live.state == "Stable" and len(live.members) == 1
    assert live.members[0].assignment == [TP("t", 0), TP("t", 1)]
    assert "rs" in admin.list_groups()
    with pytest.raises(ottla.GroupNotEmptyError):
        admin.reset_offsets("rs", to_earliest=True)
    with pytest.raises(ottla.GroupNotEmptyError):
        admin.delete_group("rs")
    child.sigkill()  # a dead member does not count

    assert admin.reset_offsets("rs", to_earliest=True) == {TP("t", 0): 0, TP("t", 1): 0}
    assert admin.describe_group("rs").lag == 10
    # Record i has timestamp base + i and goes to partition i % 2 at offset i // 2.
    assert admin.reset_offsets("rs", to_datetime_ms=base + 4) == {TP("t", 0): 2, TP("t", 1): 2}
    assert admin.reset_offsets("rs", topics=["t"], to_latest=True) == {TP("t", 0): 5, TP("t", 1): 5}
    assert admin.reset_offsets("rs", to_offsets={TP("t", 1): 3}) == {TP("t", 1): 3}
    with pytest.raises(ValueError):
        admin.reset_offsets("rs", to_earliest=True, to_latest=True)
    with ottla.Consumer(
        data_dir, "t", group_id="rs", auto_offset_reset="earliest", consumer_timeout_ms=500
    ) as c:
        assert sorted((r.partition, r.offset) for r in c) == [(1, 3), (1, 4)]
    admin.delete_group("rs")
    assert "rs" not in admin.list_groups()
    assert admin.describe_group("rs").state == "Dead"


def test_a_forgotten_member_leaves_when_collected(data_dir: Path) -> None:
    import gc

    ottla.Admin(data_dir).create_topic("t", partitions=2)
    c = ottla.Consumer(data_dir, group_id="gc")
    # The callback refers back to the consumer: a reference cycle through Rust.
    # (`c` is looked up when the callback runs; the test deletes the name below.)
    c.subscribe(["t"], on_assign=lambda _c, tps: c.assignment())  # noqa: F821
    assert len(ottla.Admin(data_dir).describe_group("gc").members) == 1
    del c
    gc.collect()
    assert ottla.Admin(data_dir).describe_group("gc").members == []
