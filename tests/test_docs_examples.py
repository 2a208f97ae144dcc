"""Run the Python examples of README.md and docs/**/*.md, so they cannot rot.

Every fenced block whose info string is exactly ``python`` runs, unless the
line before its opening fence (blank lines aside) is a marker comment::

    <!-- not run: the reason -->

Blocks in other languages (``sh``, ``text``, ...) are never run. Each block
runs in its own Python process, in a fresh temporary working directory, with
a timeout; a block fails the test if it raises, exits non-zero or hangs.

After a block has run, every ``test_*`` function it defined is called, with
the pytest fixtures a documentation example may use: ``ottla_broker`` (a
fresh broker on a temporary directory, as ``ottla.pytest_plugin`` starts
it), ``ottla_topic`` (a topic made on it) and ``tmp_path``. A block
that names the bootstrap address ``"localhost:9092"`` runs against a fresh
``ottla.Broker`` whose address is substituted for it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(.+?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    source: str
    skip_reason: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def parse_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a Markdown file, with their not-run markers."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    last_text = ""  # the last non-blank line outside a block
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                last_text = lines[i]
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3)
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence[0] * len(fence))
            and lines[i].strip().strip(fence[0]) == ""
        ):
            line = lines[i]
            body.append(line.removeprefix(indent))
            i += 1
        i += 1  # the closing fence
        marker = NOT_RUN.match(last_text)
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                lang=lang,
                source="\n".join(body) + "\n",
                skip_reason=marker.group(1) if marker else "",
            )
        )
        last_text = ""
    return blocks


def python_blocks() -> list[Block]:
    return [b for f in doc_files() for b in parse_blocks(f) if b.lang == "python"]


# The child process: runs one block, then its test_* functions.
RUNNER = textwrap.dedent(
    """
    import inspect, os, sys, tempfile, pathlib

    source = open(sys.argv[1], encoding="utf-8").read()
    label = sys.argv[2]
    broker = None
    if '"localhost:9092"' in source:
        import ottla
        broker = ottla.Broker(tempfile.mkdtemp(prefix="docs-broker-"))
        source = source.replace('"localhost:9092"', repr(broker.bootstrap_servers))

    namespace = {"__name__": "__main__"}
    exec(compile(source, label, "exec"), namespace)

    for name, fn in list(namespace.items()):
        if not (name.startswith("test_") and callable(fn)):
            continue
        kwargs = {}
        fixtures = []
        topics = []
        for param in inspect.signature(fn).parameters:
            if param == "ottla_broker":
                from ottla.pytest_plugin import start_broker
                b = start_broker(tempfile.mkdtemp(prefix="docs-fixture-"))
                fixtures.append(b)
                kwargs[param] = b
            elif param == "ottla_topic":
                from ottla.pytest_plugin import unique_topic_name
                kwargs[param] = unique_topic_name(name)
                topics.append(kwargs[param])
            elif param == "tmp_path":
                kwargs[param] = pathlib.Path(tempfile.mkdtemp(prefix="docs-tmp-"))
            else:
                raise SystemExit(f"{label}: {name} asks for fixture {param!r}, which this runner lacks")
        try:
            for t in topics:  # made on the test's ottla_broker, as the plugin does
                kwargs["ottla_broker"].create_topic(t)
            fn(**kwargs)
        finally:
            for b in fixtures:
                b.close()
        print(f"ran {name}", file=sys.stderr)
    if broker is not None:
        broker.close()
    """
)


def run_block(
    source: str, label: str, cwd: Path, timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    script = cwd / "_example.py"
    script.write_text(source, encoding="utf-8")
    runner = cwd / "_runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    work = cwd / "work"
    work.mkdir()
    return subprocess.run(
        [sys.executable, str(runner), str(script), label],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


BLOCKS = python_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip_reason:
        pytest.skip(f"marked not run: {block.skip_reason}")
    monkeypatch.chdir(tmp_path)
    try:
        proc = run_block(block.source, block.id, tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: the example did not finish within {TIMEOUT_S} s")
    assert proc.returncode == 0, (
        f"{block.id}: the example failed (exit {proc.returncode})\n"
        f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    )


def test_the_docs_have_runnable_examples() -> None:
    runnable = [b for b in BLOCKS if not b.skip_reason]
    assert len(runnable) >= 10, [b.id for b in BLOCKS]
    readme = [b for b in runnable if b.path.name == "README.md"]
    assert readme, "README.md has no runnable python example"


def test_every_not_run_marker_gives_a_reason() -> None:
    for f in doc_files():
        for line in f.read_text(encoding="utf-8").splitlines():
            if "not run" in line and "<!--" in line:
                assert NOT_RUN.match(line), f"{f.relative_to(ROOT)}: malformed marker {line!r}"


def test_a_broken_example_fails(tmp_path: Path) -> None:
    proc = run_block(
        "import ottla\nottla.Admin('data').delete_topic('no-such-topic')\n", "broken.md:1", tmp_path
    )
    assert proc.returncode != 0
    assert "broken.md" in proc.stderr


def test_a_hanging_example_times_out(tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_block("import time\ntime.sleep(30)\n", "hang.md:1", tmp_path, timeout=1)


def test_a_failing_test_function_in_an_example_fails(tmp_path: Path) -> None:
    src = "def test_round_trip(ottla_broker):\n    assert ottla_broker.bootstrap_servers == 'nowhere'\n"
    proc = run_block(src, "fixture.md:1", tmp_path)
    assert proc.returncode != 0
    assert "AssertionError" in proc.stderr


def test_parser_honours_markers_and_languages(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "Text\n\n```python\nprint(1)\n```\n\n<!-- not run: needs a cluster -->\n\n"
        "```python\nprint(2)\n```\n\n```sh\necho 3\n```\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(doc)
    assert [(b.lang, b.skip_reason) for b in blocks] == [
        ("python", ""),
        ("python", "needs a cluster"),
        ("sh", ""),
    ]
    assert blocks[0].source == "print(1)\n"
