"""A consumer-group worker: start several, in several terminals, on one
directory; they split the partitions of ``orders`` between them, and when
one stops (Ctrl-C, or ``kill -9``) the others take its partitions over.

Run: ``python examples/group_worker.py [data-dir]`` (as many as you like),
and produce with ``python -c 'import ottla; p = ottla.Producer("ottla-data");
[p.send("orders", b"%d" % i) for i in range(1000)]; p.flush()'``.
"""

from __future__ import annotations

import os
import sys

import ottla

DATA = sys.argv[1] if len(sys.argv) > 1 else "ottla-data"
NAME = f"worker-{os.getpid()}"


def on_assign(consumer: ottla.Consumer, partitions: list[ottla.TopicPartition]) -> None:
    print(NAME, "now owns", sorted(tp.partition for tp in partitions), flush=True)


def on_revoke(consumer: ottla.Consumer, partitions: list[ottla.TopicPartition]) -> None:
    # The last moment to commit what was processed before the partitions move.
    consumer.commit()
    print(NAME, "handed over", sorted(tp.partition for tp in partitions), flush=True)


def main() -> None:
    admin = ottla.Admin(DATA, create=True)
    if "orders" not in admin.list_topics():
        try:
            admin.create_topic("orders", partitions=6)
        except ottla.TopicAlreadyExistsError:
            pass  # another worker made it first
    with ottla.Consumer(
        DATA, group_id="order-workers", client_id=NAME, auto_offset_reset="earliest"
    ) as consumer:
        consumer.subscribe(["orders"], on_assign=on_assign, on_revoke=on_revoke)
        try:
            for record in consumer:
                print(NAME, f"{record.partition}@{record.offset}", record.value, flush=True)
        except KeyboardInterrupt:
            pass  # leaving the with-block commits and hands the partitions over


if __name__ == "__main__":
    main()
