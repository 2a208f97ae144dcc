"""Exactly once, in-process, through kill -9 (issue 15's proof).

A consume-transform-produce loop (an embedded read_committed consumer in a
group, a transactional producer, ``send_offsets_to_transaction``) in a
child process, SIGKILLed at random points (mid-batch, mid-commit) over
many rounds, then left to finish: the output read with read_committed holds
every input record exactly once. The same loop with confluent-kafka through
``ottla serve``, the worker killed each round.

``OTTLA_TXN_ROUNDS=200 pytest tests/test_transactions_embedded_crash.py``
runs more rounds than the suite's 20.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import ottla
from helpers import Child, Spawn, wait_until

ROUNDS = int(os.environ.get("OTTLA_TXN_ROUNDS", "20"))
INPUT = 400
TIMEOUT = 60.0

WORKER = r"""
import random, sys, time, ottla
d, finish = sys.argv[1], sys.argv[2] == "finish"
# Slowed down a little, so the rounds' kills land inside transactions:
# between sends, after the offsets, during the commit.
nap = lambda: time.sleep(random.uniform(0, 0.01))
p = ottla.Producer(d, transactional_id="ctp", linger_ms=1)
p.init_transactions()
c = ottla.Consumer(d, "in", group_id="ctp", enable_auto_commit=False,
                   auto_offset_reset="earliest", isolation_level="read_committed")
print("ready", flush=True)
idle = 0
while True:
    batch = c.poll(timeout_ms=100, max_records=random.randint(1, 25))
    if not batch:
        idle += 1
        if finish and idle > 10:
            break
        continue
    idle = 0
    p.begin_transaction()
    for tp, recs in batch.items():
        for r in recs:
            p.send("out", r.value + b"!", partition=tp.partition)
        nap()
    p.send_offsets_to_transaction({tp: c.position(tp) for tp in batch},
                                  c.consumer_group_metadata())
    nap()
    p.commit_transaction()
p.close()
c.close()
print("finished", flush=True)
"""


def committed_output(d: Path) -> list[bytes]:
    out: list[bytes] = []
    with ottla.Consumer(
        d,
        "out",
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=500,
    ) as c:
        out.extend(r.value or b"" for r in c)
    return out


def test_consume_transform_produce_killed_at_random_is_exactly_once(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("in", partitions=2)
    admin.create_topic("out", partitions=2)
    with ottla.Producer(data_dir) as p:
        for i in range(INPUT):
            p.send("in", f"r{i}".encode(), partition=i % 2)
    rng = random.Random(os.environ.get("OTTLA_TXN_SEED", "15"))
    for _ in range(ROUNDS):
        child = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(data_dir), "run"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(TIMEOUT)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(data_dir), "finish"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert done.returncode == 0, done.stderr
    got = Counter(committed_output(data_dir))
    want = Counter(f"r{i}!".encode() for i in range(INPUT))
    assert got == want, (
        f"missing {sorted((want - got).elements())[:10]}, "
        f"duplicated {sorted((got - want).elements())[:10]}"
    )
    with ottla.Consumer(
        data_dir, "out", auto_offset_reset="earliest", consumer_timeout_ms=500
    ) as c:
        cut = sum(1 for _ in c) - INPUT
    print(f"{ROUNDS} rounds; records of transactions cut by a kill: {cut}")


CK_WORKER = r"""
import sys, confluent_kafka as ck
bs = sys.argv[1]
c = ck.Consumer({"bootstrap.servers": bs, "group.id": "ctp", "auto.offset.reset": "earliest",
                 "enable.auto.commit": False, "isolation.level": "read_committed"})
p = ck.Producer({"bootstrap.servers": bs, "transactional.id": "ctp-ck", "linger.ms": 1})
p.init_transactions(30)
c.subscribe(["in"])
print("ready", flush=True)
while True:
    msgs = [m for m in c.consume(20, 0.2) if m.error() is None]
    if not msgs:
        continue
    p.begin_transaction()
    for m in msgs:
        p.produce("out", m.value() + b"!", partition=m.partition())
    p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
"""


def test_confluent_kafka_consume_transform_produce_killed_through_the_broker(
    data_dir: Path, spawn: Spawn
) -> None:
    pytest.importorskip("confluent_kafka")
    admin = ottla.Admin(data_dir)
    admin.create_topic("in", partitions=2)
    admin.create_topic("out", partitions=2)
    with ottla.Producer(data_dir) as p:
        for i in range(INPUT):
            p.send("in", f"r{i}".encode(), partition=i % 2)
    with ottla.Broker(data_dir) as b:
        rng = random.Random(os.environ.get("OTTLA_TXN_SEED", "15"))
        rounds = max(3, ROUNDS // 4)
        for r in range(rounds + 1):
            w: Child = spawn(CK_WORKER, b.bootstrap_servers)
            w.wait_line(lambda s: s.strip() == "ready", TIMEOUT)
            if r < rounds:
                time.sleep(rng.uniform(0.5, 2.0))
                w.kill()
                continue
            # The last round runs until every input record is out.
            assert wait_until(
                lambda: len(committed_output(data_dir)) >= INPUT, timeout=TIMEOUT * 2
            ), len(committed_output(data_dir))
            w.kill()
    got = Counter(committed_output(data_dir))
    want = Counter(f"r{i}!".encode() for i in range(INPUT))
    assert got == want, (
        f"missing {sorted((want - got).elements())[:10]}, "
        f"duplicated {sorted((got - want).elements())[:10]}"
    )
