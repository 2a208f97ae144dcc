"""Hand-built group-coordinator requests (the non-flexible versions that
carry ``group.instance.id``: JoinGroup v5, SyncGroup v3, Heartbeat v3,
LeaveGroup v3, OffsetCommit v7, DescribeGroups v4), for what no client
library exposes: a fenced member id, a batch leave by instance id, the
fields of each answer."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from kafka_wire import _str, frame, response

API_OFFSET_COMMIT = 8
API_JOIN_GROUP = 11
API_HEARTBEAT = 12
API_LEAVE_GROUP = 13
API_SYNC_GROUP = 14
API_DESCRIBE_GROUPS = 15

FENCED_INSTANCE_ID = 82
UNKNOWN_MEMBER_ID = 25


def _bytes(b: bytes) -> bytes:
    return struct.pack(">i", len(b)) + b


class Reader:
    """Reads the fields of a response body in order."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def _take(self, fmt: str) -> int:
        (v,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return int(v)

    def i16(self) -> int:
        return self._take(">h")

    def i32(self) -> int:
        return self._take(">i")

    def nullable_str(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.data[self.at : self.at + n].decode()
        self.at += n
        return s

    def str(self) -> str:
        s = self.nullable_str()
        assert s is not None
        return s

    def bytes(self) -> bytes:
        n = self.i32()
        if n < 0:
            return b""
        b = self.data[self.at : self.at + n]
        self.at += n
        return b


def _call(sock: socket.socket, api: int, version: int, body: bytes, cid: int) -> Reader:
    sock.sendall(frame(api, version, cid, body))
    got, data = response(sock)
    assert got == cid
    return Reader(data)


@dataclass
class Joined:
    error: int
    generation: int
    protocol: str | None
    leader: str
    member_id: str
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


def send_join(
    sock: socket.socket,
    group: str,
    member_id: str,
    instance_id: str | None,
    session_ms: int = 6000,
    rebalance_ms: int = 6000,
    metadata: bytes = b"meta",
    cid: int = 11,
) -> None:
    """Send JoinGroup v5 with one protocol, "range" (answered when the
    round ends: `read_join`)."""
    body = (
        _str(group)
        + struct.pack(">ii", session_ms, rebalance_ms)
        + _str(member_id)
        + _str(instance_id)
        + _str("consumer")
        + struct.pack(">i", 1)
        + _str("range")
        + _bytes(metadata)
    )
    sock.sendall(frame(API_JOIN_GROUP, 5, cid, body))


def read_join(sock: socket.socket, cid: int = 11) -> Joined:
    """The answer to `send_join`."""
    got, data = response(sock)
    assert got == cid
    r = Reader(data)
    r.i32()  # throttle
    j = Joined(
        error=r.i16(),
        generation=r.i32(),
        protocol=r.nullable_str(),
        leader=r.str(),
        member_id=r.str(),
    )
    for _ in range(r.i32()):
        j.members.append((r.str(), r.nullable_str(), r.bytes()))
    return j


MEMBER_ID_REQUIRED = 79


def member_id(sock: socket.socket, group: str, cid: int = 10) -> str:
    """A new dynamic member's id: JoinGroup v5 with none is answered
    MEMBER_ID_REQUIRED with one (KIP-394), to join with."""
    send_join(sock, group, "", None, cid=cid)
    j = read_join(sock, cid)
    assert j.error == MEMBER_ID_REQUIRED, j
    return j.member_id


def join_group(
    sock: socket.socket,
    group: str,
    member_id: str,
    instance_id: str | None,
    session_ms: int = 6000,
    rebalance_ms: int = 6000,
    metadata: bytes = b"meta",
    cid: int = 11,
) -> Joined:
    """JoinGroup v5 with one protocol, "range"; blocks until the round ends."""
    send_join(sock, group, member_id, instance_id, session_ms, rebalance_ms, metadata, cid)
    return read_join(sock, cid)


def sync_group(
    sock: socket.socket,
    group: str,
    generation: int,
    member_id: str,
    instance_id: str | None,
    assignments: list[tuple[str, bytes]] | None = None,
    cid: int = 14,
) -> tuple[int, bytes]:
    """SyncGroup v3: (error code, assignment)."""
    assignments = assignments or []
    body = (
        _str(group)
        + struct.pack(">i", generation)
        + _str(member_id)
        + _str(instance_id)
        + struct.pack(">i", len(assignments))
        + b"".join(_str(m) + _bytes(a) for m, a in assignments)
    )
    r = _call(sock, API_SYNC_GROUP, 3, body, cid)
    r.i32()
    return r.i16(), r.bytes()


def heartbeat(
    sock: socket.socket,
    group: str,
    generation: int,
    member_id: str,
    instance_id: str | None,
    cid: int = 12,
) -> int:
    """Heartbeat v3: the error code."""
    body = _str(group) + struct.pack(">i", generation) + _str(member_id) + _str(instance_id)
    r = _call(sock, API_HEARTBEAT, 3, body, cid)
    r.i32()
    return r.i16()


def leave_group(
    sock: socket.socket, group: str, members: list[tuple[str, str | None]], cid: int = 13
) -> tuple[int, list[tuple[str, str | None, int]]]:
    """LeaveGroup v3 of a batch: (error code, [(member id, instance id, error code)])."""
    body = (
        _str(group)
        + struct.pack(">i", len(members))
        + b"".join(_str(m) + _str(i) for m, i in members)
    )
    r = _call(sock, API_LEAVE_GROUP, 3, body, cid)
    r.i32()
    error = r.i16()
    out = []
    for _ in range(r.i32()):
        out.append((r.str(), r.nullable_str(), r.i16()))
    return error, out


def offset_commit(
    sock: socket.socket,
    group: str,
    generation: int,
    member_id: str,
    instance_id: str | None,
    topic: str,
    partition: int,
    offset: int,
    cid: int = 8,
) -> int:
    """OffsetCommit v7 of one partition: its error code."""
    body = (
        _str(group)
        + struct.pack(">i", generation)
        + _str(member_id)
        + _str(instance_id)
        + struct.pack(">i", 1)
        + _str(topic)
        + struct.pack(">i", 1)
        + struct.pack(">iqi", partition, offset, -1)
        + _str("")
    )
    r = _call(sock, API_OFFSET_COMMIT, 7, body, cid)
    r.i32()
    assert r.i32() == 1
    r.str()
    assert r.i32() == 1
    r.i32()
    return r.i16()


@dataclass
class Described:
    error: int
    state: str
    protocol_type: str
    protocol: str
    # (member id, instance id, client id)
    members: list[tuple[str, str | None, str]]


def describe_group(sock: socket.socket, group: str, cid: int = 15) -> Described:
    """DescribeGroups v4 of one group."""
    body = struct.pack(">i", 1) + _str(group) + b"\x00"
    r = _call(sock, API_DESCRIBE_GROUPS, 4, body, cid)
    r.i32()
    assert r.i32() == 1
    error = r.i16()
    r.str()
    state, ptype, proto = r.str(), r.str(), r.str()
    members = []
    for _ in range(r.i32()):
        mid, inst, client = r.str(), r.nullable_str(), r.str()
        r.str()  # host
        r.bytes()
        r.bytes()
        members.append((mid, inst, client))
    return Described(error, state, ptype, proto, members)
