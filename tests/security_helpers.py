"""Helpers of the security tests (tests/test_security_*.py): certificates,
users, and a broker with secure listeners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ottla
from ottla import _core
from ottla.testing import Certificates, make_certificates

PASSWORD = "alice-secret"


def add_user(data: Path, user: str = "alice", password: str = PASSWORD) -> None:
    _core.set_scram_user(data, user, password)


def certs(tmp_path: Path, clients: tuple[str, ...] = ("alice",)) -> Certificates:
    return make_certificates(tmp_path / "certs", clients=list(clients))


def secure_broker(data: Path, c: Certificates, *listeners: str, **kwargs: Any) -> ottla.Broker:
    """A broker with ``listeners`` (NAME only: each on 127.0.0.1, a free port)."""
    return ottla.Broker(
        data,
        listeners=[f"{name}://127.0.0.1:0" for name in listeners],
        ssl_certfile=c.server_cert,
        ssl_keyfile=c.server_key,
        ssl_cafile=c.ca,
        **kwargs,
    )


def confluent_config(
    broker: ottla.Broker, listener: str, c: Certificates | None = None, /, **extra: Any
) -> dict[str, Any]:
    """confluent-kafka settings for ``listener`` of ``broker``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": broker.listeners[listener],
        "security.protocol": listener,
        "socket.timeout.ms": 10000,
        "message.timeout.ms": 10000,
        "retries": 0,
        "reconnect.backoff.max.ms": 200,
    }
    if c is not None and "SSL" in listener:
        conf["ssl.ca.location"] = c.ca
    conf.update(extra)
    return conf
