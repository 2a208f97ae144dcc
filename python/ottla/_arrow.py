"""Consumer results as Apache Arrow record batches and pandas DataFrames.

The records are laid out in Arrow's memory format by the Rust engine while
it walks the log (no Python object per record) and handed to pyarrow through
the Arrow PyCapsule interface, without copying. pyarrow (and pandas for
``to_pandas``) are optional: ``pip install 'ottla[arrow]'``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias

from ottla import _core
from ottla.types import TopicPartition

_EXTRA_HINT = (
    "ottla's Arrow and pandas readers need pyarrow (and pandas for to_pandas): "
    "pip install 'ottla[arrow]'"
)


def pyarrow() -> Any:
    """The ``pyarrow`` module, or an ImportError that names the extra."""
    try:
        # importlib: pyarrow ships no type information, and may be absent.
        return importlib.import_module("pyarrow")
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e


def require(pandas: bool = False) -> None:
    """Raise the ImportError *before* records are taken from the log: a
    record handed to a conversion that then fails would be lost to the
    caller while its position moved past it."""
    pyarrow()
    if pandas:
        try:
            importlib.import_module("pandas")
        except ImportError as e:
            raise ImportError(_EXTRA_HINT) from e


def record_batch(raw: Any) -> Any:
    """``pyarrow.RecordBatch`` over an ``ottla._core.ArrowBatch`` (no copy)."""
    pa = pyarrow()
    schema, array = raw.__arrow_c_array__()
    return pa.RecordBatch._import_from_c_capsule(schema, array)


def table(raws: list[Any]) -> Any:
    """``pyarrow.Table`` over ``ottla._core.ArrowBatch``es (no copy)."""
    pa = pyarrow()
    batches = [record_batch(r) for r in raws]
    return pa.Table.from_batches(batches, schema=batches[0].schema)


def to_pandas(tbl: Any, **kwargs: Any) -> Any:
    """``tbl.to_pandas(**kwargs)``, with the extra named if pandas is missing."""
    try:
        importlib.import_module("pandas")
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e
    return tbl.to_pandas(**kwargs)


# ---- read_arrow / to_pandas: where a read starts -------------------------------

#: What ``read_arrow``/``to_pandas`` take as ``start`` (see ``read``).
Start: TypeAlias = str | int | datetime | timedelta | None

_NAMED = ("earliest", "latest", "committed", "position")


def read(
    consumer: _core.Consumer,
    start: Start,
    max_records: int | None,
    max_bytes: int | None,
) -> list[_core.ArrowBatch]:
    """The records ``Consumer.read_arrow(start=...)`` returns, as Rust
    ``ArrowBatch``es.

    ``start="position"`` is the consumer's own read (``_read_arrow``: its
    assigned, unpaused partitions from its positions, which advance). Every
    other start is a *look*: the partitions of the consumer's topics (its
    subscription's topics, all their partitions; else its manual
    assignment) from ``start`` to their end offsets at the call, read by a
    private consumer with no group, so this consumer's positions, pauses,
    group membership and committed offsets are left as they were.
    """
    if consumer.closed:
        raise _core.ClosedError("consumer is closed")
    if start == "position":
        return consumer._read_arrow(max_records, max_bytes)
    pick = _start_rule(consumer, start)
    tps = _partitions(consumer)
    # The same isolation: a read_committed look ends at the last stable
    # offset and skips aborted transactions.
    look = _core.Consumer(
        consumer.path, enable_auto_commit=False, isolation_level=consumer.isolation_level
    )
    try:
        look.assign(tps)
        lows = look.beginning_offsets(tps)
        ends = look.end_offsets(tps)
        for tp in tps:
            lo, end = lows[tp], ends[tp]
            look.seek(tp, min(max(pick(look, tp, lo, end), lo), end))
        batches = look._read_arrow(max_records, max_bytes)
        _raise_what_stopped(look, tps, ends, batches, max_records)
        return batches
    finally:
        look.close(autocommit=False)


_Pick = Callable[[_core.Consumer, TopicPartition, int, int], int]


def _start_rule(consumer: _core.Consumer, start: Start) -> _Pick:
    """Check ``start`` (before anything is read) and return how to find a
    partition's first offset from ``(look, tp, log start, end)``; the result
    is clamped to ``[log start, end]`` by the caller."""
    if start is None:
        start = "committed" if consumer.group_id is not None else "earliest"
    if isinstance(start, str):
        if start == "earliest":
            return lambda _c, _tp, lo, _end: lo
        if start == "latest":
            return lambda _c, _tp, _lo, end: end
        if start == "committed":
            if consumer.group_id is None:
                raise ValueError(
                    "start='committed' needs a consumer with a group_id "
                    "(this one has none): use 'earliest', an offset or a time"
                )

            def committed(_c: _core.Consumer, tp: TopicPartition, lo: int, _e: int) -> int:
                off = consumer.committed(tp)
                return lo if off is None else off

            return committed
        raise ValueError(
            f"start must be one of {', '.join(map(repr, _NAMED))}, an int offset, a datetime or a timedelta, not {start!r}"
        )
    if isinstance(start, bool):
        raise TypeError("start must be a str, an int, a datetime or a timedelta, not a bool")
    if isinstance(start, int):
        n = start
        if n >= 0:
            return lambda _c, _tp, _lo, _end: n
        return lambda _c, _tp, _lo, end: end + n
    if isinstance(start, timedelta):
        if start < timedelta(0):
            raise ValueError(f"start as a timedelta must not be negative, got {start!r}")
        start = datetime.now(timezone.utc) - start
    if isinstance(start, datetime):
        if start.tzinfo is None or start.tzinfo.utcoffset(start) is None:
            raise ValueError(
                "start is a naive datetime, which could be UTC or local time: give it a "
                "timezone (datetime(..., tzinfo=timezone.utc), pandas.Timestamp(..., tz='UTC'))"
            )
        # Whole milliseconds, rounded down: a record stamped in the same
        # millisecond as ``start`` is included.
        ms = (start - _EPOCH) // timedelta(milliseconds=1)

        def at_time(c: _core.Consumer, tp: TopicPartition, _lo: int, end: int) -> int:
            found = c.offsets_for_times({tp: ms})[tp]
            return end if found is None else found.offset

        return at_time
    raise TypeError(
        f"start must be a str, an int, a datetime or a timedelta, not {type(start).__name__}"
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _partitions(consumer: _core.Consumer) -> list[TopicPartition]:
    """Every partition of the subscribed topics as they exist now (a group
    member's share is not the whole topic), else the manual assignment."""
    topics = consumer.subscription()
    if not topics:
        return sorted(consumer.assignment())
    return [
        TopicPartition(t, p)
        for t in sorted(topics)
        for p in sorted(consumer.partitions_for_topic(t) or ())
    ]


def _raise_what_stopped(
    look: _core.Consumer,
    tps: list[TopicPartition],
    ends: dict[TopicPartition, int],
    batches: list[_core.ArrowBatch],
    max_records: int | None,
) -> None:
    """``_read_arrow`` hands out what it read before a batch it cannot read
    (a corrupt one, say) and leaves the error for the next call. A look has
    no next call: raise that error now rather than return a table silently
    cut short. A partition left before its end was stopped by an error or by
    the limits; reading it again tells which."""
    if max_records is not None and sum(b.num_rows for b in batches) >= max_records:
        return
    short = [tp for tp in tps if look.position(tp) < ends[tp]]
    for tp in short:
        look.assign([tp])  # keeps the position: the partition stays assigned
        look._read_arrow(1, None)
