"""TLS listeners (issue 18): SSL with confluent-kafka and kcat, mTLS
(ssl.client.auth=required|requested), untrusted certificates refused
without disturbing other connections."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

import kafka_wire
import ottla
import security_helpers as sh
from ottla.testing import make_certificates

pytestmark = pytest.mark.timeout(60)


def produce_one(conf: dict[str, Any], topic: str, value: bytes) -> None:
    errors: list[Any] = []
    p = confluent_kafka.Producer(conf)
    p.produce(topic, value, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(15) == 0
    assert errors == [None]


def consume_all(conf: dict[str, Any], topic: str, n: int) -> list[bytes]:
    c = confluent_kafka.Consumer({**conf, "group.id": "g", "auto.offset.reset": "earliest"})
    try:
        c.subscribe([topic])
        got: list[bytes] = []
        for _ in range(60):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                value = m.value()
                assert value is not None
                got.append(value)
            if len(got) >= n:
                break
        return got
    finally:
        c.close()


def metadata_fails(conf: dict[str, Any]) -> str:
    """The errors a client meets asking for metadata (it must meet one),
    with what librdkafka reported on the way (error_cb)."""
    reported: list[Any] = []
    with_cb: dict[str, Any] = {**conf, "socket.timeout.ms": 3000, "error_cb": reported.append}
    admin = AdminClient(with_cb)
    with pytest.raises(confluent_kafka.KafkaException) as e:
        admin.list_topics(timeout=3)
    admin.poll(1)  # error_cb runs from poll
    return " | ".join([str(e.value), *map(str, reported)])


def test_ssl_listener_serves_confluent_and_plaintext_alongside(tmp_path: Path) -> None:
    c = sh.certs(tmp_path)
    with sh.secure_broker(tmp_path / "data", c, "PLAINTEXT", "SSL") as b:
        assert list(b.listeners) == ["PLAINTEXT", "SSL"]
        assert b.bootstrap_servers == b.listeners["PLAINTEXT"]
        conf = sh.confluent_config(b, "SSL", c)
        produce_one(conf, "t", b"over tls")
        produce_one(sh.confluent_config(b, "PLAINTEXT"), "t", b"in the clear")
        # Each listener advertises itself: the SSL client stays on the SSL port.
        md = AdminClient(conf).list_topics(timeout=10)
        assert [f"{x.host}:{x.port}" for x in md.brokers.values()] == [b.listeners["SSL"]]
        assert consume_all(conf, "t", 2) == [b"over tls", b"in the clear"]


def test_plaintext_client_on_the_ssl_port_is_refused_others_undisturbed(tmp_path: Path) -> None:
    c = sh.certs(tmp_path)
    with sh.secure_broker(tmp_path / "data", c, "SSL") as b:
        good = sh.confluent_config(b, "SSL", c)
        produce_one(good, "t", b"1")
        host, port = b.listeners["SSL"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(kafka_wire.frame(kafka_wire.API_API_VERSIONS, 0, 1, b""))  # not TLS
            assert kafka_wire.closed_by_peer(s, 10)
        produce_one(good, "t", b"2")


def test_untrusted_server_certificate_is_a_client_error(tmp_path: Path) -> None:
    c = sh.certs(tmp_path)
    other = make_certificates(tmp_path / "other")
    with sh.secure_broker(tmp_path / "data", c, "SSL") as b:
        err = metadata_fails(sh.confluent_config(b, "SSL", other))
        assert "certificate verify failed" in err, err


def test_mtls_required_principal_from_subject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTTLA_BROKER_LOG", "1")
    c = sh.certs(tmp_path, clients=("alice",))
    rogue = make_certificates(tmp_path / "rogue", clients=["mallory"])
    cert, key = c.clients["alice"]
    with sh.secure_broker(tmp_path / "data", c, "SSL", ssl_client_auth="required") as b:
        good = sh.confluent_config(
            b, "SSL", c, **{"ssl.certificate.location": cert, "ssl.key.location": key}
        )
        produce_one(good, "t", b"from alice")
        # No certificate, or one from another CA: refused in the handshake.
        assert "SSL" in metadata_fails(sh.confluent_config(b, "SSL", c))
        rcert, rkey = rogue.clients["mallory"]
        err = metadata_fails(
            sh.confluent_config(
                b, "SSL", c, **{"ssl.certificate.location": rcert, "ssl.key.location": rkey}
            )
        )
        assert "SSL" in err, err
        produce_one(good, "t", b"still fine")
    err = capfd.readouterr().err
    assert "TLS client certificate: User:CN=alice" in err
    assert "mallory" not in err


def test_mtls_requested_lets_clients_without_a_certificate_in(tmp_path: Path) -> None:
    c = sh.certs(tmp_path, clients=("alice",))
    cert, key = c.clients["alice"]
    with sh.secure_broker(tmp_path / "data", c, "SSL", ssl_client_auth="requested") as b:
        produce_one(sh.confluent_config(b, "SSL", c), "t", b"anonymous")
        produce_one(
            sh.confluent_config(
                b, "SSL", c, **{"ssl.certificate.location": cert, "ssl.key.location": key}
            ),
            "t",
            b"alice",
        )


def test_python_ssl_module_handshake(tmp_path: Path) -> None:
    """The standard library's TLS client (kafka-python's and aiokafka's)."""
    c = sh.certs(tmp_path)
    with sh.secure_broker(tmp_path / "data", c, "SSL") as b:
        host, port = b.listeners["SSL"].rsplit(":", 1)
        ctx = ssl.create_default_context(cafile=c.ca)
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            assert any(k == 17 for k, _, _ in kafka_wire.api_versions(s))


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_over_tls(tmp_path: Path) -> None:
    c = sh.certs(tmp_path)
    with sh.secure_broker(tmp_path / "data", c, "SSL") as b:
        common = ["kcat", "-b", b.listeners["SSL"], "-X", "security.protocol=SSL"]
        common += ["-X", f"ssl.ca.location={c.ca}", "-t", "k"]
        subprocess.run(
            [*common, "-P"], input=b"one\ntwo\n", check=True, timeout=30, capture_output=True
        )
        out = subprocess.run(
            [*common, "-C", "-o", "beginning", "-e", "-q"],
            check=True,
            timeout=30,
            capture_output=True,
        )
        assert out.stdout.split() == [b"one", b"two"]


def test_tls_listener_without_a_certificate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ottla.InvalidConfigError, match="ssl_certfile"):
        ottla.Broker(tmp_path / "data", listeners=["SSL://127.0.0.1:0"])
    with pytest.raises(ValueError, match="unknown listener"):
        ottla.Broker(tmp_path / "data", listeners=["FOO://127.0.0.1:0"])
