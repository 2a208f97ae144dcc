"""The broker backend: any Kafka-protocol broker (``ottla serve``, Kafka,
Redpanda) through ottla's own API pointed at it (``ottla.Admin``,
``ottla.Producer`` and ``ottla.Consumer`` with ``bootstrap_servers``:
:mod:`ottla.remote`, over confluent-kafka). The commands run the same code
as on a directory (:class:`ottla.cli.local.DirectoryBackend`); only the
address, the one-line connection check and what a cluster cannot tell
(partition sizes) differ."""

from __future__ import annotations

from typing import Any

import ottla
from ottla.cli._util import CliError
from ottla.cli.backend import PartitionInfo, RecordSink, TopicInfo, unknown_topic
from ottla.cli.local import DirectoryBackend


def kafka_module() -> Any:
    """confluent-kafka, or a clear error saying how to get it."""
    from ottla.remote import _kafka

    try:
        return _kafka.ck()
    except ImportError:
        raise CliError(
            "--bootstrap-server needs confluent-kafka: pip install 'ottla[kafka]'"
        ) from None


class BrokerBackend(DirectoryBackend):
    def __init__(self, bootstrap_servers: str) -> None:
        kafka_module()
        probe(bootstrap_servers)
        self.servers = bootstrap_servers
        # The command line should not hang for long when the address is wrong.
        self.admin = ottla.Admin(
            bootstrap_servers=bootstrap_servers, client_id="ottla-cli", socket_timeout_ms=10_000
        )
        self.path = "kafka://" + bootstrap_servers
        self.where = f"broker {bootstrap_servers}"

    def has_topic(self, name: str) -> bool:
        return name in self.admin.list_topics(internal=True)

    def require_topic(self, name: str, *, suggest_create: bool = True) -> None:
        topics = self.admin.list_topics(internal=True)
        if name not in topics:
            raise unknown_topic(name, self.where, topics, suggest_create=suggest_create)

    def describe_topic(self, name: str) -> TopicInfo:
        info = super().describe_topic(name)
        # A cluster does not report sizes to its clients: unknown, not 0.
        return TopicInfo(
            name=info.name,
            partitions=[
                PartitionInfo(p.partition, p.start_offset, p.end_offset, None)
                for p in info.partitions
            ],
            config=info.config,
            overrides=info.overrides,
        )

    def create_topic_on_demand(self, name: str) -> list[int]:
        # The broker's auto.create.topics.enable decides, as for any client.
        with ottla.Producer(
            bootstrap_servers=self.servers, auto_create_topics=True, client_id="ottla-cli"
        ) as producer:
            try:
                return sorted(producer.partitions_for(name))
            except ottla.UnknownTopicOrPartitionError:
                return []

    def open_sink(self, auto_create_topics: bool = False) -> RecordSink:
        return RecordSink(
            ottla.Producer(
                bootstrap_servers=self.servers,
                auto_create_topics=auto_create_topics,
                client_id="ottla-cli",
            )
        )

    def delete_group(self, group: str) -> None:
        try:
            super().delete_group(group)
        except ottla.OttlaError as e:
            name = getattr(getattr(e, "kafka_error", None), "name", lambda: "")()
            if name == "GROUP_ID_NOT_FOUND":
                from ottla.cli.backend import unknown_group

                raise unknown_group(group, self.where, self.list_groups()) from None
            raise


def probe(servers: str, timeout_s: float = 3.0) -> None:
    """Fail fast, naming the address, when no bootstrap server accepts a TCP
    connection: a Kafka client alone retries until its timeout and then
    says only that no broker is available."""
    import socket

    errors: list[str] = []
    for addr in (a.strip() for a in servers.split(",") if a.strip()):
        host, sep, port = addr.rpartition(":")
        if not sep:
            host, port = addr, "9092"  # Kafka's default port
        if not port.isdigit():
            raise CliError(f"--bootstrap-server: expected HOST:PORT, got {addr!r}")
        host = host.strip("[]")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return
        except socket.gaierror as e:
            errors.append(f"cannot resolve {host!r}: {e.strerror or e}")
        except TimeoutError:
            errors.append(f"cannot connect to {addr}: timed out after {timeout_s:g} s")
        except OSError as e:
            errors.append(f"cannot connect to {addr}: {str(e.strerror or e).lower()}")
    if not errors:
        raise CliError("--bootstrap-server: no address given")
    raise CliError("; ".join(errors))
