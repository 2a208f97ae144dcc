"""How ottla objects show themselves in Jupyter (``_repr_html_``): small
HTML tables of what a notebook user looks at first — assignment, positions
and lag of a consumer, partitions of a topic, offsets of a group."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

#: Rows shown before the rest are summarised, so a topic with thousands of
#: partitions does not flood the notebook.
MAX_ROWS = 50


def table(
    title: str,
    facts: Iterable[tuple[str, Any]],
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> str:
    """An HTML block: a bold title, ``name: value`` facts, then a table."""
    out = [f"<div><b>{escape(title)}</b>"]
    fact_html = ", ".join(f"{escape(k)}: <code>{escape(str(v))}</code>" for k, v in facts)
    if fact_html:
        out.append(f"<br><small>{fact_html}</small>")
    if rows:
        out.append('<table style="text-align:right"><thead><tr>')
        out.extend(f"<th>{escape(h)}</th>" for h in header)
        out.append("</tr></thead><tbody>")
        for row in rows[:MAX_ROWS]:
            out.append("<tr>" + "".join(f"<td>{escape(_cell(v))}</td>" for v in row) + "</tr>")
        if len(rows) > MAX_ROWS:
            out.append(f'<tr><td colspan="{len(header)}">... {len(rows) - MAX_ROWS} more</td></tr>')
        out.append("</tbody></table>")
    out.append("</div>")
    return "".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def consumer_html(c: Any) -> str:
    """Assignment with position, committed offset, log end and lag."""
    if c.closed:
        return table("ottla.Consumer (closed)", [("path", c.path)], [], [])
    facts = [("path", c.path)]
    if c.group_id is not None:
        facts.append(("group_id", c.group_id))
        if c.member_id is not None:
            facts.append(("member_id", c.member_id))
    assigned = sorted(c.assignment())
    paused = c.paused()
    ends = c.end_offsets(assigned) if assigned else {}
    rows: list[Sequence[Any]] = []
    for tp in assigned:
        try:
            pos = c.position(tp)
        except Exception:
            pos = None
        committed = c.committed(tp) if c.group_id is not None else None
        end = ends.get(tp)
        lag = end - pos if pos is not None and end is not None else None
        rows.append((tp.topic, tp.partition, pos, committed, end, lag, tp in paused))
    total = sum(r[5] for r in rows if r[5] is not None)
    facts.append(("partitions", len(rows)))
    facts.append(("lag", f"{total:,}"))
    return table(
        "ottla.Consumer",
        facts,
        ["topic", "partition", "position", "committed", "end offset", "lag", "paused"],
        rows,
    )


def topic_html(d: Any) -> str:
    """A TopicDescription: partitions (offsets, records, bytes) and overrides."""
    facts: list[tuple[str, Any]] = [
        ("partitions", len(d.partitions)),
        ("records", f"{sum(p.records for p in d.partitions):,}"),
        ("bytes", f"{d.size_bytes:,}"),
    ]
    facts.extend((k, v) for k, v in sorted(d.overrides.items()))
    rows = [
        (p.partition, p.start_offset, p.end_offset, p.records, p.size_bytes, p.segments)
        for p in d.partitions
    ]
    return table(
        f"topic {d.name}",
        facts,
        ["partition", "start offset", "end offset", "records", "bytes", "segments"],
        rows,
    )


def group_html(d: Any) -> str:
    """A GroupDescription: state, members, committed offsets and lag."""
    owner = {(tp.topic, tp.partition): m.member_id for m in d.members for tp in m.assignment}
    rows = [
        (o.topic, o.partition, o.committed, o.end_offset, o.lag, owner.get((o.topic, o.partition)))
        for o in d.offsets
    ]
    facts = [
        ("state", d.state),
        ("protocol", d.protocol or "-"),
        ("members", len(d.members)),
        ("lag", f"{d.lag:,}"),
    ]
    return table(
        f"group {d.group_id}",
        facts,
        ["topic", "partition", "committed", "end offset", "lag", "member"],
        rows,
    )


def admin_html(a: Any) -> str:
    """The directory's topics (first MAX_ROWS described) and groups."""
    topics = a.list_topics()
    rows: list[Sequence[Any]] = []
    for name in topics[:MAX_ROWS]:
        d = a.describe_topic(name)
        rows.append((name, len(d.partitions), sum(p.records for p in d.partitions), d.size_bytes))
    rows.extend((name, None, None, None) for name in topics[MAX_ROWS:])
    facts = [("path", a.path), ("topics", len(topics)), ("groups", len(a.list_groups()))]
    return table("ottla.Admin", facts, ["topic", "partitions", "records", "bytes"], rows)
