"""The broker's memory under hostile clients: RSS of an ``ottla serve``
child process under the three attacks of issue 12 item 5.

    python bench/memory_attacks.py                 # all three, the issue's sizes
    python bench/memory_attacks.py --attack frames --json

Each attack runs against a fresh ``ottla serve`` (so VmHWM, the peak RSS
since the process started, is the attack's own), over raw sockets:

* ``fetch``: 6 connections each send one Fetch (61 bytes) asking for the
  whole partition (``max_bytes`` = ``partition_max_bytes`` = 2^31-1) of a
  ``--partition-mb`` partition, then read their responses and leave;
* ``noread``: 40 connections send the same Fetch and never read the
  responses, then leave;
* ``frames``: 10 connections each send a frame announcing
  ``max_request_bytes`` (100 MiB) and send all of it but the last byte,
  then leave.

Reported per attack, in MiB: RSS at rest before the attack, the peak
(VmHWM), RSS while the attack holds (the highest sampled every 50 ms until it stops growing),
and RSS after the clients left (once it has stopped falling for 3 s).
``--noread-max-bytes`` sets the noread Fetch size (the 2^31-1 default is
capped by the broker's ``fetch_max_bytes``, 55 MiB; 14 MiB responses show
what malloc keeps after the clients leave). Extra ``ottla serve`` flags (``--serve-arg=--queued-max-
request-bytes=...``) go to every broker; a build without a flag refuses it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIB = 1 << 20
TOPIC = "big"
CLI = "import sys; from ottla.cli import main; sys.exit(main(sys.argv[1:]))"


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


@contextlib.contextmanager
def serve(data: Path, extra: list[str]) -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    """``ottla serve`` over ``data`` on a free port: (process, address)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CLI,
            "serve",
            "--data",
            str(data),
            "--listen",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"ottla serve did not start: {line!r}")
        host, port = line.split()[-1].rsplit(":", 1)
        yield proc, (host, int(port))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def fetch_frame(correlation_id: int, max_bytes: int) -> bytes:
    """Fetch v4 of partition 0 of TOPIC from offset 0 (61 bytes with its prefix)."""
    body = struct.pack(">iiiib", -1, 0, 0, max_bytes, 0)
    body += struct.pack(">i", 1) + struct.pack(">h", len(TOPIC)) + TOPIC.encode()
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, max_bytes)
    msg = struct.pack(">hhi", 1, 4, correlation_id) + struct.pack(">h", 1) + b"x" + body
    return struct.pack(">i", len(msg)) + msg


def read_response(sock: socket.socket) -> int:
    """Read one whole response; its size."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    (n,) = struct.unpack(">i", head)
    left = n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        left -= len(chunk)
    return n


def fill(data: Path, mb: int) -> None:
    import ottla

    ottla.Admin(data, create=True).create_topic(TOPIC, partitions=1)
    value = os.urandom(MIB - 1024)
    with ottla.Producer(data) as p:
        for _ in range(mb):
            p.send(TOPIC, value, partition=0)
        p.flush()


def sample(pid: int, seconds: float, until: Callable[[], bool] | None = None) -> int:
    """The highest VmRSS seen over ``seconds`` (or until ``until()``)."""
    top = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        top = max(top, status(pid)["VmRSS"])
        if until is not None and until():
            break
        time.sleep(0.05)
    return top


def plateau(pid: int, limit: float = 30.0, still: float = 1.5) -> int:
    """The highest VmRSS seen until it has not grown for ``still`` seconds
    (the broker has done what the attack asked), at most ``limit`` seconds."""
    top = status(pid)["VmRSS"]
    grew = time.monotonic()
    end = grew + limit
    while time.monotonic() < end and time.monotonic() - grew < still:
        time.sleep(0.05)
        now = status(pid)["VmRSS"]
        if now > top + MIB:
            grew = time.monotonic()
        top = max(top, now)
    return top


def settle(pid: int, limit: float = 15.0, still: float = 3.0) -> int:
    """VmRSS once it has stopped falling for ``still`` seconds (at most
    ``limit`` seconds): what stays after the clients left."""
    low = status(pid)["VmRSS"]
    fell = time.monotonic()
    end = fell + limit
    while time.monotonic() < end and time.monotonic() - fell < still:
        time.sleep(0.1)
        now = status(pid)["VmRSS"]
        if now < low - MIB:
            fell = time.monotonic()
        low = min(low, now)
    return low


def attack_fetch(pid: int, addr: tuple[str, int], n: int = 6) -> dict[str, int]:
    socks = [socket.create_connection(addr, timeout=60) for _ in range(n)]
    for i, s in enumerate(socks):
        s.sendall(fetch_frame(i + 1, 2**31 - 1))
    held = plateau(pid)
    sizes = [read_response(s) for s in socks]
    for s in socks:
        s.close()
    return {"held": held, "response_bytes": max(sizes)}


def attack_noread(
    pid: int, addr: tuple[str, int], n: int = 40, max_bytes: int = 2**31 - 1
) -> dict[str, int]:
    socks = []
    for i in range(n):
        s = socket.create_connection(addr, timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(fetch_frame(i + 1, max_bytes))
        socks.append(s)
    held = plateau(pid)
    for s in socks:
        s.close()
    return {"held": held}


def attack_frames(
    pid: int, addr: tuple[str, int], n: int = 10, size: int = 100 * MIB
) -> dict[str, int]:
    socks = [socket.create_connection(addr, timeout=60) for _ in range(n)]
    sent = [0] * n
    chunk = b"\0" * MIB

    def push(i: int) -> None:
        s = socks[i]
        try:
            s.sendall(struct.pack(">i", size))
            left = size - 1
            while left:
                k = min(left, len(chunk))
                s.sendall(chunk[:k])
                left -= k
                sent[i] += k
        except OSError:
            pass  # shut down below while blocked: the broker stopped reading

    threads = [threading.Thread(target=push, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    held = sample(pid, 15.0, until=lambda: not any(t.is_alive() for t in threads))
    held = max(held, plateau(pid))
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
    for t in threads:
        t.join(10)
    return {"held": held, "bytes_sent": sum(sent)}


ATTACKS: dict[str, Callable[..., dict[str, int]]] = {
    "fetch": attack_fetch,
    "noread": attack_noread,
    "frames": attack_frames,
}


def run(
    attack: str, partition_mb: int, extra: list[str], tmp: str | None, noread_max_bytes: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        data = Path(d) / "data"
        if attack in ("fetch", "noread"):
            fill(data, partition_mb)
        else:
            import ottla

            ottla.Admin(data, create=True).close()
        with serve(data, extra) as (proc, addr):
            # One request, so the runtime and its threads exist before "rest".
            with socket.create_connection(addr, timeout=30) as s:
                s.sendall(struct.pack(">ihhih", 11, 18, 0, 1, 1) + b"x")
                read_response(s)
            time.sleep(0.5)
            rest = status(proc.pid)["VmRSS"]
            if attack == "noread":
                out = attack_noread(proc.pid, addr, max_bytes=noread_max_bytes)
            else:
                out = ATTACKS[attack](proc.pid, addr)
            after = settle(proc.pid)
            peak = status(proc.pid)["VmHWM"]
        return {"attack": attack, "rest": rest, "peak": peak, **out, "after": after}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--attack", choices=[*ATTACKS, "all"], default="all")
    ap.add_argument("--partition-mb", type=int, default=200)
    ap.add_argument(
        "--noread-max-bytes",
        type=int,
        default=2**31 - 1,
        help="max_bytes of the noread attack's Fetch requests (default 2^31-1)",
    )
    ap.add_argument("--serve-arg", action="append", default=[], help="extra ottla serve flag")
    ap.add_argument("--tmp", default=None, help="where the data directories go")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = list(ATTACKS) if args.attack == "all" else [args.attack]
    rows = [
        run(a, args.partition_mb, args.serve_arg, args.tmp, args.noread_max_bytes) for a in names
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'attack':8} {'rest':>7} {'peak':>7} {'held':>7} {'after':>7}  (MiB)")
    for r in rows:
        print(
            f"{r['attack']:8} {r['rest'] / MIB:7.0f} {r['peak'] / MIB:7.0f} "
            f"{r['held'] / MIB:7.0f} {r['after'] / MIB:7.0f}"
        )


if __name__ == "__main__":
    main()
