"""pytest fixtures that give a test a real Kafka-protocol broker in milliseconds.

Installed with ottla and registered through the ``pytest11`` entry point, so
any test suite that has ottla installed can use them:

>>> from confluent_kafka import Consumer, Producer
>>> def test_round_trip(ottla_broker, ottla_topic):
...     producer = Producer(ottla_broker.client_config(fast_groups=False))
...     producer.produce(ottla_topic, key=b"k", value=b"v")
...     producer.flush(5)
...     consumer = Consumer({**ottla_broker.client_config(), "group.id": "g",
...                          "auto.offset.reset": "earliest"})
...     consumer.subscribe([ottla_topic])
...     message = consumer.poll(10)
...     consumer.close()
...     assert message is not None and message.value() == b"v"

(pytest passes the fixtures; by hand, that is:)

>>> with ottla.pytest_plugin.start_broker("data") as broker:
...     broker.create_topic("orders-1")
...     test_round_trip(broker, "orders-1")

Fixtures:

* ``ottla_broker``: a fresh broker on a fresh temporary directory for each
  test, closed (port and directory released) when the test ends. Configure
  it with the marker ``@pytest.mark.ottla_broker(**settings)``: any keyword
  of ``ottla.Broker`` (``num_partitions=3``, ``fsync="always"``,
  ``auto_create_topics=False``...).
* ``ottla_broker_session``: one broker shared by the whole session; tests
  that use it should pick unique topic and group names.
* ``ottla_broker_factory``: ``ottla_broker_factory(**settings)`` starts
  another broker (each on its own temporary directory unless ``path=`` is
  given), all closed when the test ends.
* ``ottla_cluster``: a replicated cluster of three ``ottla serve``
  processes (``ottla.Cluster``: replication factor 3,
  ``min.insync.replicas`` 2) behind fault-injecting proxies, for this test:
  ``kill``, ``pause``, ``isolate``, ``wipe`` a node and see what the
  application does. ``@pytest.mark.ottla_cluster(brokers=5, ...)`` passes
  keywords to ``ottla.Cluster``.
* ``ottla_topic``: the name of a topic made for this test on
  ``ottla_broker`` (unique, so it also suits an external broker); the marker
  ``@pytest.mark.ottla_topic(partitions=3, config={...})`` shapes it.

``broker_factory(**settings)`` makes a fixture of your own (any scope), as
pytest-postgresql's factories do; ``broker_factory(bootstrap_servers=...)``
makes one that points at a broker already running.

An already running broker (an ``ottla broker`` in another terminal, a
Kafka in a container): ``pytest --ottla-bootstrap=HOST:PORT``, or the
environment variable ``OTTLA_BOOTSTRAP_SERVERS``, makes ``ottla_broker`` and
``ottla_broker_session`` hand out that broker (``path`` is None; nothing is
started or stopped). Tests whose marker asks for broker settings are
skipped then, since an external broker cannot take them.

Each fixture gives an :class:`OttlaBroker`: ``bootstrap_servers``, ``host``,
``port``, ``path``, ``client_config()`` (the client settings that make
group tests fast) and ``create_topic()``.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pytest

from ottla._core import Broker
from ottla.admin import Admin
from ottla.cluster import Cluster

__all__ = [
    "FAST_GROUP_SETTINGS",
    "OttlaBroker",
    "broker_factory",
    "ottla_broker",
    "ottla_broker_factory",
    "ottla_broker_session",
    "ottla_cluster",
    "ottla_topic",
    "start_broker",
    "unique_topic_name",
]

#: The environment variable naming an external broker (``host:port[,...]``).
ENV_BOOTSTRAP = "OTTLA_BOOTSTRAP_SERVERS"

#: Client settings that make consumer-group tests fast, by client library.
#: A member learns that the group is rebalancing from its next heartbeat:
#: librdkafka, kafka-python and aiokafka send one every 3 s by default, so a
#: second member joining costs one to three heartbeat intervals (about 6 s
#: with ``range``, 12 s with ``cooperative-sticky``, whose rebalance takes
#: two rounds). A heartbeat every 100 ms brings that to about 1 s and 3 s
#: (docs/broker.md). ``session.timeout.ms`` 6000 (the smallest Kafka allows
#: by default) makes a member that died without leaving expire in 6 s
#: instead of librdkafka's 45 s.
FAST_GROUP_SETTINGS: dict[str, dict[str, Any]] = {
    "confluent-kafka": {"heartbeat.interval.ms": 100, "session.timeout.ms": 6000},
    "kafka-python": {"heartbeat_interval_ms": 100, "session_timeout_ms": 6000},
    "aiokafka": {"heartbeat_interval_ms": 100, "session_timeout_ms": 6000},
}
_BOOTSTRAP_KEY = {
    "confluent-kafka": "bootstrap.servers",
    "kafka-python": "bootstrap_servers",
    "aiokafka": "bootstrap_servers",
}
_CLIENT_ALIASES = {"librdkafka": "confluent-kafka", "confluent_kafka": "confluent-kafka"}
_CLIENT_ALIASES.update({"kafka_python": "kafka-python", "kafka": "kafka-python"})

Client = Literal["confluent-kafka", "librdkafka", "kafka-python", "aiokafka"]


class OttlaBroker:
    """A Kafka-protocol broker for a test: one this plugin started (an
    ``ottla.Broker`` over a temporary directory) or an external one named by
    its address.

    >>> with ottla.pytest_plugin.start_broker("data", num_partitions=2) as b:
    ...     b.client_config()["heartbeat.interval.ms"], b.path is not None
    (100, True)
    >>> external = ottla.pytest_plugin.OttlaBroker("localhost:9092")
    >>> external.port, external.path, external.client_config("kafka-python", fast_groups=False)
    (9092, None, {'bootstrap_servers': 'localhost:9092'})
    """

    __slots__ = ("_bootstrap", "_broker", "_closed")

    def __init__(self, bootstrap_servers: str, broker: Broker | None = None) -> None:
        """Wrap a started ``broker``, or (``broker=None``) name an external
        one by ``bootstrap_servers`` (``host:port``, several comma-separated)."""
        servers = bootstrap_servers.strip()
        if not servers or any(":" not in s for s in servers.split(",")):
            raise ValueError(
                f"bootstrap servers must be host:port[,host:port...], not {bootstrap_servers!r}"
            )
        self._bootstrap = servers
        self._broker = broker
        self._closed = False

    @property
    def bootstrap_servers(self) -> str:
        """``"host:port"``, for Kafka clients' ``bootstrap.servers``."""
        return self._bootstrap

    @property
    def host(self) -> str:
        """The host of the (first) bootstrap server."""
        return self._bootstrap.split(",")[0].rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        """The port of the (first) bootstrap server."""
        return int(self._bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def path(self) -> str | None:
        """The data directory served (open it with ``ottla.Consumer`` or
        ``ottla.Admin`` to see what the application wrote); None for an
        external broker."""
        return None if self._broker is None else self._broker.path

    @property
    def broker(self) -> Broker | None:
        """The ``ottla.Broker`` itself (None for an external broker)."""
        return self._broker

    @property
    def external(self) -> bool:
        """True for a broker this plugin did not start."""
        return self._broker is None

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed or (self._broker is not None and self._broker.closed)

    def client_config(
        self, client: Client | str = "confluent-kafka", *, fast_groups: bool = True
    ) -> dict[str, Any]:
        """Settings for a Kafka client of this broker, in ``client``'s own
        names: ``"confluent-kafka"`` (librdkafka's dotted names, a dict for
        ``Producer``/``Consumer``/``AdminClient``), ``"kafka-python"`` or
        ``"aiokafka"`` (keyword arguments: ``KafkaConsumer(topic,
        **config)``). The bootstrap servers, and with ``fast_groups`` (for
        consumers) the heartbeat and session timeouts of
        ``FAST_GROUP_SETTINGS`` that make group tests fast. Producers and
        admin clients want ``fast_groups=False``: kafka-python's and
        aiokafka's producers reject consumer settings, and librdkafka logs a
        warning for each.

        >>> b = ottla.pytest_plugin.OttlaBroker("127.0.0.1:9092")
        >>> b.client_config()
        {'bootstrap.servers': '127.0.0.1:9092', 'heartbeat.interval.ms': 100, 'session.timeout.ms': 6000}
        >>> b.client_config("aiokafka")["heartbeat_interval_ms"]
        100
        """
        name = _CLIENT_ALIASES.get(client, client)
        if name not in _BOOTSTRAP_KEY:
            raise ValueError(
                f"client must be one of {', '.join(map(repr, _BOOTSTRAP_KEY))}, not {client!r}"
            )
        config: dict[str, Any] = {_BOOTSTRAP_KEY[name]: self._bootstrap}
        if fast_groups:
            config.update(FAST_GROUP_SETTINGS[name])
        return config

    def create_topic(
        self, name: str, partitions: int = 1, config: Mapping[str, Any] | None = None
    ) -> None:
        """Create topic ``name``: in the data directory for a broker this
        plugin started, else over the wire (with confluent-kafka if it is
        installed, else kafka-python)."""
        if self._broker is not None:
            admin = Admin(self._broker.path)
            try:
                admin.create_topic(name, partitions, dict(config) if config else None)
            finally:
                admin.close()
            return
        _remote_admin(self._bootstrap, "create", name, partitions, config)

    def delete_topic(self, name: str) -> None:
        """Delete topic ``name`` (as ``create_topic`` creates it)."""
        if self._broker is not None:
            admin = Admin(self._broker.path)
            try:
                admin.delete_topic(name)
            finally:
                admin.close()
            return
        _remote_admin(self._bootstrap, "delete", name, 0, None)

    def close(self) -> None:
        """Stop a broker this plugin started (port and directory released);
        for an external broker, only marks this handle closed."""
        self._closed = True
        if self._broker is not None:
            self._broker.close()

    def __enter__(self) -> OttlaBroker:
        return self

    def __exit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> Literal[False]:
        """``close()``; exceptions propagate."""
        self.close()
        return False

    def __repr__(self) -> str:
        where = "external" if self._broker is None else f"path={self._broker.path!r}"
        state = " closed" if self.closed else ""
        return f"<OttlaBroker {self._bootstrap} {where}{state}>"


def _broker_defaults() -> dict[str, Any]:
    """Settings the fixtures use unless told otherwise: a test broker starts
    a group's first rebalance at once (Kafka's own test brokers set
    ``group.initial.rebalance.delay.ms=0`` too), where the broker has that
    setting."""
    try:
        params = inspect.signature(Broker).parameters
    except (TypeError, ValueError):
        return {}
    return (
        {"group_initial_rebalance_delay_ms": 0}
        if "group_initial_rebalance_delay_ms" in params
        else {}
    )


def start_broker(path: str | os.PathLike[str], **settings: Any) -> OttlaBroker:
    """Start an ``ottla.Broker`` over ``path`` with ``settings`` (any of its
    keywords), as the fixtures do, and return its :class:`OttlaBroker`
    (a context manager that closes it)."""
    broker = Broker(path, **{**_broker_defaults(), **settings})
    return OttlaBroker(broker.bootstrap_servers, broker)


def _remote_admin(
    bootstrap: str, op: str, name: str, partitions: int, config: Mapping[str, Any] | None
) -> None:
    """Create or delete a topic on an external broker, with whichever Kafka
    client is installed."""
    conf = {k: str(v) for k, v in (config or {}).items()}
    try:
        from confluent_kafka.admin import AdminClient, NewTopic
    except ImportError:
        pass
    else:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        if op == "create":
            futures = admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=-1, config=conf)],
                operation_timeout=30,
                request_timeout=30,
            )
        else:
            futures = admin.delete_topics([name], operation_timeout=30, request_timeout=30)
        for f in futures.values():
            f.result(timeout=60)
        return
    try:
        from kafka.admin import KafkaAdminClient, NewTopic as KNewTopic
    except ImportError:
        raise RuntimeError(
            "an external broker's topics are made with confluent-kafka or kafka-python: "
            "pip install confluent-kafka"
        ) from None
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        if op == "create":
            kadmin.create_topics(
                [KNewTopic(name, partitions, -1, topic_configs=conf)], timeout_ms=30_000
            )
        else:
            kadmin.delete_topics([name], timeout_ms=30_000)
    finally:
        kadmin.close()


# ---- options and markers ---------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ottla")
    group.addoption(
        "--ottla-bootstrap",
        metavar="HOST:PORT",
        default=None,
        help=(
            "run the ottla_broker fixtures against this already running Kafka-protocol "
            f"broker instead of starting one per test (also: ${ENV_BOOTSTRAP})"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ottla_broker(**settings): start this test's ottla_broker with these ottla.Broker "
        "settings (num_partitions=3, fsync='always', ...)",
    )
    config.addinivalue_line(
        "markers",
        "ottla_topic(partitions=1, config=None): how this test's ottla_topic is created",
    )
    config.addinivalue_line(
        "markers",
        "ottla_cluster(**settings): start this test's ottla_cluster with these ottla.Cluster "
        "keywords (brokers=5, min_insync_replicas=1, num_partitions=3, ...)",
    )


def _external(config: pytest.Config) -> str | None:
    opt = config.getoption("--ottla-bootstrap", default=None)
    value = opt if opt else os.environ.get(ENV_BOOTSTRAP, "")
    return value.strip() or None


def _marker_settings(node: pytest.Item | Any, name: str) -> dict[str, Any]:
    """Keywords of the closest ``name`` marker (a test's over its class's
    and module's), with positional arguments refused."""
    marker = node.get_closest_marker(name) if node is not None else None
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{name} takes keywords only, got {marker.args!r}")
    return dict(marker.kwargs)


# ---- fixtures ---------------------------------------------------------------------


@pytest.fixture
def ottla_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OttlaBroker]:
    """A Kafka-protocol broker on 127.0.0.1 (a free port) over an empty
    directory, for this test; ``@pytest.mark.ottla_broker(**settings)``
    passes settings to ``ottla.Broker``. With ``--ottla-bootstrap`` (or
    ``$OTTLA_BOOTSTRAP_SERVERS``), the external broker instead."""
    settings = _marker_settings(request.node, "ottla_broker")
    external = _external(request.config)
    if external is not None:
        if settings:
            pytest.skip(
                f"@pytest.mark.ottla_broker({', '.join(sorted(settings))}=...) needs a broker "
                f"of its own; --ottla-bootstrap points at {external}"
            )
        yield OttlaBroker(external)
        return
    with start_broker(tmp_path / "ottla-broker", **settings) as broker:
        yield broker


@pytest.fixture(scope="session")
def ottla_broker_session(request: pytest.FixtureRequest) -> Iterator[OttlaBroker]:
    """One broker for the whole test session, over a temporary directory
    (or the external one of ``--ottla-bootstrap``)."""
    external = _external(request.config)
    if external is not None:
        yield OttlaBroker(external)
        return
    with (
        tempfile.TemporaryDirectory(prefix="ottla-broker-") as d,
        start_broker(d) as broker,
    ):
        yield broker


@pytest.fixture
def ottla_broker_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., OttlaBroker]]:
    """``ottla_broker_factory(**settings) -> OttlaBroker``: start another
    broker, on a fresh temporary directory unless ``path=`` is given (two
    brokers may serve one directory); every one is closed when the test
    ends. It starts brokers even with ``--ottla-bootstrap``."""
    started: list[OttlaBroker] = []

    def make(path: str | os.PathLike[str] | None = None, **settings: Any) -> OttlaBroker:
        b = start_broker(
            path if path is not None else tmp_path_factory.mktemp("ottla-broker"), **settings
        )
        started.append(b)
        return b

    try:
        yield make
    finally:
        errors: list[BaseException] = []
        for b in reversed(started):
            try:
                b.close()
            except Exception as e:  # close the others, then report
                errors.append(e)
        if errors:
            raise errors[0]


@pytest.fixture
def ottla_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A replicated cluster for this test (``ottla.Cluster``): three
    ``ottla serve`` processes, replication factor 3, ``min.insync.replicas``
    2, fast failure detection, every process stopped when the test ends.
    ``@pytest.mark.ottla_cluster(**settings)`` passes keywords to
    ``ottla.Cluster``; ``bootstrap_servers`` is what clients are given."""
    settings = {
        "brokers": 3,
        "replication_factor": 3,
        "min_insync_replicas": 2,
        **_marker_settings(request.node, "ottla_cluster"),
    }
    with Cluster(tmp_path / "ottla-cluster", **settings) as cluster:
        yield cluster


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def unique_topic_name(hint: str = "topic") -> str:
    """A valid, unique Kafka topic name starting with ``hint`` (made safe)."""
    base = _UNSAFE.sub("-", hint).strip("-.") or "topic"
    return f"{base[:200]}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ottla_topic(request: pytest.FixtureRequest, ottla_broker: OttlaBroker) -> Iterator[str]:
    """The name of a new topic on ``ottla_broker``, unique to this test
    (``<test name>-<random>``); ``@pytest.mark.ottla_topic(partitions=3,
    config={"cleanup.policy": "compact"})`` shapes it. On an external broker
    it is deleted when the test ends."""
    shape = _marker_settings(request.node, "ottla_topic")
    unknown = set(shape) - {"partitions", "config"}
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.ottla_topic takes partitions= and config=, not {sorted(unknown)}"
        )
    name = unique_topic_name(request.node.name)
    ottla_broker.create_topic(name, int(shape.get("partitions", 1)), shape.get("config"))
    try:
        yield name
    finally:
        if ottla_broker.external:
            try:
                ottla_broker.delete_topic(name)
            except Exception:
                pass  # best effort: the broker outlives the test anyway


def broker_factory(
    *,
    scope: Literal["session", "package", "module", "class", "function"] = "function",
    bootstrap_servers: str | None = None,
    **settings: Any,
) -> Any:
    """A fixture of your own, as pytest-postgresql's factories make them:
    assign it to a name in a ``conftest.py`` (or a test module), and tests
    ask for that name:

    >>> wide = ottla.pytest_plugin.broker_factory(num_partitions=3, scope="module")
    >>> def test_orders(wide):
    ...     assert wide.client_config()["bootstrap.servers"] == wide.bootstrap_servers

    Each use starts an ``ottla.Broker`` with ``settings`` over a temporary
    directory and closes it at the end of ``scope``. With
    ``bootstrap_servers="host:port"`` it starts nothing and hands out that
    external broker (``path`` None), whatever ``--ottla-bootstrap`` says.
    """
    if bootstrap_servers is not None:
        if settings:
            raise TypeError(
                "broker_factory(bootstrap_servers=...) points at a running broker: "
                f"it takes no broker settings ({', '.join(sorted(settings))})"
            )
        external = OttlaBroker(bootstrap_servers)

        @pytest.fixture(scope=scope)
        def noproc() -> Iterator[OttlaBroker]:
            yield external

        return noproc

    @pytest.fixture(scope=scope)
    def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OttlaBroker]:
        with start_broker(tmp_path_factory.mktemp("ottla-broker"), **settings) as broker:
            yield broker

    return started
