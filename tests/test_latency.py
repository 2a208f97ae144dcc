"""The consumer's wait for new records: busy_poll_us (an adaptive spin before
the futex sleep) and its wake-ups from other threads and processes.

No timing asserts: these check that records arrive with the spin on and
off, that bad settings are refused, and a resource bound (an idle consumer's
CPU time stays well below its wall time)."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ottla
from helpers import Spawn

TP = ottla.TopicPartition


def test_busy_poll_us_accepts_its_range(data_dir: Path) -> None:
    for v in (0, 1, 50, 5000):
        with ottla.Consumer(data_dir, "t", busy_poll_us=v) as c:
            assert c.poll(timeout_ms=0) == {}


@pytest.mark.parametrize("bad", [-1, 5001, 10**12])
def test_busy_poll_us_out_of_range_is_a_value_error(data_dir: Path, bad: int) -> None:
    with pytest.raises(ValueError, match="busy_poll_us"):
        ottla.Consumer(data_dir, "t", busy_poll_us=bad)


@pytest.mark.parametrize("bad", [1.5, "50", None])
def test_busy_poll_us_must_be_an_int(data_dir: Path, bad: Any) -> None:
    with pytest.raises(TypeError):
        ottla.Consumer(data_dir, "t", busy_poll_us=bad)


def test_aio_consumer_takes_busy_poll_us(data_dir: Path) -> None:
    import asyncio

    import ottla.aio

    async def main() -> dict[ottla.TopicPartition, list[ottla.Record]]:
        async with ottla.aio.Consumer(data_dir, "t", busy_poll_us=0) as c:
            return await c.getmany(timeout_ms=0)

    assert asyncio.run(main()) == {}
    with pytest.raises(ValueError, match="busy_poll_us"):
        ottla.aio.Consumer(data_dir, "t", busy_poll_us=-5)


def _gaps() -> Iterator[float]:
    # Back to back, a few microseconds, then long enough that the budget
    # decays: the spin is taken, missed and given up on while records flow.
    for i in range(300):
        if i % 100 < 50:
            yield 0.0
        elif i % 100 < 90:
            yield 0.00002
        else:
            yield 0.01


@pytest.mark.parametrize("busy_poll_us", [0, 50, 5000])
def test_wakes_on_append_from_another_thread(data_dir: Path, busy_poll_us: int) -> None:
    ottla.Admin(data_dir).create_topic("t", 1)
    n = 300
    with ottla.Consumer(
        data_dir, "t", auto_offset_reset="earliest", busy_poll_us=busy_poll_us
    ) as c:
        assert c.position(TP("t", 0)) == 0
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                with ottla.Producer(data_dir, linger_ms=0) as p:
                    for i, gap in enumerate(_gaps()):
                        if gap:
                            time.sleep(gap)
                        p.send("t", str(i).encode())
            except BaseException as e:  # reported by the test thread
                errors.append(e)

        th = threading.Thread(target=produce)
        th.start()
        got: list[int] = []
        try:
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                for recs in c.poll(timeout_ms=2000).values():
                    got.extend(int(r.value) for r in recs)
        finally:
            th.join(30)
        assert not errors
        assert got == list(range(n))


@pytest.mark.parametrize("busy_poll_us", [0, 50])
def test_wakes_on_append_from_another_process(
    data_dir: Path, spawn: Spawn, busy_poll_us: int
) -> None:
    ottla.Admin(data_dir).create_topic("t", 1)
    with ottla.Consumer(
        data_dir,
        "t",
        auto_offset_reset="earliest",
        busy_poll_us=busy_poll_us,
        consumer_timeout_ms=10_000,
    ) as c:
        assert c.position(TP("t", 0)) == 0
        child = spawn(
            """
            import sys, time, ottla
            with ottla.Producer(sys.argv[1], linger_ms=0) as p:
                for i in range(200):
                    if i % 50 == 49:
                        time.sleep(0.01)
                    p.send("t", str(i).encode())
            print("done")
            """,
            data_dir,
        )
        got: list[int] = []
        for r in c:  # iteration waits; ends after 10 s idle at worst
            got.append(int(r.value))
            if len(got) == 200:
                break
        assert child.wait(30) == 0, child.stderr
        assert got == list(range(200))


@pytest.mark.parametrize("busy_poll_us", [None, 5000])
def test_idle_consumer_sleeps(data_dir: Path, busy_poll_us: int | None) -> None:
    """An idle poll sleeps on the futex: little CPU even right after a
    stream that grew the spin budget (it decays once waits time out)."""
    ottla.Admin(data_dir).create_topic("t", 1)
    c = (
        ottla.Consumer(data_dir, "t", auto_offset_reset="earliest")  # the default
        if busy_poll_us is None
        else ottla.Consumer(data_dir, "t", auto_offset_reset="earliest", busy_poll_us=busy_poll_us)
    )
    with c:
        assert c.position(TP("t", 0)) == 0

        def produce() -> None:
            with ottla.Producer(data_dir, linger_ms=0) as p:
                for i in range(2000):
                    p.send("t", b"x")
                    if i % 4 == 0:
                        time.sleep(0.00001)

        th = threading.Thread(target=produce)
        th.start()
        got = 0
        deadline = time.monotonic() + 30
        while got < 2000 and time.monotonic() < deadline:
            got += sum(len(v) for v in c.poll(timeout_ms=1000).values())
        th.join(30)
        assert got == 2000
        # poll() waits on this thread, so thread CPU time covers any spin.
        cpu0, wall0 = time.thread_time(), time.monotonic()
        assert c.poll(timeout_ms=1000) == {}
        cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
        assert wall >= 0.9
        assert cpu < 0.3 * wall, (cpu, wall)
