"""pytest fixtures that give a test a real Kafka-protocol broker in milliseconds.

Installed with ottla and registered through the ``pytest11`` entry point, so
any test suite that has ottla installed can use them:

>>> from confluent_kafka import Consumer, Producer
>>> def test_round_trip(ottla_broker):
...     conf = {"bootstrap.servers": ottla_broker.bootstrap_servers}
...     producer = Producer(conf)
...     producer.produce("orders", key=b"k", value=b"v")
...     producer.flush(5)
...     consumer = Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
...     consumer.subscribe(["orders"])
...     message = consumer.poll(10)
...     consumer.close()
...     assert message is not None and message.value() == b"v"

(pytest passes the fixture; by hand, that is:)

>>> with ottla.Broker("data") as broker:
...     test_round_trip(broker)

* ``ottla_broker``: a fresh broker on a fresh temporary directory for each
  test, closed (port and directory released) when the test ends.
* ``ottla_broker_session``: one broker shared by the whole session; tests
  that use it should pick unique topic and group names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ottla._core import Broker

__all__ = ["ottla_broker", "ottla_broker_session"]


@pytest.fixture
def ottla_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Kafka-protocol broker on 127.0.0.1 (a free port) over an empty directory."""
    broker = Broker(tmp_path / "ottla-broker")
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def ottla_broker_session() -> Iterator[Broker]:
    """One broker for the whole test session, over a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="ottla-broker-") as d:
        broker = Broker(d)
        try:
            yield broker
        finally:
            broker.close()
