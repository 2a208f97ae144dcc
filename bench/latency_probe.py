"""Where the end-to-end latency goes: a probe beside bench/run.py's latency rows.

The same paced sender as bench/run.py (fixed schedule, intended send time in
each record, so no coordinated omission), with three more timestamps per
record, all from the one system-wide monotonic clock:

    intended --(sender lag: sleep overshoot)--> s0 --(send() call)--> s1
             --(delivery: wake-up, GIL, consumer loop)--> received

Each component is reported at p50 and p99, plus each component's median over
the records whose total latency is at or above the total's p99 (what the
tail is made of). The receiving thread's (or process's) CPU time is
reported too, to price a busy-poll.

    python bench/latency_probe.py                      # all four paths, 2 s each
    python bench/latency_probe.py --paths ottla-thread --busy-poll-us 0 50 --rounds 3

Paths: ottla-thread (two threads, one process), ottla-proc (two processes,
one directory), queue-thread (queue.SimpleQueue between two threads) and
pipe-proc (os.pipe to a child process). Rounds interleave the paths and
settings; medians across rounds are printed at the end.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import queue
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

VALUE = struct.Struct("<qq84x")  # intended send time, index, padding: 100 bytes
COMPONENTS = ("lag", "send", "deliver", "total")


def low_timer_slack() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except Exception:
        pass


def paced(
    send: Callable[[bytes], Any], n: int, rate: float
) -> tuple[array.array, array.array, array.array]:
    """bench/run.py's pacer, stamping s0 (before send) and s1 (after)."""
    low_timer_slack()
    intended = array.array("q", bytes(8 * n))
    s0 = array.array("q", bytes(8 * n))
    s1 = array.array("q", bytes(8 * n))
    pack = VALUE.pack
    now = time.monotonic_ns
    sleep = time.sleep
    interval = 1e9 / rate
    t0 = now() + 20_000_000
    for i in range(n):
        t = t0 + int(i * interval)
        ahead = t - now()
        if ahead > 0:
            sleep(ahead / 1e9)
        a = now()
        send(pack(t, i))
        intended[i] = t
        s0[i] = a
        s1[i] = now()
    return intended, s0, s1


def switches() -> int:
    """This thread's voluntary context switches (each sleep that blocked)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def receive_loop(it: Any, n: int, out: array.array) -> int:
    """out[index] = receive time; `it` yields record values (bytes)."""
    now = time.monotonic_ns
    unpack = VALUE.unpack_from
    got = 0
    for v in it:
        out[unpack(v)[1]] = now()
        got += 1
        if got == n:
            break
    return got


def ottla_values(c: Any) -> Any:
    for r in c:
        yield r.value


def pipe_values(fd: int, size: int) -> Any:
    read = os.read
    while True:
        v = read(fd, size)
        if not v:
            return
        while len(v) < size:
            more = read(fd, size - len(v))
            if not more:
                return
            v += more
        yield v


def pct(xs: list[int], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] / 1e3


def breakdown(
    intended: array.array, s0: array.array, s1: array.array, recv: array.array, warmup: int
) -> dict[str, float]:
    rows = []
    for i in range(warmup, len(intended)):
        r = recv[i]
        if r == 0:
            continue
        rows.append((s0[i] - intended[i], s1[i] - s0[i], r - s1[i], r - intended[i]))
    out: dict[str, float] = {"samples": len(rows)}
    for k, name in enumerate(COMPONENTS):
        col = sorted(x[k] for x in rows)
        out[f"{name}_p50"] = pct(col, 0.50)
        out[f"{name}_p99"] = pct(col, 0.99)
        out[f"{name}_p999"] = pct(col, 0.999)
    cut = out["total_p99"] * 1e3
    tail = [x for x in rows if x[3] >= cut]
    for k, name in enumerate(COMPONENTS):
        out[f"tail_{name}"] = pct(sorted(x[k] for x in tail), 0.5)
    return out


def run_path(path: str, n: int, rate: float, busy_poll_us: int) -> dict[str, Any]:
    recv = array.array("q", bytes(8 * n))
    if path == "queue-thread":
        q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        cpu = [0.0]
        sw = [0]

        def qvalues() -> Any:
            get = q.get
            while True:
                yield get(timeout=10)

        def rx() -> None:
            c0, v0 = time.thread_time(), switches()
            receive_loop(qvalues(), n, recv)
            cpu[0] = time.thread_time() - c0
            sw[0] = switches() - v0

        th = threading.Thread(target=rx, daemon=True)
        th.start()
        w0 = time.monotonic()
        intended, a, b = paced(q.put, n, rate)
        th.join(60)
        return dict(
            breakdown(intended, a, b, recv, n // 10),
            rx_cpu=cpu[0] / (time.monotonic() - w0),
            rx_switches=sw[0] / n,
        )
    import ottla

    with tempfile.TemporaryDirectory(prefix="latprobe") as d:
        ottla.Admin(d, create=True).create_topic("lat", 1)
        if path == "ottla-thread":
            kw: dict[str, Any] = {} if busy_poll_us < 0 else {"busy_poll_us": busy_poll_us}
            c = ottla.Consumer(
                d, "lat", auto_offset_reset="earliest", consumer_timeout_ms=5000, **kw
            )
            cpu = [0.0]
            sw = [0]

            def orx() -> None:
                c0, v0 = time.thread_time(), switches()
                receive_loop(ottla_values(c), n, recv)
                cpu[0] = time.thread_time() - c0
                sw[0] = switches() - v0

            th = threading.Thread(target=orx, daemon=True)
            th.start()
            p = ottla.Producer(d, linger_ms=0)
            w0 = time.monotonic()
            try:
                intended, a, b = paced(lambda v: p.send("lat", v), n, rate)
            finally:
                p.close()
            th.join(60)
            c.close()
            return dict(
                breakdown(intended, a, b, recv, n // 10),
                rx_cpu=cpu[0] / (time.monotonic() - w0),
                rx_switches=sw[0] / n,
            )
        # Two processes: the child receives and writes its receive times.
        out = os.path.join(d, "recv.bin")
        args = [sys.executable, __file__, "--child", path, d, str(n), out, str(busy_poll_us)]
        child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("child not ready")
            w0 = time.monotonic()
            if path == "ottla-proc":
                p = ottla.Producer(d, linger_ms=0)
                try:
                    intended, a, b = paced(lambda v: p.send("lat", v), n, rate)
                finally:
                    p.close()
            else:
                fd = child.stdin.fileno()
                intended, a, b = paced(lambda v: os.write(fd, v), n, rate)
                child.stdin.close()
            summary = json.loads(child.stdout.readline() or "{}")
            child.wait(60)
            wall = time.monotonic() - w0
            with open(out, "rb") as f:
                recv = array.array("q", f.read())
            return dict(
                breakdown(intended, a, b, recv, n // 10),
                rx_cpu=summary.get("cpu", 0.0) / wall,
                rx_switches=summary.get("switches", 0) / n,
            )
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


def child(argv: list[str]) -> int:
    path, d, n_s, out, bp = argv
    n = int(n_s)
    recv = array.array("q", bytes(8 * n))
    if path == "ottla-proc":
        import ottla

        kw: dict[str, Any] = {} if int(bp) < 0 else {"busy_poll_us": int(bp)}
        c = ottla.Consumer(d, "lat", auto_offset_reset="earliest", consumer_timeout_ms=10_000, **kw)
        c.position(ottla.TopicPartition("lat", 0))
        it: Any = ottla_values(c)
    else:
        it = pipe_values(0, VALUE.size)
    print("ready", flush=True)
    c0, v0 = time.process_time(), switches()
    receive_loop(it, n, recv)
    cpu = time.process_time() - c0
    sw = switches() - v0
    with open(out, "wb") as f:
        f.write(recv.tobytes())
    print(json.dumps({"cpu": cpu, "switches": sw}), flush=True)
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--paths", nargs="+", default=["ottla-thread", "queue-thread", "ottla-proc", "pipe-proc"]
    )
    ap.add_argument(
        "--busy-poll-us",
        nargs="+",
        type=int,
        default=[-1],
        help="ottla settings to alternate (-1: the default)",
    )
    ap.add_argument("--rate", type=float, default=50_000)
    ap.add_argument("--secs", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    n = int(a.rate * a.secs)
    runs: list[tuple[str, int]] = []
    for p in a.paths:
        for bp in a.busy_poll_us if p.startswith("ottla") else [-1]:
            runs.append((p, bp))
    results: dict[tuple[str, int], list[dict[str, Any]]] = {r: [] for r in runs}
    print(f"load average {os.getloadavg()}", flush=True)
    for rnd in range(a.rounds):
        order = runs[rnd % len(runs) :] + runs[: rnd % len(runs)]
        for path, bp in order:
            st = run_path(path, n, a.rate, bp)
            results[(path, bp)].append(st)
            print(f"round {rnd} {path:<13} busy_poll_us={bp:>3}  " + fmt(st), flush=True)
    if a.rounds > 1:
        print(f"medians of {a.rounds} rounds; load average {os.getloadavg()}")
        for (path, bp), sts in results.items():
            med = {k: sorted(s[k] for s in sts)[len(sts) // 2] for k in sts[0]}
            print(f"  {path:<13} busy_poll_us={bp:>3}  " + fmt(med))
    return 0


def fmt(st: dict[str, Any]) -> str:
    parts = [f"{c} {st[c + '_p50']:.0f}/{st[c + '_p99']:.0f}" for c in COMPONENTS]
    parts.append(f"total p99.9 {st['total_p999']:.0f}")
    tail = "/".join(f"{st['tail_' + c]:.0f}" for c in COMPONENTS)
    return (
        "  ".join(parts)
        + f"  | p99 tail (lag/send/deliver/total) {tail}  | rx cpu {st['rx_cpu']:.0%}, sleeps/record {st['rx_switches']:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
