#!/usr/bin/env python3
"""What security costs (issue 18): produce and fetch throughput over TLS as
a ratio of PLAINTEXT, and connection set-up time with SCRAM.

    python bench/security_bench.py [--records 200000] [--size 1024] [--connects 50]
        [--acls 1000] [--acl-requests 3000] [--acls-only]

Throughput: confluent-kafka (librdkafka) produces ``--records`` records of
``--size`` bytes through each listener of one broker (PLAINTEXT, SSL) and
reads them back with a consumer (assign from offset 0); records per second,
and the TLS/PLAINTEXT ratio. Connection set-up: a raw client (this script)
connects ``--connects`` times and measures, per connection, the time to a
first answer: PLAINTEXT (ApiVersions), SASL_PLAINTEXT and SASL_SSL with
SCRAM-SHA-256 and SCRAM-SHA-512 (TCP, TLS handshake, SaslHandshake, the
SCRAM exchange; the client's own PBKDF2, 4096 iterations, is included and
also reported alone). ACLs: the same producer through a SASL_PLAINTEXT
listener without an authorizer and with the standard authorizer holding
``--acls`` bindings (literal and prefixed, other principals and topics;
the producer's principal allowed WRITE on its topic), one record per
Produce request: requests per second each way, and the difference per
request. Numbers only, never assertions; one run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import os
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import confluent_kafka

import ottla
from ottla import _core
from ottla.testing import make_certificates

PASSWORD = "bench-secret"


def frame(api: int, version: int, cid: int, body: bytes) -> bytes:
    client = b"bench"
    msg = struct.pack(">hhih", api, version, cid, len(client)) + client + body
    return struct.pack(">i", len(msg)) + msg


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def rpc(s: socket.socket, api: int, version: int, body: bytes) -> bytes:
    s.sendall(frame(api, version, 1, body))
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, n)[4:]


def sasl_token(s: socket.socket, token: bytes) -> bytes:
    body = rpc(s, 36, 1, struct.pack(">i", len(token)) + token)
    err, mlen = struct.unpack(">hh", body[:4])
    at = 4 + max(mlen, 0)
    if err:
        raise RuntimeError(f"SaslAuthenticate error {err}")
    (bn,) = struct.unpack(">i", body[at : at + 4])
    return body[at + 4 : at + 4 + bn]


def scram(s: socket.socket, mech: str, user: str, password: str) -> None:
    algo = "sha256" if mech.endswith("256") else "sha512"
    m = mech.encode()
    body = rpc(s, 17, 1, struct.pack(">h", len(m)) + m)
    assert struct.unpack(">h", body[:2])[0] == 0
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = f"n={user},r={nonce}"
    first = sasl_token(s, f"n,,{bare}".encode()).decode()
    fields = dict(f.split("=", 1) for f in first.split(","))
    salted = hashlib.pbkdf2_hmac(
        algo, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    client_key = hmac.new(salted, b"Client Key", algo).digest()
    stored = hashlib.new(algo, client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth = f"{bare},{first},{without_proof}".encode()
    sig = hmac.new(stored, auth, algo).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
    final = sasl_token(s, f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    assert final.startswith(b"v=")


def connect_ms(addr: str, kind: str, ctx: ssl.SSLContext | None, n: int) -> list[float]:
    host, port = addr.rsplit(":", 1)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        raw = socket.create_connection((host, int(port)))
        s: socket.socket = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
        try:
            if kind == "plain":
                rpc(s, 18, 0, b"")
            else:
                scram(s, kind, "bench", PASSWORD)
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            s.close()
    return times


def throughput(conf: dict[str, object], topic: str, records: int, size: int) -> tuple[float, float]:
    p = confluent_kafka.Producer({**conf, "linger.ms": 5, "batch.size": 1_000_000})
    value = b"x" * size
    t0 = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                p.produce(topic, value)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(60) == 0
    produce = records / (time.perf_counter() - t0)
    c = confluent_kafka.Consumer(
        {**conf, "group.id": f"bench-{topic}", "enable.auto.commit": False}
    )
    c.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    # Timed from the first record: the consumer's start-up (metadata,
    # connections, ApiVersions) is not the fetch path.
    got = 0
    t0 = 0.0
    while got < records:
        for m in c.consume(10_000, 1.0):
            if m.error() is None:
                if got == 0:
                    t0 = time.perf_counter()
                got += 1
    fetch = (records - 1) / (time.perf_counter() - t0)
    c.close()
    return produce, fetch


def acl_cost(tmp: Path, n_acls: int, requests: int, rounds: int = 3) -> None:
    """Produce requests per second through SASL_PLAINTEXT, without an
    authorizer and with ``n_acls`` ACLs, one record per request."""
    data = tmp / "acl-data"
    _core.set_scram_user(data, "bench", PASSWORD)
    bindings = []
    for i in range(n_acls):
        pattern = "PREFIXED" if i % 4 == 0 else "LITERAL"
        bindings.append(("TOPIC", f"t{i}-", pattern, f"User:u{i % 50}", "*", "WRITE", "ALLOW"))
    bindings.append(("TOPIC", "acl-bench", "LITERAL", "User:bench", "*", "WRITE", "ALLOW"))
    _core.create_acls(data, bindings)
    rates: dict[str, float] = {}
    configs: list[tuple[str, str | None]] = [
        ("no authorizer", None),
        (f"{n_acls} ACLs", "standard"),
    ]
    # Alternating rounds, the best of each: the machine's noise only slows.
    for label, authorizer in [c for _ in range(rounds) for c in configs]:
        with ottla.Broker(
            data, listeners=["SASL_PLAINTEXT://127.0.0.1:0"], authorizer=authorizer
        ) as b:
            conf: dict[str, object] = {
                "bootstrap.servers": b.listeners["SASL_PLAINTEXT"],
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "bench",
                "sasl.password": PASSWORD,
                "linger.ms": 0,
                "max.in.flight": 1,
            }
            p = confluent_kafka.Producer(conf)
            errors: list[object] = []

            def delivered(err: object, _msg: object, errors: list[object] = errors) -> None:
                if err is not None:
                    errors.append(err)

            p.produce("acl-bench", b"warm-up", on_delivery=delivered)
            assert p.flush(30) == 0
            t0 = time.perf_counter()
            for _ in range(requests):
                p.produce("acl-bench", b"x", on_delivery=delivered)
                p.flush(30)
            assert not errors, errors[:3]
            rate = requests / (time.perf_counter() - t0)
            rates[label] = max(rates.get(label, 0.0), rate)
    (a, ra), (b_, rb) = rates.items()
    print(
        f"authorizer, {requests} Produce requests of one record (max.in.flight 1), best of {rounds}:"
    )
    print(f"  {a:15} {ra:8.0f} req/s")
    print(f"  {b_:15} {rb:8.0f} req/s  ({(1 / rb - 1 / ra) * 1e6:+.1f} us per request)")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--connects", type=int, default=50)
    ap.add_argument("--acls", type=int, default=1000)
    ap.add_argument("--acl-requests", type=int, default=3000)
    ap.add_argument("--acls-only", action="store_true", help="only the authorizer's cost")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ottla-sec-bench-"))
    if args.acls_only:
        acl_cost(tmp, args.acls, args.acl_requests)
        return 0
    certs = make_certificates(tmp / "certs")
    data = tmp / "data"
    _core.set_scram_user(data, "bench", PASSWORD)
    ctx = ssl.create_default_context(cafile=certs.ca)
    with ottla.Broker(
        data,
        listeners=[
            "PLAINTEXT://127.0.0.1:0",
            "SSL://127.0.0.1:0",
            "SASL_PLAINTEXT://127.0.0.1:0",
            "SASL_SSL://127.0.0.1:0",
        ],
        ssl_certfile=certs.server_cert,
        ssl_keyfile=certs.server_key,
    ) as b:
        rows = []
        for name in ("PLAINTEXT", "SSL"):
            conf: dict[str, object] = {
                "bootstrap.servers": b.listeners[name],
                "security.protocol": name,
            }
            if name == "SSL":
                conf["ssl.ca.location"] = certs.ca
            rows.append((name, *throughput(conf, f"t-{name}", args.records, args.size)))
        print(
            f"throughput, {args.records} records of {args.size} B (librdkafka {confluent_kafka.libversion()[0]}):"
        )
        for name, prod, fetch in rows:
            print(
                f"  {name:10} produce {prod / 1e3:8.1f} k/s ({prod * args.size / 1e6:7.1f} MB/s)  fetch {fetch / 1e3:8.1f} k/s"
            )
        print(
            f"  SSL/PLAINTEXT: produce {rows[1][1] / rows[0][1]:.2f}x, fetch {rows[1][2] / rows[0][2]:.2f}x"
        )
        print(f"connection set-up to the first answer, median (p90) of {args.connects}:")
        cases = [
            ("PLAINTEXT, ApiVersions", "PLAINTEXT", "plain", None),
            ("SASL_PLAINTEXT SCRAM-SHA-256", "SASL_PLAINTEXT", "SCRAM-SHA-256", None),
            ("SASL_PLAINTEXT SCRAM-SHA-512", "SASL_PLAINTEXT", "SCRAM-SHA-512", None),
            ("SASL_SSL SCRAM-SHA-512", "SASL_SSL", "SCRAM-SHA-512", ctx),
            ("SSL, ApiVersions", "SSL", "plain", ctx),
        ]
        for label, listener, kind, c in cases:
            t = sorted(connect_ms(b.listeners[listener], kind, c, args.connects))
            print(f"  {label:30} {statistics.median(t):6.2f} ms ({t[int(len(t) * 0.9) - 1]:.2f})")
        t0 = time.perf_counter()
        for _ in range(args.connects):
            hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), b"salt" * 8, 4096)
        print(
            f"  of which the client's PBKDF2-SHA-512 x4096: {(time.perf_counter() - t0) * 1000 / args.connects:.2f} ms"
        )
    acl_cost(tmp, args.acls, args.acl_requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
