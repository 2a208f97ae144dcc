"""A secure replicated cluster (issue 18's cluster part): three real
`ottla serve` nodes with SASL_SSL client listeners, SASL_SSL (SCRAM-SHA-512)
between the nodes, the controller listener under mutual TLS, the standard
authorizer, and ACLs and SCRAM users shared through the metadata log.

One cluster serves the module; the tests that break a node come last and
leave it whole again."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import ottla
from helpers import wait_until
from ottla import _core
from ottla.cluster import Cluster, ClusterError, ClusterSecurity, set_scram_user

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import (  # noqa: E402
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

pytestmark = pytest.mark.skipif(
    not hasattr(ottla, "Broker"), reason="this build has no broker (ottla.Broker)"
)

# confluent-kafka's "any principal/host" is None, typed as str.
ANY = cast(str, None)

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    path = tmp_path_factory.mktemp("secure-cluster")
    with Cluster(path / "cluster", 3, security=ClusterSecurity(), start_timeout=90) as c:
        for user, password in PASSWORDS.items():
            if user != "carol":
                set_scram_user(c.bootstrap_servers.split(",")[0], user, password)
        yield c


def conf(c: Cluster, user: str, bootstrap: str | None = None, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap or c.secure_bootstrap_servers,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": PASSWORDS.get(user, "wrong"),
        "ssl.ca.location": c.certificates.ca,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 200,
    }
    settings.update(extra)
    return settings


def produce(c: Cluster, user: str, topic: str, values: list[bytes], **extra: Any) -> list[Any]:
    """Produce with acks=all; the delivery errors (None for each success)."""
    p = confluent_kafka.Producer(
        conf(c, user, acks="all", **{"message.timeout.ms": 20000, **extra})
    )
    outcomes: list[Any] = []
    for i, v in enumerate(values):
        try:
            p.produce(
                topic,
                v,
                partition=i % 3 if topic == "guarded" else -1,
                on_delivery=lambda err, _msg: outcomes.append(err),
            )
        except confluent_kafka.KafkaException as e:  # the partition unknown to it yet
            outcomes.append(e.args[0])
    assert p.flush(60) == 0
    return outcomes


def create_topic(c: Cluster, name: str, partitions: int = 1) -> None:
    admin = AdminClient(conf(c, "alice"))
    futures = admin.create_topics([NewTopic(name, partitions, 3)], operation_timeout=30)
    futures[name].result(timeout=60)


@pytest.mark.timeout(240)
def test_acks_all_over_sasl_ssl_replicates_to_every_node(cluster: Cluster) -> None:
    create_topic(cluster, "orders")
    values = [f"v{i}".encode() for i in range(50)]
    assert produce(cluster, "alice", "orders", values) == [None] * 50
    # Every follower copied over the SASL_SSL inter-broker listener.
    [part] = cluster.wait_in_sync("orders", timeout=60)
    assert sorted(part.isr) == [1, 2, 3]
    consumer = confluent_kafka.Consumer(
        conf(cluster, "alice", **{"group.id": "g", "auto.offset.reset": "earliest"})
    )
    try:
        consumer.subscribe(["orders"])
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < 50 and time.monotonic() < deadline:
            m = consumer.poll(1.0)
            if m is not None and m.error() is None:
                got.append(m.value())
        assert got == values
    finally:
        consumer.close()


def acl(user: str) -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        "guarded",
        ResourcePatternType.LITERAL,
        f"User:{user}",
        "*",
        AclOperation.WRITE,
        AclPermissionType.ALLOW,
    )


@pytest.mark.timeout(240)
def test_acls_set_through_one_node_apply_on_every_node(cluster: Cluster) -> None:
    create_topic(cluster, "guarded", partitions=3)
    leaders = {cluster_leader(cluster, "guarded", p) for p in range(3)}
    # Created through node 1 ...
    admin1 = AdminClient(conf(cluster, "alice", bootstrap=cluster.secure_address(1)))
    admin1.create_acls([acl("alice")])[acl("alice")].result(timeout=30)
    # ... every node's image has it ...
    for node in cluster.node_ids:
        admin = AdminClient(conf(cluster, "alice", bootstrap=cluster.secure_address(node)))
        found: list[Any] = []

        def seen(admin: AdminClient = admin, found: list[Any] = found) -> bool:
            found[:] = admin.describe_acls(
                AclBindingFilter(
                    ResourceType.TOPIC,
                    "guarded",
                    ResourcePatternType.ANY,
                    ANY,
                    ANY,
                    AclOperation.ANY,
                    AclPermissionType.ANY,
                )
            ).result(timeout=30)
            return len(found) == 1

        assert wait_until(seen, timeout=30), (node, found)
    # ... and the leaders of all three partitions (on every node) enforce it.
    values = [b"a", b"b", b"c"]
    denied = produce(cluster, "bob", "guarded", values, **{"message.timeout.ms": 10000})
    assert all(
        e is not None and e.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
        for e in denied
    ), (denied, leaders)
    assert produce(cluster, "alice", "guarded", values) == [None] * 3
    # Deleted through node 3: bob may write again everywhere (no ACL left).
    admin3 = AdminClient(conf(cluster, "alice", bootstrap=cluster.secure_address(3)))
    gone = admin3.delete_acls(
        [
            AclBindingFilter(
                ResourceType.TOPIC,
                "guarded",
                ResourcePatternType.LITERAL,
                ANY,
                ANY,
                AclOperation.ANY,
                AclPermissionType.ANY,
            )
        ]
    )
    assert len(next(iter(gone.values())).result(timeout=30)) == 1
    assert wait_until(
        lambda: produce(cluster, "bob", "guarded", values) == [None] * 3,
        timeout=60,
        interval=0.5,
    )
    print("leaders of guarded:", sorted(leaders))


def cluster_leader(c: Cluster, topic: str, partition: int) -> int:
    md = AdminClient(conf(c, "alice")).list_topics(topic, timeout=30)
    leader: int = md.topics[topic].partitions[partition].leader
    return leader


@pytest.mark.timeout(120)
def test_a_user_created_through_one_node_logs_in_on_another(cluster: Cluster) -> None:
    set_scram_user(cluster.bootstrap_servers.split(",")[1], "carol", PASSWORDS["carol"])
    md = AdminClient(conf(cluster, "carol", bootstrap=cluster.secure_address(3))).list_topics(
        timeout=30
    )
    assert 3 in md.brokers
    bad = dict(conf(cluster, "carol", bootstrap=cluster.secure_address(1)))
    bad["sasl.password"] = "not-carols"
    with pytest.raises(confluent_kafka.KafkaException):
        AdminClient(bad).list_topics(timeout=10)


def test_the_directory_of_a_node_refuses_offline_user_and_acl_changes(cluster: Cluster) -> None:
    with pytest.raises(Exception, match="cluster node 1"):
        _core.set_scram_user(cluster.data_dir(1), "mallory", "pw")
    for command in ("acls", "users"):
        out = subprocess.run(
            [sys.executable, "-m", "ottla", command, "list", "--data", str(cluster.data_dir(3))],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode != 0 and "cluster node's directory" in out.stderr, out
    binding = ("TOPIC", "x", "LITERAL", "User:m", "*", "READ", "ALLOW")
    with pytest.raises(Exception, match="metadata log"):
        _core.create_acls(cluster.data_dir(2), [binding])


@pytest.mark.timeout(120)
def test_a_client_without_a_certificate_is_dropped_by_the_controller_listener(
    cluster: Cluster,
) -> None:
    host, port = cluster.controller_proxy(1).bootstrap.rsplit(":", 1)
    # A control frame as a node sends it, in the clear: no TLS, no reply.
    frame = bytes([1, 4, 1, 2, 3])
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.settimeout(15)
        with contextlib.suppress(OSError):
            s.sendall(struct.pack(">i", len(frame)) + frame)
        reply = b""
        with contextlib.suppress(OSError):
            reply = s.recv(1024)
        # Only a TLS alert may come back (content type 21), never a frame.
        assert reply == b"" or reply[0] == 21, reply
    # TLS that trusts the CA but shows no client certificate: refused too.
    ctx = ssl.create_default_context(cafile=cluster.certificates.ca)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.settimeout(15)
        answered = b""
        with contextlib.suppress(OSError), ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(struct.pack(">i", len(frame)) + frame)
            answered = tls.recv(1024)
        assert answered == b"", answered
    # Undisturbed.
    assert produce(cluster, "alice", "orders", [b"after-probe"]) == [None]
    assert "controller listener: refused" in cluster.log_path(1).read_text()


@pytest.mark.timeout(240)
def test_leader_killed_fails_over(cluster: Cluster) -> None:
    old = cluster.leader("orders", 0)
    cluster.kill(old)
    assert wait_until(
        lambda: produce(cluster, "alice", "orders", [b"after-kill"]) == [None], timeout=60
    )
    cluster.start(old)
    cluster.wait_in_sync("orders", timeout=90)


@pytest.mark.timeout(240)
def test_a_follower_with_wrong_credentials_stays_out_of_the_isr(cluster: Cluster) -> None:
    pw = cluster.password_file(3)
    good = pw.read_text()
    pw.write_text("wrong-password\n")
    cluster.restart(3)
    try:
        create_topic(cluster, "after-wrong")
        assert produce(cluster, "alice", "after-wrong", [b"x"]) == [None]

        def out_of_isr() -> bool:
            with contextlib.suppress(ClusterError):
                [part] = cluster.partitions("after-wrong")
                return 3 in part.replicas and 3 not in part.isr
            return False

        assert wait_until(out_of_isr, timeout=60)
        log = cluster.log_path(3).read_text()
        assert "inter-broker client: SASL SCRAM-SHA-512: authentication failed" in log, log[-3000:]
    finally:
        pw.write_text(good)
        cluster.restart(3)
    cluster.wait_in_sync("after-wrong", timeout=90)


@pytest.mark.timeout(240)
def test_ssl_between_nodes_with_their_certificates(tmp_path: Path) -> None:
    """inter_broker="SSL": each node's fetchers present its certificate
    (mTLS, principal User:CN=localhost, a super user) on an SSL listener
    that requires client certificates; acks=all replicates to all three."""
    security = ClusterSecurity(inter_broker="SSL")
    with Cluster(tmp_path / "cluster", 3, security=security, start_timeout=90) as c:
        p = confluent_kafka.Producer(
            {"bootstrap.servers": c.bootstrap_servers, "acks": "all", "message.timeout.ms": 30000}
        )
        errors: list[Any] = []
        for i in range(20):
            p.produce("ssl-orders", f"{i}".encode(), on_delivery=lambda e, _m: errors.append(e))
        assert p.flush(60) == 0
        assert errors == [None] * 20
        [part] = c.wait_in_sync("ssl-orders", timeout=60)
        assert sorted(part.isr) == [1, 2, 3]
        log = c.log_path(2).read_text()
        assert "inter-broker client" not in log, log[-2000:]
