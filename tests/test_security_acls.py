"""ACLs (issue 18): Kafka's StandardAuthorizer semantics checked with real
clients over SASL (confluent-kafka, kafka-python), CreateAcls/DescribeAcls/
DeleteAcls over the wire, ``ottla acls`` on the directory of a running
broker, and authorized operations in raw frames."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import confluent_kafka
import kafka
import kafka.errors
import pytest
from confluent_kafka import KafkaError, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

import kafka_wire
import ottla
import security_helpers as sh
from helpers import CLI_CODE, Spawn, wait_until
from ottla.admin import AclBinding as OttlaAcl, AclBindingFilter as OttlaFilter

pytestmark = pytest.mark.timeout(90)

USERS = ("admin", "alice", "bob")
LISTENER = "SASL_PLAINTEXT"
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31
SECURITY_DISABLED = 54
# A filter's "any principal" and "any host" (None; typed str in the stubs).
ANY_PRINCIPAL = cast(str, None)
ANY_HOST = cast(str, None)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    for u in USERS:
        sh.add_user(d, u, f"{u}-pw")
    return d


def acl_broker(data: Path, **kwargs: Any) -> ottla.Broker:
    """SASL_PLAINTEXT (and a PLAINTEXT listener for raw frames), the
    standard authorizer, ``User:admin`` a super user."""
    kwargs.setdefault("super_users", ["User:admin"])
    return ottla.Broker(
        data,
        listeners=[f"{LISTENER}://127.0.0.1:0", "PLAINTEXT://127.0.0.1:0"],
        authorizer="standard",
        **kwargs,
    )


def conf(b: ottla.Broker, user: str, **extra: Any) -> dict[str, Any]:
    return sh.confluent_config(
        b,
        LISTENER,
        **{
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": f"{user}-pw",
            **extra,
        },
    )


def admin_client(b: ottla.Broker, user: str = "admin") -> AdminClient:
    return AdminClient(conf(b, user))


def create_topics(b: ottla.Broker, *names: str) -> None:
    a = admin_client(b)
    futs = a.create_topics([NewTopic(n, 1) for n in names], request_timeout=10)
    for f in futs.values():
        f.result(15)


def grant(a: AdminClient, *bindings: AclBinding) -> None:
    for f in a.create_acls(list(bindings), request_timeout=10).values():
        f.result(15)


def topic_acl(
    name: str,
    op: AclOperation,
    principal: str = "User:alice",
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    rtype: ResourceType = ResourceType.TOPIC,
) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, "*", op, permission)


def deliver(producer: confluent_kafka.Producer, topic: str, value: bytes) -> KafkaError | None:
    results: list[KafkaError | None] = []
    try:
        producer.produce(topic, value, on_delivery=lambda err, msg: results.append(err))
    except confluent_kafka.KafkaException as e:
        # A refusal librdkafka already knows from the topic's metadata.
        err: KafkaError = e.args[0]
        return err
    producer.flush(20)
    assert len(results) == 1
    return results[0]


def code(err: KafkaError | None) -> int | None:
    return None if err is None else int(err.code())


def test_principal_may_write_topic_a_not_b(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "a", "b")
        # DESCRIBE on b lets alice see it, so the refusal is Produce's own.
        grant(
            admin_client(b),
            topic_acl("a", AclOperation.WRITE),
            topic_acl("b", AclOperation.DESCRIBE),
        )
        p = confluent_kafka.Producer(conf(b, "alice"))
        assert deliver(p, "a", b"yes") is None
        assert code(deliver(p, "b", b"no")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # bob has no ACL at all: refused (allow.everyone.if.no.acl.found is off).
        q = confluent_kafka.Producer(conf(b, "bob"))
        assert code(deliver(q, "a", b"no")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # Metadata hides what alice may not describe; `a` and `b` she may.
        md = confluent_kafka.admin.AdminClient(conf(b, "alice")).list_topics(timeout=10)
        assert set(md.topics) == {"a", "b"}
        md = admin_client(b, "bob").list_topics(timeout=10)
        assert set(md.topics) == set()


def consume_error(conf_: dict[str, Any], topic: str) -> int | None:
    """The first error (code) a consumer of ``topic`` sees, or None once it
    reads a record."""
    c = confluent_kafka.Consumer({**conf_, "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                return int(err.code())
            return None
        raise AssertionError("neither a record nor an error")
    finally:
        c.close()


def test_consumer_group_denied_then_allowed_deny_wins(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "a")
        p = confluent_kafka.Producer(conf(b, "admin"))
        assert deliver(p, "a", b"r") is None
        a = admin_client(b)
        grant(a, topic_acl("a", AclOperation.READ))
        alice = conf(b, "alice", **{"group.id": "g"})
        assert consume_error(alice, "a") == KafkaError.GROUP_AUTHORIZATION_FAILED
        # Allowed on the group now, without a restart: it reads.
        grant(a, topic_acl("g", AclOperation.READ, rtype=ResourceType.GROUP))
        assert consume_error(alice, "a") is None
        # A DENY wins over the ALLOW (a wildcard principal's, here).
        grant(
            a,
            topic_acl(
                "g",
                AclOperation.ALL,
                principal="User:*",
                rtype=ResourceType.GROUP,
                permission=AclPermissionType.DENY,
            ),
        )
        assert consume_error(alice, "a") == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_prefixed_acls_and_deleting_takes_effect_at_once(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "orders-eu", "ordersx")
        a = admin_client(b)
        grant(a, topic_acl("orders-", AclOperation.WRITE, pattern=ResourcePatternType.PREFIXED))
        grant(a, topic_acl("ordersx", AclOperation.DESCRIBE))
        p = confluent_kafka.Producer(conf(b, "alice"))
        assert deliver(p, "orders-eu", b"1") is None
        assert code(deliver(p, "ordersx", b"2")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # DescribeAcls: a MATCH filter finds the prefixed binding for the name.
        f = AclBindingFilter(
            ResourceType.TOPIC,
            "orders-eu",
            ResourcePatternType.MATCH,
            ANY_PRINCIPAL,
            ANY_HOST,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        found = a.describe_acls(f, request_timeout=10).result(15)
        assert [(x.name, x.resource_pattern_type, x.operation) for x in found] == [
            ("orders-", ResourcePatternType.PREFIXED, AclOperation.WRITE)
        ]
        # DeleteAcls: the same producer, on the same connection, is refused next.
        f = AclBindingFilter(
            ResourceType.TOPIC,
            "orders-",
            ResourcePatternType.PREFIXED,
            "User:alice",
            ANY_HOST,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        (fut,) = a.delete_acls([f], request_timeout=10).values()
        assert len(fut.result(15)) == 1
        err = deliver(p, "orders-eu", b"3")
        assert code(err) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_acl_apis_need_cluster_alter_and_survive_restart(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "t")
        # alice may not create ACLs: CLUSTER_AUTHORIZATION_FAILED.
        with pytest.raises(confluent_kafka.KafkaException) as e:
            grant(admin_client(b, "alice"), topic_acl("t", AclOperation.ALL))
        assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
        grant(admin_client(b), topic_acl("t", AclOperation.READ))
        # An invalid binding fails alone (INVALID_REQUEST).
        bad = AclBinding(
            ResourceType.BROKER,
            "not-kafka-cluster",
            ResourcePatternType.LITERAL,
            "User:alice",
            "*",
            AclOperation.ALTER,
            AclPermissionType.ALLOW,
        )
        with pytest.raises(confluent_kafka.KafkaException) as e:
            grant(admin_client(b), bad)
        assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
    # The ACLs are in the data directory: a new broker enforces them.
    assert [tuple(x) for x in ottla.Admin(data).describe_acls()] == [
        ("TOPIC", "t", "LITERAL", "User:alice", "*", "READ", "ALLOW")
    ]
    with acl_broker(data) as b:
        alice = conf(b, "alice", **{"group.id": "g2"})
        # READ on t, nothing on g2: the group is what is refused.
        assert consume_error(alice, "t") == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_super_users_and_allow_everyone_if_no_acl_found(data: Path) -> None:
    with acl_broker(data, allow_everyone_if_no_acl_found=True) as b:
        create_topics(b, "open", "guarded")
        grant(admin_client(b), topic_acl("guarded", AclOperation.WRITE))
        bob = confluent_kafka.Producer(conf(b, "bob"))
        # No ACL names `open`: everyone may; `guarded` has one, for alice only.
        assert deliver(bob, "open", b"1") is None
        assert code(deliver(bob, "guarded", b"2")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        # The super user needs no ACL.
        admin = confluent_kafka.Producer(conf(b, "admin"))
        assert deliver(admin, "guarded", b"3") is None


def test_no_authorizer_means_security_disabled_and_everything_allowed(data: Path) -> None:
    with ottla.Broker(data, listeners=[f"{LISTENER}://127.0.0.1:0"]) as b:
        with pytest.raises(confluent_kafka.KafkaException) as e:
            grant(admin_client(b, "bob"), topic_acl("t", AclOperation.READ))
        assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED
        p = confluent_kafka.Producer(conf(b, "bob"))
        assert deliver(p, "t", b"1") is None


def test_kafka_python_sees_topic_authorization_failed(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "a", "b")
        grant(
            admin_client(b),
            topic_acl("a", AclOperation.WRITE),
            topic_acl("b", AclOperation.DESCRIBE),
        )
        kp = kafka.KafkaProducer(
            bootstrap_servers=b.listeners[LISTENER],
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username="alice",
            sasl_plain_password="alice-pw",
            request_timeout_ms=10_000,
            retries=0,
        )
        try:
            kp.send("a", b"ok").get(timeout=15)
            with pytest.raises(kafka.errors.TopicAuthorizationFailedError):
                kp.send("b", b"no").get(timeout=15)
        finally:
            kp.close()


def test_authorized_operations_from_the_authorizer(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "ops")
        a = admin_client(b)
        grant(
            a,
            topic_acl("ops", AclOperation.READ),
            topic_acl("g", AclOperation.READ, rtype=ResourceType.GROUP),
            topic_acl("kafka-cluster", AclOperation.DESCRIBE, rtype=ResourceType.BROKER),
            topic_acl(
                "kafka-cluster",
                AclOperation.DESCRIBE,
                principal="User:ANONYMOUS",
                rtype=ResourceType.BROKER,
            ),
        )
        # A group known by its committed offsets (the super user's).
        for group in ("g", "other"):
            c = confluent_kafka.Consumer({**conf(b, "admin"), "group.id": group})
            c.commit(offsets=[confluent_kafka.TopicPartition("ops", 0, 0)], asynchronous=False)
            c.close()
        alice = admin_client(b, "alice")
        # ListGroups: every group with DESCRIBE on the cluster (alice), else
        # the groups the principal may describe (bob: `other`).
        grant(
            a,
            topic_acl(
                "other", AclOperation.DESCRIBE, principal="User:bob", rtype=ResourceType.GROUP
            ),
        )
        listed = alice.list_consumer_groups(request_timeout=10).result(15).valid
        assert {g.group_id for g in listed} == {"g", "other"}
        bob = admin_client(b, "bob")
        listed = bob.list_consumer_groups(request_timeout=10).result(15).valid
        assert {g.group_id for g in listed} == {"other"}
        t = (
            alice.describe_topics(
                TopicCollection(["ops"]), include_authorized_operations=True, request_timeout=10
            )["ops"]
            .result(15)
            .authorized_operations
        )
        assert {op.name for op in t} == {"READ", "DESCRIBE"}
        c = alice.describe_cluster(include_authorized_operations=True, request_timeout=10).result(
            15
        )
        assert {op.name for op in c.authorized_operations} == {"DESCRIBE"}
        (g,) = alice.describe_consumer_groups(
            ["g"], include_authorized_operations=True, request_timeout=10
        ).values()
        assert {op.name for op in g.result(15).authorized_operations} == {"READ", "DESCRIBE"}
        # The super user: every operation of the type.
        t = (
            a.describe_topics(
                TopicCollection(["ops"]), include_authorized_operations=True, request_timeout=10
            )["ops"]
            .result(15)
            .authorized_operations
        )
        assert len(t) == 8
        # Raw DescribeCluster v0 on the PLAINTEXT listener (User:ANONYMOUS):
        # the bitfield is exactly DESCRIBE's bit (8).
        host, port = b.listeners["PLAINTEXT"].rsplit(":", 1)
        body = kafka_wire.flexible_request(host, int(port), 60, 0, b"\x01" + kafka_wire.uvarint(0))
        r = kafka_wire.Reader(body)
        r.i32()
        assert r.i16() == 0
        r.cstr()
        assert r.cstr() == "ottla"
        r.i32()
        for _ in range(r.count()):
            r.i32()
            r.cstr()
            r.i32()
            r.cstr()
            r.tags()
        assert r.i32() == 1 << 8
        # Raw Metadata v8 asking for cluster and topic operations: User:ANONYMOUS
        # may not DESCRIBE `ops`, so it is TOPIC_AUTHORIZATION_FAILED.
        assert raw_metadata_v8(host, int(port), "ops") == (TOPIC_AUTHORIZATION_FAILED, 1 << 8)


def raw_metadata_v8(host: str, port: int, topic: str) -> tuple[int, int]:
    """(topic error, cluster authorized operations) of a Metadata v8."""
    t = topic.encode()
    body = struct.pack(">i", 1) + struct.pack(">h", len(t)) + t + b"\x00\x01\x01"
    header = struct.pack(">hhi", 3, 8, 5) + struct.pack(">h", 3) + b"raw"
    msg = header + body
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(struct.pack(">i", len(msg)) + msg)
        cid, data = kafka_wire.response(s)
    assert cid == 5
    r = kafka_wire.Reader(data)
    r.i32()  # throttle
    for _ in range(r.i32()):  # brokers
        r.i32()
        r.take(r.i16())
        r.i32()
        n = r.i16()
        if n > 0:
            r.take(n)
    r.take(r.i16())  # cluster id
    r.i32()  # controller
    assert r.i32() == 1  # topics
    error = r.i16()
    r.take(r.i16())
    r.i8()  # internal
    assert r.i32() == 0  # no partitions
    r.i32()  # topic operations
    return error, r.i32()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_ottla_acls_cli_changes_a_running_broker(data: Path) -> None:
    d = str(data)
    with acl_broker(data) as b:
        create_topics(b, "c")

        def attempt(value: bytes) -> KafkaError | None:
            # A new producer each time: no metadata cached from before.
            return deliver(confluent_kafka.Producer(conf(b, "alice")), "c", value)

        assert code(attempt(b"0")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
        r = cli(
            "acls",
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Write",
            "--operation",
            "DescribeConfigs",
            "--topic",
            "c",
            "--data",
            d,
        )
        assert r.returncode == 0, r.stderr
        r = cli("acls", "list", "--topic", "c", "--data", d)
        assert r.returncode == 0, r.stderr
        assert "WRITE" in r.stdout and "DESCRIBE_CONFIGS" in r.stdout and "User:alice" in r.stdout
        # The running broker notices the file within a second or so.
        results: list[KafkaError | None] = []

        def writes() -> bool:
            results.append(attempt(b"1"))
            return results[-1] is None

        assert wait_until(writes, timeout=15, interval=0.3), results[-1]
        r = cli(
            "acls",
            "remove",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Write",
            "--topic",
            "c",
            "--data",
            d,
        )
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: attempt(b"2") is not None, timeout=15, interval=0.3)
        r = cli("acls", "add", "--allow-principal", "alice", "--operation", "Read", "--topic", "c")
        assert r.returncode != 0 and "TYPE:NAME" in r.stderr


def test_admin_acl_methods_over_the_directory(tmp_path: Path) -> None:
    admin = ottla.Admin(tmp_path / "d", create=True)
    admin.create_acls(
        [
            OttlaAcl("TOPIC", "x-", "PREFIXED", "User:alice", "*", "READ", "ALLOW"),
            OttlaAcl("GROUP", "g", "LITERAL", "User:*", "10.0.0.1", "ALL", "DENY"),
        ]
    )
    assert len(admin.describe_acls()) == 2
    assert [
        a.name for a in admin.describe_acls(OttlaFilter(name="x-abc", pattern_type="MATCH"))
    ] == ["x-"]
    with pytest.raises(ValueError):
        admin.create_acls([OttlaAcl("TOPIC", "y", "MATCH", "User:a", "*", "READ", "ALLOW")])
    gone = admin.delete_acls([OttlaFilter(resource_type="GROUP")])
    assert [[a.resource_type for a in g] for g in gone] == [["GROUP"]]
    assert [a.resource_type for a in admin.describe_acls()] == ["TOPIC"]


def test_serve_with_the_standard_authorizer(tmp_path: Path, spawn: Spawn) -> None:
    d = tmp_path / "data"
    sh.add_user(d, "alice", "alice-pw")
    child = spawn(
        CLI_CODE,
        "serve",
        "--data",
        d,
        "--listener",
        f"{LISTENER}://127.0.0.1:0",
        "--authorizer",
        "standard",
        "--super-users",
        "User:alice;User:ops",
    )
    child.wait_line(lambda s: s.startswith("listening on"), timeout=20)
    addr = child.wait_line(lambda s: s.startswith(f"listener {LISTENER} on")).split()[-1]
    base = {
        "bootstrap.servers": addr,
        "security.protocol": LISTENER,
        "sasl.mechanism": "SCRAM-SHA-512",
        "message.timeout.ms": 10000,
    }
    # alice is a super user: she may create and write without any ACL.
    sh.add_user(d, "bob", "bob-pw")
    alice = confluent_kafka.Producer(
        {**base, "sasl.username": "alice", "sasl.password": "alice-pw"}
    )
    assert deliver(alice, "t", b"1") is None
    bob = confluent_kafka.Producer({**base, "sasl.username": "bob", "sasl.password": "bob-pw"})
    assert code(deliver(bob, "t", b"2")) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    r = cli("serve", "--super-users", "User:x", "--data", str(tmp_path / "other"))
    assert r.returncode != 0 and "--authorizer standard" in r.stderr


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_metadata_shows_only_what_the_principal_may_describe(data: Path) -> None:
    with acl_broker(data) as b:
        create_topics(b, "seen", "hidden")
        # kcat over the PLAINTEXT listener: User:ANONYMOUS.
        grant(admin_client(b), topic_acl("seen", AclOperation.READ, principal="User:ANONYMOUS"))
        out = subprocess.run(
            ["kcat", "-b", b.listeners["PLAINTEXT"], "-L", "-J"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        assert {t["topic"] for t in json.loads(out)["topics"]} == {"seen"}
