"""The pure part of the in-memory broker: stored records, partition choice, partition assignment.

No asyncio here; everything is plain values.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from .._message import Message

__all__ = ["StoredRecord", "assign_range", "message_of", "partition_for"]


@dataclass(slots=True)
class StoredRecord:
    """One record as a partition keeps it.

    Attributes:
        key: the key bytes, or None.
        value: the value bytes, or None (a tombstone).
        headers: ``((name, bytes), ...)``.
        timestamp_ms: milliseconds since the Unix epoch.
    """

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def message_of(topic: str, partition: int, offset: int, record: StoredRecord) -> Message:
    """A :class:`Message` of a stored record, not decoded yet (``value`` is the raw bytes)."""
    return Message(
        topic, partition, offset, record.key, record.value, record.headers, record.timestamp_ms, record.value
    )


def partition_for(key: bytes | None, partitions: int, round_robin: int) -> int:
    """The partition of a record: CRC-32 of the key (same key, same partition), else round robin.

    Args:
        key: the key bytes, or None.
        partitions: how many partitions the topic has (>= 1).
        round_robin: a counter that increases with each keyless record.
    """
    if key is None:
        return round_robin % partitions
    return zlib.crc32(key) % partitions


def assign_range(members: Sequence[Sequence[str]], partitions: dict[str, int]) -> list[list[tuple[str, int]]]:
    """Share the partitions of each topic among the members subscribed to it.

    Args:
        members: per member, the topics it subscribes to.
        partitions: ``{topic: number of partitions}`` of every topic a member subscribes to.

    Returns:
        Per member (in order), its ``(topic, partition)`` pairs: partition ``i`` of a topic goes
        to the ``i % n``-th of the ``n`` members subscribed to that topic.
    """
    out: list[list[tuple[str, int]]] = [[] for _ in members]
    topics: list[str] = []
    for subscribed in members:
        for topic in subscribed:
            if topic not in topics:
                topics.append(topic)
    for topic in topics:
        subscribers = [i for i, subscribed in enumerate(members) if topic in subscribed]
        for p in range(partitions[topic]):
            out[subscribers[p % len(subscribers)]].append((topic, p))
    return out
