"""What a newcomer meets in the first hour with the ``ottla`` command and the
README: start-up imports, Kafka's defaults for groups, one rule for creating
topics, ``groups delete``, typo suggestions, clear errors for unknown names
and unreachable brokers, null rendering, and a clean working tree.

Every command runs as a real process (``python -m ottla.cli``), on temporary
directories and free ports.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ottla
from helpers import CLI_CODE, Spawn, free_port, wait_until
from test_cli import fails, ok, run

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_PARENT = str(Path(ottla.__file__).resolve().parent.parent)

# What `import ottla` and `ottla serve` must not load: the standard library's
# slow-to-import modules, and ottla's own modules that need them.
HEAVY = {
    "argparse",
    "dataclasses",
    "inspect",
    "typing",
    "html",
    "difflib",
    "ottla.admin",
    "ottla.types",
    "ottla._display",
    "ottla.cli.backend",
    "ottla.cli.consume",
    "ottla.cli.topics",
    # `ottla serve` uses the C modules under these (their enums and Thread
    # objects cost milliseconds):
    "enum",
    "re",
    "signal",
    "threading",
}


def _isolated(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python -S`` (no site, so no ``.pth`` file of this
    environment imports anything first) and only ottla's directory on the
    path, so ``sys.modules`` shows what ottla itself imports."""
    prelude = f"import sys\nsys.path.insert(0, {PACKAGE_PARENT!r})\nbefore = set(sys.modules)\n"
    return subprocess.run(
        [sys.executable, "-S", "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- start-up ---------------------------------------------------------------------
def test_import_ottla_loads_only_the_engine() -> None:
    p = _isolated(
        f"""
        import ottla
        print(sorted((set(sys.modules) - before) & set({sorted(HEAVY)!r})))
        # The lazily imported names still work, and are the same objects.
        import ottla.admin
        assert ottla.Admin is ottla.admin.Admin
        from ottla import OffsetAndMetadata, TopicDescription
        assert OffsetAndMetadata(3).offset == 3 and TopicDescription.__name__ == "TopicDescription"
        assert ottla.admin.ConfigValue is not None
        print("ok")
        """
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["[]", "ok"], p.stdout


def test_lazy_names_without_an_explicit_submodule_import() -> None:
    p = _isolated(
        """
        import ottla
        print(ottla.admin.ConfigValue is not None, ottla.types.OffsetAndMetadata(1).offset)
        try:
            ottla.no_such_name
        except AttributeError as e:
            print(e)
        """
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["True 1", "module 'ottla' has no attribute 'no_such_name'"]


def test_serve_path_imports_no_argparse(tmp_path: Path) -> None:
    # A stand-in broker records what `ottla serve` has imported once it
    # serves (all of it: the server thread runs), then stops at once.
    p = _isolated(
        f"""
        import ottla

        class StandInBroker:
            bootstrap_servers = "127.0.0.1:1"

            def __init__(self, *args, **kwargs):
                pass

            def serve_forever(self):
                print(sorted((set(sys.modules) - before) & set({sorted(HEAVY)!r})), flush=True)

            def close(self):
                pass

        ottla.Broker = StandInBroker
        from ottla.cli import main
        sys.exit(main(sys.argv[1:]))
        """,
        "serve",
        "--data",
        str(tmp_path / "d"),
        "--listen",
        "127.0.0.1:0",
        "--num-partitions",
        "2",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["listening on 127.0.0.1:1", "[]"]
    assert p.stderr.splitlines()[-1] == "stopped"


SERVE_LINES = [
    [],
    ["--data", "d", "--listen", "127.0.0.1:0"],
    ["-d", "d", "-l", ":9093", "--no-auto-create-topics", "--fsync", "always"],
    ["--data=d", "--listen=[::1]:0", "--num-partitions=3", "--fetch-max-bytes", "1000"],
    ["--queued-max-request-bytes", "-1", "--max-connections", "10", "--max-open-files", "64"],
    ["--max-connections-per-ip", "2", "--retention-check-interval-ms", "1000"],
    ["--group-initial-rebalance-delay-ms", "300"],
    ["--group-consumer-heartbeat-interval-ms", "100", "--group-consumer-session-timeout-ms", "900"],
    ["--max-request-bytes", "2048", "--data", "first", "--data", "last"],
    ["--num-partitions", "0"],  # parsed alike; refused later by both paths
    ["--num-partitions", " 7"],
    # Lines the fast path leaves to argparse:
    ["--help"],
    ["-h"],
    ["--num-part", "2"],  # an abbreviation argparse accepts
    ["--fsync", "sometimes"],
    ["--listen", "localhost:http"],
    ["--num-partitions", "many"],
    ["--data"],
    ["--data", "--fsync"],
    ["-d=x"],
    ["extra"],
    ["--no-auto-create-topics=1"],
    ["--frobnicate"],
]


@pytest.mark.parametrize("words", SERVE_LINES, ids=lambda w: " ".join(w) or "(none)")
def test_serve_fast_parser_agrees_with_argparse(words: list[str]) -> None:
    from ottla.cli import build_parser
    from ottla.cli.serve import ServeOptions, parse_fast

    fast = parse_fast(list(words))
    if fast is None:
        return  # argparse answers, as it always did
    ns = build_parser().parse_args(["serve", *words])
    assert vars(fast) == vars(ServeOptions.from_namespace(ns))
    # Every serve option has a place in ServeOptions (the fast path reads them all).
    assert set(vars(ns)) - {"bootstrap_server", "command", "func"} == set(vars(fast))


def test_serve_fast_path_refusals_are_reported_with_the_usage_line(tmp_path: Path) -> None:
    err = fails(2, "serve", "--num-partitions", 0, "--data", tmp_path / "d")
    assert "usage: ottla serve" in err and "--num-partitions must be at least 1" in err
    err = fails(2, "serve", "--fsync", "sometimes", "--data", tmp_path / "d")
    assert "usage: ottla serve" in err and "invalid choice" in err
    assert not (tmp_path / "d").exists()


# -- typos --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "usage", "hint"),
    [
        (["consume", "t", "--max-mesages", "5"], "ottla consume", "--max-messages"),
        (["topics", "create", "t", "--partitons", "3"], "ottla topics create", "--partitions"),
        (["groups", "describe", "g", "--bootstrap-sever", "x:1"], "ottla groups describe", None),
        (["serve", "--listn", "127.0.0.1:0"], "ottla serve", "--listen"),
        (["produce", "t", "--key-seperator=:"], "ottla produce", "--key-separator"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else str(x),
)
def test_a_mistyped_option_is_reported_by_its_command_with_a_suggestion(
    tmp_path: Path, args: list[str], usage: str, hint: str | None
) -> None:
    err = fails(2, *args, cwd=tmp_path)
    assert f"usage: {usage} " in err, err
    assert f"{usage}: error: unrecognized arguments: " in err, err
    if hint is not None:
        assert f"(did you mean {hint}?)" in err, err
    else:
        assert "(did you mean --bootstrap-server?)" in err, err
    assert not (tmp_path / "ottla-data").exists()


def test_an_unrelated_word_gets_no_suggestion(tmp_path: Path) -> None:
    err = fails(2, "topics", "list", "--zzzzzz", cwd=tmp_path)
    assert "ottla topics list: error: unrecognized arguments: --zzzzzz" in err
    assert "did you mean" not in err


# -- consume --group: Kafka's defaults -------------------------------------------------
def test_a_new_group_starts_at_the_end_unless_from_beginning(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "t", "--partitions", 2, *d)
    ok("produce", "t", *d, input=b"a\nb\n")

    p = run("consume", "t", "--group", "late", *d)
    assert p.returncode == 0 and p.stdout == b""
    assert "no committed offsets" in p.stderr and "--from-beginning" in p.stderr
    ok("produce", "t", *d, input=b"c\n")
    assert ok("consume", "t", "--group", "late", *d).split() == ["c"]  # from where it started

    assert sorted(ok("consume", "t", "--group", "early", "--from-beginning", *d).split()) == [
        "a",
        "b",
        "c",
    ]
    assert sorted(ok("consume", "t", "--group", "b2", "--offset", "beginning", *d).split()) == [
        "a",
        "b",
        "c",
    ]
    assert ok("consume", "t", "--group", "e2", "--offset", "end", *d) == ""
    # Committed offsets come first: --from-beginning does not rewind a group.
    assert ok("consume", "t", "--group", "early", "--from-beginning", *d) == ""
    # Without --group, the whole topic, as before.
    assert sorted(ok("consume", "t", *d).split()) == ["a", "b", "c"]
    help_text = ok("consume", "--help")
    assert "starts at the end" in help_text and "--from-beginning" in help_text


# -- produce creates topics as the Producer does ------------------------------------------
def test_produce_creates_a_missing_topic_like_the_python_producer(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    p = run("produce", "orders", "--data", d, input=b"one\ntwo\n")
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        "created topic orders (1 partition)",
        "produced 2 records to orders",
    ]
    with ottla.Producer(d) as producer:  # the same rule in Python
        producer.send("viaapi", b"x").get(10)
    assert ottla.Admin(d).list_topics() == ["orders", "viaapi"]
    assert ok("consume", "orders", "--data", d).split() == ["one", "two"]

    # --no-auto-create-topics refuses, naming close topics, and creates nothing.
    err = fails(1, "produce", "order", "--no-auto-create-topics", "--data", d, input=b"x\n")
    assert "unknown topic 'order'" in err and "did you mean 'orders'?" in err
    err = fails(
        1, "produce", "x", "--no-auto-create-topics", "--data", tmp_path / "none", input=b""
    )
    assert "no ottla data directory" in err
    assert ottla.Admin(d).list_topics() == ["orders", "viaapi"]
    assert not (tmp_path / "none").exists()
    # A partition the created topic does not have.
    err = fails(1, "produce", "single", "--partition", 3, "--data", d, input=b"x\n")
    assert "no partition 3" in err


@pytest.mark.skipif(not hasattr(ottla, "Broker"), reason="ottla.Broker not in this build")
def test_produce_through_a_broker_follows_the_brokers_rule(data_dir: Path) -> None:
    pytest.importorskip("confluent_kafka")
    with ottla.Broker(data_dir, port=0) as broker:
        b = ["--bootstrap-server", broker.bootstrap_servers]
        p = run("produce", "made", *b, input=b"v\n", timeout=120)
        assert p.returncode == 0, p.stderr
        assert "created topic made" in p.stderr
        assert "made" in ottla.Admin(data_dir).list_topics()
        err = fails(1, "produce", "nope", "--no-auto-create-topics", *b, input=b"v\n", timeout=120)
        assert "unknown topic 'nope'" in err
    with ottla.Broker(data_dir, port=0, auto_create_topics=False) as broker:
        b = ["--bootstrap-server", broker.bootstrap_servers]
        err = fails(1, "produce", "refused", *b, input=b"v\n", timeout=120)
        assert "unknown topic 'refused'" in err and "did not create it" in err
    assert "refused" not in ottla.Admin(data_dir).list_topics()


# -- groups delete ---------------------------------------------------------------------
def test_groups_delete_on_a_directory(data_dir: Path, spawn: Spawn) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "t", *d)
    ok("produce", "t", *d, input=b"1\n2\n")
    ok("consume", "t", "--group", "old", "--from-beginning", *d)
    ok("consume", "t", "--group", "other", "--from-beginning", *d)
    assert ok("groups", "list", *d).split() == ["old", "other"]
    assert ok("groups", "delete", "old", *d) == "deleted group old\n"
    assert ok("groups", "list", *d).split() == ["other"]
    assert ottla.Admin(data_dir).group_offsets("old") == {}

    err = fails(1, "groups", "delete", "olde", *d)
    assert "unknown group 'olde'" in err and err.count("\n") == 1

    member = spawn(CLI_CODE, "consume", "t", "--group", "busy", "--follow", "--from-beginning", *d)
    member.wait_line(lambda s: s == "2", timeout=20)
    err = fails(1, "groups", "delete", "busy", *d)
    assert "live members" in err and err.count("\n") == 1
    os.kill(member.pid, signal.SIGTERM)
    member.wait(20)
    ok("groups", "delete", "busy", *d)
    assert "busy" not in ok("groups", "list", *d).split()
    assert "example" in ok("groups", "delete", "--help")


def test_python_dash_m_ottla_is_the_command(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "ottla", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0 and p.stdout.strip() == f"ottla {ottla.__version__}"


@pytest.mark.skipif(not hasattr(ottla, "Broker"), reason="ottla.Broker not in this build")
def test_groups_delete_through_a_broker(data_dir: Path) -> None:
    pytest.importorskip("confluent_kafka")
    with ottla.Broker(data_dir, port=0) as broker:
        b = ["--bootstrap-server", broker.bootstrap_servers]
        ok("produce", "t", *b, input=b"1\n", timeout=120)
        ok("consume", "t", "--group", "gone", "--from-beginning", *b, timeout=120)
        p = run("groups", "delete", "gone", *b, timeout=120)
        assert "Traceback" not in p.stderr
        if p.returncode == 0:  # the broker serves DeleteGroups
            assert p.stdout == b"deleted group gone\n"
            assert "gone" not in ok("groups", "list", *b, timeout=120).split()
        else:  # it does not (yet): a clear error, and the group is kept
            assert p.returncode == 1
            assert "does not serve DeleteGroups" in p.stderr and p.stderr.count("\n") == 1
            assert "gone" in ok("groups", "list", *b, timeout=120).split()


# -- unknown names ----------------------------------------------------------------------
def test_deleting_an_unknown_topic_says_so_and_names_close_topics(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "orders", *d)
    err = fails(1, "topics", "delete", "nope", *d)
    assert "unknown topic 'nope'" in err and "topics create" not in err
    assert err.count("\n") == 1
    err = fails(1, "topics", "delete", "ordres", *d)
    assert "did you mean 'orders'?" in err and "topics create" not in err
    # Reading one still says how to create it when nothing is close.
    err = fails(1, "consume", "zzz", *d)
    assert "ottla topics create zzz" in err
    err = fails(1, "topics", "describe", "ordrs", *d)
    assert "did you mean 'orders'?" in err


# -- groups describe before the first commit ------------------------------------------------
def test_groups_describe_shows_end_offsets_before_the_first_commit(data_dir: Path) -> None:
    d = ["--data", data_dir]
    ok("topics", "create", "t", "--partitions", 2, *d)
    with ottla.Producer(data_dir) as p:
        p.send_many("t", [b"a", b"b", b"c"], partition=0).get()
        p.send("t", b"z", partition=1).get(10)
    member = ottla.Consumer(data_dir, group_id="fresh", enable_auto_commit=False)
    try:
        member.subscribe(["t"])
        assert wait_until(
            lambda: member.poll(timeout_ms=50) is not None and len(member.assignment()) == 2,
            timeout=20,
        )
        out = ok("groups", "describe", "fresh", *d)
    finally:
        member.close(autocommit=False)
    rows = re.findall(r"^t\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert sorted(r[:4] for r in rows) == [("0", "-", "3", "-"), ("1", "-", "1", "-")], out


# -- nulls ---------------------------------------------------------------------------------
def test_null_keys_values_and_headers_are_told_from_the_string_null(data_dir: Path) -> None:
    d = ["--data", data_dir]
    with ottla.Producer(data_dir) as p:
        p.send("n", None, key=None).get(10)
        p.send("n", b"null", key=b"null", headers=[("h", None), ("e", b"")]).get(10)
        p.send("n", b"", key=b"").get(10)
    out = ok("consume", "n", "--print-key", "--key-separator", "|", *d)
    assert out.splitlines() == ["|", "null|null", "|"]
    out = ok("consume", "n", "--format", "%k|%v|%h", "--null-literal", "<null>", *d)
    assert out.splitlines() == ["<null>|<null>|", "null|null|h=<null>,e=", "||"]
    out = ok("consume", "n", "--format", "%h", *d)
    assert out.splitlines() == ["", "h,e=", ""]
    assert "--null-literal" in ok("consume", "--help")


# -- unreachable broker ------------------------------------------------------------------------
def test_an_unreachable_bootstrap_server_fails_at_once_naming_it() -> None:
    pytest.importorskip("confluent_kafka")
    port = free_port()  # a port nobody listens on
    for command, args in (
        ("topics list", ["topics", "list"]),
        ("consume", ["consume", "t"]),
        ("groups describe", ["groups", "describe", "g"]),
    ):
        err = fails(1, *args, "-b", f"127.0.0.1:{port}", timeout=60)
        expected = f"cannot connect to 127.0.0.1:{port}: connection refused"
        assert err == f"ottla {command}: error: {expected}\n"
    err = fails(1, "topics", "list", "-b", "no-such-host.invalid:9092", timeout=60)
    assert "cannot resolve 'no-such-host.invalid'" in err


# -- README and the quickstart -----------------------------------------------------------------
def _two_commands_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Two commands", 1)[1].split("\n## ", 1)[0]


def test_readme_says_to_make_a_virtual_environment_and_keeps_two_commands() -> None:
    section = _two_commands_section()
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, blocks
    venv, commands = blocks
    assert "python3 -m venv .venv" in venv and ". .venv/bin/activate" in venv
    lines = [line.split("#")[0].strip() for line in commands.splitlines()]
    assert [line for line in lines if line] == [
        "pip install . && python examples/quickstart.py",
        "./scripts/test",
    ]
    assert "virtual environment" in section


def test_the_quickstart_data_directory_is_git_ignored(tmp_path: Path) -> None:
    assert "ottla-data" in _two_commands_section()
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    p = subprocess.run(
        ["git", "check-ignore", "-q", "ottla-data/quickstart-0/00000000000000000000.log"],
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert p.returncode == 0, ".gitignore does not cover ./ottla-data"
    # And the quickstart writes exactly there.
    p2 = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p2.returncode == 0, p2.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ottla-data"]
    assert "quickstart" in ottla.Admin(tmp_path / "ottla-data").list_topics()
