"""Shared fixtures for the ottla test suite.

* ``data_dir``: a fresh data directory under pytest's ``tmp_path``.
* ``broker``: an ``ottla.Broker`` serving ``data_dir`` on a free port, closed
  in teardown.
* ``spawn``: start a Python child process running a code string; every child
  is killed and waited for in teardown, whatever the test did.
* A per-test timeout comes from ``timeout = 120`` in pyproject.toml
  (pytest-timeout); every wait in the tests also has its own explicit timeout.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Child, Spawn

if TYPE_CHECKING:
    import ottla


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python (used only as an independent reference) warns on import.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:kafka.*")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:importlib.*")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty data directory inside ``tmp_path``, created (as a Producer
    would): a Consumer or Admin opens only a directory that exists."""
    import ottla

    d = tmp_path / "data"
    ottla.Admin(d, create=True).close()
    yield d
    # Drop producers/consumers the test left behind before the next test.
    gc.collect()


@pytest.fixture
def broker(data_dir: Path) -> Iterator[ottla.Broker]:
    """An ``ottla.Broker`` over ``data_dir`` (port 0: a free one), closed at
    teardown whatever the test did."""
    import ottla

    b = ottla.Broker(data_dir)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(code, *args) -> Child``: run ``python -c code args...``.

    The child's stdout is read line by line by a background thread (see
    :class:`helpers.Child`). Every child is SIGKILLed (if still running) and
    reaped at teardown.
    """
    children: list[Child] = []

    def _spawn(code: str, *args: object, env: dict[str, str] | None = None) -> Child:
        c = Child(code, *args, env=env)
        children.append(c)
        return c

    try:
        yield _spawn
    finally:
        for c in children:
            c.kill()
