"""``ottla cluster describe|reassign|elect-leaders|remove-broker``: the
operations of a replicated cluster, over ``--bootstrap-server``.

ElectLeaders goes through confluent-kafka's AdminClient; describe uses
Metadata v7 (for the leader epochs, which confluent-kafka does not show),
and reassignments and UnregisterBroker (which no installed maintained
client speaks) the few lines of Kafka's wire format in
:mod:`ottla.cluster`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ottla.cli._util import CliError, UsageError, action_adder, table

EPILOG = """\
Every action talks to a cluster: give --bootstrap-server HOST:PORT.

examples:
  ottla -b 127.0.0.1:9092 cluster describe
  ottla -b 127.0.0.1:9092 cluster reassign --topic orders --partition 0 --replicas 4,2,3 --wait
  ottla -b 127.0.0.1:9092 cluster reassign --plan plan.json --wait     # kafka-reassign-partitions' JSON
  ottla -b 127.0.0.1:9092 cluster reassign --list
  ottla -b 127.0.0.1:9092 cluster reassign --cancel --topic orders --partition 0
  ottla -b 127.0.0.1:9092 cluster elect-leaders --preferred
  ottla -b 127.0.0.1:9092 cluster elect-leaders --unclean --topic orders --partition 0
  ottla -b 127.0.0.1:9092 cluster remove-broker 4
"""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cluster",
        help="describe a cluster, move replicas, elect leaders, remove brokers",
        description="Operate a replicated ottla (or Kafka) cluster over its Kafka protocol.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = action_adder(p, common)

    a = action(
        "describe",
        "show brokers, the active controller, and every partition's leader, replicas and ISR",
        cmd_describe,
        "ottla -b 127.0.0.1:9092 cluster describe --under-replicated",
    )
    a.add_argument("--topic", "-t", action="append", metavar="TOPIC", help="only this topic")
    a.add_argument(
        "--under-replicated",
        action="store_true",
        help="only partitions whose ISR is smaller than their replica set",
    )

    a = action(
        "reassign",
        "move partition replicas (AlterPartitionReassignments), list or cancel moves",
        cmd_reassign,
        "ottla -b 127.0.0.1:9092 cluster reassign --topic orders --partition 0 --replicas 4,2,3",
    )
    what = a.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--plan",
        metavar="FILE",
        help="a plan in kafka-reassign-partitions' JSON format ('-': standard input)",
    )
    what.add_argument("--topic", "-t", metavar="TOPIC", help="one partition's topic")
    what.add_argument("--list", action="store_true", help="list the reassignments in progress")
    a.add_argument("--partition", "-p", type=int, metavar="P", help="with --topic")
    a.add_argument(
        "--replicas",
        metavar="IDS",
        help="with --topic: the target broker ids, comma-separated, preferred leader first",
    )
    a.add_argument(
        "--cancel",
        action="store_true",
        help="cancel the reassignments of --plan's or --topic's partitions (back to the original replicas)",
    )
    a.add_argument("--wait", action="store_true", help="wait until no reassignment is in progress")
    a.add_argument("--timeout", type=float, default=600.0, metavar="S", help="for --wait (600)")

    a = action(
        "elect-leaders",
        "elect preferred leaders, or leaders of leaderless partitions (ElectLeaders)",
        cmd_elect,
        "ottla -b 127.0.0.1:9092 cluster elect-leaders --preferred",
    )
    kind = a.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--preferred", action="store_true", help="move leadership to each first replica"
    )
    kind.add_argument(
        "--unclean",
        action="store_true",
        help="give leaderless partitions a leader, out of sync if needed (data may be lost)",
    )
    a.add_argument("--topic", "-t", metavar="TOPIC", help="one topic (default: all partitions)")
    a.add_argument("--partition", "-p", type=int, metavar="P", help="with --topic: one partition")

    a = action(
        "remove-broker",
        "move every replica off a broker, wait for it to stop, and unregister it",
        cmd_remove,
        "ottla -b 127.0.0.1:9092 cluster remove-broker 4",
    )
    a.add_argument("broker", type=int, metavar="ID")
    a.add_argument("--timeout", type=float, default=600.0, metavar="S", help="for each wait (600)")


def _server(args: argparse.Namespace) -> str:
    server: str | None = getattr(args, "bootstrap_server", None)
    if not server:
        raise UsageError("cluster commands need --bootstrap-server HOST:PORT")
    return server


def _ids(text: str) -> list[int]:
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--replicas takes comma-separated broker ids, not {text!r}") from None
    if not ids:
        raise UsageError("--replicas needs at least one broker id")
    return ids


def _fmt(ids: tuple[int, ...] | list[int]) -> str:
    return ",".join(str(i) for i in ids) or "-"


def cmd_describe(args: argparse.Namespace) -> int:
    from ottla.cluster import describe, list_reassignments

    server = _server(args)
    brokers, controller, parts = describe(server)
    moving = {(r.topic, r.partition) for r in list_reassignments(server)}
    live = {b[0] for b in brokers}
    known = sorted(live | {r for p in parts for r in p.replicas})
    rows: list[list[object]] = []
    for b in known:
        addr = next((f"{h}:{port}" for i, h, port in brokers if i == b), "-")
        status = "alive" if b in live else "not alive (fenced or stopped)"
        rows.append([b, addr, status + (", controller" if b == controller else "")])
    print(f"controller: {controller if controller >= 0 else 'none'}")
    table(["BROKER", "ADDRESS", "STATUS"], rows)
    if args.topic:
        parts = [p for p in parts if p.topic in args.topic]
    under = [p for p in parts if len(p.isr) < len(p.replicas)]
    if args.under_replicated:
        parts = under
    print()
    table(
        ["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "STATUS"],
        [
            [
                p.topic,
                p.partition,
                p.leader if p.leader is not None else "none",
                p.leader_epoch,
                _fmt(p.replicas),
                _fmt(p.isr),
                ", ".join(
                    s
                    for s, on in (
                        ("offline", p.leader is None),
                        ("under-replicated", len(p.isr) < len(p.replicas)),
                        ("reassigning", (p.topic, p.partition) in moving),
                    )
                    if on
                )
                or "ok",
            ]
            for p in parts
        ],
    )
    print(f"\nunder-replicated partitions: {len(under)}")
    return 0


def _read_plan(path: str) -> dict[tuple[str, int], list[int] | None]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        doc = json.loads(text)
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read the plan {path}: {e}") from None
    plan: dict[tuple[str, int], list[int] | None] = {}
    entries = doc.get("partitions") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise CliError(
            'a plan is {"version": 1, "partitions": [{"topic", "partition", "replicas"}]}'
        )
    for entry in entries:
        try:
            topic, partition = str(entry["topic"]), int(entry["partition"])
            replicas = entry.get("replicas")
            plan[(topic, partition)] = None if replicas is None else [int(r) for r in replicas]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CliError(f"bad plan entry {entry!r}") from None
    if not plan:
        raise CliError("the plan lists no partitions")
    return plan


def cmd_reassign(args: argparse.Namespace) -> int:
    from ottla.cluster import alter_reassignments, list_reassignments, wait_reassigned

    server = _server(args)
    if args.list:
        pending = list_reassignments(server)
        table(
            ["TOPIC", "PARTITION", "REPLICAS", "ADDING", "REMOVING"],
            [
                [r.topic, r.partition, _fmt(r.replicas), _fmt(r.adding), _fmt(r.removing)]
                for r in pending
            ],
        )
        if not pending:
            print("no reassignment in progress")
        return 0
    plan: dict[tuple[str, int], list[int] | None]
    if args.plan is not None:
        plan = _read_plan(args.plan)
    else:
        if args.partition is None:
            raise UsageError("--topic needs --partition")
        if args.cancel:
            plan = {(args.topic, args.partition): None}
        elif args.replicas is None:
            raise UsageError("--topic needs --replicas (or --cancel)")
        else:
            plan = {(args.topic, args.partition): _ids(args.replicas)}
    if args.cancel:
        plan = {tp: None for tp in plan}
    answers = alter_reassignments(server, dict(plan.items()))
    failed = 0
    for (topic, partition), (code, message) in sorted(answers.items()):
        if code:
            failed += 1
            print(f"{topic}-{partition}: error {code}: {message}", file=sys.stderr)
        else:
            verb = "cancelled" if plan.get((topic, partition)) is None else "reassigning"
            print(f"{topic}-{partition}: {verb}")
    if failed:
        raise CliError(f"{failed} of {len(answers)} partition(s) refused")
    if args.wait:
        wait_reassigned(server, timeout=args.timeout)
        print("done: no reassignment in progress")
    return 0


def cmd_elect(args: argparse.Namespace) -> int:
    try:
        from confluent_kafka import ElectionType, TopicPartition
        from confluent_kafka.admin import AdminClient
    except ImportError:
        raise CliError("elect-leaders needs confluent-kafka: pip install 'ottla[kafka]'") from None
    server = _server(args)
    if args.partition is not None and args.topic is None:
        raise UsageError("--partition needs --topic")
    partitions: list[Any] | None = None
    if args.topic is not None:
        if args.partition is not None:
            partitions = [TopicPartition(args.topic, args.partition)]
        else:
            from ottla.cluster import describe

            parts = [p for p in describe(server)[2] if p.topic == args.topic]
            if not parts:
                raise CliError(f"unknown topic {args.topic!r}")
            partitions = [TopicPartition(p.topic, p.partition) for p in parts]
    kind = ElectionType.UNCLEAN if args.unclean else ElectionType.PREFERRED
    admin = AdminClient({"bootstrap.servers": server})
    # (confluent-kafka 2.16 refuses timeout keywords here: a SystemError.)
    results = admin.elect_leaders(kind, partitions).result(60)
    failed = 0
    for tp, err in sorted(results.items(), key=lambda x: (x[0].topic, x[0].partition)):
        if err is None:
            print(f"{tp.topic}-{tp.partition}: elected")
            continue
        # A KafkaError, or a KafkaException wrapping one.
        error = err if hasattr(err, "name") else getattr(err, "args", [err])[0]
        name = error.name() if hasattr(error, "name") else str(error)
        if name == "ELECTION_NOT_NEEDED":
            print(f"{tp.topic}-{tp.partition}: not needed")
            continue
        failed += 1
        text = error.str() if hasattr(error, "str") else str(error)
        print(f"{tp.topic}-{tp.partition}: {name}: {text}", file=sys.stderr)
    if not results:
        print("no election needed")
    if failed:
        raise CliError(f"{failed} election(s) failed")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from ottla.cluster import ClusterError, describe, move_off_broker, unregister_broker

    server = _server(args)
    node = args.broker
    plan = move_off_broker(server, node, timeout=args.timeout)
    print(f"broker {node}: {len(plan)} replica(s) moved off")
    deadline = time.monotonic() + args.timeout
    told = False
    # A running broker registers again at its next heartbeat: it must stop.
    while any(b[0] == node for b in describe(server)[0]):
        if not told:
            print(f"broker {node} holds nothing now: stop its process to finish the removal")
            sys.stdout.flush()
            told = True
        if time.monotonic() > deadline:
            raise CliError(f"broker {node} is still running after {args.timeout:g} s")
        time.sleep(0.5)
    while True:
        try:
            unregister_broker(server, node)
            break
        except ClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    print(f"broker {node}: unregistered")
    return 0
