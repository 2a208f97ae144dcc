"""``ottla produce TOPIC``: one record per input line."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from typing import Any, BinaryIO

from ottla.cli._util import CliError, UsageError, key_value
from ottla.cli.backend import Backend, open_backend
from ottla.cli.progress import Progress

EPILOG = """\
Each input line (without its newline) becomes one record's value. With
--key-separator, the text before the first separator is the key and the
rest the value; a line without the separator gets no key.

A topic that does not exist is created (with 1 partition; on a broker, if
the broker creates topics on demand), as ottla.Producer and Kafka's
console producer do, and "created topic TOPIC" is printed on stderr; on a
data directory, the directory too. --no-auto-create-topics refuses instead.

examples:
  echo hello | ottla produce events
  printf 'user-1:clicked\\nuser-2:left\\n' | ottla produce events --key-separator :
  ottla produce events --file events.jsonl --header source=import --partition 0
  ottla produce events --bootstrap-server 127.0.0.1:9092 < lines.txt
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "produce",
        help="append lines from stdin or a file to a topic",
        description="Append one record per input line to a topic.",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("topic")
    p.add_argument("--file", "-f", metavar="PATH", help="read lines from PATH instead of stdin")
    p.add_argument(
        "--key-separator", "-K", metavar="SEP", help="split each line into KEY SEP VALUE"
    )
    p.add_argument(
        "--partition", "-p", type=int, metavar="N", help="write every record to partition N"
    )
    p.add_argument(
        "--header",
        "-H",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="add this header to every record; repeatable",
    )
    p.add_argument(
        "--no-auto-create-topics",
        action="store_true",
        help="fail on a topic that does not exist instead of creating it",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the count at the end")
    p.set_defaults(func=cmd_produce)


def _input(path: str | None) -> tuple[BinaryIO, int | None]:
    """The byte stream to read and its size when known (for the progress bar)."""
    # Returned open: the caller reads it to the end and closes it.
    stream: BinaryIO = open(path, "rb") if path else sys.stdin.buffer  # noqa: SIM115
    try:
        st = os.fstat(stream.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        size = None
    return stream, size


def _create(args: argparse.Namespace, backend: Backend) -> None:
    """Create the missing topic as the producer's first send would."""
    parts = backend.create_topic_on_demand(args.topic)
    if not parts:
        raise CliError(
            f"unknown topic {args.topic!r} in {backend.where}, and the broker did not create "
            f"it (create it with: ottla topics create {args.topic})"
        )
    if not args.quiet:
        n = len(parts)
        print(f"created topic {args.topic} ({n} partition{'s' if n != 1 else ''})", file=sys.stderr)
    if args.partition is not None and args.partition not in parts:
        raise CliError(f"topic {args.topic!r} has no partition {args.partition}")


def cmd_produce(args: argparse.Namespace) -> int:
    if args.key_separator == "":
        raise UsageError("--key-separator must not be empty")
    sep = args.key_separator.encode() if args.key_separator is not None else None
    headers: list[tuple[str, bytes]] | None = (
        [(k, v.encode()) for k, v in args.header] if args.header else None
    )
    auto_create = not args.no_auto_create_topics
    backend = open_backend(args, create=auto_create)
    try:
        existed = backend.has_topic(args.topic)
        if not existed:
            if not auto_create:
                backend.require_topic(args.topic)  # the error, naming close topics
            _create(args, backend)
        if (
            existed
            and args.partition is not None
            and args.partition not in backend.partitions(args.topic)
        ):
            raise CliError(f"topic {args.topic!r} has no partition {args.partition}")
        try:
            stream, size = _input(args.file)
        except OSError as e:
            raise CliError(f"cannot read {args.file!r}: {e.strerror}") from None
        sink = backend.open_sink(auto_create_topics=auto_create)
        try:
            # No bar while a person types the lines: it would draw over them.
            typing = not args.file and sys.stdin.isatty()
            show_bar = sys.stderr.isatty() and not typing
            if typing:
                print(
                    f"type records for {args.topic}, one per line; Ctrl-D to finish",
                    file=sys.stderr,
                )
            with Progress(
                f"produce {args.topic}",
                total=size,
                unit="B" if size else "records",
                enabled=show_bar,
            ) as bar:
                for raw in stream:
                    line = raw[:-1] if raw.endswith(b"\n") else raw
                    key: bytes | None = None
                    if sep is not None:
                        k, found, v = line.partition(sep)
                        if found:
                            key, line = k, v
                    sink.send(args.topic, line, key=key, partition=args.partition, headers=headers)
                    bar.advance(len(raw) if size else 1)
            sink.flush()
        except BaseException:
            try:
                sink.flush()  # settle what was sent before the failure, to count it
            except Exception:
                pass
            if not args.quiet:
                print(
                    f"stopped after {sink.acked} acknowledged record{'s' if sink.acked != 1 else ''}",
                    file=sys.stderr,
                )
            raise
        finally:
            if args.file:
                stream.close()
            sink.close()
    finally:
        backend.close()
    if not args.quiet:
        print(
            f"produced {sink.acked} record{'s' if sink.acked != 1 else ''} to {args.topic}",
            file=sys.stderr,
        )
    return 0
