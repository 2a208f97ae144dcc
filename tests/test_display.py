"""Notebook display: ``_repr_html_`` of Consumer, TopicDescription and
GroupDescription show what a notebook user looks at first."""

from __future__ import annotations

from pathlib import Path

import ottla
from ottla import TopicPartition as TP


def _setup(data_dir: Path) -> ottla.Admin:
    admin = ottla.Admin(data_dir)
    admin.create_topic("orders", partitions=2, config={"retention.ms": 3_600_000})
    with ottla.Producer(data_dir) as p:
        p.send_many("orders", [b"a"] * 10, partition=0).wait()
        p.send_many("orders", [b"<b>"] * 4, partition=1).wait()
    return admin


def test_consumer_html_shows_assignment_positions_committed_and_lag(data_dir: Path) -> None:
    _setup(data_dir)
    with ottla.Consumer(data_dir, group_id="g<1>", auto_offset_reset="earliest") as c:
        c.assign([TP("orders", 0), TP("orders", 1)])
        c.seek(TP("orders", 0), 3)
        c.commit({TP("orders", 0): 2})
        c.pause(TP("orders", 1))
        html = c._repr_html_()
        assert "ottla.Consumer" in html and "g&lt;1&gt;" in html  # escaped
        rows = html.split("<tr>")[2:]
        assert len(rows) == 2
        # topic, partition, position, committed, end offset, lag, paused
        assert rows[0].startswith(
            "<td>orders</td><td>0</td><td>3</td><td>2</td><td>10</td><td>7</td><td></td>"
        )
        assert "<td>1</td><td>0</td><td>-</td><td>4</td><td>4</td><td>yes</td>" in rows[1]
        assert "lag: <code>11</code>" in html
    assert "closed" in c._repr_html_()


def test_consumer_html_without_group_or_partitions(data_dir: Path) -> None:
    _setup(data_dir)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        html = c._repr_html_()
        assert "<table" not in html and "partitions: <code>0</code>" in html


def test_topic_and_group_descriptions_html(data_dir: Path) -> None:
    admin = _setup(data_dir)
    html = admin.describe_topic("orders")._repr_html_()
    assert "topic orders" in html and "retention.ms: <code>3600000</code>" in html
    assert "<td>0</td><td>0</td><td>10</td><td>10</td>" in html
    with ottla.Consumer(data_dir, group_id="billing", auto_offset_reset="earliest") as c:
        c.assign([TP("orders", 0)])
        c.seek(TP("orders", 0), 6)
        c.commit()
    html = admin.describe_group("billing")._repr_html_()
    assert (
        "group billing" in html
        and "<td>orders</td><td>0</td><td>6</td><td>10</td><td>4</td>" in html
    )


def test_admin_html_lists_topics(data_dir: Path) -> None:
    admin = _setup(data_dir)
    admin.create_topic("empty")
    html = admin._repr_html_()
    assert "ottla.Admin" in html and "topics: <code>2</code>" in html
    assert "<td>orders</td><td>2</td><td>14</td>" in html
    assert "<td>empty</td><td>1</td><td>0</td><td>0</td>" in html
