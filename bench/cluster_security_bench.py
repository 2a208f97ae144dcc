"""Replication throughput of a three-node cluster (RF 3, acks=all) with a
PLAINTEXT inter-broker listener against SASL_SSL (SCRAM-SHA-512) between the
nodes and mutual TLS on the controller listener, the same run, one after the
other. The producer uses each cluster's PLAINTEXT listener, so only the
nodes' own connections differ.

    python bench/cluster_security_bench.py [--records 20000] [--size 1024]

Numbers only (docs/PERFORMANCE.md); indicative on a shared machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ottla.cluster import Cluster, ClusterSecurity


def run(path: Path, security: ClusterSecurity | None, records: int, size: int) -> float:
    """Records per second acknowledged with acks=all."""
    with Cluster(path, 3, security=security) as c:
        admin = AdminClient({"bootstrap.servers": c.bootstrap_servers})
        admin.create_topics([NewTopic("bench", 1, 3)])["bench"].result(timeout=60)
        c.wait_in_sync("bench", timeout=60)
        p = Producer(
            {
                "bootstrap.servers": c.bootstrap_servers,
                "acks": "all",
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )
        value = b"x" * size
        # Warm-up: connections, metadata, every follower fetching.
        for _ in range(1000):
            p.produce("bench", value)
        p.flush(60)
        start = time.perf_counter()
        for _ in range(records):
            while True:
                try:
                    p.produce("bench", value)
                    break
                except BufferError:
                    p.poll(0.01)
        assert p.flush(120) == 0
        elapsed = time.perf_counter() - start
        c.wait_in_sync("bench", timeout=60)
        return records / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        plain = run(Path(d) / "plain", None, args.records, args.size)
        secure = run(Path(d) / "secure", ClusterSecurity(), args.records, args.size)
    mb = args.size / 1e6
    print(f"PLAINTEXT inter-broker: {plain:,.0f} records/s ({plain * mb:.1f} MB/s)")
    print(
        f"SASL_SSL inter-broker + mTLS controller: {secure:,.0f} records/s ({secure * mb:.1f} MB/s)"
    )
    print(f"ratio: {secure / plain:.2f}")


if __name__ == "__main__":
    main()
