"""The pure part of the in-memory broker: stored records, partition choice, partition assignment.

No asyncio here; everything is plain values.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .._codec import partition_for
from .._message import Message

__all__ = [
    "PartitionLog",
    "Retention",
    "StoredRecord",
    "Transaction",
    "assign_range",
    "message_of",
    "partition_for",
]


class Transaction:
    """One transaction of an exactly-once source of the in-memory broker (Kafka's, modelled).

    Records appended while it is open carry it (:attr:`StoredRecord.txn`). Every reader of the
    in-memory broker reads as Kafka's ``read_committed`` consumers do: it stops at the first
    record of an open transaction (the last stable offset) and skips the records of an aborted
    one. The source ends it together with its offset commit, in one step.

    Attributes:
        state: ``"open"``, ``"committed"`` or ``"aborted"``.
        topics: the topics it wrote to (their readers are woken when it ends).
    """

    __slots__ = ("state", "topics")

    def __init__(self) -> None:
        self.state = "open"
        self.topics: set[str] = set()


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
    #: the transaction that wrote it (an exactly-once source's), or None: readers do not read past
    #: a record of an open transaction and skip those of an aborted one (``read_committed``)
    txn: Transaction | None = None
    #: its offset in its partition (set when appended)
    offset: int = -1

    @property
    def size(self) -> int:
        """Bytes the record counts for retention: key, value and headers."""
        size = len(self.key or b"") + len(self.value or b"")
        if self.headers:
            size += sum(len(name) + len(value) for name, value in self.headers)
        return size


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a partition keeps its records, as Kafka's ``retention.bytes`` / ``retention.ms``.

    Attributes:
        max_bytes: the most bytes (keys, values, headers) a partition keeps; the oldest records
            go first (None: no limit).
        max_age_s: records older than this (their timestamp, seconds) are deleted (None: no limit).
    """

    max_bytes: int | None = None
    max_age_s: float | None = None

    @property
    def bounded(self) -> bool:
        return self.max_bytes is not None or self.max_age_s is not None


@dataclass(slots=True)
class PartitionLog:
    """The records of one partition: offsets ``start`` .. ``end - 1`` (older ones were deleted by retention).

    ``len(log)`` is the end offset (the next offset to be written), as for a list; ``log[offset]``
    takes an absolute offset.

    Attributes:
        start: the log start offset: the oldest offset still kept (0 until retention deletes).
        size: bytes kept (see :attr:`StoredRecord.size`).
        compacted: a compacted topic (``cleanup.policy=compact``): retention does not apply.
    """

    records: deque[StoredRecord] = field(default_factory=deque)
    start: int = 0
    size: int = 0
    compacted: bool = False  # a changelog: exempt from retention

    def __len__(self) -> int:
        return self.start + len(self.records)

    def __getitem__(self, offset: int) -> StoredRecord:
        if offset < self.start:
            raise IndexError(f"offset {offset} was deleted by retention (log start {self.start})")
        return self.records[offset - self.start]

    def slice(self, start: int, end: int) -> list[StoredRecord]:
        """The records at offsets ``start`` .. ``end - 1`` (absolute; ``start`` >= the log start)."""
        if start < self.start:
            raise IndexError(f"offset {start} was deleted by retention (log start {self.start})")
        return list(itertools.islice(self.records, start - self.start, end - self.start))

    def items(self) -> Iterator[tuple[int, StoredRecord]]:
        """``(offset, record)`` of every record kept, oldest first."""
        return enumerate(self.records, self.start)

    def append(self, record: StoredRecord, retention: Retention, now_ms: int) -> int:
        """Append ``record``, then delete what ``retention`` no longer keeps; returns its offset."""
        offset = record.offset = len(self)
        self.records.append(record)
        self.size += record.size
        if retention.bounded and not self.compacted:
            self.trim(retention, now_ms)
        return offset

    def trim(self, retention: Retention, now_ms: int) -> int:
        """Delete the oldest records over ``retention``; returns how many were deleted."""
        deleted = 0
        records = self.records
        oldest_ms = None if retention.max_age_s is None else now_ms - retention.max_age_s * 1000
        while records and (
            (retention.max_bytes is not None and self.size > retention.max_bytes)
            or (oldest_ms is not None and records[0].timestamp_ms < oldest_ms)
        ):
            self.size -= records.popleft().size
            self.start += 1
            deleted += 1
        return deleted


def message_of(topic: str, partition: int, offset: int, record: StoredRecord) -> Message:
    """A :class:`Message` of a stored record, not decoded yet (``value`` is the raw bytes)."""
    return Message(
        topic, partition, offset, record.key, record.value, record.headers, record.timestamp_ms, record.value
    )


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
