"""Helpers shared by the test modules (plain functions, no fixtures)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ottla

PathT = str | os.PathLike[str]


# Runs the `ottla` command in a child interpreter: `[sys.executable, "-c", CLI_CODE, *args]`.
CLI_CODE = "import sys; from ottla.cli import main; sys.exit(main(sys.argv[1:]))"


class Spawn(Protocol):
    """The ``spawn`` fixture: ``spawn(code, *args) -> Child``."""

    def __call__(self, code: str, *args: object, env: dict[str, str] | None = None) -> Child: ...


class Child:
    """A ``python -c`` child process whose stdout/stderr are collected by
    background threads, so the pipes never fill up and lines can be awaited
    with a timeout."""

    def __init__(self, code: str, *args: object, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        # The child must import the same ottla as the tests.
        full_env.pop("PYTHONSTARTUP", None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self._lines: list[str] = []
        self.partial: str | None = None
        self._err: list[str] = []
        self._cv = threading.Condition()
        self._eof = False
        self._t_out = threading.Thread(target=self._read_out, daemon=True)
        self._t_err = threading.Thread(target=self._read_err, daemon=True)
        self._t_out.start()
        self._t_err.start()

    # -- readers ---------------------------------------------------------
    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                # A line cut short by kill -9: the child never finished it.
                self.partial = line
                continue
            with self._cv:
                self._lines.append(line[:-1])
                self._cv.notify_all()
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    # -- queries ---------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[str]:
        with self._cv:
            return list(self._lines)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def wait_line(
        self, pred: Callable[[str], bool] = lambda s: True, timeout: float = 10.0, start: int = 0
    ) -> str:
        """Wait for a stdout line (index >= ``start``) satisfying ``pred``."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cv:
            while True:
                while i < len(self._lines):
                    if pred(self._lines[i]):
                        return self._lines[i]
                    i += 1
                if self._eof:
                    raise AssertionError(
                        f"child exited (rc={self.proc.poll()}) without the expected line; "
                        f"stdout tail={self._lines[-5:]!r} stderr={self.stderr[-2000:]!r}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for a child line; "
                        f"stdout tail={self._lines[-5:]!r} stderr={self.stderr[-2000:]!r}"
                    )
                self._cv.wait(left)

    def wait_lines(self, n: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self._lines) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cv.wait(left)
            return list(self._lines)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for exit; on timeout kill the child and fail."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"child did not exit within {timeout}s; stdout tail={self.lines()[-5:]!r} "
                f"stderr={self.stderr[-2000:]!r}"
            ) from None
        self._t_out.join(5)
        self._t_err.join(5)
        return rc

    def sigkill(self) -> None:
        """kill -9 the child and reap it."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self._t_out.join(5)
        self._t_err.join(5)

    def kill(self) -> None:
        """Teardown: make sure the process is gone and reaped."""
        try:
            self.sigkill()
        except Exception:
            pass
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                if f is not None:
                    f.close()
            except Exception:
                pass


def read_all(
    path: PathT,
    topic: str,
    partitions: Sequence[int] | None = None,
    timeout: float = 15.0,
    **consumer_kw: object,
) -> dict[int, list[ottla.Record]]:
    """Every record of ``topic`` (per partition, in offset order), read from
    the log start to the end offsets seen when reading starts."""
    if partitions is None:
        n = len(ottla.Admin(path).describe_topic(topic).partitions)
        partitions = list(range(n))
    tps = [ottla.TopicPartition(topic, p) for p in partitions]
    out: dict[int, list[ottla.Record]] = {p: [] for p in partitions}
    kw = dict(auto_offset_reset="earliest", enable_auto_commit=False)
    kw.update(consumer_kw)
    c = ottla.Consumer(path, **kw)  # type: ignore[call-overload]
    try:
        c.assign(tps)
        c.seek_to_beginning()
        end = c.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "read_all timed out"
            for tp, recs in c.poll(timeout_ms=200).items():
                out[tp.partition].extend(recs)
    finally:
        c.close()
    return out


def read_values(
    path: PathT, topic: str, partition: int = 0, timeout: float = 15.0, **consumer_kw: object
) -> list[tuple[int, Any, Any]]:
    """[(offset, key, value), ...] of one partition (key and value: bytes or
    None, or what the deserializers in ``consumer_kw`` make of them)."""
    recs = read_all(path, topic, [partition], timeout, **consumer_kw)[partition]
    return [(r.offset, r.key, r.value) for r in recs]


def log_files(part_dir: Path) -> list[Path]:
    return sorted(p for p in part_dir.iterdir() if p.suffix == ".log")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (bound to port 0, then closed)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def kafka_poll(c: Any, n: int, timeout: float = 20.0) -> list[Any]:
    """Poll a kafka-python ``KafkaConsumer`` until it has handed out ``n``
    records (all of them, in arrival order), failing after ``timeout``
    seconds."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"got {len(out)} of {n}"
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    return out


def fill_filesystem(mnt: Path) -> Path:
    """Write zeros into a filler file on ``mnt`` until the filesystem is
    full (down to single pages); returns the filler's path."""
    filler = mnt / "filler"
    block = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
    st = os.statvfs(mnt)
    assert st.f_bavail * st.f_frsize < 64 * 1024, "filesystem not full"
    return filler
