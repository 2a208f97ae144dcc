"""Looking at data from a notebook: ``Consumer.read_arrow``/``to_pandas`` with
``start=``, and ``examples/*.ipynb`` executed in a real Jupyter kernel.

A look (any ``start`` but ``"position"``) reads each partition from its start
to the high watermark seen when the call begins, and leaves the consumer as
it was: positions, pauses, group membership and committed offsets.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import ottla

pa = pytest.importorskip("pyarrow")

TP = ottla.TopicPartition
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))

#: An hour ago, on the minute, in milliseconds: records are stamped from
#: here on (recent: older records would be past the default retention.ms).
T0 = (int(time.time()) // 60 - 60) * 60_000


def produce(data_dir: Path, per_partition: tuple[int, ...] = (5, 3, 0)) -> None:
    """``orders`` with len(per_partition) partitions; record ``i`` of a
    partition has value ``b"p<partition>-<i>"`` and timestamp T0 + i minutes."""
    ottla.Admin(data_dir).create_topic("orders", partitions=len(per_partition))
    with ottla.Producer(data_dir) as p:
        for part, n in enumerate(per_partition):
            for i in range(n):
                p.send("orders", b"p%d-%d" % (part, i), partition=part, timestamp=T0 + i * 60_000)


def rows(t: Any) -> list[tuple[int, int]]:
    """(partition, offset) of every row, sorted."""
    return sorted(
        zip(t.column("partition").to_pylist(), t.column("offset").to_pylist(), strict=True)
    )


def every(per_partition: dict[int, range]) -> list[tuple[int, int]]:
    return sorted((p, o) for p, offs in per_partition.items() for o in offs)


ALL = every({0: range(5), 1: range(3)})


# -- the default start ----------------------------------------------------------


def test_to_pandas_without_a_group_reads_everything_again_and_again(data_dir: Path) -> None:
    """The notebook case: ``Consumer(path, topic).to_pandas()`` with the
    default ``auto_offset_reset="latest"`` used to be empty, and so was
    every later call."""
    pytest.importorskip("pandas")
    produce(data_dir)
    with ottla.Consumer(data_dir, "orders") as c:
        first = c.to_pandas()
        assert sorted(zip(first["partition"], first["offset"], strict=True)) == ALL
        again = c.to_pandas()
        assert again.equals(first)
        with ottla.Producer(data_dir) as p:
            p.send("orders", b"late", partition=2).get(10)
        third = c.to_pandas()
        assert len(third) == len(ALL) + 1
        assert third[third["partition"] == 2]["value"].tolist() == [b"late"]
        # nothing was taken from the consumer's own read
        assert c.read_arrow(start="position").num_rows == 0  # "latest": only what comes next


def test_rerunning_a_cell_with_a_group_returns_the_same_rows(data_dir: Path) -> None:
    """The cell ``with Consumer(path, topic, group_id=...) as c: df = c.to_pandas()``
    run twice: a look commits nothing, so the second run sees what the first did."""
    produce(data_dir)
    seen = []
    for _ in range(2):
        with ottla.Consumer(data_dir, "orders", group_id="nb") as c:
            seen.append(rows(c.read_arrow()))
    assert seen == [ALL, ALL]
    assert ottla.Admin(data_dir).group_offsets("nb") == {}


def test_default_start_of_a_group_consumer_is_the_committed_offset(data_dir: Path) -> None:
    produce(data_dir)
    with ottla.Consumer(data_dir, group_id="billing") as committer:
        committer.assign([TP("orders", 0)])
        committer.commit({TP("orders", 0): 3})  # nothing committed for partition 1
    with ottla.Consumer(data_dir, "orders", group_id="billing") as c:
        want = every({0: range(3, 5), 1: range(3)})
        assert rows(c.read_arrow()) == want
        assert rows(c.read_arrow(start="committed")) == want
        assert rows(c.read_arrow(start="earliest")) == ALL
        assert c.committed(TP("orders", 0)) == 3
        assert c.committed(TP("orders", 1)) is None


def test_committed_needs_a_group(data_dir: Path) -> None:
    produce(data_dir)
    with ottla.Consumer(data_dir, "orders") as c, pytest.raises(ValueError, match="group_id"):
        c.read_arrow(start="committed")


def test_a_committed_offset_below_the_log_start_starts_at_the_log_start(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("r", config={"segment.bytes": 1024, "retention.bytes": 2048})
    with ottla.Producer(data_dir) as p:
        for i in range(200):
            p.send("r", b"%06d" % i + b"x" * 94, partition=0).get(10)
    start = admin.describe_topic("r").partitions[0].start_offset
    assert start > 0
    with ottla.Consumer(data_dir, group_id="old") as c:
        c.assign([TP("r", 0)])
        c.commit({TP("r", 0): 1})
        assert c.read_arrow().column("offset").to_pylist() == list(range(start, 200))
        assert c.read_arrow(start=0).column("offset").to_pylist() == list(range(start, 200))
        assert c.read_arrow(start=-1000).num_rows == 200 - start


# -- every start ------------------------------------------------------------------


def test_named_and_integer_starts(data_dir: Path) -> None:
    produce(data_dir)
    with ottla.Consumer(data_dir, "orders", auto_offset_reset="latest") as c:
        assert rows(c.read_arrow(start="earliest")) == ALL
        latest = c.read_arrow(start="latest")
        assert latest.num_rows == 0 and latest.schema.names[2] == "offset"
        assert rows(c.read_arrow(start=2)) == every({0: range(2, 5), 1: range(2, 3)})
        assert rows(c.read_arrow(start=0)) == ALL
        assert rows(c.read_arrow(start=10**12)) == []  # past the end: nothing
        assert rows(c.read_arrow(start=-2)) == every({0: range(3, 5), 1: range(1, 3)})
        assert rows(c.read_arrow(start=-(10**12))) == ALL  # before the log start: all


def test_datetime_and_timedelta_starts(data_dir: Path) -> None:
    pd = pytest.importorskip("pandas")
    produce(data_dir)
    t2 = datetime.fromtimestamp((T0 + 2 * 60_000) / 1000, timezone.utc)
    want = every({0: range(2, 5), 1: range(2, 3)})
    with ottla.Consumer(data_dir, "orders") as c:
        assert rows(c.read_arrow(start=t2)) == want
        assert rows(c.read_arrow(start=t2 - timedelta(milliseconds=1))) == want
        assert rows(c.read_arrow(start=t2 + timedelta(microseconds=999))) == want  # same ms
        assert rows(c.read_arrow(start=t2 + timedelta(milliseconds=1))) == every({0: range(3, 5)})
        # another timezone is the same instant
        plus2 = timezone(timedelta(hours=2))
        assert rows(c.read_arrow(start=t2.astimezone(plus2))) == want
        assert rows(c.to_pandas(start=pd.Timestamp(t2)).pipe(_frame_rows)) == want
        # a time after every record: nothing; before them all: everything
        assert c.read_arrow(start=t2 + timedelta(days=1)).num_rows == 0
        assert rows(c.read_arrow(start=t2 - timedelta(days=1))) == ALL
        # a timedelta is that long before now; these records are 56 to 60 minutes old
        assert c.read_arrow(start=timedelta(minutes=30)).num_rows == 0
        assert rows(c.read_arrow(start=timedelta(hours=2))) == ALL
        with ottla.Producer(data_dir) as p:
            p.send("orders", b"now", partition=2).get(10)
        assert c.read_arrow(start=timedelta(minutes=30)).column("value").to_pylist() == [b"now"]


def _frame_rows(df: Any) -> Any:
    return pa.table({"partition": df["partition"], "offset": df["offset"]})


@pytest.mark.parametrize(
    ("start", "error", "match"),
    [
        ("beginning", ValueError, "must be one of"),
        ("", ValueError, "must be one of"),
        (True, TypeError, "bool"),
        (1.5, TypeError, "float"),
        (date(2024, 5, 1), TypeError, "date"),
        (datetime(2024, 5, 1), ValueError, "naive"),
        (timedelta(seconds=-1), ValueError, "negative"),
    ],
)
def test_bad_starts_are_refused_before_anything_is_read(
    data_dir: Path, start: Any, error: type[Exception], match: str
) -> None:
    produce(data_dir)
    with ottla.Consumer(data_dir, "orders", auto_offset_reset="earliest") as c:
        with pytest.raises(error, match=match):
            c.read_arrow(start=start)
        with pytest.raises(error, match=match):
            c.to_pandas(start=start)
        assert c.read_arrow(start="position").num_rows == len(ALL)  # nothing was taken


# -- a look leaves the consumer as it was -------------------------------------------


def test_a_look_moves_no_position_pause_or_commit(data_dir: Path) -> None:
    produce(data_dir)
    with ottla.Consumer(data_dir, "orders", group_id="g", auto_offset_reset="earliest") as c:
        got = c.poll(timeout_ms=5000, max_records=4)
        assert sum(len(v) for v in got.values()) == 4
        c.commit()
        c.pause(TP("orders", 1))
        before = {tp: (c.position(tp), c.committed(tp)) for tp in sorted(c.assignment())}
        member = c.member_id
        for start in (None, "earliest", "latest", "committed", 1, -1, timedelta(days=1)):
            c.read_arrow(start=start)
        if importlib.util.find_spec("pandas") is not None:
            c.to_pandas()
        after = {tp: (c.position(tp), c.committed(tp)) for tp in sorted(c.assignment())}
        assert after == before
        assert c.paused() == {TP("orders", 1)}
        assert c.member_id == member
        # and the consumer's own read goes on where it was
        c.resume(TP("orders", 1))
        rest = [
            r.offset for recs in c.poll(timeout_ms=1000, max_records=100).values() for r in recs
        ]
        assert len(rest) == len(ALL) - 4


def test_a_look_reads_the_whole_topics_not_the_member_share(data_dir: Path) -> None:
    """A group member owns some partitions; a look shows the topic."""
    produce(data_dir)
    a = ottla.Consumer(data_dir, "orders", group_id="split", auto_offset_reset="earliest")
    b = ottla.Consumer(data_dir, "orders", group_id="split", auto_offset_reset="earliest")
    try:
        for _ in range(200):
            a.poll(timeout_ms=10)
            b.poll(timeout_ms=10)
            if a.assignment() and b.assignment():
                break
        assert a.assignment() and b.assignment()
        assert len(a.assignment()) < 3
        assert rows(a.read_arrow(start="earliest")) == ALL
        assert rows(b.read_arrow(start="earliest")) == ALL
    finally:
        a.close()
        b.close()


def test_a_manual_assignment_reads_only_its_partitions(data_dir: Path) -> None:
    produce(data_dir)
    with ottla.Consumer(data_dir, group_id="billing") as c:
        c.assign([TP("orders", 1)])
        assert rows(c.read_arrow()) == every({1: range(3)})
        assert c.position(TP("orders", 1)) == 3  # auto_offset_reset="latest" only now


def test_repeated_looks_with_limits_return_the_same_rows(data_dir: Path) -> None:
    produce(data_dir, per_partition=(400, 300, 200))
    with ottla.Consumer(data_dir, "orders") as c:
        first = c.read_arrow(max_records=250)
        assert first.num_rows == 250
        for _ in range(3):
            assert c.read_arrow(max_records=250).equals(first)
        small = c.read_arrow(max_bytes=20)
        assert small.num_rows >= 1
        assert sum(len(v) for v in small.column("value").to_pylist()) <= 20
        assert c.read_arrow(max_bytes=20).equals(small)


def test_a_look_raises_what_it_cannot_read(data_dir: Path) -> None:
    """A corrupt batch: the consumer's own read hands out the records before
    it and raises on the next call; a look has no next call, so it raises."""
    from test_arrow import _corrupt_base

    _seg, _pos, first, _value_of = _corrupt_base(data_dir)
    with ottla.Consumer(data_dir, auto_offset_reset="earliest") as c:
        c.assign([("cor", 0)])
        for _ in range(2):
            with pytest.raises(ottla.CorruptRecordError):
                c.read_arrow()
        # up to the damage, a look is fine
        assert c.read_arrow(max_records=first).num_rows == first
        assert c.read_arrow(start="position").num_rows == first
        with pytest.raises(ottla.CorruptRecordError):
            c.read_arrow(start="position")


def test_a_look_ends_at_the_high_watermark_seen_when_it_begins(data_dir: Path) -> None:
    """A writer appends while looks run: each look is a gap-free prefix of
    every partition from offset 0, ending at or before the end offsets read
    right after it (and at or after those read right before it)."""
    ottla.Admin(data_dir).create_topic("live", partitions=2)
    with ottla.Producer(data_dir) as p:
        for part in (0, 1):
            p.send_many("live", [b"x" * 100] * 20_000, partition=part).wait()
    stop = threading.Event()

    def writer() -> None:
        with ottla.Producer(data_dir, linger_ms=0) as p:
            while not stop.is_set():
                p.send_many("live", [b"y" * 100] * 50, partition=0).wait()
                p.send_many("live", [b"y" * 100] * 50, partition=1).wait()

    t = threading.Thread(target=writer)
    tps = [TP("live", 0), TP("live", 1)]
    with ottla.Consumer(data_dir, "live") as c:
        t.start()
        try:
            for _ in range(5):
                before = c.end_offsets(tps)
                look = c.read_arrow()
                after = c.end_offsets(tps)
                for tp in tps:
                    offs = [o for p, o in rows(look) if p == tp.partition]
                    assert offs == list(range(len(offs)))
                    assert before[tp] <= len(offs) <= after[tp]
        finally:
            stop.set()
            t.join(30)


def test_a_closed_consumer_refuses_a_look(data_dir: Path) -> None:
    produce(data_dir)
    c = ottla.Consumer(data_dir, "orders")
    c.close()
    for start in (None, "earliest", "position"):
        with pytest.raises(ottla.ClosedError):
            c.read_arrow(start=start)


def test_a_topic_that_does_not_exist_yet_is_an_empty_table(data_dir: Path) -> None:
    with ottla.Consumer(data_dir, "later") as c:
        t = c.read_arrow()
        assert t.num_rows == 0 and t.schema.names[0] == "topic"
        produce(data_dir)  # "orders", not "later"
        assert c.read_arrow().num_rows == 0


# -- the example notebooks, executed ----------------------------------------------


def _stream_text(cell: dict[str, Any]) -> str:
    return "".join(
        "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def test_there_is_an_example_notebook() -> None:
    assert NOTEBOOKS, "examples/*.ipynb"
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        assert nb["nbformat"] == 4
        assert any(c["cell_type"] == "code" for c in nb["cells"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
@pytest.mark.timeout(180)
def test_example_notebook_runs_in_a_kernel(path: Path, tmp_path: Path) -> None:
    """Execute every cell in a fresh IPython kernel (nbclient), in a temporary
    working directory; no cell may raise, and what each cell prints must be
    what the notebook shows (the notebook is committed with its outputs)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("pandas")
    nb = nbformat.read(str(path), as_version=4)
    expected = [_stream_text(c) for c in nb.cells if c.cell_type == "code"]
    client = nbclient.NotebookClient(
        nb,
        timeout=60,  # per cell
        startup_timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        # The kernel runs this interpreter (the ottla under test), whatever
        # kernelspecs the machine has.
        kernel_manager_class=_this_interpreter_kernel(),
    )
    client.execute()
    got = [_stream_text(c) for c in nb.cells if c.cell_type == "code"]
    assert got == expected
    assert list(tmp_path.iterdir()), "the notebook writes its data under its directory"


def _this_interpreter_kernel() -> Any:
    from jupyter_client.manager import KernelManager

    class ThisPython(KernelManager):
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd: list[str] = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, *cmd[1:]] if cmd and "python" in Path(cmd[0]).name else cmd

    return ThisPython
