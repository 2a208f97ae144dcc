"""ottla's API against ``ottla.Cluster`` through a broker's death (issue 16):
a remote Producer with ``acks=all`` and a group Consumer keep working
through ``kill -9`` of a broker; every acknowledged record is read, and
the consumer never raises (librdkafka retries what is retriable)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import ottla

pytest.importorskip("confluent_kafka")
pytestmark = pytest.mark.timeout(240)


def test_producer_and_group_consumer_through_kill_9_of_a_broker(tmp_path: Path) -> None:
    with ottla.Cluster(tmp_path / "cluster", brokers=3) as cluster:
        servers = cluster.bootstrap_servers
        with ottla.Admin(bootstrap_servers=servers) as admin:
            admin.create_topic("orders", 3)
        for p in range(3):
            cluster.leader("orders", p)  # every partition has a leader
        cluster.wait_in_sync("orders")

        acked: set[bytes] = set()
        failed: list[BaseException] = []
        seen: list[bytes] = []
        consumer_errors: list[BaseException] = []
        stop = threading.Event()

        def consume() -> None:
            try:
                with ottla.Consumer(
                    "orders",
                    bootstrap_servers=servers,
                    group_id="billing",
                    auto_offset_reset="earliest",
                    consumer_timeout_ms=200,
                ) as c:
                    while not stop.is_set():
                        seen.extend(r.value for r in c if r.value is not None)
            except BaseException as e:
                consumer_errors.append(e)

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        producer = ottla.Producer(bootstrap_servers=servers, acks="all", linger_ms=2)

        def send(i: int) -> None:
            value = b"order-%d" % i

            def done(md: ottla.RecordMetadata) -> None:
                acked.add(value)

            producer.send("orders", value, key=b"k%d" % (i % 7)).add_callback(done).add_errback(
                failed.append
            )

        for i in range(300):
            send(i)
        producer.flush(60)
        assert len(acked) == 300

        # The lowest-numbered leader: the group's coordinator too when that
        # is node 1 (groups go to the lowest live broker), so both a
        # partition's leadership and the group move.
        victim = min(cluster.leader("orders", p) for p in range(3))
        cluster.kill(victim)  # kill -9
        for i in range(300, 600):
            send(i)
            if i % 50 == 0:
                time.sleep(0.05)  # sends spread over the fail-over
        producer.flush(120)
        producer.close()
        # Every record was acknowledged, after the retries librdkafka made
        # while leadership moved; none failed for good.
        assert not failed, failed[:3]
        assert len(acked) == 600

        deadline = time.monotonic() + 120
        while not acked <= set(seen) and time.monotonic() < deadline and reader.is_alive():
            time.sleep(0.1)
        stop.set()
        reader.join(60)
        assert not consumer_errors, consumer_errors[:3]
        missing = acked - set(seen)
        assert not missing, sorted(missing)[:10]
        # At least once: a record read twice is possible across a rebalance,
        # none lost.
        assert set(seen) <= acked
