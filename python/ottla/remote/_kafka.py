"""What every remote class shares: confluent-kafka (imported on first use),
the address, the settings' names, and librdkafka's errors as ottla's.

Nothing here is imported by ``import ottla``: only constructing a remote
class (``ottla.Producer(bootstrap_servers=...)``) imports confluent-kafka.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from os import PathLike
from typing import Any

from ottla._core import (  # re-exported: the remote modules raise them
    ClosedError as ClosedError,
    CorruptRecordError as CorruptRecordError,
    GroupNotEmptyError as GroupNotEmptyError,
    IllegalStateError as IllegalStateError,
    InvalidConfigError as InvalidConfigError,
    InvalidPartitionsError as InvalidPartitionsError,
    InvalidRecordError as InvalidRecordError,
    InvalidTopicError as InvalidTopicError,
    NoOffsetForPartitionError as NoOffsetForPartitionError,
    OffsetMetadataTooLargeError as OffsetMetadataTooLargeError,
    OffsetOutOfRangeError as OffsetOutOfRangeError,
    OttlaError as OttlaError,
    OttlaTimeoutError as OttlaTimeoutError,
    RecordTooLargeError as RecordTooLargeError,
    StorageError as StorageError,
    TopicAlreadyExistsError as TopicAlreadyExistsError,
    UnknownTopicOrPartitionError as UnknownTopicOrPartitionError,
    UnsupportedCompressionError as UnsupportedCompressionError,
)

SCHEME = "kafka://"
# librdkafka's own log lines (connection failures it retries, ...).
LOGGER = logging.getLogger("ottla.remote.librdkafka")

_MISSING = (
    "a cluster address (bootstrap_servers=..., or a 'kafka://host:port' target) needs "
    "confluent-kafka: pip install 'ottla[kafka]'"
)


def ck() -> Any:
    """The ``confluent_kafka`` module, or an ImportError naming the extra."""
    try:
        return importlib.import_module("confluent_kafka")
    except ImportError as e:
        raise ImportError(_MISSING) from e


def ck_admin() -> Any:
    ck()
    return importlib.import_module("confluent_kafka.admin")


# ---- where: a directory or a cluster -------------------------------------------


def servers_of(target: object) -> str | None:
    """``host:port,...`` if ``target`` is a ``kafka://`` address, else None
    (a path: the directory form)."""
    if isinstance(target, str) and target.startswith(SCHEME):
        servers = target[len(SCHEME) :].strip().rstrip("/")
        if not servers:
            raise ValueError(f"{target!r}: give kafka://HOST:PORT[,HOST:PORT...]")
        # kafka://a:9092,kafka://b:9092 is accepted as well.
        return ",".join(s.strip().removeprefix(SCHEME).rstrip("/") for s in servers.split(","))
    return None


def target_servers(
    cls: str, target: str | PathLike[str] | None, bootstrap_servers: str | None
) -> str | None:
    """The cluster a constructor is pointed at, or None for a directory.

    ``target`` is the first positional argument (a path, or
    ``kafka://host:port``); ``bootstrap_servers`` Kafka's setting. Both, or
    neither, is a TypeError naming the class."""
    from_target = servers_of(target)
    if bootstrap_servers is not None:
        if not isinstance(bootstrap_servers, str) or not bootstrap_servers.strip():
            raise TypeError(
                f"{cls}(bootstrap_servers=...) takes 'host:port[,host:port...]', "
                f"not {bootstrap_servers!r}"
            )
        if target is not None:
            raise TypeError(
                f"{cls}() takes a data directory path or bootstrap_servers=..., not both "
                f"(got {target!r} and bootstrap_servers={bootstrap_servers!r})"
            )
        return servers_of(bootstrap_servers) or bootstrap_servers.strip()
    if target is None:
        raise TypeError(
            f"{cls}() needs a data directory path, a 'kafka://host:port' address "
            "or bootstrap_servers='host:port'"
        )
    return from_target


# ---- settings ------------------------------------------------------------------

# Settings only a data directory has: a cluster's brokers decide these.
EMBEDDED_ONLY = {
    "fsync": "durability is the cluster's (acks, min.insync.replicas, the brokers' flush settings)",
    "fsync_interval_ms": "durability is the cluster's (acks, the brokers' log.flush.interval.ms)",
    "retention_check_interval_ms": "the brokers run retention (log.retention.check.interval.ms)",
    "busy_poll_us": "a remote consumer waits on the network, not on the directory's futex",
}

# confluent-kafka's own settings (callbacks, its logging), passed as they are.
CONFLUENT_KEYS = frozenset(
    {"log_level", "logger", "error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_commit"}
)

# kafka-python's names whose librdkafka names differ (the rest: '_' -> '.').
RENAMED = {
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "sasl_mechanism": "sasl.mechanism",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
    "ssl_password": "ssl.key.password",
    "ssl_crlfile": "ssl.crl.location",
    "ssl_check_hostname": "enable.ssl.certificate.verification",
    "sasl_kerberos_service_name": "sasl.kerberos.service.name",
    "max_in_flight_requests_per_connection": "max.in.flight.requests.per.connection",
    "retry_backoff_ms": "retry.backoff.ms",
    "metadata_max_age_ms": "metadata.max.age.ms",
    "request_timeout_ms": "request.timeout.ms",
    "connections_max_idle_ms": "connections.max.idle.ms",
    "reconnect_backoff_ms": "reconnect.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "fetch_min_bytes": "fetch.min.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_max_bytes": "fetch.max.bytes",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "compression_type": "compression.type",
    "enable_idempotence": "enable.idempotence",
    "transactional_id": "transactional.id",
    "group_instance_id": "group.instance.id",
    "isolation_level": "isolation.level",
}


def librdkafka_config(
    cls: str, servers: str, given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """librdkafka's configuration from Kafka's setting names: ``linger_ms``
    (kafka-python's spelling) or ``"linger.ms"`` (Kafka's and librdkafka's,
    passed through as is, security settings included). An embedded-only
    setting is an InvalidConfigError naming it; a name librdkafka does not
    know is one when the client is made."""
    # librdkafka's log lines go to Python's logging
    # ("ottla.remote.librdkafka"), not to stderr.
    conf: dict[str, Any] = {"bootstrap.servers": servers, "logger": LOGGER}
    conf.update(defaults or {})
    for name, value in given.items():
        if name in EMBEDDED_ONLY:
            raise InvalidConfigError(
                f"{cls}: {name!r} is a setting of a data directory (the embedded engine), "
                f"not of a cluster: {EMBEDDED_ONLY[name]}. Drop it for bootstrap_servers=..."
            )
        if value is None:
            continue
        if name in CONFLUENT_KEYS:
            key = name
        else:
            key = RENAMED.get(name) or (name if "." in name else name.replace("_", "."))
        if isinstance(value, bool):
            value = "true" if value else "false"
        conf[key] = value
    return conf


def make(factory: Any, cls: str, conf: dict[str, Any], given: Mapping[str, Any]) -> Any:
    """``factory(conf)`` (a confluent-kafka client); a setting librdkafka
    does not know is a TypeError naming the keyword it came from (as an
    unknown keyword of the directory form), a bad value an
    InvalidConfigError."""
    try:
        return factory(conf)
    except Exception as e:
        if type(e).__name__ != "KafkaException":
            raise
        text = str(e.args[0].str() if e.args and hasattr(e.args[0], "str") else e)
        if "No such configuration property" in text:
            prop = text.rpartition(":")[2].strip().strip('"')
            names = [n for n in given if n == prop or n.replace("_", ".") == prop]
            name = names[0] if names else prop
            raise TypeError(
                f"{cls}() got an unexpected keyword argument {name!r}: neither an ottla "
                f"setting nor a librdkafka one ({text})"
            ) from None
        raise error(e, cls) from e


# ---- errors --------------------------------------------------------------------

# librdkafka's error names (KafkaError.name()) onto ottla's classes; the
# names are Kafka's error codes, or librdkafka's local ones (leading '_').
_ERRORS: dict[str, type[OttlaError]] = {
    "UNKNOWN_TOPIC_OR_PART": UnknownTopicOrPartitionError,
    "_UNKNOWN_TOPIC": UnknownTopicOrPartitionError,
    "_UNKNOWN_PARTITION": UnknownTopicOrPartitionError,
    "TOPIC_ALREADY_EXISTS": TopicAlreadyExistsError,
    "TOPIC_EXCEPTION": InvalidTopicError,
    "INVALID_TOPIC_EXCEPTION": InvalidTopicError,
    "TOPIC_AUTHORIZATION_FAILED": OttlaError,
    "INVALID_PARTITIONS": InvalidPartitionsError,
    "INVALID_CONFIG": InvalidConfigError,
    "INVALID_REPLICATION_FACTOR": InvalidConfigError,
    "INVALID_REQUEST": InvalidConfigError,
    "POLICY_VIOLATION": InvalidConfigError,
    "_INVALID_ARG": InvalidConfigError,
    "OFFSET_METADATA_TOO_LARGE": OffsetMetadataTooLargeError,
    "OFFSET_OUT_OF_RANGE": OffsetOutOfRangeError,
    "MSG_SIZE_TOO_LARGE": RecordTooLargeError,
    "_MSG_SIZE_TOO_LARGE": RecordTooLargeError,
    "RECORD_LIST_TOO_LARGE": RecordTooLargeError,
    "MESSAGE_TOO_LARGE": RecordTooLargeError,
    "CORRUPT_MESSAGE": CorruptRecordError,
    "_BAD_MSG": CorruptRecordError,
    "_BAD_COMPRESSION": CorruptRecordError,
    "INVALID_RECORD": InvalidRecordError,
    "INVALID_MSG": InvalidRecordError,
    "UNSUPPORTED_COMPRESSION_TYPE": UnsupportedCompressionError,
    "_NOT_IMPLEMENTED": UnsupportedCompressionError,
    "KAFKA_STORAGE_ERROR": StorageError,
    "NON_EMPTY_GROUP": GroupNotEmptyError,
    "_TIMED_OUT": OttlaTimeoutError,
    "_MSG_TIMED_OUT": OttlaTimeoutError,
    "REQUEST_TIMED_OUT": OttlaTimeoutError,
    "_TIMED_OUT_QUEUE": OttlaTimeoutError,
    "_DESTROY": ClosedError,
    "_STATE": IllegalStateError,
    "ILLEGAL_GENERATION": IllegalStateError,
    "UNKNOWN_MEMBER_ID": IllegalStateError,
    "REBALANCE_IN_PROGRESS": IllegalStateError,
}


def error(kafka_error: Any, doing: str = "") -> OttlaError:
    """The ottla exception for a librdkafka ``KafkaError`` (or a
    ``KafkaException`` carrying one); its ``kafka_error`` attribute keeps
    the original, with Kafka's code (``.code()``) and name (``.name()``)."""
    if isinstance(kafka_error, BaseException) and kafka_error.args:
        inner = kafka_error.args[0]
        if hasattr(inner, "name") and hasattr(inner, "code"):
            kafka_error = inner
    name = kafka_error.name() if hasattr(kafka_error, "name") else type(kafka_error).__name__
    text = kafka_error.str() if hasattr(kafka_error, "str") else str(kafka_error)
    cls = _ERRORS.get(name, OttlaError)
    if name == "_AUTO_OFFSET_RESET" or (name == "_NO_OFFSET" and "reset" in text.lower()):
        cls = NoOffsetForPartitionError
    elif name == "_AUTO_OFFSET_RESET":  # pragma: no cover - covered above
        cls = OffsetOutOfRangeError
    prefix = f"{doing}: " if doing else ""
    exc = cls(f"{prefix}{text} ({name})")
    exc.kafka_error = kafka_error  # type: ignore[attr-defined]
    return exc


def raising(doing: str = "") -> _Raising:
    """``with raising("creating 'x'"):`` turns confluent-kafka's
    ``KafkaException`` (and its config ``KafkaException``/``ValueError``)
    into ottla's classes."""
    return _Raising(doing)


class _Raising:
    __slots__ = ("doing",)

    def __init__(self, doing: str) -> None:
        self.doing = doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if (
            exc is not None
            and not isinstance(exc, OttlaError)
            and type(exc).__name__ == "KafkaException"
        ):
            raise error(exc, self.doing) from exc
