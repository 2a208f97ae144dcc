"""``ottla.Cluster``: a replicated ottla cluster of real broker processes on
one machine, with the faults a test wants to inject (issue 14).

Each node is an ``ottla serve`` process (``sys.executable -m ottla serve``)
over its own data directory ``<path>/node-N/data``, with its standard
error in ``<path>/node-N/broker.log``. Node ``N`` listens on its own
loopback address ``127.0.0.(10+N)``: a Kafka listener and a controller
listener, each behind a :class:`ottla._proxy.FaultProxy` on ``127.0.0.1``.
The proxies' addresses are all anyone is told: clients get them as
``bootstrap_servers`` and in Metadata (each node's advertised listener),
the nodes get them as the controller quorum's voters. Since a node's own
connections leave from its loopback address, a proxy can tell who is
calling, and :meth:`Cluster.isolate` cuts one node off from everyone in
both directions while it keeps running.

>>> with ottla.Cluster("cluster-data") as cluster:      # doctest: +SKIP
...     leader = cluster.leader("orders", 0)
...     cluster.kill(leader)                             # SIGKILL
...     ...                                              # the application under test
...     cluster.start(leader)                            # same directory, same ports
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar

from ottla._core import OttlaError
from ottla._proxy import FaultProxy

__all__ = [
    "Cluster",
    "ClusterError",
    "ClusterSecurity",
    "PartitionState",
    "Reassignment",
    "alter_reassignments",
    "describe",
    "list_reassignments",
    "set_scram_user",
    "unregister_broker",
]

# Settings a ``fast=True`` cluster starts its nodes with (where the broker
# has them): a dead broker is fenced and its partitions move in about 1.5
# seconds instead of Kafka's nine, and a follower that stops fetching
# leaves the in-sync set in two seconds instead of thirty.
FAST_SETTINGS: dict[str, int] = {
    "replica_lag_time_max_ms": 2000,
    "group_initial_rebalance_delay_ms": 0,
}

_BOOTSTRAP_KEY = {
    "confluent-kafka": "bootstrap.servers",
    "kafka-python": "bootstrap_servers",
    "aiokafka": "bootstrap_servers",
}

_C = TypeVar("_C", bound="Cluster")

# Where a node keeps the cluster-metadata quorum, under its data directory
# (docs/design/replication.md).
_METADATA_DIR = Path(".ottla") / "cluster"

NodeState = Literal["running", "paused", "stopped", "killed", "wiped", "exited"]

# What a node that could not bind one of its ports says, in its standard
# error: the broker "cannot listen on HOST:PORT: ... Address already in use
# (os error 98)", a Python stand-in "OSError: [Errno 98] Address already in use".
_ADDRESS_IN_USE = os.strerror(errno.EADDRINUSE)


class ClusterError(OttlaError):
    """A cluster node did not start, stop or answer as expected; the message
    carries the end of its ``broker.log``."""


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's Metadata describes it."""

    topic: str
    partition: int
    #: The leader's node id, or None while the partition has no leader.
    leader: int | None
    #: Every node holding a replica, in the controller's order.
    replicas: tuple[int, ...]
    #: The in-sync replicas.
    isr: tuple[int, ...]
    #: Kafka's error code for the partition (0: none).
    error_code: int = 0
    #: The leader epoch (-1 if the node did not say).
    leader_epoch: int = -1
    #: Replicas on brokers that are not alive.
    offline: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClusterSecurity:
    """A secure cluster (``ottla.Cluster(path, security=ClusterSecurity())``,
    docs/security.md "Brokers of a cluster"): every node gets, besides the
    harness's own PLAINTEXT listener (behind its proxy; what
    ``bootstrap_servers`` names and the cluster's helpers use), a
    ``listener`` for clients (``secure_bootstrap_servers``); nodes replicate
    over ``inter_broker`` (``SASL_SSL``: the node logs in as
    ``inter_broker_user`` with ``inter_broker_mechanism``, a user the cluster
    creates in its metadata log once it is up; ``SSL``: an extra SSL listener
    where each node presents its own certificate, every TLS listener then
    requiring client certificates); the controller listener uses mutual TLS
    unless ``controller`` is ``"PLAINTEXT"``. Certificates come from
    ``ottla.testing.make_certificates`` (made under ``<path>/certs`` for
    every node address unless ``certificates`` is given). With
    ``authorizer``, the standard authorizer runs with the inter-broker
    principal and ``super_users`` as super users; ``allow_everyone_if_no_acl_found``
    (default on) keeps the harness's PLAINTEXT client allowed what no ACL
    names. For tests: the CA key sits next to the certificates."""

    listener: str = "SASL_SSL"
    inter_broker: str = "SASL_SSL"
    inter_broker_user: str = "broker"
    inter_broker_password: str = "broker-secret"
    inter_broker_mechanism: str = "SCRAM-SHA-512"
    controller: str = "SSL"
    authorizer: bool = True
    allow_everyone_if_no_acl_found: bool = True
    super_users: tuple[str, ...] = ()
    certificates: Any = None
    #: Client certificate names made with the certificates (``certificates``
    #: None): ``cluster.certificates.clients[name]``.
    clients: tuple[str, ...] = ()


# The watchdog: a small process that SIGKILLs the nodes still registered
# with it when its standard input closes, that is when the process that
# started them ends without stopping them (killed, os._exit, a second
# Ctrl-C): no broker outlives its test run. Lines "+pid" and "-pid".
_WATCHDOG = """
import os, signal, sys
pids = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        pids.add(int(line[1:]))
    elif line[:1] == "-":
        pids.discard(int(line[1:]))
for pid in pids:
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
"""


class _Watchdog:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test run does not end it first
        )
        self._lock = threading.Lock()

    def _send(self, line: str) -> None:
        with self._lock:
            stdin = self.proc.stdin
            if stdin is None or stdin.closed:
                return
            try:
                stdin.write(line.encode() + b"\n")
                stdin.flush()
            except OSError:
                pass

    def watch(self, pid: int) -> None:
        self._send(f"+{pid}")

    def forget(self, pid: int) -> None:
        self._send(f"-{pid}")

    def close(self) -> None:
        with self._lock:
            if self.proc.stdin is not None and not self.proc.stdin.closed:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class _Node:
    """One broker process and its proxies."""

    def __init__(self, cluster: Cluster, node_id: int, voter: bool) -> None:
        self.watchdog = cluster._watchdog
        self.id = node_id
        self.voter = voter
        self.host = f"127.0.0.{10 + node_id}"
        self.dir = cluster.path / f"node-{node_id}"
        self.data = self.dir / "data"
        self.log_path = self.dir / "broker.log"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.port = _free_port(self.host)
        self.controller_port = _free_port(self.host)
        # A secure cluster's client and inter-broker listeners (not proxied).
        self.secure_port = _free_port(self.host) if cluster.security else 0
        self.ssl_port = (
            _free_port(self.host)
            if cluster.security
            and cluster.security.inter_broker == "SSL"
            and cluster.security.listener != "SSL"
            else 0
        )
        self.proxy = FaultProxy((self.host, self.port), name=f"node-{node_id}")
        try:
            self.controller_proxy = FaultProxy(
                (self.host, self.controller_port), name=f"node-{node_id}-controller"
            )
        except BaseException:
            self.proxy.close()
            raise
        # Without proxies (``Cluster(proxies=False)``) clients and peers
        # connect to the listeners themselves.
        self.proxied = cluster.proxies
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: NodeState = "stopped"
        self.isolated = False
        self._ready = threading.Event()
        self._stdout: list[str] = []
        self._reader: threading.Thread | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def kafka_address(self) -> tuple[str, int]:
        """Where clients and peers reach the Kafka listener."""
        return self.proxy.address if self.proxied else (self.host, self.port)

    @property
    def kafka_bootstrap(self) -> str:
        host, port = self.kafka_address
        return f"{host}:{port}"

    @property
    def controller_bootstrap(self) -> str:
        if self.proxied:
            return self.controller_proxy.bootstrap
        return f"{self.host}:{self.controller_port}"

    def spawn(self, argv: list[str]) -> None:
        self._ready.clear()
        self._stdout = []
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in reap)
        self._log_start = self._log.tell()
        self._log.write(f"---- ottla.Cluster: starting {' '.join(argv)}\n".encode())
        self._log.flush()
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self.watchdog.watch(self.proc.pid)
        self.state = "running"
        self._reader = threading.Thread(
            target=self._read_stdout, args=(self.proc,), name=f"ottla-node-{self.id}", daemon=True
        )
        self._reader.start()

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._stdout.append(line)
            if line.startswith("listening on"):
                self._ready.set()
        proc.stdout.close()

    def wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return True
            if not self.running:
                return False
        return self._ready.is_set()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def reap(self, timeout: float) -> int | None:
        """Wait for the process (SIGKILL after ``timeout``); its exit status."""
        proc = self.proc
        if proc is None:
            return None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGCONT)
            proc.kill()
            code = proc.wait(10)
        self.watchdog.forget(proc.pid)
        if self._reader is not None:
            self._reader.join(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        return code

    def port_in_use(self) -> bool:
        """True if the process of the last start has exited saying that an
        address it was to listen on is in use (its ``broker.log`` since that
        start), False for any other end, or while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return False
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return _ADDRESS_IN_USE in text

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no broker.log)"
        tail = text.splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in tail) or "    (empty)"


class Cluster:
    """A replicated cluster of ``brokers`` ``ottla serve`` processes over
    ``path`` (module docstring), started on construction and ready when it
    returns: every broker answers Metadata listing every broker.

    ``replication_factor`` and ``min_insync_replicas`` are the brokers'
    defaults for new topics (``default.replication.factor``,
    ``min.insync.replicas``). ``fast=True`` shortens the broker session and
    replica lag timeouts (``FAST_SETTINGS``) so faults show in seconds.
    ``controllers`` nodes (default: all, at most 3) are the controller
    quorum's voters; the others are broker-only nodes. Other keywords are
    ``ottla serve`` options (``num_partitions=3`` is ``--num-partitions 3``;
    ``True`` passes a bare flag). ``proxies=False`` advertises the
    brokers' own listeners instead of their proxies (clients and
    replication connect directly, as in a deployment: for measuring; the
    network faults, :meth:`isolate`, then raise :class:`ClusterError`).
    A node that cannot listen because another process took one of its
    ports is started again on the same ports for up to
    ``port_retry_timeout`` seconds (an attribute too), at the first start
    as at :meth:`start`.

    Node ids are 1..``brokers``; :meth:`add_broker` adds more. Every
    process is stopped by :meth:`close` (also on leaving a ``with`` block,
    and when the object is collected), whatever happened before.
    """

    #: The command that runs a node, before its options (tests of the
    #: cluster's process handling put a stand-in broker here).
    serve_command: Sequence[str] = (sys.executable, "-m", "ottla", "serve")

    def __init__(
        self,
        path: str | os.PathLike[str],
        brokers: int = 3,
        *,
        replication_factor: int = 3,
        min_insync_replicas: int = 2,
        fast: bool = True,
        controllers: int | None = None,
        proxies: bool = True,
        start_timeout: float = 60.0,
        port_retry_timeout: float = 30.0,
        security: ClusterSecurity | None = None,
        **broker_settings: Any,
    ) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be at least 1, not {brokers}")
        if replication_factor < 1:
            raise ValueError(f"replication_factor must be at least 1, not {replication_factor}")
        if controllers is None:
            controllers = min(brokers, 3)
        if not 1 <= controllers <= brokers:
            raise ValueError(f"controllers must be between 1 and {brokers}, not {controllers}")
        self.path = Path(path).absolute()
        self.path.mkdir(parents=True, exist_ok=True)
        self.security = security
        self.certificates: Any = None
        if security is not None:
            self.certificates = security.certificates or _make_node_certificates(
                self.path / "certs", brokers, security.clients
            )
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.fast = fast
        self.proxies = proxies
        self.start_timeout = start_timeout
        #: How long a node whose port is taken is started again (seconds).
        self.port_retry_timeout = port_retry_timeout
        self._settings = dict(broker_settings)
        self._nodes: dict[int, _Node] = {}
        self._closed = False
        self._lock = threading.RLock()
        self._help = _serve_help(tuple(self.serve_command))
        if "--node-id" not in self._help:
            raise ClusterError(
                "this ottla build's broker has no cluster mode (`ottla serve --help` lists no "
                "--node-id): ottla.Cluster needs a broker built with replication (issue 14)"
            )
        self._watchdog = _Watchdog()
        self._finalizer = weakref.finalize(self, _stop_all, self._nodes, self._watchdog)
        try:
            for node_id in range(1, brokers + 1):
                self._nodes[node_id] = _Node(self, node_id, voter=node_id <= controllers)
            for node in self._nodes.values():
                node.spawn(self._argv(node))
            for node in self._nodes.values():
                self._wait_listening(node)
            self.wait_ready(timeout=start_timeout)
            if security is not None and security.inter_broker.startswith("SASL"):
                # The nodes' own user, in the metadata log (Kafka formats it
                # in with `kafka-storage format --add-scram`); until it is
                # there, followers cannot log in and retry.
                first = next(iter(self._nodes.values()))
                set_scram_user(
                    first.proxy.bootstrap,
                    security.inter_broker_user,
                    security.inter_broker_password,
                    mechanism=security.inter_broker_mechanism,
                )
        except BaseException:
            self.close()
            raise

    # ---- addresses ------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """Every node's (proxied) address, comma-separated, for ``bootstrap.servers``."""
        return ",".join(n.kafka_bootstrap for n in self._nodes.values())

    @property
    def node_ids(self) -> list[int]:
        """Every node's id, started or not, in order."""
        return sorted(self._nodes)

    @property
    def running(self) -> list[int]:
        """The ids of the nodes whose process is alive (paused ones included)."""
        return [i for i, n in sorted(self._nodes.items()) if n.running]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def state(self, node_id: int) -> str:
        """``"running"``, ``"paused"``, ``"stopped"``, ``"killed"``,
        ``"wiped"`` or ``"exited"`` (it ended by itself), with
        ``"+isolated"`` while it is isolated."""
        return self._state(self._node(node_id))

    def _state(self, node: _Node) -> str:
        state: str = node.state
        if state in ("running", "paused") and not node.running:
            node.state = "exited"
            state = "exited"
        return state + ("+isolated" if node.isolated else "")

    def pid(self, node_id: int) -> int | None:
        """The node's process id while its process exists."""
        proc = self._node(node_id).proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def address(self, node_id: int) -> str:
        """The node's Kafka address as clients see it (its proxy)."""
        return self._node(node_id).kafka_bootstrap

    def proxy(self, node_id: int) -> FaultProxy:
        """The proxy in front of the node's Kafka listener (``delay`` and the rest)."""
        return self._node(node_id).proxy

    def controller_proxy(self, node_id: int) -> FaultProxy:
        """The proxy in front of the node's controller listener."""
        return self._node(node_id).controller_proxy

    def data_dir(self, node_id: int) -> Path:
        """The node's data directory (read it with ``ottla.Consumer`` once the
        node is stopped)."""
        return self._node(node_id).data

    def log_path(self, node_id: int) -> Path:
        """The node's ``broker.log`` (its standard error, every start appended)."""
        return self._node(node_id).log_path

    def client_config(self, client: str = "confluent-kafka") -> dict[str, Any]:
        """The bootstrap setting for ``client`` (``"confluent-kafka"``,
        ``"kafka-python"`` or ``"aiokafka"``) in its own name."""
        key = _BOOTSTRAP_KEY.get("confluent-kafka" if client == "librdkafka" else client)
        if key is None:
            raise ValueError(f"client must be one of {', '.join(_BOOTSTRAP_KEY)}, not {client!r}")
        return {key: self.bootstrap_servers}

    # ---- process faults ---------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL the node's process (a crash: nothing flushed, nothing
        closed) and reap it."""
        node = self._node(node_id)
        with self._lock:
            node.signal(signal.SIGKILL)
            node.reap(10)
            node.state = "killed"

    def stop(self, node_id: int, timeout: float = 30.0) -> int | None:
        """SIGTERM the node and wait for it to stop cleanly (SIGKILL after
        ``timeout``); its exit status (0 for a clean stop)."""
        node = self._node(node_id)
        with self._lock:
            node.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            node.signal(signal.SIGTERM)
            code = node.reap(timeout)
            node.state = "stopped"
            return code

    def start(self, node_id: int, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start a stopped, killed or wiped node again: the same directory,
        addresses and ports. With ``wait``, returns once every running node
        answers Metadata listing it."""
        node = self._node(node_id)
        with self._lock:
            if node.running:
                raise ClusterError(f"node {node_id} is already running ({self.state(node_id)})")
            node.reap(1)
            node.spawn(self._argv(node))
            self._wait_listening(node, timeout)
        if wait:
            self.wait_ready(timeout=timeout if timeout is not None else self.start_timeout)

    def restart(self, node_id: int, *, clean: bool = True) -> None:
        """Stop (SIGTERM; SIGKILL if ``clean`` is False) and start the node."""
        if clean:
            self.stop(node_id)
        else:
            self.kill(node_id)
        self.start(node_id)

    def pause(self, node_id: int) -> None:
        """SIGSTOP the node: it holds its connections and answers nothing (a
        long GC pause, a frozen VM)."""
        node = self._node(node_id)
        if not node.running:
            raise ClusterError(f"node {node_id} is not running ({self.state(node_id)})")
        node.signal(signal.SIGSTOP)
        node.state = "paused"
        _wait_proc_state(node, stopped=True)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        node = self._node(node_id)
        node.signal(signal.SIGCONT)
        if node.running:
            node.state = "running"
            _wait_proc_state(node, stopped=False)

    def wipe(self, node_id: int, *, keep_metadata: bool = False) -> None:
        """Stop the node (SIGKILL) and empty its data directory: the next
        :meth:`start` restarts it as a disk replaced or wiped. With
        ``keep_metadata``, the cluster-metadata quorum's files
        (``.ottla/cluster`` under the data directory) stay: only the
        partitions' data is lost (Kafka's ``log.dirs`` lost,
        ``metadata.log.dir`` kept)."""
        node = self._node(node_id)
        with self._lock:
            if node.running:
                self.kill(node_id)
            kept = node.dir / "kept-metadata"
            meta = node.data / _METADATA_DIR
            if keep_metadata and meta.exists():
                shutil.rmtree(kept, ignore_errors=True)
                meta.rename(kept)
            shutil.rmtree(node.data, ignore_errors=True)
            node.data.mkdir(parents=True, exist_ok=True)
            if keep_metadata and kept.exists():
                meta.parent.mkdir(parents=True, exist_ok=True)
                kept.rename(meta)
            node.state = "wiped"

    # ---- network faults ---------------------------------------------------------------

    def isolate(self, node_id: int, *, silent: bool = False) -> None:
        """Cut the node off from everyone, in both directions, while it keeps
        running: its proxies reset every connection (clients' and peers'),
        and every other node's proxies refuse connections from its address.
        ``silent``: the connections are black-holed instead of reset (bytes
        swallowed, nothing answered, as when a network drops packets), so
        every side waits for its own timeouts.
        """
        node = self._node(node_id)
        if not self.proxies:
            raise ClusterError(
                "isolate() needs the proxies: this cluster was started with proxies=False"
            )
        with self._lock:
            node.proxy.cut(silent=silent)
            node.controller_proxy.cut(silent=silent)
            for other in self._nodes.values():
                if other is not node:
                    other.proxy.drop_from(node.host, silent=silent)
                    other.controller_proxy.drop_from(node.host, silent=silent)
            node.isolated = True

    def heal(self, node_id: int | None = None) -> None:
        """Undo :meth:`isolate` for one node, or every network fault
        (``node_id=None``: every proxy healed, delays kept)."""
        with self._lock:
            if node_id is None:
                for n in self._nodes.values():
                    n.proxy.heal()
                    n.controller_proxy.heal()
                    n.isolated = False
                return
            node = self._node(node_id)
            node.proxy.heal()
            node.controller_proxy.heal()
            for other in self._nodes.values():
                if other is not node:
                    other.proxy.allow_from(node.host)
                    other.controller_proxy.allow_from(node.host)
            node.isolated = False

    # ---- membership -------------------------------------------------------------------

    def add_broker(self, *, wait: bool = True) -> int:
        """Start a new broker-only node (not a controller voter) and return its id."""
        with self._lock:
            node_id = max(self._nodes) + 1
            node = _Node(self, node_id, voter=False)
            self._nodes[node_id] = node
            node.spawn(self._argv(node))
            self._wait_listening(node)
        if wait:
            self.wait_ready()
        return node_id

    def remove_broker(self, node_id: int, *, timeout: float = 120.0) -> None:
        """Remove a node from the cluster, as an operator would: every
        partition replica it holds is reassigned to the other nodes
        (AlterPartitionReassignments; the target keeps each partition's
        replication factor, taking the nodes holding the fewest replicas),
        the reassignments are awaited, the node is stopped, and it is
        unregistered (UnregisterBroker): it leaves Metadata and
        DescribeCluster. A controller voter cannot be removed."""
        node = self._node(node_id)
        if node.voter:
            raise ClusterError(f"node {node_id} is a controller voter and cannot be removed")
        bootstrap = ",".join(self.address(n) for n in self.node_ids if n != node_id)
        move_off_broker(bootstrap, node_id, timeout=timeout)
        self.stop(node_id)
        deadline = time.monotonic() + timeout
        while True:
            try:
                unregister_broker(bootstrap, node_id)
                break
            except ClusterError:
                # The stopped node's registration may still be settling.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with self._lock:
            del self._nodes[node_id]
            node.proxy.close()
            node.controller_proxy.close()
        self.wait_ready()

    # ---- metadata ---------------------------------------------------------------------

    def _reachable(self) -> list[_Node]:
        """Nodes a client can talk to now: running, not paused, not isolated."""
        return [
            n for n in self._nodes.values() if n.running and n.state == "running" and not n.isolated
        ]

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every reachable node (running, not paused or isolated)
        answers Metadata listing every reachable node."""
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last: dict[int, str] = {}
        while True:
            nodes = self._reachable()
            want = {n.id for n in nodes}
            missing = []
            for node in nodes:
                try:
                    brokers, _ = _metadata(node.kafka_address, [], timeout=2.0)
                except OSError as e:
                    last[node.id] = f"no answer ({e})"
                    missing.append(node.id)
                    continue
                listed = {b[0] for b in brokers}
                if not want <= listed:
                    last[node.id] = f"lists brokers {sorted(listed)}, not yet {sorted(want)}"
                    missing.append(node.id)
            if not missing:
                return
            for node in nodes:
                if not node.running:
                    raise self._error(node, "exited while the cluster was starting")
            if time.monotonic() >= deadline:
                detail = "; ".join(f"node {i}: {last.get(i, '?')}" for i in missing)
                tails = "\n".join(
                    f"  node {i} ({self._nodes[i].log_path}):\n{self._nodes[i].log_tail(15)}"
                    for i in missing
                )
                raise ClusterError(f"cluster not ready after {timeout:g} s: {detail}\n{tails}")
            time.sleep(0.1)

    def views(self, topic: str) -> dict[int, list[PartitionState]]:
        """``topic``'s partitions as each reachable node's Metadata describes
        them, by node id (a node that does not answer is left out). Views
        differ for a moment after a change: a node just healed or restarted
        learns the metadata from the quorum."""
        out: dict[int, list[PartitionState]] = {}
        for node in self._reachable():
            with contextlib.suppress(OSError):
                _, parts = _metadata(node.kafka_address, [topic], timeout=5.0)
                out[node.id] = [p for p in parts if p.topic == topic]
        return out

    def partitions(self, topic: str, *, node_id: int | None = None) -> list[PartitionState]:
        """``topic``'s partitions as node ``node_id``'s Metadata describes
        them, or (``None``) the freshest view of the reachable nodes': for
        each partition, the state with the highest leader epoch. Empty if
        the topic is unknown."""
        if node_id is not None:
            node = self._node(node_id)
            try:
                _, parts = _metadata(node.kafka_address, [topic], timeout=5.0)
            except OSError as e:
                raise ClusterError(f"node {node_id} did not answer Metadata: {e}") from None
            return [p for p in parts if p.topic == topic]
        views = self.views(topic)
        if not views:
            raise ClusterError(f"no node answered Metadata; {self!r}")
        best: dict[int, PartitionState] = {}
        for parts in views.values():
            for p in parts:
                have = best.get(p.partition)
                if have is None or p.leader_epoch > have.leader_epoch:
                    best[p.partition] = p
        return [best[i] for i in sorted(best)]

    def leader(self, topic: str, partition: int = 0, *, timeout: float = 30.0) -> int:
        """The node id leading ``topic``'s ``partition``, from Metadata
        through a reachable node; waits up to ``timeout`` while the
        partition has no leader (an election in progress)."""
        deadline = time.monotonic() + timeout
        last = "unknown"
        while True:
            try:
                for p in self.partitions(topic):
                    if p.partition == partition:
                        if p.leader is not None and p.leader >= 0:
                            return p.leader
                        last = f"no leader (error {p.error_code})"
                else:
                    last = last if last != "unknown" else "topic not in Metadata"
            except ClusterError as e:
                last = str(e)
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{topic}[{partition}] has no leader after {timeout:g} s: {last}"
                )
            time.sleep(0.1)

    def high_watermark(self, topic: str, partition: int = 0, *, timeout: float = 30.0) -> int:
        """The partition's high watermark (ListOffsets, latest) from its leader."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                leader = self.leader(
                    topic, partition, timeout=max(0.1, deadline - time.monotonic())
                )
                error, offset = _list_offset(
                    self._node(leader).kafka_address, topic, partition, timeout=5.0
                )
                if error == 0:
                    return offset
                last = f"error {error} from node {leader}"
            except (OSError, ClusterError) as e:
                last = str(e)
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no high watermark for {topic}[{partition}] after {timeout:g} s: {last}"
                )
            time.sleep(0.1)

    def wait_in_sync(self, topic: str, *, timeout: float = 60.0) -> list[PartitionState]:
        """Wait until every reachable node says the same of every partition
        of ``topic``: a leader, its epoch, and every replica in sync; the
        partitions then."""
        deadline = time.monotonic() + timeout
        last: dict[int, list[PartitionState]] = {}
        while True:
            with contextlib.suppress(ClusterError):
                last = self.views(topic)
                agreed = {
                    tuple((p.partition, p.leader, p.leader_epoch, frozenset(p.isr)) for p in parts)
                    for parts in last.values()
                }
                first = next(iter(last.values()), [])
                if (
                    len(agreed) == 1
                    and first
                    and len(last) == len(self._reachable())
                    and all(p.leader is not None and set(p.isr) == set(p.replicas) for p in first)
                ):
                    return first
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"{topic} not fully in sync after {timeout:g} s; each node's view: {last}"
                )
            time.sleep(0.1)

    # ---- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every node (SIGTERM, SIGKILL after 10 s), close the proxies.
        Safe to call twice and after any error."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        errors = _stop_all(self._nodes, self._watchdog)
        if errors:
            raise ClusterError("closing the cluster: " + "; ".join(errors))

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> Literal[False]:
        try:
            self.close()
        except ClusterError:
            if exc_type is None:
                raise
        return False

    def __repr__(self) -> str:
        nodes = ", ".join(
            f"{i}={self._state(n)}@{n.kafka_bootstrap}" for i, n in sorted(self._nodes.items())
        )
        closed = " closed" if self._closed else ""
        return f"<ottla.Cluster {self.path} [{nodes}]{closed}>"

    # ---- internals --------------------------------------------------------------------

    def _node(self, node_id: int) -> _Node:
        if self._closed:
            raise ClusterError("the cluster is closed")
        try:
            return self._nodes[node_id]
        except KeyError:
            raise ValueError(f"no node {node_id}; nodes are {self.node_ids}") from None

    def _voters(self) -> str:
        return ",".join(f"{n.id}@{n.controller_bootstrap}" for n in self._nodes.values() if n.voter)

    @property
    def secure_bootstrap_servers(self) -> str:
        """A secure cluster's client listeners (``security.listener``), every
        node's, comma-separated; the certificates are ``self.certificates``."""
        if self.security is None:
            raise ClusterError("this cluster was started without security=")
        return ",".join(f"{n.host}:{n.secure_port}" for n in self._nodes.values())

    def secure_address(self, node_id: int) -> str:
        """Node ``node_id``'s client listener of a secure cluster."""
        node = self._nodes[node_id]
        return f"{node.host}:{node.secure_port}"

    def password_file(self, node_id: int) -> Path:
        """The file node ``node_id`` reads its inter-broker SASL password from
        at each start (a test may write a wrong one, then restart it)."""
        return self._nodes[node_id].dir / "inter-broker-password"

    def _security_argv(self, node: _Node) -> list[str]:
        sec = self.security
        if sec is None:
            return []
        certs = self.certificates
        argv = [
            "--listener",
            f"PLAINTEXT://{node.host}:{node.port}",
            "--listener",
            f"{sec.listener}://{node.host}:{node.secure_port}",
        ]
        if node.ssl_port:
            argv += ["--listener", f"SSL://{node.host}:{node.ssl_port}"]
        argv += [
            "--ssl-certfile",
            certs.server_cert,
            "--ssl-keyfile",
            certs.server_key,
            "--ssl-cafile",
            certs.ca,
            "--inter-broker-listener-name",
            sec.inter_broker,
        ]
        if sec.inter_broker == "SSL":
            argv += ["--ssl-client-auth", "required"]
        supers = list(sec.super_users)
        if sec.inter_broker.startswith("SASL"):
            pw = self.password_file(node.id)
            if not pw.exists():
                pw.write_text(sec.inter_broker_password + "\n")
                pw.chmod(0o600)
            argv += [
                "--inter-broker-sasl-mechanism",
                sec.inter_broker_mechanism,
                "--inter-broker-sasl-username",
                sec.inter_broker_user,
                "--inter-broker-sasl-password-file",
                str(pw),
            ]
            supers.append(f"User:{sec.inter_broker_user}")
        else:
            supers.append(f"User:{_server_principal(certs.server_cert)}")
        if sec.controller != "PLAINTEXT":
            argv += ["--controller-listener-security-protocol", sec.controller]
        if sec.authorizer:
            argv += ["--authorizer", "standard", "--super-users", ";".join(supers)]
            if sec.allow_everyone_if_no_acl_found:
                argv.append("--allow-everyone-if-no-acl-found")
        return argv

    def _argv(self, node: _Node) -> list[str]:
        argv = [
            *self.serve_command,
            "--data",
            str(node.data),
            "--node-id",
            str(node.id),
            "--listen",
            f"{node.host}:{node.port}",
            "--advertised-listener",
            node.kafka_bootstrap,
            "--controller-listen",
            f"{node.host}:{node.controller_port}",
            "--controller-quorum-voters",
            self._voters(),
            "--default-replication-factor",
            str(self.replication_factor),
            "--min-insync-replicas",
            str(self.min_insync_replicas),
        ]
        argv.extend(self._security_argv(node))
        settings: dict[str, Any] = {}
        if self.fast:
            settings.update({k: v for k, v in FAST_SETTINGS.items() if _flag(k) in self._help})
        settings.update(self._settings)
        argv.extend(_options(settings))
        return argv

    def _wait_listening(self, node: _Node, timeout: float | None = None) -> None:
        """Wait until the node just spawned says it listens. A node that
        exits because one of its ports is in use is started again on the
        same ports, every 0.2 s for up to ``port_retry_timeout`` seconds,
        then the error is raised as for any failed start.

        Its ports were free when :func:`_free_port` picked them, but another
        process may bind one before the node does: an outgoing connection
        takes a free local port, on ``127.0.0.1`` or, for another cluster's
        node N (every cluster's node N connects from ``127.0.0.(10+N)``), on
        this node's address. Such a holder is usually gone in a moment. The
        ports are not picked again: a restarted node must come back where
        its peers, its proxies and clients know it, and even at the first
        start the controller ports of a cluster without proxies are already
        in the voter list every node was given, and a proxy's target is
        fixed. Picking again would cover only some first starts, by a second
        way of starting a node; the retry covers the first start,
        :meth:`start`, :meth:`restart` and :meth:`add_broker` alike. Other
        failures are not retried.
        """
        timeout = self.start_timeout if timeout is None else timeout
        retry_until: float | None = None
        while not node.wait_listening(timeout):
            in_use = node.port_in_use()
            if in_use:
                now = time.monotonic()
                if retry_until is None:
                    retry_until = now + self.port_retry_timeout
                if now < retry_until:
                    node.reap(1)
                    time.sleep(0.2)
                    node.spawn(self._argv(node))
                    continue
            code = node.proc.poll() if node.proc is not None else None
            why = "did not say it listens" if code is None else f"exited with status {code}"
            if in_use:
                why += f" (a port still in use after trying for {self.port_retry_timeout:g} s)"
            raise self._error(node, why)

    def _error(self, node: _Node, what: str) -> ClusterError:
        return ClusterError(f"node {node.id} {what}; {node.log_path}:\n{node.log_tail()}")


# ---- helpers ----------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options(settings: dict[str, Any]) -> Iterator[str]:
    for name, value in settings.items():
        if value is None or value is False:
            continue
        yield _flag(name)
        if value is not True:
            yield str(value)


_HELP: dict[tuple[str, ...], str] = {}


def _serve_help(command: tuple[str, ...]) -> str:
    """``ottla serve --help`` (of ``command``), cached."""
    if command not in _HELP:
        out = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        _HELP[command] = out.stdout + out.stderr
    return _HELP[command]


def _make_node_certificates(dir: Path, brokers: int, clients: Sequence[str]) -> Any:
    """Throw-away certificates valid for every node's address (the nodes
    listen on ``127.0.0.(10+N)``; add_broker's nodes too, up to 40)."""
    from ottla.testing import make_certificates

    hosts = ["localhost", "127.0.0.1", "::1"]
    hosts += [f"127.0.0.{10 + n}" for n in range(1, max(brokers, 40) + 1)]
    return make_certificates(dir, hosts=hosts, clients=list(clients))


def _server_principal(cert: str) -> str:
    """The principal a node presenting the certificates' server certificate
    is: ``make_certificates`` names it after its first host (``localhost``
    here); with certificates of your own, add their subject to
    ``super_users``."""
    del cert
    return "CN=localhost"


def _wait_proc_state(node: _Node, *, stopped: bool, timeout: float = 10.0) -> None:
    """Wait until the kernel shows the process stopped (``T``) or not: a
    signal is delivered asynchronously."""
    proc = node.proc
    if proc is None:
        return
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # gone, or not Linux's /proc
        if (state in ("T", "t")) == stopped or state in ("Z", "X"):
            return
        time.sleep(0.005)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _stop_all(nodes: dict[int, _Node], watchdog: _Watchdog) -> list[str]:
    """Stop every node, close every proxy and the watchdog; what went wrong,
    as text."""
    errors: list[str] = []
    for node in nodes.values():
        try:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        except Exception as e:  # stop the others whatever happens
            errors.append(f"node {node.id}: {e}")
    for node in nodes.values():
        try:
            node.reap(10)
            node.state = "stopped"
        except Exception as e:
            errors.append(f"node {node.id}: {e}")
        for proxy in (node.proxy, node.controller_proxy):
            try:
                proxy.close()
            except Exception as e:
                errors.append(f"node {node.id} proxy: {e}")
    try:
        watchdog.close()
    except Exception as e:
        errors.append(f"watchdog: {e}")
    return errors


# ---- a minimal Kafka client: Metadata v7 and ListOffsets v1 ----------------------------
#
# Enough of the wire protocol to ask a node who leads what, without a Kafka
# client library (the cluster must not need one).


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise OSError("short Kafka response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise OSError("short Kafka response")
        s = self.data[self.pos : self.pos + n].decode(errors="replace")
        self.pos += n
        return s

    def array(self) -> int:
        n: int = self.take(">i")
        return max(n, 0)


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _call(
    address: tuple[str, int], api_key: int, version: int, body: bytes, timeout: float
) -> _Buf:
    header = struct.pack(">hhi", api_key, version, 1) + _string("ottla-cluster")
    request = header + body
    with socket.create_connection(address, timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv(s, 4))[0]
        if not 4 <= size <= 64 * 1024 * 1024:
            raise OSError(f"bad Kafka response size {size}")
        buf = _Buf(_recv(s, size))
    buf.take(">i")  # correlation id
    return buf


def _recv(s: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = s.recv(n)
        if not chunk:
            raise OSError("connection closed by the node")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _metadata(
    address: tuple[str, int], topics: Sequence[str] | None, timeout: float
) -> tuple[list[tuple[int, str, int]], list[PartitionState]]:
    """Metadata v7 (no topic auto-creation): the brokers ``(id, host, port)``
    and the partitions of ``topics`` (None: every topic)."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(_string(t) for t in topics)
    body += b"\x00"  # allow_auto_topic_creation = false
    r = _call(address, 3, 7, body, timeout)
    r.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(r.array()):
        node_id = r.take(">i")
        host = r.string() or ""
        port = r.take(">i")
        r.string()  # rack
        brokers.append((node_id, host, port))
    r.string()  # cluster_id
    r.take(">i")  # controller_id
    parts: list[PartitionState] = []
    for _ in range(r.array()):
        r.take(">h")  # topic error code
        name = r.string() or ""
        r.take(">b")  # is_internal
        for _ in range(r.array()):
            error = r.take(">h")
            index = r.take(">i")
            leader = r.take(">i")
            epoch = r.take(">i")
            replicas = tuple(r.take(">i") for _ in range(r.array()))
            isr = tuple(r.take(">i") for _ in range(r.array()))
            offline = tuple(r.take(">i") for _ in range(r.array()))
            parts.append(
                PartitionState(
                    name,
                    index,
                    leader if leader >= 0 else None,
                    replicas,
                    isr,
                    error,
                    epoch,
                    offline,
                )
            )
    parts.sort(key=lambda p: (p.topic, p.partition))
    return brokers, parts


def _list_offset(
    address: tuple[str, int], topic: str, partition: int, timeout: float
) -> tuple[int, int]:
    """ListOffsets v1, latest: ``(error_code, offset)``."""
    body = struct.pack(">ii", -1, 1) + _string(topic) + struct.pack(">iiq", 1, partition, -1)
    r = _call(address, 2, 1, body, timeout)
    for _ in range(r.array()):
        r.string()
        for _ in range(r.array()):
            index = r.take(">i")
            error = r.take(">h")
            r.take(">q")  # timestamp
            offset = r.take(">q")
            if index == partition:
                return error, offset
    return -1, -1


# ---- cluster operations over Kafka's protocol -------------------------------------------
#
# AlterPartitionReassignments (45), ListPartitionReassignments (46) and
# UnregisterBroker (64) are flexible-version requests no installed
# maintained client speaks (confluent-kafka has ElectLeaders and
# DescribeCluster, not these); a few lines of the wire format serve them.


@dataclass(frozen=True)
class Reassignment:
    """A partition reassignment in progress (ListPartitionReassignments)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]
    adding: tuple[int, ...]
    removing: tuple[int, ...]


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _cstring(s: str | None) -> bytes:
    if s is None:
        return b"\x00"
    b = s.encode()
    return _uvarint(len(b) + 1) + b


def _carray(items: Sequence[bytes] | None) -> bytes:
    if items is None:
        return b"\x00"
    return _uvarint(len(items) + 1) + b"".join(items)


class _FBuf(_Buf):
    """A flexible-version response."""

    def uvarint(self) -> int:
        shift = n = 0
        while True:
            b: int = self.take(">B")
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def cstring(self) -> str | None:
        n = self.uvarint() - 1
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise OSError("short Kafka response")
        s = self.data[self.pos : self.pos + n].decode(errors="replace")
        self.pos += n
        return s

    def carray(self) -> int:
        return max(self.uvarint() - 1, 0)

    def tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            size = self.uvarint()
            self.pos += size


def _flex_call(bootstrap: str, api_key: int, version: int, body: bytes, timeout: float) -> _FBuf:
    """One flexible-version request to the first broker of ``bootstrap``
    that answers (request header v2, response header v1)."""
    header = struct.pack(">hhi", api_key, version, 1) + _string("ottla-cluster") + b"\x00"
    request = header + body
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(struct.pack(">i", len(request)) + request)
                size = struct.unpack(">i", _recv(s, 4))[0]
                if not 4 <= size <= 64 * 1024 * 1024:
                    raise OSError(f"bad Kafka response size {size}")
                buf = _FBuf(_recv(s, size))
        except (OSError, ValueError) as e:
            errors.append(f"{server}: {e}")
            continue
        buf.take(">i")  # correlation id
        buf.tags()
        return buf
    raise ClusterError("no broker answered: " + "; ".join(errors))


def alter_reassignments(
    bootstrap: str,
    plan: dict[tuple[str, int], Sequence[int] | None],
    *,
    timeout: float = 30.0,
) -> dict[tuple[str, int], tuple[int, str | None]]:
    """AlterPartitionReassignments: per ``(topic, partition)``, the target
    replicas (the first is the preferred leader), or None to cancel. The
    answer per partition: ``(error_code, error_message)``, 0 when accepted
    (Kafka's codes: 39 INVALID_REPLICA_ASSIGNMENT, 85
    NO_REASSIGNMENT_IN_PROGRESS, 3 UNKNOWN_TOPIC_OR_PARTITION, ...)."""
    by_topic: dict[str, list[tuple[int, Sequence[int] | None]]] = {}
    for (topic, partition), replicas in plan.items():
        by_topic.setdefault(topic, []).append((partition, replicas))
    topics = []
    for topic, parts in by_topic.items():
        encoded = [
            struct.pack(">i", p)
            + _carray(None if r is None else [struct.pack(">i", b) for b in r])
            + b"\x00"
            for p, r in parts
        ]
        topics.append(_cstring(topic) + _carray(encoded) + b"\x00")
    body = struct.pack(">i", int(timeout * 1000)) + _carray(topics) + b"\x00"
    r = _flex_call(bootstrap, 45, 0, body, timeout)
    r.take(">i")  # throttle
    error = r.take(">h")
    message = r.cstring()
    if error:
        raise ClusterError(f"AlterPartitionReassignments failed: error {error}: {message}")
    out: dict[tuple[str, int], tuple[int, str | None]] = {}
    for _ in range(r.carray()):
        topic = r.cstring() or ""
        for _ in range(r.carray()):
            partition = r.take(">i")
            code = r.take(">h")
            msg = r.cstring()
            r.tags()
            out[(topic, partition)] = (code, msg)
        r.tags()
    return out


def list_reassignments(bootstrap: str, *, timeout: float = 30.0) -> list[Reassignment]:
    """ListPartitionReassignments: every reassignment in progress."""
    body = struct.pack(">i", int(timeout * 1000)) + b"\x00" + b"\x00"
    r = _flex_call(bootstrap, 46, 0, body, timeout)
    r.take(">i")
    error = r.take(">h")
    message = r.cstring()
    if error:
        raise ClusterError(f"ListPartitionReassignments failed: error {error}: {message}")
    out = []
    for _ in range(r.carray()):
        topic = r.cstring() or ""
        for _ in range(r.carray()):
            partition = r.take(">i")
            lists = [tuple(r.take(">i") for _ in range(r.carray())) for _ in range(3)]
            r.tags()
            out.append(Reassignment(topic, partition, lists[0], lists[1], lists[2]))
        r.tags()
    return sorted(out, key=lambda x: (x.topic, x.partition))


def unregister_broker(bootstrap: str, node_id: int, *, timeout: float = 30.0) -> None:
    """UnregisterBroker: the node leaves the cluster's registrations (it
    must hold no partition replica any more)."""
    r = _flex_call(bootstrap, 64, 0, struct.pack(">i", node_id) + b"\x00", timeout)
    r.take(">i")
    error = r.take(">h")
    message = r.cstring()
    if error:
        raise ClusterError(f"cannot unregister broker {node_id}: error {error}: {message}")


def describe(
    bootstrap: str, *, timeout: float = 10.0
) -> tuple[list[tuple[int, str, int]], int, list[PartitionState]]:
    """The live brokers ``(id, host, port)``, the active controller's id
    and every partition (Metadata v7: leader epochs included)."""
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            brokers, parts = _metadata((host, int(port)), None, timeout)
            controller = _controller_id((host, int(port)), timeout)
            return brokers, controller, parts
        except (OSError, ValueError) as e:
            errors.append(f"{server}: {e}")
    raise ClusterError("no broker answered: " + "; ".join(errors))


def _controller_id(address: tuple[str, int], timeout: float) -> int:
    body = struct.pack(">i", 0) + b"\x00"  # no topics
    r = _call(address, 3, 7, body, timeout)
    r.take(">i")
    for _ in range(r.array()):
        r.take(">i")
        r.string()
        r.take(">i")
        r.string()
    r.string()
    controller: int = r.take(">i")
    return controller


def move_off_broker(
    bootstrap: str, node_id: int, *, timeout: float = 120.0
) -> dict[tuple[str, int], list[int]]:
    """Reassigns every replica ``node_id`` holds to the live brokers holding
    the fewest replicas (keeping each partition's replication factor and
    replica order, the removed one replaced in place), then waits until no
    reassignment is in progress and the node holds nothing. The plan."""
    brokers, _, parts = describe(bootstrap)
    live = sorted(b[0] for b in brokers if b[0] != node_id)
    load = {b: 0 for b in live}
    for p in parts:
        for r in p.replicas:
            if r in load:
                load[r] += 1
    plan: dict[tuple[str, int], list[int]] = {}
    for p in parts:
        if node_id not in p.replicas:
            continue
        candidates = sorted((b for b in live if b not in p.replicas), key=lambda b: (load[b], b))
        if not candidates:
            raise ClusterError(
                f"{p.topic}-{p.partition} has {len(p.replicas)} replicas and only "
                f"{len(live)} other live brokers: nowhere to move its replica on {node_id}"
            )
        target = [candidates[0] if r == node_id else r for r in p.replicas]
        load[candidates[0]] += 1
        plan[(p.topic, p.partition)] = target
    if plan:
        answers = alter_reassignments(bootstrap, dict(plan.items()))
        failed = {tp: a for tp, a in answers.items() if a[0] != 0}
        if failed:
            raise ClusterError(f"reassignment refused: {failed}")
    wait_reassigned(bootstrap, lambda ps: all(node_id not in p.replicas for p in ps), timeout)
    return plan


def wait_reassigned(
    bootstrap: str,
    done: Any = None,
    timeout: float = 120.0,
) -> None:
    """Waits until no reassignment is in progress (and ``done(partitions)``
    holds, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pending = list_reassignments(bootstrap)
            ok = not pending and (done is None or done(describe(bootstrap)[2]))
        except ClusterError:
            ok = False
            pending = []
        if ok:
            return
        if time.monotonic() > deadline:
            raise ClusterError(
                f"reassignments still in progress after {timeout:g} s: "
                + ", ".join(f"{r.topic}-{r.partition}" for r in pending)
            )
        time.sleep(0.2)


def set_scram_user(
    bootstrap: str,
    user: str,
    password: str,
    *,
    mechanism: str = "SCRAM-SHA-512",
    iterations: int = 4096,
    timeout: float = 10.0,
) -> None:
    """Create (or change) a SCRAM user over the wire: Kafka's
    AlterUserScramCredentials (v0) to the PLAINTEXT listener ``bootstrap``
    (``HOST:PORT``), with the salted password only, as Kafka's admin
    clients send it. On a cluster the user lands in the metadata log and
    logs in on every node. Raises ClusterError with Kafka's error."""
    import hashlib

    mech = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}.get(mechanism)
    if mech is None:
        raise ValueError(f"mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512, not {mechanism!r}")
    salt = os.urandom(32)
    salted = hashlib.pbkdf2_hmac(mech[1], password.encode(), salt, iterations)
    body = b"\x01"  # deletions: none (compact array of 0)
    body += b"\x02"  # upsertions: one
    body += _cstring(user) + struct.pack(">bi", mech[0], iterations)
    body += _uvarint(len(salt) + 1) + salt + _uvarint(len(salted) + 1) + salted + b"\x00"
    body += b"\x00"  # tagged fields
    host, _, port = bootstrap.rpartition(":")
    # Request header v2: the v1 header and its tagged fields.
    header = struct.pack(">hhi", 51, 0, 1) + _string("ottla-cluster") + b"\x00"
    request = header + body
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv(sock, 4))[0]
        if not 4 <= size <= 1024 * 1024:
            raise OSError(f"bad Kafka response size {size}")
        data = _recv(sock, size)
    # correlation id, header tagged fields, throttle, results (compact array)
    pos = 4 + 1 + 4
    count = data[pos] - 1
    pos += 1
    for _ in range(count):
        n = data[pos] - 1
        name = data[pos + 1 : pos + 1 + n].decode()
        pos += 1 + n
        (code,) = struct.unpack_from(">h", data, pos)
        pos += 2
        m = data[pos] - 1
        message = data[pos + 1 : pos + 1 + m].decode() if m >= 0 else ""
        pos += 1 + max(m, 0) + 1
        if code != 0:
            raise ClusterError(f"AlterUserScramCredentials for {name}: error {code}: {message}")
