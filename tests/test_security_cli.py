"""``ottla users`` and ``ottla serve``'s security flags (issue 18); the data
directory's permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

import ottla
import security_helpers as sh
from helpers import CLI_CODE, Spawn
from ottla import _core

pytestmark = pytest.mark.timeout(60)


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_CODE, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_users_add_list_delete(tmp_path: Path) -> None:
    d = str(tmp_path / "data")
    r = cli("users", "add", "alice", "--password", "pw1", "--data", d)
    assert r.returncode == 0, r.stderr
    r = cli("users", "add", "bob", "--mechanism", "SCRAM-SHA-512", "--data", d, stdin="pw2\n")
    assert r.returncode == 0, r.stderr
    r = cli("users", "list", "--data", d)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["USER", "MECHANISMS"]
    assert lines[1].split()[0] == "alice" and "SCRAM-SHA-256(iterations=4096)" in lines[1]
    assert lines[2].split() == ["bob", "SCRAM-SHA-512(iterations=4096)"]
    # Salted and hashed: the passwords are nowhere in the directory.
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file():
            assert b"pw1" not in f.read_bytes() and b"pw2" not in f.read_bytes()
    creds = tmp_path / "data" / ".ottla" / "scram-credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert cli("users", "delete", "alice", "--data", d).returncode == 0
    r = cli("users", "delete", "alice", "--data", d)
    assert r.returncode == 1 and "no such user: alice" in r.stderr
    assert [u for u, _, _ in _core.scram_users(d)] == ["bob"]
    r = cli("users", "add", "carol", "--password", "x", "--iterations", "10", "--data", d)
    assert r.returncode == 2 and "iterations" in r.stderr


def test_serve_with_sasl_and_plaintext_listeners(tmp_path: Path, spawn: Spawn) -> None:
    d = tmp_path / "data"
    sh.add_user(d)
    child = spawn(
        CLI_CODE,
        "serve",
        "--data",
        d,
        "--listener",
        "SASL_PLAINTEXT://127.0.0.1:0",
        "--listener",
        "PLAINTEXT://127.0.0.1:0",
        "--sasl-enabled-mechanisms",
        "SCRAM-SHA-256",
        "--advertised-listener",
        "PLAINTEXT://advertised.invalid:19092",
    )
    child.wait_line(lambda s: s.startswith("listening on"), timeout=20)
    sasl = child.wait_line(lambda s: s.startswith("listener SASL_PLAINTEXT on")).split()[-1]
    plain = child.wait_line(lambda s: s.startswith("listener PLAINTEXT on")).split()[-1]
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": sasl,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "alice",
            "sasl.password": sh.PASSWORD,
            "message.timeout.ms": 10000,
        }
    )
    errors: list[object] = []
    p.produce("t", b"v", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(15) == 0 and errors == [None]
    md = AdminClient({"bootstrap.servers": plain}).list_topics(timeout=10)
    assert [(str(b.host), b.port) for b in md.brokers.values()] == [("advertised.invalid", 19092)]


def test_serve_help_says_what_is_unprotected() -> None:
    r = cli("serve", "--help")
    assert r.returncode == 0
    assert "no authentication" in r.stdout and "--listener" in r.stdout
    assert "--ssl-client-auth" in r.stdout and "--sasl-enabled-mechanisms" in r.stdout


def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    d = tmp_path / "fresh" / "data"
    with ottla.Broker(d):
        pass
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # An existing directory keeps the permissions its owner gave it.
    e = tmp_path / "shared"
    e.mkdir(mode=0o750)
    os.chmod(e, 0o750)
    with ottla.Broker(e):
        pass
    assert stat.S_IMODE(e.stat().st_mode) == 0o750
