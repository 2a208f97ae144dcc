"""The code examples in ottla's docstrings, run as doctests so they cannot rot.

Every ``>>>`` example of the package's modules (``python/ottla/*.py``) and of
the native module's stub (``_core.pyi``: its docstrings are what IDEs show for
the classes written in Rust) runs with an empty temporary directory as the
working directory, ``ottla`` already imported. A reST literal block (``::``)
would not run, so a docstring must not introduce code that way: the last
test fails on one (write the example as a doctest).
"""

from __future__ import annotations

import ast
import doctest
import gc
import importlib
import io
import re
from pathlib import Path

import pytest

import ottla

MODULES = [
    "ottla",
    "ottla.admin",
    "ottla.aio",
    "ottla.types",
    "ottla.pytest_plugin",
    "ottla.testing.certificates",
    "ottla._arrow",
    "ottla._display",
    "ottla.cli",
    "ottla.cluster",
    "ottla._proxy",
    "ottla.testing.checker",
    "ottla.remote.mirror",
]
STUB = Path(ottla.__file__).with_name("_core.pyi")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _globs() -> dict[str, object]:
    return {"ottla": ottla}


def _stub_docstrings() -> list[tuple[str, str, int]]:
    """(qualified name, docstring, line) of every docstring in the stub."""
    tree = ast.parse(STUB.read_text(), str(STUB))
    out: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                doc = ast.get_docstring(child, clean=False)
                if doc is not None:
                    out.append((name, doc, child.body[0].lineno))
                visit(child, name + ".")

    module_doc = ast.get_docstring(tree, clean=False)
    if module_doc is not None:
        out.append(("ottla._core", module_doc, 1))
    visit(tree, "ottla._core.")
    return out


def _collect() -> list[doctest.DocTest]:
    tests: list[doctest.DocTest] = []
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in MODULES:
        module = importlib.import_module(name)
        tests += finder.find(module, name, globs=_globs())
    parser = doctest.DocTestParser()
    for name, doc, lineno in _stub_docstrings():
        test = parser.get_doctest(doc, _globs(), name, str(STUB), lineno)
        if test.examples:
            tests.append(test)
    return sorted((t for t in tests if t.examples), key=lambda t: t.name)


EXAMPLES = _collect()


def test_there_are_examples() -> None:
    names = {t.name for t in EXAMPLES}
    # One from the package, one from the stub: the collection itself works.
    assert "ottla" in names and "ottla._core.Broker" in names, sorted(names)


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_example(
    test: doctest.DocTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    try:
        result = runner.run(test, out=out.write, clear_globs=True)
    finally:
        gc.collect()  # producers and consumers an example left open
    assert result.failed == 0, out.getvalue()


def _literal_blocks(doc: str) -> list[str]:
    """The first line of each ``::`` literal block in a docstring."""
    found = []
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("::"):
            nxt = [ln for ln in lines[i + 1 : i + 3] if ln.strip()]
            if nxt:
                found.append(nxt[0].strip())
    return found


def test_no_examples_as_literal_blocks() -> None:
    docs: list[tuple[str, str]] = []
    finder = doctest.DocTestFinder(exclude_empty=False)
    for name in MODULES:
        module = importlib.import_module(name)
        docs += [(t.name, t.docstring or "") for t in finder.find(module, name)]
    docs += [(name, doc) for name, doc, _ in _stub_docstrings()]
    offenders = [
        f"{name}: {block!r}"
        for name, doc in docs
        for block in _literal_blocks(doc)
        if not re.match(r">>>", block)
    ]
    assert offenders == [], "write these examples as doctests:\n" + "\n".join(offenders)
