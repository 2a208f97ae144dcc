"""Shared fixtures for the ottla test suite.

* ``data_dir``: a fresh data directory under pytest's ``tmp_path``.
* ``broker``: an ``ottla.Broker`` serving ``data_dir`` on a free port, closed
  in teardown.
* ``tmpfs``: a 32 MiB tmpfs mounted under ``tmp_path`` (skips the test
  where mounting is not allowed), unmounted in teardown: a disk to fill.
* ``spawn``: start a Python child process running a code string; every child
  is killed and waited for in teardown, whatever the test did.
* A per-test timeout comes from ``timeout = 120`` in pyproject.toml
  (pytest-timeout); every wait in the tests also has its own explicit timeout.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Child, Spawn

if TYPE_CHECKING:
    import ottla


# The Python API's tests run against both backends (issue 16): once on the
# data directory, once on an `ottla.Broker` serving it, reached through
# `bootstrap_servers` (ottla.remote, over confluent-kafka). In the "broker"
# run, ottla.Producer/Consumer/Admin and ottla.aio.Producer/Consumer given
# the test's data_dir are given the broker's address instead; the test is
# unchanged. A test that makes sense for one backend only says why:
# @pytest.mark.directory_only("why").
BACKEND_MODULES = frozenset(
    {
        "test_producer",
        "test_consumer",
        "test_consumer_iteration",
        "test_admin",
        "test_aio",
    }
)


# ... and a third time on an `ottla.Cluster` (three `ottla serve` processes,
# replication factor 3, min.insync.replicas 2), reached the same way: for
# CLUSTER_MODULES only by default (a cluster per test costs seconds of
# start-up: the whole set takes about as long again as the rest of the
# suite), for every module above with OTTLA_TEST_CLUSTER=all, none with
# OTTLA_TEST_CLUSTER=0. @pytest.mark.directory_only tests skip it too.
CLUSTER_MODULES = frozenset({"test_producer", "test_consumer_iteration"})


def _cluster_modules() -> frozenset[str]:
    choice = os.environ.get("OTTLA_TEST_CLUSTER", "")
    if choice == "all":
        return BACKEND_MODULES
    if choice in ("0", "no", "none"):
        return frozenset()
    return CLUSTER_MODULES


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python (used only as an independent reference) warns on import.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:kafka.*")
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:importlib.*")
    config.addinivalue_line(
        "markers",
        "directory_only(reason): a test of the Python API that makes sense on a data "
        "directory only (not run against a broker through bootstrap_servers)",
    )
    config.addinivalue_line(
        "markers",
        "not_on_cluster(reason): a test of the Python API that needs the data directory "
        "the broker serves (it writes files there), so runs on the directory and a broker only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the cluster, a test parametrized by more than the backend runs its
    first variant only (unless OTTLA_TEST_CLUSTER=all): the variants vary
    arguments, not what the cluster does, and a cluster per test is slow."""
    if os.environ.get("OTTLA_TEST_CLUSTER", "") == "all":
        return
    seen: set[str] = set()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("backend") == "cluster" and len(params) > 1:
            if item.nodeid.split("[")[0] in seen:
                dropped.append(item)
                continue
            seen.add(item.nodeid.split("[")[0])
        keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rpartition(".")[2]
    if (
        module in BACKEND_MODULES
        and "data_dir" in metafunc.fixturenames
        and "broker" not in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("directory_only") is None
    ):
        backends = ["directory", "broker"]
        if (
            module in _cluster_modules()
            and metafunc.definition.get_closest_marker("not_on_cluster") is None
        ):
            backends.append("cluster")
        metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``"directory"``, ``"broker"`` or ``"cluster"``: how the test reaches
    ``data_dir``."""
    return str(getattr(request, "param", "directory"))


def _to_broker(monkeypatch: pytest.MonkeyPatch, d: Path, servers: str) -> None:
    """Make the API's constructors given ``d`` use the broker at ``servers``."""
    import ottla
    import ottla.aio
    import ottla.remote.admin
    import ottla.remote.aio

    def ours(target: object) -> bool:
        return isinstance(target, (str, os.PathLike)) and os.fspath(target) == os.fspath(d)

    def first_arg(cls: Any) -> None:
        original: Any = cls.__new__

        def new(c: type, *args: object, **kw: object) -> object:
            if args and ours(args[0]):
                return original(c, *args[1:], bootstrap_servers=servers, **kw)
            if ours(kw.get("path")):
                kw.pop("path")
                return original(c, *args, bootstrap_servers=servers, **kw)
            return original(c, *args, **kw)

        monkeypatch.setattr(cls, "__new__", new)

    for cls in (ottla.Producer, ottla.Consumer, ottla.aio.Producer):
        first_arg(cls)
    # Python classes: __new__ picks the class, __init__ then gets the
    # original arguments.
    pairs: tuple[tuple[Any, Any], ...] = (
        (ottla.Admin, ottla.remote.admin.Admin),
        (ottla.aio.Consumer, ottla.remote.aio.Consumer),
    )
    for python_cls, remote in pairs:
        first_arg(python_cls)
        original_init = remote.__init__

        def init(self: object, *args: object, _init: object = original_init, **kw: object) -> None:
            if args and ours(args[0]):
                args = args[1:]
                kw["bootstrap_servers"] = servers
                kw.pop("create", None)
            assert callable(_init)
            _init(self, *args, **kw)

        monkeypatch.setattr(remote, "__init__", init)


@pytest.fixture
def data_dir(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty data directory inside ``tmp_path``, created (as a Producer
    would): a Consumer or Admin opens only a directory that exists. With
    ``backend == "broker"``, the API reaches it through a broker; with
    ``"cluster"``, the same constructors reach an ``ottla.Cluster`` instead.
    """
    import ottla

    d = tmp_path / "data"
    ottla.Admin(d, create=True).close()
    if backend == "directory":
        yield d
        gc.collect()
        return
    pytest.importorskip("confluent_kafka")
    import logging

    # librdkafka retrying a broker closed at teardown under a client the
    # test left open is not the test's news.
    monkeypatch.setattr(logging.getLogger("ottla.remote.librdkafka"), "disabled", True)
    served: ottla.Broker | ottla.Cluster
    if backend == "cluster":
        # The records live in the cluster's nodes, not in d: a test reads
        # them back through the API, as it does on a broker.
        served = ottla.Cluster(tmp_path / "cluster", brokers=3)
    else:
        served = ottla.Broker(d)
    try:
        _to_broker(monkeypatch, d, served.bootstrap_servers)
        yield d
        monkeypatch.undo()
        gc.collect()
    finally:
        served.close()


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


# Large enough for a first segment's 8 MiB preallocation plus headroom,
# small enough to fill in a moment.
TMPFS_SIZE = "32m"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted inside ``tmp_path``, unmounted at teardown."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)
