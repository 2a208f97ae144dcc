"""``ottla users list|add|delete``: the SCRAM users of a data directory.

Users authenticate on SASL listeners (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512);
the directory keeps only salted, hashed credentials (RFC 5802), never a
password. A running broker sees a change at the user's next login. Over the
wire, Kafka's AlterUserScramCredentials does the same (``kafka-configs
--alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ottla import _core
from ottla.cli._util import CliError, UsageError, action_adder, data_dir, table

EPILOG = """\
examples:
  ottla users add alice                        # asks for the password
  printf 's3cret\\n' | ottla users add alice     # or reads it from stdin
  ottla users add svc --mechanism SCRAM-SHA-512 --iterations 8192
  ottla users list
  ottla users delete alice
"""

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "users",
        help="add, list and delete the SASL users of a data directory",
        description="Manage the SCRAM users (SASL PLAIN and SCRAM logins) of a data directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = action_adder(p, common)
    action("list", "list users and their SCRAM mechanisms", cmd_list, "ottla users list")
    a = action(
        "add",
        "add a user or change their password",
        cmd_add,
        "ottla users add alice",
    )
    a.add_argument("user")
    a.add_argument(
        "--password",
        metavar="PASSWORD",
        help="the password (visible to other users in the process list: prefer the prompt or stdin)",
    )
    a.add_argument(
        "--mechanism",
        action="append",
        choices=MECHANISMS,
        help="SCRAM mechanism to store (repeatable; default both)",
    )
    a.add_argument(
        "--iterations",
        type=int,
        default=4096,
        metavar="N",
        help="PBKDF2 iterations, 4096 to 16384 (default 4096)",
    )
    a = action("delete", "delete a user's credentials", cmd_delete, "ottla users delete alice")
    a.add_argument("user", nargs="+")
    a.add_argument(
        "--mechanism",
        action="append",
        choices=MECHANISMS,
        help="delete only this mechanism's credential (repeatable; default all)",
    )


def _path(ns: argparse.Namespace) -> str:
    if getattr(ns, "bootstrap_server", None):
        raise UsageError(
            "ottla users works on a data directory (--data); over the wire, use "
            "AlterUserScramCredentials (kafka-configs --entity-type users)"
        )
    path = data_dir(ns)
    marker = os.path.join(path, ".ottla", "cluster", "node")
    if os.path.exists(marker):
        raise UsageError(
            f"{path} is a cluster node's directory: its SCRAM users live in the "
            "cluster's metadata log; change them through a running node over the wire "
            "(kafka-configs.sh --entity-type users, AdminClient.alter_user_scram_credentials)"
        )
    return path


def cmd_list(ns: argparse.Namespace) -> int:
    rows = _core.scram_users(_path(ns))
    by_user: dict[str, list[str]] = {}
    for user, mech, iterations in rows:
        by_user.setdefault(user, []).append(f"{mech}(iterations={iterations})")
    table(["USER", "MECHANISMS"], [[u, " ".join(m)] for u, m in by_user.items()])
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CliError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_add(ns: argparse.Namespace) -> int:
    path = _path(ns)
    password = ns.password if ns.password is not None else _read_password()
    if not password:
        raise UsageError("the password must not be empty")
    if not 4096 <= ns.iterations <= 16384:
        raise UsageError("--iterations must be between 4096 and 16384")
    _core.set_scram_user(path, ns.user, password, mechanisms=ns.mechanism, iterations=ns.iterations)
    print(f"user {ns.user} set ({', '.join(ns.mechanism or MECHANISMS)})", file=sys.stderr)
    return 0


def cmd_delete(ns: argparse.Namespace) -> int:
    path = _path(ns)
    missing = [u for u in ns.user if not _core.delete_scram_user(path, u, mechanisms=ns.mechanism)]
    if missing:
        raise CliError(f"no such user: {', '.join(missing)}")
    return 0
