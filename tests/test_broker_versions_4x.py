"""The versions issue 13 raised to Kafka 4.x's, each newly served version's
new behaviour on the wire: Produce v13 names topics by id (UNKNOWN_TOPIC_ID
for an id no topic has), OffsetCommit v9, OffsetFetch v8-9 (several groups
at once), FindCoordinator v6 (a share key refused), JoinGroup v4+'s
MEMBER_ID_REQUIRED round trip (KIP-394), JoinGroup v9's skip_assignment for
a static leader back without a rebalance (KIP-814), LeaveGroup v5's reason,
DescribeGroups v6's GROUP_ID_NOT_FOUND (KIP-1043), InitProducerId v5 and
ApiVersions v4. Requests are built by hand (flexible versions: compact
strings, tagged fields) so each field is the one Kafka's schema has."""

from __future__ import annotations

import base64
import socket
import struct
import uuid
from pathlib import Path

import group_wire
import kafka_wire
import ottla
from helpers import read_values
from kafka_wire import uvarint

PRODUCE = 0
OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
API_VERSIONS = 18
INIT_PRODUCER_ID = 22
LIST_OFFSETS = 2

INVALID_REQUEST = 42
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
UNKNOWN_TOPIC_ID = 100


# ------------------------------------------------------------ encoding


cstr = kafka_wire.compact_str


def cbytes(b: bytes) -> bytes:
    return uvarint(len(b) + 1) + b


def carray(items: list[bytes]) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


NO_TAGS = uvarint(0)


Reader = kafka_wire.Reader


def call(sock: socket.socket, api: int, version: int, body: bytes, cid: int = 7) -> Reader:
    """A flexible request (header v2); the body of its answer after the
    response header v1 (v0 for ApiVersions, as Kafka)."""
    header = struct.pack(">hhi", api, version, cid) + kafka_wire._str("v4x") + NO_TAGS
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    got, data = kafka_wire.response(sock)
    assert got == cid
    r = Reader(data)
    if api != API_VERSIONS:
        r.tags()
    return r


def connect(b: ottla.Broker) -> socket.socket:
    return socket.create_connection((b.host, b.port), timeout=20)


def topic_id(data_dir: Path, topic: str) -> bytes:
    text = ottla.Admin(data_dir).describe_topic(topic).topic_id
    return base64.urlsafe_b64decode(text + "==")


# ------------------------------------------------------------ Produce v13


def produce_v13(sock: socket.socket, tid: bytes, values: list[bytes]) -> tuple[bytes, int, int]:
    """Produce v13, acks=1, one batch to partition 0 of the topic with id
    ``tid``: (the answer's topic id, error code, base offset)."""
    batch = kafka_wire.record_batch(values)
    partition = struct.pack(">i", 0) + cbytes(batch) + NO_TAGS
    topic = tid + carray([partition]) + NO_TAGS
    body = cstr(None) + struct.pack(">hi", 1, 10000) + carray([topic]) + NO_TAGS
    r = call(sock, PRODUCE, 13, body)
    assert r.count() == 1
    got_id = r.take(16)
    assert r.count() == 1
    assert r.i32() == 0
    error = r.i16()
    base = r.i64()
    r.i64()  # log append time
    r.i64()  # log start offset
    assert r.count() == 0  # record errors
    r.cstr()  # error message
    r.tags()
    r.tags()
    r.i32()  # throttle time
    r.tags()
    r.done()
    return got_id, error, base


def test_produce_v13_names_the_topic_by_id(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("by-id", partitions=1)
    tid = topic_id(data_dir, "by-id")
    with connect(broker) as s:
        assert produce_v13(s, tid, [b"a", b"b"]) == (tid, 0, 0)
        # Written to that topic: the next batch follows the first.
        assert produce_v13(s, tid, [b"c"]) == (tid, 0, 2)
    assert [v for _o, _k, v in read_values(data_dir, "by-id")] == [b"a", b"b", b"c"]


def test_produce_v13_to_an_unknown_id_is_unknown_topic_id(
    broker: ottla.Broker, data_dir: Path
) -> None:
    stranger = uuid.uuid4().bytes
    with connect(broker) as s:
        tid, error, base = produce_v13(s, stranger, [b"x"])
    assert (tid, error, base) == (stranger, UNKNOWN_TOPIC_ID, -1)
    # Nothing was created by id.
    assert ottla.Admin(data_dir).list_topics() == []


# ------------------------------------------- OffsetCommit v9, OffsetFetch v8-9


def offset_commit_v9(
    sock: socket.socket, group: str, topic: str, offsets: dict[int, int]
) -> list[int]:
    """A simple commit (no generation, no member): each partition's error."""
    parts = [
        struct.pack(">iqi", p, o, -1) + cstr("meta-" + str(o)) + NO_TAGS for p, o in offsets.items()
    ]
    body = (
        cstr(group)
        + struct.pack(">i", -1)
        + cstr("")
        + cstr(None)
        + carray([cstr(topic) + carray(parts) + NO_TAGS])
        + NO_TAGS
    )
    r = call(sock, OFFSET_COMMIT, 9, body)
    r.i32()
    assert r.count() == 1
    assert r.cstr() == topic
    errors = []
    for _ in range(r.count()):
        r.i32()
        errors.append(r.i16())
        r.tags()
    return errors


Fetched = dict[str, tuple[int, dict[str, list[tuple[int, int, str | None, int]]]]]


def offset_fetch(
    sock: socket.socket, version: int, groups: list[tuple[str, list[tuple[str, list[int]]] | None]]
) -> Fetched:
    """OffsetFetch v8 or v9 for several groups: {group: (error, {topic:
    [(partition, offset, metadata, error)]})}."""
    entries = []
    for group, topics in groups:
        member = cstr(None) + struct.pack(">i", -1) if version >= 9 else b""
        wanted = (
            uvarint(0)
            if topics is None
            else carray(
                [cstr(t) + carray([struct.pack(">i", p) for p in ps]) + NO_TAGS for t, ps in topics]
            )
        )
        entries.append(cstr(group) + member + wanted + NO_TAGS)
    body = carray(entries) + b"\x00" + NO_TAGS
    r = call(sock, OFFSET_FETCH, version, body)
    r.i32()
    out: Fetched = {}
    for _ in range(r.count()):
        answered = r.cstr()
        assert answered is not None
        got: dict[str, list[tuple[int, int, str | None, int]]] = {}
        for _ in range(r.count()):
            name = r.cstr()
            assert name is not None
            ps = []
            for _ in range(r.count()):
                p, off, _epoch = r.i32(), r.i64(), r.i32()
                meta = r.cstr()
                ps.append((p, off, meta, r.i16()))
                r.tags()
            r.tags()
            got[name] = ps
        out[answered] = (r.i16(), got)
        r.tags()
    r.tags()
    r.done()
    return out


def test_offset_fetch_v8_and_v9_answer_several_groups(broker: ottla.Broker, data_dir: Path) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=2)
    with connect(broker) as s:
        assert offset_commit_v9(s, "g1", "t", {0: 5, 1: 7}) == [0, 0]
        assert offset_commit_v9(s, "g2", "t", {1: 3}) == [0]
        for version in (8, 9):
            got = offset_fetch(s, version, [("g1", [("t", [0, 1])]), ("g2", None), ("g3", None)])
            assert got == {
                "g1": (0, {"t": [(0, 5, "meta-5", 0), (1, 7, "meta-7", 0)]}),
                # Null topics: every partition the group committed.
                "g2": (0, {"t": [(1, 3, "meta-3", 0)]}),
                # A group without offsets: nothing, no error.
                "g3": (0, {}),
            }
            # A partition never committed: -1, no error.
            got = offset_fetch(s, version, [("g2", [("t", [0])])])
            assert got == {"g2": (0, {"t": [(0, -1, "", 0)]})}


# ------------------------------------------------------------ FindCoordinator v6


def find_coordinator_v6(
    sock: socket.socket, key_type: int, key: str
) -> tuple[int, int, str | None]:
    """(node id, error code, error message) for one key."""
    body = struct.pack(">b", key_type) + carray([cstr(key)]) + NO_TAGS
    r = call(sock, FIND_COORDINATOR, 6, body)
    r.i32()
    assert r.count() == 1
    assert r.cstr() == key
    node = r.i32()
    r.cstr()
    r.i32()
    error = r.i16()
    message = r.cstr()
    r.tags()
    r.tags()
    r.done()
    return node, error, message


def test_find_coordinator_v6_finds_groups_and_refuses_share_keys(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        assert find_coordinator_v6(s, 0, "g") == (0, 0, None)
        node, error, message = find_coordinator_v6(s, 2, "g:" + "A" * 22 + ":0")
        assert (node, error) == (-1, INVALID_REQUEST)
        assert message is not None and "hare" in message


# ------------------------------------------------- JoinGroup v4+, v9, LeaveGroup v5


def test_a_new_dynamic_member_gets_member_id_required_then_joins_with_it(
    broker: ottla.Broker,
) -> None:
    g = "kip394-" + uuid.uuid4().hex[:6]
    with connect(broker) as s:
        first = group_wire.join_group(s, g, "", None)
        assert first.error == MEMBER_ID_REQUIRED
        assert first.member_id and first.generation == -1
        # The group has no member yet.
        assert group_wire.describe_group(s, g).members == []
        joined = group_wire.join_group(s, g, first.member_id, None)
        assert (joined.error, joined.generation) == (0, 1)
        assert joined.member_id == joined.leader == first.member_id
        # A member id the coordinator never handed out is unknown.
        assert group_wire.join_group(s, g, "made-up", None).error == group_wire.UNKNOWN_MEMBER_ID


def test_below_v4_a_new_member_joins_at_once(broker: ottla.Broker) -> None:
    g = "v3-" + uuid.uuid4().hex[:6]
    s16 = kafka_wire._str
    body = (
        s16(g)
        + struct.pack(">ii", 6000, 6000)
        + s16("")
        + s16("consumer")
        + struct.pack(">i", 1)
        + s16("range")
        + struct.pack(">i", 4)
        + b"meta"
    )
    with connect(broker) as s:
        s.sendall(kafka_wire.frame(JOIN_GROUP, 3, 5, body))
        cid, data = kafka_wire.response(s)
    assert cid == 5
    r = group_wire.Reader(data)
    r.i32()
    error, generation = r.i16(), r.i32()
    r.str()  # protocol
    leader, member = r.str(), r.str()
    assert (error, generation) == (0, 1)
    assert member and leader == member


def join_v9(
    sock: socket.socket, group: str, member_id: str, instance_id: str | None, reason: str
) -> tuple[int, int, str, bool, str, int]:
    """JoinGroup v9: (error, generation, leader, skip_assignment, member id,
    members listed)."""
    protocol = cstr("range") + cbytes(b"meta") + NO_TAGS
    body = (
        cstr(group)
        + struct.pack(">ii", 6000, 6000)
        + cstr(member_id)
        + cstr(instance_id)
        + cstr("consumer")
        + carray([protocol])
        + cstr(reason)
        + NO_TAGS
    )
    r = call(sock, JOIN_GROUP, 9, body)
    r.i32()
    error, generation = r.i16(), r.i32()
    r.cstr()  # protocol type
    r.cstr()  # protocol name
    leader = r.cstr() or ""
    skip = r.i8() == 1
    member = r.cstr() or ""
    members = r.count()
    for _ in range(members):
        r.cstr()
        r.cstr()
        r.cbytes()
        r.tags()
    r.tags()
    r.done()
    return error, generation, leader, skip, member, members


def leave_v5(sock: socket.socket, group: str, member_id: str, reason: str) -> tuple[int, list[int]]:
    member = cstr(member_id) + cstr(None) + cstr(reason) + NO_TAGS
    r = call(sock, LEAVE_GROUP, 5, cstr(group) + carray([member]) + NO_TAGS)
    r.i32()
    error = r.i16()
    codes = []
    for _ in range(r.count()):
        r.cstr()
        r.cstr()
        codes.append(r.i16())
        r.tags()
    return error, codes


def test_join_group_v9_and_leave_group_v5_with_reasons(broker: ottla.Broker) -> None:
    g = "v9-" + uuid.uuid4().hex[:6]
    with connect(broker) as s:
        error, _gen, _leader, _skip, member, _n = join_v9(s, g, "", None, "first start")
        assert error == MEMBER_ID_REQUIRED and member
        error, gen, leader, skip, got, n = join_v9(s, g, member, None, "member id given")
        assert (error, gen, leader, skip, got, n) == (0, 1, member, False, member, 1)
        assert leave_v5(s, g, member, "shutting down") == (0, [0])
        assert group_wire.describe_group(s, g).members == []
        # A pending member (MEMBER_ID_REQUIRED, never joined) may leave too.
        error, *_rest, pending, _n = join_v9(s, g, "", None, "again")
        assert error == MEMBER_ID_REQUIRED
        assert leave_v5(s, g, pending, "changed my mind") == (0, [0])
        assert join_v9(s, g, pending, None, "back")[0] == group_wire.UNKNOWN_MEMBER_ID


def test_a_static_leader_back_without_a_rebalance_skips_the_assignment(
    broker: ottla.Broker,
) -> None:
    g = "kip814-" + uuid.uuid4().hex[:6]
    with connect(broker) as s1:
        error, gen, leader, skip, member, n = join_v9(s1, g, "", "w-1", "start")
        # A static member needs no MEMBER_ID_REQUIRED round trip.
        assert (error, gen, leader, skip, n) == (0, 1, member, False, 1)
        assert group_wire.sync_group(s1, g, gen, member, "w-1", [(member, b"a")]) == (0, b"a")
    with connect(broker) as s2:
        error, gen2, leader, skip, new_id, n = join_v9(s2, g, "", "w-1", "restarted")
    # Same generation, the new id leads, sees the members, keeps the assignment.
    assert (error, gen2, leader, skip, n) == (0, gen, new_id, True, 1)
    assert new_id != member


# ------------------------------------------------------------ DescribeGroups v6


def describe_v6(sock: socket.socket, group: str) -> tuple[int, str | None, str | None]:
    """(error, error message, state) of one group."""
    r = call(sock, DESCRIBE_GROUPS, 6, carray([cstr(group)]) + b"\x00" + NO_TAGS)
    r.i32()
    assert r.count() == 1
    error, message = r.i16(), r.cstr()
    assert r.cstr() == group
    state = r.cstr()
    return error, message, state


def test_describe_groups_v6_says_an_unknown_group_is_not_found(
    broker: ottla.Broker, data_dir: Path
) -> None:
    ottla.Admin(data_dir).create_topic("t", partitions=1)
    with connect(broker) as s:
        assert describe_v6(s, "nobody") == (
            GROUP_ID_NOT_FOUND,
            "Group nobody not found.",
            "Dead",
        )
        assert offset_commit_v9(s, "known", "t", {0: 1}) == [0]
        assert describe_v6(s, "known") == (0, None, "Empty")
        # Below v6 a Dead group carries no error, as before.
        assert group_wire.describe_group(s, "nobody").state == "Dead"


# ------------------------------------------------- InitProducerId v5, ApiVersions v4


def test_init_producer_id_v5_and_api_versions_v4(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        body = cstr(None) + struct.pack(">iqh", 60000, -1, -1) + NO_TAGS
        r = call(s, INIT_PRODUCER_ID, 5, body)
        r.i32()
        assert r.i16() == 0
        assert r.i64() >= 0
        assert r.i16() == 0
        r = call(s, API_VERSIONS, 4, cstr("ottla-test") + cstr("1.0") + NO_TAGS)
        assert r.i16() == 0
        ranges = {}
        for _ in range(r.count()):
            key, lo, hi = r.i16(), r.i16(), r.i16()
            r.tags()
            ranges[key] = (lo, hi)
    assert ranges[PRODUCE] == (3, 13)
    assert ranges[API_VERSIONS] == (0, 4)
    assert ranges[JOIN_GROUP] == (0, 9)


# ------------------------------------------------------- ListOffsets v8-10


def list_offsets_flexible(
    sock: socket.socket, version: int, topic: str, timestamps: list[int]
) -> list[tuple[int, int, int, int]]:
    """ListOffsets (v6+) of partition 0 once per timestamp spec:
    [(error, timestamp, offset, leader epoch)]."""
    parts = [struct.pack(">iiq", 0, -1, ts) + NO_TAGS for ts in timestamps]
    body = struct.pack(">ib", -1, 0) + carray([cstr(topic) + carray(parts) + NO_TAGS])
    if version >= 10:
        body += struct.pack(">i", 5000)  # timeout_ms
    r = call(sock, LIST_OFFSETS, version, body + NO_TAGS)
    r.i32()  # throttle
    assert r.count() == 1 and r.cstr() == topic
    out = []
    for _ in range(r.count()):
        assert r.i32() == 0
        out.append((r.i16(), r.i64(), r.i64(), r.i32()))
        r.tags()
    r.tags()
    r.tags()
    r.done()
    return out


def test_list_offsets_v8_to_v10_answer_the_tiered_specs_without_remote_storage(
    data_dir: Path,
) -> None:
    """Earliest-local (-4, v8+) is the log start, as earliest; latest-tiered
    (-5, v9+) has no offset (-1) without remote storage, as Kafka answers;
    v10 carries a timeout. The log start moved by DeleteRecords shows."""
    admin = ottla.Admin(data_dir)
    admin.create_topic("tiers", partitions=1)
    with ottla.Producer(data_dir) as p:
        p.send_many("tiers", [b"v"] * 10, partition=0).wait()
    admin.delete_records({("tiers", 0): 4})
    with ottla.Broker(data_dir) as b, connect(b) as s:
        for v in (8, 9, 10):
            earliest, local, latest = list_offsets_flexible(s, v, "tiers", [-2, -4, -1])
            assert earliest == (0, -1, 4, 0)
            assert local == earliest
            assert latest[:3] == (0, -1, 10)
        (tiered,) = list_offsets_flexible(s, 9, "tiers", [-5])
        assert tiered == (0, -1, -1, -1)
        (tiered,) = list_offsets_flexible(s, 10, "tiers", [-5])
        assert tiered == (0, -1, -1, -1)
