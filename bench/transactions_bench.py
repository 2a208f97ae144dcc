"""Transactions: what they cost a producer and a consumer, through the
broker and in-process.

    python bench/transactions_bench.py [--records N] [--rounds R] [--embedded-only]

confluent-kafka against an ``ottla.Broker`` in this process (as the pytest
fixture runs it), 100-byte records:

* produce throughput of a transactional producer committing every 100 and
  every 10,000 records, as a ratio of the same producer without a
  transactional id (idempotent, same batching settings);
* consume throughput of a read_committed consumer as a ratio of a
  read_uncommitted one, over the same committed transactional topic.

The embedded rows: ``ottla.Producer(transactional_id=...)`` committing
every 100 and every 10,000 records as a ratio of a plain ``ottla.Producer``
(``send`` per record, the same settings), and an ``ottla.Consumer`` with
``isolation_level="read_committed"`` as a ratio of a read_uncommitted one
over the same committed topic.

Three interleaved rounds, medians reported with every round's value (the
machine is shared). Prints one line per row.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any, Literal

import confluent_kafka as ck

import ottla

VALUE = b"x" * 100
QUIET = {"log_level": 3}
# A queue large enough for a whole run: no BufferError back-off in any row.
BATCHING = {"linger.ms": 5, "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000}


def produce(bootstrap: str, topic: str, n: int, txn_size: int | None) -> float:
    """Records per second producing `n` records, in transactions of
    `txn_size` (None: no transactions, an idempotent producer)."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, **BATCHING, **QUIET}
    if txn_size is None:
        conf["enable.idempotence"] = True
    else:
        conf["transactional.id"] = f"bench-{topic}"
    p = ck.Producer(conf)
    if txn_size is not None:
        p.init_transactions(30)
    # Warm-up (topic creation, connections), not timed.
    if txn_size is not None:
        p.begin_transaction()
    p.produce(topic, b"warm-up")
    if txn_size is not None:
        p.commit_transaction(30)
    p.flush(30)
    t0 = time.perf_counter()
    left = n
    while left:
        k = min(left, txn_size or left)
        if txn_size is not None:
            p.begin_transaction()
        for _ in range(k):
            while True:
                try:
                    p.produce(topic, VALUE)
                    break
                except BufferError:
                    p.poll(0.05)
        if txn_size is not None:
            p.commit_transaction(60)
        left -= k
    if p.flush(120) != 0:
        raise RuntimeError("records left unacknowledged")
    return n / (time.perf_counter() - t0)


def consume(bootstrap: str, topic: str, n: int, isolation: str) -> float:
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{isolation}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            **QUIET,
        }
    )
    c.subscribe([topic])
    got = 0
    t0 = None
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        msgs = c.consume(10000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in msgs if not m.error())
    c.close()
    if t0 is None or got < n:
        raise RuntimeError(f"consumed {got} of {n}")
    return got / (time.perf_counter() - t0)


def produce_embedded(d: str, topic: str, n: int, txn_size: int | None) -> float:
    """Records per second of an embedded producer (`txn_size`: None for a
    plain one)."""
    extra: dict[str, Any] = {} if txn_size is None else {"transactional_id": f"bench-{topic}"}
    p = ottla.Producer(d, **extra)
    if txn_size is not None:
        p.init_transactions()
    t0 = time.perf_counter()
    left = n
    while left:
        k = min(left, txn_size or left)
        if txn_size is not None:
            p.begin_transaction()
        for _ in range(k):
            p.send(topic, VALUE)
        if txn_size is not None:
            p.commit_transaction()
        left -= k
    p.flush()
    rate = n / (time.perf_counter() - t0)
    p.close()
    return rate


def consume_embedded(
    d: str, topic: str, n: int, isolation: Literal["read_committed", "read_uncommitted"]
) -> float:
    t0 = time.perf_counter()
    got = 0
    with ottla.Consumer(
        d, topic, auto_offset_reset="earliest", isolation_level=isolation, consumer_timeout_ms=1000
    ) as c:
        for batch in iter(lambda: c.poll(timeout_ms=500, max_records=10000), {}):
            got += sum(len(v) for v in batch.values())
            if got >= n:
                break
    if got < n:
        raise RuntimeError(f"consumed {got} of {n}")
    return got / (time.perf_counter() - t0)


def embedded_rows(n: int, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        produce_embedded(d, "warm", n, None)
        for r in range(rounds):
            rates.setdefault("e-plain", []).append(produce_embedded(d, f"ep{r}", n, None))
            rates.setdefault("e-t100", []).append(produce_embedded(d, f"e100-{r}", n, 100))
            rates.setdefault("e-t10k", []).append(produce_embedded(d, f"e10k-{r}", n, 10_000))
            rates.setdefault("e-unc", []).append(
                consume_embedded(d, f"e10k-{r}", n, "read_uncommitted")
            )
            rates.setdefault("e-com", []).append(
                consume_embedded(d, f"e10k-{r}", n, "read_committed")
            )
    return rates


def restart_rows(records: int) -> None:
    """The first read_committed read of a partition of many segments: with
    no producer-state snapshot (the whole partition is scanned) and with
    the snapshot the first one left at the last roll (only the tail)."""
    import glob
    import os

    with tempfile.TemporaryDirectory() as d:
        ottla.Admin(d, create=True).create_topic(
            "many", partitions=1, config={"segment.bytes": str(1 << 20)}
        )
        p = ottla.Producer(d, transactional_id="restart")
        p.init_transactions()
        left = records
        while left:
            k = min(left, 1000)
            p.begin_transaction()
            for _ in range(k):
                p.send("many", VALUE)
            if left % 3000 == 0:
                p.abort_transaction()
            else:
                p.commit_transaction()
            left -= k
        p.close()
        pdir = os.path.join(d, "many-0")
        segments = len(glob.glob(os.path.join(pdir, "*.log")))

        def first_read() -> float:
            t0 = time.perf_counter()
            with ottla.Consumer(d, isolation_level="read_committed") as c:
                tp = ottla.TopicPartition("many", 0)
                c.assign([tp])
                # Into the last (committed) transaction, before its marker.
                c.seek(tp, c.end_offsets([tp])[tp] - 500)
                deadline = time.monotonic() + 300
                while not c.poll(timeout_ms=100):
                    if time.monotonic() > deadline:
                        raise RuntimeError("nothing read")
            return time.perf_counter() - t0

        scans = []
        for _ in range(3):
            _remove_snapshots(pdir)
            scans.append(first_read())  # each leaves a snapshot at the last roll
        scan = min(scans)
        snaps = len(glob.glob(os.path.join(pdir, "*.snapshot")))
        fast = min(first_read() for _ in range(3))
        print(
            f"first read_committed read, {segments} segments, {records:,} records: "
            f"{scan * 1000:,.0f} ms scanning the log, {fast * 1000:,.0f} ms from a snapshot "
            f"({snaps} snapshots)"
        )


def _remove_snapshots(pdir: str) -> None:
    import glob
    import os

    for f in glob.glob(os.path.join(pdir, "*.snapshot")):
        os.remove(f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--embedded-only", action="store_true")
    ap.add_argument("--restart", action="store_true", help="only the restart row")
    args = ap.parse_args()
    n = args.records
    if args.restart:
        restart_rows(n)
        return
    rates: dict[str, list[float]] = embedded_rows(n, args.rounds)
    with tempfile.TemporaryDirectory() as d, ottla.Broker(d) as b:
        if args.embedded_only:
            args.rounds = 0
        bs = b.bootstrap_servers
        # The first producer of a fresh broker runs slower (the broker's
        # and the page cache's warm-up): one untimed pass first.
        if args.rounds:
            produce(bs, "warm", n, None)
        # Rounds interleave the rows, so a noisy moment of the shared
        # machine does not land on one row only; medians are reported.
        for r in range(args.rounds):
            rates.setdefault("plain", []).append(produce(bs, f"plain{r}", n, None))
            rates.setdefault("t100", []).append(produce(bs, f"t100-{r}", n, 100))
            rates.setdefault("t10k", []).append(produce(bs, f"t10k-{r}", n, 10_000))
            rates.setdefault("unc", []).append(consume(bs, f"t10k-{r}", n + 1, "read_uncommitted"))
            rates.setdefault("com", []).append(consume(bs, f"t10k-{r}", n + 1, "read_committed"))
    med = {k: statistics.median(v) for k, v in rates.items()}

    def row(label: str, key: str, base: str | None) -> None:
        spread = ", ".join(f"{x:,.0f}" for x in rates[key])
        ratio = f"  ({med[key] / med[base]:.2f}x)" if base else ""
        print(f"{label:<40}{med[key]:>12,.0f} rec/s{ratio}   [{spread}]")

    row("embedded produce, no transactions", "e-plain", None)
    row("embedded produce, transactions of 100", "e-t100", "e-plain")
    row("embedded produce, transactions of 10000", "e-t10k", "e-plain")
    row("embedded consume read_uncommitted", "e-unc", None)
    row("embedded consume read_committed", "e-com", "e-unc")
    if args.embedded_only:
        return
    row("produce idempotent, no transactions", "plain", None)
    row("produce, transactions of 100", "t100", "plain")
    row("produce, transactions of 10000", "t10k", "plain")
    row("consume read_uncommitted", "unc", None)
    row("consume read_committed", "com", "unc")


if __name__ == "__main__":
    main()
