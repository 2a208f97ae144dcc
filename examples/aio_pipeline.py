"""A producer task and a consumer task in one asyncio loop, under ./ottla-data.

Run: ``pip install . && python examples/aio_pipeline.py``
"""

from __future__ import annotations

import asyncio
import sys

import ottla.aio

DATA = sys.argv[1] if len(sys.argv) > 1 else "ottla-data"
TOPIC = "aio-pipeline"
N = 1000


async def produce(producer: ottla.aio.Producer) -> None:
    # send() queues at once; awaiting the future waits for the append.
    first = await producer.send(TOPIC, b"hello", key=b"greeting")
    print(f"first record at {first.topic}-{first.partition} offset {first.offset}")
    await producer.send_many(TOPIC, [b"event-%d" % i for i in range(N - 1)])


async def consume(consumer: ottla.aio.Consumer) -> int:
    seen = 0
    async for _record in consumer:  # ends after consumer_timeout_ms without records
        seen += 1
        if seen == N:
            break
    await consumer.commit()
    return seen


async def main() -> None:
    async with (
        ottla.aio.Producer(DATA) as producer,
        ottla.aio.Consumer(
            DATA,
            TOPIC,
            group_id="aio-example",
            auto_offset_reset="earliest",
            consumer_timeout_ms=2000,
        ) as consumer,
    ):
        reader = asyncio.create_task(consume(consumer))
        await produce(producer)
        print(f"consumer read {await reader} records")


if __name__ == "__main__":
    asyncio.run(main())
