"""``ottla mirror SOURCE TARGET``: copy topics between a data directory and
a cluster (either way, or cluster to cluster); see ottla.remote.mirror."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ottla.cli._util import UsageError, key_value, key_values

EPILOG = """\
SOURCE and TARGET are each a data directory or kafka://HOST:PORT[,HOST:PORT];
--source-bootstrap / --target-bootstrap HOST:PORT name a cluster instead of
the positional argument.

Each record keeps its partition (target topics are created with the
source's partition count), key, value, headers and timestamp. Progress is
kept at the target (a compacted topic, ottla-mirror.NAME): a mirror that was
stopped, even killed, continues where it stopped without copying a record
twice. The committed offsets of the source's consumer groups are translated
and committed at the target under the same group id (MirrorMaker 2's
checkpoints), so a pipeline moved to the target keeps its place; a group
with live members at the target is left alone.

Without --once, mirror follows the source until interrupted (Ctrl-C,
SIGTERM), checkpointing every --checkpoint-interval-ms. A progress bar is
drawn on a terminal only.

examples:
  ottla mirror ./ottla-data kafka://broker1:9092 --once
  ottla mirror ./ottla-data --target-bootstrap broker1:9092 -t 'orders.*' -t audit
  ottla mirror kafka://old:9092 kafka://new:9092 --group billing
  ottla mirror kafka://broker1:9092 ./backup --once --no-groups
  ottla mirror ./data kafka://b:9093 --target-config security.protocol=SASL_SSL \\
      --target-config sasl.mechanism=PLAIN --target-config sasl.username=app ...
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "mirror",
        help="copy topics and group offsets between a directory and a cluster",
        description="Copy topics (keys, headers, timestamps, partitions) and consumer groups' "
        "offsets from SOURCE to TARGET, continuing where the last run stopped.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("places", nargs="*", metavar="SOURCE TARGET", help="directory or kafka://...")
    p.add_argument("--source-bootstrap", metavar="HOST:PORT", help="the source is this cluster")
    p.add_argument("--target-bootstrap", metavar="HOST:PORT", help="the target is this cluster")
    p.add_argument(
        "--topic",
        "-t",
        action="append",
        metavar="PATTERN",
        help="a topic name or shell glob; repeatable (default: every topic)",
    )
    p.add_argument(
        "--group",
        "-g",
        action="append",
        metavar="PATTERN",
        help="a consumer group name or glob whose offsets to translate; repeatable "
        "(default: every group)",
    )
    p.add_argument("--no-groups", action="store_true", help="translate no group's offsets")
    p.add_argument("--once", action="store_true", help="copy up to the current end, then exit")
    p.add_argument(
        "--name",
        default="mirror",
        help="this mirror's name: its progress is the target's topic ottla-mirror.NAME "
        "(default: mirror)",
    )
    for side in ("source", "target"):
        p.add_argument(
            f"--{side}-config",
            type=key_value,
            action="append",
            metavar="KEY=VALUE",
            help=f"a client setting for the {side} cluster (librdkafka's name); repeatable",
        )
    p.add_argument(
        "--checkpoint-interval-ms",
        type=int,
        default=1000,
        metavar="MS",
        help="how often progress is recorded at the target (default 1000)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print no summary at the end")
    p.set_defaults(func=cmd_mirror)


def _places(args: argparse.Namespace) -> tuple[str, str]:
    given = list(args.places)
    want = 2 - (args.source_bootstrap is not None) - (args.target_bootstrap is not None)
    if len(given) != want:
        raise UsageError(
            f"give SOURCE and TARGET (a directory or kafka://HOST:PORT), {want} of them as "
            f"arguments with these --*-bootstrap options; got {len(given)}"
        )
    source = (
        "kafka://" + args.source_bootstrap if args.source_bootstrap is not None else given.pop(0)
    )
    target = "kafka://" + args.target_bootstrap if args.target_bootstrap is not None else given[0]
    return source, target


def cmd_mirror(args: argparse.Namespace) -> int:
    from ottla.remote.mirror import mirror

    source, target = _places(args)
    if args.no_groups and args.group:
        raise UsageError("give --group or --no-groups, not both")
    if args.checkpoint_interval_ms <= 0:
        raise UsageError("--checkpoint-interval-ms must be > 0")
    stats = mirror(
        source,
        target,
        args.topic or ["*"],
        groups=None if args.no_groups else (args.group or ["*"]),
        once=args.once,
        name=args.name,
        source_config=key_values(args.source_config) or None,
        target_config=key_values(args.target_config) or None,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
    )
    if not args.quiet:
        skipped = f", {stats.skipped} already there" if stats.skipped else ""
        print(
            f"mirrored {stats.records} records{skipped} of {len(stats.topics)} topics "
            f"({stats.partitions} partitions) from {source} to {target}",
            file=sys.stderr,
        )
        for g, moved in sorted(stats.groups.items()):
            print(f"group {g}: {len(moved)} partitions' offsets translated", file=sys.stderr)
        for g, why in sorted(stats.groups_left.items()):
            print(f"group {g}: left alone ({why})", file=sys.stderr)
    return 0
