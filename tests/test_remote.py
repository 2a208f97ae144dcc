"""What only the cluster form has (issue 16): the address forms, settings a
cluster cannot have, errors that come back from the broker, the optional
extra, and confluent-kafka imported only when a cluster is asked for. The
shared behaviour is the API suite's: tests/conftest.py runs it against a
broker too."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

import ottla
import ottla.aio

pytest.importorskip("confluent_kafka")


def test_address_forms(broker: ottla.Broker) -> None:
    servers = broker.bootstrap_servers
    with ottla.Producer(f"kafka://{servers}") as p:
        assert isinstance(p, ottla.Producer) and p.path == f"kafka://{servers}"
        assert p.send("forms", b"a").get(10).offset == 0
    with ottla.Producer(bootstrap_servers=servers) as p:
        assert p.send("forms", b"b").get(10).offset == 1
    # Consumer: every positional argument is a topic with bootstrap_servers=.
    with ottla.Consumer(
        "forms", bootstrap_servers=servers, auto_offset_reset="earliest", consumer_timeout_ms=0
    ) as c:
        assert isinstance(c, ottla.Consumer)
        assert [r.value for r in c] == [b"a", b"b"]
    with ottla.Consumer(
        f"kafka://{servers}", "forms", auto_offset_reset="earliest", consumer_timeout_ms=0
    ) as c:
        assert [r.offset for r in c] == [0, 1]
    admin = ottla.Admin(f"kafka://{servers}")
    assert isinstance(admin, ottla.Admin) and "forms" in admin.list_topics()
    with pytest.raises(TypeError, match="not both"):
        ottla.Producer(broker.path, bootstrap_servers=servers)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="not both"):
        ottla.Admin(broker.path, bootstrap_servers=servers)
    with pytest.raises(ValueError, match="kafka://HOST:PORT"):
        ottla.Producer("kafka://")
    # A directory path still means the directory.
    with ottla.Producer(broker.path) as p:
        assert not p.path.startswith("kafka://")


def test_settings_only_a_directory_has_are_refused_by_name(broker: ottla.Broker) -> None:
    servers = broker.bootstrap_servers
    for kw in ({"fsync": "always"}, {"fsync_interval_ms": 10}, {"retention_check_interval_ms": 1}):
        with pytest.raises(ottla.InvalidConfigError, match=next(iter(kw))):
            ottla.Producer(bootstrap_servers=servers, **kw)
    with pytest.raises(ottla.InvalidConfigError, match="busy_poll_us"):
        ottla.Consumer("t", bootstrap_servers=servers, busy_poll_us=10)
    with pytest.raises(TypeError, match="no_such_option"):
        ottla.Producer(bootstrap_servers=servers, no_such_option=1)
    admin = ottla.Admin(bootstrap_servers=servers)
    admin.create_topic("c", config={"cleanup.policy": "compact"})
    with pytest.raises(ottla.IllegalStateError, match="compact"):
        admin.compact("c")
    with pytest.raises(ottla.IllegalStateError, match="retention"):
        admin.enforce_retention("c")


def test_librdkafka_settings_pass_through(broker: ottla.Broker) -> None:
    servers = broker.bootstrap_servers
    # Kafka's dotted names and kafka-python's underscored ones, security included.
    dotted: dict[str, Any] = {"message.timeout.ms": 20_000}
    with ottla.Producer(
        bootstrap_servers=servers,
        compression_type="zstd",
        security_protocol="PLAINTEXT",
        **dotted,
    ) as p:
        assert p.send("pass", b"z" * 1000).get(10).offset == 0
    with pytest.raises(ottla.InvalidConfigError):
        ottla.Producer(bootstrap_servers=servers, compression_type="rot13")


def test_broker_errors_arrive_as_ottla_errors(broker: ottla.Broker) -> None:
    servers = broker.bootstrap_servers
    admin = ottla.Admin(bootstrap_servers=servers)
    admin.create_topic("small", config={"max.message.bytes": 1000})
    with pytest.raises(ottla.TopicAlreadyExistsError):
        admin.create_topic("small")
    with pytest.raises(ottla.UnknownTopicOrPartitionError):
        admin.describe_topic("missing")
    with ottla.Producer(bootstrap_servers=servers) as p:
        # The broker refuses it: the future raises, and so does flush().
        fut = p.send("small", b"x" * 2000)
        with pytest.raises(ottla.RecordTooLargeError) as info:
            fut.get(10)
        assert info.value.kafka_error.name() == "MSG_SIZE_TOO_LARGE"  # type: ignore[attr-defined]
        assert p.send("small", b"y" * 100).get(10).offset == 0


def test_an_assigned_partition_unknown_for_a_moment_is_asked_again(broker: ottla.Broker) -> None:
    """While leadership moves, librdkafka may not know an assigned partition
    for a moment (``_UNKNOWN_PARTITION`` from its watermark lookup): the
    consumer asks again, as Kafka's clients retry
    UNKNOWN_TOPIC_OR_PARTITION (test_remote_cluster.py's kill -9 test met
    it). A partition that is not assigned is an error at once."""
    ck = pytest.importorskip("confluent_kafka")
    servers = broker.bootstrap_servers
    with ottla.Producer(bootstrap_servers=servers) as p:
        p.send("moving", b"x").get(10)

    class Forgetful:
        """librdkafka's consumer, whose lookups fail twice as if it did not
        know the partition."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.failures = 2

        def get_watermark_offsets(self, tp: Any, *args: Any, **kwargs: Any) -> Any:
            if not kwargs.get("cached") and self.failures > 0:
                self.failures -= 1
                raise ck.KafkaException(ck.KafkaError(ck.KafkaError._UNKNOWN_PARTITION))
            return self._inner.get_watermark_offsets(tp, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    with ottla.Consumer(bootstrap_servers=servers, auto_offset_reset="earliest") as c:
        tp = ottla.TopicPartition("moving", 0)
        c.assign([tp])
        forgetful = Forgetful(cast(Any, c)._c)
        cast(Any, c)._c = forgetful
        assert cast(Any, c)._watermarks(("moving", 0)) == (0, 1)
        assert forgetful.failures == 0
        forgetful.failures = 1
        with pytest.raises(ottla.UnknownTopicOrPartitionError):
            cast(Any, c)._watermarks(("moving", 1))  # not assigned (nor there)


def test_send_future_is_its_own_delivery_callback(broker: ottla.Broker) -> None:
    """A remote ``send()``'s future is ottla's own type, made without a
    Python frame, and librdkafka calls it with the delivery report:
    acknowledgements, callbacks added before and after, errors with
    errbacks, and ``flush()`` not raising an error the caller saw."""
    from ottla import _core

    servers = broker.bootstrap_servers
    ottla.Admin(bootstrap_servers=servers).create_topic("futs", config={"max.message.bytes": 1000})
    with ottla.Producer(bootstrap_servers=servers, linger_ms=50) as p:
        f: Any = p.send("futs", b"a")
        assert type(f) is _core.RemoteFutureRecordMetadata
        seen: list[ottla.RecordMetadata] = []
        assert f.add_callback(seen.append) is f
        md = f.get(10)
        assert (md.topic, md.partition, md.offset) == ("futs", 0, 0)
        assert seen == [md] and f.get(0) is md and f.result(0) is md
        assert f.done() and f.is_done and f.succeeded() and not f.failed()
        assert f.exception is None
        late: list[ottla.RecordMetadata] = []
        f.add_callback(late.append)
        assert late == [md]
        errs: list[BaseException] = []
        bad = p.send("futs", b"x" * 2000).add_errback(errs.append)
        with pytest.raises(ottla.RecordTooLargeError):
            bad.get(10)
        assert len(errs) == 1 and errs[0] is bad.exception and bad.failed() and bad.done()
        p.flush(10)  # the error reached the caller: not raised again
        unseen = p.send("futs", b"y" * 2000)
        with pytest.raises(ottla.RecordTooLargeError):
            p.flush(10)
        assert unseen.failed()


def test_a_dropped_remote_producer_is_freed_at_once(broker: ottla.Broker) -> None:
    """``send``'s extension objects make no reference cycle through the
    producer: dropped unclosed, it is freed by its reference count (its
    background thread stops), not left to the cyclic GC; and
    ``Producer(...).send(...)`` keeps it for the call, as a bound method."""
    import gc
    import weakref

    servers = broker.bootstrap_servers
    p = ottla.Producer(bootstrap_servers=servers)
    assert p.send("dropped", b"a").get(10).offset == 0
    for _ in range(3):
        p.send("dropped", b"b")  # the common case, in the extension
    p.flush(10)
    assert p.send.__self__ is p  # type: ignore[attr-defined]
    ref = weakref.ref(p)
    gc.disable()
    try:
        del p
        assert ref() is None
    finally:
        gc.enable()
    assert ottla.Producer(bootstrap_servers=servers).send("dropped", b"c").get(10).offset == 4


def test_group_offsets_go_through_the_clusters_coordinator(broker: ottla.Broker) -> None:
    servers = broker.bootstrap_servers
    with ottla.Producer(bootstrap_servers=servers) as p:
        p.send_many("g", [b"a", b"b", b"c"]).get(10)
    with ottla.Consumer(
        "g", bootstrap_servers=servers, group_id="billing", auto_offset_reset="earliest"
    ) as c:
        assert len(c.poll(timeout_ms=5000, max_records=2)[ottla.TopicPartition("g", 0)]) == 2
        c.commit()
    # The broker keeps the group: a directory Admin on its data sees it too.
    local = ottla.Admin(broker.path).group_offsets("billing")
    assert local == {("g", 0): {"committed": 2, "end": 3, "lag": 1}}
    remote = ottla.Admin(bootstrap_servers=servers).describe_group("billing")
    assert remote.state == "Empty" and remote.lag == 1


def test_core_import_does_not_load_confluent_kafka_and_says_how_to_get_it(
    tmp_path: Path,
) -> None:
    code = (
        "import sys, ottla, ottla.aio, ottla.admin\n"
        "assert 'confluent_kafka' not in sys.modules\n"
        "try:\n"
        "    ottla.Producer(bootstrap_servers='127.0.0.1:9')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    fake = tmp_path / "shadow" / "confluent_kafka"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no confluent-kafka here')\n")
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(fake.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'ottla[kafka]'" in done.stdout


def test_aio_forms(broker: ottla.Broker) -> None:
    import asyncio

    async def main() -> list[bytes]:
        async with ottla.aio.Producer(bootstrap_servers=broker.bootstrap_servers) as p:
            assert isinstance(p, ottla.aio.Producer)
            await p.send_many("aio", [b"a", b"b"])
        async with ottla.aio.Consumer(
            "aio",
            bootstrap_servers=broker.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=0,
        ) as c:
            assert isinstance(c, ottla.aio.Consumer)
            return [r.value async for r in c]

    assert asyncio.run(main()) == [b"a", b"b"]


class _LateFlush:
    """librdkafka's Producer with a flush that returns a while after its
    queue was empty: the window in which a record sent meanwhile was left to
    wait out linger_ms (the remote aio producer's kick saw a flush still
    running and did not start another)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def flush(self, timeout: float = -1) -> int:
        left: int = self._inner.flush(timeout)
        time.sleep(0.5)
        return left


def test_aio_send_awaited_while_a_flush_returns_is_sent_now(broker: ottla.Broker) -> None:
    import asyncio

    async def main() -> list[float]:
        async with ottla.aio.Producer(
            bootstrap_servers=broker.bootstrap_servers, linger_ms=60_000
        ) as p:
            sync = cast(Any, p)._sync
            sync._p = _LateFlush(sync._p)
            took = []
            for i in range(3):
                start = time.monotonic()
                md = await asyncio.wait_for(p.send("late", b"%d" % i), 30)
                took.append(time.monotonic() - start)
                assert md.offset == i
            return took

    took = asyncio.run(main())
    # Each send waits for at most the flush before it (0.5 s late) and its
    # own, not for linger_ms (60 s, past wait_for's 30 s).
    assert max(took) < 20, took


class _FlushRaisingOnce:
    """librdkafka's Producer with a first flush that, after its work, says
    so (``flushed``), waits for ``go`` and then passes on a delivery
    callback's exception (as librdkafka's flush does)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.flushed = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def flush(self, timeout: float = -1) -> int:
        left: int = self._inner.flush(timeout)
        if not self.flushed.is_set():
            self.flushed.set()
            self.go.wait(30)
            raise RuntimeError("Event loop is closed")  # what a dead loop's waker raised
        return left


def test_aio_kick_goes_on_after_a_callbacks_error_in_its_flush(broker: ottla.Broker) -> None:
    """A delivery callback that raises inside the kick's flush (a waiter of
    an event loop closed since) does not stop the kicking: records awaited
    later are still sent now, not after linger_ms (the first CI flake of
    test_aio.py::test_loop_after_loop_with_waiters_left_behind)."""
    import asyncio

    async def main() -> list[int]:
        async with ottla.aio.Producer(
            bootstrap_servers=broker.bootstrap_servers, linger_ms=60_000
        ) as p:
            sync = cast(Any, p)._sync
            raising = _FlushRaisingOnce(sync._p)
            sync._p = raising
            loop = asyncio.get_running_loop()
            # The kick's flush sends it, then stops before returning.
            md0 = await asyncio.wait_for(p.send("raising", b"0"), 30)
            assert await loop.run_in_executor(None, raising.flushed.wait, 30)
            # Sent and awaited after that flush's work, before it returns
            # (raising): the worker must flush again after the error.
            second = asyncio.ensure_future(p.send("raising", b"1"))
            await asyncio.sleep(0.2)
            raising.go.set()
            md1 = await asyncio.wait_for(second, 30)
            return [md0.offset, md1.offset]

    assert asyncio.run(main()) == [0, 1]


def test_aio_waker_of_a_closed_loop_is_quiet() -> None:
    """The callback that wakes a waiter's loop does nothing once that loop
    is closed (it runs on librdkafka's thread, where raising would reach
    whatever flush or poll served the delivery report)."""
    import asyncio

    from ottla.remote import aio as remote_aio

    class Pending:
        def __init__(self) -> None:
            self.callbacks: list[Any] = []

        def done(self) -> bool:
            return False

        def add_callback(self, f: Any) -> Any:
            self.callbacks.append(f)
            return self

        def add_errback(self, f: Any) -> Any:
            return self

    loop = asyncio.new_event_loop()
    future: asyncio.Future[None] = loop.create_future()
    sync = Pending()
    remote_aio._wake_when(loop, future, [sync])  # type: ignore[list-item]
    loop.close()
    sync.callbacks[0](None)  # no RuntimeError
    assert not future.done()


# ---- closing: librdkafka's close() from its own rebalance callback crashed
# (on_assign: SIGSEGV) or hung (on_revoke); a close() from another thread
# waited for that thread's whole poll. Run in a child: the crash would take
# the test process with it.

CLOSE_IN_CALLBACK = """
import sys, ottla
servers, which = sys.argv[1], sys.argv[2]
with ottla.Producer(bootstrap_servers=servers, num_partitions=2) as p:
    p.send("cb", b"x").get(30)
c = ottla.Consumer(bootstrap_servers=servers, group_id="g-" + which, auto_offset_reset="earliest")
calls = []

def close_here(consumer, tps):
    calls.append(tps)
    consumer.close()

if which == "assign":
    c.subscribe(["cb"], on_assign=close_here)
    got = c.poll(timeout_ms=20_000)
else:
    c.subscribe(["cb"], on_revoke=close_here)
    while not c.assignment():
        c.poll(timeout_ms=500)
    c.unsubscribe()
    got = c.poll(timeout_ms=2_000)
assert calls and c.closed, (calls, c.closed)
try:
    c.poll(timeout_ms=0)
except ottla.ClosedError:
    print("closed", got, flush=True)
c.close()
print("done", flush=True)
"""


@pytest.mark.parametrize("which", ["assign", "revoke"])
def test_close_in_a_rebalance_callback(broker: ottla.Broker, spawn: Any, which: str) -> None:
    child = spawn(CLOSE_IN_CALLBACK, broker.bootstrap_servers, which)
    rc = child.wait(60)
    assert rc == 0, (rc, child.lines(), child.stderr[-3000:])
    assert child.lines()[-1] == "done"
    assert child.lines()[0].startswith("closed")


def test_close_from_another_thread_ends_its_poll(broker: ottla.Broker) -> None:
    import threading

    with ottla.Producer(bootstrap_servers=broker.bootstrap_servers) as p:
        p.send("th", b"x").get(30)
    c = ottla.Consumer(
        "th", bootstrap_servers=broker.bootstrap_servers, group_id="g", auto_offset_reset="earliest"
    )
    assert len(c.poll(timeout_ms=20_000, max_records=1)) == 1
    outcome: list[object] = []
    polling = threading.Event()

    def reader() -> None:
        polling.set()
        try:
            outcome.append(c.poll(timeout_ms=120_000))
        except ottla.ClosedError as e:
            outcome.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert polling.wait(10)
    c.close()
    t.join(60)  # not 120 s: the poll ends with the close
    assert not t.is_alive()
    assert outcome and isinstance(outcome[0], (ottla.ClosedError, dict))
