"""ottla: Kafka you can ``pip install``.

Topics are partitioned, offset-addressed logs kept on disk in Kafka's own
format, under one directory. Write and read them in-process::

    import ottla

    with ottla.Producer("data") as producer:
        producer.send("events", b"hello", key=b"user-1")

    with ottla.Consumer("data", "events", auto_offset_reset="earliest",
                        consumer_timeout_ms=1000) as consumer:
        for record in consumer:
            print(record.offset, record.key, record.value)

Several processes may use the same directory at once.
"""

from __future__ import annotations

from ottla._core import (
    BatchFuture,
    ClosedError,
    Consumer as _CoreConsumer,
    CorruptRecordError,
    DiskFullError,
    FutureRecordMetadata,
    GroupMemberConflictError,
    GroupNotEmptyError,
    IllegalStateError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidTopicError,
    NoOffsetForPartitionError,
    OffsetAndTimestamp,
    OffsetOutOfRangeError,
    OttlaError,
    OttlaTimeoutError,
    Producer as _CoreProducer,
    Record,
    RecordMetadata,
    RecordTooLargeError,
    StorageError,
    TopicAlreadyExistsError,
    TopicPartition,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionError,
    __version__,
)
from ottla.admin import Admin, PartitionDescription, TopicDescription
from ottla.admin import GroupDescription, GroupOffset, MemberDescription
from ottla.admin import CompactionStats
from ottla.types import OffsetAndMetadata

# The names used in Kafka's documentation of these errors.
OffsetOutOfRange = OffsetOutOfRangeError
RecordTooLarge = RecordTooLargeError


class Producer(_CoreProducer):
    """Appends records to topics in a data directory.

    ``Producer(path, **config)`` with Kafka's setting names: ``linger_ms``
    (default 5), ``batch_size`` (bytes, default 262144), ``fsync``
    (``"never"``, ``"interval"`` or ``"always"``), ``fsync_interval_ms``,
    ``auto_create_topics``, ``num_partitions`` (for auto-created topics),
    ``key_serializer`` and ``value_serializer``.

    ``send()`` returns a future; its ``get()`` waits until the record is in
    the log and returns its :class:`RecordMetadata`::

        with ottla.Producer("data") as p:
            md = p.send("events", b"v", key=b"k").get()
            print(md.partition, md.offset)
    """

    __slots__ = ()


class Consumer(_CoreConsumer):
    """Reads records from topics in a data directory.

    ``Consumer(path, *topics, group_id=None, auto_offset_reset="latest",
    enable_auto_commit=True, consumer_timeout_ms=None, ...)``. Iterate it
    (blocking; ``consumer_timeout_ms`` ends the iteration when idle), or call
    ``poll(timeout_ms, max_records)`` for ``{TopicPartition: [Record]}``::

        with ottla.Consumer("data", "events", group_id="billing",
                            auto_offset_reset="earliest") as c:
            for batch in c.poll(timeout_ms=1000).values():
                for record in batch:
                    handle(record.value)
            c.commit()

    Consumers with the same ``group_id`` (in any process on the directory)
    split the partitions: ``subscribe(topics, on_assign=..., on_revoke=...,
    on_lost=...)`` or ``subscribe(pattern="orders-.*")``;
    ``partition_assignment_strategy`` (``"cooperative-sticky"``,
    ``"range"``, ``"roundrobin"``) and ``session_timeout_ms`` as in Kafka.
    Callbacks run inside ``poll()``/iteration on the calling thread.
    """

    __slots__ = ()


__all__ = [
    "CompactionStats",
    "Admin",
    "BatchFuture",
    "ClosedError",
    "Consumer",
    "CorruptRecordError",
    "DiskFullError",
    "FutureRecordMetadata",
    "GroupMemberConflictError",
    "GroupDescription",
    "GroupNotEmptyError",
    "GroupOffset",
    "IllegalStateError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "MemberDescription",
    "NoOffsetForPartitionError",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "OffsetOutOfRange",
    "OffsetOutOfRangeError",
    "OttlaError",
    "OttlaTimeoutError",
    "PartitionDescription",
    "Producer",
    "Record",
    "RecordMetadata",
    "RecordTooLarge",
    "RecordTooLargeError",
    "StorageError",
    "TopicAlreadyExistsError",
    "TopicDescription",
    "TopicPartition",
    "UnknownTopicOrPartitionError",
    "UnsupportedCompressionError",
    "__version__",
]
