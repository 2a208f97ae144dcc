"""ottla.aio: the asyncio Producer and Consumer.

Every method, cancellation at random points under load (nothing lost or
duplicated), a producer task and a consumer task exchanging 1 M records in
one loop, several loops in several threads, a loop that is already running
(as in Jupyter), and close() waking every waiter. Needs pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import ottla
import ottla.aio
import ottla.remote.aio
from helpers import Spawn
from ottla import TopicPartition as TP

aio = pytest.mark.asyncio


async def wait_for_zero(consumer: ottla.aio.Consumer, timeout: float = 5.0) -> None:
    """Until no wait task is left (cancelled tasks finish asynchronously)."""
    deadline = time.monotonic() + timeout
    while consumer.waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert consumer.waiting == 0


def read_all(path: Path, topic: str, partitions: int = 1) -> list[ottla.Record]:
    """Every record of a topic, with the sync consumer."""
    with ottla.Consumer(path, auto_offset_reset="earliest") as c:
        c.assign([TP(topic, p) for p in range(partitions)])
        ends = c.end_offsets([TP(topic, p) for p in range(partitions)])
        out: list[ottla.Record] = []
        deadline = time.monotonic() + 30
        while sum(c.position(tp) for tp in ends) < sum(ends.values()):
            assert time.monotonic() < deadline
            for recs in c.poll(timeout_ms=100, max_records=100_000).values():
                out.extend(recs)
        return out


# --------------------------------------------------------------------------
# Producer
# --------------------------------------------------------------------------


@aio
async def test_send_resolves_to_metadata(data_dir: Path) -> None:
    async with ottla.aio.Producer(data_dir, linger_ms=60_000) as p:
        md0 = await p.send("t", b"v0", key=b"k", headers=[("h", b"x")])
        md1 = await p.send("t", value=b"v1", partition=0, timestamp_ms=1_700_000_000_000)
        md2 = await p.send_and_wait("t", b"v2")
        assert isinstance(md0, ottla.RecordMetadata)
        assert (md0.topic, md0.partition, md0.offset) == ("t", 0, 0)
        assert (md1.offset, md1.timestamp) == (1, 1_700_000_000_000)
        assert md2.offset == 2
        assert abs(md0.timestamp - time.time() * 1000) < 60_000
    recs = read_all(data_dir, "t")
    assert [r.value for r in recs] == [b"v0", b"v1", b"v2"]
    assert recs[0].key == b"k" and recs[0].headers == [("h", b"x")]
    assert recs[1].timestamp == 1_700_000_000_000


@aio
async def test_send_future_is_plain_and_reusable(data_dir: Path) -> None:
    """send() returns at once; the future answers done()/result() and can be
    awaited more than once."""
    p = ottla.aio.Producer(data_dir, linger_ms=60_000)
    fut = p.send("t", b"x")
    assert isinstance(fut, (ottla.aio.SendFuture, ottla.remote.aio.SendFuture))
    assert not fut.done()
    assert "pending" in repr(fut)
    with pytest.raises(asyncio.InvalidStateError):
        fut.result()
    with pytest.raises(asyncio.InvalidStateError):
        fut.exception()
    md = await fut
    assert fut.done() and fut.exception() is None
    assert fut.result() == md == await fut
    assert "offset=0" in repr(fut)
    await p.close()


@pytest.mark.directory_only("reads the directory's batch layout on disk")
@aio
async def test_tasks_in_one_iteration_share_a_batch(data_dir: Path) -> None:
    """Awaiting appends at the end of the loop iteration: 200 tasks sending
    at once get consecutive offsets from one append, long before linger_ms."""
    async with ottla.aio.Producer(data_dir, linger_ms=60_000) as p:

        async def one(i: int) -> ottla.RecordMetadata:
            return await p.send("t", b"%d" % i)

        mds = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), 10)
        assert sorted(m.offset for m in mds) == list(range(200))
    # One batch: the log holds a single batch header for the 200 records.
    batches = sorted((data_dir / "t-0").glob("*.log"))
    data = batches[0].read_bytes()
    assert int.from_bytes(data[57:61], "big") == 200  # records count of batch 0


@aio
async def test_send_many_and_metadata(data_dir: Path) -> None:
    async with ottla.aio.Producer(data_dir, num_partitions=3) as p:
        fut = p.send_many("t", [b"a", b"b", b"c"], keys=[b"1", b"2", b"3"], timestamp_ms=5)
        assert len(fut) == 3
        with pytest.raises(asyncio.InvalidStateError):
            fut.metadata()
        assert await fut is None  # type: ignore[func-returns-value]  # checked here
        assert fut.done()
        mds = fut.metadata()
        assert [m.timestamp for m in mds] == [5, 5, 5]
        assert len({(m.partition, m.offset) for m in mds}) == 3
        big = p.send_many("t", (b"%d" % i for i in range(50_000)), partition=1)
        await big
        offs = [m.offset for m in big.metadata()]
        assert offs == list(range(offs[0], offs[0] + 50_000))
        assert "done=True" in repr(big)
        # Already complete: awaiting again returns at once.
        await big
        await p.send_many("t", [])
    assert len(read_all(data_dir, "t", 3)) == 50_003


@aio
async def test_fire_and_forget_then_flush(data_dir: Path) -> None:
    p = ottla.aio.Producer(data_dir, linger_ms=60_000, batch_size=1024)
    futs = [p.send("t", b"v%05d" % i) for i in range(5000)]
    await p.flush()
    assert all(f.done() for f in futs)
    assert [f.result().offset for f in futs] == list(range(5000))
    await p.close()
    assert p.closed
    assert [r.value for r in read_all(data_dir, "t")] == [b"v%05d" % i for i in range(5000)]


@aio
async def test_close_flushes_and_refuses_sends(data_dir: Path) -> None:
    p = ottla.aio.Producer(data_dir, linger_ms=60_000)
    fut = p.send("t", b"last")
    assert "linger_ms=60000" in repr(p)
    await p.close()
    assert fut.done() and fut.result().offset == 0
    assert "closed" in repr(p)
    with pytest.raises(ottla.ClosedError):
        p.send("t", b"x")
    with pytest.raises(ottla.ClosedError):
        p.send_many("t", [b"x"])
    await p.close()  # twice is fine


@pytest.mark.directory_only(
    "fsync is the directory's durability (with bootstrap_servers: InvalidConfigError naming it)"
)
@aio
async def test_producer_settings_and_bad_input(data_dir: Path) -> None:
    p = ottla.aio.Producer(
        data_dir,
        value_serializer=lambda v: v.encode(),
        key_serializer=str.encode,
        fsync="always",
        num_partitions=2,
    )
    md = await p.send("t", "text", key="k")
    assert md.partition in (0, 1)
    assert p.partitions_for("t") == [0, 1]
    assert p.path.endswith("data")
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        p.send("t", "x", partition=7)
    with pytest.raises(ValueError):
        p.send("t", "x", partition=-1)
    with pytest.raises(ValueError):
        p.send("t", "x", timestamp_ms=-5)
    with pytest.raises(TypeError):
        p.send("t", "x", timestamp_ms=1, timestamp=1)
    with pytest.raises(ValueError):
        p.send_many("t", ["a"], keys=["1", "2"])
    with pytest.raises(ottla.InvalidTopicError):
        p.send("bad/topic", "x")
    await p.close()
    raw = ottla.aio.Producer(data_dir)
    with pytest.raises(TypeError):
        raw.send("t", 12)
    with pytest.raises(ottla.RecordTooLargeError):
        raw.send("t", b"x" * 2_000_000)
    await raw.close()
    with pytest.raises(ValueError):
        ottla.aio.Producer(data_dir, fsync="sometimes")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        ottla.aio.Producer(data_dir, value_serializer=3)  # type: ignore[call-overload]


@pytest.mark.directory_only(
    "a cluster creates again a topic deleted under a producer still sending to it (auto.create.topics.enable)"
)
@aio
async def test_failed_batch_raises_from_await(data_dir: Path) -> None:
    """A batch that cannot be appended (its topic was deleted meanwhile)
    fails every waiter with a typed error, and flush() reports it."""
    p = ottla.aio.Producer(data_dir, linger_ms=60_000)
    await p.send("t", b"first")
    fut = p.send("t", b"lost")
    many = p.send_many("t", [b"a", b"b"])
    ottla.Admin(data_dir).delete_topic("t")
    with pytest.raises(ottla.OttlaError):
        await fut
    with pytest.raises(ottla.OttlaError):
        await many
    assert fut.done() and isinstance(fut.exception(), ottla.OttlaError)
    with pytest.raises(ottla.OttlaError):
        fut.result()
    await p.close()


def test_await_needs_a_running_loop(data_dir: Path) -> None:
    p = ottla.aio.Producer(data_dir)
    fut = p.send("t", b"x")
    with pytest.raises(RuntimeError):
        fut.__await__()  # no running loop in this thread
    asyncio.run(p.close())
    assert fut.done()


@aio
async def test_cancelled_sends_under_load(data_dir: Path) -> None:
    """Sender tasks are cancelled at random points while others keep
    sending. Afterwards every acknowledged record is in the log at its
    offset, no record appears twice, and each cancelled send's own future
    tells whether (and where) it was written."""
    rnd = random.Random(7)
    p = ottla.aio.Producer(data_dir, linger_ms=2, batch_size=4096, num_partitions=2)
    acked: dict[bytes, tuple[int, int]] = {}
    futures: dict[bytes, ottla.aio.SendFuture] = {}

    async def sender(w: int) -> None:
        for i in range(400):
            rid = b"%d-%d" % (w, i)
            fut = p.send("t", rid, key=b"%d" % (i % 5))
            futures[rid] = fut
            md = await fut
            acked[rid] = (md.partition, md.offset)

    tasks = [asyncio.create_task(sender(w)) for w in range(20)]
    cancelled = 0
    for _ in range(60):
        await asyncio.sleep(rnd.random() * 0.003)
        live = [t for t in tasks if not t.done()]
        if not live:
            break
        rnd.choice(live).cancel()
        cancelled += 1
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    await p.flush()
    assert cancelled > 0
    log = read_all(data_dir, "t", 2)
    where = {}
    for r in log:
        assert r.value not in where, f"duplicate {r.value!r}"
        where[r.value] = (r.partition, r.offset)
    for rid, pos in acked.items():
        assert where[rid] == pos
    # Every send that returned a future is in the log exactly where its
    # future says, acknowledged or not.
    assert set(where) == set(futures)
    for rid, fut in futures.items():
        assert fut.done()
        md = fut.result()
        assert where[rid] == (md.partition, md.offset)
    await p.close()


# --------------------------------------------------------------------------
# Consumer
# --------------------------------------------------------------------------


def produce(path: Path, topic: str, n: int, partition: int = 0, prefix: str = "v") -> None:
    with ottla.Producer(path) as p:
        p.send_many(
            topic, [b"%s%d" % (prefix.encode(), i) for i in range(n)], partition=partition
        ).wait(10)


@aio
async def test_getone_getmany_and_iteration(data_dir: Path) -> None:
    produce(data_dir, "t", 10)
    async with ottla.aio.Consumer(
        data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=200, max_poll_records=4
    ) as c:
        r0 = await c.getone()
        assert (r0.topic, r0.partition, r0.offset, r0.value) == ("t", 0, 0, b"v0")
        got = await c.getmany(timeout_ms=1000)
        assert list(got) == [TP("t", 0)]
        assert [r.offset for r in got[TP("t", 0)]] == [1, 2, 3, 4]  # max_poll_records
        got = await c.getmany(max_records=2)
        assert [r.offset for r in got[TP("t", 0)]] == [5, 6]
        rest = [r.offset async for r in c]  # ends after 200 ms idle
        assert rest == [7, 8, 9]
        assert await c.getmany(timeout_ms=50) == {}
        assert await c.getmany() == {}
        with pytest.raises(ValueError):
            await c.getmany(timeout_ms=-1)
        assert "ottla.aio.Consumer" in repr(c)
        assert c.subscription() == {"t"}
        assert c.assignment() == {TP("t", 0)}
    assert c.closed


@aio
async def test_getmany_waits_for_a_record_sent_later(data_dir: Path) -> None:
    async with (
        ottla.aio.Producer(data_dir) as p,
        ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest") as c,
    ):
        p.partitions_for("t")

        async def later() -> None:
            await asyncio.sleep(0.1)
            await p.send("t", b"late")

        task = asyncio.create_task(later())
        got = await c.getmany(timeout_ms=10_000)
        assert [r.value for r in got[TP("t", 0)]] == [b"late"]
        await task
        task = asyncio.create_task(later())
        r = await asyncio.wait_for(c.getone(), 10)
        assert r.value == b"late"
        await task
        await wait_for_zero(c)


@aio
async def test_wakes_on_append_from_another_process(data_dir: Path, spawn: Spawn) -> None:
    async with ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        assert await c.getmany(timeout_ms=10) == {}
        spawn(
            "import sys, time, ottla\n"
            "time.sleep(0.2)\n"
            "with ottla.Producer(sys.argv[1]) as p:\n"
            "    p.send('t', b'from-child').get(10)\n",
            data_dir,
        )
        r = await asyncio.wait_for(c.getone(), 30)
        assert r.value == b"from-child"


@aio
async def test_partition_filters(data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", 2)
    produce(data_dir, "t", 3, partition=0, prefix="a")
    produce(data_dir, "t", 3, partition=1, prefix="b")
    async with ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest") as c:
        c.pause(TP("t", 0))
        got = await c.getmany(TP("t", 1), timeout_ms=1000)
        assert list(got) == [TP("t", 1)]
        assert c.paused() == {TP("t", 0)}  # a filter keeps the caller's pauses
        c.resume(TP("t", 0))
        r = await c.getone(("t", 0))
        assert r.value == b"a0"
        got = await c.getmany(TP("t", 0), timeout_ms=1000)
        assert [r.value for r in got[TP("t", 0)]] == [b"a1", b"a2"]
        assert c.paused() == set()
        with pytest.raises(ValueError):
            await c.getmany(TP("other", 0))


@aio
async def test_seek_positions_commits_and_offsets(data_dir: Path) -> None:
    produce(data_dir, "t", 10)
    tp = TP("t", 0)
    async with ottla.aio.Consumer(
        data_dir, "t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False
    ) as c:
        assert c.group_id == "g"
        assert await c.position(tp) == 0
        await c.getmany(max_records=4)
        assert await c.position(tp) == 4
        assert await c.committed(tp) is None
        await c.commit()
        assert await c.committed(tp) == 4
        await c.commit({tp: 6})
        assert await c.committed(tp) == 6
        await c.commit({tp: ottla.OffsetAndMetadata(7, "meta")})
        assert await c.committed(tp) == 7
        c.seek(tp, 2)
        assert (await c.getone()).offset == 2
        await c.seek_to_end()
        assert await c.position(tp) == 10
        await c.seek_to_beginning(tp)
        assert await c.position(tp) == 0
        await c.seek_to_committed()
        assert await c.position(tp) == 7
        assert await c.beginning_offsets([tp]) == {tp: 0}
        assert await c.end_offsets([tp]) == {tp: 10}
        ts = (await c.getone()).timestamp
        found = await c.offsets_for_times({tp: ts})
        at = found[tp]
        assert at is not None and at.offset == 0
        assert "t" in await c.topics()
        assert c.partitions_for_topic("t") == {0}
    # A new member of the group resumes from the commit.
    async with ottla.aio.Consumer(data_dir, "t", group_id="g") as c2:
        assert (await c2.getone()).offset == 7


@aio
async def test_assign_subscribe_and_deserializers(data_dir: Path) -> None:
    produce(data_dir, "t", 3)
    c = ottla.aio.Consumer(
        data_dir, auto_offset_reset="earliest", value_deserializer=lambda b: b.decode().upper()
    )
    c.assign([TP("t", 0)])
    assert (await c.getone()).value == "V0"
    c.unsubscribe()
    c.subscribe(["t"])
    assert c.subscription() == {"t"}
    await c.close()
    with pytest.raises(ValueError):
        ottla.aio.Consumer(data_dir, consumer_timeout_ms=-1)
    with pytest.raises(ValueError):
        ottla.aio.Consumer(data_dir, auto_offset_reset="sometime")  # type: ignore[arg-type]


@aio
async def test_cancelled_getmany_loses_nothing(data_dir: Path) -> None:
    """A consumer task whose getmany/getone calls are cancelled at random
    points while a producer task writes still sees every record exactly
    once, in order, and no wait is left running."""
    rnd = random.Random(11)
    n = 20_000
    async with (
        ottla.aio.Producer(data_dir, linger_ms=1) as p,
        ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest") as c,
    ):
        p.partitions_for("t")

        async def produce_slowly() -> None:
            for i in range(0, n, 500):
                p.send_many("t", [b"%d" % j for j in range(i, i + 500)])
                await asyncio.sleep(rnd.random() * 0.004)
            await p.flush()

        seen = []

        async def iterate(k: int) -> dict[TP, list[ottla.Record]]:
            # Records go straight to `seen`: whatever the iteration handed
            # out before a cancellation counts as handed out.
            async for r in c:
                seen.append(int(r.value))
                k -= 1
                if k == 0:
                    break
            return {}

        prod = asyncio.create_task(produce_slowly())
        cancelled = 0
        deadline = time.monotonic() + 60
        while len(seen) < n:
            assert time.monotonic() < deadline
            pick = rnd.random()
            if pick < 0.4:
                coro: Coroutine[Any, Any, dict[TP, list[ottla.Record]] | ottla.Record]
                coro = c.getmany(timeout_ms=50, max_records=rnd.randint(1, 700))
            elif pick < 0.7:
                coro = c.getone()
            else:
                coro = iterate(rnd.randint(1, 300))
            task = asyncio.create_task(coro)
            # Cancel after zero, one or a random number of loop iterations:
            # at the task's first yield, inside a wait, or not at all.
            when = rnd.random()
            if when < 0.3:
                await asyncio.sleep(0)
            elif when < 0.6:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(rnd.random() * 0.002)
            if not task.done():
                task.cancel()
            try:
                got = await task
            except asyncio.CancelledError:
                cancelled += 1
                continue
            if isinstance(got, dict):
                for recs in got.values():
                    seen.extend(int(r.value) for r in recs)
            else:
                assert isinstance(got, ottla.Record)
                seen.append(int(got.value))
        await prod
        assert cancelled > 0
        assert seen == list(range(n))
        assert await c.position(TP("t", 0)) == n
        await wait_for_zero(c)


@aio
async def test_close_wakes_every_waiter(data_dir: Path) -> None:
    c = ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest")

    async def iterate() -> list[ottla.Record]:
        return [r async for r in c]

    getone = asyncio.create_task(c.getone())
    getmany = asyncio.create_task(c.getmany(timeout_ms=60_000))
    it = asyncio.create_task(iterate())
    await asyncio.sleep(0.1)
    assert c.waiting == 3
    await c.close()
    _done, pending = await asyncio.wait([getone, getmany, it], timeout=10)
    assert not pending
    with pytest.raises(ottla.ClosedError):
        getone.result()
    with pytest.raises(ottla.ClosedError):
        getmany.result()
    assert it.result() == []
    await wait_for_zero(c)
    with pytest.raises(ottla.ClosedError):
        await c.getmany()
    assert [r async for r in c] == []
    await c.close()


@aio
async def test_producer_and_consumer_tasks_exchange_a_million(data_dir: Path) -> None:
    n = 1_000_000
    chunk = 10_000
    value = b"x" * 20

    async def produce_all(p: ottla.aio.Producer) -> None:
        for _i in range(0, n, chunk):
            await p.send_many("t", [value] * chunk)

    async with (
        ottla.aio.Producer(data_dir) as p,
        ottla.aio.Consumer(data_dir, "t", auto_offset_reset="earliest") as c,
    ):
        p.partitions_for("t")
        prod = asyncio.create_task(produce_all(p))
        got = 0
        expect = 0
        while got < n:
            batch = await asyncio.wait_for(c.getmany(timeout_ms=1000, max_records=50_000), 30)
            for recs in batch.values():
                assert recs[0].offset == expect
                expect = recs[-1].offset + 1
                got += len(recs)
        await asyncio.wait_for(prod, 30)
        assert got == n
        assert await c.getmany(timeout_ms=10) == {}


# --------------------------------------------------------------------------
# Loops and threads
# --------------------------------------------------------------------------


def test_two_loops_in_two_threads(data_dir: Path) -> None:
    """One producer awaited from two loops at once, and a consumer per loop."""
    ottla.Admin(data_dir).create_topic("t", 2)
    shared = ottla.aio.Producer(data_dir, linger_ms=60_000)
    results: dict[int, list[int]] = {}
    read_counts: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(part: int) -> None:
        async def main() -> None:
            mds = await asyncio.gather(
                *(shared.send("t", b"%d" % i, partition=part) for i in range(500))
            )
            results[part] = sorted(m.offset for m in mds)
            async with ottla.aio.Consumer(data_dir, auto_offset_reset="earliest") as c:
                c.assign([TP("t", part)])
                vals: list[bytes] = []
                while len(vals) < 500:
                    got = await asyncio.wait_for(c.getmany(timeout_ms=1000), 10)
                    vals.extend(r.value for recs in got.values() for r in recs)
                read_counts[part] = len(vals)

        try:
            asyncio.run(main())
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert results[0] == results[1] == list(range(500))
    assert read_counts[0] == read_counts[1] == 500
    asyncio.run(shared.close())


def test_in_an_already_running_loop(data_dir: Path) -> None:
    """As in Jupyter: the loop already runs (here in another thread); code is
    handed to it, nothing calls asyncio.run."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:

        async def cell() -> list[bytes]:
            async with ottla.aio.Producer(data_dir) as p:
                await p.send_many("t", [b"a", b"b"])
                await p.send("t", b"c")
            async with ottla.aio.Consumer(
                data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=100
            ) as c:
                return [r.value async for r in c]

        fut = asyncio.run_coroutine_threadsafe(cell(), loop)
        assert fut.result(30) == [b"a", b"b", b"c"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


@aio
async def test_a_backlog_does_not_starve_other_tasks(data_dir: Path) -> None:
    """Iterating (or getmany-ing) a deep backlog yields to the loop now and
    then, so another task in the same loop keeps running."""
    produce(data_dir, "t", 5000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    async with ottla.aio.Consumer(
        data_dir, "t", auto_offset_reset="earliest", consumer_timeout_ms=100
    ) as c:
        before = ticks
        n = 0
        async for _r in c:
            n += 1
            if n == 5000:
                break
        assert ticks - before >= 5000 // 256 - 1
        c.seek(TP("t", 0), 0)
        before = ticks
        for _ in range(10):
            await c.getmany(max_records=10)
        assert ticks - before >= 9
    t.cancel()


def test_loop_after_loop_with_waiters_left_behind(data_dir: Path) -> None:
    """A loop that ends with a cancelled await still registered on a batch
    must not confuse the next loop (which may well get the same address)."""
    p = ottla.aio.Producer(data_dir, linger_ms=60_000)

    async def abandon() -> None:
        t = asyncio.ensure_future(p.send("t", b"left"))
        await asyncio.sleep(0)
        t.cancel()

    async def use() -> int:
        md = await asyncio.wait_for(p.send("t", b"used"), 10)
        return md.offset

    for _i in range(5):
        # The abandoned waiter stays on its batch until that batch is
        # appended (by the next loop's await below).
        loop = asyncio.new_event_loop()
        loop.run_until_complete(abandon())
        loop.close()
        del loop
        assert asyncio.run(use()) >= 0
    asyncio.run(p.close())


@pytest.mark.directory_only(
    "fsync is the directory's durability (with bootstrap_servers: InvalidConfigError naming it)"
)
@aio
async def test_sealed_batches_keep_send_order(data_dir: Path) -> None:
    """Every send seals a batch (values over batch_size) and fsyncs: appends
    run in the background, several at once, yet the log keeps send order."""
    value = b"v" * 20_000
    async with ottla.aio.Producer(data_dir, batch_size=1024, fsync="always") as p:
        futs = [p.send("t", b"%04d" % i + value) for i in range(60)]
        await p.flush()
        assert [f.result().offset for f in futs] == list(range(60))
    assert [r.value[:4] for r in read_all(data_dir, "t")] == [b"%04d" % i for i in range(60)]


@aio
async def test_record_waiter(data_dir: Path) -> None:
    from ottla._core import RecordWaiter

    w = RecordWaiter(data_dir)
    seen = w.seq()
    assert await w.wait(seen, 10) is False  # timed out
    assert await w.wait(seen + 1, None) is True  # not the current sequence
    with pytest.raises(ValueError):
        w.wait(seen, -1)
    task = asyncio.ensure_future(w.wait(seen, None))
    await asyncio.sleep(0.05)
    assert w.waiting == 1
    ottla.Producer(data_dir).send("t", b"x").get(10)
    assert await asyncio.wait_for(task, 10) is True
    task = asyncio.ensure_future(w.wait(w.seq(), None))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while w.waiting and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert w.waiting == 0
    task = asyncio.ensure_future(w.wait(w.seq(), None))
    await asyncio.sleep(0.05)
    w.close()
    assert await asyncio.wait_for(task, 10) is False
    assert w.closed and "closed" in repr(w)
    assert await w.wait(w.seq(), None) is False  # closed: returns at once
