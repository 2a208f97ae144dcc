"""Transactions through the in-process API (issue 15, step 2).

``ottla.Producer(path, transactional_id=...)`` and
``ottla.Consumer(..., isolation_level="read_committed")``: commits become
visible atomically, aborts never; an open transaction holds read_committed
readers back but not read_uncommitted ones; offsets sent with a transaction
count only once it commits; two producers with one transactional id, in one
process, in two processes or one embedded and one through a broker, fence
the older; a hung transaction is aborted by the next coordinator that
looks; and a transaction is the same thing on disk whichever door wrote it
(a broker-written one read embedded, an embedded one read by librdkafka
through the broker)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest

import ottla
import ottla.aio

TIMEOUT = 30.0


Isolation = Literal["read_committed", "read_uncommitted"]


def values(d: Path, topic: str, isolation: Isolation = "read_committed") -> list[bytes]:
    """Every value of `topic` a consumer with `isolation` sees, in order per partition."""
    out: list[bytes] = []
    with ottla.Consumer(
        d,
        topic,
        auto_offset_reset="earliest",
        isolation_level=isolation,
        consumer_timeout_ms=300,
    ) as c:
        for r in c:
            out.append(r.value or b"")
    return out


def txn_producer(d: Path, txn_id: str, **extra: Any) -> ottla.Producer:
    p = ottla.Producer(d, transactional_id=txn_id, **extra)
    p.init_transactions()
    return p


def test_committed_is_visible_aborted_never(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    p = txn_producer(data_dir, "tx")
    p.begin_transaction()
    for i in range(10):
        p.send("t", f"c{i}".encode(), partition=i % 2)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(5):
        p.send("t", f"a{i}".encode(), partition=i % 2)
    p.abort_transaction()
    p.begin_transaction()
    p.send("t", b"last", partition=0)
    p.commit_transaction()
    p.close()
    committed = sorted(values(data_dir, "t"))
    assert committed == sorted([f"c{i}".encode() for i in range(10)] + [b"last"])
    # read_uncommitted sees the aborted records too (never the markers).
    assert len(values(data_dir, "t", "read_uncommitted")) == 16


def test_open_transaction_holds_back_read_committed_only(data_dir: Path) -> None:
    plain = ottla.Producer(data_dir)
    plain.send("t", b"before").get(10)
    p = txn_producer(data_dir, "tx")
    p.begin_transaction()
    p.send("t", b"in-txn")
    p.flush()
    plain.send("t", b"after").get(10)
    # The open transaction's first offset is the last stable offset: the
    # plain record behind it waits too.
    assert values(data_dir, "t") == [b"before"]
    assert values(data_dir, "t", "read_uncommitted") == [b"before", b"in-txn", b"after"]
    p.commit_transaction()
    assert values(data_dir, "t") == [b"before", b"in-txn", b"after"]
    p.close()
    plain.close()


def test_sends_need_a_transaction(data_dir: Path) -> None:
    p = ottla.Producer(data_dir, transactional_id="tx")
    with pytest.raises(ottla.InvalidTxnStateError):
        p.begin_transaction()  # before init_transactions
    p.init_transactions()
    with pytest.raises(ottla.InvalidTxnStateError):
        p.send("t", b"x")
    with pytest.raises(ottla.InvalidTxnStateError):
        p.commit_transaction()
    p.begin_transaction()
    with pytest.raises(ottla.InvalidTxnStateError):
        p.begin_transaction()
    p.commit_transaction()  # an empty transaction
    p.close()
    with pytest.raises(ottla.InvalidTxnStateError):
        ottla.Producer(data_dir).init_transactions()
    with pytest.raises(ottla.InvalidConfigError):
        ottla.Producer(data_dir, transactional_id="x", transaction_timeout_ms=0)


def test_offsets_count_only_when_the_transaction_commits(data_dir: Path) -> None:
    src = ottla.Producer(data_dir)
    src.send_many("in", [b"a", b"b", b"c"]).get(10)
    src.close()
    tp = ottla.TopicPartition("in", 0)
    with ottla.Consumer(data_dir, "in", group_id="g", enable_auto_commit=False) as c:
        meta = c.consumer_group_metadata()
        assert meta.group_id == "g"
        p = txn_producer(data_dir, "tx")
        p.begin_transaction()
        p.send("out", b"A")
        p.send_offsets_to_transaction({tp: 2}, meta)
        p.abort_transaction()
        assert c.committed(tp) is None
        p.begin_transaction()
        p.send("out", b"A")
        p.send_offsets_to_transaction({tp: 2}, meta)
        p.commit_transaction()
        assert c.committed(tp) == 2
        p.close()
    assert values(data_dir, "out") == [b"A"]


def test_a_second_producer_fences_the_first_in_one_process(data_dir: Path) -> None:
    old = txn_producer(data_dir, "tx")
    old.begin_transaction()
    old.send("t", b"zombie")
    old.flush()
    new = txn_producer(data_dir, "tx")  # aborts old's transaction
    with pytest.raises(ottla.ProducerFencedError):
        old.commit_transaction()
    new.begin_transaction()
    new.send("t", b"new")
    new.commit_transaction()
    # The zombie appends nothing more.
    with pytest.raises(ottla.ProducerFencedError):
        old.begin_transaction()
    assert values(data_dir, "t") == [b"new"]
    new.close()
    old.close()


def run_child(code: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


FENCER = """
import sys, ottla
p = ottla.Producer(sys.argv[1], transactional_id="tx")
p.init_transactions()
p.begin_transaction()
p.send("t", b"from-child")
p.commit_transaction()
p.close()
print("ok")
"""


def test_a_producer_in_another_process_fences_the_first(data_dir: Path) -> None:
    old = txn_producer(data_dir, "tx")
    old.begin_transaction()
    old.send("t", b"zombie")
    old.flush()
    assert run_child(FENCER, str(data_dir)).strip() == "ok"
    with pytest.raises(ottla.ProducerFencedError):
        old.send("t", b"more")
        old.flush()
    with pytest.raises(ottla.ProducerFencedError):
        old.commit_transaction()
    old.close()
    assert values(data_dir, "t") == [b"from-child"]


KILLED = """
import os, signal, sys, ottla
p = ottla.Producer(sys.argv[1], transactional_id="tx")
p.init_transactions()
p.begin_transaction()
p.send("t", b"lost")
p.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_transaction_of_a_killed_process_is_aborted_by_the_next_producer(
    data_dir: Path,
) -> None:
    r = subprocess.run([sys.executable, "-c", KILLED, str(data_dir)], timeout=TIMEOUT)
    assert r.returncode == -9
    assert values(data_dir, "t") == []
    assert values(data_dir, "t", "read_uncommitted") == [b"lost"]
    p = txn_producer(data_dir, "tx")
    p.begin_transaction()
    p.send("t", b"kept")
    p.commit_transaction()
    p.close()
    assert values(data_dir, "t") == [b"kept"]


def test_a_hung_transaction_past_its_timeout_is_aborted_by_any_producer(
    data_dir: Path,
) -> None:
    hung = txn_producer(data_dir, "hung", transaction_timeout_ms=100)
    hung.begin_transaction()
    hung.send("t", b"hung")
    hung.flush()
    plain = ottla.Producer(data_dir)
    plain.send("t", b"plain").get(10)
    assert values(data_dir, "t") == []
    time.sleep(0.3)  # past the transaction's timeout (not a timing assertion)
    other = txn_producer(data_dir, "other")  # looks, and aborts "hung"
    assert values(data_dir, "t") == [b"plain"]
    with pytest.raises(ottla.ProducerFencedError):
        hung.commit_transaction()
    other.close()
    hung.close()
    plain.close()


def test_aio_transactions(data_dir: Path) -> None:
    async def main() -> None:
        async with ottla.aio.Producer(data_dir, transactional_id="tx") as p:
            await p.init_transactions()
            p.begin_transaction()
            await p.send("t", b"one")
            p.send("t", b"two")
            await p.commit_transaction()
            p.begin_transaction()
            p.send("t", b"gone")
            await p.abort_transaction()

    asyncio.run(main())
    assert values(data_dir, "t") == [b"one", b"two"]


def test_read_committed_consumer_waits_for_the_commit(data_dir: Path) -> None:
    p = txn_producer(data_dir, "tx")
    p.begin_transaction()
    p.send("t", b"x")
    p.flush()
    with ottla.Consumer(
        data_dir, "t", auto_offset_reset="earliest", isolation_level="read_committed"
    ) as c:
        assert c.poll(timeout_ms=200) == {}
        p.commit_transaction()
        got: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while not got and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                got.extend(r.value or b"" for r in recs)
        assert got == [b"x"]
    p.close()


# ---- one transaction, any door ---------------------------------------------------


def test_a_broker_written_transaction_reads_the_same_embedded(data_dir: Path) -> None:
    ck = pytest.importorskip("confluent_kafka")
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    with ottla.Broker(data_dir) as b:
        p = ck.Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "ck"})
        p.init_transactions(TIMEOUT)
        p.begin_transaction()
        for i in range(6):
            p.produce("t", f"c{i}".encode(), partition=i % 2)
        p.commit_transaction(TIMEOUT)
        p.begin_transaction()
        p.produce("t", b"aborted", partition=0)
        p.abort_transaction(TIMEOUT)
        p.flush(TIMEOUT)
        assert sorted(values(data_dir, "t")) == [f"c{i}".encode() for i in range(6)]


def test_an_embedded_transaction_reads_the_same_through_the_broker(data_dir: Path) -> None:
    ck = pytest.importorskip("confluent_kafka")
    ottla.Admin(data_dir).create_topic("t", partitions=1)
    with ottla.Broker(data_dir) as b:
        c = ck.Consumer(
            {
                "bootstrap.servers": b.bootstrap_servers,
                "group.id": f"g-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        c.assign([ck.TopicPartition("t", 0, 0)])
        with ottla.Producer(data_dir) as plain:
            plain.send("t", b"first").get(10)
        # Once this is read, the broker has loaded the partition's producers
        # (a read_committed Fetch): it must catch up with what the embedded
        # producer writes next.
        first = None
        deadline = time.monotonic() + TIMEOUT
        while first is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                first = m.value()
        assert first == b"first"
        p = txn_producer(data_dir, "emb")
        p.begin_transaction()
        p.send("t", b"gone")
        p.abort_transaction()
        p.begin_transaction()
        p.send("t", b"open")
        p.flush()
        assert c.poll(1.0) is None  # held back by the open transaction
        p.commit_transaction()
        p.close()
        got: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < 1 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())
        assert got == [b"open"]
        assert c.poll(1.0) is None
        c.close()


def test_an_embedded_producer_fences_a_broker_client_with_the_same_id(data_dir: Path) -> None:
    ck = pytest.importorskip("confluent_kafka")
    with ottla.Broker(data_dir) as b:
        zombie = ck.Producer({"bootstrap.servers": b.bootstrap_servers, "transactional.id": "x"})
        zombie.init_transactions(TIMEOUT)
        zombie.begin_transaction()
        zombie.produce("t", b"zombie")
        zombie.flush(TIMEOUT)
        p = txn_producer(data_dir, "x")
        p.begin_transaction()
        p.send("t", b"embedded")
        p.commit_transaction()
        p.close()
        with pytest.raises(ck.KafkaException):
            zombie.commit_transaction(TIMEOUT)
    assert values(data_dir, "t") == [b"embedded"]
