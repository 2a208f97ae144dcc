"""What a remote consumer's ``Record`` costs, without a broker.

    python bench/record_micro.py

500 in-memory confluent-kafka ``Message`` s (each with objects of its own,
as librdkafka's are), best of 300 passes, ns a message:

* raw loop: ``m.error()`` and ``len(m.value())`` for each message (the
  raw side of ``remote_bench.py``'s consumer iteration);
* iteration: the records of the batch as the consumer's iteration makes
  them (``_core.remote_record_iter``), reading ``len(r.value)``;
* made and freed: the records of the batch (``_core.remote_records``, a
  list), made and dropped.

Nothing asserted; one run prints one line. docs/PERFORMANCE.md, "Over a
cluster", steps 7 and 8.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import confluent_kafka as ck

from ottla import _core

# Each message with a topic and a value of its own (`"topic_"[:-1]` is a new
# `str`; `"topic" + ""` would be the same one).
MSGS = [
    ck.Message(topic="topic_"[:-1], partition=0, offset=i, value=bytes(bytearray(b"x" * 100)))
    for i in range(500)
]


def raw() -> None:
    total = 0
    for m in MSGS:
        if m.error() is None:
            total += len(m.value())


def iteration() -> None:
    total = 0
    for r in _core.remote_record_iter(MSGS, 0, len(MSGS)):
        total += len(r.value)


def made_and_freed() -> None:
    _core.remote_records(MSGS)


def best(f: Callable[[], None], passes: int = 300) -> float:
    least = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter_ns()
        f()
        least = min(least, time.perf_counter_ns() - t0)
    return least / len(MSGS)


def main() -> None:
    cells = [
        f"{f.__name__.replace('_', ' ')} {best(f):.1f} ns" for f in (raw, iteration, made_and_freed)
    ]
    print("per message (best of 300 passes over 500): " + ", ".join(cells))


if __name__ == "__main__":
    main()
