"""`__consumer_offsets` holds every group's committed positions: no door may
delete it or give it a config that would drop its records, and no user may
create an internal topic. Other names starting with `__` are ordinary topics
(as in Kafka): what can be created can be deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

import ottla

OFFSETS = "__consumer_offsets"


def with_committed_offsets(data_dir: Path) -> ottla.Admin:
    """A directory where group "g" has committed offset 1 of topic t."""
    with ottla.Producer(data_dir) as p:
        p.send("t", b"x", partition=0).get(10)
    with ottla.Consumer(data_dir, group_id="g", enable_auto_commit=False) as c:
        c.assign([ottla.TopicPartition("t", 0)])
        c.commit({ottla.TopicPartition("t", 0): 1})
    return ottla.Admin(data_dir)


def committed(admin: ottla.Admin) -> dict[tuple[str, int], dict[str, int]]:
    return admin.group_offsets("g")


def test_embedded_admin_cannot_delete_or_unprotect_the_offsets_topic(data_dir: Path) -> None:
    admin = with_committed_offsets(data_dir)
    with pytest.raises(ottla.InvalidTopicError, match="internal"):
        admin.delete_topic(OFFSETS)
    for bad in (
        {"cleanup.policy": "delete"},
        {"cleanup.policy": "compact,delete"},
        {"retention.ms": 1},
        {"retention.bytes": 0},
    ):
        with pytest.raises(ottla.InvalidConfigError, match="internal topic"):
            admin.alter_topic_config(OFFSETS, bad)
    with pytest.raises(ottla.InvalidTopicError, match="internal"):
        admin.create_topic("__transaction_state")
    assert "__transaction_state" not in admin.list_topics(internal=True)
    # Harmless settings are still allowed.
    admin.alter_topic_config(OFFSETS, {"min.cleanable.dirty.ratio": 0.3})
    assert committed(admin)[("t", 0)]["committed"] == 1


def test_double_underscore_user_topics_can_be_created_and_deleted(data_dir: Path) -> None:
    admin = ottla.Admin(data_dir)
    admin.create_topic("__evil")
    assert "__evil" in admin.list_topics()
    admin.delete_topic("__evil")
    assert "__evil" not in admin.list_topics(internal=True)


def test_kafka_python_admin_is_refused_on_the_offsets_topic(
    broker: ottla.Broker, data_dir: Path
) -> None:
    pytest.importorskip("kafka")
    import kafka
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import InvalidConfigurationError, InvalidTopicError

    admin = with_committed_offsets(data_dir)
    a = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        r = a.delete_topics([OFFSETS], raise_errors=False)
        assert [t["error_code"] for t in r["topics"]] == [InvalidTopicError.errno]
        res = ConfigResource(
            ConfigResourceType.TOPIC,
            OFFSETS,
            configs={"cleanup.policy": "delete", "retention.ms": "1"},
        )
        out = a.alter_configs([res], incremental=False)  # AlterConfigs
        # kafka-python reports each resource's outcome as a string.
        assert str(out["topic"][OFFSETS]).startswith(
            f"[Error {InvalidConfigurationError.errno}]"
        ), out
        r = a.create_topics([NewTopic("__transaction_state", 1, 1)], raise_errors=False)
        assert [t["error_code"] for t in r["topics"]] == [InvalidTopicError.errno]
        a.create_topics([NewTopic("__evil", 1, 1)])
        r = a.delete_topics(["__evil"], raise_errors=False)
        assert [t["error_code"] for t in r["topics"]] == [0]
    finally:
        a.close()
    assert OFFSETS in admin.list_topics(internal=True)
    assert committed(admin)[("t", 0)]["committed"] == 1
    assert "__evil" not in admin.list_topics(internal=True)


def test_confluent_admin_is_refused_on_the_offsets_topic(
    broker: ottla.Broker, data_dir: Path
) -> None:
    pytest.importorskip("confluent_kafka")
    import confluent_kafka as ck
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    admin = with_committed_offsets(data_dir)
    a = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    with pytest.raises(ck.KafkaException) as e:
        a.delete_topics([OFFSETS])[OFFSETS].result(15)
    assert e.value.args[0].code() == ck.KafkaError.TOPIC_EXCEPTION
    for entry in (
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET),
    ):
        inc = ConfigResource(ConfigResource.Type.TOPIC, OFFSETS, incremental_configs=[entry])
        with pytest.raises(ck.KafkaException) as e:
            a.incremental_alter_configs([inc])[inc].result(15)
        assert e.value.args[0].code() == ck.KafkaError.INVALID_CONFIG
    assert committed(admin)[("t", 0)]["committed"] == 1
    assert admin.describe_topic(OFFSETS).config["cleanup.policy"] == "compact"
