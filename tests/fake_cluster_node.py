"""A stand-in for a cluster node of ``ottla serve``, for tests of
``ottla.Cluster``'s process handling (start, kill, stop, pause, isolate,
wipe, logs) that must not depend on the replicated broker.

It takes the cluster flags of ``ottla serve``, listens on ``--listen`` and
``--controller-listen``, prints ``listening on HOST:PORT``, and answers
Metadata v7 (every voter and itself as brokers; each asked topic with one
partition led by the lowest voter, all in sync; brokers: every voter and
every node directory beside its own that a node started in) and ListOffsets v1 (offset
= the number of times this node started, counted in ``DIR/starts``).
SIGTERM stops it with status 0. ``--fail-start`` makes it exit at once
with status 3 (a broker that cannot start).
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from types import FrameType


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">h", data, pos)
    pos += 2
    return data[pos : pos + n].decode(), pos + n


def _recv(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


class Node:
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns
        self.voters = sorted(int(v.split("@")[0]) for v in ns.controller_quorum_voters.split(","))
        data = Path(ns.data)
        starts = data / "starts"
        count = int(starts.read_text()) + 1 if starts.exists() else 1
        starts.write_text(str(count))
        self.starts = count

    def metadata(self, body: bytes) -> bytes:
        (n,) = struct.unpack_from(">i", body, 0)
        pos = 4
        topics = []
        for _ in range(max(n, 0)):
            name, pos = _read_string(body, pos)
            topics.append(name)
        host, port = self.ns.advertised_listener.rsplit(":", 1)
        # "Registered" brokers: every node directory of the cluster that a
        # node started in (the real broker learns them from the controller).
        cluster = Path(self.ns.data).absolute().parent.parent
        started = {int(d.name[5:]) for d in cluster.glob("node-*") if (d / "data/starts").exists()}
        ids = sorted({*self.voters, *started, self.ns.node_id})
        out = struct.pack(">i", 0) + struct.pack(">i", len(ids))
        for i in ids:
            out += struct.pack(">i", i) + _string(host) + struct.pack(">i", int(port))
            out += struct.pack(">h", -1)
        out += struct.pack(">h", -1) + struct.pack(">i", self.voters[0])
        out += struct.pack(">i", len(topics))
        for t in topics:
            out += struct.pack(">h", 0) + _string(t) + b"\x00" + struct.pack(">i", 1)
            out += struct.pack(">hiii", 0, 0, self.voters[0], 0)  # ..., leader, leader epoch
            voters = struct.pack(">i", len(self.voters)) + b"".join(
                struct.pack(">i", v) for v in self.voters
            )
            out += voters + voters + struct.pack(">i", 0)  # replicas, isr, offline
        return out

    def list_offsets(self, body: bytes) -> bytes:
        pos = 8  # replica id, topic count (one topic)
        name, pos = _read_string(body, pos)
        _, partition = struct.unpack_from(">ii", body, pos)
        out = struct.pack(">i", 1) + _string(name) + struct.pack(">i", 1)
        return out + struct.pack(">ihqq", partition, 0, -1, self.starts)

    def serve_conn(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    (size,) = struct.unpack(">i", _recv(conn, 4))
                    req = _recv(conn, size)
                    api, _version, corr = struct.unpack_from(">hhi", req, 0)
                    _, pos = _read_string(req, 8)
                    body = req[pos:]
                    if api == 3:
                        answer = self.metadata(body)
                    elif api == 2:
                        answer = self.list_offsets(body)
                    else:
                        return
                    resp = struct.pack(">i", corr) + answer
                    conn.sendall(struct.pack(">i", len(resp)) + resp)
            except (ConnectionError, OSError, struct.error):
                return

    def accept(self, listener: socket.socket, answer: bool) -> None:
        while True:
            conn, _ = listener.accept()
            if answer:
                threading.Thread(target=self.serve_conn, args=(conn,), daemon=True).start()
            else:
                conn.close()


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fake-node")
    p.add_argument("--data", required=True)
    p.add_argument("--node-id", type=int, required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--advertised-listener", required=True)
    p.add_argument("--controller-listen", required=True)
    p.add_argument("--controller-quorum-voters", required=True)
    p.add_argument("--default-replication-factor", type=int, default=1)
    p.add_argument("--min-insync-replicas", type=int, default=1)
    p.add_argument("--broker-session-timeout-ms", type=int, default=9000)
    p.add_argument("--replica-lag-time-max-ms", type=int, default=30000)
    p.add_argument("--group-initial-rebalance-delay-ms", type=int, default=3000)
    p.add_argument("--num-partitions", type=int, default=1)
    p.add_argument("--fail-start", action="store_true")
    return p.parse_args(argv)


def main() -> int:
    ns = parse(sys.argv[1:])
    print(f"fake node {ns.node_id}: {' '.join(sys.argv[1:])}", file=sys.stderr, flush=True)
    if ns.fail_start:
        print(f"fake node {ns.node_id}: refusing to start", file=sys.stderr, flush=True)
        return 3
    node = Node(ns)
    listeners = []
    for text, answer in ((ns.listen, True), (ns.controller_listen, False)):
        host, port = text.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(64)
        listeners.append(s)
        threading.Thread(target=node.accept, args=(s, answer), daemon=True).start()
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    print(f"listening on {ns.listen}", flush=True)
    while not stop.wait(0.1):
        pass
    print(f"fake node {ns.node_id}: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
