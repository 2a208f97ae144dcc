"""How long a two-consumer group test takes against an ottla broker, with a
Kafka client's default settings and with ``ottla_broker.client_config()``
(the fast group settings of ``ottla.pytest_plugin``).

The test: consumer A subscribes to a 4-partition topic and polls until it
owns all four; consumer B subscribes; both poll until each owns some and
together they own all four; both close. Timed from A's subscribe to the end
of both closes, which is what the test costs. Numbers only, never
assertions: ``python bench/group_test_probe.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import ottla
from ottla.pytest_plugin import start_broker

PARTITIONS = 4


def confluent_pair(conf: dict[str, Any], topic: str) -> tuple[float, float]:
    """(seconds until both members own partitions, seconds for the whole test)."""
    import confluent_kafka

    owned: dict[str, set[int]] = {"a": set(), "b": set()}

    def hooks(name: str) -> dict[str, Any]:
        def on_assign(_c: Any, parts: list[Any]) -> None:
            owned[name] |= {p.partition for p in parts}

        def on_revoke(_c: Any, parts: list[Any]) -> None:
            owned[name] -= {p.partition for p in parts}

        return {"on_assign": on_assign, "on_revoke": on_revoke}

    t0 = time.monotonic()
    a = confluent_kafka.Consumer(conf)
    b = confluent_kafka.Consumer(conf)
    try:
        a.subscribe([topic], **hooks("a"))
        deadline = t0 + 120
        while len(owned["a"]) < PARTITIONS and time.monotonic() < deadline:
            a.poll(0.02)
        b.subscribe([topic], **hooks("b"))
        while time.monotonic() < deadline and not (
            owned["a"] and owned["b"] and len(owned["a"] | owned["b"]) == PARTITIONS
        ):
            a.poll(0.02)
            b.poll(0.02)
        formed = time.monotonic() - t0
    finally:
        a.close()
        b.close()
    return formed, time.monotonic() - t0


def kafka_python_pair(conf: dict[str, Any], topic: str) -> tuple[float, float]:
    import kafka

    t0 = time.monotonic()
    a = kafka.KafkaConsumer(topic, **conf)
    b = None
    try:
        deadline = t0 + 120
        while len(a.assignment()) < PARTITIONS and time.monotonic() < deadline:
            a.poll(20)
        b = kafka.KafkaConsumer(topic, **conf)
        while time.monotonic() < deadline:
            a.poll(20)
            b.poll(20)
            sa, sb = a.assignment(), b.assignment()
            if sa and sb and len(sa | sb) == PARTITIONS and not sa & sb:
                break
        formed = time.monotonic() - t0
    finally:
        a.close()
        if b is not None:
            b.close()
    return formed, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", default="confluent-kafka,kafka-python")
    args = ap.parse_args()
    cases = []
    for client in args.clients.split(","):
        strategies = ["range", "cooperative-sticky"] if client == "confluent-kafka" else ["range"]
        for strategy in strategies:
            for fast in (False, True):
                cases.append((client, strategy, fast))
    print(f"two-consumer group test, {PARTITIONS} partitions, median of {args.runs}")
    print(f"{'client':16} {'strategy':19} {'settings':16} {'formed s':>9} {'test s':>7}")
    with tempfile.TemporaryDirectory() as d, start_broker(d) as broker:
        n = 0
        for client, strategy, fast in cases:
            formed, total = [], []
            for _ in range(args.runs):
                n += 1
                topic = f"probe-{n}"
                ottla.Admin(d).create_topic(topic, partitions=PARTITIONS)
                conf = broker.client_config(client, fast_groups=fast)
                if client == "confluent-kafka":
                    conf.update({"group.id": f"g{n}", "partition.assignment.strategy": strategy})
                    f, t = confluent_pair(conf, topic)
                else:
                    conf["group_id"] = f"g{n}"
                    f, t = kafka_python_pair(conf, topic)
                formed.append(f)
                total.append(t)
            label = "client_config()" if fast else "client defaults"
            print(
                f"{client:16} {strategy:19} {label:16} "
                f"{statistics.median(formed):9.2f} {statistics.median(total):7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
