"""Publishing to RabbitMQ with publisher confirms, and the topology every process declares.

One robust connection (aio-pika's ``connect_robust``: it reconnects and reopens its channel by
itself after the server restarts) with one confirm channel. A record is published persistent
(``delivery_mode=2``) to its topic's exchange with its partition as the routing key, and
``emit`` returns once RabbitMQ confirmed it (``basic.ack``): for a quorum queue, once a
majority of its replicas wrote it. A publish that fails because the connection is gone is tried
again (the robust connection reconnects meanwhile) until ``publish_timeout_s`` after the first
attempt, as Kafka's producer retries until its request timeout: a server restart shorter than
that does not fail an ``emit``; a record whose confirm was lost with the connection may then be
published twice (at-least-once).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from reactive_services.errors import BrokerUnavailableError, PublishError

from .._codec import encode_headers, encode_key, encode_value, partition_for
from .._message import HeadersIn, RecordMetadata
from .._protocol import Emitter
from .._sink import BrokerSink, Sinks
from ._codec import UNROUTED, RabbitSettings, amqp_headers, exchange_arguments, queue_arguments, queue_name

__all__ = ["RabbitProducer", "declare_unrouted"]

log = logging.getLogger("reactive_services.adapters.rabbitmq")

#: What aio-pika / aiormq raise when the connection or channel is gone or refuses.
CONNECTION_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)

#: First and largest pause between two attempts of a publish that failed, in seconds (doubled).
RETRY_PAUSE_S = (0.1, 2.0)


async def declare_unrouted(channel: aio_pika.abc.AbstractChannel) -> None:
    """Declare the alternate exchange :data:`UNROUTED` (fanout) and its quorum queue."""
    exchange = await channel.declare_exchange(UNROUTED, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(UNROUTED, durable=True, arguments={"x-queue-type": "quorum"})
    await queue.bind(exchange)


async def declare_group_queues(
    channel: aio_pika.abc.AbstractChannel, settings: RabbitSettings, group_id: str, topic: str, partitions: int
) -> list[str]:
    """Declare ``topic``'s exchange and ``group_id``'s quorum queue of each of its partitions,
    bound with the partition's routing key; returns the queue names, by partition."""
    exchange = await channel.declare_exchange(
        topic, aio_pika.ExchangeType.DIRECT, durable=True, arguments=exchange_arguments(partitions)
    )
    names = []
    for p in range(partitions):
        queue = await channel.declare_queue(
            queue_name(group_id, topic, p), durable=True, arguments=queue_arguments(settings, topic)
        )
        await queue.bind(exchange, routing_key=str(p))
        names.append(queue.name)
    return names


class RabbitProducer:
    """The publishing side of one :class:`~reactive_services.adapters.rabbitmq.RabbitBroker`.

    Args:
        settings: the broker's settings.
        emitter: what the sinks publish through (the broker).
    """

    def __init__(self, settings: RabbitSettings, emitter: Emitter) -> None:
        self.settings = settings
        #: ``{topic: partitions}`` of the topics this process created or published to
        self.partitions: dict[str, int] = {}
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._declaring: dict[str, asyncio.Future[AbstractExchange]] = {}
        self._round_robin = itertools.count()
        self._sinks = Sinks(emitter)
        #: publishes tried again after a connection error (each may have reached the server the
        #: first time, its confirm lost with the connection: then the record is there twice)
        self.published_again = 0

    @property
    def started(self) -> bool:
        return self._connection is not None

    async def start(self) -> None:
        """Connect (robust), open the confirm channel, declare :data:`UNROUTED`.

        Raises:
            BrokerUnavailableError: no answer within ``connect_timeout_s``.
        """
        s = self.settings
        try:
            connection = await aio_pika.connect_robust(s.url, timeout=s.connect_timeout_s)
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailableError(f"RabbitMQ at {_safe(s.url)} did not answer: {exc!r}") from exc
        try:
            channel = await connection.channel(publisher_confirms=True)
            await asyncio.wait_for(declare_unrouted(channel), s.connect_timeout_s)
        except CONNECTION_ERRORS as exc:
            await connection.close()
            raise BrokerUnavailableError(f"RabbitMQ at {_safe(s.url)}: cannot declare {UNROUTED}: {exc!r}") from exc
        self._connection, self._channel = connection, channel

    async def stop(self) -> None:
        """Close the connection (after :meth:`flush_sinks`)."""
        connection, self._connection, self._channel = self._connection, None, None
        self._exchanges.clear()
        if connection is not None:
            try:
                await connection.close()
            except CONNECTION_ERRORS:  # already gone
                pass

    def partitions_of(self, topic: str) -> int:
        """The partitions of ``topic``: as created in this process, else the broker's default."""
        return self.partitions.get(topic, self.settings.partitions)

    async def exchange(self, topic: str, partitions: int | None = None) -> AbstractExchange:
        """The declared exchange of ``topic`` (declared once per process, concurrently safe).

        Raises:
            BrokerUnavailableError: not started, or the declaration failed.
        """
        exchange = self._exchanges.get(topic)
        if exchange is not None:
            return exchange
        pending = self._declaring.get(topic)
        if pending is not None:
            return await asyncio.shield(pending)
        channel = self._channel
        if channel is None:
            raise BrokerUnavailableError(f"cannot use topic {topic!r}: the RabbitMQ broker is not started")
        future: asyncio.Future[AbstractExchange] = asyncio.get_running_loop().create_future()
        self._declaring[topic] = future
        try:
            count = partitions or self.partitions_of(topic)
            exchange = await asyncio.wait_for(
                channel.declare_exchange(
                    topic, aio_pika.ExchangeType.DIRECT, durable=True, arguments=exchange_arguments(count)
                ),
                self.settings.connect_timeout_s,
            )
        except CONNECTION_ERRORS as exc:
            error = BrokerUnavailableError(f"cannot declare the exchange of topic {topic!r}: {exc!r}")
            future.set_exception(error)
            future.exception()  # retrieved: the waiters raise it
            raise error from exc
        finally:
            del self._declaring[topic]
        self.partitions.setdefault(topic, count)
        self._exchanges[topic] = exchange
        future.set_result(exchange)
        return exchange

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record and wait for its confirm; see :meth:`RabbitBroker.emit`."""
        return await self._publish(topic, encode_key(key), encode_value(value), encode_headers(headers), timestamp_ms)

    async def emit_batch(
        self,
        topic: str,
        records: Sequence[tuple[str | bytes | None, Any]],
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records (all encoded first), confirms awaited together, in order."""
        encoded = [(encode_key(k), encode_value(v)) for k, v in records]
        await self.exchange(topic)
        return list(await asyncio.gather(*(self._publish(topic, k, v, headers, None) for k, v in encoded)))

    async def _publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...],
        timestamp_ms: int | None,
    ) -> RecordMetadata:
        if self._channel is None:
            raise PublishError(f"cannot publish to {topic!r}: the RabbitMQ broker is not started")
        try:
            exchange = await self.exchange(topic)
        except BrokerUnavailableError as exc:
            raise PublishError(str(exc)) from exc
        partition = partition_for(key, self.partitions_of(topic), next(self._round_robin) if key is None else 0)
        ts = int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
        try:
            table = amqp_headers(key, headers, ts, null=value is None)
        except ValueError as exc:
            raise TypeError(str(exc)) from None
        message = aio_pika.Message(
            b"" if value is None else value,
            headers=table,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.publish_timeout_s
        pause = RETRY_PAUSE_S[0]
        while True:
            try:
                confirm = await exchange.publish(message, str(partition), timeout=max(deadline - loop.time(), 0.001))
                break
            except CONNECTION_ERRORS as exc:
                if self._channel is None or loop.time() + pause >= deadline:  # stopped, or out of time
                    raise PublishError(f"RabbitMQ did not confirm a record to {topic!r}: {exc!r}") from exc
                log.debug("publish to %r failed (%r); trying again in %.1f s", topic, exc, pause)
                self.published_again += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_S[1])
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            raise PublishError(f"RabbitMQ refused a record to {topic!r}: {confirm!r}")
        return RecordMetadata(topic, partition, -1, ts)

    @asynccontextmanager
    async def _own_channel(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        """A channel of its own for the block (a failed passive declare closes its channel), closed after.

        Raises:
            BrokerUnavailableError: not started, or the connection is down (being re-established
                after the server went away: try again).
        """
        connection = self._connection
        if connection is None:
            raise BrokerUnavailableError("the RabbitMQ broker is not started")
        try:
            channel = await connection.channel()
        except CONNECTION_ERRORS as exc:  # aio-pika: RuntimeError("Connection was not opened") while reconnecting
            raise BrokerUnavailableError(
                f"cannot open a channel: the connection to RabbitMQ is down ({exc!r})"
            ) from exc
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def queue_depth(self, queue: str) -> int | None:
        """Messages ready in ``queue`` (not counting those delivered and not acknowledged yet), or
        None if it does not exist (a passive declare on a channel of its own: a missing queue
        closes that channel).

        Raises:
            BrokerUnavailableError: not started, or the connection is down (reconnecting).
        """
        async with self._own_channel() as channel:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
        return declared.declaration_result.message_count or 0

    async def declare_group(self, group_id: str, topics: Sequence[str]) -> None:
        """Declare ``group_id``'s queues of ``topics`` (see :func:`declare_group_queues`).

        Raises:
            BrokerUnavailableError: not started, or a declaration failed.
        """
        async with self._own_channel() as channel:
            try:
                for topic in topics:
                    await asyncio.wait_for(
                        declare_group_queues(channel, self.settings, group_id, topic, self.partitions_of(topic)),
                        self.settings.connect_timeout_s,
                    )
            except CONNECTION_ERRORS as exc:
                raise BrokerUnavailableError(f"cannot declare the queues of group {group_id!r}: {exc!r}") from exc

    async def exchange_exists(self, topic: str) -> bool:
        """Whether the exchange of ``topic`` exists (a passive declare on a channel of its own).

        Raises:
            BrokerUnavailableError: not started.
        """
        if topic in self._exchanges:
            return True
        async with self._own_channel() as channel:
            try:
                await channel.declare_exchange(topic, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False
        return True

    async def queue_depths(self, group_id: str, topic: str) -> dict[int, int]:
        """``{partition: messages ready}`` in ``group_id``'s queues of ``topic`` (see :meth:`queue_depth`)."""
        depths: dict[int, int] = {}
        for p in range(self.partitions_of(topic)):
            depth = await self.queue_depth(queue_name(group_id, topic, p))
            if depth is not None:
                depths[p] = depth
        return depths

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """A :class:`~reactive_services.adapters.BrokerSink` to ``topic``, flushed by :meth:`flush_sinks`."""
        return self._sinks.new(topic, key=key)

    async def flush_sinks(self) -> None:
        """Flush every sink handed out (then forget them).

        Raises:
            Exception: the first sink failure.
        """
        await self._sinks.flush()


def _safe(url: str) -> str:
    """``url`` without its password."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}:***@{tail}"
