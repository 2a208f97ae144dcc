"""``ottla groups list|describe|delete|reset-offsets``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ottla.cli._util import CliError, UsageError, action_adder, format_time_ms, parse_time_ms, table
from ottla.cli.backend import TP, Backend, open_backend
from ottla.cli.progress import Progress

EPILOG = """\
examples:
  ottla groups list
  ottla groups describe billing
  ottla groups delete billing                                                        # refused while it has live members
  ottla groups reset-offsets --group billing --topic orders --to-earliest            # dry run: shows the plan
  ottla groups reset-offsets --group billing --topic orders --to-earliest --execute
  ottla groups reset-offsets --group billing --to-datetime 2026-11-26T08:00:00Z --execute
  ottla groups reset-offsets --group billing --topic orders --to-offset 100 --execute
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "groups",
        help="list, describe and delete consumer groups, reset their offsets",
        description="Inspect and delete consumer groups, and move their committed offsets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = action_adder(p, common)

    action("list", "list consumer groups", cmd_list, "ottla groups list")
    a = action(
        "describe",
        "show a group's state, members, committed offsets and lag",
        cmd_describe,
        "ottla groups describe billing",
    )
    a.add_argument("group")

    a = action(
        "delete",
        "delete groups and their committed offsets (refused while a group has live members)",
        cmd_delete,
        "ottla groups delete billing",
    )
    a.add_argument("group", nargs="+")

    a = action(
        "reset-offsets",
        "move a group's committed offsets (a dry run unless --execute)",
        cmd_reset,
        "ottla groups reset-offsets --group billing --topic orders --to-earliest --execute",
    )
    a.add_argument("--group", "-g", required=True, metavar="GROUP")
    a.add_argument(
        "--topic",
        "-t",
        action="append",
        metavar="TOPIC",
        help="a topic to reset; repeatable (default: every topic the group has committed)",
    )
    target = a.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="each partition's first offset")
    target.add_argument("--to-latest", action="store_true", help="each partition's end offset")
    target.add_argument(
        "--to-datetime",
        type=parse_time_ms,
        metavar="TIME",
        help="the first record at or after TIME (ISO-8601 or epoch ms)",
    )
    target.add_argument(
        "--to-offset",
        type=int,
        metavar="N",
        help="offset N in every partition (kept within the log)",
    )
    a.add_argument(
        "--execute", action="store_true", help="apply the plan (otherwise only print it)"
    )


def cmd_list(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        for g in backend.list_groups():
            print(g)
    finally:
        backend.close()
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        d = backend.describe_group(args.group)
        owner: dict[TP, str] = {tp: m.member_id for m in d.members for tp in m.assignment}
        # Assigned partitions the group has not committed yet: their end
        # offsets too (the lag stays "-": it is undefined without a commit).
        uncommitted = sorted(set(owner) - {(o.topic, o.partition) for o in d.offsets})
        ends: dict[TP, int] = {}
        if uncommitted:
            src = backend.open_source(None, "earliest")
            try:
                ends = src.end_offsets(uncommitted)
            finally:
                src.close()
    finally:
        backend.close()
    protocol = f"  protocol: {d.protocol}" if d.protocol else ""
    print(f"group: {d.group_id}  state: {d.state}{protocol}  members: {len(d.members)}")
    rows: list[list[object]] = [
        [
            o.topic,
            o.partition,
            "-" if o.committed is None else o.committed,
            o.end_offset,
            "-" if o.lag is None else o.lag,
            owner.get((o.topic, o.partition), "-"),
        ]
        for o in d.offsets
    ]
    rows += [[t, p, "-", ends.get((t, p), "-"), "-", owner[(t, p)]] for t, p in uncommitted]
    rows.sort(key=lambda r: (str(r[0]), int(str(r[1]))))
    table(["topic", "partition", "committed", "end", "lag", "member"], rows)
    if d.members:
        print("members:")
        table(
            ["member", "client", "host", "partitions"],
            [
                [
                    m.member_id,
                    m.client_id,
                    m.host,
                    ",".join(f"{t}-{p}" for t, p in m.assignment) or "-",
                ]
                for m in d.members
            ],
        )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        for group in args.group:
            backend.delete_group(group)
            print(f"deleted group {group}")
    finally:
        backend.close()
    return 0


def _plan(args: argparse.Namespace, backend: Backend) -> dict[TP, Any]:
    committed = backend.committed_offsets(args.group)
    topics: list[str] = args.topic or sorted({t for t, _ in committed})
    if not topics:
        raise CliError(
            f"group {args.group!r} has no committed offsets in {backend.where}; name topics with --topic"
        )
    tps: list[TP] = []
    for t in topics:
        tps.extend((t, p) for p in backend.partitions(t))
    src = backend.open_source(None, "earliest")
    plan: dict[TP, Any] = {}
    try:
        with Progress(f"reset {args.group}", total=len(tps), unit="partitions") as bar:
            begin = src.beginning_offsets(tps)
            end = src.end_offsets(tps)
            at_time: dict[TP, int | None] = (
                src.offsets_for_time(tps, args.to_datetime) if args.to_datetime is not None else {}
            )
            for tp in tps:
                if args.to_earliest:
                    new = begin[tp]
                elif args.to_latest:
                    new = end[tp]
                elif args.to_datetime is not None:
                    found = at_time.get(tp)
                    new = end[tp] if found is None else found
                else:
                    new = min(max(args.to_offset, begin[tp]), end[tp])
                plan[tp] = (committed.get(tp), new)
                bar.advance()
    finally:
        src.close()
    return plan


def cmd_reset(args: argparse.Namespace) -> int:
    if args.to_offset is not None and args.to_offset < 0:
        raise UsageError("--to-offset must not be negative")
    backend = open_backend(args)
    try:
        plan = _plan(args, backend)
        if args.execute:
            done = backend.commit_group_offsets(
                args.group, {tp: new for tp, (_, new) in plan.items()}
            )
            plan = {tp: (cur, done.get(tp, new)) for tp, (cur, new) in plan.items()}
    finally:
        backend.close()
    table(
        ["topic", "partition", "current", "new"],
        [[t, p, "-" if cur is None else cur, new] for (t, p), (cur, new) in sorted(plan.items())],
    )
    if args.execute:
        print(
            f"reset {len(plan)} partition{'s' if len(plan) != 1 else ''} of group {args.group}",
            file=sys.stderr,
        )
    else:
        when = f" (to {format_time_ms(args.to_datetime)})" if args.to_datetime is not None else ""
        print(f"dry run{when}: nothing changed; add --execute to apply", file=sys.stderr)
    return 0
