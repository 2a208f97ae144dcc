"""Small helpers every command family shares: errors, argument parsing of
``key=value`` and times, and human-readable sizes."""

from __future__ import annotations

import os
import sys

# Light at import: `ottla serve` imports this module and nothing it does
# not need (argparse, datetime and typing are imported where used).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, TextIO

DEFAULT_DATA = "./ottla-data"


class CliError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


class UsageError(CliError):
    """Arguments that parse but do not make sense together: exit status 2,
    like argparse's own usage errors."""


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` in a command swallows it and ``with`` blocks still
    close consumers (committing their positions) on the way out."""


def data_dir(args: object) -> str:
    """``--data``, else ``$OTTLA_DATA``, else ``./ottla-data``."""
    value: str | None = getattr(args, "data", None)
    return value or os.environ.get("OTTLA_DATA") or DEFAULT_DATA


def key_value(text: str) -> tuple[str, str]:
    """argparse type for ``--config key=value`` and ``--header key=value``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        import argparse

        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def key_values(pairs: Iterable[tuple[str, str]] | None) -> dict[str, str]:
    return dict(pairs or [])


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch from ``1700000000000`` (epoch ms) or an
    ISO-8601 date/time (``2026-11-26``, ``2026-11-26T08:00:00Z``,
    ``2026-11-26 08:00:00+01:00``). A time without a zone is local time, as
    a person typing it on this machine means."""
    import argparse
    from datetime import datetime

    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    iso = t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO-8601 time (2026-11-26T08:00:00Z) or epoch milliseconds, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # interpret as local time
    return int(when.timestamp() * 1000)


def format_time_ms(ms: int) -> str:
    from datetime import datetime, timezone

    if ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable; keeps the type checker content


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO | None = None
) -> None:
    """Print left-aligned columns (numbers right-aligned), like the Kafka tools."""
    stream = out if out is not None else sys.stdout
    cells: list[list[str]] = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    # A column of numbers (and "-" for unknown ones) is right-aligned.
    numeric = [
        any(isinstance(r[i], int) for r in rows)
        and all(isinstance(r[i], int) or r[i] == "-" for r in rows)
        for i in range(len(headers))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        parts = [
            (c.rjust(w) if num else c.ljust(w))
            for c, w, num in zip(row, widths, numeric, strict=True)
        ]
        print("  ".join(parts).rstrip(), file=stream)


def action_adder(
    p: argparse.ArgumentParser, common: argparse.ArgumentParser
) -> Callable[[str, str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]:
    """The ACTION subcommands of a command family (``ottla topics ACTION``):
    returns ``action(name, help, func, example)``, which adds one, with the
    common options, a description made from ``help`` and ``example`` as its
    epilog, and returns its parser for the action's own arguments."""
    import argparse

    actions: Any = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(
        name: str, help: str, func: Callable[[argparse.Namespace], int], example: str
    ) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            parents=[common],
            epilog=f"example:\n  {example}\n",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        a.set_defaults(func=func)
        return a

    return action
