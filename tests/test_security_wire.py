"""The SASL gate and exchanges byte by byte (issue 18): what may be sent
before authenticating, Kafka's error codes (UNSUPPORTED_SASL_MECHANISM 33,
ILLEGAL_SASL_STATE 34, SASL_AUTHENTICATION_FAILED 58) and the close after
them, the session lifetime (KIP-368) and the close past it."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import kafka_wire
import ottla
import security_helpers as sh

pytestmark = pytest.mark.timeout(60)

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36


def handshake(s: socket.socket, mechanism: str, cid: int = 7) -> tuple[int, list[str]]:
    """SaslHandshake v1: (error code, enabled mechanisms)."""
    s.sendall(kafka_wire.frame(SASL_HANDSHAKE, 1, cid, kafka_wire._str(mechanism)))
    got, body = kafka_wire.response(s)
    assert got == cid
    err, n = struct.unpack(">hi", body[:6])
    mechs, at = [], 6
    for _ in range(n):
        (ln,) = struct.unpack(">h", body[at : at + 2])
        mechs.append(body[at + 2 : at + 2 + ln].decode())
        at += 2 + ln
    return err, mechs


def authenticate(
    s: socket.socket, token: bytes, cid: int = 8
) -> tuple[int, str | None, bytes, int]:
    """SaslAuthenticate v1: (error code, message, auth bytes, session lifetime ms)."""
    s.sendall(kafka_wire.frame(SASL_AUTHENTICATE, 1, cid, struct.pack(">i", len(token)) + token))
    got, body = kafka_wire.response(s)
    assert got == cid
    (err,) = struct.unpack(">h", body[:2])
    (ln,) = struct.unpack(">h", body[2:4])
    at = 4
    msg = None
    if ln >= 0:
        msg = body[at : at + ln].decode()
        at += ln
    (bn,) = struct.unpack(">i", body[at : at + 4])
    data = body[at + 4 : at + 4 + bn]
    (lifetime,) = struct.unpack(">q", body[at + 4 + bn : at + 12 + bn])
    return err, msg, data, lifetime


def metadata(s: socket.socket, cid: int = 9) -> None:
    s.sendall(kafka_wire.frame(kafka_wire.API_METADATA, 1, cid, struct.pack(">i", 0)))


def plain(user: str, password: str) -> bytes:
    return b"\0" + user.encode() + b"\0" + password.encode()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ottla.Broker]:
    data = tmp_path / "data"
    sh.add_user(data)
    sh.add_user(data, "bob", "bob-pw")
    with ottla.Broker(
        data,
        listeners=["SASL_PLAINTEXT://127.0.0.1:0", "PLAINTEXT://127.0.0.1:0"],
        connections_max_reauth_ms=1500,
    ) as b:
        yield b


def connect(b: ottla.Broker, listener: str = "SASL_PLAINTEXT") -> socket.socket:
    host, port = b.listeners[listener].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def test_only_api_versions_and_sasl_before_authentication(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        keys = {k for k, _, _ in kafka_wire.api_versions(s)}
        assert {17, 36, 50, 51} <= keys
        metadata(s)
        assert kafka_wire.closed_by_peer(s, 10)


def test_unknown_mechanism_33_then_closed(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        err, mechs = handshake(s, "GSSAPI")
        assert err == 33
        assert mechs == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        assert kafka_wire.closed_by_peer(s, 10)


def test_wrong_password_58_then_closed_others_undisturbed(broker: ottla.Broker) -> None:
    with connect(broker) as good:
        assert handshake(good, "PLAIN")[0] == 0
        assert authenticate(good, plain("alice", sh.PASSWORD))[0] == 0
        with connect(broker) as s:
            assert handshake(s, "PLAIN") == (0, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
            err, msg, _, _ = authenticate(s, plain("alice", "wrong"))
            assert err == 58
            assert msg == "Authentication failed: Invalid username or password"
            assert kafka_wire.closed_by_peer(s, 10)
        metadata(good)
        assert kafka_wire.response(good)[0] == 9


def test_authenticate_before_handshake_34_then_closed(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        err, msg, _, _ = authenticate(s, plain("alice", sh.PASSWORD))
        assert err == 34, msg
        assert kafka_wire.closed_by_peer(s, 10)


def test_sasl_on_a_plaintext_listener_is_34_and_the_connection_stays(
    broker: ottla.Broker,
) -> None:
    with connect(broker, "PLAINTEXT") as s:
        assert handshake(s, "PLAIN")[0] == 34
        assert authenticate(s, plain("alice", sh.PASSWORD))[0] == 34
        metadata(s)
        assert kafka_wire.response(s)[0] == 9


def test_session_lifetime_reauthentication_and_expiry(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        assert handshake(s, "PLAIN")[0] == 0
        err, _, _, lifetime = authenticate(s, plain("alice", sh.PASSWORD))
        assert (err, lifetime) == (0, 1500)
        metadata(s)
        assert kafka_wire.response(s)[0] == 9
        # Re-authenticating (same principal) starts a new session.
        assert handshake(s, "PLAIN")[0] == 0
        assert authenticate(s, plain("alice", sh.PASSWORD))[0] == 0
        time.sleep(2.0)  # past the lifetime, without re-authenticating
        metadata(s)
        assert kafka_wire.closed_by_peer(s, 10)


def test_reauthentication_may_not_change_the_principal(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        assert handshake(s, "PLAIN")[0] == 0
        assert authenticate(s, plain("alice", sh.PASSWORD))[0] == 0
        assert handshake(s, "PLAIN")[0] == 0
        err, msg, _, _ = authenticate(s, plain("bob", "bob-pw"))
        assert err == 58 and msg is not None and "Cannot change principals" in msg
        assert kafka_wire.closed_by_peer(s, 10)


def test_malformed_tokens_are_58_not_a_crash(broker: ottla.Broker) -> None:
    for mech, token in [
        ("PLAIN", b""),
        ("PLAIN", b"\xff\xfe\0\0"),
        ("SCRAM-SHA-256", b"garbage"),
        ("SCRAM-SHA-512", b"n,,n=alice"),
    ]:
        with connect(broker) as s:
            assert handshake(s, mech)[0] == 0
            err, msg, _, _ = authenticate(s, token)
            assert err == 58, (mech, token, msg)
            assert kafka_wire.closed_by_peer(s, 10)


def test_large_frames_before_authentication_close_the_connection(broker: ottla.Broker) -> None:
    """Kafka's sasl.server.max.receive.size (512 KiB): an unauthenticated
    client cannot make the broker read (and hold) a large frame."""
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 600 * 1024) + b"\0" * 1024)
        assert kafka_wire.closed_by_peer(s, 10)
    with connect(broker) as s:
        # A frame under the bound is read, and answered.
        assert {17, 36} <= {k for k, _, _ in kafka_wire.api_versions(s)}


def test_oauthbearer_bad_token_gets_the_error_challenge_then_58(tmp_path: Path) -> None:
    """RFC 7628 §3.2.2, as Kafka answers: the error challenge, the client's
    %x01, then the failure with the reason."""
    import base64
    import json

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    def initial(header: object, claims: object) -> bytes:
        return f"n,,\x01auth=Bearer {b64(header)}.{b64(claims)}.\x01\x01".encode()

    with ottla.Broker(
        tmp_path / "data",
        listeners=["SASL_PLAINTEXT://127.0.0.1:0"],
        sasl_enabled_mechanisms=["OAUTHBEARER"],
    ) as b:
        with connect(b) as s:
            assert handshake(s, "OAUTHBEARER") == (0, ["OAUTHBEARER"])
            good = initial({"alg": "none"}, {"sub": "carol", "exp": time.time() + 3600})
            err, _, _, lifetime = authenticate(s, good)
            # No connections_max_reauth_ms: the token's exp bounds the session.
            assert err == 0 and 0 < lifetime <= 3600 * 1000
        with connect(b) as s:
            assert handshake(s, "OAUTHBEARER")[0] == 0
            expired = initial({"alg": "none"}, {"sub": "carol", "exp": time.time() - 60})
            err, _, challenge, _ = authenticate(s, expired)
            assert (err, challenge) == (0, b'{"status":"invalid_token"}')
            err, msg, _, _ = authenticate(s, b"\x01", cid=9)
            assert err == 58 and msg == "Authentication failed: the token has expired"
            assert kafka_wire.closed_by_peer(s, 10)


def handshake_v0(s: socket.socket, mechanism: str, cid: int = 5) -> int:
    """SaslHandshake v0: its error code."""
    s.sendall(kafka_wire.frame(SASL_HANDSHAKE, 0, cid, kafka_wire._str(mechanism)))
    got, body = kafka_wire.response(s)
    assert got == cid
    (err,) = struct.unpack(">h", body[:2])
    return int(err)


def raw_token(s: socket.socket, token: bytes) -> bytes:
    """After a v0 handshake: a bare size-prefixed token and the server's."""
    s.sendall(struct.pack(">i", len(token)) + token)
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        assert chunk, "closed by the broker"
        head += chunk
    (n,) = struct.unpack(">i", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        assert chunk, "closed by the broker"
        body += chunk
    return body


def test_handshake_v0_is_advertised_and_runs_the_bare_token_exchange(
    broker: ottla.Broker,
) -> None:
    with connect(broker) as s:
        ranges = {k: (lo, hi) for k, lo, hi in kafka_wire.api_versions(s)}
        assert ranges[SASL_HANDSHAKE] == (0, 1)  # as Kafka 4.x
        assert handshake_v0(s, "PLAIN") == 0
        assert raw_token(s, plain("alice", sh.PASSWORD)) == b""
        metadata(s)  # authenticated: Kafka requests from here on
        assert kafka_wire.response(s)[0] == 9


def test_handshake_v0_wrong_password_closes_the_connection(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        assert handshake_v0(s, "PLAIN") == 0
        token = plain("alice", "wrong")
        s.sendall(struct.pack(">i", len(token)) + token)
        assert kafka_wire.closed_by_peer(s, 10)


def test_reauthentication_needs_handshake_v1(broker: ottla.Broker) -> None:
    with connect(broker) as s:
        assert handshake(s, "PLAIN")[0] == 0
        assert authenticate(s, plain("alice", sh.PASSWORD))[0] == 0
        assert handshake_v0(s, "PLAIN") == 34
        assert kafka_wire.closed_by_peer(s, 10)
