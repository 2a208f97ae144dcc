"""docs/COMPATIBILITY.md's table says which versions of each Kafka API the
broker serves; it must say what the broker advertises in ApiVersions."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import kafka_wire
import ottla

DOC = Path(__file__).resolve().parent.parent / "docs" / "COMPATIBILITY.md"
ROW = re.compile(r"^\| (\d+) \| (\w+) \| ([0-9-]+) \| ([0-9]+-[0-9]+|—) \| .* \|$")


def documented() -> dict[int, tuple[str, str, tuple[int, int] | None]]:
    """{api key: (name, Kafka's range, the range served or None)}."""
    rows: dict[int, tuple[str, str, tuple[int, int] | None]] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        key = int(m.group(1))
        assert key not in rows, f"API key {key} listed twice"
        served = None
        if m.group(4) != "—":
            lo, hi = m.group(4).split("-")
            served = (int(lo), int(hi))
        rows[key] = (m.group(2), m.group(3), served)
    return rows


def test_the_table_lists_every_api_key_in_order() -> None:
    rows = documented()
    keys = list(rows)
    assert keys == sorted(keys)
    # Kafka 4.x's keys: 0-87 and 90-92 (88 and 89 are unassigned).
    assert set(keys) == set(range(0, 88)) - {4, 5, 6, 7} | {90, 91, 92}


def test_served_versions_match_what_the_broker_advertises(data_dir: Path) -> None:
    with ottla.Broker(data_dir) as b, socket.create_connection((b.host, b.port), timeout=10) as s:
        advertised = {k: (lo, hi) for k, lo, hi in kafka_wire.api_versions(s)}
    rows = documented()
    served = {k: r[2] for k, r in rows.items() if r[2] is not None}
    assert served == advertised
    # What is served lies within Kafka's range.
    for k, (lo, hi) in served.items():
        kafka_lo, _, kafka_hi = rows[k][1].partition("-")
        assert int(kafka_lo) <= lo and hi <= int(kafka_hi or kafka_lo), rows[k]


BROKER_DOC = DOC.parent / "broker.md"
# A row of broker.md's API table: "| Name, Name | 0-4, 1-7 | notes |".
BROKER_ROW = re.compile(r"^\| ([A-Z][A-Za-z, ]+) \| ([0-9, -]+) \| .* \|$")


def test_broker_md_states_the_same_ranges() -> None:
    """docs/broker.md's shorter API table names the ranges of the full one."""
    by_name = {name: served for name, _kafka, served in documented().values()}
    seen = 0
    for line in BROKER_DOC.read_text().splitlines():
        m = BROKER_ROW.match(line)
        if m is None:
            continue
        names = [n.strip() for n in m.group(1).split(",")]
        ranges = [r.strip() for r in m.group(2).split(",")]
        assert len(names) == len(ranges), line
        for name, r in zip(names, ranges, strict=True):
            lo, _, hi = r.partition("-")
            assert by_name[name] == (int(lo), int(hi or lo)), (name, r)
            seen += 1
    assert seen >= 30, seen
