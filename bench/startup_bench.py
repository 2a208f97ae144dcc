"""Start-up: from a process's start until its broker answers.

    python bench/startup_bench.py [--quick]

Each target is started as a fresh process (``subprocess.Popen``, so fork and
exec count) on a fresh data directory, and timed until it prints its
``listening on HOST:PORT`` line, then until a raw ApiVersions request on a
new connection is answered ("ready"):

- ``ottla serve`` -- the console script installed next to this Python (else
  ``python -m ottla.cli``);
- librdkafka's mock cluster in a small compiled C program (the
  Kafka-compatible broker librdkafka ships for its own tests), started the
  same way: the cost of a process that needs no interpreter. Built with
  ``cc`` against the system's ``librdkafka.so.1`` (the library kcat uses);
  shown as unavailable without them;
- ``python -c pass`` and ``python -c "import ottla"``, to exit: the
  interpreter's own start-up (with whatever ``.pth`` files this environment
  runs) and what importing ottla adds to it.

The targets run interleaved, the order rotating each round; medians are
reported with the spread. ``rows(quick)`` returns the results as dicts for
``bench/run.py``'s table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# ApiVersions v0: size, api_key 18, version 0, correlation id 1, null client id.
_API_VERSIONS = struct.pack(">ihhih", 10, 18, 0, 1, -1)

_MOCK_C = r"""
#include <stdio.h>
#include <unistd.h>
typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_conf_s rd_kafka_conf_t;
typedef struct rd_kafka_mock_cluster_s rd_kafka_mock_cluster_t;
rd_kafka_conf_t *rd_kafka_conf_new(void);
rd_kafka_t *rd_kafka_new(int type, rd_kafka_conf_t *conf, char *errstr, size_t errstr_size);
rd_kafka_mock_cluster_t *rd_kafka_mock_cluster_new(rd_kafka_t *rk, int broker_cnt);
const char *rd_kafka_mock_cluster_bootstraps(const rd_kafka_mock_cluster_t *mcluster);
int main(void) {
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(0 /* producer */, rd_kafka_conf_new(), err, sizeof err);
    if (!rk) { fprintf(stderr, "%s\n", err); return 1; }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) { fprintf(stderr, "no mock cluster\n"); return 1; }
    printf("listening on %s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    char b;
    while (read(0, &b, 1) > 0) {}  /* until stdin closes */
    return 0;
}
"""


# Children may write .pyc files (the warm-up rounds do), as an installed
# package has them: PYTHONDONTWRITEBYTECODE would time the compiler instead.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class Unavailable(Exception):
    """A peer that cannot run here."""


def ottla_serve_command() -> list[str]:
    script = Path(sys.executable).parent / "ottla"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "ottla.cli", "serve"]


def build_mock(workdir: str) -> list[str]:
    """The compiled mock-cluster program, or Unavailable."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise Unavailable("no C compiler")
    src = Path(workdir) / "mock.c"
    exe = Path(workdir) / "mock"
    src.write_text(_MOCK_C)
    p = subprocess.run(
        [cc, "-O2", str(src), "-o", str(exe), "-l:librdkafka.so.1"],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise Unavailable(f"cannot build against librdkafka.so.1: {p.stderr.strip()[:200]}")
    return [str(exe)]


def _answer(addr: str) -> None:
    host, _, port = addr.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(_API_VERSIONS)
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            if not chunk:
                raise RuntimeError("connection closed before the ApiVersions answer")
            head += chunk
        (size,) = struct.unpack(">i", head)
        while size > 0:
            chunk = s.recv(size)
            if not chunk:
                raise RuntimeError("connection closed inside the ApiVersions answer")
            size -= len(chunk)


def _cpu_ms(pid: int) -> float:
    """CPU time (user + system, every thread) a running process has used, in
    ms: from /proc/PID/task/*/schedstat (nanoseconds), so it is exact and
    does not count time spent waiting for a CPU on a busy machine."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e6


def time_broker(argv: list[str], data_args: bool) -> tuple[float, float, float]:
    """(ms to the "listening on" line, ms to the first ApiVersions answer,
    CPU ms used by the process when its line was read)."""
    with tempfile.TemporaryDirectory(prefix="startup-") as d:
        extra = ["--data", d, "--listen", "127.0.0.1:0"] if data_args else []
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_ENV,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            t1 = time.perf_counter()
            cpu = _cpu_ms(proc.pid)
            if not line.startswith("listening on "):
                raise RuntimeError(f"{argv[0]} did not start: {line!r}")
            _answer(line.split()[-1])
            t2 = time.perf_counter()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return (t1 - t0) * 1000, (t2 - t0) * 1000, cpu


def time_exit(argv: list[str]) -> tuple[float, float, float]:
    """(ms to exit, the same, CPU ms the process used)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=_ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return wall, wall, (usage.ru_utime + usage.ru_stime) * 1000


def rows(quick: bool = False) -> list[dict[str, Any]]:
    """Result rows: keyword arguments for bench/run.py's ``Results.add``."""
    rounds = 7 if quick else 25
    mock_name = "librdkafka mock cluster, compiled C"
    with tempfile.TemporaryDirectory(prefix="startup-build-") as build:
        targets: dict[str, Callable[[], tuple[float, float, float]]] = {
            "ottla serve": lambda: time_broker(ottla_serve_command(), True),
            "python -c pass": lambda: time_exit([sys.executable, "-c", "pass"]),
            "import ottla": lambda: time_exit([sys.executable, "-c", "import ottla"]),
        }
        unavailable = ""
        try:
            mock = build_mock(build)
            targets[mock_name] = lambda: time_broker(mock, False)
        except Unavailable as e:
            unavailable = str(e)
        names = list(targets)
        got: dict[str, list[tuple[float, float, float]]] = {k: [] for k in names}
        for _ in range(2):  # warm the page cache and the .pyc files
            for k in names:
                targets[k]()
        for r in range(rounds):
            for k in names[r % len(names) :] + names[: r % len(names)]:
                got[k].append(targets[k]())

    out: list[dict[str, Any]] = []

    def add(workload: str, name: str, i: int, note: str, *, ottla: bool, kind: str) -> None:
        if name not in got:
            out.append(
                dict(
                    workload=workload,
                    system=name,
                    value=None,
                    unit="ms",
                    ottla=ottla,
                    kind=kind,
                    status="unavailable",
                    note=unavailable,
                )
            )
            return
        xs = [x[i] for x in got[name]]
        out.append(
            dict(
                workload=workload,
                system=name,
                value=statistics.median(xs),
                unit="ms",
                ottla=ottla,
                kind=kind,
                baseline=ottla,
                samples=xs,
                note=f"{note}; median of {len(xs)} interleaved runs, "
                f"{min(xs):.1f}-{max(xs):.1f} ms",
            )
        )

    for workload, i, note in [
        ("serve start-up (listening)", 0, 'process start to its "listening on" line'),
        ("serve start-up (ready)", 1, "process start to the first ApiVersions answer"),
        ("serve start-up (CPU)", 2, "CPU time used by the process up to its listening line"),
    ]:
        add(workload, "ottla serve", i, note, ottla=True, kind="ottla")
        add(workload, mock_name, i, note, ottla=False, kind="peer")
    for workload, i in [("python start-up", 0), ("python start-up (CPU)", 2)]:
        add(
            workload,
            "import ottla",
            i,
            "python -c 'import ottla', to exit",
            ottla=True,
            kind="ottla",
        )
        add(
            workload,
            "python -c pass",
            i,
            "the interpreter alone, to exit (site and .pth files included)",
            ottla=False,
            kind="ceiling",
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print(f"python: {sys.executable}; ottla serve: {' '.join(ottla_serve_command())}")
    for r in rows(args.quick):
        if r["value"] is None:
            print(f"{r['workload']:<28} {r['system']:<36} {'unavailable':>10}  {r['note']}")
            continue
        print(f"{r['workload']:<28} {r['system']:<36} {r['value']:>8.1f} ms   ({r['note']})")
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
