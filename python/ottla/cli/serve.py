"""``ottla serve``: a Kafka-protocol broker over a data directory."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import ottla
from ottla.cli._util import CliError, UsageError, data_dir

EPILOG = """\
The broker listens on 127.0.0.1 unless told otherwise, and prints
"listening on HOST:PORT" on stdout once it accepts connections (port 0 picks
a free port). SIGINT (Ctrl-C) or SIGTERM stop it cleanly: connections are
closed, the port and the directory released, and the exit status is 0.

examples:
  ottla serve --data ./ottla-data
  ottla serve --data ./ottla-data --listen 127.0.0.1:0 --num-partitions 3
  ottla serve --listen 0.0.0.0:9092 --no-auto-create-topics
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a data directory over the Kafka protocol",
        description="Run a Kafka-protocol broker over a data directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", "-d", metavar="DIR", help="data directory (default: $OTTLA_DATA or ./ottla-data)"
    )
    p.add_argument(
        "--listen",
        "-l",
        default="127.0.0.1:9092",
        type=parse_listen,
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:9092; port 0 = any free port)",
    )
    p.add_argument(
        "--no-auto-create-topics",
        action="store_true",
        help="refuse unknown topics instead of creating them",
    )
    p.add_argument(
        "--num-partitions",
        type=int,
        default=1,
        metavar="N",
        help="partitions of auto-created topics (default 1)",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=104857600,
        metavar="BYTES",
        help="largest request accepted (default 104857600)",
    )
    p.add_argument(
        "--queued-max-request-bytes",
        type=int,
        default=524288000,
        metavar="BYTES",
        help="request bytes read or handled at once across all connections; connections "
        "wait without reading beyond it (queued.max.request.bytes; at least "
        "--max-request-bytes, -1 = no bound; default 524288000)",
    )
    p.add_argument(
        "--fetch-max-bytes",
        type=int,
        default=57671680,
        metavar="BYTES",
        help="record bytes in one Fetch response, whatever the client asks "
        "(fetch.max.bytes; default 57671680)",
    )
    p.add_argument(
        "--fsync",
        choices=["never", "interval", "always"],
        default="never",
        help="when appended records are fsynced (default never: the page cache)",
    )
    p.add_argument(
        "--retention-check-interval-ms",
        type=int,
        default=300000,
        metavar="MS",
        help="how often segments past their retention are deleted "
        "(log.retention.check.interval.ms; default 300000)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        metavar="N",
        help="the most client connections open at once (max.connections); one past it "
        "is closed when accepted (default: a quarter of the open-file limit, ulimit -n)",
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=None,
        metavar="N",
        help="the most connections open at once from one client address "
        "(max.connections.per.ip; default: no limit of its own)",
    )
    p.add_argument(
        "--max-open-files",
        type=int,
        default=None,
        metavar="N",
        help="descriptors kept open for partition files; the least recently used are "
        "closed past it and reopened on demand (default: half the open-file limit)",
    )
    p.add_argument(
        "--group-initial-rebalance-delay-ms",
        type=int,
        default=0,
        metavar="MS",
        help="how long the first rebalance of an empty consumer group waits for more "
        "members (group.initial.rebalance.delay.ms; default: 0, at once)",
    )
    p.set_defaults(func=cmd_serve)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.num_partitions < 1:
        raise UsageError("--num-partitions must be at least 1")
    if args.max_request_bytes < 1024:
        raise UsageError("--max-request-bytes must be at least 1024")
    if args.retention_check_interval_ms < 1:
        raise UsageError("--retention-check-interval-ms must be at least 1")
    if 0 < args.queued_max_request_bytes < args.max_request_bytes:
        raise UsageError("--queued-max-request-bytes must be at least --max-request-bytes (or -1)")
    if not 0 <= args.fetch_max_bytes <= 2**31 - 1:
        raise UsageError("--fetch-max-bytes must be between 0 and 2147483647")
    for flag in ("max_connections", "max_connections_per_ip", "max_open_files"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0 <= args.group_initial_rebalance_delay_ms <= 2**31 - 1:
        raise UsageError("--group-initial-rebalance-delay-ms must be between 0 and 2147483647")
    broker_cls: Any = getattr(ottla, "Broker", None)
    if broker_cls is None:
        raise CliError(
            "this ottla build has no broker (ottla.Broker is missing); reinstall ottla with the broker"
        )
    host, port = args.listen
    path = data_dir(args)
    try:
        broker = broker_cls(
            path,
            host=host,
            port=port,
            auto_create_topics=not args.no_auto_create_topics,
            num_partitions=args.num_partitions,
            max_request_bytes=args.max_request_bytes,
            fsync=args.fsync,
            retention_check_interval_ms=args.retention_check_interval_ms,
            queued_max_request_bytes=args.queued_max_request_bytes,
            fetch_max_bytes=args.fetch_max_bytes,
            max_connections=args.max_connections,
            max_connections_per_ip=args.max_connections_per_ip,
            max_open_files=args.max_open_files,
            group_initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
        )
    except OSError as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    except Exception as e:  # the broker's typed errors, or anything else it refuses
        raise CliError(f"cannot start the broker on {host}:{port} over {path}: {e}") from None

    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            broker.serve_forever()
        except BaseException as e:  # handed to the main thread, which reports it
            failure.append(e)
        finally:
            stop.set()

    # serve_forever blocks in a helper thread; the main thread stays free to
    # run signal handlers promptly (they run only in the main thread).
    server = threading.Thread(target=run, name="ottla-serve", daemon=True)
    try:
        server.start()
        print(f"listening on {broker.bootstrap_servers}", flush=True)
        print(f"serving {path}; Ctrl-C or SIGTERM to stop", file=sys.stderr, flush=True)
        while not stop.is_set():
            time.sleep(0.1)  # interrupted by signals; the handler sets `stop`
    finally:
        broker.close()
        server.join(10)
        for s, h in previous.items():
            signal.signal(s, h)
    if failure and not caught:
        raise CliError(f"broker stopped: {failure[0]}")
    print("stopped", file=sys.stderr, flush=True)
    return 0
