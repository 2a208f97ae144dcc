"""Adding a broker and moving data onto it (issue 14): a three-broker
``ottla.Cluster`` holds a topic of ``--gib`` GiB (``--partitions``
partitions, replication factor 3); a fourth broker is added and every
partition reassigned so that the new broker replaces one of its replicas
(AlterPartitionReassignments), so the new broker copies the whole topic.
Meanwhile an ``acks=all`` producer (confluent-kafka) sends one 100-byte
record every 10 ms to another topic; its delivery latency is reported
before the move (steady state) and during it.

    python bench/cluster_move_bench.py              # 1 GiB, 8 partitions
    python bench/cluster_move_bench.py --gib 0.25   # a quicker run

Prints one JSON object: the bytes moved, the move's elapsed time and
throughput, and the probe producer's p50/p99/max before and during.
Needs confluent-kafka and a release build (``pip install .``) of ottla.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ottla.cluster import Cluster, alter_reassignments, describe, list_reassignments


class Probe:
    """One acks=all record every ``interval`` s; latencies by phase."""

    def __init__(self, bootstrap: str, topic: str, interval: float = 0.01) -> None:
        self.p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        self.topic = topic
        self.interval = interval
        self.phase = "warmup"
        self.latencies: dict[str, list[float]] = {}
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        next_send = time.perf_counter()
        while not self.stop.is_set():
            # A fixed offered load: one record per interval, whatever the
            # callbacks do to poll()'s timing.
            while (wait := next_send - time.perf_counter()) > 0:
                self.p.poll(wait)
            next_send += self.interval
            sent = time.perf_counter()
            phase = self.phase

            def done(err: object, msg: object, sent: float = sent, phase: str = phase) -> None:
                if err is not None:
                    self.failures += 1
                    return
                ms = (time.perf_counter() - sent) * 1000
                self.latencies.setdefault(phase, []).append(ms)

            self.p.produce(self.topic, b"x" * 100, on_delivery=done)
            self.p.poll(0)
        self.p.flush(30)


def stats(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {}
    s = sorted(ms)
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(s), 2),
        "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2),
        "max_ms": round(s[-1], 2),
    }


def fill(bootstrap: str, topic: str, total: int, partitions: int) -> None:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "none",
        }
    )
    value = os.urandom(1024)
    for i in range(total // len(value)):
        while True:
            try:
                p.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(300) == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--steady", type=float, default=20.0, help="seconds of probe before the move")
    ap.add_argument("--dir", help="where the cluster lives (default: a temp dir)")
    args = ap.parse_args()
    total = int(args.gib * (1 << 30))
    with (
        tempfile.TemporaryDirectory(dir=args.dir) as tmp,
        Cluster(Path(tmp) / "cluster", 3, fast=False) as c,
    ):
        b = c.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": b})
        for f in admin.create_topics(
            [NewTopic("bulk", args.partitions, 3), NewTopic("probe", 1, 3)]
        ).values():
            f.result(30)
        t0 = time.monotonic()
        fill(b, "bulk", total, args.partitions)
        fill_s = time.monotonic() - t0
        c.wait_in_sync("bulk", timeout=600)
        probe = Probe(b, "probe")
        probe.thread.start()
        time.sleep(2)
        probe.phase = "before"
        time.sleep(args.steady)
        new = c.add_broker()
        parts = [p for p in describe(b)[2] if p.topic == "bulk"]
        # The new broker replaces each partition's last replica.
        plan = {("bulk", p.partition): [*p.replicas[:-1], new] for p in parts}
        probe.phase = "during"
        t0 = time.monotonic()
        answers = alter_reassignments(b, dict(plan.items()))
        assert all(code == 0 for code, _ in answers.values()), answers
        while list_reassignments(b):
            time.sleep(0.1)
        move_s = time.monotonic() - t0
        probe.phase = "after"
        time.sleep(2)
        probe.stop.set()
        probe.thread.join(60)
        moved = sum(
            f.stat().st_size
            for f in (c.data_dir(new)).rglob("*.log")
            if f.parent.name.startswith("bulk-")
        )
        print(
            json.dumps(
                {
                    "bytes_written": total,
                    "fill_s": round(fill_s, 1),
                    "bytes_moved": moved,
                    "move_s": round(move_s, 2),
                    "move_mib_s": round(moved / (1 << 20) / move_s, 1),
                    "probe_before": stats(probe.latencies.get("before", [])),
                    "probe_during": stats(probe.latencies.get("during", [])),
                    "probe_failures": probe.failures,
                    "loadavg": os.getloadavg(),
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
