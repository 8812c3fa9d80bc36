"""The in-memory cluster state and its administration: topics, consumer groups, committed offsets.

:class:`MemoryCluster` is what the producer appends to, what the sources read and commit in,
and what ``create_topics`` / ``end_offsets`` / ``committed`` answer from. Everything runs on
one asyncio event loop; nothing here awaits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reactive_services.errors import ConfigError

from .._message import Message
from ._codec import PartitionLog, Retention, assign_range, message_of

__all__ = ["Group", "Member", "MemoryCluster"]

TopicPartition = tuple[str, int]


@dataclass
class Member:
    """One subscription in a consumer group.

    Attributes:
        member_id: unique within the cluster.
        topics: the topics it subscribes to.
        wake: set when a record is appended to one of its topics or the group rebalanced.
        assignment: the partitions it owns now.
        generation: the group generation its assignment belongs to.
        lost: the partitions rebalances took from it since its source last looked (one that
            came back meanwhile is not the same assignment: its source starts it afresh).
    """

    member_id: int
    topics: tuple[str, ...]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    assignment: list[TopicPartition] = field(default_factory=list)
    generation: int = 0
    lost: set[TopicPartition] = field(default_factory=set)


@dataclass
class Group:
    """A consumer group: its committed offsets (next offset to read) and its members.

    ``inline``: the partitions of which a member's source awaits a handler now (a service's
    ``async def`` payload handler), and that member. A rebalance's new owner of such a partition
    waits for it before it reads the committed offset, as Kafka's revocation waits for the
    handler before it commits (at most ``DRAIN_TIMEOUT_S``, the in-memory ``revoke_timeout_s``).
    """

    committed: dict[TopicPartition, int] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    generation: int = 0
    inline: dict[TopicPartition, Member] = field(default_factory=dict)


class MemoryCluster:
    """Topics (partitions of stored records) and consumer groups held in memory.

    Args:
        default_partitions: partitions of a topic created implicitly (by a publish or a subscribe).
        retention: how long each partition keeps its records.
    """

    def __init__(self, default_partitions: int, retention: Retention | None = None) -> None:
        self.default_partitions = default_partitions
        self.retention = retention or Retention()
        self.topics: dict[str, list[PartitionLog]] = {}
        #: records deleted by retention before a consumer group read them: ``{group: count}``
        self.lost_to_retention: dict[str, int] = {}
        self.groups: dict[str, Group] = {}
        #: the open log readers (:class:`~._reader.MemoryLogReader`), woken by appends
        self.readers: set[Any] = set()
        self._member_ids = itertools.count(1)

    # -- topics ----------------------------------------------------------------------------
    def topic(self, topic: str, partitions: int | None = None, *, compacted: bool = False) -> list[PartitionLog]:
        """The partitions of ``topic``, created with ``partitions`` (default: the default) if new.

        Raises:
            ConfigError: ``topic`` is empty (key ``"topic"``).
        """
        parts = self.topics.get(topic)
        if parts is None:
            if not topic:
                raise ConfigError("topic", "must be a non-empty string")
            parts = self.topics[topic] = [
                PartitionLog(compacted=compacted) for _ in range(partitions or self.default_partitions)
            ]
        return parts

    def create_topics(self, topics: Sequence[str], partitions: int, *, compacted: bool = False) -> None:
        """Create the topics that do not exist yet, with ``partitions`` partitions each
        (``compacted``: exempt from retention)."""
        for topic in topics:
            self.topic(topic, partitions, compacted=compacted)

    def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (empty if it does not exist)."""
        return {p: len(records) for p, records in enumerate(self.topics.get(topic, []))}

    def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset of ``group_id`` on ``topic``/``partition``, or None."""
        group = self.groups.get(group_id)
        return None if group is None else group.committed.get((topic, partition))

    def records(self, topic: str) -> list[Message]:
        """Every record of ``topic`` as Messages (value: the raw bytes), partition by partition."""
        return [
            message_of(topic, p, offset, rec)
            for p, log in enumerate(self.topics.get(topic, []))
            for offset, rec in log.items()
        ]

    # -- consumer groups -------------------------------------------------------------------
    def wake(self, topic: str) -> None:
        """Wake every member subscribed to ``topic`` (a record was appended)."""
        for group in self.groups.values():
            for member in group.members:
                if topic in member.topics:
                    member.wake.set()
        for reader in self.readers:
            if topic in reader.topics:
                reader.wake()

    def join(self, group_id: str, topics: tuple[str, ...]) -> tuple[Group, Member]:
        """Add a member subscribing to ``topics`` to ``group_id`` (created if new) and rebalance."""
        for topic in topics:
            self.topic(topic)
        group = self.groups.setdefault(group_id, Group())
        member = Member(next(self._member_ids), topics)
        group.members.append(member)
        self._rebalance(group)
        return group, member

    def leave(self, group: Group, member: Member) -> None:
        """Remove ``member`` from ``group`` and rebalance the others."""
        group.members.remove(member)
        for tp in [tp for tp, owner in group.inline.items() if owner is member]:
            del group.inline[tp]
        self._rebalance(group)

    def _rebalance(self, group: Group) -> None:
        group.generation += 1
        counts = {topic: len(self.topic(topic)) for m in group.members for topic in m.topics}
        shares = assign_range([m.topics for m in group.members], counts)
        for member, share in zip(group.members, shares, strict=True):
            member.lost.update(tp for tp in member.assignment if tp not in share)
            member.assignment = share
            member.generation = group.generation
            member.wake.set()

    def start_offset(self, group: Group, tp: TopicPartition, reset: str) -> int:
        """Where a member starts reading ``tp``: the committed offset, else the start or the end."""
        committed = group.committed.get(tp)
        if committed is not None:
            return committed
        log = self.topic(tp[0])[tp[1]]
        return log.start if reset == "earliest" else len(log)

    def assignment(self, group_id: str) -> list[list[TopicPartition]]:
        """The partitions each current member of ``group_id`` owns."""
        group = self.groups.get(group_id)
        return [] if group is None else [list(m.assignment) for m in group.members]
