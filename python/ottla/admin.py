"""Topic administration on a data directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import Dict, List, Mapping, Optional, Tuple, Union

from ottla._core import _Admin

ConfigValue = Union[str, int, None]


@dataclass(frozen=True)
class PartitionDescription:
    """One partition: its offsets and disk use."""

    partition: int
    start_offset: int
    end_offset: int
    size_bytes: int
    segments: int

    @property
    def records(self) -> int:
        """Offsets between start and end (records, unless compacted)."""
        return self.end_offset - self.start_offset


@dataclass(frozen=True)
class TopicDescription:
    """What ``Admin.describe_topic`` returns."""

    name: str
    partitions: List[PartitionDescription]
    config: Dict[str, str]
    overrides: Dict[str, str] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)


class Admin:
    """Create, inspect, change and delete topics in a data directory.

    Config keys are Kafka's (``"retention.ms"``); underscores work too
    (``retention_ms``)::

        admin = ottla.Admin("data")
        admin.create_topic("events", partitions=3, config={"retention.ms": 3_600_000})
        print(admin.describe_topic("events"))
    """

    def __init__(self, path: Union[str, "PathLike[str]"]) -> None:
        self._core = _Admin(path)

    @property
    def path(self) -> str:
        return self._core.path

    def create_topic(
        self, name: str, partitions: int = 1, config: Optional[Mapping[str, ConfigValue]] = None
    ) -> None:
        """Create a topic; raises ``TopicAlreadyExistsError`` if it exists."""
        self._core.create_topic(name, partitions, dict(config or {}))

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data."""
        self._core.delete_topic(name)

    def list_topics(self, internal: bool = False) -> List[str]:
        """Topic names, sorted; ``internal=True`` includes ``__consumer_offsets``."""
        return self._core.list_topics(internal)

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions (offsets, bytes, segments) and effective config."""
        parts, config, overrides = self._core.describe_topic(name)
        return TopicDescription(
            name=name,
            partitions=[PartitionDescription(*p) for p in parts],
            config=dict(config),
            overrides=dict(overrides),
        )

    def create_partitions(self, name: str, total: int) -> None:
        """Grow a topic to ``total`` partitions (never shrinks)."""
        self._core.create_partitions(name, total)

    def alter_topic_config(self, name: str, config: Mapping[str, ConfigValue]) -> None:
        """Set config overrides; a value of ``None`` removes the override."""
        self._core.alter_topic_config(name, dict(config))

    def enforce_retention(self, name: str) -> int:
        """Apply retention now; returns the number of segments deleted."""
        return self._core.enforce_retention(name)

    def list_groups(self) -> List[str]:
        """Consumer groups with committed offsets."""
        return self._core.list_groups()

    def group_offsets(self, group: str) -> Dict[Tuple[str, int], Dict[str, int]]:
        """``{(topic, partition): {"committed": n, "end": m, "lag": m - n}}``."""
        return {
            (t, p): {"committed": c, "end": e, "lag": max(e - c, 0)}
            for t, p, c, e in self._core.group_offsets(group)
        }

    def close(self) -> None:
        """Nothing to release; present so Admin works as a context manager."""

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ottla.Admin path={self.path!r}>"
