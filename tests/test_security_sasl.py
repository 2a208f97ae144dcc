"""SASL listeners (issue 18) with real clients: PLAIN, SCRAM-SHA-256/512,
OAUTHBEARER (unsecured JWTs), wrong passwords, unknown mechanisms,
re-authentication (KIP-368), and users managed over the wire
(Describe/AlterUserScramCredentials)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import confluent_kafka
import kafka
import kafka.errors
import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

import ottla
import security_helpers as sh
from ottla.testing import Certificates

pytestmark = pytest.mark.timeout(90)


def deliver(conf: dict[str, Any], topic: str, values: list[bytes]) -> list[Any]:
    """Produce ``values``; the delivery errors (None for each success)."""
    results: list[Any] = []
    p = confluent_kafka.Producer(conf)
    for v in values:
        p.produce(topic, v, on_delivery=lambda err, msg: results.append(err))
    p.flush(20)
    return results


def auth_error(conf: dict[str, Any]) -> str:
    """The authentication error confluent-kafka reports (it must report one)."""
    errors: list[confluent_kafka.KafkaError] = []
    with_cb: dict[str, Any] = {**conf, "error_cb": errors.append}
    admin = AdminClient(with_cb)
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=2)
    admin.poll(1)  # error_cb runs from poll
    assert errors, "no error reported"
    return " | ".join(str(e) for e in errors)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return sh.certs(tmp_path)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    sh.add_user(d)
    return d


def test_sasl_plaintext_plain_right_and_wrong_password(data: Path, certs: Certificates) -> None:
    with sh.secure_broker(data, certs, "SASL_PLAINTEXT") as b:
        ok = sh.confluent_config(
            b,
            "SASL_PLAINTEXT",
            **{"sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": sh.PASSWORD},
        )
        assert deliver(ok, "t", [b"a"]) == [None]
        bad = {**ok, "sasl.password": "guess"}
        err = auth_error(bad)
        assert "Authentication failed" in err and "Invalid username or password" in err, err
        # The failed client did not disturb the good one.
        assert deliver(ok, "t", [b"b"]) == [None]


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_sasl_scram(data: Path, certs: Certificates) -> None:
    """kcat's librdkafka (2.0 on Debian 12) uses SASL only if SaslHandshake
    v0 is advertised, as Kafka does."""
    with sh.secure_broker(data, certs, "SASL_PLAINTEXT") as b:
        sasl = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256"]
        sasl += ["-X", "sasl.username=alice", "-X", f"sasl.password={sh.PASSWORD}"]
        kcat = ["kcat", "-b", b.listeners["SASL_PLAINTEXT"], *sasl]
        done = subprocess.run(
            [*kcat, "-P", "-t", "k"], input=b"one\ntwo\n", capture_output=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        done = subprocess.run([*kcat, "-C", "-t", "k", "-e", "-q"], capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [b"one", b"two"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_sasl_ssl_scram(data: Path, certs: Certificates, mechanism: str) -> None:
    with sh.secure_broker(data, certs, "SASL_SSL") as b:
        ok = sh.confluent_config(
            b,
            "SASL_SSL",
            certs,
            **{"sasl.mechanism": mechanism, "sasl.username": "alice", "sasl.password": sh.PASSWORD},
        )
        assert deliver(ok, "t", [b"x", b"y"]) == [None, None]
        err = auth_error({**ok, "sasl.password": "nope"})
        assert "invalid credentials" in err and mechanism in err, err
        err = auth_error({**ok, "sasl.username": "bob"})
        assert "invalid credentials" in err, err
        c = confluent_kafka.Consumer({**ok, "group.id": "g", "auto.offset.reset": "earliest"})
        c.subscribe(["t"])
        got = []
        for _ in range(40):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m.value())
            if len(got) == 2:
                break
        c.close()
        assert got == [b"x", b"y"]


def test_unknown_mechanism_is_refused(data: Path, certs: Certificates) -> None:
    with sh.secure_broker(
        data, certs, "SASL_PLAINTEXT", sasl_enabled_mechanisms=["SCRAM-SHA-512"]
    ) as b:
        conf = sh.confluent_config(
            b,
            "SASL_PLAINTEXT",
            **{"sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": sh.PASSWORD},
        )
        err = auth_error(conf)
        assert "PLAIN" in err and "SCRAM-SHA-512" in err, err


def test_kafka_python_sasl_ssl_scram_sha_256(
    data: Path, certs: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    with sh.secure_broker(data, certs, "SASL_SSL") as b:
        common: dict[str, Any] = {
            "bootstrap_servers": b.listeners["SASL_SSL"],
            "security_protocol": "SASL_SSL",
            "ssl_cafile": certs.ca,
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "alice",
            "sasl_plain_password": sh.PASSWORD,
        }
        p = kafka.KafkaProducer(**common)
        p.send("kp", b"hello").get(timeout=20)
        p.close()
        c = kafka.KafkaConsumer(
            "kp", auto_offset_reset="earliest", consumer_timeout_ms=5000, **common
        )
        assert [m.value for m in c] == [b"hello"]
        c.close()
        # kafka-python retries until its bootstrap times out; each try
        # meets the broker's error 58.
        with pytest.raises(kafka.errors.KafkaError):
            kafka.KafkaProducer(
                **{**common, "sasl_plain_password": "wrong"}, bootstrap_timeout_ms=3000
            )
        assert "SaslAuthenticationFailedError" in caplog.text
        assert "invalid credentials with SASL mechanism SCRAM-SHA-256" in caplog.text


def test_aiokafka_sasl_ssl_plain(data: Path, certs: Certificates) -> None:
    import aiokafka
    import aiokafka.errors

    async def run(server: str) -> None:
        ctx = ssl.create_default_context(cafile=certs.ca)
        common: dict[str, Any] = {
            "bootstrap_servers": server,
            "security_protocol": "SASL_SSL",
            "ssl_context": ctx,
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "alice",
            "sasl_plain_password": sh.PASSWORD,
        }
        p = aiokafka.AIOKafkaProducer(**common)
        await p.start()
        try:
            await p.send_and_wait("ak", b"async")
        finally:
            await p.stop()
        bad = aiokafka.AIOKafkaProducer(**{**common, "sasl_plain_password": "wrong"})
        with pytest.raises(aiokafka.errors.KafkaError) as e:
            await bad.start()
        await bad.stop()
        assert "Authentication" in repr(e.value) or "Connection" in repr(e.value), repr(e.value)

    with sh.secure_broker(data, certs, "SASL_SSL") as b:
        asyncio.run(run(b.listeners["SASL_SSL"]))
    with ottla.Consumer(data, "ak", auto_offset_reset="earliest", consumer_timeout_ms=500) as c:
        assert [r.value for r in c] == [b"async"]


def test_oauthbearer_unsecured_jwt(data: Path, certs: Certificates) -> None:
    with sh.secure_broker(
        data, certs, "SASL_SSL", sasl_enabled_mechanisms=["OAUTHBEARER", "PLAIN"]
    ) as b:
        conf = sh.confluent_config(
            b,
            "SASL_SSL",
            certs,
            **{
                "sasl.mechanism": "OAUTHBEARER",
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=carol lifeSeconds=3600",
            },
        )
        assert deliver(conf, "o", [b"token"]) == [None]


def test_oauthbearer_is_off_unless_named(data: Path, certs: Certificates) -> None:
    with sh.secure_broker(data, certs, "SASL_PLAINTEXT") as b:
        conf = sh.confluent_config(
            b,
            "SASL_PLAINTEXT",
            **{
                "sasl.mechanism": "OAUTHBEARER",
                "enable.sasl.oauthbearer.unsecure.jwt": True,
                "sasl.oauthbearer.config": "principal=carol",
            },
        )
        err = auth_error(conf)
        assert "OAUTHBEARER" in err, err


def test_reauthentication_keeps_a_client_going(
    data: Path,
    certs: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """KIP-368: librdkafka re-authenticates before the session lifetime the
    broker gave it ends; its connection keeps working across several."""
    monkeypatch.setenv("OTTLA_BROKER_LOG", "1")
    with sh.secure_broker(data, certs, "SASL_PLAINTEXT", connections_max_reauth_ms=1000) as b:
        conf = sh.confluent_config(
            b,
            "SASL_PLAINTEXT",
            **{
                "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "alice",
                "sasl.password": sh.PASSWORD,
            },
        )
        p = confluent_kafka.Producer(conf)
        results: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            p.produce("r", b"v", on_delivery=lambda err, msg: results.append(err))
            p.flush(10)
            if "authenticated as User:alice (SCRAM-SHA-256), again" in capfd.readouterr().err:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no re-authentication seen")
        p.produce("r", b"after", on_delivery=lambda err, msg: results.append(err))
        p.flush(10)
        assert set(results) == {None}


def test_users_over_the_wire(data: Path, certs: Certificates) -> None:
    with sh.secure_broker(data, certs, "PLAINTEXT", "SASL_PLAINTEXT") as b:
        admin = AdminClient({"bootstrap.servers": b.listeners["PLAINTEXT"]})
        asked = admin.describe_user_scram_credentials(["alice"])
        assert isinstance(asked, dict)
        described = asked["alice"].result(10)
        assert sorted(ci.mechanism for ci in described.scram_credential_infos) == [
            ScramMechanism.SCRAM_SHA_256,
            ScramMechanism.SCRAM_SHA_512,
        ]
        futures = admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(
                    "bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"bobs-pw"
                ),
                UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_256),
            ]
        )
        for f in futures.values():
            f.result(10)
        assert sorted(ottla._core.scram_users(data)) == [
            ("alice", "SCRAM-SHA-512", 4096),
            ("bob", "SCRAM-SHA-512", 8192),
        ]
        # bob logs in with his new password at once.
        conf = sh.confluent_config(
            b,
            "SASL_PLAINTEXT",
            **{
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "bob",
                "sasl.password": "bobs-pw",
            },
        )
        assert deliver(conf, "t", [b"bob"]) == [None]
        # Deleting what does not exist, describing who does not exist: errors.
        f = admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_256)]
        )["nobody"]
        with pytest.raises(confluent_kafka.KafkaException, match="does not exist"):
            f.result(10)
        asked = admin.describe_user_scram_credentials(["nobody"])
        assert isinstance(asked, dict)
        with pytest.raises(confluent_kafka.KafkaException, match="does not exist"):
            asked["nobody"].result(10)
        f = admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(
                    "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw"
                )
            ]
        )["carol"]
        with pytest.raises(confluent_kafka.KafkaException, match="iterations"):
            f.result(10)
