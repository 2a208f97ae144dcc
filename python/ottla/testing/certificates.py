"""Test helpers that need no test framework.

:func:`make_certificates` writes a throw-away certificate authority, a
server certificate and client certificates for TLS tests, with no
``openssl`` command and no extra package (the certificates are made by the
extension, with rcgen):

>>> import tempfile
>>> from ottla.testing import make_certificates
>>> certs = make_certificates(tempfile.mkdtemp(), clients=["alice"])
>>> sorted(certs.clients)
['alice']
>>> certs.server_cert.endswith("server.pem")
True

The CA's key is written too (``ca.key``), so never use these for anything
but tests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ottla import _core

__all__ = ["Certificates", "make_certificates"]


@dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files :func:`make_certificates` wrote."""

    ca: str
    """The CA certificate: the broker's ``ssl_cafile`` (client certificates)
    and the clients' ``ssl.ca.location`` / ``ssl_cafile``."""
    ca_key: str
    server_cert: str
    """The broker's ``ssl_certfile``."""
    server_key: str
    """The broker's ``ssl_keyfile``."""
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Client name to ``(certificate, key)``; the subject is ``CN=<name>``,
    so the broker's principal is ``User:CN=<name>``."""


def make_certificates(
    dir: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    clients: Sequence[str] = (),
) -> Certificates:
    """Write a new CA, a server certificate valid for ``hosts`` and one
    client certificate per name in ``clients`` into ``dir`` (created if
    missing); keys are mode 0600."""
    paths = dict(_core.make_certificates(dir, hosts=list(hosts), clients=list(clients)))
    return Certificates(
        ca=paths["ca"],
        ca_key=paths["ca_key"],
        server_cert=paths["server_cert"],
        server_key=paths["server_key"],
        clients={
            name: (paths[f"client:{name}:cert"], paths[f"client:{name}:key"]) for name in clients
        },
    )
