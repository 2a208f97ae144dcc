"""ottla's API against a Kafka-protocol cluster: an ``ottla serve``
broker, Apache Kafka, Redpanda, ...

Not imported by ``import ottla``. The same classes are made by
``ottla.Producer``, ``ottla.Consumer``, ``ottla.Admin``,
``ottla.aio.Producer`` and ``ottla.aio.Consumer`` when they are given a
cluster's address instead of a data directory::

    ottla.Producer(bootstrap_servers="host:9092", **config)
    ottla.Producer("kafka://host:9092", **config)          # the same
    ottla.Consumer("events", bootstrap_servers="host:9092", group_id="g")
    ottla.Consumer("kafka://host:9092", "events", group_id="g")

Built on confluent-kafka (librdkafka): ``pip install 'ottla[kafka]'``.
Settings take Kafka's names (``linger_ms`` or ``"linger.ms"``); any
librdkafka setting passes through (``**{"security.protocol": "SASL_SSL"}``).
docs/remote.md has the details.
"""

from __future__ import annotations

#: The scheme of a cluster's address given where a directory path goes.
SCHEME = "kafka://"

__all__ = ["SCHEME"]
