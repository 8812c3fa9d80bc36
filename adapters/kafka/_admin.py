"""Kafka topics and offsets: creating topics, waiting until they are visible, committed and end offsets.

:class:`KafkaAdmin` holds one admin client and one offsets consumer per broker, each created on
first use (concurrent first calls share one) and closed by :meth:`KafkaAdmin.close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from reactive_services.errors import BrokerError

from .._admin import wait_visible
from .._source import topic_list
from ._codec import UNAVAILABLE, KafkaSettings, topics_with_leaders, unavailable

__all__ = ["KafkaAdmin", "close_quietly"]

log = logging.getLogger("reactive_services.adapters.kafka")


async def close_quietly(aw: Awaitable[Any]) -> None:
    """Await a client's ``stop``/``close``; an error from it is logged at debug level, not raised."""
    try:
        await aw
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - closing must not mask the original error
        log.debug("ignored while closing: %r", exc)


async def start_client(
    start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]], s: KafkaSettings
) -> None:
    """``await start()`` within ``connect_timeout_s``; on any failure (cancellation included)
    ``stop()`` it quietly first.

    Raises:
        BrokerUnavailableError: the cluster did not answer in time or refused (the cause chained).
    """
    try:
        async with asyncio.timeout(s.connect_timeout_s):
            await start()
    except (KafkaError, OSError, TimeoutError) as exc:
        await close_quietly(stop())
        raise unavailable(s.bootstrap_servers, exc, s.connect_timeout_s) from exc
    except BaseException:
        await close_quietly(stop())
        raise


class KafkaAdmin:
    """Topic administration and offset look-ups on one Kafka cluster.

    Args:
        settings: the broker's settings (bootstrap servers, client id, timeouts in seconds).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets_consumer: AIOKafkaConsumer | None = None
        self._lock: asyncio.Lock | None = None  # creates the admin client and the offsets consumer once

    def _helpers(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _ensure_admin(self) -> AIOKafkaAdminClient:
        if self._admin is not None:
            return self._admin
        async with self._helpers():
            if self._admin is None:
                s = self._settings
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=s.bootstrap_servers,
                    client_id=s.client_id + "-admin",
                    request_timeout_ms=s.request_timeout_ms,
                )
                await start_client(admin.start, admin.close, s)
                self._admin = admin
            return self._admin

    async def _ensure_offsets_consumer(self) -> AIOKafkaConsumer:
        async with self._helpers():  # two first calls at once must not both create one
            if self._offsets_consumer is None:
                s = self._settings
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=s.bootstrap_servers,
                    client_id=s.client_id + "-offsets",
                    enable_auto_commit=False,
                    request_timeout_ms=s.request_timeout_ms,
                )
                try:
                    await consumer.start()
                except BaseException:
                    await close_quietly(consumer.stop())
                    raise
                self._offsets_consumer = consumer
            return self._offsets_consumer

    async def close(self) -> None:
        """Close the admin client and the offsets consumer (they are created again on next use)."""
        admin, self._admin = self._admin, None
        offsets, self._offsets_consumer = self._offsets_consumer, None
        if admin is not None:
            await close_quietly(admin.close())
        if offsets is not None:
            await close_quietly(offsets.stop())

    async def create_topics(
        self, topics: Sequence[str], *, partitions: int = 3, config: Mapping[str, str] | None = None
    ) -> None:
        """Create the topics that do not exist yet, with ``partitions`` partitions and
        replication factor 1 (existing topics are left as they are), then wait until every
        partition of each has a leader (at most ``request_timeout_s`` seconds).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time, or a topic had no
                leader in time.
            BrokerError: the cluster refused to create a topic (the reason is in the message).
        """
        s = self._settings
        names = topic_list(topics)
        admin = await self._ensure_admin()
        try:
            async with asyncio.timeout(s.request_timeout_s):
                resp = await admin.create_topics(
                    [
                        NewTopic(
                            name, num_partitions=partitions, replication_factor=1, topic_configs=dict(config or {})
                        )
                        for name in names
                    ],
                    timeout_ms=s.request_timeout_ms,
                )
        except UNAVAILABLE as exc:
            raise unavailable(s.bootstrap_servers, exc, s.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"creating topics {names} failed: {exc}") from exc
        for entry in resp.topic_errors:
            name, code = entry[0], entry[1]
            if code in (0, TopicAlreadyExistsError.errno):
                continue
            message = entry[2] if len(entry) > 2 else ""
            raise BrokerError(f"creating topic {name!r} failed: error {code} {message or ''}".rstrip())

        async def have_leaders(pending: list[str]) -> Collection[str]:
            # the controller answers CreateTopics before every broker's metadata cache knows
            # the topic; a describe or produce right after would see it missing
            try:
                return topics_with_leaders(await admin.describe_topics(sorted(pending)))
            except KafkaError:
                return []

        await wait_visible(None, names, s.request_timeout_s, probe=have_leaders, what="were created but had no leader")

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset (the next offset the group will read) of ``group_id`` on
        ``topic``/``partition``, or None when the group has committed nothing there.

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            BrokerError: the cluster refused the request.
        """
        s = self._settings
        admin = await self._ensure_admin()
        tp = TopicPartition(topic, partition)
        try:
            async with asyncio.timeout(s.request_timeout_s):
                offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
        except UNAVAILABLE as exc:
            raise unavailable(s.bootstrap_servers, exc, s.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"reading committed offsets of {group_id!r} failed: {exc}") from exc
        meta = offsets.get(tp)
        if meta is None or meta.offset < 0:
            return None
        return int(meta.offset)

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: oldest offset still kept}`` of ``topic`` (``{}`` for an unknown topic).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            BrokerError: the cluster refused the request.
        """
        return await self._offsets(topic, beginning=True)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (``{}`` for an unknown topic).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            BrokerError: the cluster refused the request.
        """
        return await self._offsets(topic, beginning=False)

    async def _offsets(self, topic: str, *, beginning: bool) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (``{}`` for an unknown topic).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            BrokerError: the cluster refused the request.
        """
        s = self._settings
        admin = await self._ensure_admin()
        try:
            async with asyncio.timeout(s.request_timeout_s):
                described = await admin.describe_topics([topic])
                parts = [
                    p["partition"]
                    for t in described
                    if t["topic"] == topic and t["error_code"] == 0
                    for p in t["partitions"]
                ]
                if not parts:
                    return {}
                consumer = await self._ensure_offsets_consumer()
                tps = [TopicPartition(topic, p) for p in parts]
                ends = await (consumer.beginning_offsets(tps) if beginning else consumer.end_offsets(tps))
        except UNAVAILABLE as exc:
            raise unavailable(s.bootstrap_servers, exc, s.request_timeout_s) from exc
        except KafkaError as exc:
            raise BrokerError(f"reading end offsets of {topic!r} failed: {exc}") from exc
        return {tp.partition: int(off) for tp, off in sorted(ends.items())}
