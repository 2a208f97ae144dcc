"""A mistyped path or topic fails instead of creating things.

Only a Producer (or a Broker, or an explicit ``Admin(path, create=True)`` /
``create_topic``) makes a data directory or a topic; a Consumer or Admin
given a path that is not an ottla data directory raises
``DataDirectoryNotFoundError`` naming the path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ottla
import ottla.aio


def test_consumer_on_a_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "dta"
    with pytest.raises(ottla.DataDirectoryNotFoundError, match=str(typo)):
        ottla.Consumer(typo, "orders", auto_offset_reset="earliest", consumer_timeout_ms=0)
    assert not typo.exists()


def test_aio_consumer_on_a_missing_directory_raises(tmp_path: Path) -> None:
    typo = tmp_path / "dta"

    async def main() -> None:
        with pytest.raises(ottla.DataDirectoryNotFoundError, match=str(typo)):
            ottla.aio.Consumer(typo, "orders")

    asyncio.run(main())
    assert not typo.exists()


def test_admin_on_a_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    with pytest.raises(ottla.DataDirectoryNotFoundError, match=str(missing)) as e:
        ottla.Admin(missing).list_topics()
    assert "does not exist" in str(e.value)
    assert isinstance(e.value, ottla.OttlaError)
    assert not (tmp_path / "nonexistent").exists()


def test_a_directory_without_ottla_metadata_is_not_a_data_directory(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not ottla")
    with pytest.raises(ottla.DataDirectoryNotFoundError, match=r"\.ottla"):
        ottla.Admin(plain)
    with pytest.raises(ottla.DataDirectoryNotFoundError, match=str(plain)):
        ottla.Consumer(plain, "orders")
    assert sorted(p.name for p in plain.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ottla.DataDirectoryNotFoundError, match="not a directory"):
        ottla.Admin(a_file)


def test_admin_create_true_creates_the_directory(tmp_path: Path) -> None:
    d = tmp_path / "new" / "data"
    admin = ottla.Admin(d, create=True)
    assert admin.list_topics() == []
    assert (d / ".ottla").is_dir()
    # Once made, it opens without create=True.
    assert ottla.Admin(d).list_topics() == []


def test_producer_creates_the_directory_and_then_a_consumer_opens_it(tmp_path: Path) -> None:
    d = tmp_path / "data"
    with ottla.Producer(d) as p:
        p.send("orders", b"x").get()
    with ottla.Consumer(d, "orders", auto_offset_reset="earliest", consumer_timeout_ms=500) as c:
        assert [r.value for r in c] == [b"x"]


def test_consumer_does_not_create_a_subscribed_topic_and_waits_for_it(tmp_path: Path) -> None:
    d = tmp_path / "data"
    ottla.Admin(d, create=True)
    with ottla.Consumer(d, "ordres", auto_offset_reset="earliest") as c:
        assert c.poll(timeout_ms=50) == {}
        assert ottla.Admin(d).list_topics() == []  # the typo made no topic
        with ottla.Producer(d) as p:
            p.send("ordres", b"late").get()
        got: list[bytes | None] = []
        for _ in range(100):
            for batch in c.poll(timeout_ms=50).values():
                got.extend(r.value for r in batch)
            if got:
                break
        assert got == [b"late"]


def test_assign_of_a_missing_partition_raises(tmp_path: Path) -> None:
    d = tmp_path / "data"
    ottla.Admin(d, create=True).create_topic("orders", partitions=2)
    with ottla.Consumer(d) as c:
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            c.assign([ottla.TopicPartition("ordres", 0)])
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            c.assign([ottla.TopicPartition("orders", 2)])
        c.assign([ottla.TopicPartition("orders", 1)])
        assert c.assignment() == {ottla.TopicPartition("orders", 1)}
    assert ottla.Admin(d).list_topics() == ["orders"]


def test_consumer_auto_create_topics_is_opt_in(tmp_path: Path) -> None:
    d = tmp_path / "data"
    ottla.Admin(d, create=True)
    with ottla.Consumer(d, "made", auto_create_topics=True) as c:
        c.poll(timeout_ms=0)
    assert ottla.Admin(d).list_topics() == ["made"]
