"""The pytest plugin (``ottla.pytest_plugin``): its marker, factories, external
broker mode and ``ottla_topic``, each run in an inner pytest session
(``pytester``), plus ``client_config()`` with the three Kafka clients."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import ottla
from ottla.pytest_plugin import FAST_GROUP_SETTINGS, OttlaBroker, start_broker, unique_topic_name

pytest_plugins = ["pytester"]

#: Every inner session: quiet, no cache, and the outer per-test timeout.
INNER = ("-p", "no:cacheprovider", "-p", "no:asyncio", "-q")


@pytest.fixture(autouse=True)
def _no_external_broker_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner sessions start their own brokers unless a test says not to,
    even when this suite itself runs with OTTLA_BOOTSTRAP_SERVERS set."""
    monkeypatch.delenv("OTTLA_BOOTSTRAP_SERVERS", raising=False)


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*INNER, *args)


# -- the marker configures ottla_broker -------------------------------------------------


def test_marker_passes_settings_to_the_broker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import ottla
        from confluent_kafka import Producer

        @pytest.mark.ottla_broker(num_partitions=3, max_connections=7)
        def test_configured(ottla_broker):
            p = Producer(ottla_broker.client_config(fast_groups=False))
            p.produce("auto", b"x")
            assert p.flush(10) == 0
            assert len(ottla.Admin(ottla_broker.path).describe_topic("auto").partitions) == 3

        def test_default(ottla_broker):
            p = Producer(ottla_broker.client_config(fast_groups=False))
            p.produce("auto", b"x")
            assert p.flush(10) == 0
            assert len(ottla.Admin(ottla_broker.path).describe_topic("auto").partitions) == 1

        @pytest.mark.ottla_broker(auto_create_topics=False)
        class TestClassMarker:
            def test_no_auto_create(self, ottla_broker):
                from confluent_kafka.admin import AdminClient
                md = AdminClient(ottla_broker.client_config(fast_groups=False)).list_topics(
                    "nope", timeout=10)
                assert md.topics["nope"].error is not None
                assert "nope" not in ottla.Admin(ottla_broker.path).list_topics()
        """
    )
    run_inner(pytester).assert_outcomes(passed=3)


def test_marker_with_an_unknown_setting_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ottla_broker(no_such_setting=1)
        def test_x(ottla_broker):
            pass

        @pytest.mark.ottla_broker(3)
        def test_positional(ottla_broker):
            pass
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*no_such_setting*", "*keywords only*"])


def test_the_broker_is_closed_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        seen = []

        def test_use(ottla_broker, ottla_broker_factory):
            seen.append(ottla_broker)
            seen.append(ottla_broker_factory())
            seen.append(ottla_broker_factory(path=ottla_broker.path))  # one directory, two brokers
            assert len({b.port for b in seen}) == 3
            assert seen[2].path == ottla_broker.path
            assert not any(b.closed for b in seen)

        def test_after():
            assert len(seen) == 3 and all(b.closed for b in seen)
            for b in seen:
                s = socket.socket()
                try:
                    assert s.connect_ex(("127.0.0.1", b.port)) != 0  # nobody listens
                finally:
                    s.close()
        """
    )
    run_inner(pytester).assert_outcomes(passed=2)


def test_factory_settings_reach_the_broker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import ottla
        from confluent_kafka import Producer

        def test_two(ottla_broker_factory):
            wide = ottla_broker_factory(num_partitions=4)
            narrow = ottla_broker_factory()
            for b in (wide, narrow):
                p = Producer(b.client_config(fast_groups=False))
                p.produce("t", b"x")
                assert p.flush(10) == 0
            assert len(ottla.Admin(wide.path).describe_topic("t").partitions) == 4
            assert len(ottla.Admin(narrow.path).describe_topic("t").partitions) == 1
        """
    )
    run_inner(pytester).assert_outcomes(passed=1)


# -- broker_factory(): fixtures of one's own ----------------------------------------


def test_broker_factory_makes_scoped_fixtures(
    pytester: pytest.Pytester, ottla_broker: OttlaBroker
) -> None:
    pytester.makeconftest(
        f"""
        from ottla.pytest_plugin import broker_factory

        wide = broker_factory(num_partitions=2, scope="module")
        remote = broker_factory(bootstrap_servers={ottla_broker.bootstrap_servers!r})
        """
    )
    pytester.makepyfile(
        test_a="""
        import ottla
        seen = []

        def test_one(wide, remote):
            seen.append(wide)
            assert remote.external and remote.path is None
            ottla.Admin(wide.path).create_topic("made-here", partitions=1)

        def test_two(wide):
            assert wide is seen[0] and not wide.closed  # module scope: the same broker
            assert "made-here" in ottla.Admin(wide.path).list_topics()
        """,
        test_b="""
        import test_a

        def test_other_module(wide):
            assert wide is not test_a.seen[0] and test_a.seen[0].closed
        """,
    )
    run_inner(pytester).assert_outcomes(passed=3)
    with pytest.raises(TypeError, match="no broker settings"):
        ottla.pytest_plugin.broker_factory(bootstrap_servers="h:1", num_partitions=2)


# -- an external broker: --ottla-bootstrap / OTTLA_BOOTSTRAP_SERVERS ----------------------

EXTERNAL_TESTS = """
import pytest
import ottla
from confluent_kafka import Consumer, Producer

made = []

def test_external(ottla_broker, ottla_topic, ottla_broker_session):
    assert ottla_broker.external and ottla_broker.path is None
    assert ottla_broker.bootstrap_servers == EXPECTED
    assert ottla_broker_session.bootstrap_servers == EXPECTED
    made.append(ottla_topic)
    from confluent_kafka.admin import AdminClient
    listed = AdminClient(ottla_broker.client_config(fast_groups=False)).list_topics(timeout=10)
    assert ottla_topic in listed.topics  # created before anything was produced
    p = Producer(ottla_broker.client_config(fast_groups=False))
    p.produce(ottla_topic, b"over there")
    assert p.flush(10) == 0
    c = Consumer({**ottla_broker.client_config(), "group.id": "g",
                  "auto.offset.reset": "earliest"})
    c.subscribe([ottla_topic])
    try:
        m = c.poll(15)
        assert m is not None and m.error() is None and m.value() == b"over there"
    finally:
        c.close()

@pytest.mark.ottla_broker(num_partitions=3)
def test_needs_its_own(ottla_broker):
    raise AssertionError("not run against an external broker")

def test_factory_still_starts_brokers(ottla_broker_factory):
    assert not ottla_broker_factory().external
"""


@pytest.mark.parametrize("how", ["option", "env"])
def test_external_broker(
    pytester: pytest.Pytester,
    ottla_broker: OttlaBroker,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    assert ottla_broker.path is not None
    pytester.makepyfile(EXTERNAL_TESTS.replace("EXPECTED", repr(ottla_broker.bootstrap_servers)))
    if how == "option":
        monkeypatch.delenv("OTTLA_BOOTSTRAP_SERVERS", raising=False)
        result = run_inner(pytester, f"--ottla-bootstrap={ottla_broker.bootstrap_servers}", "-rs")
    else:
        monkeypatch.setenv("OTTLA_BOOTSTRAP_SERVERS", ottla_broker.bootstrap_servers)
        result = run_inner(pytester, "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*needs a broker of its own*"])
    # ottla_topic was made on the external broker (the inner test read it
    # back through it), and deleted when the test ended
    topics = ottla.Admin(ottla_broker.path).list_topics()
    assert not [t for t in topics if t.startswith("test_external")]


def test_without_an_external_broker_nothing_is_external(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTTLA_BOOTSTRAP_SERVERS", "  ")  # blank: not set
    pytester.makepyfile(
        """
        def test_local(ottla_broker, ottla_broker_session):
            assert not ottla_broker.external and ottla_broker.path
            assert not ottla_broker_session.external
            assert ottla_broker.port != ottla_broker_session.port
        """
    )
    run_inner(pytester).assert_outcomes(passed=1)


# -- ottla_topic -------------------------------------------------------------------------


def test_ottla_topic_is_fresh_unique_and_shaped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import ottla
        names = []

        @pytest.mark.parametrize("x", ["a/b", "c d"])
        def test_plain(ottla_broker, ottla_topic, x):
            d = ottla.Admin(ottla_broker.path).describe_topic(ottla_topic)
            assert len(d.partitions) == 1 and d.partitions[0].end_offset == 0
            names.append(ottla_topic)

        @pytest.mark.ottla_topic(partitions=4, config={"cleanup.policy": "compact"})
        def test_shaped(ottla_broker, ottla_topic):
            d = ottla.Admin(ottla_broker.path).describe_topic(ottla_topic)
            assert len(d.partitions) == 4
            assert d.config["cleanup.policy"] == "compact"
            names.append(ottla_topic)

        @pytest.mark.ottla_topic(replicas=2)
        def test_bad_shape(ottla_topic):
            pass

        def test_names():
            assert len(set(names)) == 3
            assert names[0].startswith("test_plain-a-b-") and names[2].startswith("test_shaped-")
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*takes partitions= and config=*"])


def test_unique_topic_name() -> None:
    names = {unique_topic_name("test_x[ü/é 1]") for _ in range(100)}
    assert len(names) == 100
    for n in names:
        assert n.startswith("test_x-1-") or n.startswith("test_x-")
        assert all(c.isalnum() or c in "._-" for c in n) and len(n) <= 249
    assert unique_topic_name("...").startswith("topic-")
    assert len(unique_topic_name("x" * 1000)) <= 249


# -- client_config() -----------------------------------------------------------------------


def test_client_config_names_per_client() -> None:
    b = OttlaBroker("127.0.0.1:1234")
    assert (b.host, b.port, b.path, b.external) == ("127.0.0.1", 1234, None, True)
    assert b.client_config() == {
        "bootstrap.servers": "127.0.0.1:1234",
        "heartbeat.interval.ms": 100,
        "session.timeout.ms": 6000,
    }
    assert b.client_config("librdkafka") == b.client_config()
    assert b.client_config(fast_groups=False) == {"bootstrap.servers": "127.0.0.1:1234"}
    for client in ("kafka-python", "aiokafka"):
        assert b.client_config(client) == {
            "bootstrap_servers": "127.0.0.1:1234",
            **FAST_GROUP_SETTINGS[client],
        }
    with pytest.raises(ValueError, match="client must be one of"):
        b.client_config("java")
    with pytest.raises(ValueError, match="host:port"):
        OttlaBroker("localhost")
    assert OttlaBroker("[::1]:9092,h2:9093").host == "::1"


def test_client_configs_are_accepted_by_the_clients(ottla_broker: OttlaBroker) -> None:
    """Each client takes its config as is (kafka-python's constructors
    reject unknown names; aiokafka's producer has no heartbeat setting)."""
    import confluent_kafka
    import kafka

    c = confluent_kafka.Consumer({**ottla_broker.client_config(), "group.id": "g"})
    c.close()
    p = confluent_kafka.Producer(ottla_broker.client_config(fast_groups=False))
    p.flush(1)
    kc = kafka.KafkaConsumer(**ottla_broker.client_config("kafka-python"), group_id="g")
    kc.close()
    kp = kafka.KafkaProducer(**ottla_broker.client_config("kafka-python", fast_groups=False))
    kp.close(timeout=5)

    async def aio() -> None:
        import aiokafka

        ac = aiokafka.AIOKafkaConsumer(**ottla_broker.client_config("aiokafka"), group_id="g")
        await ac.start()
        await ac.stop()
        ap = aiokafka.AIOKafkaProducer(**ottla_broker.client_config("aiokafka", fast_groups=False))
        await ap.start()
        await ap.stop()

    asyncio.run(asyncio.wait_for(aio(), 60))


@pytest.mark.ottla_topic(partitions=4)
def test_two_member_group_with_client_config(ottla_broker: OttlaBroker, ottla_topic: str) -> None:
    """The settings work: a second member joining a cooperative-sticky group
    gets partitions and the first keeps the rest (no timing asserted)."""
    import confluent_kafka

    conf = {
        **ottla_broker.client_config(),
        "group.id": "pair",
        "partition.assignment.strategy": "cooperative-sticky",
    }
    owned: dict[str, set[int]] = {"a": set(), "b": set()}

    def tracker(name: str) -> dict[str, Any]:
        def on_assign(_c: Any, parts: list[Any]) -> None:
            owned[name] |= {p.partition for p in parts}

        def on_revoke(_c: Any, parts: list[Any]) -> None:
            owned[name] -= {p.partition for p in parts}

        return {"on_assign": on_assign, "on_revoke": on_revoke}

    a = confluent_kafka.Consumer(conf)
    b = confluent_kafka.Consumer(conf)
    try:
        a.subscribe([ottla_topic], **tracker("a"))
        deadline = time.monotonic() + 60
        while len(owned["a"]) < 4 and time.monotonic() < deadline:
            a.poll(0.05)
        b.subscribe([ottla_topic], **tracker("b"))
        while time.monotonic() < deadline and not (
            owned["a"] and owned["b"] and len(owned["a"] | owned["b"]) == 4
        ):
            a.poll(0.05)
            b.poll(0.05)
        assert owned["a"] and owned["b"]
        assert owned["a"] | owned["b"] == {0, 1, 2, 3} and not owned["a"] & owned["b"]
    finally:
        a.close()
        b.close()


def test_start_broker_by_hand(tmp_path: Path) -> None:
    with start_broker(tmp_path / "d", num_partitions=2) as b:
        assert isinstance(b.broker, ottla.Broker) and not b.closed
        assert b.path == str(tmp_path / "d") or Path(str(b.path)).name == "d"
        b.create_topic("t", partitions=3)
        assert len(ottla.Admin(tmp_path / "d").describe_topic("t").partitions) == 3
        b.delete_topic("t")
        assert "t" not in ottla.Admin(tmp_path / "d").list_topics()
        assert "external" not in repr(b)
    assert b.closed and b.broker is not None and b.broker.closed
