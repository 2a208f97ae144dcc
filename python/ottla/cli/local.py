"""The directory backend: ottla's API on a data directory. The broker
backend (:mod:`ottla.cli.remote`) is this class with a cluster's address."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ottla
from ottla.cli._util import CliError
from ottla.cli.backend import (
    TP,
    GroupInfo,
    MemberInfo,
    OffsetInfo,
    PartitionInfo,
    RecordSink,
    RecordSource,
    TopicInfo,
    unknown_group,
    unknown_topic,
)


class DirectoryBackend:
    def __init__(self, path: str, *, create: bool = False) -> None:
        # Only `topics create` makes a directory: anything else on a
        # mistyped path fails here, naming it, instead of creating it.
        try:
            self.admin = ottla.Admin(path, create=create)
        except ottla.DataDirectoryNotFoundError as e:
            raise CliError(f"{e} (pass --data DIR or set OTTLA_DATA)") from None
        self.path = path
        self.where = f"directory {path}"

    # -- topics -------------------------------------------------------------
    def list_topics(self) -> list[str]:
        return self.admin.list_topics()

    def has_topic(self, name: str) -> bool:
        return name in self.admin.list_topics(internal=True)

    def require_topic(self, name: str, *, suggest_create: bool = True) -> None:
        topics = self.admin.list_topics(internal=True)
        if name not in topics:
            raise unknown_topic(name, self.where, topics, suggest_create=suggest_create)

    def create_topic(self, name: str, partitions: int, config: Mapping[str, str]) -> None:
        self.admin.create_topic(name, partitions=partitions, config=dict(config))

    def delete_topic(self, name: str) -> None:
        self.require_topic(name, suggest_create=False)
        self.admin.delete_topic(name)

    def describe_topic(self, name: str) -> TopicInfo:
        self.require_topic(name)
        d = self.admin.describe_topic(name)
        return TopicInfo(
            name=d.name,
            partitions=[
                PartitionInfo(p.partition, p.start_offset, p.end_offset, p.size_bytes)
                for p in d.partitions
            ],
            config=dict(d.config),
            overrides=dict(d.overrides),
        )

    def alter_topic(
        self,
        name: str,
        set_config: Mapping[str, str],
        delete_config: Sequence[str],
        partitions: int | None,
    ) -> None:
        self.require_topic(name)
        change: dict[str, str | None] = dict(set_config)
        change.update({k: None for k in delete_config})
        if change:
            self.admin.alter_topic_config(name, change)
        if partitions is not None:
            self.admin.create_partitions(name, partitions)

    def partitions(self, topic: str) -> list[int]:
        self.require_topic(topic)
        return [p.partition for p in self.admin.describe_topic(topic).partitions]

    # -- records ------------------------------------------------------------
    def create_topic_on_demand(self, name: str) -> list[int]:
        with ottla.Producer(self.path, auto_create_topics=True) as producer:
            return sorted(producer.partitions_for(name))

    def open_sink(self, auto_create_topics: bool = False) -> RecordSink:
        return RecordSink(ottla.Producer(self.path, auto_create_topics=auto_create_topics))

    def open_source(self, group: str | None, auto_offset_reset: str) -> RecordSource:
        # self.path is a directory, or "kafka://host:port" (the broker
        # backend, a subclass): the same ottla.Consumer either way.
        consumer = ottla.Consumer(  # type: ignore[call-overload]  # auto_offset_reset: str
            self.path,
            group_id=group,
            auto_offset_reset=auto_offset_reset,
            enable_auto_commit=group is not None,
            auto_create_topics=False,
        )
        return RecordSource(consumer, ottla.TopicPartition)

    # -- groups -------------------------------------------------------------
    def list_groups(self) -> list[str]:
        return sorted(self.admin.list_groups())

    def describe_group(self, group: str) -> GroupInfo:
        describe = getattr(self.admin, "describe_group", None)
        if describe is not None:  # the Admin group API (contracts.md)
            d: Any = describe(group)
            if not d.members and not d.offsets and d.state in ("Dead", "Empty"):
                raise unknown_group(group, self.where, self.list_groups())
            return GroupInfo(
                group_id=d.group_id,
                state=d.state,
                protocol=d.protocol,
                members=[
                    MemberInfo(
                        m.member_id,
                        m.client_id,
                        m.host,
                        [(tp.topic, tp.partition) for tp in m.assignment],
                    )
                    for m in d.members
                ],
                offsets=[
                    OffsetInfo(o.topic, o.partition, o.committed, o.end_offset) for o in d.offsets
                ],
            )
        # Before the group API: committed offsets are all the directory tells.
        offsets = self.admin.group_offsets(group)
        if not offsets:
            raise CliError(f"unknown group {group!r} in {self.where} (no committed offsets)")
        return GroupInfo(
            group_id=group,
            state="unknown",
            protocol="",
            members=[],
            offsets=[
                OffsetInfo(t, p, o["committed"], o["end"]) for (t, p), o in sorted(offsets.items())
            ],
        )

    def committed_offsets(self, group: str) -> dict[TP, int]:
        return {tp: o["committed"] for tp, o in self.admin.group_offsets(group).items()}

    def commit_group_offsets(self, group: str, offsets: Mapping[TP, int]) -> dict[TP, int]:
        reset = getattr(self.admin, "reset_offsets", None)
        if reset is not None:  # the Admin group API: refuses while members are live
            done: Mapping[Any, int] = reset(
                group, to_offsets={ottla.TopicPartition(t, p): o for (t, p), o in offsets.items()}
            )
            return {(tp.topic, tp.partition): int(o) for tp, o in done.items()}
        # Before the group API: commit as a member subscribed to the topics;
        # subscribing takes the group's member lock, so this fails while
        # another member is live instead of being overwritten by it later.
        topics = sorted({t for t, _ in offsets})
        try:
            consumer = ottla.Consumer(
                self.path,
                *topics,
                group_id=group,
                enable_auto_commit=False,
                auto_create_topics=False,
            )
        except ottla.GroupMemberConflictError as e:
            raise CliError(f"group {group!r} has a live member; stop it first ({e})") from None
        try:
            consumer.commit({ottla.TopicPartition(t, p): o for (t, p), o in offsets.items()})
        finally:
            consumer.close(autocommit=False)
        return dict(offsets)

    def delete_group(self, group: str) -> None:
        if group not in self.admin.list_groups():
            raise unknown_group(group, self.where, self.list_groups())
        self.admin.delete_group(group)

    def close(self) -> None:
        self.admin.close()
