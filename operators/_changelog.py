"""Operator state checkpointed to a changelog topic, restored after a restart or a rebalance.

Kafka Streams and Quix Streams keep each task's state in a local store backed by a *changelog*
topic: every change is also written there (compacted: the latest value per key survives), and a
new owner of the input partition rebuilds the store by reading it. :class:`ChangelogStore` is
that mechanism reduced to what the library's operators need: small JSON values per
``(input topic, input partition, key)``, written as the operator's outputs are handled (the
writes are tracked, so the input offsets they cover are committed only once they are durable)
and read back, all at once, when a partition's first record arrives.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Hashable
from typing import Any

import orjson

from reactive_services.adapters import Broker, Message, RecordMetadata

__all__ = ["ChangelogStore"]

TopicPartition = tuple[str, int]


class ChangelogStore:
    """JSON state per input partition and key, checkpointed in the compacted topic ``<name>.changelog``.

    Args:
        broker: where the changelog topic lives (the broker the input comes from).
        name: the store's name (one per operator of a service, e.g. ``"log-analytics.windows"``);
            the topic is ``<name>.changelog``.

    Each record of the changelog has the key ``"<topic>|<partition>|<json key>"`` and the value
    ``{"t": topic, "p": partition, "k": key, "v": value}``; the latest record of a key wins.
    Values and keys must be JSON-serialisable.

    Restoring reads the whole changelog from its beginning to the end offsets it had when the
    read began (a consumer in a group of its own, which is left behind), so a restore costs one
    group join on Kafka (a few seconds) and a pass over the changelog.
    """

    def __init__(self, broker: Broker, name: str) -> None:
        if not name:
            raise ValueError("a changelog store needs a non-empty name")
        self.broker = broker
        self.name = name
        self.topic = f"{name}.changelog"
        self._created = False

    async def _ensure_topic(self) -> None:
        if not self._created:
            await self.broker.create_topics([self.topic], partitions=1, config={"cleanup.policy": "compact"})
            self._created = True

    async def restore(self, partitions: set[TopicPartition]) -> dict[TopicPartition, dict[Hashable, Any]]:
        """The latest value of every key of ``partitions``: ``{(topic, partition): {key: value}}``.

        Raises:
            BrokerError: the changelog could not be read.
        """
        await self._ensure_topic()
        found: dict[TopicPartition, dict[Hashable, Any]] = {tp: {} for tp in partitions}
        ends = await self.broker.end_offsets(self.topic)
        if not any(ends.values()):
            return found
        stop = asyncio.Event()
        ended = asyncio.Event()
        errors: list[Exception] = []
        seen = {p: -1 for p, end in ends.items() if end > 0}

        def on_next(m: Message) -> None:
            entry = m.value
            if isinstance(entry, dict):
                tp = (entry.get("t"), entry.get("p"))
                if tp in found:
                    key = _hashable(entry.get("k"))
                    if entry.get("v") is None:
                        found[tp].pop(key, None)
                    else:
                        found[tp][key] = entry["v"]
            if m.partition in seen:
                seen[m.partition] = m.offset
            if all(seen[p] >= ends[p] - 1 for p in seen):
                stop.set()

        def on_error(exc: Exception) -> None:
            errors.append(exc)
            ended.set()

        group = f"{self.topic}.restore.{uuid.uuid4().hex[:12]}"
        self.broker.source(self.topic, group_id=group, stop=stop, auto_offset_reset="earliest").subscribe(
            on_next, on_error, ended.set
        )
        await ended.wait()
        if errors:
            raise errors[0]
        return found

    def put(self, topic: str, partition: int, key: Hashable, value: Any) -> Awaitable[RecordMetadata]:
        """Write ``value`` for ``key`` of the input partition; the returned awaitable finishes
        when the broker acknowledged it (``track`` it so the input's commit waits for it).

        Raises:
            TypeError: ``key`` or ``value`` is not JSON-serialisable.
        """
        record = {"t": topic, "p": partition, "k": key, "v": value}
        record_key = f"{topic}|{partition}|{orjson.dumps(key).decode()}"
        return self._write(record_key, record)

    async def _write(self, record_key: str, record: dict[str, Any]) -> RecordMetadata:
        await self._ensure_topic()
        return await self.broker.emit(self.topic, record, key=record_key)


def _hashable(key: Any) -> Hashable:
    """A JSON-decoded key as a dict key (lists become tuples)."""
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    return key  # type: ignore[no-any-return]
