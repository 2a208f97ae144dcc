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

import os
import sys

import ottla
from ottla.cli._util import CliError, Terminated, UsageError

# Start-up time: `ottla serve` is a server people (and test suites) start
# and wait for, so its path imports only the engine, `ottla.cli.serve` and
# what that needs; argparse and the other command families are imported by
# the general path below, which every other command (and any `serve`
# command line the fast path does not fully understand) takes.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from types import FrameType
    from typing import NoReturn

EPILOG = """\
Every command works on a data directory (--data DIR, default $OTTLA_DATA or
./ottla-data) or, with --bootstrap-server HOST:PORT, on a Kafka-protocol
broker (needs confluent-kafka: pip install 'ottla[kafka]').

examples:
  ottla topics create events --partitions 3
  printf 'k1:hello\\nk2:world\\n' | ottla produce events --key-separator :
  ottla consume events --print-key
  ottla consume events --group audit --follow
  ottla groups describe audit
  ottla serve --data ./ottla-data --listen 127.0.0.1:9092
  ottla users add alice
  ottla acls add --allow-principal User:alice --operation Write --topic orders
  ottla mirror ./ottla-data kafka://broker1:9092 --once
  ottla cluster describe --bootstrap-server 127.0.0.1:9092

Run 'ottla COMMAND --help' for a command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from ottla.cli import acls, cluster, consume, groups, mirror, produce, serve, topics, users

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
    users.add_parser(sub, common)
    acls.add_parser(sub, common)
    mirror.add_parser(sub)
    cluster.add_parser(sub, common)
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
    """A message for a Kafka client's error (confluent-kafka's
    KafkaException, which ottla.remote did not turn into an ottla error),
    without importing it."""
    module = type(e).__module__ or ""
    if not module.startswith(("kafka", "confluent_kafka", "cimpl")):
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
    words: list[str] = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["serve"]:
        from ottla.cli import serve

        options = serve.parse_fast(words[1:])
        if options is not None:
            # A plain `serve` command line: run it without building the
            # parser. A refused value (UsageError) goes the general way,
            # which reports it with the command's usage line.
            try:
                return _run("serve", lambda: serve.serve(options), None)
            except UsageError:
                pass
    return _main(words)


def _main(words: list[str]) -> int:
    import signal

    parser = build_parser()
    args, extra = parser.parse_known_args(words)  # exits 2 on usage errors, 0 on --help
    if extra:
        _unrecognized(parser, words, extra)
    if getattr(args, "data", None) and getattr(args, "bootstrap_server", None):
        parser.error("give --data or --bootstrap-server, not both")
    signal.signal(signal.SIGTERM, _on_sigterm)
    command = " ".join(str(x) for x in (args.command, getattr(args, "action", None)) if x)
    try:
        return _run(command, lambda: int(args.func(args)), getattr(args, "bootstrap_server", None))
    except UsageError as e:
        _subparser_error(parser, words, f"{e}")


def _run(command: str, func: Callable[[], int], server: str | None) -> int:
    """Run a command; errors become one line on stderr and an exit status.
    :class:`UsageError` is left to the caller (it reports with a usage line)."""
    try:
        status = func()
        sys.stdout.flush()
        return status
    except UsageError:
        raise
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
        return 128 + 15  # SIGTERM
    except BrokenPipeError:
        # The reader went away (`ottla consume t | head`): not an error.
        _quiet_stdout()
        return 0
    except Exception as e:
        msg = _kafka_error(e, server)
        if msg is None:
            raise
        _fail(command, msg)
    return 1


def _fail(command: str, message: str) -> None:
    print(f"ottla {command}: error: {message}", file=sys.stderr)


def _leaf_parser(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the command the words name (``ottla groups describe``'s
    for ``groups describe g``), so errors show the command's own usage line."""
    import argparse

    target = parser
    rest = list(words)
    while True:
        choices = None
        for action in target._actions:
            if isinstance(action, argparse._SubParsersAction):
                choices = action.choices
        if not choices:
            break
        nxt = next((w for w in rest if w in choices), None)
        if nxt is None:
            break
        rest = rest[rest.index(nxt) + 1 :]
        target = choices[nxt]
    return target


def _subparser_error(
    parser: argparse.ArgumentParser, words: Sequence[str], message: str
) -> NoReturn:
    """Report like argparse (usage line, exit 2), for errors found after parsing."""
    _leaf_parser(parser, words).error(message)


def _unrecognized(
    parser: argparse.ArgumentParser, words: Sequence[str], extra: Sequence[str]
) -> NoReturn:
    """Unknown arguments, reported by the command's parser (not the top
    level's), with the closest option of that command for a mistyped one:
    ``unrecognized arguments: --max-mesages 5 (did you mean --max-messages?)``."""
    import difflib

    leaf = _leaf_parser(parser, words)
    known = [o for a in leaf._actions for o in a.option_strings if o.startswith("--")]
    hints: list[str] = []
    for word in extra:
        if not word.startswith("--"):
            continue
        name = word.split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close and close[0] not in hints:
            hints.append(close[0])
    hint = f" (did you mean {' or '.join(hints)}?)" if hints else ""
    leaf.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


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
