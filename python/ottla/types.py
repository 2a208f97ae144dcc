"""Plain value types of the Python surface."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OffsetAndMetadata"]


class OffsetAndMetadata(NamedTuple):
    """An offset to commit, with optional application metadata.

    ``consumer.commit({tp: OffsetAndMetadata(42, "checkpoint-7")})``
    """

    offset: int
    metadata: str | None = None
