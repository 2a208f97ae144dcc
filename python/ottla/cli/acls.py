"""``ottla acls list|add|remove``: the ACLs of a data directory.

The spirit of ``kafka-acls.sh``: bindings of a principal (``User:alice``, or
``User:*`` for everyone), a host (``*`` or an IP address), operations and a
permission (ALLOW or DENY) to resources (``--topic``, ``--group``,
``--cluster``, ``--transactional-id``, ``--delegation-token``,
``--user-principal``), named literally or as a prefix
(``--resource-pattern-type prefixed``). They are checked by a broker started
with ``--authorizer standard``; a running broker sees a change within a
second. Over the wire, Kafka's CreateAcls, DescribeAcls and DeleteAcls do
the same (``kafka-acls.sh --bootstrap-server``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ottla import _core
from ottla.cli._util import CliError, UsageError, action_adder, data_dir, table

EPILOG = """\
examples:
  ottla acls add --allow-principal User:alice --operation Write --topic orders
  ottla acls add --allow-principal User:alice --operation Read --group app \\
      --topic events- --resource-pattern-type prefixed
  ottla acls add --deny-principal User:mallory --operation All --topic '*'
  ottla acls add --allow-principal User:ops --operation Alter --cluster
  ottla acls list --topic orders
  ottla acls remove --allow-principal User:alice --operation Write --topic orders
"""

# (flag, resource type) of the resource options, kafka-acls.sh's names.
_RESOURCES = (
    ("--topic", "TOPIC"),
    ("--group", "GROUP"),
    ("--transactional-id", "TRANSACTIONAL_ID"),
    ("--delegation-token", "DELEGATION_TOKEN"),
    ("--user-principal", "USER"),
)

OPERATIONS = (
    "All",
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "DescribeConfigs",
    "AlterConfigs",
    "IdempotentWrite",
    "CreateTokens",
    "DescribeTokens",
)

_KAFKA_OPS = {
    "clusteraction": "CLUSTER_ACTION",
    "describeconfigs": "DESCRIBE_CONFIGS",
    "alterconfigs": "ALTER_CONFIGS",
    "idempotentwrite": "IDEMPOTENT_WRITE",
    "createtokens": "CREATE_TOKENS",
    "describetokens": "DESCRIBE_TOKENS",
}


def _operation(text: str) -> str:
    """``Write``, ``write``, ``DescribeConfigs`` or ``DESCRIBE_CONFIGS``."""
    key = text.replace("_", "").replace("-", "").lower()
    if key in _KAFKA_OPS:
        return _KAFKA_OPS[key]
    upper = text.upper().replace("-", "_")
    if upper.replace("_", "") in {o.upper() for o in OPERATIONS}:
        return upper
    raise argparse.ArgumentTypeError(f"unknown operation {text!r} (one of {', '.join(OPERATIONS)})")


def _resource_args(a: argparse.ArgumentParser) -> None:
    for flag, rtype in _RESOURCES:
        a.add_argument(
            flag,
            action="append",
            metavar="NAME",
            dest=f"res_{rtype}",
            help=f"a {rtype.lower().replace('_', ' ')} ('*': every one; repeatable)",
        )
    a.add_argument("--cluster", action="store_true", help="the cluster (kafka-cluster)")
    a.add_argument(
        "--resource-pattern-type",
        type=str.upper,
        choices=["LITERAL", "PREFIXED", "MATCH", "ANY"],
        default=None,
        help="how names match: literal (default for add and remove) or prefixed; "
        "list also takes match (every ACL that applies) and any (default for list)",
    )


def _principal_args(a: argparse.ArgumentParser, listing: bool = False) -> None:
    if listing:
        a.add_argument("--principal", metavar="TYPE:NAME", help="only this principal's ACLs")
        return
    a.add_argument(
        "--allow-principal", action="append", metavar="TYPE:NAME", help="principal to allow"
    )
    a.add_argument(
        "--deny-principal", action="append", metavar="TYPE:NAME", help="principal to deny"
    )
    a.add_argument(
        "--allow-host", action="append", metavar="IP", help="host of the allowed (default '*')"
    )
    a.add_argument(
        "--deny-host", action="append", metavar="IP", help="host of the denied (default '*')"
    )
    a.add_argument(
        "--operation",
        action="append",
        type=_operation,
        metavar="OP",
        help=f"operation (repeatable): {', '.join(OPERATIONS)}",
    )


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "acls",
        help="add, list and remove the ACLs of a data directory",
        description="Manage the ACLs (kafka-acls.sh) a broker run with --authorizer standard checks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = action_adder(p, common)
    a = action(
        "list", "list ACLs (all, or a resource's)", cmd_list, "ottla acls list --topic orders"
    )
    _resource_args(a)
    _principal_args(a, listing=True)
    a = action(
        "add",
        "add ACLs",
        cmd_add,
        "ottla acls add --allow-principal User:alice --operation Write --topic orders",
    )
    _resource_args(a)
    _principal_args(a)
    a = action(
        "remove",
        "remove ACLs (those matching the options)",
        cmd_remove,
        "ottla acls remove --allow-principal User:alice --operation Write --topic orders",
    )
    _resource_args(a)
    _principal_args(a)


def _path(ns: argparse.Namespace) -> str:
    if getattr(ns, "bootstrap_server", None):
        raise UsageError(
            "ottla acls works on a data directory (--data); over the wire, use "
            "CreateAcls/DescribeAcls/DeleteAcls (kafka-acls.sh --bootstrap-server)"
        )
    path = data_dir(ns)
    marker = os.path.join(path, ".ottla", "cluster", "node")
    if os.path.exists(marker):
        raise UsageError(
            f"{path} is a cluster node's directory: its ACLs live in the "
            "cluster's metadata log; change them through a running node over the wire "
            "(kafka-acls.sh --bootstrap-server, confluent-kafka AdminClient.create_acls)"
        )
    return path


def _resources(ns: argparse.Namespace) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for _, rtype in _RESOURCES:
        out.extend((rtype, n) for n in getattr(ns, f"res_{rtype}") or [])
    if ns.cluster:
        out.append(("CLUSTER", "kafka-cluster"))
    return out


def _bindings(ns: argparse.Namespace) -> list[tuple[str, str, str, str, str, str, str]]:
    resources = _resources(ns)
    if not resources:
        raise UsageError("name a resource: --topic, --group, --cluster, --transactional-id, ...")
    pattern = ns.resource_pattern_type or "LITERAL"
    if pattern not in ("LITERAL", "PREFIXED"):
        raise UsageError("--resource-pattern-type must be literal or prefixed here")
    who: list[tuple[str, str, str]] = []
    for perm, principals, hosts in (
        ("ALLOW", ns.allow_principal, ns.allow_host),
        ("DENY", ns.deny_principal, ns.deny_host),
    ):
        for principal in principals or []:
            if ":" not in principal:
                raise UsageError(f"principal {principal!r} must be TYPE:NAME, e.g. User:alice")
            for host in hosts or ["*"]:
                who.append((perm, principal, host))
    if not who:
        raise UsageError("name a principal: --allow-principal or --deny-principal")
    if not ns.operation:
        raise UsageError("name an operation: --operation (e.g. Read, Write, All)")
    return [
        (rtype, name, pattern, principal, host, op, perm)
        for rtype, name in resources
        for perm, principal, host in who
        for op in ns.operation
    ]


def _print(rows: list[tuple[str, str, str, str, str, str, str]]) -> None:
    table(
        ["RESOURCE_TYPE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"],
        [list(r) for r in rows],
    )


def cmd_list(ns: argparse.Namespace) -> int:
    path = _path(ns)
    resources = _resources(ns)
    pattern = ns.resource_pattern_type or "ANY"
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    if not resources:
        rows = _core.acls(path, pattern_type=pattern, principal=ns.principal)
    for rtype, name in resources:
        rows.extend(
            r
            for r in _core.acls(
                path, resource_type=rtype, name=name, pattern_type=pattern, principal=ns.principal
            )
            if r not in rows
        )
    _print(rows)
    return 0


def cmd_add(ns: argparse.Namespace) -> int:
    path = _path(ns)
    bindings = _bindings(ns)
    try:
        _core.create_acls(path, bindings)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"added {len(bindings)} ACL(s)", file=sys.stderr)
    return 0


def cmd_remove(ns: argparse.Namespace) -> int:
    path = _path(ns)
    gone = 0
    for rtype, name, pattern, principal, host, op, perm in _bindings(ns):
        gone += len(
            _core.delete_acls(
                path,
                resource_type=rtype,
                name=name,
                pattern_type=pattern,
                principal=principal,
                host=host,
                operation=op,
                permission=perm,
            )
        )
    if not gone:
        raise CliError("no ACL matched")
    print(f"removed {gone} ACL(s)", file=sys.stderr)
    return 0
