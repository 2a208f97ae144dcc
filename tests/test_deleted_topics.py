"""A deleted topic is gone for every reader, and one created again under its
name is a new topic (issue 12, item 10), as in Kafka:

* a consumer that assigned a deleted topic's partitions itself gets
  ``UnknownTopicOrPartitionError`` (once: the partitions leave its
  assignment);
* a group member loses them through ``on_revoke``, and no position in the
  deleted topic is committed;
* a re-created topic is read from its beginning by subscribed consumers
  (group or not) and by ``ottla consume --follow``: the group's commits of
  the deleted topic never apply to it, not even those a crashed delete left;
* every topic has a stable random id (Kafka's Uuid), ``topic_id`` in
  ``describe_topic``.

The readers run in their own processes and the topic is deleted from
another, as it happens in use.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import ottla
from helpers import CLI_CODE, Spawn, wait_until
from kafka_wire import fetch


def _produce(data_dir: Path, topic: str, values: list[str], partitions: int = 1) -> None:
    with ottla.Producer(data_dir) as p:
        for i, v in enumerate(values):
            p.send(topic, v.encode(), partition=i % partitions)
        p.flush()


def _read(c: ottla.Consumer, n: int) -> list[str]:
    """Poll until ``n`` values came (or 20 s passed); the values."""
    got: list[str] = []

    def more() -> bool:
        got.extend(r.value.decode() for rs in c.poll(timeout_ms=100).values() for r in rs)
        return len(got) >= n

    wait_until(more, timeout=20)
    return got


# One reader process: prints what it reads, what it is told and what it
# raises, one line each, and a line "idle" whenever a poll came back empty.
READER = """
import sys, ottla
path, mode = sys.argv[1], sys.argv[2]
if mode == "assign":
    c = ottla.Consumer(path, auto_offset_reset="earliest")
    c.assign([ottla.TopicPartition("t", 0), ottla.TopicPartition("t", 1)])
else:
    group = "g" if mode == "group" else None
    c = ottla.Consumer(path, group_id=group, auto_offset_reset="earliest")
    show = lambda ps: sorted(f"{tp.topic}-{tp.partition}" for tp in ps)
    c.subscribe(
        ["t"],
        on_assign=lambda _c, ps: print("assign", show(ps)),
        on_revoke=lambda _c, ps: print("revoke", show(ps)),
        on_lost=lambda _c, ps: print("lost", show(ps)),
    )
while True:
    try:
        got = c.poll(timeout_ms=100)
    except ottla.UnknownTopicOrPartitionError as e:
        print("raised", e)
        print("assignment", sorted(f"{tp.topic}-{tp.partition}" for tp in c.assignment()))
        continue
    values = [r.value.decode() for rs in got.values() for r in rs]
    for v in values:
        print("value", v)
    if values and mode == "group":
        c.commit()
        print("committed")
    if not got:
        print("idle", sorted(f"{tp.topic}-{tp.partition}" for tp in c.assignment()))
"""


def test_assigned_consumer_raises_once_and_drops_deleted_partitions(
    data_dir: Path, spawn: Spawn
) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=2)
    _produce(data_dir, "t", ["old0", "old1", "old2", "old3"], partitions=2)
    child = spawn(READER, data_dir, "assign")
    for v in ["old0", "old1", "old2", "old3"]:
        child.wait_line(f"value {v}".__eq__, timeout=20)
    seen = len(child.lines())
    admin.delete_topic("t")
    line = child.wait_line(lambda s: s.startswith("raised"), timeout=20, start=seen)
    assert "t-0" in line or "t-1" in line
    assert child.wait_line(lambda s: s.startswith("assignment"), start=seen) == "assignment []"
    # Raised once: afterwards the consumer polls on, with nothing assigned.
    at = len(child.lines())
    child.wait_line("idle []".__eq__, timeout=20, start=at)
    # A topic created again is not read by the old assignment (it is new).
    admin.create_topic("t", partitions=2)
    _produce(data_dir, "t", ["new0"])
    at = len(child.lines())
    child.wait_line("idle []".__eq__, timeout=20, start=at)
    child.wait_line("idle []".__eq__, timeout=20, start=len(child.lines()))
    later = child.lines()[seen:]
    assert [s for s in later if s.startswith("raised")] == [line]
    assert not [s for s in later if s.startswith("value")], later


def test_group_member_revokes_deleted_partitions_and_reads_the_new_topic(
    data_dir: Path, spawn: Spawn
) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=2)
    _produce(data_dir, "t", ["old0", "old1", "old2", "old3"], partitions=2)
    member = spawn(READER, data_dir, "group")
    plain = spawn(READER, data_dir, "subscribe")
    member.wait_line("assign ['t-0', 't-1']".__eq__, timeout=20)
    for v in ["old0", "old1", "old2", "old3"]:
        member.wait_line(f"value {v}".__eq__, timeout=20)
        plain.wait_line(f"value {v}".__eq__, timeout=20)
    member.wait_line("committed".__eq__, timeout=20)
    assert wait_until(lambda: admin.group_offsets("g").get(("t", 0), {}).get("committed") == 2)
    seen = len(member.lines())

    admin.delete_topic("t")
    member.wait_line("revoke ['t-0', 't-1']".__eq__, timeout=20, start=seen)
    member.wait_line("idle []".__eq__, timeout=20, start=seen)
    plain.wait_line("idle []".__eq__, timeout=20)
    assert not [s for s in member.lines()[seen:] if s.startswith("lost")]
    # The deleted topic's commits are gone; the revocation committed none.
    assert ("t", 0) not in admin.group_offsets("g")
    assert ("t", 1) not in admin.group_offsets("g")

    # Created again with one partition and three records: the group starts
    # at the beginning of the new topic, not at its old commit (2).
    admin.create_topic("t", partitions=1)
    _produce(data_dir, "t", ["new0", "new1", "new2"])
    member.wait_line("assign ['t-0']".__eq__, timeout=20, start=seen)
    for v in ["new0", "new1", "new2"]:
        member.wait_line(f"value {v}".__eq__, timeout=20, start=seen)
        plain.wait_line(f"value {v}".__eq__, timeout=20)


def test_group_member_takes_the_new_topic_when_recreated_between_polls(
    data_dir: Path, spawn: Spawn
) -> None:
    """Deleted and created again (same name, same partition count) by
    another process while the member was not polling: the next poll revokes
    the old partition and assigns the new one, read from its beginning."""
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=1)
    _produce(data_dir, "t", ["old0", "old1", "old2"])
    events: list[tuple[str, list[str]]] = []
    commit_errors: list[str] = []

    def show(ps: object) -> list[str]:
        return sorted(f"{tp.topic}-{tp.partition}" for tp in ps)  # type: ignore[attr-defined]

    def on_revoke(c: ottla.Consumer, ps: list[ottla.TopicPartition]) -> None:
        events.append(("revoke", show(ps)))
        try:
            c.commit({ottla.TopicPartition("t", 0): 1})
        except ottla.OttlaError as e:
            commit_errors.append(type(e).__name__)

    with ottla.Consumer(data_dir, group_id="g", auto_offset_reset="earliest") as c:
        c.subscribe(
            ["t"],
            on_assign=lambda _c, ps: events.append(("assign", show(ps))),
            on_revoke=on_revoke,
        )
        got: list[str] = []

        def read(n: int) -> bool:
            got.extend(r.value.decode() for rs in c.poll(timeout_ms=100).values() for r in rs)
            return len(got) >= n

        assert wait_until(lambda: read(3), timeout=20)
        c.commit()
        recreate = spawn(
            """
            import sys, ottla
            a = ottla.Admin(sys.argv[1])
            a.delete_topic("t")
            a.create_topic("t", partitions=1)
            with ottla.Producer(sys.argv[1]) as p:
                for i in range(5):
                    p.send("t", f"new{i}".encode())
            """,
            data_dir,
        )
        assert recreate.wait(30) == 0, recreate.stderr
        assert wait_until(lambda: read(8), timeout=20), got
        assert got == ["old0", "old1", "old2"] + [f"new{i}" for i in range(5)]
        assert events == [("assign", ["t-0"]), ("revoke", ["t-0"]), ("assign", ["t-0"])]
        # The partition of the deleted topic could not be committed.
        assert commit_errors == ["UnknownTopicOrPartitionError"]
        assert c.assignment() == {ottla.TopicPartition("t", 0)}


def test_the_group_does_not_inherit_commits_of_a_deleted_topic(
    data_dir: Path, spawn: Spawn
) -> None:
    """Even a delete killed before it removed the commits (the tombstones
    come last) leaves nothing a new topic of that name would start from."""
    admin = ottla.Admin(data_dir)
    for crash in [None, "moved"]:
        admin.create_topic("t", partitions=1)
        _produce(data_dir, "t", [f"old{i}" for i in range(5)])
        with ottla.Consumer(data_dir, group_id="g", auto_offset_reset="earliest") as c:
            c.subscribe(["t"])
            assert wait_until(lambda: bool(c.assignment()))
            c.commit({ottla.TopicPartition("t", 0): 4})
        assert admin.group_offsets("g")[("t", 0)]["committed"] == 4
        deleter = spawn(
            "import sys, ottla; ottla.Admin(sys.argv[1]).delete_topic('t')",
            data_dir,
            env={"OTTLA_TOPIC_CRASH_AT": crash} if crash else None,
        )
        deleter.wait(30)
        assert "t" not in admin.list_topics()
        admin.create_topic("t", partitions=1)
        _produce(data_dir, "t", [f"new{i}" for i in range(6)])
        assert ("t", 0) not in admin.group_offsets("g")
        with ottla.Consumer(data_dir, group_id="g", auto_offset_reset="earliest") as c:
            c.subscribe(["t"])
            assert c.committed(ottla.TopicPartition("t", 0)) is None
            got = _read(c, 6)
            assert got == [f"new{i}" for i in range(6)]
        admin.delete_topic("t")
        admin.delete_group("g")


def test_consume_follow_follows_a_recreated_topic(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=1)
    _produce(data_dir, "t", ["old0", "old1"])
    child = spawn(CLI_CODE, "consume", "t", "--follow", "--data", data_dir)
    child.wait_line("old1".__eq__, timeout=20)
    admin.delete_topic("t")
    assert wait_until(lambda: "was deleted" in child.stderr, timeout=20), child.stderr
    admin.create_topic("t", partitions=1)
    _produce(data_dir, "t", ["new0", "new1", "new2"])
    child.wait_line("new2".__eq__, timeout=20)
    assert child.lines() == ["old0", "old1", "new0", "new1", "new2"]
    assert "Traceback" not in child.stderr


def test_broker_fetch_of_a_deleted_topic_is_unknown_topic_or_partition(
    data_dir: Path, broker: ottla.Broker, spawn: Spawn
) -> None:
    """The broker's door: a Fetch of a topic deleted (by another process)
    since the last one is answered UNKNOWN_TOPIC_OR_PARTITION (3), never with
    the deleted records. (librdkafka, assigned to such a partition, only
    refreshes its metadata; the raw request shows the broker's answer.)"""
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=1)
    _produce(data_dir, "t", ["old0"])
    host, port = broker.bootstrap_servers.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        _, parts = fetch(s, "t", [(0, 0)], 1 << 20, 1 << 20, correlation_id=4)
        assert [(p, err, hw) for p, err, hw, _ in parts] == [(0, 0, 1)]
        deleter = spawn("import sys, ottla; ottla.Admin(sys.argv[1]).delete_topic('t')", data_dir)
        assert deleter.wait(30) == 0, deleter.stderr
        _, parts = fetch(s, "t", [(0, 0)], 1 << 20, 1 << 20, correlation_id=5)
        assert [(p, err, records) for p, err, _, records in parts] == [(0, 3, b"")]


def test_topic_ids(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=2)
    first = admin.describe_topic("t").topic_id
    assert len(first) == 22 and first != "A" * 22
    show = "import sys, ottla; print(ottla.Admin(sys.argv[1]).describe_topic(sys.argv[2]).topic_id)"
    # The same in another process, and after growing the topic.
    admin.create_partitions("t", 3)
    child = spawn(show, data_dir, "t")
    assert child.wait(30) == 0 and child.lines() == [first]
    admin.delete_topic("t")
    admin.create_topic("t", partitions=2)
    second = admin.describe_topic("t").topic_id
    assert second != first and len(second) == 22

    # A topic an earlier version created has no id in its metadata: the
    # first reader gives it one, written down, the same for every process.
    meta = data_dir / ".ottla" / "topics" / "legacy"
    meta.write_text("# ottla topic metadata\npartitions=1\n")
    readers = [spawn(show, data_dir, "legacy") for _ in range(3)]
    ids = set()
    for r in readers:
        assert r.wait(30) == 0, r.stderr
        ids.update(r.lines())
    assert len(ids) == 1
    (legacy,) = ids
    assert len(legacy) == 22
    assert f"id={legacy}" in meta.read_text()
    assert admin.describe_topic("legacy").topic_id == legacy


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run with pytest")
