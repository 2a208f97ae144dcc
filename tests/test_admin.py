"""ottla.Admin: topic lifecycle, name validation, partitions and config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ottla
from helpers import Spawn, read_values


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), for before/after comparisons."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@pytest.mark.directory_only(
    "partition sizes and segments on disk: a cluster does not report them to clients (confluent-kafka's AdminClient has no DescribeLogDirs); ottla.remote reports 0"
)
def test_create_list_describe_delete(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    assert admin.list_topics() == []
    admin.create_topic("orders", partitions=3, config={"retention.ms": 3_600_000})
    admin.create_topic("a.b_c-d")
    assert admin.list_topics() == ["a.b_c-d", "orders"]
    assert (data_dir / ".ottla" / "topics" / "orders").is_file()
    for p in range(3):
        assert (data_dir / f"orders-{p}").is_dir()

    d = admin.describe_topic("orders")
    assert isinstance(d, ottla.TopicDescription)
    assert d.name == "orders"
    assert [p.partition for p in d.partitions] == [0, 1, 2]
    assert all(isinstance(p, ottla.PartitionDescription) for p in d.partitions)
    assert all(p.start_offset == 0 and p.end_offset == 0 and p.records == 0 for p in d.partitions)
    assert d.config["retention.ms"] == "3600000"
    assert d.config["segment.bytes"] == str(1 << 30)
    assert d.config["cleanup.policy"] == "delete"
    assert d.overrides == {"retention.ms": "3600000"}

    with ottla.Producer(data_dir) as producer:
        producer.send_many("orders", [b"x" * 10] * 4, partition=1).wait(10)
    d = admin.describe_topic("orders")
    assert d.partitions[1].end_offset == 4 and d.partitions[1].records == 4
    assert d.partitions[1].size_bytes > 40 and d.size_bytes == d.partitions[1].size_bytes
    assert d.partitions[1].segments == 1

    admin.delete_topic("orders")
    assert admin.list_topics() == ["a.b_c-d"]
    assert not (data_dir / ".ottla" / "topics" / "orders").exists()
    assert not any(n.startswith("orders") for n in os.listdir(data_dir))
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.describe_topic("orders")
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.delete_topic("orders")
    # re-create after delete starts empty
    admin.create_topic("orders")
    d = admin.describe_topic("orders")
    assert [(p.start_offset, p.end_offset) for p in d.partitions] == [(0, 0)]


@pytest.mark.directory_only("Admin.path is the directory")
def test_admin_misc(data_dir: Path) -> None:
    with ottla.Admin(data_dir) as admin:
        assert os.path.samefile(admin.path, data_dir)
        assert "ottla.Admin" in repr(admin)
    admin.close()


def test_topic_already_exists(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=2)
    with pytest.raises(ottla.TopicAlreadyExistsError):
        admin.create_topic("t")
    with pytest.raises(ottla.TopicAlreadyExistsError):
        ottla.Admin(data_dir).create_topic("t", partitions=5)
    assert len(admin.describe_topic("t").partitions) == 2


def test_deleted_topic_is_seen_by_other_process_objects(data_dir: Path, spawn: Spawn) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("gone")
    child = spawn(
        """
        import sys, ottla
        ottla.Admin(sys.argv[1]).delete_topic("gone")
        print("deleted")
        """,
        data_dir,
    )
    assert child.wait(20) == 0, child.stderr
    assert "gone" not in admin.list_topics()
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.describe_topic("gone")


BAD_NAMES = [
    "../escape",
    "a/b",
    ".",
    "..",
    "",
    "x" * 250,
    "a b",
    "é",
    "a\\b",
    "/abs",
    "a\x00b",
    "tab\t",
    "../../etc/passwd",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_topic_names(tmp_path: Path, name: str) -> None:
    data = tmp_path / "data"
    admin = ottla.Admin(data, create=True)
    before_outside = tree(tmp_path)
    with pytest.raises(ottla.InvalidTopicError):
        admin.create_topic(name)
    with pytest.raises(ottla.InvalidTopicError):
        admin.describe_topic(name)
    with pytest.raises(ottla.InvalidTopicError):
        admin.delete_topic(name)
    with pytest.raises(ottla.InvalidTopicError):
        admin.create_partitions(name, 2)
    with pytest.raises(ottla.InvalidTopicError):
        admin.alter_topic_config(name, {"retention.ms": 1})
    with ottla.Producer(data) as p:
        with pytest.raises(ottla.InvalidTopicError):
            p.send(name, b"x")
        with pytest.raises(ottla.InvalidTopicError):
            p.partitions_for(name)
    with ottla.Consumer(data) as c:
        with pytest.raises(ottla.InvalidTopicError):
            c.subscribe([name])
        with pytest.raises(ottla.InvalidTopicError):
            c.assign([(name, 0)])
    with pytest.raises(ottla.InvalidTopicError):
        ottla.Consumer(data, name)
    # Nothing was created anywhere: not outside the data directory, and no
    # topic or partition directory inside it.
    after = tree(tmp_path)
    new = {p for p in after - before_outside if not p.startswith("data" + os.sep + ".ottla")}
    assert new == set(), new
    assert admin.list_topics() == []
    assert sorted(os.listdir(data)) == [".ottla"]


def _create_use_delete(data_dir: Path, name: str) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic(name)
    assert admin.list_topics() == [name]
    with ottla.Producer(data_dir) as p:
        assert p.send(name, b"v").get(10).offset == 0
    assert read_values(data_dir, name) == [(0, None, b"v")]
    admin.delete_topic(name)
    assert admin.list_topics() == []
    # (An ottla broker serving the directory keeps its groups' offsets there.)
    left = [n for n in os.listdir(data_dir) if not n.startswith("__consumer_offsets-")]
    assert sorted(left) == [".ottla"], "partition directory left behind"


def test_long_valid_name(data_dir: Path) -> None:
    _create_use_delete(data_dir, "x" * 200)


def test_longest_valid_name_249_chars(data_dir: Path) -> None:
    _create_use_delete(data_dir, "x" * 249)


def test_delete_topic_with_240_char_name(data_dir: Path) -> None:
    _create_use_delete(data_dir, "x" * 240)


def test_create_topic_bad_partitions_and_config(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    for bad in (0, -1, 100_001):
        with pytest.raises(ottla.InvalidPartitionsError):
            admin.create_topic("t", partitions=bad)
    with pytest.raises(ottla.InvalidConfigError):
        admin.create_topic("t", config={"no.such.key": 1})
    with pytest.raises(ottla.InvalidConfigError):
        admin.create_topic("t", config={"retention.ms": "soon"})
    with pytest.raises(ottla.InvalidConfigError):
        admin.create_topic("t", config={"segment.bytes": 1})
    with pytest.raises(ottla.InvalidConfigError):
        admin.create_topic("t", config={"retention.ms": None})
    with pytest.raises(ottla.InvalidConfigError):
        admin.create_topic("t", config={"cleanup.policy": "shred"})
    assert admin.list_topics() == []
    admin.create_topic("t", config={"retention_ms": 1000, "segment_bytes": "4096"})
    d = admin.describe_topic("t")
    assert d.config["retention.ms"] == "1000" and d.config["segment.bytes"] == "4096"


def test_create_partitions(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=2)
    with ottla.Producer(data_dir) as p:
        p.send("t", b"keep", partition=1).get(10)
    admin.create_partitions("t", 5)
    d = admin.describe_topic("t")
    assert [p.partition for p in d.partitions] == [0, 1, 2, 3, 4]
    assert d.partitions[1].end_offset == 1
    with pytest.raises(ottla.InvalidPartitionsError):
        admin.create_partitions("t", 3)  # shrink
    with pytest.raises(ottla.InvalidPartitionsError):
        admin.create_partitions("t", 5)  # same
    with pytest.raises(ottla.InvalidPartitionsError):
        admin.create_partitions("t", 0)
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.create_partitions("missing", 3)
    assert len(admin.describe_topic("t").partitions) == 5
    # a producer that already knew the topic sees the new partitions
    with ottla.Producer(data_dir) as p:
        assert p.partitions_for("t") == [0, 1, 2, 3, 4]
        assert p.send("t", b"new", partition=4).get(10).partition == 4
    assert read_values(data_dir, "t", 1) == [(0, None, b"keep")]


def test_producer_sees_partitions_added_later(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", partitions=1)
    with ottla.Producer(data_dir) as p:
        p.send("t", b"x").get(10)
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            p.send("t", b"x", partition=2)
        admin.create_partitions("t", 3)
        assert p.send("t", b"x", partition=2).get(10).partition == 2


def test_alter_topic_config_set_and_unset(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("t", config={"retention.ms": 1000})
    admin.alter_topic_config("t", {"retention.bytes": 1 << 20, "segment_ms": 60_000})
    d = admin.describe_topic("t")
    assert d.overrides == {
        "retention.ms": "1000",
        "retention.bytes": str(1 << 20),
        "segment.ms": "60000",
    }
    assert d.config["retention.bytes"] == str(1 << 20)
    admin.alter_topic_config("t", {"retention.ms": None})  # unset -> default
    d = admin.describe_topic("t")
    assert "retention.ms" not in d.overrides
    assert d.config["retention.ms"] == "604800000"
    with pytest.raises(ottla.InvalidConfigError):
        admin.alter_topic_config("t", {"bogus.key": 1})
    with pytest.raises(ottla.InvalidConfigError):
        admin.alter_topic_config("t", {"retention.bytes": "lots"})
    with pytest.raises(ottla.InvalidConfigError):
        admin.alter_topic_config("t", {"retention.ms": -2})
    # a failed alter changes nothing
    assert admin.describe_topic("t").overrides == {
        "retention.bytes": str(1 << 20),
        "segment.ms": "60000",
    }
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.alter_topic_config("missing", {"retention.ms": 1})
    # persisted: visible to a fresh process
    assert "config.retention.bytes=1048576" in (data_dir / ".ottla" / "topics" / "t").read_text()


def test_auto_create_on_produce_and_disabled(data_dir: Path) -> None:
    with ottla.Producer(data_dir) as p:
        p.send("auto-made", b"x").get(10)
    admin = ottla.Admin(data_dir)
    assert admin.list_topics() == ["auto-made"]
    assert len(admin.describe_topic("auto-made").partitions) == 1
    with ottla.Producer(data_dir, auto_create_topics=False) as p:
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            p.send("not-there", b"x")
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            p.send_many("not-there", [b"x"])
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            p.partitions_for("not-there")
        assert p.send("auto-made", b"y").get(10).offset == 1  # existing topics still work
    assert admin.list_topics() == ["auto-made"]
    assert not (data_dir / "not-there-0").exists()


@pytest.mark.directory_only(
    "__consumer_offsets as a topic of the directory: an ottla broker's Metadata does not list it"
)
def test_internal_offsets_topic_and_groups(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    with ottla.Producer(data_dir) as p:
        p.send("t", b"x").get(10)
    assert admin.list_groups() == []
    with ottla.Consumer(
        data_dir, "t", group_id="billing", auto_offset_reset="earliest", enable_auto_commit=False
    ) as c:
        c.commit({ottla.TopicPartition("t", 0): 1})
    assert admin.list_topics() == ["t"]
    assert "__consumer_offsets" in admin.list_topics(internal=True)
    assert admin.list_groups() == ["billing"]
    assert admin.group_offsets("billing") == {("t", 0): {"committed": 1, "end": 1, "lag": 0}}
    assert admin.group_offsets("nobody") == {}
