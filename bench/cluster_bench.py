"""The replicated cluster's numbers (issue 14), side by side in one run.

    python bench/cluster_bench.py [--quick] [--trials N]

Three ``ottla serve`` processes on this machine (``ottla.Cluster``), and
confluent-kafka:

* produce throughput, 1 KiB records, ``acks=all``, to a topic with
  replication factor 3 (``min.insync.replicas=2``) and to one with
  replication factor 1 on the same cluster, interleaved rounds, medians;
  the RF 3 / RF 1 ratio (goal: at least 0.5);
* produce latency at a fixed offered load (1000 records/s, 500 in quick
  mode; from each ``produce()`` to its delivery report; ``linger.ms`` 5
  and at most 5 requests in flight, as Kafka's Java client: with
  librdkafka's unbounded in-flight requests and ``linger.ms`` 0 every
  record is its own request, and requests on one connection are served one
  at a time, by Kafka too, so an RF 3 partition's queue grows without
  bound once one acks=all round trip is longer than the gap between
  records): p50 and p99, RF 3 beside RF 1;
* failover: ``kill -9`` of the partition's leader while an idempotent
  ``acks=all`` producer sends a record every 5 ms, to the first delivery
  report of a record acknowledged after the kill (by the new leader, the
  old one being dead), with the broker's default settings and with the
  fastest settings (``FAST_BROKER``, ``FAST_CLIENT``); ``--trials``
  clusters each, median and max. Whether the killed leader was also the
  active controller is noted (a new controller is elected first);
  ``--kill controller`` places the leader there on purpose (``--kill
  other``: elsewhere), ``--settings fast|default`` runs one set only.

``rows(quick)`` returns the results as dicts for ``bench/run.py``'s table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

VALUE = b"x" * 1024
QUIET = {"log_level": 3}

#: The fastest failover settings found (docs/cluster.md): the broker
#: heartbeats every 30 ms and is fenced after 200 ms of silence; a voter
#: that hears no controller for 100-200 ms starts an election. (50 / 300 /
#: 100 gave 468, 487, 496 and 909 ms, the last with the controller killed;
#: 30 / 200 / 100 gave 266, 432, 488 and 492 ms, same machine, same hour.)
FAST_BROKER: dict[str, int] = {
    "broker_heartbeat_interval_ms": 30,
    "broker_session_timeout_ms": 200,
    "controller_quorum_election_timeout_ms": 100,
}
#: ... and a client that asks again at once: librdkafka refreshes the
#: metadata every 20 ms while a leader is unknown, retries and reconnects
#: after 20 ms; and every 100 ms whatever it knows (a partition left
#: leaderless while no request was in flight waits otherwise for
#: librdkafka's once-a-second scan).
FAST_CLIENT: dict[str, Any] = {
    "topic.metadata.refresh.interval.ms": 100,
    "topic.metadata.refresh.fast.interval.ms": 20,
    "retry.backoff.ms": 20,
    "retry.backoff.max.ms": 100,
    "reconnect.backoff.ms": 20,
    "reconnect.backoff.max.ms": 200,
}


def _create(bootstrap: str, topic: str, rf: int, replicas: list[int] | None = None) -> None:
    """One partition; ``replicas``: its replicas, the first the leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    placement: dict[str, Any] = (
        {"num_partitions": 1, "replica_assignment": [replicas]}
        if replicas
        else {"num_partitions": 1, "replication_factor": rf}
    )
    for f in admin.create_topics(
        [
            NewTopic(
                topic,
                # The cluster's default is 2: an RF 1 topic needs 1.
                config={"min.insync.replicas": str(min(rf, 2))},
                **placement,
            )
        ],
        operation_timeout=30,
    ).values():
        f.result(timeout=60)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu(stat: str) -> float:
    """utime + stime (seconds) of a /proc/.../stat file, 0 if unreadable."""
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command: state is field 3, utime and stime fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


def _proxy_tids() -> list[int]:
    """The native ids of this process's FaultProxy threads (ottla.Cluster
    forwards every connection, the brokers' replication included, through
    them: Python code in the client's process)."""
    out = []
    for t in threading.enumerate():
        parts = t.name.split("-")
        proxy = t.name.startswith("ottla-node-") and parts[-1].isdigit() and len(parts) >= 4
        if proxy and t.native_id is not None:
            out.append(t.native_id)
    return out


class CpuMeter:
    """CPU seconds (user + system) spent over a span, from /proc: the
    brokers' processes, this process's proxy threads, and the rest of this
    process (the client: confluent-kafka's threads and the Python loop).
    Wall time on a shared machine swings 2x; CPU per record does not."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.tids = _proxy_tids()
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        brokers = sum(_cpu(f"/proc/{pid}/stat") for pid in self.pids)
        proxies = sum(_cpu(f"/proc/self/task/{tid}/stat") for tid in self.tids)
        client = _cpu("/proc/self/stat") - proxies
        return brokers, proxies, client

    def stop(self) -> dict[str, float]:
        end = self._sample()
        b, x, c = (e - s for e, s in zip(end, self.start, strict=True))
        return {"brokers": b, "proxies": x, "client": c}


def _throughput(
    bootstrap: str, topic: str, n: int, pids: list[int] | None = None
) -> tuple[float, dict[str, float]]:
    """Records per second producing ``n`` 1 KiB records, acks=all, and the
    CPU seconds that took (see ``CpuMeter``)."""
    import confluent_kafka as ck

    p = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            **QUIET,
        }
    )
    p.produce(topic, b"warm-up")
    if p.flush(60) != 0:
        raise RuntimeError("warm-up record not acknowledged")
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    produce, poll = p.produce, p.poll
    meter = CpuMeter(pids or [])
    t0 = time.perf_counter()
    for _ in range(n):
        while True:
            try:
                produce(topic, VALUE, on_delivery=delivered)
                break
            except BufferError:
                poll(0.01)
    if p.flush(300) != 0:
        raise RuntimeError("records left unacknowledged")
    dt = time.perf_counter() - t0
    cpu = meter.stop()
    if errors:
        raise RuntimeError(f"{len(errors)} records failed: {errors[0]}")
    return n / dt, cpu


def _latency(bootstrap: str, topic: str, rate: float, seconds: float) -> list[float]:
    """Per-record latencies (seconds), one record every 1/rate s."""
    import confluent_kafka as ck

    p = ck.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "max.in.flight.requests.per.connection": 5,
            **QUIET,
        }
    )
    p.produce(topic, b"warm-up")
    p.flush(60)
    out: list[float] = []
    sent: dict[int, float] = {}

    def report(err: Any, msg: Any) -> None:
        if err is None:
            out.append(time.perf_counter() - sent.pop(int(msg.key())))

    interval = 1.0 / rate
    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i * interval
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            p.poll(min(due - now, 0.002))
        sent[i] = time.perf_counter()
        p.produce(topic, VALUE, key=str(i).encode(), on_delivery=report)
        p.poll(0)
    p.flush(60)
    return out


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _controller(bootstrap: str) -> int:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap, **QUIET}).list_topics(timeout=10)
    return int(md.controller_id)


def failover_once(
    root: Path,
    fast: bool,
    proxies: bool = False,
    idempotent: bool = True,
    controller: bool | None = None,
) -> tuple[float, bool]:
    """One cluster, one kill -9 of the partition's leader: seconds from the
    kill to the first record acknowledged after it, and whether the killed
    node was the active controller. ``controller``: the leader placed on
    the active controller (True) or elsewhere (False); None: as placed."""
    import confluent_kafka as ck

    from ottla.cluster import Cluster

    settings: dict[str, Any] = dict(FAST_BROKER) if fast else {}
    with Cluster(root, 3, fast=False, proxies=proxies, **settings) as c:
        replicas = None
        if controller is not None:
            ctl = _controller(c.bootstrap_servers)
            others = [n for n in c.node_ids if n != ctl]
            replicas = [ctl, *others] if controller else [*others, ctl]
        _create(c.bootstrap_servers, "f", 3, replicas)
        c.wait_in_sync("f")
        # (sent, acknowledged) per record: a record sent after the kill can
        # only be acknowledged by the new leader (a delivery report is
        # handed over at the next poll, so an old leader's acknowledgment
        # of an earlier record can be reported after the kill).
        sent_at: dict[int, float] = {}
        acked: list[tuple[float, float]] = []
        errors: list[str] = []
        conf: dict[str, Any] = {
            "bootstrap.servers": c.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": idempotent,
            "linger.ms": 0,
            "message.timeout.ms": 60_000,
            **QUIET,
        }
        if fast:
            conf.update(FAST_CLIENT)
        p = ck.Producer(conf)

        def report(err: Any, msg: Any) -> None:
            if err is None:
                acked.append((sent_at[int(msg.key())], time.monotonic()))
            else:
                errors.append(str(err))

        stop = threading.Event()
        seq = iter(range(1 << 62))

        def produce_one() -> None:
            i = next(seq)
            sent_at[i] = time.monotonic()
            p.produce("f", VALUE, key=str(i).encode(), on_delivery=report)

        def send() -> None:
            while not stop.is_set():
                produce_one()
                p.poll(0.005)

        for _ in range(20):
            produce_one()
        p.flush(30)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        time.sleep(1.0)
        leader = c.leader("f", 0)
        active = _controller(c.bootstrap_servers)
        t0 = time.monotonic()
        c.kill(leader)
        # Records sent once the process is reaped: one sent while the kill
        # was on its way could still be acknowledged by the old leader.
        dead = time.monotonic()
        deadline = t0 + 60
        while not any(s > dead for s, _ in acked) and time.monotonic() < deadline:
            time.sleep(0.002)
        stop.set()
        t.join(10)
        p.flush(30)
        after = sorted(a - t0 for s, a in acked if s > dead)
        if not after:
            raise RuntimeError(f"no record acknowledged within 60 s of the kill: {errors[:3]}")
        return after[0], leader == active


def rows(
    quick: bool = False,
    trials: int | None = None,
    *,
    proxies: bool = False,
    sections: tuple[str, ...] = ("throughput", "failover"),
    failover: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Result rows: keyword arguments for bench/run.py's ``Results.add``.
    ``proxies``: clients and replication through ``ottla.Cluster``'s Python
    proxies (threads of this process, which then compete with the client
    for the GIL and the cores) rather than to the listeners directly."""
    load = os.getloadavg()[0]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ottla-cluster-bench-") as tmp:
        if "throughput" in sections:
            out += _throughput_rows(Path(tmp), quick, proxies)
        if "failover" in sections:
            out += _failover_rows(Path(tmp), quick, trials, proxies, **(failover or {}))
    for row in out:
        row.setdefault("extra", {})["loadavg_at_start"] = load
    return out


def _throughput_rows(tmp: Path, quick: bool, proxies: bool) -> list[dict[str, Any]]:
    from ottla.cluster import Cluster

    n = 5_000 if quick else 100_000
    rounds = 1 if quick else 3
    rate, seconds = (500.0, 2.0) if quick else (1000.0, 10.0)
    out: list[dict[str, Any]] = []
    with Cluster(tmp / "tp", 3, proxies=proxies) as c:
        for rf in (1, 3):
            _create(c.bootstrap_servers, f"rf{rf}", rf)
        c.wait_in_sync("rf3")
        tput: dict[int, list[float]] = {1: [], 3: []}
        cpu: dict[int, list[dict[str, float]]] = {1: [], 3: []}
        pids = [pid for pid in (c.pid(i) for i in c.node_ids) if pid is not None]
        for r in range(rounds):
            for rf in (1, 3) if r % 2 == 0 else (3, 1):
                got, used = _throughput(c.bootstrap_servers, f"rf{rf}", n, pids)
                tput[rf].append(got)
                cpu[rf].append(used)
        lat = {rf: _latency(c.bootstrap_servers, f"rf{rf}", rate, seconds) for rf in (1, 3)}
    med = {rf: statistics.median(v) for rf, v in tput.items()}
    ratio = med[3] / med[1]
    # CPU microseconds per record, medians over the rounds, by where they
    # were spent: the three brokers, the proxies, the client.
    per_rec = {
        rf: {
            k: statistics.median(u[k] for u in cpu[rf]) * 1e6 / n
            for k in ("brokers", "proxies", "client")
        }
        for rf in (1, 3)
    }
    path = "through the proxies" if proxies else "direct"
    for rf in (1, 3):
        out.append(
            dict(
                workload="cluster produce 1 KiB acks=all",
                system=f"3 x ottla serve, RF {rf}",
                value=med[rf],
                unit="rec/s",
                ottla=True,
                kind="ottla",
                baseline=rf == 1,
                n=n,
                samples=tput[rf],
                note=(
                    f"RF 3 / RF 1 = {ratio:.2f} (goal >= 0.5); min.insync 2"
                    if rf == 3
                    else "same cluster, interleaved rounds"
                )
                + f"; {path}; CPU us/record: "
                + ", ".join(f"{k} {v:.1f}" for k, v in per_rec[rf].items()),
                extra={"cpu_us_per_record": per_rec[rf]},
            )
        )
    for rf in (1, 3):
        xs = lat[rf]
        out.append(
            dict(
                workload=f"cluster produce latency at {rate:g} rec/s",
                system=f"3 x ottla serve, RF {rf}",
                value=_pct(xs, 0.99) * 1e3,
                unit="ms",
                ottla=True,
                kind="ottla",
                baseline=rf == 1,
                n=len(xs),
                p50=_pct(xs, 0.5) * 1e6,
                p99=_pct(xs, 0.99) * 1e6,
                p999=_pct(xs, 0.999) * 1e6,
                note=f"value is p99; 1 KiB, acks=all, linger.ms 5, max.in.flight 5; {path}",
            )
        )
    return out


def _failover_rows(
    tmp: Path,
    quick: bool,
    trials: int | None,
    proxies: bool,
    kill: str = "any",
    settings: tuple[bool, ...] = (False, True),
) -> list[dict[str, Any]]:
    """``kill``: "controller" places the partition's leader on the active
    controller (both die together), "other" elsewhere, "any" as placed."""
    trials = trials or (1 if quick else 7)
    place = {"any": None, "controller": True, "other": False}[kill]
    out: list[dict[str, Any]] = []
    for fast in settings:
        times: list[float] = []
        by_kind: dict[bool, list[float]] = {True: [], False: []}
        was_controller = 0
        for i in range(trials):
            dt, ctl = failover_once(tmp / f"f{int(fast)}-{i}", fast, proxies, controller=place)
            times.append(dt)
            by_kind[ctl].append(dt)
            was_controller += ctl
        out.append(
            dict(
                workload="cluster failover, kill -9 of the leader",
                system="fastest settings" if fast else "default settings",
                value=statistics.median(times) * 1e3,
                unit="ms",
                ottla=True,
                kind="ottla",
                baseline=not fast,
                n=trials,
                samples=[round(t * 1e3, 1) for t in times],
                note=(
                    f"median of {trials}, max {max(times) * 1e3:.0f} ms; the leader was "
                    f"also the controller {was_controller}x; goal < "
                    + ("500 ms" if fast else "3000 ms")
                    + "".join(
                        f"; {name}: {', '.join(f'{t * 1e3:.0f}' for t in by_kind[k])} ms"
                        for k, name in ((True, "controller killed"), (False, "other"))
                        if by_kind[k]
                    )
                ),
                extra={"kill": kill},
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument(
        "--proxies",
        action="store_true",
        help="through ottla.Cluster's Python proxies, as before 2026-12-03",
    )
    ap.add_argument(
        "--only", choices=("throughput", "failover"), default=None, help="one section only"
    )
    ap.add_argument(
        "--kill",
        choices=("any", "controller", "other"),
        default="any",
        help="failover: the leader placed on the active controller, elsewhere, or as placed",
    )
    ap.add_argument(
        "--settings",
        choices=("both", "default", "fast"),
        default="both",
        help="failover: which settings to run",
    )
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores", flush=True)
    sections = (args.only,) if args.only else ("throughput", "failover")
    settings = {"both": (False, True), "default": (False,), "fast": (True,)}[args.settings]
    failover = {"kill": args.kill, "settings": settings}
    for row in rows(
        args.quick, args.trials, proxies=args.proxies, sections=sections, failover=failover
    ):
        extra = ""
        if row.get("p50") is not None:
            extra = f" (p50 {row['p50'] / 1e3:.2f} ms, p99.9 {row['p999'] / 1e3:.2f} ms)"
        samples = row.get("samples")
        print(
            f"{row['workload']:<42} {row['system']:<26} {row['value']:>10.1f} {row['unit']:<6}"
            f"{extra} {row['note']}" + (f" samples {samples}" if samples else ""),
            flush=True,
        )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
