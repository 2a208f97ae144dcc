"""Topic configs as Kafka 4.x defines them: every name accepted (and only
those, spelled exactly, on the wire), values checked as Kafka checks them,
DescribeConfigs with types, sources and synonyms, IncrementalAlterConfigs
APPEND/SUBTRACT, and the settings ottla acts on: ``compression.type``
(broker and embedded), ``message.timestamp.type=LogAppendTime``,
``message.timestamp.before/after.max.ms`` and ``min.insync.replicas``."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import ottla
from helpers import log_files, read_values
from kafka_wire import _str, fetch, frame, produce_v8_answer, record_batch, response

pytest.importorskip("confluent_kafka")
import confluent_kafka as ck
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

INVALID_CONFIG = 40
INVALID_TIMESTAMP = 32
NOT_ENOUGH_REPLICAS = 19
API_DESCRIBE_CONFIGS = 32
TYPE_BOOLEAN, TYPE_STRING, TYPE_INT, TYPE_LONG, TYPE_DOUBLE, TYPE_LIST = 1, 2, 3, 5, 6, 7
DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5
ZSTD, LZ4 = 4, 3


def admin(b: ottla.Broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap_servers})


def create(b: ottla.Broker, name: str, config: dict[str, str], partitions: int = 1) -> None:
    a = admin(b)
    a.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(15)


def create_error(b: ottla.Broker, config: dict[str, str]) -> ck.KafkaError:
    with pytest.raises(ck.KafkaException) as e:
        create(b, "refused", config)
    err: ck.KafkaError = e.value.args[0]
    return err


def connect(b: ottla.Broker) -> socket.socket:
    host, port = b.bootstrap_servers.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


# ---------------------------------------------------------------- raw frames


def describe_configs_v3(
    sock: socket.socket, topic: str, synonyms: bool = True
) -> dict[str, tuple[str | None, int, int, list[tuple[str, str | None, int]]]]:
    """DescribeConfigs v3 of one topic: {name: (value, source, type, synonyms)}."""
    body = struct.pack(">i", 1) + struct.pack(">b", 2) + _str(topic) + struct.pack(">i", -1)
    body += struct.pack(">??", synonyms, False)
    sock.sendall(frame(API_DESCRIBE_CONFIGS, 3, 7, body))
    cid, data = response(sock)
    assert cid == 7
    at = 4  # throttle

    def i8() -> int:
        nonlocal at
        at += 1
        return int(struct.unpack(">b", data[at - 1 : at])[0])

    def i16() -> int:
        nonlocal at
        at += 2
        return int(struct.unpack(">h", data[at - 2 : at])[0])

    def i32() -> int:
        nonlocal at
        at += 4
        return int(struct.unpack(">i", data[at - 4 : at])[0])

    def string() -> str | None:
        nonlocal at
        n = i16()
        if n < 0:
            return None
        at += n
        return data[at - n : at].decode()

    assert i32() == 1
    err = i16()
    msg = string()
    assert err == 0, msg
    i8()
    string()
    out = {}
    for _ in range(i32()):
        name = string()
        value = string()
        i8()  # read only
        source = i8()
        i8()  # sensitive
        syns = []
        for _ in range(i32()):
            sname = string()
            svalue = string()
            syns.append((str(sname), svalue, i8()))
        ctype = i8()
        string()  # documentation
        out[str(name)] = (value, source, ctype, syns)
    return out


def produce_v8(
    sock: socket.socket, topic: str, records: bytes, acks: int = -1, correlation_id: int = 3
) -> tuple[int, int, int, list[tuple[int, str | None]], str | None]:
    """Produce v8 of partition 0: (error, base offset, log append time,
    record errors, error message)."""
    return produce_v8_answer(sock, topic, 0, records, acks, correlation_id)


def batch_headers(records: bytes) -> list[tuple[int, int, int]]:
    """(attributes, base timestamp, max timestamp) of each batch in ``records``."""
    out = []
    at = 0
    while at + 61 <= len(records):
        (n,) = struct.unpack(">i", records[at + 8 : at + 12])
        (attrs,) = struct.unpack(">h", records[at + 21 : at + 23])
        base_ts, max_ts = struct.unpack(">qq", records[at + 27 : at + 43])
        out.append((attrs, base_ts, max_ts))
        at += 12 + n
    return out


def stored_batches(b: ottla.Broker, topic: str) -> list[tuple[int, int, int]]:
    with connect(b) as s:
        _size, [(_p, err, _hw, records)] = fetch(s, topic, [(0, 0)], 1 << 24, 1 << 24)
    assert err == 0
    return batch_headers(records)


# ---------------------------------------------------------------- names and values


def test_every_kafka_topic_config_is_accepted_and_described(broker: ottla.Broker) -> None:
    config = {
        "compression.type": "lz4",
        "compression.lz4.level": "12",
        "message.timestamp.type": "LogAppendTime",
        "max.compaction.lag.ms": "86400000",
        "file.delete.delay.ms": "1000",
        "flush.messages": "100",
        "flush.ms": "1000",
        "preallocate": "true",
        "unclean.leader.election.enable": "false",
        "min.insync.replicas": "1",
        "segment.jitter.ms": "10",
        "local.retention.ms": "-2",
        "leader.replication.throttled.replicas": "0:0",
        "follower.replication.throttled.replicas": "*",
        "remote.log.copy.disable": "false",
        "min.cleanable.dirty.ratio": "0.25",
    }
    create(broker, "all", config)
    res = ConfigResource(ConfigResource.Type.TOPIC, "all")
    a = admin(broker)
    got = a.describe_configs([res])[res].result(15)
    for k, v in config.items():
        assert got[k].value == v, k
        assert got[k].source == ck.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value, k
    assert got["message.timestamp.after.max.ms"].is_default
    assert got["message.timestamp.after.max.ms"].value == "3600000"
    # Synonyms: the override, then the broker setting the default comes from.
    assert "compression.type" in got["compression.type"].synonyms
    retention = got["retention.ms"].synonyms
    assert "log.retention.hours" in retention
    # Types and sources on the wire (no client exposes the type).
    with connect(broker) as s:
        raw = describe_configs_v3(s, "all")
    assert raw["retention.ms"][1:3] == (DEFAULT_CONFIG, TYPE_LONG)
    assert raw["compression.type"][1:3] == (DYNAMIC_TOPIC_CONFIG, TYPE_STRING)
    assert raw["cleanup.policy"][2] == TYPE_LIST
    assert raw["preallocate"][2] == TYPE_BOOLEAN
    assert raw["min.insync.replicas"][2] == TYPE_INT
    assert raw["max.message.bytes"][2] == TYPE_INT
    assert raw["min.cleanable.dirty.ratio"][2] == TYPE_DOUBLE
    assert raw["compression.type"][3] == [
        ("compression.type", "lz4", DYNAMIC_TOPIC_CONFIG),
        ("compression.type", "producer", DEFAULT_CONFIG),
    ]
    assert raw["max.compaction.lag.ms"][3][1] == (
        "log.cleaner.max.compaction.lag.ms",
        "9223372036854775807",
        DEFAULT_CONFIG,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("retention_ms", "1000", "Unknown topic config name: retention_ms"),
        ("message.format.version", "3.0", "Unknown topic config name: message.format.version"),
        ("no.such.config", "1", "Unknown topic config name: no.such.config"),
        (
            "compression.type",
            "brotli",
            "Invalid value brotli for configuration compression.type: String must be one of: "
            "uncompressed, zstd, lz4, snappy, gzip, producer",
        ),
        (
            "message.timestamp.type",
            "BrokerTime",
            "Invalid value BrokerTime for configuration message.timestamp.type: "
            "String must be one of: CreateTime, LogAppendTime",
        ),
        (
            "max.compaction.lag.ms",
            "0",
            "Invalid value 0 for configuration max.compaction.lag.ms: Value must be at least 1",
        ),
        (
            "min.insync.replicas",
            "two",
            "Invalid value two for configuration min.insync.replicas: Not a number of type INT",
        ),
    ],
)
def test_kafka_refusals_in_kafkas_words(
    broker: ottla.Broker, name: str, value: str, message: str
) -> None:
    err = create_error(broker, {name: value})
    assert err.code() == ck.KafkaError.INVALID_CONFIG
    assert err.str() == message


def test_kafka_python_names_are_exact_on_the_wire(broker: ottla.Broker) -> None:
    kafka = pytest.importorskip("kafka")
    from kafka.admin import (
        ConfigResource as KConfigResource,
        ConfigResourceType,
        NewTopic as KNewTopic,
    )
    from kafka.errors import InvalidConfigurationError

    a = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        with pytest.raises(InvalidConfigurationError):
            a.create_topics([KNewTopic("kp", 1, 1, topic_configs={"segment_bytes": "4096"})])
        a.create_topics(
            [KNewTopic("kp", 1, 1, topic_configs={"message.timestamp.before.max.ms": "5000"})]
        )
        desc = a.describe_configs(
            [KConfigResource(ConfigResourceType.TOPIC, "kp")], config_filter="all"
        )
        [configs] = [by_name["kp"] for by_name in desc.values()]
        assert "5000" in repr(configs["message.timestamp.before.max.ms"])
        assert "file.delete.delay.ms" in configs and "compression.zstd.level" in configs
    finally:
        a.close()


# ---------------------------------------------------------------- APPEND / SUBTRACT


def test_incremental_append_and_subtract_on_list_configs(
    broker: ottla.Broker, data_dir: Path
) -> None:
    a = admin(broker)
    create(broker, "inc", {})

    def alter(*entries: ConfigEntry) -> None:
        res = ConfigResource(ConfigResource.Type.TOPIC, "inc", incremental_configs=list(entries))
        a.incremental_alter_configs([res])[res].result(15)

    def policy() -> str:
        return ottla.Admin(data_dir).describe_topic("inc").config["cleanup.policy"]

    # APPEND starts from the default (delete) and adds what is missing.
    alter(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND))
    assert policy() == "compact,delete"
    alter(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND))
    assert policy() == "compact,delete"
    alter(ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT))
    assert policy() == "compact"
    alter(
        ConfigEntry(
            "leader.replication.throttled.replicas",
            "0:0,1:0",
            incremental_operation=AlterConfigOpType.APPEND,
        )
    )
    assert (
        ottla.Admin(data_dir).describe_topic("inc").config["leader.replication.throttled.replicas"]
        == "0:0,1:0"
    )
    # Only LIST configs take them.
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        "inc",
        incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.APPEND)
        ],
    )
    with pytest.raises(ck.KafkaException) as e:
        a.incremental_alter_configs([res])[res].result(15)
    assert e.value.args[0].code() == ck.KafkaError.INVALID_CONFIG
    assert "Can't APPEND to key retention.ms because its type is not LIST." in str(e.value)
    assert policy() == "compact"


# ---------------------------------------------------------------- compression.type


def test_broker_recompresses_to_the_topics_codec(broker: ottla.Broker) -> None:
    create(broker, "zs", {"compression.type": "zstd"})
    create(broker, "asis", {})
    values = [b"compressible value %d " % i * 30 for i in range(200)]
    for topic in ["zs", "asis"]:
        p = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "compression.type": "lz4"})
        for v in values:
            p.produce(topic, v)
        assert p.flush(15) == 0
    assert {a & 7 for a, _, _ in stored_batches(broker, "zs")} == {ZSTD}
    assert {a & 7 for a, _, _ in stored_batches(broker, "asis")} == {LZ4}
    # What a consumer reads is what was sent.
    assert [v for _, _, v in read_values(broker.path, "zs")] == values


def test_uncompressed_topic_stores_batches_inflated(broker: ottla.Broker) -> None:
    create(broker, "plain", {"compression.type": "uncompressed"})
    with connect(broker) as s:
        err, *_ = produce_v8(s, "plain", record_batch([b"a" * 500] * 10, compression=2))
    assert err == 0
    assert {a & 7 for a, _, _ in stored_batches(broker, "plain")} == {0}
    assert [v for _, _, v in read_values(broker.path, "plain")] == [b"a" * 500] * 10


def test_kcat_reads_a_broker_compressed_topic(broker: ottla.Broker) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed")
    create(broker, "kz", {"compression.type": "gzip", "compression.gzip.level": "9"})
    lines = [f"line {i} " * 10 for i in range(50)]
    subprocess.run(
        [kcat, "-b", broker.bootstrap_servers, "-P", "-t", "kz", "-z", "none"],
        input=("\n".join(lines) + "\n").encode(),
        check=True,
        timeout=30,
    )
    assert {a & 7 for a, _, _ in stored_batches(broker, "kz")} == {1}
    out = subprocess.run(
        [kcat, "-b", broker.bootstrap_servers, "-C", "-t", "kz", "-o", "beginning", "-e", "-q"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.decode().splitlines() == lines


def test_embedded_producer_stores_batches_compressed(data_dir: Path) -> None:
    adm = ottla.Admin(data_dir)
    adm.create_topic("ez", config={"compression_type": "zstd", "compression.zstd.level": "5"})
    adm.create_topic("en", config={"compression.type": "producer"})
    values = [b"embedded compressible payload %d " % i * 40 for i in range(2000)]
    with ottla.Producer(data_dir) as p:
        for topic in ["ez", "en"]:
            for v in values[:-1]:
                p.send(topic, v)
            # A value large enough to take the direct (own-batch) path.
            p.send(topic, b"x" * 200_000)
        p.flush()
    sizes = {t: sum(f.stat().st_size for f in log_files(data_dir / f"{t}-0")) for t in ["ez", "en"]}
    assert sizes["ez"] * 5 < sizes["en"], sizes
    got = [v for _, _, v in read_values(data_dir, "ez")]
    assert got == [*values[:-1], b"x" * 200_000]
    for f in log_files(data_dir / "ez-0"):
        data = f.read_bytes()
        assert {a & 7 for a, _, _ in batch_headers(data)} == {ZSTD}


# ---------------------------------------------------------------- timestamps


def test_log_append_time_stamps_batches(broker: ottla.Broker) -> None:
    create(broker, "lat", {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    with connect(broker) as s:
        err, base, append_time, _errors, _msg = produce_v8(
            s, "lat", record_batch([b"old", b"older"])
        )
    after = int(time.time() * 1000)
    assert (err, base) == (0, 0)
    assert before <= append_time <= after
    [(attrs, _base_ts, max_ts)] = stored_batches(broker, "lat")
    assert attrs & 0x08 and max_ts == append_time
    # A CreateTime topic answers -1 and keeps the producer's timestamp.
    create(broker, "ct", {})
    with connect(broker) as s:
        err, _base, append_time, _errors, _msg = produce_v8(s, "ct", record_batch([b"x"]))
    assert (err, append_time) == (0, -1)
    assert not stored_batches(broker, "ct")[0][0] & 0x08


def test_clients_see_log_append_time(broker: ottla.Broker) -> None:
    create(broker, "latc", {"message.timestamp.type": "LogAppendTime"})
    p = ck.Producer({"bootstrap.servers": broker.bootstrap_servers})
    p.produce("latc", b"v", timestamp=1000)
    assert p.flush(15) == 0
    c = ck.Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "latc",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        c.subscribe(["latc"])
        deadline = time.monotonic() + 20
        msg = None
        while msg is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                msg = m
        assert msg is not None
        ts_type, ts = msg.timestamp()
        assert ts_type == ck.TIMESTAMP_LOG_APPEND_TIME
        assert ts > 1_000_000_000_000
    finally:
        c.close()
    kcat = shutil.which("kcat")
    if kcat is not None:
        args = ["-C", "-t", "latc", "-o", "beginning", "-e", "-q", "-J"]
        out = subprocess.run(
            [kcat, "-b", broker.bootstrap_servers, *args],
            capture_output=True,
            check=True,
            timeout=30,
        )
        rec = json.loads(out.stdout.decode().splitlines()[0])
        assert rec["tstype"] == "logappend" and rec["ts"] == ts


def test_timestamps_out_of_bounds_are_refused(broker: ottla.Broker) -> None:
    create(
        broker,
        "tb",
        {"message.timestamp.before.max.ms": "60000", "message.timestamp.after.max.ms": "60000"},
    )
    now = int(time.time() * 1000)
    p = ck.Producer({"bootstrap.servers": broker.bootstrap_servers})
    errors: list[ck.KafkaError] = []

    def report(err: ck.KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    p.produce("tb", b"old", timestamp=now - 3_600_000, on_delivery=report)
    assert p.flush(15) == 0
    assert [e.code() for e in errors] == [ck.KafkaError.INVALID_TIMESTAMP]
    # One batch each: Kafka refuses a batch whole.
    p.produce("tb", b"now", timestamp=now, on_delivery=report)
    assert p.flush(15) == 0
    p.produce("tb", b"future", timestamp=now + 3_600_000, on_delivery=report)
    assert p.flush(15) == 0
    assert [e.code() for e in errors] == [ck.KafkaError.INVALID_TIMESTAMP] * 2
    assert [v for _, _, v in read_values(broker.path, "tb")] == [b"now"]
    # Per record, as Kafka's LogValidator answers (Produce v8 record errors).
    import kafka.record.default_records as dr

    b = dr.DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 1 << 20)
    b.append(0, timestamp=now, key=None, value=b"ok", headers=[])
    b.append(1, timestamp=1000, key=None, value=b"ancient", headers=[])
    with connect(broker) as s:
        err, _base, _t, rec_errors, message = produce_v8(s, "tb", bytes(b.build()))
    assert err == INVALID_TIMESTAMP
    assert message == "One or more records have been rejected due to invalid timestamp"
    [(index, why)] = rec_errors
    assert index == 1 and why is not None and why.startswith("Timestamp 1000 of message")


# ---------------------------------------------------------------- min.insync.replicas


def test_acks_all_needs_min_insync_replicas(broker: ottla.Broker) -> None:
    create(broker, "isr", {"min.insync.replicas": "2"})
    with connect(broker) as s:
        err, _base, _t, _e, message = produce_v8(s, "isr", record_batch([b"a"]), acks=-1)
        assert err == NOT_ENOUGH_REPLICAS
        assert message is not None and "min.isr requirement of 2" in message
        err, base, _t, _e, _m = produce_v8(s, "isr", record_batch([b"b"]), acks=1, correlation_id=4)
        assert (err, base) == (0, 0)
    assert [v for _, _, v in read_values(broker.path, "isr")] == [b"b"]


def test_kcat_produces_and_reads_log_append_time_on_a_recompressed_topic(
    broker: ottla.Broker,
) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.skip("kcat is not installed")
    create(broker, "kl", {"message.timestamp.type": "LogAppendTime", "compression.type": "zstd"})
    before = int(time.time() * 1000)
    lines = [f"event {i} " * 8 for i in range(20)]
    subprocess.run(
        [kcat, "-b", broker.bootstrap_servers, "-P", "-t", "kl", "-z", "lz4"],
        input=("\n".join(lines) + "\n").encode(),
        check=True,
        timeout=30,
    )
    after = int(time.time() * 1000)
    for attrs, _base_ts, max_ts in stored_batches(broker, "kl"):
        assert attrs & 7 == ZSTD and attrs & 0x08
        assert before <= max_ts <= after
    args = ["-C", "-t", "kl", "-o", "beginning", "-e", "-q", "-J"]
    out = subprocess.run(
        [kcat, "-b", broker.bootstrap_servers, *args], capture_output=True, check=True, timeout=30
    )
    recs = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["payload"] for r in recs] == lines
    assert {r["tstype"] for r in recs} == {"logappend"}
    assert all(before <= r["ts"] <= after for r in recs)
