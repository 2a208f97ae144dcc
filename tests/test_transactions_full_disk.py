"""Transactions through ``ottla serve`` on a full disk (librdkafka).

The transaction coordinator writes each state change to
``__transaction_state`` and then the COMMIT/ABORT markers to every
partition of the transaction; either write can meet a full disk. Kafka's
coordinator answers a storage error on its log as NOT_COORDINATOR
(``TransactionStateManager``): the client finds the coordinator again and
retries, so a commit refused while the disk is full goes through once
there is space, and nothing is lost or shown twice. These tests put the
data directory on a small tmpfs and fill it from outside.

They need to mount a tmpfs (root) and are skipped otherwise.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

import ottla
from helpers import fill_filesystem

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck

pytestmark = pytest.mark.timeout(120)

TIMEOUT = 30.0
# Each state record of a transaction holds its transactional id: one of
# 5000 bytes makes every state write need a fresh page, so a write on the
# filled tmpfs fails however much room the log's last page still has.
LONG = "x" * 5000


def producer(b: ottla.Broker, txn_id: str) -> ck.Producer:
    p = ck.Producer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "transactional.id": txn_id,
            "linger.ms": 0,
        }
    )
    p.init_transactions(TIMEOUT)
    return p


def committed(b: ottla.Broker, topic: str, expect: int) -> list[bytes]:
    """What a read_committed consumer reads of `topic`: until `expect`
    values came, then one more quiet second (to see any duplicate)."""
    c = ck.Consumer(
        {
            "bootstrap.servers": b.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        c.subscribe([topic])
        out: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        quiet_until = None
        while time.monotonic() < deadline:
            if quiet_until is not None and time.monotonic() > quiet_until:
                break
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            out.append(m.value() or b"")
            if len(out) >= expect and quiet_until is None:
                quiet_until = time.monotonic() + 1.0
        return out
    finally:
        c.close()


def test_commit_refused_on_a_full_disk_goes_through_once_there_is_space(tmpfs: Path) -> None:
    data = tmpfs / "data"
    ottla.Admin(data, create=True).create_topic("t", partitions=2)
    with ottla.Broker(data) as b:
        p = producer(b, "tx-full-" + LONG)
        p.begin_transaction()
        for i in range(20):
            p.produce("t", f"v{i}".encode(), partition=i % 2)
        assert p.flush(TIMEOUT) == 0

        filler = fill_filesystem(tmpfs)
        # The coordinator cannot write PrepareCommit: the commit does not
        # complete while the disk is full, and says so with a retriable
        # error (not a fatal or abortable one: the transaction is intact).
        with pytest.raises(ck.KafkaException) as e:
            p.commit_transaction(3.0)
        err: ck.KafkaError = e.value.args[0]
        assert not err.fatal(), err
        assert not err.txn_requires_abort(), err
        assert err.retriable(), err

        filler.unlink()
        p.commit_transaction(TIMEOUT)
        assert sorted(committed(b, "t", 20)) == sorted(f"v{i}".encode() for i in range(20))

        # And the producer goes on with its next transaction.
        p.begin_transaction()
        p.produce("t", b"next", partition=0)
        p.commit_transaction(TIMEOUT)
        assert len(committed(b, "t", 21)) == 21

    # The next broker on the directory has the same view.
    with ottla.Broker(data) as b:
        got = committed(b, "t", 21)
        assert sorted(got) == sorted([b"next"] + [f"v{i}".encode() for i in range(20)])


def test_abort_on_a_full_disk_hides_the_records_once_there_is_space(tmpfs: Path) -> None:
    data = tmpfs / "data"
    ottla.Admin(data, create=True).create_topic("t", partitions=1)
    with ottla.Broker(data) as b:
        p = producer(b, "tx-abort-full-" + LONG)
        p.begin_transaction()
        p.produce("t", b"kept-out")
        assert p.flush(TIMEOUT) == 0
        filler = fill_filesystem(tmpfs)
        with pytest.raises(ck.KafkaException) as e:
            p.abort_transaction(3.0)
        err: ck.KafkaError = e.value.args[0]
        assert not err.fatal(), err
        filler.unlink()
        p.abort_transaction(TIMEOUT)
        p.begin_transaction()
        p.produce("t", b"visible")
        p.commit_transaction(TIMEOUT)
        assert committed(b, "t", 1) == [b"visible"]
