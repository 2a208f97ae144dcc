"""The ``ottla`` command.

One module per command family (:mod:`~ottla.cli.topics`,
:mod:`~ottla.cli.produce`, :mod:`~ottla.cli.consume`,
:mod:`~ottla.cli.groups`, :mod:`~ottla.cli.serve`), written once against
:class:`ottla.cli.backend.Backend`; a data directory (``--data``) and a
broker (``--bootstrap-server``) are its two implementations.

Exit status: 0 success, 1 error (one line on stderr), 2 usage error, 130
after Ctrl-C, 143 after SIGTERM (``serve`` exits 0 on both: that is how a
server is stopped).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

import ottla
from ottla.cli import consume, groups, produce, serve, topics
from ottla.cli._util import CliError, Terminated, UsageError

EPILOG = """\
Every command works on a data directory (--data DIR, default $OTTLA_DATA or
./ottla-data) or, with --bootstrap-server HOST:PORT, on a Kafka-protocol
broker (needs kafka-python: pip install 'ottla[remote]').

examples:
  ottla topics create events --partitions 3
  printf 'k1:hello\\nk2:world\\n' | ottla produce events --key-separator :
  ottla consume events --print-key
  ottla consume events --group audit --follow
  ottla groups describe audit
  ottla serve --data ./ottla-data --listen 127.0.0.1:9092

Run 'ottla COMMAND --help' for a command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ottla",
        description="Kafka you can pip install: topics, records and consumer groups on a data directory or a broker.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ottla {ottla.__version__}")
    _add_target(parser, None)

    # The same options on every leaf command; SUPPRESS keeps a value given
    # before the command name (`ottla --data d topics list`) from being reset.
    common = argparse.ArgumentParser(add_help=False)
    _add_target(common, argparse.SUPPRESS)

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    topics.add_parser(sub, common)
    produce.add_parser(sub, common)
    consume.add_parser(sub, common)
    groups.add_parser(sub, common)
    serve.add_parser(sub)
    return parser


def _add_target(parser: argparse.ArgumentParser, default: str | None) -> None:
    g = parser.add_argument_group("where")
    g.add_argument(
        "--data",
        "-d",
        metavar="DIR",
        default=default,
        help="data directory (default: $OTTLA_DATA or ./ottla-data)",
    )
    g.add_argument(
        "--bootstrap-server",
        "-b",
        metavar="HOST:PORT",
        default=default,
        help="talk to a Kafka-protocol broker instead of a directory",
    )


def _message(e: BaseException) -> str:
    """One line for a typed error; the engine's messages already name the
    topic, file or position, so only the class needs translating."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, ottla.GroupMemberConflictError):
        return f"group is in use: {text}"
    if type(e).__name__ == "GroupNotEmptyError":
        return text if "live" in text else f"group has live members: {text}"
    if isinstance(e, ottla.TopicAlreadyExistsError):
        return text
    if isinstance(e, ottla.InvalidConfigError):
        return text
    if isinstance(e, ottla.CorruptRecordError):
        return f"corrupt data: {text}"
    if isinstance(e, ottla.StorageError):
        return f"storage: {text}"
    return text


def _kafka_error(e: BaseException, server: str | None) -> str | None:
    """A message for kafka-python's errors, without importing it."""
    module = type(e).__module__ or ""
    if not module.startswith("kafka"):
        return None
    name = type(e).__name__
    text = str(e).strip()
    if text.startswith(name):
        text = text[len(name) :].lstrip(": ")
    detail = f"{name}: {text}" if text else name
    if name in ("NoBrokersAvailable", "KafkaTimeoutError") and server:
        return f"no usable broker at {server} ({detail})"
    return detail


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ottla`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, 0 on --help
    if getattr(args, "data", None) and getattr(args, "bootstrap_server", None):
        parser.error("give --data or --bootstrap-server, not both")
    signal.signal(signal.SIGTERM, _on_sigterm)
    command = " ".join(str(x) for x in (args.command, getattr(args, "action", None)) if x)
    try:
        status: int = args.func(args)
        sys.stdout.flush()
        return status
    except UsageError as e:
        _subparser_error(parser, argv, f"{e}")
    except CliError as e:
        _fail(command, str(e))
    except ottla.OttlaError as e:
        _fail(command, _message(e))
    except KeyboardInterrupt:
        _flush_stdout()
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        _flush_stdout()
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # The reader went away (`ottla consume t | head`): not an error.
        _quiet_stdout()
        return 0
    except Exception as e:
        msg = _kafka_error(e, getattr(args, "bootstrap_server", None))
        if msg is None:
            raise
        _fail(command, msg)
    return 1


def _fail(command: str, message: str) -> None:
    print(f"ottla {command}: error: {message}", file=sys.stderr)


def _subparser_error(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, message: str
) -> NoReturn:
    """Report like argparse (usage line, exit 2), for errors found after parsing."""
    words: list[str] = list(sys.argv[1:] if argv is None else argv)
    target = parser
    # Walk down to the leaf parser so the usage line is the command's own.
    while True:
        choices = None
        for action in target._actions:
            if isinstance(action, argparse._SubParsersAction):
                choices = action.choices
        if not choices:
            break
        nxt = next((w for w in words if w in choices), None)
        if nxt is None:
            break
        words = words[words.index(nxt) + 1 :]
        target = choices[nxt]
    target.error(message)


def _flush_stdout() -> None:
    """Keep what was printed before a signal; drop it if nobody reads."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        _quiet_stdout()


def _quiet_stdout() -> None:
    """After a broken pipe or a signal, keep the interpreter's final flush of
    stdout from raising again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
