"""A fault-injecting TCP proxy for tests: the network between a client (or
another broker) and one listener of a broker, under a test's control.

``FaultProxy(target)`` listens on ``127.0.0.1:<free port>`` and forwards
every connection to ``target``, byte for byte, in both directions. A test
then breaks the network on purpose:

* ``cut()``: every connection through the proxy is reset and new ones are
  reset as soon as they are accepted, until ``heal()``;
* ``drop_from(ip)``: the same, only for connections whose peer address is
  ``ip`` (each node of an ``ottla.Cluster`` connects from its own loopback
  address, so this cuts one node off from this listener), until
  ``allow_from(ip)`` or ``heal()``;
* ``delay``: seconds every chunk of bytes is held before it is passed on
  (latency, not a bandwidth limit);
* ``silent=True`` (``cut`` and ``drop_from``): a black hole instead of a
  reset: connections stay open and every byte is swallowed, in both
  directions, as when a network drops packets; each side waits for its
  own timeouts. ``heal()`` (or ``allow_from``) then resets them.

Every method returns once it took effect: after ``cut()`` returns, no
connection is open through the proxy. A reset (RST, not FIN) is what a
client sees when a broker's host vanishes from the network or refuses a
connection; a client then retries elsewhere, as it would against Kafka.

One background thread serves every connection with ``selectors``; pure
Python, no dependency.

>>> import socket
>>> from ottla._proxy import FaultProxy
>>> echo = socket.create_server(("127.0.0.1", 0))
>>> with FaultProxy(echo.getsockname()) as proxy:
...     client = socket.create_connection(proxy.address)
...     server, _ = echo.accept()
...     client.sendall(b"ping")
...     server.recv(4)
b'ping'
>>> client.close(); server.close(); echo.close()
"""

from __future__ import annotations

import collections
import errno
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal

__all__ = ["FaultProxy"]

# Bytes read from one side at a time, and held for the other side at most
# before the proxy stops reading from the first (back-pressure).
_CHUNK = 256 * 1024
_HIGH_WATER = 4 * 1024 * 1024


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a RST: SO_LINGER on, zero seconds."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Side:
    """One socket of a forwarded connection and the bytes waiting to be
    written to it (each chunk with the time it may leave)."""

    __slots__ = ("eof_in", "pending", "pending_bytes", "shut_out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending: collections.deque[tuple[float, memoryview]] = collections.deque()
        self.pending_bytes = 0
        self.eof_in = False  # the peer of this socket sent FIN
        self.shut_out = False  # we sent FIN on this socket


class _Pipe:
    """A forwarded connection: the accepted ``client`` side and the
    ``upstream`` side connected to the target."""

    __slots__ = ("client", "connected", "peer_ip", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket, peer_ip: str) -> None:
        self.client = _Side(client)
        self.upstream = _Side(upstream)
        self.peer_ip = peer_ip
        self.connected = False

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client


class FaultProxy:
    """A TCP proxy from ``127.0.0.1:<port>`` to ``target`` that can cut,
    refuse and delay connections on demand (module docstring).

    ``port=0`` picks a free port; a proxy given the same port again (a
    restarted cluster) reuses it. ``bind_host`` is the address it listens on.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        port: int = 0,
        bind_host: str = "127.0.0.1",
        delay: float = 0.0,
        name: str = "proxy",
    ) -> None:
        self._target = (str(target[0]), int(target[1]))
        self._name = name
        self._delay = float(delay)
        self._cut = False
        self._silent = False
        self._dropped: set[str] = set()
        self._silent_from: set[str] = set()
        # Black-holed sockets (either side of a silenced connection), by
        # the source address of their connection.
        self._sinks: dict[socket.socket, str] = {}
        self._closed = False
        self._accepted = 0
        self._refused = 0
        self._pipes: set[_Pipe] = set()
        self._commands: collections.deque[tuple[Callable[[], None], threading.Event]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((bind_host, port))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._listener.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._address: tuple[str, int] = self._listener.getsockname()[:2]
        self._thread = threading.Thread(
            target=self._run, name=f"ottla-{name}-{self._address[1]}", daemon=True
        )
        self._thread.start()

    # ---- the public surface ---------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the proxy listens on."""
        return self._address

    @property
    def bootstrap(self) -> str:
        """``"host:port"`` the proxy listens on."""
        return f"{self._address[0]}:{self._address[1]}"

    @property
    def target(self) -> tuple[str, int]:
        """``(host, port)`` connections are forwarded to."""
        return self._target

    @property
    def is_cut(self) -> bool:
        """True between ``cut()`` and ``heal()``."""
        return self._cut

    @property
    def dropped(self) -> frozenset[str]:
        """The source addresses refused by ``drop_from``."""
        return frozenset(self._dropped)

    @property
    def connections(self) -> int:
        """Connections forwarded now."""
        return len(self._pipes)

    @property
    def sources(self) -> dict[str, int]:
        """Connections forwarded now, by the source address they came from."""
        out: dict[str, int] = {}
        for pipe in list(self._pipes):
            out[pipe.peer_ip] = out.get(pipe.peer_ip, 0) + 1
        return out

    @property
    def accepted(self) -> int:
        """Connections forwarded since the proxy started."""
        return self._accepted

    @property
    def refused(self) -> int:
        """Connections reset on arrival (cut or dropped) since the proxy started."""
        return self._refused

    @property
    def delay(self) -> float:
        """Seconds each chunk of bytes is held before it is passed on."""
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"delay must be >= 0 seconds, not {seconds!r}")
        self._delay = float(seconds)

    @property
    def silenced(self) -> int:
        """Sockets black-holed now (two per silenced connection, one per
        connection accepted into the black hole)."""
        return len(self._sinks)

    def cut(self, *, silent: bool = False) -> None:
        """Reset every connection and every new one until ``heal()``;
        ``silent``: swallow their bytes instead (a black hole)."""

        def do() -> None:
            self._cut = True
            self._silent = silent
            for pipe in list(self._pipes):
                self._end_pipe(pipe, silent)

        self._call(do)

    def heal(self) -> None:
        """Undo ``cut()`` and every ``drop_from()``: new connections are
        forwarded again (connections cut stay closed, black-holed ones are
        reset now; clients reconnect)."""

        def do() -> None:
            self._cut = False
            self._silent = False
            self._dropped.clear()
            self._silent_from.clear()
            for sock in list(self._sinks):
                self._close_sink(sock)

        self._call(do)

    def drop_from(self, source_ip: str, *, silent: bool = False) -> None:
        """Reset every connection from ``source_ip`` and refuse new ones
        from it until ``allow_from(source_ip)`` or ``heal()``; ``silent``:
        swallow their bytes instead (a black hole)."""

        def do() -> None:
            self._dropped.add(source_ip)
            if silent:
                self._silent_from.add(source_ip)
            else:
                self._silent_from.discard(source_ip)
            for pipe in [p for p in self._pipes if p.peer_ip == source_ip]:
                self._end_pipe(pipe, silent)

        self._call(do)

    def allow_from(self, source_ip: str) -> None:
        """Forward connections from ``source_ip`` again (its black-holed
        connections are reset)."""

        def do() -> None:
            self._dropped.discard(source_ip)
            self._silent_from.discard(source_ip)
            for sock in [s for s, ip in self._sinks.items() if ip == source_ip]:
                self._close_sink(sock)

        self._call(do)

    def close(self) -> None:
        """Stop listening, reset every connection, end the thread."""
        if self._closed:
            return
        if self._thread.is_alive():
            self._call(self._do_close)
            self._thread.join(10)
        self._closed = True

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        cut = "cut (silent)" if self._silent else "cut"
        state = "closed" if self._closed else cut if self._cut else "open"
        dropped = f" dropping {sorted(self._dropped)}" if self._dropped else ""
        delay = f" delay={self._delay}s" if self._delay else ""
        return (
            f"<FaultProxy {self._name} {self.bootstrap} -> {self._target[0]}:{self._target[1]} "
            f"{state}{dropped}{delay} connections={len(self._pipes)}>"
        )

    # ---- commands, run on the proxy's thread ------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the proxy thread and wait for it."""
        if self._closed or not self._thread.is_alive():
            raise RuntimeError(f"{self!r} is closed")
        done = threading.Event()
        with self._lock:
            self._commands.append((fn, done))
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: a wake-up is pending anyway
        while not done.wait(0.5):
            if not self._thread.is_alive():
                raise RuntimeError(f"{self!r}: its thread ended")

    def _do_close(self) -> None:
        self._cut = True
        for pipe in list(self._pipes):
            self._close_pipe(pipe, reset=True)
        for sock in list(self._sinks):
            self._close_sink(sock)
        self._closed = True

    def _end_pipe(self, pipe: _Pipe, silent: bool) -> None:
        """Reset ``pipe``, or (``silent``) black-hole both its sockets."""
        if not silent:
            self._close_pipe(pipe, reset=True)
            return
        self._pipes.discard(pipe)
        for side in (pipe.client, pipe.upstream):
            try:
                self._sel.unregister(side.sock)
            except (KeyError, ValueError):
                pass
            self._sink(side.sock, pipe.peer_ip)

    def _sink(self, sock: socket.socket, peer_ip: str) -> None:
        self._sinks[sock] = peer_ip
        self._sel.register(sock, selectors.EVENT_READ, "sink")

    def _close_sink(self, sock: socket.socket) -> None:
        self._sinks.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        _reset(sock)

    def _swallow(self, sock: socket.socket) -> None:
        """Read and drop what reached a black-holed socket; close it once
        its peer gave up."""
        try:
            if sock.recv(_CHUNK):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._sinks.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    # ---- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closed:
                timeout = self._next_due()
                for key, events in self._sel.select(timeout):
                    data = key.data
                    if data == "accept":
                        self._accept()
                    elif data == "wake":
                        self._drain_wake()
                    elif data == "sink":
                        sock = key.fileobj
                        if isinstance(sock, socket.socket) and sock in self._sinks:
                            self._swallow(sock)
                    else:
                        pipe, side = data
                        if pipe in self._pipes:
                            self._service(pipe, side, events)
                self._run_commands()
                self._flush_due()
        finally:
            for pipe in list(self._pipes):
                self._close_pipe(pipe, reset=True)
            for sock in list(self._sinks):
                self._close_sink(sock)
            for s in (self._listener, self._wake_r, self._wake_w):
                try:
                    self._sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                s.close()
            self._sel.close()
            with self._lock:
                pending = list(self._commands)
                self._commands.clear()
            for _, done in pending:
                done.set()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _run_commands(self) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn, done = self._commands.popleft()
            try:
                fn()
            finally:
                done.set()

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and the like: the client sees no answer and retries
            peer_ip = str(peer[0])
            if self._cut or peer_ip in self._dropped:
                self._refused += 1
                if (self._cut and self._silent) or peer_ip in self._silent_from:
                    sock.setblocking(False)
                    self._sink(sock, peer_ip)
                else:
                    _reset(sock)
                continue
            sock.setblocking(False)
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for s in (sock, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = upstream.connect_ex(self._target)
            pipe = _Pipe(sock, upstream, peer_ip)
            if err not in (0, errno.EINPROGRESS):
                # The target is down: the client sees what it would see
                # without the proxy, a refused (reset) connection.
                self._refused += 1
                _reset(sock)
                upstream.close()
                continue
            self._accepted += 1
            self._pipes.add(pipe)
            self._sel.register(sock, selectors.EVENT_READ, (pipe, pipe.client))
            self._sel.register(upstream, selectors.EVENT_WRITE, (pipe, pipe.upstream))

    def _interest(self, pipe: _Pipe, side: _Side) -> int:
        other = pipe.other(side)
        events = 0
        may_read = pipe.connected or side is pipe.client
        if may_read and not side.eof_in and other.pending_bytes < _HIGH_WATER:
            events |= selectors.EVENT_READ
        if side.pending and side.pending[0][0] <= time.monotonic():
            events |= selectors.EVENT_WRITE
        if side is pipe.upstream and not pipe.connected:
            events = selectors.EVENT_WRITE
        return events

    def _update(self, pipe: _Pipe) -> None:
        for side in (pipe.client, pipe.upstream):
            events = self._interest(pipe, side)
            key = self._sel.get_map().get(side.sock)
            if events and key is None:
                self._sel.register(side.sock, events, (pipe, side))
            elif events and key is not None and key.events != events:
                self._sel.modify(side.sock, events, (pipe, side))
            elif not events and key is not None:
                self._sel.unregister(side.sock)

    def _service(self, pipe: _Pipe, side: _Side, events: int) -> None:
        if side is pipe.upstream and not pipe.connected:
            err = side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._refused += 1
                self._close_pipe(pipe, reset=True)
                return
            pipe.connected = True
            self._update(pipe)
            return
        other = pipe.other(side)
        if events & selectors.EVENT_READ:
            try:
                data = side.sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close_pipe(pipe, reset=True)
                return
            if data is not None:
                if data:
                    other.pending.append((time.monotonic() + self._delay, memoryview(data)))
                    other.pending_bytes += len(data)
                else:
                    side.eof_in = True
        if events & selectors.EVENT_WRITE and not self._write(pipe, side):
            return
        self._write(pipe, other)
        if pipe in self._pipes:
            self._finish_half_closes(pipe)
        if pipe in self._pipes:
            self._update(pipe)

    def _write(self, pipe: _Pipe, side: _Side) -> bool:
        """Write what is due to ``side``; False if the pipe was closed."""
        if side is pipe.upstream and not pipe.connected:
            return True
        now = time.monotonic()
        while side.pending and side.pending[0][0] <= now:
            due, buf = side.pending[0]
            try:
                n = side.sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._close_pipe(pipe, reset=True)
                return False
            side.pending_bytes -= n
            if n < len(buf):
                side.pending[0] = (due, buf[n:])
                return True
            side.pending.popleft()
        return True

    def _finish_half_closes(self, pipe: _Pipe) -> None:
        for side in (pipe.client, pipe.upstream):
            other = pipe.other(side)
            # The peer of `side` said FIN and everything it sent was passed on.
            if side.eof_in and not other.pending and not other.shut_out:
                try:
                    other.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                other.shut_out = True
        both_done = pipe.client.eof_in and pipe.upstream.eof_in
        if both_done and not pipe.client.pending and not pipe.upstream.pending:
            self._close_pipe(pipe, reset=False)

    def _close_pipe(self, pipe: _Pipe, *, reset: bool) -> None:
        self._pipes.discard(pipe)
        for side in (pipe.client, pipe.upstream):
            try:
                self._sel.unregister(side.sock)
            except (KeyError, ValueError):
                pass
            if reset:
                _reset(side.sock)
            else:
                side.sock.close()

    def _next_due(self) -> float | None:
        """Seconds until the earliest held chunk may leave (None: none held)."""
        dues = [
            side.pending[0][0]
            for pipe in self._pipes
            for side in (pipe.client, pipe.upstream)
            if side.pending
        ]
        if not dues:
            return None
        return max(0.0, min(dues) - time.monotonic())

    def _flush_due(self) -> None:
        now = time.monotonic()
        for pipe in list(self._pipes):
            for side in (pipe.client, pipe.upstream):
                if side.pending and side.pending[0][0] <= now and pipe in self._pipes:
                    self._write(pipe, side)
            if pipe in self._pipes:
                self._finish_half_closes(pipe)
            if pipe in self._pipes:
                self._update(pipe)
