"""``ottla topics list|create|describe|delete|alter``."""

from __future__ import annotations

import argparse
from typing import Any

from ottla.cli._util import UsageError, action_adder, human_bytes, key_value, key_values, table
from ottla.cli.backend import open_backend

EPILOG = """\
examples:
  ottla topics create orders --partitions 3 --config retention.ms=86400000
  ottla topics list
  ottla topics describe orders
  ottla topics alter orders --partitions 6 --config retention.bytes=1073741824
  ottla topics alter orders --delete-config retention.ms
  ottla topics delete orders
  ottla topics list --bootstrap-server 127.0.0.1:9092
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "topics",
        help="list, create, describe, alter and delete topics",
        description="Manage topics in a data directory or on a broker.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = action_adder(p, common)

    action("list", "list topic names", cmd_list, "ottla topics list --data ./ottla-data")

    a = action(
        "create",
        "create a topic",
        cmd_create,
        "ottla topics create orders --partitions 3 --config retention.ms=3600000",
    )
    a.add_argument("topic")
    a.add_argument(
        "--partitions", type=int, default=1, metavar="N", help="number of partitions (default 1)"
    )
    a.add_argument(
        "--config",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="topic config, Kafka's names (retention.ms, segment.bytes, ...); repeatable",
    )
    a.add_argument(
        "--if-not-exists", action="store_true", help="succeed if the topic already exists"
    )

    a = action(
        "describe",
        "show partitions (offsets, size) and effective config",
        cmd_describe,
        "ottla topics describe orders",
    )
    a.add_argument("topic")

    a = action("delete", "delete a topic and its data", cmd_delete, "ottla topics delete orders")
    a.add_argument("topic")
    a.add_argument("--if-exists", action="store_true", help="succeed if the topic does not exist")

    a = action(
        "alter",
        "change a topic's config or grow its partitions",
        cmd_alter,
        "ottla topics alter orders --config retention.ms=-1 --partitions 6",
    )
    a.add_argument("topic")
    a.add_argument(
        "--config",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        help="set a config override; repeatable",
    )
    a.add_argument(
        "--delete-config",
        action="append",
        metavar="KEY",
        default=[],
        help="remove an override (back to the default); repeatable",
    )
    a.add_argument(
        "--partitions", type=int, metavar="N", help="grow to N partitions in total (never shrinks)"
    )


def cmd_list(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        for name in backend.list_topics():
            print(name)
    finally:
        backend.close()
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    if args.partitions < 1:
        raise UsageError("--partitions must be at least 1")
    backend = open_backend(args, create=True)
    try:
        if args.if_not_exists and args.topic in backend.list_topics():
            return 0
        backend.create_topic(args.topic, args.partitions, key_values(args.config))
        print(
            f"created topic {args.topic} ({args.partitions} partition{'s' if args.partitions != 1 else ''})"
        )
    finally:
        backend.close()
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        d = backend.describe_topic(args.topic)
    finally:
        backend.close()
    sizes = [p.size_bytes for p in d.partitions]
    total = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
    records = sum(p.end_offset - p.start_offset for p in d.partitions)
    print(
        f"topic: {d.name}  partitions: {len(d.partitions)}  records: {records}  size: {human_bytes(total)}"
    )
    table(
        ["partition", "start", "end", "records", "size"],
        [
            [
                p.partition,
                p.start_offset,
                p.end_offset,
                p.end_offset - p.start_offset,
                human_bytes(p.size_bytes),
            ]
            for p in d.partitions
        ],
    )
    print("config (* = set on this topic):")
    for key, value in sorted(d.config.items()):
        print(f"  {key}={value}{' *' if key in d.overrides else ''}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    try:
        if args.if_exists and args.topic not in backend.list_topics():
            return 0
        backend.delete_topic(args.topic)
        print(f"deleted topic {args.topic}")
    finally:
        backend.close()
    return 0


def cmd_alter(args: argparse.Namespace) -> int:
    changes = key_values(args.config)
    if not changes and not args.delete_config and args.partitions is None:
        raise UsageError("nothing to alter: give --config, --delete-config or --partitions")
    both = set(changes) & set(args.delete_config)
    if both:
        raise UsageError(f"both set and deleted: {', '.join(sorted(both))}")
    backend = open_backend(args)
    try:
        backend.alter_topic(args.topic, changes, args.delete_config, args.partitions)
    finally:
        backend.close()
    print(f"altered topic {args.topic}")
    return 0
