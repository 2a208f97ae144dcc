"""The ``ottla`` command, run as a real process (``python -m ottla.cli``).

Records written by the command are checked with the Python API (and the
other way round), so the command is never only checked against itself.
Tests of ``serve``, ``--bootstrap-server`` and the group API run once
``ottla.Broker`` / ``Admin.describe_group`` exist in the build.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import ottla
from helpers import CLI_CODE, Spawn, free_port, read_all, wait_until
from ottla.cli._util import parse_time_ms
from ottla.cli.backend import Message
from ottla.cli.consume import compile_format

CLI = [sys.executable, "-m", "ottla.cli"]

needs_broker = pytest.mark.skipif(
    not hasattr(ottla, "Broker"), reason="ottla.Broker not in this build"
)
needs_group_api = pytest.mark.skipif(
    not hasattr(ottla.Admin, "describe_group"), reason="Admin.describe_group not in this build"
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OTTLA_DATA", None)
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    """A finished command: stdout as bytes, stderr as text."""

    returncode: int
    stdout: bytes
    stderr: str


def run(
    *args: object,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> Result:
    """Run the command to completion."""
    p = subprocess.run(
        [*CLI, *map(str, args)],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=_env(env),
        cwd=cwd,
    )
    return Result(p.returncode, p.stdout, p.stderr.decode())


def ok(
    *args: object,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> str:
    """Run, insist on exit status 0, return stdout as text."""
    p = run(*args, input=input, env=env, timeout=timeout, cwd=cwd)
    assert p.returncode == 0, f"ottla {' '.join(map(str, args))} -> {p.returncode}: {p.stderr}"
    return p.stdout.decode()


def fails(
    code: int,
    *args: object,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> str:
    """Run, insist on exit status ``code``, return stderr."""
    p = run(*args, input=input, env=env, timeout=timeout, cwd=cwd)
    assert p.returncode == code, (
        f"ottla {' '.join(map(str, args))}: expected {code}, got {p.returncode}; "
        f"stdout={p.stdout[-500:]!r} stderr={p.stderr}"
    )
    assert "Traceback" not in p.stderr, p.stderr
    return p.stderr


# -- unit: parsing helpers -----------------------------------------------------
def test_parse_time_forms() -> None:
    assert parse_time_ms("1700000000123") == 1700000000123
    assert parse_time_ms("2023-11-14T22:13:20Z") == 1700000000000
    assert parse_time_ms("2023-11-14T23:13:20+01:00") == 1700000000000
    assert parse_time_ms("2023-11-14T22:13:20.5+00:00") == 1700000000500
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time_ms("last tuesday")


def test_compile_format() -> None:
    m = Message("t", 2, 7, 1700000000000, b"k", b"v", [("a", b"1"), ("b", None)])
    assert compile_format("%v")(m) == b"v\n"
    assert (
        compile_format("%t/%p/%o %T %k\\t%v [%h] 100%%")(m)
        == b"t/2/7 1700000000000 k\tv [a=1,b] 100%\n"
    )
    assert compile_format("%d")(m) == b"2023-11-14T22:13:20.000+00:00\n"
    # A null prints as nothing (kcat), or as --null-literal (null.literal).
    nulls = Message("t", 0, 0, 0, None, None, [("h", None), ("e", b"")])
    assert compile_format("%k|%v|%h")(nulls) == b"||h,e=\n"
    assert compile_format("%v")(nulls) == b"\n"
    assert compile_format("%k|%v|%h", "NULL")(nulls) == b"NULL|NULL|h=NULL,e=\n"
    assert compile_format("%v", "NULL")(nulls) == b"NULL\n"


# -- help and usage --------------------------------------------------------------
COMMANDS = [
    [],
    ["topics"],
    ["topics", "list"],
    ["topics", "create"],
    ["topics", "describe"],
    ["topics", "delete"],
    ["topics", "alter"],
    ["produce"],
    ["consume"],
    ["groups"],
    ["groups", "list"],
    ["groups", "describe"],
    ["groups", "reset-offsets"],
    ["serve"],
]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "ottla")
def test_help_everywhere(words: list[str]) -> None:
    out = ok(*words, "--help")
    assert out.startswith("usage: ottla")
    assert "example" in out


def test_entry_point_installed() -> None:
    script = Path(sys.executable).parent / "ottla"
    if not script.exists():
        pytest.skip("the ottla console script is not installed next to this python")
    p = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == f"ottla {ottla.__version__}"


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["topics"],
        ["consume"],
        ["topics", "create", "t", "--partitions", "many"],
        ["topics", "create", "t", "--partitions", "0"],
        ["topics", "create", "t", "--config", "retention.ms"],
        ["topics", "alter", "t"],
        ["topics", "alter", "t", "--config", "a=1", "--delete-config", "a"],
        ["consume", "t", "--offset", "somewhere"],
        ["consume", "t", "--offset", "5"],
        ["consume", "t", "--offset", "end", "--from-time", "1"],
        ["consume", "t", "--group", "g", "--offset", "5"],
        ["consume", "t", "--group", "g", "--offset", "-5"],
        ["consume", "t", "--group", "g", "--partition", "0"],
        ["consume", "t", "--from-time", "yesterday"],
        ["consume", "t", "--format", "%q"],
        ["produce", "t", "--key-separator", ""],
        ["groups", "reset-offsets", "--group", "g"],
        ["groups", "reset-offsets", "--group", "g", "--to-earliest", "--to-latest"],
        ["serve", "--listen", "localhost:http"],
        ["topics", "list", "--data", "d", "--bootstrap-server", "127.0.0.1:1"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    err = fails(2, *args, cwd=tmp_path)
    assert "usage: ottla" in err and "error:" in err
    assert not (tmp_path / "ottla-data").exists()  # nothing was created on the way


# -- topics ------------------------------------------------------------------------
def test_topics_lifecycle(data_dir: Path) -> None:
    d = ["--data", data_dir]
    assert "created topic orders (3 partitions)" in ok(
        "topics", "create", "orders", "--partitions", 3, "--config", "retention.ms=3600000", *d
    )
    ok("topics", "create", "audit", *d)
    assert ok("topics", "list", *d).split() == ["audit", "orders"]

    admin = ottla.Admin(data_dir)
    desc = admin.describe_topic("orders")
    assert len(desc.partitions) == 3 and desc.overrides == {"retention.ms": "3600000"}

    with ottla.Producer(data_dir) as p:
        p.send_many("orders", [b"x" * 50] * 5, partition=2).wait(10)
    out = ok("topics", "describe", "orders", *d)
    assert "topic: orders  partitions: 3  records: 5" in out
    rows = {
        int(m.group(1)): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", out, re.M)
    }
    assert rows == {0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 5, 5)}
    assert "retention.ms=3600000 *" in out
    assert "segment.bytes=1073741824\n" in out  # a default, unmarked

    ok(
        "topics",
        "alter",
        "orders",
        "--partitions",
        4,
        "--config",
        "segment.bytes=1048576",
        "--delete-config",
        "retention.ms",
        *d,
    )
    desc = admin.describe_topic("orders")
    assert len(desc.partitions) == 4
    assert desc.overrides == {"segment.bytes": "1048576"}

    err = fails(1, "topics", "create", "orders", *d)
    assert err.count("\n") == 1 and "already exists" in err
    ok("topics", "create", "orders", "--if-not-exists", *d)
    err = fails(1, "topics", "alter", "orders", "--config", "no.such.key=1", *d)
    assert "no.such.key" in err and err.count("\n") == 1
    err = fails(1, "topics", "create", "bad/name", *d)
    assert "bad/name" in err and err.count("\n") == 1

    assert "deleted topic orders" in ok("topics", "delete", "orders", *d)
    assert admin.list_topics() == ["audit"]
    err = fails(1, "topics", "delete", "orders", *d)
    assert "unknown topic 'orders'" in err
    ok("topics", "delete", "orders", "--if-exists", *d)


def test_data_dir_from_env_and_default(tmp_path: Path) -> None:
    ok("topics", "create", "a", env={"OTTLA_DATA": str(tmp_path / "envdir")})
    assert ottla.Admin(tmp_path / "envdir").list_topics() == ["a"]
    ok("topics", "create", "b", cwd=tmp_path)  # ./ottla-data
    assert ottla.Admin(tmp_path / "ottla-data").list_topics() == ["b"]
    assert ok("topics", "list", cwd=tmp_path).split() == ["b"]
    # --data before the command name works too
    assert ok("--data", tmp_path / "envdir", "topics", "list").split() == ["a"]


def test_unknown_topic_and_missing_directory_exit_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for args in (["topics", "list"], ["consume", "real"], ["groups", "list"]):
        err = fails(1, *args, "--data", data_dir)
        assert err.count("\n") == 1, err
        assert "no ottla data directory" in err and str(data_dir) in err
        assert not data_dir.exists()  # a read did not create it
    ok("topics", "create", "real", "--data", data_dir)
    for args in (
        ["consume", "nope"],
        ["produce", "nope", "--no-auto-create-topics"],
        ["topics", "describe", "nope"],
        ["topics", "alter", "nope", "--partitions", "2"],
    ):
        err = fails(1, *args, "--data", data_dir, input=b"x\n")
        assert err.count("\n") == 1, err
        assert "unknown topic 'nope'" in err and "ottla topics create nope" in err
    assert ottla.Admin(data_dir).list_topics() == ["real"]  # produce created nothing
    err = fails(1, "consume", "real", "--partition", 3, "--data", data_dir)
    assert "no partition 3" in err


# -- produce and consume ---------------------------------------------------------------
def test_produce_keys_and_headers_then_consume(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "ev", "--partitions", 2, *d)
    lines = b"user-1:clicked\nuser-2:left:early\nno key here\n:empty key\n\nuser-1:again\n"
    p = run(
        "produce", "ev", "--key-separator", ":", "-H", "source=cli", "-H", "v=2", *d, input=lines
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr.strip() == "produced 6 records to ev"

    # What is in the log, read with the Python API.
    got = {
        (r.key, r.value, tuple(r.headers))
        for recs in read_all(data_dir, "ev").values()
        for r in recs
    }
    hdrs = (("source", b"cli"), ("v", b"2"))
    assert got == {
        (b"user-1", b"clicked", hdrs),
        (b"user-2", b"left:early", hdrs),
        (None, b"no key here", hdrs),
        (b"", b"empty key", hdrs),
        (None, b"", hdrs),
        (b"user-1", b"again", hdrs),
    }
    # Keyed records went where the partitioner puts them: same key, same partition.
    by_key = {
        (r.key, r.partition) for recs in read_all(data_dir, "ev").values() for r in recs if r.key
    }
    assert len({p for k, p in by_key if k == b"user-1"}) == 1

    out = ok("consume", "ev", "--format", "%k|%v|%h", "--null-literal", "null", *d)
    assert sorted(out.splitlines()) == sorted(
        [
            "user-1|clicked|source=cli,v=2",
            "user-2|left:early|source=cli,v=2",
            "null|no key here|source=cli,v=2",
            "|empty key|source=cli,v=2",
            "null||source=cli,v=2",
            "user-1|again|source=cli,v=2",
        ]
    )
    out = ok("consume", "ev", "--print-key", "--key-separator", " => ", *d)
    assert "user-2 => left:early" in out.splitlines()
    # Within a partition, offset order.
    out = ok("consume", "ev", "--format", "%p %o %v", *d)
    for part in ("0", "1"):
        offs = [int(line.split()[1]) for line in out.splitlines() if line.split()[0] == part]
        assert offs == sorted(offs) and offs == list(range(len(offs)))


def test_produce_file_to_partition_and_binary_values(data_dir: Path, tmp_path: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "f", "--partitions", 3, *d)
    src = tmp_path / "in.txt"
    values = [f"line {i} \u00e9\t\x01".encode() for i in range(1000)]
    src.write_bytes(b"\n".join(values))  # no final newline: the last line still counts
    p = run("produce", "f", "--file", src, "--partition", 1, *d)
    assert p.returncode == 0 and p.stderr.strip() == "produced 1000 records to f"
    assert [r.value for r in read_all(data_dir, "f", [1])[1]] == values
    assert ok("consume", "f", "--partition", 1, *d).encode().split(b"\n")[:-1] == values
    assert ok("consume", "f", "--partition", 0, *d) == ""
    err = fails(1, "produce", "f", "--partition", 7, *d, input=b"x\n")
    assert "no partition 7" in err
    err = fails(1, "produce", "f", "--file", tmp_path / "missing.txt", *d)
    assert "missing.txt" in err


def test_produce_stops_at_a_rejected_record(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "small", "--config", "max.message.bytes=200", *d)
    p = run("produce", "small", *d, input=b"fits\n" + b"x" * 500 + b"\nnever sent\n")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert lines[0] == "stopped after 1 acknowledged record"
    assert lines[1].startswith("ottla produce: error: ") and "200" in lines[1]
    assert [r.value for r in read_all(data_dir, "small")[0]] == [b"fits"]


def test_consume_from_offset_time_and_limits(data_dir: Path) -> None:
    d = ["--data", data_dir]
    # Timestamps in 2023: retention.ms=-1 keeps them (the default 7 days would not).
    ok("topics", "create", "t", "--partitions", 2, "--config", "retention.ms=-1", *d)
    base = 1_700_000_000_000
    with ottla.Producer(data_dir) as p:
        for i in range(10):
            p.send("t", f"v{i}".encode(), partition=0, timestamp=base + i * 1000)
        for i in range(3):
            p.send("t", f"w{i}".encode(), partition=1, timestamp=base + i * 1000)
        p.flush(10)

    def values(*args: object) -> list[str]:
        return ok("consume", "t", *args, *d).splitlines()

    assert values("--partition", 0, "--offset", 7) == ["v7", "v8", "v9"]
    assert values("--partition", 0, "--offset", 99) == []  # past the end: nothing, not an error
    assert sorted(values("--offset", "-2")) == ["v8", "v9", "w1", "w2"]
    assert values("--offset", "end") == []
    assert values("--partition", 1, "--from-beginning") == ["w0", "w1", "w2"]
    # --from-time: epoch ms and ISO-8601; the first record at or after the time
    assert sorted(values("--from-time", base + 8000)) == ["v8", "v9"]
    assert sorted(values("--from-time", base + 1500)) == [
        "v2",
        "v3",
        "v4",
        "v5",
        "v6",
        "v7",
        "v8",
        "v9",
        "w2",
    ]
    assert sorted(values("--from-time", "2023-11-14T22:13:28Z")) == ["v8", "v9"]
    assert values("--from-time", "2099-01-01") == []
    # --max-messages, and the offsets printed with a format
    assert values("--partition", 0, "--max-messages", 4, "--format", "%o:%v") == [
        "0:v0",
        "1:v1",
        "2:v2",
        "3:v3",
    ]
    assert values("--partition", 0, "--max-messages", 0) == []
    assert values("--format", "%T", "--partition", 1) == [
        str(base),
        str(base + 1000),
        str(base + 2000),
    ]


def test_consume_follow_sees_new_records_and_stops_on_signals(data_dir: Path, spawn: Spawn) -> None:
    ok("topics", "create", "live", "--data", data_dir)
    with ottla.Producer(data_dir) as p:
        p.send("live", b"old").get(10)

    # --offset end: only records written after it started.
    child = spawn(CLI_CODE, "consume", "live", "--follow", "--offset", "end", "--data", data_dir)
    written = ["old"]
    with ottla.Producer(data_dir) as p:
        # Until the child has found the end, what is written goes before its
        # start and is never printed: probe until one probe shows.
        deadline = time.monotonic() + 30
        while not any(line.startswith("probe-") for line in child.lines()):
            assert time.monotonic() < deadline, child.stderr
            written.append(f"probe-{len(written)}")
            p.send("live", written[-1].encode()).get(10)
            time.sleep(0.2)
        for i in range(5):
            written.append(f"new-{i}")
            p.send("live", f"new-{i}".encode()).get(10)
            child.wait_line(f"new-{i}".__eq__, timeout=20)
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(20) == 128 + signal.SIGTERM
    assert "old" not in child.lines() and child.lines()[-5:] == [f"new-{i}" for i in range(5)]
    assert "Traceback" not in child.stderr

    # Ctrl-C: exit status 130, what was printed stays printed.
    child = spawn(CLI_CODE, "consume", "live", "--follow", "--data", data_dir)
    child.wait_line(lambda s: s == "new-4", timeout=20)
    os.kill(child.pid, signal.SIGINT)
    assert child.wait(20) == 130
    assert child.lines() == written


def test_consume_follow_timeout_and_max_messages(data_dir: Path, spawn: Spawn) -> None:
    ok("topics", "create", "q", "--data", data_dir)
    # --timeout-ms ends an idle --follow with status 0
    p = run("consume", "q", "--follow", "--timeout-ms", 300, "--data", data_dir)
    assert p.returncode == 0 and p.stdout == b""
    # --max-messages ends --follow once that many arrived
    child = spawn(CLI_CODE, "consume", "q", "--follow", "--max-messages", 3, "--data", data_dir)
    with ottla.Producer(data_dir) as prod:
        for i in range(5):
            prod.send("q", f"m{i}".encode()).get(10)
    assert child.wait(30) == 0
    assert child.lines() == ["m0", "m1", "m2"]


def test_consume_group_commits_and_resumes(data_dir: Path, spawn: Spawn) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "g", "--partitions", 2, *d)
    ok("produce", "g", "--partition", 0, *d, input=b"a\nb\nc\n")
    ok("produce", "g", "--partition", 1, *d, input=b"x\ny\n")
    first = ok("consume", "g", "--group", "app", "--from-beginning", *d).splitlines()
    assert sorted(first) == ["a", "b", "c", "x", "y"]
    assert ok("consume", "g", "--group", "app", *d) == ""  # all committed
    ok("produce", "g", "--partition", 1, *d, input=b"z\n")
    assert ok("consume", "g", "--group", "app", *d).splitlines() == ["z"]
    assert ottla.Admin(data_dir).group_offsets("app") == {
        ("g", 0): {"committed": 3, "end": 3, "lag": 0},
        ("g", 1): {"committed": 3, "end": 3, "lag": 0},
    }
    # --follow with a group, stopped by SIGTERM, commits what it printed
    child = spawn(CLI_CODE, "consume", "g", "--group", "app", "--follow", *d)
    ok("produce", "g", "--partition", 0, *d, input=b"d\ne\n")
    child.wait_line(lambda s: s == "e", timeout=20)
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(20) == 128 + signal.SIGTERM
    assert ottla.Admin(data_dir).group_offsets("app")[("g", 0)]["committed"] == 5


def test_consume_into_a_closed_pipe(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "big", *d)
    with ottla.Producer(data_dir) as p:
        p.send_many("big", [b"y" * 100] * 50_000).wait(30)
    proc = subprocess.Popen(
        [*CLI, "consume", "big", *map(str, d)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"y" * 100 + b"\n"
        proc.stdout.close()  # like `| head -1`
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0 and b"Traceback" not in err, err


# -- progress bar -------------------------------------------------------------------
def _run_on_pty_stderr(args: Sequence[object], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal (stdout piped); returns (rc, stdout, stderr bytes)."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                r, _, _ = select.select([master], [], [], 0.2)
                if r:
                    data = os.read(master, 65536)
                    if not data:
                        return
                    chunks.append(data)
                elif proc.poll() is not None:
                    return
            except OSError:
                return

    proc = subprocess.Popen(
        [*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=slave, env=_env()
    )
    os.close(slave)
    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        t.join(10)
        os.close(master)
    return proc.returncode, out, b"".join(chunks)


def test_progress_bar_only_on_a_terminal(data_dir: Path, tmp_path: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "p", *d)
    src = tmp_path / "lines.txt"
    src.write_bytes(b"".join(b"record %d\n" % i for i in range(20_000)))

    # Piped: no bar, just the count.
    p = run("produce", "p", "--file", src, *d)
    assert p.returncode == 0
    assert p.stderr == "produced 20000 records to p\n"
    p = run("consume", "p", "--max-messages", 20_000, *d)
    assert p.returncode == 0 and p.stderr == "" and p.stdout.count(b"\n") == 20_000
    p = run("groups", "reset-offsets", "--group", "g", "--topic", "p", "--to-latest", *d)
    assert "\r" not in p.stderr and "\x1b" not in p.stderr

    # On a terminal: a bar, erased at the end, then the count.
    rc, _, err = _run_on_pty_stderr(["produce", "p", "--file", src, *d])
    assert rc == 0
    assert b"\rproduce p [" in err and b"%" in err
    assert err.rstrip().endswith(b"produced 20000 records to p")
    rc, out, err = _run_on_pty_stderr(["consume", "p", "--max-messages", 30_000, *d])
    assert rc == 0 and out.count(b"\n") == 30_000 and b"\rconsume p [" in err


# -- groups ------------------------------------------------------------------------
def test_groups_list_describe_and_reset(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "orders", "--partitions", 2, "--config", "retention.ms=-1", *d)
    base = 1_700_000_000_000
    with ottla.Producer(data_dir) as producer:
        for i in range(6):
            producer.send("orders", f"o{i}".encode(), partition=i % 2, timestamp=base + i * 1000)
        producer.flush(10)
    assert ok("groups", "list", *d) == ""
    ok("consume", "orders", "--group", "billing", "--from-beginning", "--max-messages", 6, *d)
    assert ok("groups", "list", *d).split() == ["billing"]

    out = ok("groups", "describe", "billing", *d)
    assert out.startswith("group: billing  state: ")
    rows = re.findall(r"^orders\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    assert sorted(rows) == [("0", "3", "3", "0"), ("1", "3", "3", "0")]
    err = fails(1, "groups", "describe", "nobody", *d)
    assert "nobody" in err

    # Dry run: prints the plan, changes nothing.
    p = run("groups", "reset-offsets", "--group", "billing", "--to-earliest", *d)
    assert p.returncode == 0 and "dry run" in p.stderr
    plan = re.findall(r"^orders\s+(\d+)\s+(\S+)\s+(\d+)", p.stdout.decode(), re.M)
    assert sorted(plan) == [("0", "3", "0"), ("1", "3", "0")]
    committed = {
        tp: o["committed"] for tp, o in ottla.Admin(data_dir).group_offsets("billing").items()
    }
    assert committed == {("orders", 0): 3, ("orders", 1): 3}

    # --execute, to a time: partition 0 has o0@0s o2@2s o4@4s; 1 has o1@1s o3@3s o5@5s
    ok(
        "groups",
        "reset-offsets",
        "--group",
        "billing",
        "--topic",
        "orders",
        "--to-datetime",
        "2023-11-14T22:13:22Z",
        "--execute",
        *d,
    )
    committed = {
        tp: o["committed"] for tp, o in ottla.Admin(data_dir).group_offsets("billing").items()
    }
    assert committed == {("orders", 0): 1, ("orders", 1): 1}
    assert sorted(ok("consume", "orders", "--group", "billing", *d).split()) == [
        "o2",
        "o3",
        "o4",
        "o5",
    ]

    ok("groups", "reset-offsets", "--group", "billing", "--to-offset", 2, "--execute", *d)
    assert sorted(ok("consume", "orders", "--group", "billing", *d).split()) == ["o4", "o5"]
    ok(
        "groups", "reset-offsets", "--group", "billing", "--to-offset", 99, "--execute", *d
    )  # kept within the log
    committed = {
        tp: o["committed"] for tp, o in ottla.Admin(data_dir).group_offsets("billing").items()
    }
    assert committed == {("orders", 0): 3, ("orders", 1): 3}
    ok("groups", "reset-offsets", "--group", "billing", "--to-earliest", "--execute", *d)
    assert len(ok("consume", "orders", "--group", "billing", *d).split()) == 6

    err = fails(1, "groups", "reset-offsets", "--group", "newbie", "--to-latest", *d)
    assert "no committed offsets" in err
    err = fails(
        1, "groups", "reset-offsets", "--group", "billing", "--topic", "nope", "--to-latest", *d
    )
    assert "unknown topic 'nope'" in err


def test_reset_refused_while_the_group_has_a_live_member(data_dir: Path, spawn: Spawn) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "busy", *d)
    ok("produce", "busy", *d, input=b"1\n2\n")
    ok("consume", "busy", "--group", "live", "--from-beginning", *d)
    member = spawn(CLI_CODE, "consume", "busy", "--group", "live", "--follow", *d)
    ok("produce", "busy", *d, input=b"3\n")
    member.wait_line(lambda s: s == "3", timeout=20)  # it is a member now
    err = fails(1, "groups", "reset-offsets", "--group", "live", "--to-earliest", "--execute", *d)
    assert "live" in err and err.count("\n") == 1
    os.kill(member.pid, signal.SIGTERM)
    assert member.wait(20) == 128 + signal.SIGTERM
    assert ottla.Admin(data_dir).group_offsets("live")[("busy", 0)]["committed"] == 3
    ok("groups", "reset-offsets", "--group", "live", "--to-earliest", "--execute", *d)
    assert ottla.Admin(data_dir).group_offsets("live")[("busy", 0)]["committed"] == 0


@needs_group_api
def test_groups_describe_shows_live_members(data_dir: Path, spawn: Spawn) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "m", "--partitions", 2, *d)
    ok("produce", "m", *d, input=b"1\n")
    member = spawn(
        CLI_CODE, "consume", "m", "--group", "watchers", "--follow", "--from-beginning", *d
    )
    member.wait_line(lambda s: s == "1", timeout=20)
    out = ok("groups", "describe", "watchers", *d)
    assert "state: Stable" in out and "members: 1" in out
    assert "m-0" in out and "m-1" in out  # its assignment
    os.kill(member.pid, signal.SIGTERM)
    member.wait(20)
    out = ok("groups", "describe", "watchers", *d)
    assert "state: Empty" in out and "members: 0" in out


# -- serve and --bootstrap-server ------------------------------------------------------
def test_serve_without_a_broker_build_says_so(data_dir: Path) -> None:
    if hasattr(ottla, "Broker"):
        pytest.skip("this build has ottla.Broker")
    err = fails(1, "serve", "--data", data_dir, "--listen", "127.0.0.1:0")
    assert "ottla.Broker" in err


def test_bootstrap_server_needs_confluent_kafka(tmp_path: Path) -> None:
    # A confluent_kafka package that cannot be imported stands in for a missing one.
    fake = tmp_path / "shadow" / "confluent_kafka"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no confluent-kafka here')\n")
    for words in (["topics", "list"], ["consume", "t"]):
        err = fails(
            1,
            *words,
            "--bootstrap-server",
            "127.0.0.1:9",
            env={"PYTHONPATH": str(fake.parent)},
        )
        assert "confluent-kafka" in err and "ottla[kafka]" in err, err


def test_bootstrap_server_unreachable_exit_1() -> None:
    pytest.importorskip("confluent_kafka")
    port = free_port()  # a port nobody listens on
    err = fails(1, "topics", "list", "--bootstrap-server", f"127.0.0.1:{port}", timeout=120)
    assert err.count("\n") == 1 and "error" in err


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@needs_broker
def test_serve_talks_kafka_and_stops_cleanly_on_sigterm(data_dir: Path, spawn: Spawn) -> None:
    kafka = pytest.importorskip("kafka")
    server = spawn(
        CLI_CODE, "serve", "--data", data_dir, "--listen", "127.0.0.1:0", "--num-partitions", 2
    )
    line = server.wait_line(lambda s: s.startswith("listening on "), timeout=30)
    addr = line.split()[-1]
    port = int(addr.rsplit(":", 1)[1])
    assert port > 0 and not _port_is_free(port)

    producer = kafka.KafkaProducer(bootstrap_servers=addr)
    try:
        for i in range(3):
            producer.send("served", key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"1")]).get(
                timeout=30
            )
    finally:
        producer.close()
    # The same records through the command's broker backend and in the directory.
    out = ok("consume", "served", "--bootstrap-server", addr, "--format", "%k=%v %h", timeout=120)
    assert sorted(out.splitlines()) == ["k0=v0 h=1", "k1=v1 h=1", "k2=v2 h=1"]
    assert "served" in ok("topics", "list", "--bootstrap-server", addr, timeout=120).split()

    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(30) == 0
    assert "Traceback" not in server.stderr
    assert wait_until(lambda: _port_is_free(port), timeout=10)
    got = sorted((r.key, r.value) for recs in read_all(data_dir, "served").values() for r in recs)
    assert got == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]


@needs_broker
def test_serve_ctrl_c_and_port_in_use(data_dir: Path, spawn: Spawn) -> None:
    server = spawn(CLI_CODE, "serve", "--data", data_dir, "--listen", "127.0.0.1:0")
    addr = server.wait_line(lambda s: s.startswith("listening on "), timeout=30).split()[-1]
    err = fails(1, "serve", "--data", data_dir.parent / "other", "--listen", addr)
    assert err.strip().splitlines()[-1].startswith("ottla serve: error: ")
    os.kill(server.pid, signal.SIGINT)
    assert server.wait(30) == 0


@needs_broker
def test_commands_against_a_broker(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    with ottla.Broker(data_dir, port=0, auto_create_topics=False) as broker:
        b = ["--bootstrap-server", broker.bootstrap_servers]
        ok(
            "topics",
            "create",
            "remote",
            "--partitions",
            2,
            "--config",
            "retention.ms=3600000",
            *b,
            timeout=120,
        )
        assert "remote" in ok("topics", "list", *b, timeout=120).split()
        assert (
            ottla.Admin(data_dir).describe_topic("remote").overrides.get("retention.ms")
            == "3600000"
        )

        p = run(
            "produce",
            "remote",
            "-K",
            ":",
            "-H",
            "src=cli",
            *b,
            input=b"a:1\nb:2\nc:3\n",
            timeout=120,
        )
        assert p.returncode == 0 and p.stderr.strip() == "produced 3 records to remote", p.stderr
        got = sorted(
            (r.key, r.value, tuple(r.headers))
            for recs in read_all(data_dir, "remote").values()
            for r in recs
        )
        assert got == [
            (k, v, (("src", b"cli"),)) for k, v in ((b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
        ]

        out = ok("consume", "remote", "--format", "%k:%v", *b, timeout=120)
        assert sorted(out.splitlines()) == ["a:1", "b:2", "c:3"]
        out = ok("topics", "describe", "remote", *b, timeout=120)
        assert "partitions: 2  records: 3" in out and "retention.ms=3600000" in out

        ok("topics", "alter", "remote", "--partitions", 3, *b, timeout=120)
        assert len(ottla.Admin(data_dir).describe_topic("remote").partitions) == 3

        out = ok("consume", "remote", "--group", "rg", "--from-beginning", *b, timeout=120)
        assert sorted(out.split()) == [
            "1",
            "2",
            "3",
        ]
        assert "rg" in ok("groups", "list", *b, timeout=120).split()
        out = ok("groups", "describe", "rg", *b, timeout=120)
        assert re.search(r"^remote\s+\d+\s+\d+\s+\d+\s+0\b", out, re.M)
        ok(
            "groups",
            "reset-offsets",
            "--group",
            "rg",
            "--to-earliest",
            "--execute",
            *b,
            timeout=120,
        )
        assert sorted(ok("consume", "remote", "--group", "rg", *b, timeout=120).split()) == [
            "1",
            "2",
            "3",
        ]

        err = fails(1, "consume", "nope", *b, timeout=120)
        assert "unknown topic 'nope'" in err
        ok("topics", "delete", "remote", *b, timeout=120)
        assert "remote" not in ottla.Admin(data_dir).list_topics()
