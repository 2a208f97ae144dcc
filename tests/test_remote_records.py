"""The remote consumer's Records and positions (issue 16, the speed part):
``Record``s made in bulk from librdkafka's messages, read from them lazily
without deserializers, and positions kept per handed-out batch, computed
when something asks: a commit or ``position()`` after N records of an
iteration covers exactly those N, whatever the loop body does."""

from __future__ import annotations

import copy
import gc
import pickle
import sys
import weakref
from typing import Any

import pytest

import ottla
from ottla import _core

pytest.importorskip("confluent_kafka")


class FakeMessage:
    """What the consumer reads of a confluent-kafka ``Message``: its methods."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self._t, self._p, self._o, self._v, self._k, self._h = (
            topic, partition, offset, value, key, headers,
        )  # fmt: skip
        self.calls = 0

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        self.calls += 1
        return (1, 1_700_000_000_000 + self._o)

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._h


def test_records_from_messages_behave_as_records() -> None:
    msgs: list[Any] = [
        FakeMessage("t", 0, 5, b"v", b"k", [("h", b"1"), ("n", None)]),
        FakeMessage("t", 1, 7, None),
    ]
    recs, err = _core.remote_records(msgs)
    assert err is None and len(recs) == 2
    a, b = recs
    assert type(a) is ottla.Record
    assert (a.topic, a.partition, a.offset, a.timestamp) == ("t", 0, 5, 1_700_000_000_005)
    assert (a.key, a.value, a.headers) == (b"k", b"v", [("h", b"1"), ("n", None)])
    assert a.topic_partition == ottla.TopicPartition("t", 0)
    # A fresh list each time: a Record is immutable.
    a.headers.append(("x", b""))
    assert a.headers == [("h", b"1"), ("n", None)]
    assert (b.key, b.value, b.headers) == (None, None, [])
    by_hand = ottla.Record("t", 0, 5, 1_700_000_000_005, b"k", b"v", [("h", b"1"), ("n", None)])
    assert repr(a) == repr(by_hand)
    again = pickle.loads(pickle.dumps(a))
    assert repr(again) == repr(a) and type(again) is ottla.Record
    assert copy.copy(a) is a and repr(copy.deepcopy(b)) == repr(b)
    # Fields are read when asked for: no timestamp() call until then.
    m = FakeMessage("t", 0, 9, b"z")
    (r,), _ = _core.remote_records([m])
    assert m.calls == 0 and r.value == b"z" and m.calls == 0
    assert r.timestamp == 1_700_000_000_009 and m.calls == 1
    # Without deserializers nothing can make a cycle: the GC does not track them.
    assert not gc.is_tracked(a)


def test_records_from_messages_with_deserializers() -> None:
    msgs: list[Any] = [FakeMessage("t", 0, i, str(i).encode(), b"k") for i in range(4)]
    recs, err = _core.remote_records(msgs, bytes.decode, int)
    assert err is None
    assert [(r.key, r.value) for r in recs] == [("k", i) for i in range(4)]
    assert all(gc.is_tracked(r) for r in recs)
    # A deserializer that raises stops the batch there: the records before
    # it, and its exception.
    msgs[2]._v = b"not a number"
    recs, err = _core.remote_records(msgs, None, int)
    assert [r.value for r in recs] == [0, 1] and isinstance(err, ValueError)
    with pytest.raises(ValueError):
        _core.remote_record(msgs[2], None, int)
    assert _core.remote_record(msgs[3], None, int).value == 3


def _fill(servers: str, topic: str, per_partition: int, partitions: int) -> None:
    ottla.Admin(bootstrap_servers=servers).create_topic(topic, partitions=partitions)
    with ottla.Producer(bootstrap_servers=servers) as p:
        for part in range(partitions):
            for i in range(per_partition):
                p.send(topic, f"{part}-{i}".encode(), partition=part)
        p.flush(30)


def _consumer(servers: str, topic: str, group: str) -> ottla.Consumer:
    return ottla.Consumer(
        topic,
        bootstrap_servers=servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
    )


@pytest.mark.parametrize("taken", [25, 100])
def test_commit_after_n_records_of_a_batch_covers_those_n(broker: ottla.Broker, taken: int) -> None:
    """Iteration makes a batch's records as the loop asks for them; the
    loop stops inside the batch (120 records buffered)."""
    servers = broker.bootstrap_servers
    topic = f"exact{taken}"
    _fill(servers, topic, 40, 3)
    c = _consumer(servers, topic, f"g1-{taken}")
    seen: list[ottla.Record] = []
    it = iter(c)
    # Wait until a whole fetch is buffered, so the batch being handed out
    # holds more than what the loop takes.
    seen.append(next(it))
    for r in it:
        seen.append(r)
        if len(seen) == taken:
            break
    last: dict[int, int] = {}
    for r in seen:
        last[r.partition] = r.offset + 1
    for part, pos in last.items():
        assert c.position(ottla.TopicPartition(topic, part)) == pos
    c.commit()
    for part in range(3):
        assert c.committed(ottla.TopicPartition(topic, part)) == last.get(part)
    # What was not handed out comes next, once, by whatever reads next.
    rest = [r.value for recs in c.poll(timeout_ms=5000, max_records=200).values() for r in recs]
    rest += [r.value for r in c]
    got = sorted([r.value for r in seen] + rest)
    assert got == sorted(f"{p}-{i}".encode() for p in range(3) for i in range(40))
    c.close()


def test_seek_pause_and_commit_in_the_loop_body(broker: ottla.Broker) -> None:
    servers = broker.bootstrap_servers
    _fill(servers, "body", 30, 2)
    c = _consumer(servers, "body", "g2")
    zero = ottla.TopicPartition("body", 0)
    out: list[tuple[int, int]] = []
    sought = False
    paused: ottla.TopicPartition | None = None
    pos_paused = at_pause = -1
    for r in c:
        out.append((r.partition, r.offset))
        if not sought and len(out) == 5:
            # Read partition 0 again from 2: the batch's other records of it
            # are not handed out.
            sought = True
            c.seek(zero, 2)
        elif paused is None and len(out) == 8:
            # In the middle of the batch the seek started: that batch's
            # other records of this partition are not handed out either.
            paused = r.topic_partition
            c.pause(paused)
            at_pause = len(out)
            pos_paused = r.offset + 1
        elif paused is not None and len(out) == at_pause + 2:
            c.commit()
            assert c.committed(paused) == c.position(paused) == pos_paused
    assert paused is not None
    assert all(p != paused.partition for p, _ in out[at_pause:]), out
    # Partition 0 in order from 2 after the seek, without gaps or repeats.
    zeros = [o for p, o in out[5:] if p == 0]
    assert zeros == list(range(2, 2 + len(zeros)))
    c.resume(paused)
    after = [r.offset for r in c if r.partition == paused.partition]
    assert after == list(range(pos_paused, 30))
    c.close()


def test_batch_checks_read_real_messages_and_stand_ins() -> None:
    """``first_error`` and ``message_values``, the consumer's per-batch
    calls, on confluent-kafka's own ``Message`` (its C functions called
    directly) and on any object with the same methods (called by name)."""
    ck = pytest.importorskip("confluent_kafka")
    real = [ck.Message(topic="t", partition=0, offset=i, value=str(i).encode()) for i in range(3)]
    real.append(ck.Message(topic="t", partition=0, offset=3, value=None, key=b"k"))
    broken = ck.Message(topic="t", error=ck.KafkaError(ck.KafkaError._PARTITION_EOF))
    assert _core.first_error(real) == -1
    assert _core.first_error([*real, broken]) == 4
    assert _core.first_error([broken, *real]) == 0
    assert _core.first_error([]) == -1
    assert _core.message_values(real) == [b"0", b"1", b"2", None]
    fake: list[Any] = [FakeMessage("t", 0, i, str(i).encode()) for i in range(3)]
    assert _core.message_values(fake) == [b"0", b"1", b"2"]
    with pytest.raises(AttributeError):  # a stand-in without error()
        _core.first_error(fake)
    # The direct calls were set up (a confluent-kafka whose Message differs
    # would silently take the slower path: this says so).
    assert _core.message_fields_direct()


def test_batch_calls_survive_a_method_that_empties_the_batch() -> None:
    """The batch calls read each message without taking a reference
    (kafka_message.rs, ``borrowed_item``) and take one before any Python
    code runs: a subclass's method that empties the very list being read
    ends the walk there, and what was read stays valid."""
    ck = pytest.importorskip("confluent_kafka")
    batch: list[Any] = []

    class Emptying(ck.Message):  # type: ignore[misc,name-defined]
        def error(self) -> None:
            batch.clear()
            return None

        def value(self) -> bytes:
            batch.clear()
            return b"from-" + bytes(super().value())

        def topic(self) -> str:
            batch.clear()
            return str(super().topic())

    def fill() -> list[Any]:
        batch[:] = [
            ck.Message(topic="t", offset=0, value=b"a" * 50),
            Emptying(topic="t", offset=1, value=b"b" * 50),
            ck.Message(topic="t", offset=2, value=b"c" * 50),
        ]
        return batch

    assert _core.first_error(fill()) == -1
    assert _core.message_values(fill()) == [b"a" * 50, b"from-" + b"b" * 50]
    records = _core.remote_records(fill())[0]
    assert [(r.topic, r.offset, r.value) for r in records] == [
        ("t", 0, b"a" * 50),
        ("t", 1, b"from-" + b"b" * 50),
    ]
    gc.collect()
    assert [r.value for r in records] == [b"a" * 50, b"from-" + b"b" * 50]


def test_fields_read_from_a_messages_slots_are_what_its_methods_return() -> None:
    """A ``Message``'s topic, key, value and error are read from where it
    keeps them (found once at load, kafka_message.rs): the same objects its
    methods return, ``None`` for a field it has none of, and a subclass of
    ``Message`` is asked through its methods (it may override them)."""
    ck = pytest.importorskip("confluent_kafka")
    err = ck.KafkaError(ck.KafkaError._PARTITION_EOF)
    full = ck.Message(topic="tp", partition=1, offset=2, key=b"k" * 3, value=b"v" * 5, error=err)
    bare = ck.Message()
    assert _core.first_error([full]) == 0 and _core.first_error([bare]) == -1
    assert _core.message_values([full, bare]) == [b"vvvvv", None]
    assert _core.message_values([full])[0] is full.value()
    r = _core.remote_records([ck.Message(topic="tp", key=b"kk", value=b"vv")])[0][0]
    assert (r.topic, r.key, r.value) == ("tp", b"kk", b"vv")
    none = _core.remote_records([ck.Message(topic="tp")])[0][0]
    assert (none.key, none.value) == (None, None)

    class Loud(ck.Message):  # type: ignore[misc,name-defined]
        def value(self) -> bytes:
            return b"overridden"

    assert _core.message_values([Loud(topic="t", value=b"v")]) == [b"overridden"]
    assert _core.remote_records([Loud(topic="t", value=b"v")])[0][0].value == b"overridden"
    # Many records made and freed: the references taken from the slots are
    # balanced (a missing incref would free a value still in use).
    values = [bytes([i % 256]) * 40 for i in range(2000)]
    msgs = [ck.Message(topic="t", partition=0, offset=i, value=v) for i, v in enumerate(values)]
    before = [sys.getrefcount(v) for v in values[:5]]
    for _ in range(3):
        recs = _core.remote_records(msgs)[0]
        assert [x.value for x in recs] == values
        del recs
    assert [sys.getrefcount(v) for v in values[:5]] == before


def test_records_made_by_the_types_allocator_behave_as_any_record() -> None:
    """Records are made by ``Record``'s own allocator, the value moved into
    place (record_alloc.rs; its layout checks passed here, or this says
    so); such a record is freed when dropped, is left out of the cyclic GC
    without deserializers and in it with one, so a cycle through its value
    is collected."""
    ck = pytest.importorskip("confluent_kafka")
    assert _core.records_allocated_directly()

    class Box:
        def __init__(self, raw: bytes) -> None:
            self.raw = raw
            self.record: Any = None

    m = ck.Message(topic="t", partition=0, offset=4, key=b"k", value=b"v")
    plain = _core.remote_records([m])[0][0]
    assert not gc.is_tracked(plain)
    assert (plain.topic, plain.offset, plain.key, plain.value) == ("t", 4, b"k", b"v")
    assert repr(pickle.loads(pickle.dumps(plain))) == repr(plain)
    boxed = _core.remote_records([m], None, Box)[0][0]
    assert gc.is_tracked(boxed) and boxed.value.raw == b"v"
    boxed.value.record = boxed  # record -> box -> record
    gone = weakref.ref(boxed.value)
    del boxed
    gc.collect()
    assert gone() is None
    # Made and dropped many times: nothing kept (the type's reference count
    # and the message's stay where they were).
    before = (sys.getrefcount(ottla.Record), sys.getrefcount(m))
    for _ in range(1000):
        _core.remote_records([m, m, m])
    assert (sys.getrefcount(ottla.Record), sys.getrefcount(m)) == before


def test_records_freed_by_their_own_dealloc_give_back_every_reference() -> None:
    """``Record``'s ``tp_dealloc`` is record_alloc.rs's own, and reference
    counts change in place (refcount.rs; their checks passed on this
    CPython, or this says so). Every way a record is made (from messages,
    with deserializers and headers, by hand) gives back each reference it
    held when freed, ``None``'s included, and a value's ``__del__`` runs
    when its record goes."""
    ck = pytest.importorskip("confluent_kafka")
    assert _core.records_freed_directly() and _core.refcounts_in_place()
    key, value, topic = b"k" * 9, b"v" * 9, "t-" + "x" * 9
    m = ck.Message(topic=topic, partition=1, offset=3, key=key, value=value,
                   headers=[("h", b"1")], timestamp=(1, 5))  # fmt: skip
    bare = ck.Message(topic=topic, partition=0, offset=1)  # key and value None
    hand_headers = [("a", b"2")]
    watched = (key, value, topic, m, bare, hand_headers, None, ottla.Record)

    def make_and_free(times: int) -> None:
        for _ in range(times):
            recs = _core.remote_records([m, bare, m])[0]
            deserialized = _core.remote_records([m, bare], bytes, bytes)[0]
            by_hand = ottla.Record(topic, 1, 2, 3, key, None, hand_headers)
            del recs, deserialized, by_hand

    make_and_free(10)  # whatever the first calls cache
    before = [sys.getrefcount(x) for x in watched]
    make_and_free(2000)
    assert [sys.getrefcount(x) for x in watched] == before
    recs = _core.remote_records([m, bare], bytes, bytes)[0]
    assert recs[0].headers == [("h", b"1")] and recs[1].value is None

    freed: list[int] = []

    class Noted:
        def __init__(self, raw: bytes) -> None:
            self.raw = raw

        def __del__(self) -> None:
            freed.append(len(self.raw))

    noted = _core.remote_records([m, m], None, Noted)[0]
    assert not freed
    del noted[0]
    assert freed == [len(value)]
    noted.clear()
    assert freed == [len(value)] * 2


def test_freed_records_memory_is_kept_and_made_a_whole_new_record() -> None:
    """A freed record's memory is kept for the next record (record_alloc.rs's
    free list, at most 512): one made from it is a new object (one
    reference, its type's reference taken again, tracked by the cyclic GC
    only if deserialized) with its own fields, and the list stays within
    its bound."""
    ck = pytest.importorskip("confluent_kafka")
    assert _core.records_freed_directly() and _core.refcounts_in_place()
    m = ck.Message(topic="t", partition=2, offset=9, key=b"k", value=b"v")
    recs = _core.remote_records([m] * 600)[0]
    addresses = {id(r) for r in recs}
    type_refs = sys.getrefcount(ottla.Record)
    del recs
    # Counted outside the asserts (pytest's rewriting keeps what they name).
    after = sys.getrefcount(ottla.Record)
    assert _core.records_kept() == 512 and after == type_refs - 600
    again = _core.remote_records([m] * 3, None, bytes)[0]
    after = sys.getrefcount(ottla.Record)
    counts = [sys.getrefcount(r) for r in again]
    assert _core.records_kept() == 509 and after == type_refs - 597
    assert {id(r) for r in again} <= addresses
    assert counts == [3, 3, 3]  # the list's, the loop's, the call's
    assert all(gc.is_tracked(r) for r in again)
    fields = [(r.topic, r.partition, r.offset, r.key, r.value) for r in again]
    assert fields == [("t", 2, 9, b"k", b"v")] * 3
    plain = next(_core.remote_record_iter([m, m], 1, 2))
    assert not gc.is_tracked(plain) and _core.records_kept() == 508
    assert (plain.offset, plain.value) == (9, b"v")
    del again, plain
    assert _core.records_kept() == 512


def test_record_iters_make_the_records_of_a_range() -> None:
    """``remote_record_iter(messages, start, stop)`` (iteration's batch)
    makes the records of ``messages[start:stop]`` one at a time as they are
    handed out, through ottla's own ``tp_iternext`` (shown sound on this
    CPython), and behaves as a list's iterator for the consumer's
    ``_settle``: ``__length_hint__`` is what is left, ``__setstate__(k)``
    moves it to the range's ``k``-th message. A message it cannot read
    raises from ``next()``; a list that shrinks ends it."""
    ck = pytest.importorskip("confluent_kafka")
    assert _core.record_iter_direct()
    msgs = [ck.Message(topic="t", partition=0, offset=i, value=b"%d" % i) for i in range(10)]
    it = _core.remote_record_iter(msgs, 3, 7)
    assert iter(it) is it and it.__length_hint__() == 4
    first = next(it)
    assert (first.offset, first.value, it.__length_hint__()) == (3, b"3", 3)
    # ``__next__`` by name is PyO3's wrapper of the same function (the path
    # where ottla's own ``tp_iternext`` could not be shown sound).
    assert it.__next__().offset == 4
    assert [r.offset for r in it] == [5, 6]
    assert it.__length_hint__() == 0 and next(it, None) is None
    assert [r.value for r in _core.remote_record_iter(msgs, 8, 64)] == [b"8", b"9"]
    assert list(_core.remote_record_iter(msgs, 10, 74)) == []
    assert list(_core.remote_record_iter(msgs, 5, 2)) == []
    it = _core.remote_record_iter(msgs, 2, 8)
    next(it)
    it.__setstate__(4)  # the range's 4th: message 6
    assert [r.offset for r in it] == [6, 7]
    it.__setstate__(1)
    assert next(it).offset == 3
    it.__setstate__(6)
    assert list(it) == []
    bad = _core.remote_record_iter([msgs[0], object(), msgs[2]], 0, 3)
    assert next(bad).offset == 0
    with pytest.raises(AttributeError):
        next(bad)
    assert next(bad).offset == 2
    shrinking = list(msgs)
    it = _core.remote_record_iter(shrinking, 0, 10)
    next(it)
    del shrinking[3:]
    assert [r.offset for r in it] == [1, 2]


def test_remote_records_hold_topic_key_and_value_as_fields() -> None:
    """A remote record's topic, key and value are plain fields (member
    descriptors), taken from the message when the record is made; the
    other fields are read from the message when asked."""
    ck = pytest.importorskip("confluent_kafka")
    m = ck.Message(topic="t", partition=2, offset=9, key=b"k", value=b"v", headers=[("h", b"1")])
    r = _core.remote_records([m])[0][0]
    for name in ("topic", "key", "value"):
        assert type(vars(ottla.Record)[name]).__name__ == "member_descriptor"
    assert (r.topic, r.key, r.value, r.partition, r.offset) == ("t", b"k", b"v", 2, 9)
    assert r.headers == [("h", b"1")]
    assert r.value is m.value() and r.topic is m.topic()
    assert not gc.is_tracked(r)
    none = _core.remote_records([ck.Message(topic="t", partition=0, offset=1)])[0][0]
    assert (none.key, none.value) == (None, None)
    with pytest.raises(AttributeError):
        r.value = b"other"  # type: ignore[misc]


def test_reads_take_librdkafka_messages_in_small_batches(broker: ottla.Broker) -> None:
    """Iteration and ``poll_values`` take at most 500 messages a
    ``consume()`` call (the same work costs more CPU per record in bigger
    batches), and hand out every record once, whatever they asked for."""
    servers = broker.bootstrap_servers
    _fill(servers, "small", 1500, 2)
    asked: list[int] = []

    class Counting:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def consume(self, num_messages: int, timeout: float) -> Any:
            asked.append(num_messages)
            return self._inner.consume(num_messages, timeout)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    c = _consumer(servers, "small", "g-small")
    inner = c._c  # type: ignore[attr-defined]
    c._c = Counting(inner)  # type: ignore[attr-defined]
    try:
        values: list[Any] = c.poll_values(max_records=2000, timeout_ms=10_000)
        while len(values) < 2000:
            got = c.poll_values(max_records=2000 - len(values), timeout_ms=5000)
            assert got, "no records"
            values += got
        for r in c:
            values.append(r.value)
            if len(values) == 3000:
                break
        assert sorted(values) == sorted(f"{p}-{i}".encode() for p in range(2) for i in range(1500))
        assert asked and max(asked) <= 500
        c.commit()
        for part in range(2):
            assert c.committed(ottla.TopicPartition("small", part)) == 1500
    finally:
        c._c = inner  # type: ignore[attr-defined]
        c.close()
