"""The README's code runs unchanged against a broker, only the address
changed (issue 16): examples/quickstart.py given ``kafka://host:port``
instead of a directory, and the README's "A first look" block with the
address in place of ``"data"``. Real processes, as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ottla

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("confluent_kafka")


def run(code_or_file: list[str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *code_or_file],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_quickstart_runs_against_a_broker(broker: ottla.Broker, tmp_path: Path) -> None:
    address = f"kafka://{broker.bootstrap_servers}"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    out = run([str(ROOT / "examples" / "quickstart.py"), address], cwd)
    assert "wrote 10 records" in out and "read 10 new records" in out, out
    # The group's commits are the broker's: a second run reads nothing old.
    out = run([str(ROOT / "examples" / "quickstart.py"), address], cwd)
    assert "read 10 new records" in out, out  # the ten the second run wrote
    # What went over the wire is in the broker's directory.
    admin = ottla.Admin(broker.path)
    assert sum(p.records for p in admin.describe_topic("quickstart").partitions) == 20
    assert list(cwd.iterdir()) == []  # nothing written where it ran


def test_readme_first_look_runs_against_a_broker(broker: ottla.Broker, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A first look", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    code = block.group(1)
    assert code.count('"data"') >= 3, "the block names its directory"
    code = code.replace('"data"', repr(f"kafka://{broker.bootstrap_servers}"))
    cwd = tmp_path / "elsewhere"  # not the broker's directory (tmp_path/data)
    cwd.mkdir()
    out = run(["-c", code], cwd)
    lines = out.splitlines()
    assert lines[:3] == [
        "0 0 b'customer-7' b'{\"id\": 1}'",
        "0 1 None b'{\"id\": 2}'",
        "0 2 None b'{\"id\": 3}'",
    ], out
    assert "TopicDescription(name='orders'" in lines[3]
    assert list(cwd.iterdir()) == []  # nothing was written where it ran
    orders = ottla.Admin(broker.path).describe_topic("orders")
    assert sum(p.records for p in orders.partitions) == 3  # but in the broker's directory
