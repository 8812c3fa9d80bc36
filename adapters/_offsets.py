"""Which offset a consumer may commit when several messages of a partition are in flight at once.

Pure bookkeeping (no asyncio, no I/O), shared by the Kafka and in-memory sources (through the
in-flight window every source delivers through).

The rule (the one Kafka consumers with parallel processing follow, e.g. Confluent's
parallel-consumer and Spring Kafka's out-of-order commits): the committed offset of a
partition is the *next offset to read*, so it may only move up to the lowest offset that is
still in flight; everything below it has been handled. Offsets the source never delivered
(compacted away, transaction markers, records that were dead-lettered or filtered, which the
source marks started *and* completed) do not hold the commit back, because only offsets that
were started count.

Example, the case of the public bug report (a consumer committing the highest completed
offset loses 32 and 33 on a crash)::

    t = OffsetTracker()
    t.assign(tp, 32)                 # committed offset 31 -> position 32
    for o in range(32, 38): t.start(tp, o)
    for o in (34, 35, 36, 37): t.complete(tp, o)
    t.committable(tp)                # 32: nothing past 31 is committed
    t.complete(tp, 33); t.complete(tp, 32)
    t.committable(tp)                # 38
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["OffsetTracker"]

TP = TypeVar("TP", bound=Hashable)


@dataclass
class _Partition:
    epoch: int
    position: int | None  # lowest offset that may still be uncommitted (None: nothing seen yet)
    committed: int | None = None  # what was last reported committed by mark_committed
    high: int | None = None  # highest offset started + 1
    in_flight: set[int] = field(default_factory=set)
    heap: list[int] = field(default_factory=list)  # in-flight offsets; lazy deletion


class OffsetTracker(Generic[TP]):
    """Per partition, the offsets started and completed, and the offset safe to commit.

    Partitions are any hashable key (``aiokafka.TopicPartition``, ``(topic, partition)``).
    Offsets of a partition must be started in increasing order (as a consumer reads them);
    they may complete in any order.

    Cost: ``start`` and ``complete`` are O(log n), ``committable`` amortised O(log n), with n
    the number of offsets in flight in that partition.
    """

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._epochs = 0

    def assign(self, tp: TP, position: int | None = None) -> int:
        """Start tracking ``tp`` afresh from ``position`` (the committed offset: the next to read).

        With ``position=None`` the position is the first offset started. Any previous state of
        ``tp`` is forgotten. Returns the partition's epoch (see :meth:`complete`).
        """
        self._epochs += 1
        self._parts[tp] = _Partition(self._epochs, position, committed=position)
        return self._epochs

    def _next(self, tp: TP, offset: int) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            self.assign(tp)
            part = self._parts[tp]
        if part.position is None:
            part.position = offset
        if offset < part.position or (part.high is not None and offset < part.high):
            raise ValueError(
                f"offset {offset} of {tp!r} started out of order (next expected >= {part.high or part.position})"
            )
        return part

    def start(self, tp: TP, offset: int, last: int | None = None) -> int:
        """Record that ``offset`` of ``tp`` is now in flight; returns the partition's epoch.

        With ``last`` (>= ``offset``), the offsets ``offset + 1 .. last`` are taken with it: a
        batch whose fate is the one of ``offset`` (nothing of it is committable before
        ``offset`` completes; after, everything up to ``last`` is).

        An unknown partition is assigned implicitly with ``offset`` as its position and no
        committed offset.

        Raises:
            ValueError: ``offset`` is not above every offset already started in ``tp``, or
                below the partition's position.
        """
        part = self._next(tp, offset)
        part.in_flight.add(offset)
        heapq.heappush(part.heap, offset)
        part.high = (offset if last is None else last) + 1
        return part.epoch

    def advance(self, tp: TP, offset: int) -> None:
        """Record that ``offset`` of ``tp`` was started and completed at once (handled
        synchronously): :meth:`start` then :meth:`complete`, in O(1).

        Raises:
            ValueError: as :meth:`start`.
        """
        part = self._parts.get(tp)
        if part is not None and part.high is not None and offset >= part.high:
            part.high = offset + 1  # the hot path: the next offset of a known partition
            return
        self._next(tp, offset).high = offset + 1

    def complete(self, tp: TP, offset: int, epoch: int | None = None) -> bool:
        """Record that ``offset`` of ``tp`` has been handled (a dead-lettered or filtered
        message counts as handled).

        Returns False, and changes nothing, when ``tp`` is not tracked (revoked), when
        ``epoch`` is given and is not the partition's current epoch (the work belongs to an
        earlier assignment of the same partition), or when ``offset`` is not in flight.
        """
        part = self._parts.get(tp)
        if part is None or (epoch is not None and epoch != part.epoch) or offset not in part.in_flight:
            return False
        part.in_flight.discard(offset)
        return True

    def committable(self, tp: TP) -> int | None:
        """The offset to commit for ``tp`` (the next offset to read), or None if ``tp`` is not
        tracked or nothing was started nor assigned a position.

        It is the lowest offset still in flight, or, when none is, one past the highest
        offset started; it never moves past an offset still in flight.
        """
        part = self._parts.get(tp)
        if part is None:
            return None
        heap = part.heap
        while heap and heap[0] not in part.in_flight:
            heapq.heappop(heap)
        if heap:
            return heap[0]
        return part.high if part.high is not None else part.position

    def in_flight(self, tp: TP | None = None) -> int:
        """How many offsets are in flight in ``tp`` (or in all partitions when None)."""
        if tp is None:
            return sum(len(p.in_flight) for p in self._parts.values())
        part = self._parts.get(tp)
        return 0 if part is None else len(part.in_flight)

    def to_commit(self, only: Iterable[TP] | None = None) -> dict[TP, int]:
        """``{tp: committable offset}`` of the partitions (among ``only``, if given) whose
        committable offset differs from the one last passed to :meth:`mark_committed`."""
        out: dict[TP, int] = {}
        for tp in self._parts if only is None else only:
            part = self._parts.get(tp)
            if part is None:
                continue
            offset = self.committable(tp)
            if offset is not None and offset != part.committed:
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        """Record that ``offsets`` were committed (unknown partitions are ignored)."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset

    def revoke(self, tp: TP) -> None:
        """Forget ``tp``: its in-flight offsets will never be committed by this tracker, and
        completions reported for it later are ignored."""
        self._parts.pop(tp, None)

    def partitions(self) -> list[TP]:
        """The partitions tracked."""
        return list(self._parts)

    def epoch(self, tp: TP) -> int | None:
        """The current epoch of ``tp`` (changes with each :meth:`assign`), or None."""
        part = self._parts.get(tp)
        return None if part is None else part.epoch
