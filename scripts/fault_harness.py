#!/usr/bin/env python3
"""Fault harness for ottla's replicated cluster (issue 14).

Starts an ``ottla.Cluster``, runs two producers writing numbered records
(confluent-kafka: idempotent, acks=all; kafka-python: plain, acks=all) and a
consumer group reading them, injects random faults one at a time (kill -9,
pause/resume, isolate/heal with resets or a silent black hole, clean
restart, wipe+restart; the leader of a partition most often), waits for the replicas to be back in sync after each,
heals everything, then stops the nodes and checks every replica's log with
``ottla.testing.checker``. Prints the counts; exit status 1 if the checker
found a violation or an idempotent producer failed fatally (out of sequence
after a fail-over: the cluster lost its producer state), 2 if this build has
no cluster mode, 3 if the cluster did not recover.

    python scripts/fault_harness.py --brokers 3 --faults 20 --seed 7
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ottla.cluster import Cluster, ClusterError
from ottla.testing.checker import History, check, read_partition_log

TOPIC = "harness"
FAULTS = ("kill", "pause", "isolate", "blackhole", "restart", "wipe")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Producers:
    """Both producers, each in its own thread, writing until stopped."""

    def __init__(self, bootstrap: str, history: History, rate: float) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.interval = 1.0 / rate
        self.stop = threading.Event()
        self.sent = {"confluent": 0, "kafka-python": 0}
        self.errors: list[str] = []
        #: Fatal producer errors (an idempotent producer fenced or out of sequence).
        self.fatal: list[str] = []
        self.threads = [
            threading.Thread(target=self._guard(self._confluent), daemon=True),
            threading.Thread(target=self._guard(self._kafka_python), daemon=True),
        ]

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as e:  # reported at the end; the other producer goes on
                self.errors.append(f"{fn.__name__}: {e!r}")

        return run

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(180)

    def _confluent(self) -> None:
        from confluent_kafka import KafkaError, KafkaException, Producer

        config = {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120_000,
            # A black-holed connection is given up after 10 s, not 60.
            "socket.timeout.ms": 10_000,
            "request.timeout.ms": 10_000,
            "log_level": 3,
        }
        fatal: list[KafkaError] = []

        def on_error(err: KafkaError) -> None:
            if err.fatal():
                fatal.append(err)

        def delivered(err: Any, msg: Any) -> None:
            rid = msg.key().decode()
            if err is None:
                self.history.ack(
                    msg.topic(), msg.partition(), msg.offset(), rid, idempotent=True, producer="ck"
                )
            else:
                self.history.failed("confluent", rid, str(err))

        p = Producer({**config, "error_cb": on_error})
        i = 0
        while not self.stop.is_set():
            try:
                p.produce(TOPIC, key=f"ck-{i:07d}".encode(), value=b"x" * 64, on_delivery=delivered)
                i += 1
                self.sent["confluent"] = i
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
                self.fatal.append(f"confluent: {fatal[0].str()}")
                log(f"  confluent producer: fatal error, starting a new one: {fatal[0].str()}")
                fatal.clear()
                with contextlib.suppress(KafkaException):
                    p.purge()
                    p.flush(5)
                p = Producer({**config, "error_cb": on_error})
        try:
            left = p.flush(150)
        except KafkaException as e:  # a fatal error in the last seconds
            self.fatal.append(f"confluent: {fatal[0].str() if fatal else e}")
            return
        if left:
            self.errors.append(f"confluent: {left} records never delivered nor failed")

    def _kafka_python(self) -> None:
        from kafka import KafkaProducer

        p = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            retries=1_000_000,
            linger_ms=5,
            request_timeout_ms=10_000,
            delivery_timeout_ms=120_000,
            retry_backoff_ms=200,
            max_block_ms=10_000,
            enable_idempotence=False,
        )
        i = 0
        while not self.stop.is_set():
            rid = f"kp-{i:07d}"
            i += 1
            try:
                fut = p.send(TOPIC, key=rid.encode(), value=b"y" * 64)
            except Exception as e:  # no metadata within max_block_ms: not sent
                self.history.failed("kafka-python", rid, repr(e))
                continue
            fut.add_callback(self._kp_ok, rid)
            fut.add_errback(self._kp_err, rid)
            self.sent["kafka-python"] = i
            time.sleep(self.interval)
        p.flush(150)
        p.close(30)

    def _kp_ok(self, rid: str, md: Any) -> None:
        self.history.ack(md.topic, md.partition, md.offset, rid, idempotent=False, producer="kp")

    def _kp_err(self, rid: str, exc: BaseException) -> None:
        self.history.failed("kafka-python", rid, repr(exc))


class Readers:
    """A consumer group of one confluent-kafka consumer, recording every read."""

    def __init__(self, bootstrap: str, history: History) -> None:
        self.bootstrap = bootstrap
        self.history = history
        self.stop = threading.Event()
        self.positions: dict[int, int] = {}
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from confluent_kafka import Consumer

        try:
            c = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": "harness-readers",
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
                    if m.error() is not None:
                        continue
                    key = m.key()
                    rid = key.decode() if isinstance(key, bytes) else None
                    topic, part, offset = m.topic(), m.partition(), m.offset()
                    if topic is None or part is None or offset is None:
                        continue
                    self.history.read(topic, part, offset, rid, "group")
                    self.positions[part] = offset + 1
            c.close()
        except Exception as e:  # reported at the end
            self.errors.append(repr(e))

    def caught_up(self, hws: dict[int, int]) -> bool:
        return all(self.positions.get(p, 0) >= hw for p, hw in hws.items() if hw > 0)


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


def inject(
    cluster: Cluster,
    rng: random.Random,
    partitions: int,
    n: int,
    total: int,
    failovers: list[float],
) -> str:
    """One fault, held a moment, then undone; a line saying what it was.
    When the node led a partition, the time until another node leads it
    (measured from the fault) goes into ``failovers``."""
    target = rng.choice(cluster.node_ids)
    why = "random node"
    led: int | None = None
    if rng.random() < 0.6:
        p = rng.randrange(partitions)
        try:
            target = cluster.leader(TOPIC, p, timeout=10)
            why = f"leader of {TOPIC}[{p}]"
            led = p
        except ClusterError:
            pass
    kind = rng.choice(FAULTS)
    hold = rng.uniform(1.0, 5.0)
    log(f"fault {n}/{total}: {kind} node {target} ({why}), held {hold:.1f} s")
    t0 = time.monotonic()
    if kind == "kill":
        cluster.kill(target)
    elif kind == "pause":
        cluster.pause(target)
    elif kind == "isolate":
        cluster.isolate(target)
    elif kind == "blackhole":
        cluster.isolate(target, silent=True)
    elif kind == "restart":
        cluster.stop(target)
    else:
        cluster.wipe(target)
    if led is not None:
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
    if kind == "pause":
        cluster.resume(target)
    elif kind in ("isolate", "blackhole"):
        cluster.heal(target)
    else:
        cluster.start(target)
    return f"{kind} node {target} ({why})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--brokers", type=int, default=3)
    ap.add_argument("--faults", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--duration", type=float, default=0.0, help="produce at least this many seconds"
    )
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200.0, help="records/s per producer")
    ap.add_argument("--recover-timeout", type=float, default=90.0)
    ap.add_argument("--dir", default=None, help="cluster directory (default: a temporary one)")
    args = ap.parse_args(argv)

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
    log(f"seed {seed}: {args.brokers} brokers, RF {rf}, min.insync {misr}, {args.faults} faults")
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
    try:
        with Cluster(
            path, args.brokers, replication_factor=rf, min_insync_replicas=misr
        ) as cluster:
            log(f"cluster ready in {time.monotonic() - started:.1f} s: {cluster!r}")
            create_topic(cluster.bootstrap_servers, args.partitions, rf)
            cluster.wait_in_sync(TOPIC, timeout=args.recover_timeout)
            producers = Producers(cluster.bootstrap_servers, history, args.rate)
            readers = Readers(cluster.bootstrap_servers, history)
            producers.start()
            readers.thread.start()
            time.sleep(2)
            for n in range(1, args.faults + 1):
                inject(cluster, rng, args.partitions, n, args.faults, failovers)
                t0 = time.monotonic()
                try:
                    cluster.wait_ready(timeout=args.recover_timeout)
                    cluster.wait_in_sync(TOPIC, timeout=args.recover_timeout)
                except ClusterError as e:
                    log(f"the cluster did not recover: {e}")
                    return 3
                recoveries.append(time.monotonic() - t0)
                log(
                    f"  back in sync after {recoveries[-1]:.1f} s (acked so far {len(history.acks)})"
                )
                time.sleep(rng.uniform(0.5, 2.0))
            while time.monotonic() - started < args.duration:
                time.sleep(0.5)
            cluster.heal()
            log("faults done; stopping the producers")
            producers.finish()
            parts = cluster.wait_in_sync(TOPIC, timeout=args.recover_timeout)
            hws = {p.partition: cluster.high_watermark(TOPIC, p.partition) for p in parts}
            deadline = time.monotonic() + 60
            while not readers.caught_up(hws) and time.monotonic() < deadline:
                time.sleep(0.2)
            readers.stop.set()
            readers.thread.join(30)
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
    except ClusterError as e:
        log(f"cluster error: {e}")
        return 3
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = check(history, logs, {(TOPIC, p): hw for p, hw in hws.items()})
    elapsed = time.monotonic() - started
    failures: dict[str, int] = {}
    for producer, _, _ in history.failures:
        failures[producer] = failures.get(producer, 0) + 1
    print(result.report())
    print(
        f"harness: seed {seed}, {args.faults} faults in {elapsed:.1f} s; sent {producers.sent}; "
        f"acked {len(history.acks)} ({len(history.acks) / elapsed:.0f}/s); "
        f"failed sends {failures or 0}; reads {len(history.reads)}"
    )
    if recoveries:
        print(
            f"harness: back in sync after a fault: min {min(recoveries):.1f} s, "
            f"max {max(recoveries):.1f} s, mean {sum(recoveries) / len(recoveries):.1f} s"
        )
    if failovers:
        print(
            f"harness: a killed, paused, isolated, stopped or wiped leader replaced after "
            f"min {min(failovers):.2f} s, max {max(failovers):.2f} s, "
            f"mean {sum(failovers) / len(failovers):.2f} s ({len(failovers)} times)"
        )
    for err in producers.errors + readers.errors:
        print(f"harness: client error: {err}")
    for err in producers.fatal:
        print(f"harness: VIOLATION: fatal producer error: {err}")
    return 0 if result.ok and not producers.fatal else 1


if __name__ == "__main__":
    sys.exit(main())
