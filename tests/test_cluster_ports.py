"""ottla.Cluster and a port taken by another process between its pick and
the node's bind: the node is started again on the same ports until the port
is free, at the first start and at a restart, for up to
``port_retry_timeout`` seconds; then the start fails as any other, saying
why. Against the stand-in node (tests/fake_cluster_node.py), then the real
broker. The test holds the port with a listening socket on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import ottla.cluster
from ottla.cluster import Cluster, ClusterError

FAKE_NODE = Path(__file__).resolve().parent / "fake_cluster_node.py"
IN_USE = "Address already in use"

pytestmark = pytest.mark.timeout(120)


class FakeCluster(Cluster):
    serve_command = (sys.executable, str(FAKE_NODE))


def starts(log: Path) -> int:
    """How many times the cluster started the node (its broker.log)."""
    return log.read_text(errors="replace").count("---- ottla.Cluster: starting ")


@contextmanager
def held(address: tuple[str, int], log: Path, after: float | None = 1.0) -> Iterator[socket.socket]:
    """Listen on ``address`` (the node cannot bind it), until ``after``
    seconds once the node's ``log`` says (in what it gets from now on) that
    the address is in use; ``after`` None: until the block ends."""
    sock = socket.socket()
    # Past the killed node's connections in TIME_WAIT; a listener keeps the
    # port from the node all the same.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(1)
    offset = log.stat().st_size if log.exists() else 0

    def refused() -> bool:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                return IN_USE in f.read().decode(errors="replace")
        except OSError:
            return False

    done = threading.Event()

    def release() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not refused():
            if done.wait(0.02):
                return
        done.wait(after)
        sock.close()

    thread = threading.Thread(target=release, daemon=True)
    if after is not None:
        thread.start()
    try:
        yield sock
    finally:
        done.set()
        sock.close()
        if thread.is_alive():
            thread.join(10)


def test_a_port_taken_at_the_first_start_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c"
    log = path / "node-2" / "broker.log"
    taken: list[tuple[str, int]] = []
    pick = ottla.cluster._free_port
    with ExitStack() as stack:

        def take_node_2s_first_port(host: str) -> int:
            port = pick(host)
            if host == "127.0.0.12" and not taken:
                # Node 2's Kafka port, taken as soon as the cluster picked it.
                taken.append((host, port))
                stack.enter_context(held((host, port), log))
            return port

        monkeypatch.setattr(ottla.cluster, "_free_port", take_node_2s_first_port)
        with FakeCluster(path, 3, start_timeout=30) as c:
            assert c.running == [1, 2, 3]
            assert c.proxy(2).target == taken[0]
            assert c.leader("t", 0) == 1
    text = log.read_text()
    assert IN_USE in text and starts(log) >= 2, text
    assert starts(path / "node-1" / "broker.log") == 1


def test_a_restarted_node_waits_for_its_port(tmp_path: Path) -> None:
    with FakeCluster(tmp_path / "c", 2, start_timeout=30) as c:
        log = c.log_path(1)
        c.kill(1)
        with held(c.controller_proxy(1).target, log):
            c.start(1)
        assert c.state(1) == "running" and c.running == [1, 2]
        assert (c.data_dir(1) / "starts").read_text() != "1"  # started again, at last
        text = log.read_text()
        assert IN_USE in text and starts(log) >= 3, text
        assert c.leader("t", 0) == 1


def test_a_port_held_past_the_deadline_fails_the_start_saying_so(tmp_path: Path) -> None:
    with FakeCluster(tmp_path / "c", 2, start_timeout=30, port_retry_timeout=1.0) as c:
        log = c.log_path(1)
        c.kill(1)
        began = time.monotonic()
        with held(c.proxy(1).target, log, after=None), pytest.raises(ClusterError) as info:
            c.start(1)
        took = time.monotonic() - began
        text = str(info.value)
        assert "node 1 exited with status 1" in text, text
        assert "a port still in use after trying for 1 s" in text, text
        assert IN_USE in text and str(log) in text, text
        assert 1.0 <= took < 20, took
        assert starts(log) >= 3  # the first start, and more than one try
        # Free again: the node starts.
        c.start(1)
        assert c.running == [1, 2]


def test_other_failures_are_not_started_again(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(ClusterError, match="exited with status 3"):
        FakeCluster(tmp_path / "c", 1, fail_start=True, port_retry_timeout=30)
    assert time.monotonic() - began < 20
    assert starts(tmp_path / "c" / "node-1" / "broker.log") == 1


def _cluster_mode() -> bool:
    out = subprocess.run(
        [*Cluster.serve_command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--node-id" in out.stdout + out.stderr


@pytest.mark.skipif(not _cluster_mode(), reason="this build's `ottla serve` has no --node-id")
def test_the_real_broker_restarted_waits_for_its_port(tmp_path: Path) -> None:
    """The broker's own words for a port in use are recognised: its
    controller port, then its Kafka port, held by the test for a moment."""
    with Cluster(tmp_path / "c", 1, replication_factor=1, min_insync_replicas=1) as c:
        log = c.log_path(1)
        for target in (c.controller_proxy(1).target, c.proxy(1).target):
            c.kill(1)
            before = log.read_text().count(IN_USE)
            with held(target, log):
                c.start(1)
            assert c.running == [1]
            assert log.read_text().count(IN_USE) > before
        assert c.partitions("absent") == []
