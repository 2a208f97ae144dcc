"""Plain value types of the Python surface."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OffsetAndMetadata", "TopicPartition"]


class TopicPartition(NamedTuple):
    """``TopicPartition(topic, partition)``: a named tuple, as in kafka-python.

    It is the tuple ``(topic, partition)``: equal to it, hashed as it,
    ordered as it (by topic, then partition), unpackable, indexable and
    picklable:

    >>> tp = ottla.TopicPartition("events", 2)
    >>> topic, partition = tp
    >>> (topic, partition), tp[1], len(tp)
    (('events', 2), 2, 2)
    >>> tp == ("events", 2), {("events", 2): "x"}[tp]
    (True, 'x')
    >>> tp < ottla.TopicPartition("events", 3)
    True

    Wherever a method takes partitions, a ``(topic, partition)`` tuple works too.
    """

    topic: str
    """The topic name."""
    partition: int
    """The partition number (from 0)."""


class OffsetAndMetadata(NamedTuple):
    """An offset to commit, with optional application metadata.

    ``consumer.commit({tp: OffsetAndMetadata(42, "checkpoint-7")})``
    """

    offset: int
    metadata: str | None = None
