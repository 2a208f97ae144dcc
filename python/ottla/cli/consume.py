"""``ottla consume TOPIC``: records to stdout, one per line."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import ottla
from ottla.cli._util import CliError, UsageError, format_time_ms, parse_time_ms
from ottla.cli.backend import TP, RecordLike, RecordSource, open_backend
from ottla.cli.progress import Progress

EPILOG = """\
Without --follow, consume reads up to the end offsets the topic has when it
starts, then exits. It starts at the beginning of each partition unless told
otherwise (--offset, --from-time). With --group it starts at the group's
committed offsets and commits its position on exit; a partition the group
has no committed offset for starts at the end, as with Kafka's console
consumer (only records written from then on), or at the beginning with
--from-beginning (--offset beginning|end says the same).

A null key or value prints as nothing (as kcat prints it), and a header
with a null value as its key alone (k, where an empty value prints k=);
--null-literal TEXT prints TEXT instead (kafka-console-consumer's
null.literal), so a null and an empty value can be told apart.

If the topic is deleted while it is read, consume exits with status 1 and a
message; with --follow it warns on stderr, waits for a topic of that name to
be created again and follows the new topic from its beginning (it is a new
topic: the old positions mean nothing in it). With --group the group does
this by itself: the deleted partitions are revoked, and the new topic's are
assigned from the group's commits of the new topic, else where partitions
without a committed offset start (the end, or the beginning with
--from-beginning).

--format placeholders: %t topic, %p partition, %o offset, %T timestamp (ms),
%d timestamp (ISO-8601, UTC), %k key, %v value, %h headers (k=v,k=v), %%;
escapes \\t \\n \\\\. Each record is printed as FORMAT plus a newline.

examples:
  ottla consume events
  ottla consume events --print-key --key-separator ' => '
  ottla consume events --partition 0 --offset 42 --max-messages 10
  ottla consume events --offset -5                 # the last 5 of each partition
  ottla consume events --from-time 2026-11-26T08:00:00Z
  ottla consume events --follow --offset end       # only new records, like tail -f
  ottla consume events --group billing --follow
  ottla consume events --group audit --from-beginning   # a new group reads everything
  ottla consume events --print-key --null-literal '<null>'
  ottla consume events --format '%p:%o\\t%k\\t%v'
"""

_POLL_MS = 200
_BATCH = 5000
_ASSIGN_WAIT_MS = 30_000


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "consume",
        help="print a topic's records to stdout",
        description="Print a topic's records to stdout, one per line.",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("topic")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at each partition's first offset (the default without --group; with "
        "--group: where partitions without a committed offset start, instead of the end)",
    )
    start.add_argument(
        "--offset",
        "-o",
        metavar="WHERE",
        help="start at 'beginning', 'end', an offset N (needs --partition), or -N (the last N "
        "of each partition); with --group only beginning or end, for partitions without a "
        "committed offset",
    )
    start.add_argument(
        "--from-time",
        type=parse_time_ms,
        metavar="TIME",
        help="start at the first record at or after TIME (ISO-8601 or epoch ms)",
    )
    p.add_argument("--partition", "-p", type=int, metavar="N", help="read only partition N")
    p.add_argument(
        "--follow",
        "-F",
        action="store_true",
        help="keep waiting for new records at the end (Ctrl-C to stop)",
    )
    p.add_argument(
        "--group",
        "-g",
        metavar="GROUP",
        help="consume as a member of GROUP: start at its committed offsets (the end where it "
        "has none, unless --from-beginning), commit on exit",
    )
    p.add_argument("--max-messages", "-n", type=int, metavar="N", help="exit after N records")
    p.add_argument(
        "--timeout-ms", type=int, metavar="MS", help="exit after MS milliseconds without a record"
    )
    p.add_argument("--print-key", "-k", action="store_true", help="print KEY SEP VALUE")
    p.add_argument(
        "--key-separator",
        default="\t",
        metavar="SEP",
        help="separator for --print-key (default: tab)",
    )
    p.add_argument("--format", metavar="FORMAT", help="print each record as FORMAT (see below)")
    p.add_argument(
        "--null-literal",
        metavar="TEXT",
        help="print a null key, value or header value as TEXT (default: nothing)",
    )
    p.set_defaults(func=cmd_consume)


# -- output -----------------------------------------------------------------
Piece = Callable[[RecordLike], bytes]

_ESCAPES = {"t": "\t", "n": "\n", "\\": "\\", "r": "\r"}


def _fields(null: bytes) -> dict[str, Piece]:
    """The placeholders, rendering a null key/value/header value as ``null``."""

    def text(b: bytes | None) -> bytes:
        return null if b is None else b

    def header(k: str, v: bytes | None) -> bytes:
        if v is None:
            # Without a literal: "k" for a null value, "k=" for an empty one.
            return k.encode() + (b"=" + null if null else b"")
        return k.encode() + b"=" + v

    return {
        "t": lambda m: m.topic.encode(),
        "p": lambda m: str(m.partition).encode(),
        "o": lambda m: str(m.offset).encode(),
        "T": lambda m: str(m.timestamp).encode(),
        "d": lambda m: format_time_ms(m.timestamp).encode(),
        "k": lambda m: text(m.key),
        "v": lambda m: text(m.value),
        "h": lambda m: b",".join(header(k, v) for k, v in (m.headers or [])),
    }


def compile_format(fmt: str, null_literal: str | None = None) -> Callable[[RecordLike], bytes]:
    """A function rendering one record (newline included) for ``fmt``; a
    null key, value or header value renders as ``null_literal`` (default:
    nothing)."""
    null = (null_literal or "").encode()
    fields = _fields(null)
    pieces: list[Piece] = []
    literal: list[str] = []

    def flush_literal() -> None:
        if literal:
            text = "".join(literal).encode()
            pieces.append(lambda m: text)
            literal.clear()

    for match in re.finditer(r"%(.)|\\(.)|([^%\\]+)|(.)", fmt, re.S):
        field, escape, plain, lone = match.groups()
        if field is not None:
            if field == "%":
                literal.append("%")
            elif field in fields:
                flush_literal()
                pieces.append(fields[field])
            else:
                raise UsageError(
                    f"--format: unknown placeholder %{field} (known: %t %p %o %T %d %k %v %h %%)"
                )
        elif escape is not None:
            literal.append(_ESCAPES.get(escape, "\\" + escape))
        else:
            literal.append(plain if plain is not None else lone)
    literal.append("\n")
    flush_literal()
    if len(pieces) == 2 and pieces[0] is fields["v"]:
        # The common case, kept cheap.
        return lambda m: (null if m.value is None else m.value) + b"\n"
    return lambda m: b"".join(p(m) for p in pieces)


def _escape_literal(text: str) -> str:
    return text.replace("%", "%%").replace("\\", "\\\\")


# -- the command ---------------------------------------------------------------
def _start_positions(args: argparse.Namespace, src: RecordSource, tps: list[TP]) -> None:
    begin = src.beginning_offsets(tps)
    end = src.end_offsets(tps)
    where = (args.offset or "beginning").strip()
    if args.from_time is not None:
        found = src.offsets_for_time(tps, args.from_time)
        for tp in tps:
            at = found.get(tp)
            src.seek(tp, end[tp] if at is None else at)
        return
    for tp in tps:
        if args.from_beginning or where in _BEGIN:
            target = begin[tp]
        elif where in _END:
            target = end[tp]
        elif where.startswith("-") and where[1:].isdigit():
            target = max(begin[tp], end[tp] - int(where[1:]))
        else:
            target = min(max(int(where), begin[tp]), end[tp])
        src.seek(tp, target)


_BEGIN = ("beginning", "earliest", "start")
_END = ("end", "latest")


def _check_args(args: argparse.Namespace) -> None:
    if args.group:
        if args.from_time is not None or args.partition is not None:
            raise UsageError(
                "--group starts at the group's committed offsets; --from-time and --partition "
                "need no --group"
            )
        if args.offset is not None and args.offset.strip() not in _BEGIN + _END:
            raise UsageError(
                "with --group, --offset is beginning or end: where partitions without a "
                "committed offset start (the group's committed offsets come first)"
            )
    if args.offset is not None:
        w = args.offset.strip()
        if not (w in _BEGIN + _END or w.lstrip("-").isdigit()):
            raise UsageError(f"--offset: expected beginning, end, N or -N, got {args.offset!r}")
        if w.isdigit() and args.partition is None:
            raise UsageError(
                "--offset N needs --partition (an offset means something in one partition only)"
            )
    if args.max_messages is not None and args.max_messages < 0:
        raise UsageError("--max-messages must not be negative")
    if args.timeout_ms is not None and args.timeout_ms < 0:
        raise UsageError("--timeout-ms must not be negative")


def cmd_consume(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.format is not None:
        render = compile_format(args.format, args.null_literal)
    elif args.print_key:
        render = compile_format(
            "%k" + _escape_literal(args.key_separator) + "%v", args.null_literal
        )
    else:
        render = compile_format("%v", args.null_literal)

    backend = open_backend(args)
    try:
        parts = backend.partitions(args.topic)  # also: unknown topic -> clear error
        if args.partition is not None and args.partition not in parts:
            raise CliError(
                f"topic {args.topic!r} has no partition {args.partition} (it has {len(parts)})"
            )
        reset = _auto_offset_reset(args)
        if args.group and args.offset is None and not args.from_beginning:
            committed = {t for t, _ in backend.committed_offsets(args.group)}
            if args.topic not in committed:
                print(
                    f"ottla consume: group {args.group!r} has no committed offsets in "
                    f"{args.topic!r}: it starts at the end, as in Kafka (--from-beginning "
                    "starts at the first offset)",
                    file=sys.stderr,
                    flush=True,
                )
        src = backend.open_source(args.group, reset)
        try:
            return _consume(args, src, parts, render, backend.partitions)
        finally:
            src.close()  # with --group: commits the position of what was printed
    finally:
        backend.close()


def _auto_offset_reset(args: argparse.Namespace) -> str:
    """Where a partition without a position starts: with --group, those the
    group has not committed (Kafka's auto.offset.reset: the end unless told);
    without, every partition is sought explicitly, from the beginning unless
    told otherwise."""
    where = (args.offset or "").strip()
    if args.group:
        return "earliest" if args.from_beginning or where in _BEGIN else "latest"
    return "earliest" if args.from_beginning or args.offset is None else "latest"


def _wait_recreated(
    args: argparse.Namespace, partitions_of: Callable[[str], list[int]]
) -> list[TP] | None:
    """After the topic was deleted: wait until a topic of its name exists
    again (None if --timeout-ms passes first); its partitions to read."""
    started = time.monotonic()
    while True:
        try:
            parts = partitions_of(args.topic)
        except CliError:
            parts = []
        want = [p for p in parts if args.partition is None or p == args.partition]
        if want:
            return [(args.topic, p) for p in want]
        if args.timeout_ms is not None and (time.monotonic() - started) * 1000 >= args.timeout_ms:
            return None
        time.sleep(_POLL_MS / 1000)


def _consume(
    args: argparse.Namespace,
    src: RecordSource,
    parts: list[int],
    render: Callable[[RecordLike], bytes],
    partitions_of: Callable[[str], list[int]],
) -> int:
    out = sys.stdout.buffer
    ends: dict[TP, int] | None = None
    if args.group:
        src.subscribe(args.topic)
    else:
        tps = [(args.topic, p) for p in ([args.partition] if args.partition is not None else parts)]
        src.assign(tps)
        _start_positions(args, src, tps)
        if not args.follow:
            ends = src.end_offsets(tps)

    remaining: int | None = args.max_messages
    total: int | None = remaining
    if total is None and ends is not None and not args.follow:
        total = sum(max(ends[tp] - src.position(tp), 0) for tp in ends)
    show_bar = sys.stderr.isatty() and not sys.stdout.isatty()
    started = last_record = time.monotonic()
    with Progress(f"consume {args.topic}", total=total, enabled=show_bar) as bar:
        while remaining is None or remaining > 0:
            if not args.follow:
                if ends is None:  # --group: the end is known once partitions are assigned
                    assigned = src.assignment()
                    if assigned:
                        ends = src.end_offsets(assigned)
                    elif (time.monotonic() - started) * 1000 > (args.timeout_ms or _ASSIGN_WAIT_MS):
                        raise CliError(
                            f"no partitions of {args.topic!r} were assigned to group {args.group!r}"
                        )
                if ends is not None and all(src.position(tp) >= end for tp, end in ends.items()):
                    break
            try:
                batch = src.poll(_POLL_MS, _BATCH if remaining is None else min(remaining, _BATCH))
            except ottla.UnknownTopicOrPartitionError:
                if not args.follow:
                    raise CliError(f"topic {args.topic!r} was deleted while it was read") from None
                print(
                    f"ottla consume: topic {args.topic!r} was deleted; waiting for it to be "
                    "created again, then following the new topic from its beginning",
                    file=sys.stderr,
                    flush=True,
                )
                again = _wait_recreated(args, partitions_of)
                if again is None:
                    break
                src.assign(again)
                src.seek_to_beginning(again)
                last_record = time.monotonic()
                continue
            now = time.monotonic()
            if not batch:
                if args.timeout_ms is not None and (now - last_record) * 1000 >= args.timeout_ms:
                    break
                continue
            last_record = now
            out.write(b"".join(map(render, batch)))
            out.flush()
            bar.advance(len(batch))
            if remaining is not None:
                remaining -= len(batch)
    return 0
