"""The broker's private stores (ACLs, SCRAM credentials) on a full disk.

Both are written whole by rename under a lock (``auth::private_file``): a
write that the disk refuses must fail with a clear error and leave the last
good file in force, for the running broker and for the next one. These
tests put the data directory on a small tmpfs, fill it from outside, and
change ACLs and users over the wire and through ``ottla.Admin``.

They need to mount a tmpfs (root) and are skipped otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import confluent_kafka
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

import ottla
import security_helpers as sh
from helpers import fill_filesystem
from ottla import _core
from ottla.admin import AclBinding as OttlaAcl

pytestmark = pytest.mark.timeout(90)

LISTENER = "SASL_PLAINTEXT"


def acl(topic: str, principal: str = "User:alice") -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        principal,
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )


def admin(b: ottla.Broker, user: str, password: str) -> AdminClient:
    return AdminClient(
        sh.confluent_config(
            b,
            LISTENER,
            **{"sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": password},
        )
    )


def described(a: AdminClient) -> list[str]:
    anything = cast(str, None)  # a filter's "any" (typed str in the stubs)
    everything = AclBindingFilter(
        ResourceType.ANY,
        anything,
        ResourcePatternType.ANY,
        anything,
        anything,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    return sorted(x.name for x in a.describe_acls(everything, request_timeout=10).result(15))


def create(a: AdminClient, binding: AclBinding) -> None:
    for f in a.create_acls([binding], request_timeout=10).values():
        f.result(15)


def upsert_user(a: AdminClient, user: str, password: str) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    up = UserScramCredentialUpsertion(user, info, password.encode())
    for f in a.alter_user_scram_credentials([up], request_timeout=10).values():
        f.result(15)


def test_broker_on_a_full_disk_refuses_acl_and_user_changes_and_keeps_the_old(
    tmpfs: Path,
) -> None:
    data = tmpfs / "data"
    sh.add_user(data, "admin", "admin-pw")
    with ottla.Broker(
        data,
        listeners=[f"{LISTENER}://127.0.0.1:0"],
        authorizer="standard",
        super_users=["User:admin"],
    ) as b:
        a = admin(b, "admin", "admin-pw")
        create(a, acl("before"))
        upsert_user(a, "alice", "alice-pw")

        filler = fill_filesystem(tmpfs)
        with pytest.raises(confluent_kafka.KafkaException) as e:
            create(a, acl("while-full"))
        err: KafkaError = e.value.args[0]
        assert err.code() == KafkaError.KAFKA_STORAGE_ERROR
        assert "No space left on device" in err.str()
        with pytest.raises(confluent_kafka.KafkaException) as e:
            upsert_user(a, "bob", "bob-pw")
        err = e.value.args[0]
        assert err.code() == KafkaError.KAFKA_STORAGE_ERROR
        assert "cannot write its SCRAM credentials" in err.str()

        # Nothing half-written: the ACLs and users of before are in force,
        # and a new connection of an existing user still logs in.
        assert described(a) == ["before"]
        assert described(admin(b, "admin", "admin-pw")) == ["before"]
        alice = admin(b, "alice", "alice-pw")
        assert alice.list_topics(timeout=10) is not None

        # Space again: the same changes go through.
        filler.unlink()
        create(a, acl("after"))
        upsert_user(a, "bob", "bob-pw")
        assert described(a) == ["after", "before"]
        assert admin(b, "bob", "bob-pw").list_topics(timeout=10) is not None

    # The next broker on the directory reads the last good files.
    assert sorted(x.name for x in ottla.Admin(data).describe_acls()) == ["after", "before"]
    assert {u for u, _m, _i in _core.scram_users(data)} == {"admin", "alice", "bob"}


def test_admin_acls_on_a_full_disk_raise_oserror_and_keep_the_old(tmpfs: Path) -> None:
    data = tmpfs / "data"
    a = ottla.Admin(data, create=True)
    a.create_acls([OttlaAcl("TOPIC", "before", "LITERAL", "User:alice", "*", "READ", "ALLOW")])
    filler = fill_filesystem(tmpfs)
    with pytest.raises(OSError, match="No space left on device"):
        a.create_acls([OttlaAcl("TOPIC", "full", "LITERAL", "User:alice", "*", "READ", "ALLOW")])
    assert [x.name for x in a.describe_acls()] == ["before"]
    filler.unlink()
    a.create_acls([OttlaAcl("TOPIC", "after", "LITERAL", "User:alice", "*", "READ", "ALLOW")])
    assert sorted(x.name for x in a.describe_acls()) == ["after", "before"]
