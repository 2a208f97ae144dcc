"""The fault-injecting TCP proxy (ottla._proxy.FaultProxy) with plain sockets:
forwarding, cut/heal, drop_from/allow_from by source address, delay,
half-close, back-pressure, a target that is down."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from helpers import free_port, wait_until
from ottla._proxy import FaultProxy


class Echo:
    """A threaded echo server on 127.0.0.1 that remembers its peers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def proxy(echo: Echo) -> Iterator[FaultProxy]:
    with FaultProxy(echo.address, name="echo") as p:
        yield p


def connect(proxy: FaultProxy, source: str | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    if source is not None:
        s.bind((source, 0))
    s.connect(proxy.address)
    return s


def round_trip(s: socket.socket, payload: bytes = b"ping") -> bytes:
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def is_reset(s: socket.socket) -> bool:
    """True if the connection was closed by the other end (RST or FIN):
    a send or recv fails or sees EOF."""
    try:
        s.sendall(b"x")
        return s.recv(1) == b""
    except OSError:
        return True


def refused(proxy: FaultProxy, source: str | None = None) -> bool:
    """True if a new connection is reset: during connect() (the RST may beat
    connect's own check) or at its first use."""
    try:
        s = connect(proxy, source)
    except OSError:
        return True
    with s:
        return is_reset(s)


def test_forwards_both_ways(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        assert round_trip(s, b"hello") == b"hello"
        assert round_trip(s, b"again") == b"again"
    assert proxy.accepted == 1
    assert "echo" in repr(proxy) and "open" in repr(proxy)


def test_many_megabytes_intact(proxy: FaultProxy) -> None:
    """More than the proxy holds per direction: back-pressure, no loss or reordering."""
    payload = os.urandom(12 * 1024 * 1024)
    with connect(proxy) as s:
        sender = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        sender.start()
        h = hashlib.sha256()
        n = 0
        while n < len(payload):
            chunk = s.recv(1 << 20)
            assert chunk, "connection closed early"
            h.update(chunk)
            n += len(chunk)
        sender.join(10)
    assert h.digest() == hashlib.sha256(payload).digest()


def test_half_close_passes_fin(proxy: FaultProxy) -> None:
    with connect(proxy) as s:
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
    assert got == b"last words"
    assert wait_until(lambda: proxy.connections == 0)


def test_cut_resets_connections_and_refuses_new_until_heal(proxy: FaultProxy) -> None:
    a = connect(proxy)
    b = connect(proxy)
    assert round_trip(a) == b"ping" and round_trip(b) == b"ping"
    proxy.cut()
    assert proxy.is_cut and proxy.connections == 0
    assert is_reset(a) and is_reset(b)
    assert refused(proxy)  # the kernel accepts; the proxy resets it at once
    assert proxy.refused >= 1
    proxy.heal()
    with connect(proxy) as d:
        assert round_trip(d) == b"ping"
    for s in (a, b):
        s.close()


def test_drop_from_cuts_only_that_source(proxy: FaultProxy) -> None:
    other = connect(proxy, "127.0.0.1")
    dropped = connect(proxy, "127.0.0.2")
    assert round_trip(other) == b"ping" and round_trip(dropped) == b"ping"
    assert proxy.sources == {"127.0.0.1": 1, "127.0.0.2": 1}
    proxy.drop_from("127.0.0.2")
    assert proxy.dropped == {"127.0.0.2"}
    assert proxy.sources == {"127.0.0.1": 1}
    assert is_reset(dropped)
    assert round_trip(other, b"pong") == b"pong"
    assert refused(proxy, "127.0.0.2")
    with connect(proxy, "127.0.0.3") as third:
        assert round_trip(third) == b"ping"
    proxy.allow_from("127.0.0.2")
    with connect(proxy, "127.0.0.2") as back:
        assert round_trip(back) == b"ping"
    proxy.drop_from("127.0.0.2")
    proxy.heal()  # heal() lifts drops too
    with connect(proxy, "127.0.0.2") as again:
        assert round_trip(again) == b"ping"
    other.close()
    dropped.close()


def test_delay_holds_bytes_at_least_that_long(proxy: FaultProxy) -> None:
    """A lower bound only (bytes cannot leave before their time): never an upper one."""
    proxy.delay = 0.3
    with connect(proxy) as s:
        start = time.monotonic()
        assert round_trip(s, b"slow") == b"slow"
        # Held 0.3 s on the way in and 0.3 s on the way out.
        assert time.monotonic() - start >= 0.6
        proxy.delay = 0
        assert round_trip(s, b"fast") == b"fast"
    with pytest.raises(ValueError):
        proxy.delay = -1


def test_target_down_resets_the_client() -> None:
    port = free_port()  # nothing listens there now
    with FaultProxy(("127.0.0.1", port)) as p:
        assert refused(p)
        assert wait_until(lambda: p.refused == 1)


def test_close_stops_listening(echo: Echo) -> None:
    p = FaultProxy(echo.address)
    address = p.address
    s = connect(p)
    p.close()
    p.close()  # idempotent
    assert is_reset(s)
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=5).close()
    with pytest.raises(RuntimeError):
        p.cut()
    s.close()


def test_same_port_after_close(echo: Echo) -> None:
    """A proxy restarted on its old port (a cluster reopened on its ports)."""
    with FaultProxy(echo.address) as first, connect(first) as s:
        port = first.address[1]
        assert round_trip(s) == b"ping"
    with FaultProxy(echo.address, port=port) as second, connect(second) as s:
        assert round_trip(s) == b"ping"


def nothing_arrives(s: socket.socket, wait: float = 0.3) -> bool:
    """True if ``s`` receives nothing (no byte, no EOF, no reset) for ``wait`` s."""
    s.settimeout(wait)
    try:
        s.recv(1)
    except TimeoutError:
        return True
    except OSError:
        return False
    finally:
        s.settimeout(10)
    return False


def test_silent_cut_swallows_bytes_then_heal_resets(proxy: FaultProxy) -> None:
    a = connect(proxy)
    assert round_trip(a) == b"ping"
    proxy.cut(silent=True)
    assert "cut (silent)" in repr(proxy)
    # Both sides of `a` are black-holed: the server's side hangs too.
    assert proxy.connections == 0 and proxy.silenced == 2
    a.sendall(b"lost")
    assert nothing_arrives(a)  # no echo, and no reset either
    b = connect(proxy)  # accepted into the black hole
    b.sendall(b"lost too")
    assert nothing_arrives(b)
    assert wait_until(lambda: proxy.silenced == 3)
    proxy.heal()
    assert proxy.silenced == 0
    assert is_reset(a) and is_reset(b)
    with connect(proxy) as c:
        assert round_trip(c) == b"ping"
    a.close()
    b.close()


def test_silent_drop_from_one_source(proxy: FaultProxy) -> None:
    other = connect(proxy, "127.0.0.1")
    quiet = connect(proxy, "127.0.0.4")
    assert round_trip(quiet) == b"ping"
    proxy.drop_from("127.0.0.4", silent=True)
    quiet.sendall(b"x")
    assert nothing_arrives(quiet)
    assert round_trip(other, b"still") == b"still"
    proxy.allow_from("127.0.0.4")
    assert is_reset(quiet)
    with connect(proxy, "127.0.0.4") as back:
        assert round_trip(back) == b"ping"
    other.close()
    quiet.close()
