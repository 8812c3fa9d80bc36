"""The in-memory broker's :class:`~reactive_services.adapters.LogReader`: reads partitions from
given offsets, outside any consumer group."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from reactive_services.errors import BrokerError

from .._message import Message
from .._protocol import TopicPartition
from ._admin import MemoryCluster

__all__ = ["MemoryLogReader"]

logger = logging.getLogger("reactive_services.adapters.memory")


class MemoryLogReader:
    """Reads the partitions of ``positions`` of ``cluster`` from their offsets (see
    :meth:`reactive_services.adapters.Broker.read_log`)."""

    def __init__(
        self, cluster: MemoryCluster, positions: Mapping[TopicPartition, int], decoder: Callable[[bytes | None], Any]
    ) -> None:
        self._cluster = cluster
        self._positions = dict(positions)
        self._decoder = decoder
        self._wake = asyncio.Event()
        self._topics = {topic for topic, _ in self._positions}
        self._closed = False
        cluster.readers.add(self)

    @property
    def topics(self) -> set[str]:
        """The topics read."""
        return self._topics

    @property
    def positions(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    def wake(self) -> None:
        """A record was appended to one of :attr:`topics`."""
        self._wake.set()

    async def read(self, max_records: int, timeout_s: float = 0.5) -> list[Message]:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, not {max_records}")
        if self._closed:
            raise BrokerError("the log reader is closed")
        out = self._take(max_records)
        if out:
            return out
        self._wake.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._wake.wait()
        except TimeoutError:
            return []
        return self._take(max_records)

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for tp, offset in self._positions.items():
            parts = self._cluster.topics.get(tp[0], [])
            if tp[1] >= len(parts):
                raise BrokerError(f"{tp[0]}[{tp[1]}]: no such partition")
            log = parts[tp[1]]
            if offset < log.start or offset > len(log):
                raise BrokerError(
                    f"{tp[0]}[{tp[1]}]: offset {offset} is out of range (log start {log.start}, end {len(log)})"
                )
            while offset < len(log) and len(out) < max_records:
                record = log[offset]
                try:
                    value = self._decoder(record.value)
                except Exception as exc:
                    logger.warning("%s[%d]@%d does not decode, skipped: %s", tp[0], tp[1], offset, exc)
                else:
                    out.append(
                        Message(
                            tp[0], tp[1], offset, record.key, value, record.headers, record.timestamp_ms, record.value
                        )
                    )
                offset += 1
            self._positions[tp] = offset
            if len(out) >= max_records:
                break
        return out

    async def close(self) -> None:
        self._closed = True
        self._cluster.readers.discard(self)
