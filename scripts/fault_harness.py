#!/usr/bin/env python3
"""Fault harness for ottla's replicated cluster (issue 14).

Starts an ``ottla.Cluster``, runs four producers writing numbered records
with ``acks=all`` (confluent-kafka and kafka-python, each once idempotent
and once plain) and two consumer groups (one confluent-kafka consumer, one
kafka-python consumer) recording every ``(partition, offset, record)`` they
are handed, and injects random faults: kill -9, pause/resume, isolate/heal
(connections reset, or a silent black hole), ``peers-cut`` (the node cut
off from the other nodes and the controllers while clients still reach it:
an old leader that must not acknowledge what it cannot replicate), clean
restart, and restart with an emptied data directory (a broker-only node
loses everything; a controller voter loses its partitions but keeps the
quorum's state: losing a voter's Raft state is KIP-853's problem, see
docs/design/replication.md). The leader of a partition is the target most
often. ``--concurrent 2`` hits two distinct nodes at once (use it with
``--brokers 5``). After each fault the harness waits for every replica to
be back in sync; at the end it heals everything, stops the producers, lets
the consumers catch up, stops every node and checks every replica with
``ottla.testing.checker`` (acknowledged records exactly once / at least
once at their offset in every replica, no gaps, replicas byte-identical
below the high watermark, no stale tail, every read at its offset in the
final log).

Prints a summary with counts; exit status 1 if the checker found a
violation or an idempotent producer failed fatally (out of sequence after a
fail-over: the cluster lost its producer state), 2 if this build has no
cluster mode, 3 if the cluster did not recover. The seed fixes the
schedule (each fault's kind, target role, hold time and pause); what the
cluster does in between depends on timing, as in any real run.

    python scripts/fault_harness.py --brokers 3 --faults 20 --seed 7
    python scripts/fault_harness.py --brokers 5 --concurrent 2 --faults 50 --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ottla.cluster import Cluster, ClusterError
from ottla.testing.checker import (
    History,
    check,
    read_partition_batches,
    read_partition_log,
)

TOPIC = "harness"
FAULTS = ("kill", "pause", "isolate", "blackhole", "peers-cut", "restart", "wipe")
#: (client, idempotent, record id prefix)
WRITERS = (
    ("confluent", True, "ci"),
    ("confluent", False, "cp"),
    ("kafka-python", True, "ki"),
    ("kafka-python", False, "kp"),
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Producers:
    """The four producers, each in its own thread, writing until stopped."""

    def __init__(self, bootstrap: str, history: History, rate: float) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.interval = 1.0 / rate
        self.stop = threading.Event()
        self.sent: dict[str, int] = {}
        self.errors: list[str] = []
        #: Fatal producer errors (an idempotent producer fenced or out of sequence).
        self.fatal: list[str] = []
        self.threads = []
        for client, idem, prefix in WRITERS:
            fn = self._confluent if client == "confluent" else self._kafka_python
            self.sent[prefix] = 0
            self.threads.append(
                threading.Thread(
                    target=self._guard(fn, prefix, idem), name=f"writer-{prefix}", daemon=True
                )
            )

    def _guard(
        self, fn: Callable[[str, bool], None], prefix: str, idem: bool
    ) -> Callable[[], None]:
        def run() -> None:
            try:
                fn(prefix, idem)
            except Exception as e:  # reported at the end; the other producers go on
                self.errors.append(f"{prefix}: {e!r}")

        return run

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(180)

    def _confluent(self, prefix: str, idem: bool) -> None:
        from confluent_kafka import KafkaError, KafkaException, Producer

        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": idem,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
            # A black-holed connection is given up after 10 s, not 60.
            "socket.timeout.ms": 10_000,
            "request.timeout.ms": 10_000,
            "log_level": 3,
        }
        if not idem:
            config["retries"] = 1_000_000
        fatal: list[KafkaError] = []

        def on_error(err: KafkaError) -> None:
            if err.fatal():
                fatal.append(err)

        def delivered(err: Any, msg: Any) -> None:
            rid = msg.key().decode()
            if err is None:
                self.history.ack(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    rid,
                    idempotent=idem,
                    producer=prefix,
                )
            else:
                self.history.failed(prefix, rid, str(err))

        p = Producer({**config, "error_cb": on_error})
        i = 0
        while not self.stop.is_set():
            try:
                p.produce(
                    TOPIC, key=f"{prefix}-{i:07d}".encode(), value=b"x" * 64, on_delivery=delivered
                )
                i += 1
                self.sent[prefix] = i
                p.poll(self.interval)
            except BufferError:
                p.poll(0.1)
            except KafkaException as e:
                err = e.args[0] if e.args else None
                if not isinstance(err, KafkaError):
                    raise
                if err.code() == KafkaError._FATAL and not fatal:
                    with contextlib.suppress(KafkaException):
                        p.poll(0)  # the error callback says which fatal error
                if err.fatal() or err.code() == KafkaError._FATAL:
                    fatal.append(fatal[0] if fatal else err)
                if not fatal:
                    raise
                # An idempotent producer's fatal error (Kafka: the producer
                # must be closed): counted, and a new producer (a new
                # producer id) carries on, so the run keeps testing.
                self.fatal.append(f"{prefix}: {fatal[0].str()}")
                log(f"  {prefix} producer: fatal error, starting a new one: {fatal[0].str()}")
                fatal.clear()
                with contextlib.suppress(KafkaException):
                    p.purge()
                    p.flush(5)
                p = Producer({**config, "error_cb": on_error})
        try:
            left = p.flush(150)
        except KafkaException as e:  # a fatal error in the last seconds
            self.fatal.append(f"{prefix}: {fatal[0].str() if fatal else e}")
            return
        if left:
            self.errors.append(f"{prefix}: {left} records never delivered nor failed")

    def _kafka_python(self, prefix: str, idem: bool) -> None:
        from kafka import KafkaProducer

        def make() -> Any:
            return KafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                retries=1_000_000,
                linger_ms=5,
                request_timeout_ms=10_000,
                delivery_timeout_ms=120_000,
                retry_backoff_ms=200,
                max_block_ms=10_000,
                enable_idempotence=idem,
                **({} if idem else {"max_in_flight_requests_per_connection": 5}),
            )

        p = make()
        i = 0
        while not self.stop.is_set():
            rid = f"{prefix}-{i:07d}"
            i += 1
            try:
                fut = p.send(TOPIC, key=rid.encode(), value=b"y" * 64)
            except Exception as e:  # no metadata within max_block_ms, or a fatal state
                self.history.failed(prefix, rid, repr(e))
                if idem and _kp_fatal(e):
                    self.fatal.append(f"{prefix}: {e!r}")
                    log(f"  {prefix} producer: fatal error, starting a new one: {e!r}")
                    with contextlib.suppress(Exception):
                        p.close(5)
                    p = make()
                continue
            fut.add_callback(self._kp_ok, rid, prefix, idem)
            fut.add_errback(self._kp_err, rid, prefix, idem)
            self.sent[prefix] = i
            time.sleep(self.interval)
        p.flush(150)
        p.close(30)

    def _kp_ok(self, rid: str, prefix: str, idem: bool, md: Any) -> None:
        self.history.ack(md.topic, md.partition, md.offset, rid, idempotent=idem, producer=prefix)

    def _kp_err(self, rid: str, prefix: str, idem: bool, exc: BaseException) -> None:
        self.history.failed(prefix, rid, repr(exc))
        if idem and _kp_fatal(exc):
            self.fatal.append(f"{prefix}: {exc!r}")


def _kp_fatal(exc: BaseException) -> bool:
    """kafka-python's errors an idempotent producer cannot get past (Kafka's
    OutOfOrderSequence, UnknownProducerId, a fenced producer id)."""
    name = type(exc).__name__
    return any(k in name for k in ("OutOfOrderSequence", "ProducerFenced", "InvalidProducerEpoch"))


class Readers:
    """Two consumer groups (a confluent-kafka consumer, a kafka-python
    consumer), each recording every record it is handed."""

    NAMES = ("ck-group", "kp-group")

    def __init__(self, bootstrap: str, history: History) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.stop = threading.Event()
        self.positions: dict[str, dict[int, int]] = {n: {} for n in self.NAMES}
        self.errors: list[str] = []
        self.threads = [
            threading.Thread(target=self._guard(self._confluent), name="reader-ck", daemon=True),
            threading.Thread(target=self._guard(self._kafka_python), name="reader-kp", daemon=True),
        ]

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as e:  # reported at the end
                self.errors.append(f"{fn.__name__}: {e!r}")

        return run

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _record(self, name: str, topic: Any, part: Any, offset: Any, key: Any) -> None:
        if topic is None or part is None or offset is None:
            return
        rid = key.decode() if isinstance(key, bytes) else None
        self.history.read(topic, part, offset, rid, name)
        pos = self.positions[name]
        pos[part] = max(pos.get(part, 0), offset + 1)

    def _confluent(self) -> None:
        from confluent_kafka import Consumer

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "harness-ck",
                "auto.offset.reset": "earliest",
                "heartbeat.interval.ms": 100,
                "session.timeout.ms": 6000,
                "socket.timeout.ms": 10_000,
                "log_level": 3,
            }
        )
        c.subscribe([TOPIC])
        while not self.stop.is_set():
            for m in c.consume(500, 0.2):
                if m.error() is None:
                    self._record("ck-group", m.topic(), m.partition(), m.offset(), m.key())
        c.close()

    def _kafka_python(self) -> None:
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            TOPIC,
            bootstrap_servers=self.bootstrap,
            group_id="harness-kp",
            auto_offset_reset="earliest",
            heartbeat_interval_ms=300,
            session_timeout_ms=6000,
            request_timeout_ms=15_000,
        )
        while not self.stop.is_set():
            try:
                batches = c.poll(timeout_ms=200, max_records=500)
            except Exception as e:  # retriable trouble during a fault: keep reading
                self.errors.append(f"kp-group poll (retried): {e!r}")
                time.sleep(0.5)
                continue
            for recs in batches.values():
                for r in recs:
                    self._record("kp-group", r.topic, r.partition, r.offset, r.key)
        c.close()

    def caught_up(self, hws: dict[int, int]) -> bool:
        return all(
            pos.get(p, 0) >= hw
            for pos in self.positions.values()
            for p, hw in hws.items()
            if hw > 0
        )


def create_topic(bootstrap: str, partitions: int, rf: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=partitions, replication_factor=rf)],
        operation_timeout=30,
        request_timeout=30,
    )
    for f in futures.values():
        f.result(timeout=60)


@dataclass
class Planned:
    """One fault of the schedule, drawn from the seed before it runs."""

    kind: str
    #: The partition whose leader is the target, or None: ``node``.
    leader_of: int | None
    node: int
    hold: float
    pause_after: float


def plan(
    rng: random.Random, nodes: list[int], partitions: int, concurrent: int, first: str | None
) -> list[Planned]:
    """The faults of one round: ``concurrent`` of them, on distinct nodes
    (the first one aimed at a partition's leader most often; its kind
    ``first`` if given). Every draw is made whatever the cluster does, so a
    seed gives the same schedule."""
    out = []
    hold = rng.uniform(1.0, 5.0)
    pause_after = rng.uniform(0.5, 2.0)
    for i in range(concurrent):
        kind = rng.choice(FAULTS)
        if i == 0 and first is not None:
            kind = first
        node = rng.choice(nodes)
        part = rng.randrange(partitions)
        leader = rng.random() < (0.6 if i == 0 else 0.3)
        out.append(Planned(kind, part if leader else None, node, hold, pause_after))
    return out


@dataclass
class Window:
    """A node cut off (isolated, black-holed or cut from its peers) while it
    led some partitions: acknowledgments from those partitions in the
    window must all survive."""

    node: int
    partitions: set[int]
    start: float
    end: float = float("inf")


def cut_from_peers(cluster: Cluster, node: int) -> None:
    """Cut ``node`` off from every other node (Kafka and controller
    listeners, both ways) while clients still reach it."""
    host = cluster.proxy(node).target[0]
    for other in cluster.node_ids:
        if other == node:
            continue
        other_host = cluster.proxy(other).target[0]
        cluster.proxy(other).drop_from(host)
        cluster.controller_proxy(other).drop_from(host)
        cluster.proxy(node).drop_from(other_host)
        cluster.controller_proxy(node).drop_from(other_host)


def inject(
    cluster: Cluster,
    round_: list[Planned],
    partitions: int,
    n: int,
    total: int,
    voters: set[int],
    failovers: list[float],
    windows: list[Window],
    kinds: Counter[str],
) -> str:
    """One round of faults, held a moment, then undone; a line saying what
    it was. When a target led a partition, the time until another node
    leads it (measured from the fault) goes into ``failovers``."""
    targets: list[tuple[Planned, int, str, int | None]] = []
    used: set[int] = set()
    for f in round_:
        target, why, led = f.node, "random node", None
        if f.leader_of is not None:
            with contextlib.suppress(ClusterError):
                leader = cluster.leader(TOPIC, f.leader_of, timeout=10)
                if leader not in used:
                    target, why, led = leader, f"leader of {TOPIC}[{f.leader_of}]", f.leader_of
        if target in used:  # distinct nodes: the next free one
            target = next(i for i in cluster.node_ids if i not in used)
            why, led = "random node", None
        used.add(target)
        targets.append((f, target, why, led))
    hold = round_[0].hold
    text = " + ".join(f"{f.kind} node {t} ({why})" for f, t, why, _ in targets)
    log(f"fault {n}/{total}: {text}, held {hold:.1f} s")
    # Which partitions each target leads now (for the windows).
    led_by: dict[int, set[int]] = {}
    with contextlib.suppress(ClusterError):
        for p in cluster.partitions(TOPIC):
            if p.leader is not None:
                led_by.setdefault(p.leader, set()).add(p.partition)
    t0 = time.monotonic()
    for f, target, _, _ in targets:
        kinds[f.kind] += 1
        if f.kind == "kill":
            cluster.kill(target)
        elif f.kind == "pause":
            cluster.pause(target)
        elif f.kind == "isolate":
            cluster.isolate(target)
        elif f.kind == "blackhole":
            cluster.isolate(target, silent=True)
        elif f.kind == "peers-cut":
            cut_from_peers(cluster, target)
        elif f.kind == "restart":
            cluster.stop(target)
        else:
            # A broker-only node loses everything; a voter keeps the
            # quorum's state (losing it is KIP-853's problem).
            cluster.wipe(target, keep_metadata=target in voters)
        if f.kind in ("isolate", "blackhole", "peers-cut", "pause") and led_by.get(target):
            windows.append(Window(target, set(led_by[target]), t0))
    for _, target, _, led in targets:
        if led is None:
            continue
        # Until another node leads the partition (the others' views), or
        # the hold is over and the leader is kept (a short pause).
        while time.monotonic() - t0 < max(hold, 15.0):
            try:
                if cluster.leader(TOPIC, led, timeout=1) != target:
                    failovers.append(time.monotonic() - t0)
                    log(f"  {TOPIC}[{led}] led by another node after {failovers[-1]:.2f} s")
                    break
            except ClusterError:
                pass
            time.sleep(0.05)
    time.sleep(max(0.0, hold - (time.monotonic() - t0)))
    # Network and pauses first, then the starts (a voter's start needs a
    # quorum to register with).
    for f, target, _, _ in targets:
        if f.kind == "pause":
            cluster.resume(target)
        elif f.kind in ("isolate", "blackhole", "peers-cut"):
            cluster.heal(target)
    now = time.monotonic()
    for w in windows:
        if w.end == float("inf"):
            w.end = now
    for f, target, _, _ in targets:
        if f.kind in ("kill", "restart", "wipe"):
            cluster.start(target, wait=False)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--brokers", type=int, default=3)
    ap.add_argument("--faults", type=int, default=10, help="rounds of faults")
    ap.add_argument(
        "--concurrent", type=int, default=1, help="faults per round, on distinct nodes (2: pairs)"
    )
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--all-kinds",
        action="store_true",
        help="the first rounds use every kind of fault once (in an order the seed draws)",
    )
    ap.add_argument(
        "--duration", type=float, default=0.0, help="produce at least this many seconds"
    )
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="records/s per producer")
    ap.add_argument("--recover-timeout", type=float, default=90.0)
    ap.add_argument("--dir", default=None, help="cluster directory (default: a temporary one)")
    args = ap.parse_args(argv)
    if not 1 <= args.concurrent < args.brokers:
        ap.error("--concurrent must be at least 1 and below --brokers")

    help_text = subprocess.run(
        [sys.executable, "-m", "ottla", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--node-id" not in help_text.stdout + help_text.stderr:
        print(
            "fault_harness: this ottla build's broker has no cluster mode "
            "(`ottla serve --help` lists no --node-id)",
            file=sys.stderr,
        )
        return 2
    try:
        import confluent_kafka  # noqa: F401
        import kafka  # noqa: F401
    except ImportError as e:
        print(f"fault_harness: needs confluent-kafka and kafka-python ({e})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    # kafka-python logs every reset connection with a traceback: the faults
    # are on purpose.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    rf = min(3, args.brokers)
    misr = min(2, rf)
    controllers = min(3, args.brokers)
    voters = set(range(1, controllers + 1))
    nodes = list(range(1, args.brokers + 1))
    firsts: list[str | None] = []
    if args.all_kinds:
        firsts = list(FAULTS)
        rng.shuffle(firsts)
    firsts += [None] * args.faults
    schedule = [
        plan(rng, nodes, args.partitions, args.concurrent, firsts[i]) for i in range(args.faults)
    ]
    log(
        f"seed {seed}: {args.brokers} brokers ({controllers} controller voters), RF {rf}, "
        f"min.insync {misr}, {args.faults} rounds of {args.concurrent} fault(s)"
    )
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="ottla-harness-")
        path = Path(tmp.name)
    else:
        path = Path(args.dir)
    history = History()
    started = time.monotonic()
    recoveries: list[float] = []
    failovers: list[float] = []
    windows: list[Window] = []
    kinds: Counter[str] = Counter()
    try:
        with Cluster(
            path,
            args.brokers,
            replication_factor=rf,
            min_insync_replicas=misr,
            controllers=controllers,
        ) as cluster:
            log(f"cluster ready in {time.monotonic() - started:.1f} s: {cluster!r}")
            create_topic(cluster.bootstrap_servers, args.partitions, rf)
            cluster.wait_in_sync(TOPIC, timeout=args.recover_timeout)
            producers = Producers(cluster.bootstrap_servers, history, args.rate)
            readers = Readers(cluster.bootstrap_servers, history)
            producers.start()
            readers.start()
            time.sleep(2)
            for n, round_ in enumerate(schedule, 1):
                inject(
                    cluster,
                    round_,
                    args.partitions,
                    n,
                    args.faults,
                    voters,
                    failovers,
                    windows,
                    kinds,
                )
                t0 = time.monotonic()
                try:
                    cluster.wait_ready(timeout=args.recover_timeout)
                    cluster.wait_in_sync(TOPIC, timeout=args.recover_timeout)
                except ClusterError as e:
                    log(f"the cluster did not recover: {e}")
                    return 3
                recoveries.append(time.monotonic() - t0)
                log(
                    f"  back in sync after {recoveries[-1]:.1f} s (acked so far {len(history.acks)}, "
                    f"read {len(history.reads)})"
                )
                time.sleep(round_[0].pause_after)
            while time.monotonic() - started < args.duration:
                time.sleep(0.5)
            cluster.heal()
            log("faults done; stopping the producers")
            producers.finish()
            parts = cluster.wait_in_sync(TOPIC, timeout=args.recover_timeout)
            hws = {p.partition: cluster.high_watermark(TOPIC, p.partition) for p in parts}
            deadline = time.monotonic() + 90
            while not readers.caught_up(hws) and time.monotonic() < deadline:
                time.sleep(0.2)
            readers.finish()
            log(f"high watermarks {hws}; stopping every node to read its logs")
            # A follower learns the last high watermark from its next fetch
            # (its log is read only up to the high watermark it knows).
            time.sleep(2)
            for node in cluster.node_ids:
                cluster.stop(node)
            logs = {
                (TOPIC, p.partition): {
                    node: read_partition_log(cluster.data_dir(node), TOPIC, p.partition)
                    for node in p.replicas
                }
                for p in parts
            }
            batches = {
                (TOPIC, p.partition): {
                    node: read_partition_batches(cluster.data_dir(node), TOPIC, p.partition)
                    for node in p.replicas
                }
                for p in parts
            }
    except ClusterError as e:
        log(f"cluster error: {e}")
        return 3
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = check(
        history,
        logs,
        {(TOPIC, p): hw for p, hw in hws.items()},
        batches=batches,
        settled=True,
    )
    elapsed = time.monotonic() - started
    print(result.report())
    print(summary(args, seed, elapsed, history, producers, readers, result, kinds, windows))
    if recoveries:
        print(
            f"harness: back in sync after a fault: min {min(recoveries):.1f} s, "
            f"max {max(recoveries):.1f} s, mean {sum(recoveries) / len(recoveries):.1f} s"
        )
    if failovers:
        srt = sorted(failovers)
        print(
            f"harness: a faulted leader replaced after min {srt[0]:.2f} s, "
            f"median {srt[len(srt) // 2]:.2f} s, max {srt[-1]:.2f} s ({len(srt)} times)"
        )
    for err in producers.errors + readers.errors[:20]:
        print(f"harness: client error: {err}")
    for err in producers.fatal:
        print(f"harness: VIOLATION: fatal producer error: {err}")
    ok = result.ok and not producers.fatal
    print(f"harness: {'PASS' if ok else 'FAIL'} (seed {seed})")
    return 0 if ok else 1


def summary(
    args: argparse.Namespace,
    seed: int,
    elapsed: float,
    history: History,
    producers: Producers,
    readers: Readers,
    result: Any,
    kinds: Counter[str],
    windows: list[Window],
) -> str:
    """The counts, a few lines."""
    acked = Counter(a.producer for a in history.acks)
    reads = Counter(r.consumer for r in history.reads)
    failed = Counter(f[0] for f in history.failures)
    lost = Counter(a.producer for a in result.lost_acks)
    # Acknowledgments of partitions an isolated (or paused) old leader led,
    # while it was cut off: each must be in the final log.
    in_windows = [
        a
        for a in history.acks
        if any(a.partition in w.partitions and w.start <= a.at <= w.end + 1.0 for w in windows)
    ]
    lost_ids = {(a.partition, a.offset, a.id) for a in result.lost_acks}
    lost_in_windows = sum((a.partition, a.offset, a.id) in lost_ids for a in in_windows)
    lines = [
        f"harness: seed {seed}, {args.brokers} brokers, {args.faults} rounds x "
        f"{args.concurrent} = {sum(kinds.values())} faults in {elapsed:.0f} s: "
        + ", ".join(f"{k} {kinds[k]}" for k in FAULTS),
        "harness: sent " + ", ".join(f"{k} {v}" for k, v in producers.sent.items()),
        "harness: acked "
        + ", ".join(f"{k} {acked[k]}" for k in producers.sent)
        + f" (total {len(history.acks)}); failed sends "
        + (", ".join(f"{k} {v}" for k, v in sorted(failed.items())) or "0"),
        "harness: read "
        + ", ".join(f"{k} {reads[k]}" for k in Readers.NAMES)
        + f"; phantom reads {result.phantom_reads}",
        f"harness: duplicates: idempotent {result.duplicated}, plain {result.plain_duplicates} "
        f"(allowed); lost {result.lost + result.misplaced}"
        + (f" ({', '.join(f'{k} {v}' for k, v in lost.items())})" if lost else ""),
        f"harness: leaders cut off or paused {len(windows)} times; acks on their partitions "
        f"meanwhile {len(in_windows)}, lost {lost_in_windows}",
        f"harness: replicas: byte mismatches {result.byte_mismatches}, gaps {result.gaps}, "
        f"divergent {result.divergent}, stale tail {result.stale_tail}; "
        f"fatal producer errors {len(producers.fatal)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
