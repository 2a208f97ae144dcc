"""Write a topic and read it back, in-process, under ./ottla-data.

Run: ``pip install . && python examples/quickstart.py`` (or give another
directory as the first argument). ``ottla-data/`` is git-ignored; the
directory is kept, so a second run's consumer group reads only what was
written since. Delete it when done.
"""

from __future__ import annotations

import json
import sys
import time

import ottla

DATA = sys.argv[1] if len(sys.argv) > 1 else "ottla-data"
TOPIC = "quickstart"


def main() -> None:
    admin = ottla.Admin(DATA, create=True)
    if TOPIC not in admin.list_topics():
        admin.create_topic(TOPIC, partitions=3, config={"retention.ms": 7 * 24 * 3600 * 1000})

    # Produce: keyed records land on the partition Kafka's Java client would pick.
    with ottla.Producer(DATA, value_serializer=lambda v: json.dumps(v).encode()) as producer:
        futures = [
            producer.send(TOPIC, {"n": i, "at": time.time()}, key=f"user-{i % 5}".encode())
            for i in range(10)
        ]
        last = futures[-1].get(timeout=10)
        print(
            f"wrote 10 records; the last went to {last.topic}-{last.partition} at offset {last.offset}"
        )

    # Consume as a group: positions are committed in the directory, so running
    # this script again reads only what was written since.
    with ottla.Consumer(
        DATA,
        TOPIC,
        group_id="quickstart",
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
        value_deserializer=json.loads,
    ) as consumer:
        n = 0
        for record in consumer:
            n += 1
            print(
                f"  {record.topic}-{record.partition}@{record.offset} key={record.key!r} value={record.value}"
            )
        print(f"read {n} new records")

    desc = admin.describe_topic(TOPIC)
    for p in desc.partitions:
        print(
            f"partition {p.partition}: offsets {p.start_offset}..{p.end_offset}, {p.size_bytes} bytes on disk"
        )


if __name__ == "__main__":
    main()
