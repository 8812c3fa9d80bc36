"""The RabbitMQ broker: :class:`RabbitBroker` implements :class:`~reactive_services.adapters.Broker` on aio-pika.

This module is the facade (settings, lifecycle, wiring); the parts are publishing and the
topology every process declares (:mod:`._producer`), the consume loop (:mod:`._source`) and
the pure mapping (:mod:`._codec`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from reactivex import Observable

from reactive_services.errors import BrokerError, ConfigError

from .._message import Batch, HeadersIn, Message, RecordMetadata
from .._protocol import Decoder, LogReader, TopicPartition
from .._sink import BrokerSink
from .._source import ProcessingGuarantee, source_args
from ..tracing import publish_span, tracing_enabled, with_trace
from ._codec import RabbitSettings
from ._producer import RabbitProducer
from ._source import RabbitSources

__all__ = ["RabbitBroker"]


class RabbitBroker:
    """A RabbitMQ server (3.8 or later: quorum queues) as a :class:`~reactive_services.adapters.Broker`.

    What maps, and how:

    - **topic** -> a durable ``direct`` exchange of that name; **partition** ``p`` -> routing
      key ``"p"``; a record's partition comes from its key (same key, same partition) as on the
      other brokers, or round robin without a key.
    - **consumer group** ``G`` -> one durable quorum queue per partition, ``G.<topic>.<p>``,
      bound to the exchange, declared when a member subscribes. Single active consumer is on:
      one member of the group reads a partition at a time, in order, and another takes over
      when it leaves (members are active and standby, not balanced as Kafka's are).
    - **commit after handling** -> ``basic.ack(multiple=True)`` of a partition's position once
      the Observer handled the messages below it and their tracked work and holds settled,
      with ``concurrency`` K and per-key order as on Kafka; unacknowledged messages are
      redelivered when the member leaves, crashes or loses its connection (at-least-once).
    - **backpressure** -> ``basic.qos(prefetch)`` per partition: RabbitMQ stops sending a
      partition's messages while ``prefetch`` of them are not acknowledged. Operators that
      hold acknowledgements (batches, event-time windows) count against it: give a pipeline
      that holds records a ``prefetch`` above what it holds per partition (a partition stuck
      at its prefetch for 30 s is logged as a WARNING with that remedy).
    - **acks=all** -> publisher confirms: ``emit`` returns once RabbitMQ confirmed the record.
    - **dead letters** -> ``<topic>.DLT``, a topic like any other, with the same reason headers
      (``dlt.reason``, ...); with ``delivery_limit``, RabbitMQ itself moves a message delivered
      that many times (one that crashes its consumer) to the exchange ``<topic>.DLT``.
    - **reconnection** -> the producer's connection is aio-pika's robust one; a source that
      loses its connection reconnects with backoff for ``reconnect_timeout_s``.

    What does not map, plainly:

    - **No log.** A queue keeps a message until its group acknowledged it, then it is gone:
      a group receives the records published after its queue was first declared (its first
      subscription), there is no replay and ``auto_offset_reset`` has no effect. Records that
      no group's queue is bound for yet are not dropped: every topic exchange has the
      alternate exchange ``rs.unrouted``, whose quorum queue of the same name keeps them.
    - **Offsets** count a group's deliveries of a partition in this process (what its sources
      had acknowledged, plus the channel's delivery tag minus one), not positions in a log:
      :meth:`committed` is this process's count of acknowledged messages, :meth:`end_offsets`
      0 for each partition; :meth:`queue_depths` says how many messages wait.
      ``RecordMetadata.offset`` of a publish is -1.
    - **Partition counts** are not stored by RabbitMQ: a topic has the partitions given to
      :meth:`create_topics` in this process, else ``partitions``; every process of a system
      must agree (the exchange carries ``x-rs-partitions`` for people to check).
    - **Exactly-once** needs Kafka's transactions: ``processing_guarantee="exactly_once"``
      raises :class:`ConfigError`. Topic ``config`` (retention, compaction) is ignored.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        partitions: partitions of a topic not created with :meth:`create_topics` here (>= 1).
        prefetch: unacknowledged messages per partition and source (>= 1).
        max_batch: records handed over between two yields to the loop, and the most in one
            ``Batch`` (>= 1).
        connect_timeout_s: seconds to connect and declare (> 0).
        publish_timeout_s: seconds to wait for a publisher confirm (> 0).
        reconnect_timeout_s: seconds a source retries a lost connection (> 0).
        queue_expires_s: delete a group's queue after this many seconds without a consumer
            (None: never).
        delivery_limit: deliveries after which RabbitMQ dead-letters a message (None: none).

    Raises:
        ConfigError: a setting is out of range (names the setting).
    """

    kind = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        partitions: int = 1,
        prefetch: int = 256,
        max_batch: int = 500,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = 30.0,
        reconnect_timeout_s: float = 60.0,
        queue_expires_s: float | None = None,
        delivery_limit: int | None = None,
    ) -> None:
        self.settings = RabbitSettings(
            url,
            partitions,
            prefetch,
            max_batch,
            connect_timeout_s,
            publish_timeout_s,
            reconnect_timeout_s,
            queue_expires_s,
            delivery_limit,
        )
        self._producer = RabbitProducer(self.settings, self)
        self._sources = RabbitSources(self.settings, self._producer, self)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._producer.started

    @property
    def published_again(self) -> int:
        """Publishes tried again after a lost connection (:meth:`emit` retries until
        ``publish_timeout_s``). Each may have reached the server before its confirm was lost: the
        record is then in the queue twice (at-least-once), for the consumers to absorb."""
        return self._producer.published_again

    async def start(self) -> None:
        """Connect the producer and declare ``rs.unrouted``.

        Raises:
            BrokerUnavailableError: RabbitMQ did not answer within ``connect_timeout_s``.
        """
        self._sources.open()
        await self._producer.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """End every running source gracefully (each acknowledges what it handled and completes;
        one still busy after ``timeout`` seconds is cancelled), flush the sinks, disconnect.

        Raises:
            PublishError: a record published through a sink failed (the first failure).
        """
        await self._sources.stop(timeout)
        try:
            await self._producer.flush_sinks()
        finally:
            await self._producer.stop()

    async def __aenter__(self) -> RabbitBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- topics ----------------------------------------------------------------------------
    async def create_topics(
        self, topics: Sequence[str], *, partitions: int = 3, config: Mapping[str, str] | None = None
    ) -> None:
        """Declare the exchanges of ``topics`` with ``partitions`` partitions each (in this
        process; see the class docstring). ``config`` is ignored (no log to keep or compact).

        Raises:
            ConfigError: ``partitions`` < 1.
            BrokerUnavailableError: not started, or the declaration failed.
        """
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ConfigError("partitions", f"must be an int >= 1, got {partitions!r}")
        for topic in topics:
            self._producer.partitions.setdefault(topic, partitions)
            await self._producer.exchange(topic, self._producer.partitions[topic])

    async def declare_group(self, group_id: str, topics: Sequence[str]) -> None:
        """Declare consumer group ``group_id``'s queues of ``topics`` now, before any member
        subscribes: records published from then on wait for the group (a queue keeps only what
        arrives after it exists). A group's first subscription does the same.

        Raises:
            ConfigError: a queue name would be too long or start with ``amq.`` (key ``group_id``).
            BrokerUnavailableError: not started, or a declaration failed.
        """
        await self._producer.declare_group(group_id, topics)

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """How many messages of the partition this broker's sources acknowledged for ``group_id``
        (None: none yet). RabbitMQ keeps no committed offsets (an acknowledged message is
        deleted), so this counts this process's acknowledgements: for a group read by this
        process alone it is the next offset, as on Kafka. Across processes see
        :meth:`queue_depths` for what a group has left to read."""
        return self._sources.acknowledged.get((group_id, topic, partition))

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: 0}`` for every partition of ``topic`` if its exchange exists, else ``{}``:
        an exchange has no log, so no end offsets; what this says is which partitions a topic has
        (as :func:`~reactive_services.adapters.wait_visible` asks).

        Raises:
            BrokerUnavailableError: not started.
        """
        if not await self._producer.exchange_exists(topic):
            return {}
        return dict.fromkeys(range(self._producer.partitions_of(topic)), 0)

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: 0}`` for every partition of ``topic`` if its exchange exists, else ``{}``
        (an exchange keeps no log; see :meth:`end_offsets`)."""
        return await self.end_offsets(topic)

    async def read_log(self, positions: Mapping[TopicPartition, int], *, decode: Decoder = "json") -> LogReader:
        """Refused: RabbitMQ keeps no log to read again. A message published to an exchange is
        routed to the queues bound at that moment and deleted from a queue once acknowledged, so
        nothing can be read from an earlier position (a websocket client cannot resume from a
        cursor on this broker; use Kafka or the in-memory broker for that).

        Raises:
            BrokerError: always.
        """
        raise BrokerError(
            "RabbitMQ keeps no log: a consumed message is deleted from its queue, so records cannot be"
            " read again from an offset (read_log needs Kafka or the in-memory broker)"
        )

    async def queue_depths(self, group_id: str, topic: str) -> dict[int, int]:
        """``{partition: messages ready}`` in ``group_id``'s queues of ``topic`` (messages
        delivered and not acknowledged yet are not counted; partitions whose queue does not exist
        are left out): RabbitMQ's answer to a group's lag.

        Raises:
            BrokerUnavailableError: not started, or the connection is down (reconnecting).
        """
        return await self._producer.queue_depths(group_id, topic)

    async def queue_depth(self, queue: str) -> int | None:
        """Messages ready in queue ``queue`` (e.g. ``"rs.unrouted"``), or None if it does not exist.

        Raises:
            BrokerUnavailableError: not started.
        """
        return await self._producer.queue_depth(queue)

    # -- producing -------------------------------------------------------------------------
    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record, persistent, and wait for RabbitMQ's confirm; see
        :meth:`reactive_services.adapters.Broker.emit` (``RecordMetadata.offset`` is -1).

        Raises:
            PublishError: not started, refused (``basic.nack``), or no confirm within
                ``publish_timeout_s``.
            TypeError: ``value`` is not JSON-serialisable, or a header uses a reserved name
                (``rs-key``, ``rs-ts``, ``rs-null``).
        """
        if tracing_enabled():
            with publish_span("rabbitmq", topic, key=key) as trace_headers:
                headers = with_trace(headers, trace_headers)
                return await self._producer.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)
        return await self._producer.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records, their confirms awaited together; see
        :meth:`reactive_services.adapters.Broker.emit_batch`."""
        if tracing_enabled():
            with publish_span("rabbitmq", topic, count=len(records)) as trace_headers:
                return await self._producer.emit_batch(topic, records, headers=trace_headers)
        return await self._producer.emit_batch(topic, records)

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """An Observer publishing each value to ``topic``; see :class:`reactive_services.adapters.BrokerSink`."""
        return self._producer.sink(topic, key=key)

    # -- consuming -------------------------------------------------------------------------
    def source(
        self,
        topics: str | Sequence[str],
        *,
        group_id: str,
        decode: Decoder = "json",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        stop: asyncio.Event | None = None,
        on_assigned: Callable[[], None] | None = None,
        concurrency: int = 1,
        on_closed: Callable[[], None] | None = None,
        processing_guarantee: ProcessingGuarantee = "at_least_once",
    ) -> Observable[Message]:
        """A cold Observable of ``topics`` read in consumer group ``group_id``; see
        :meth:`reactive_services.adapters.Broker.source` for the contract.

        Subscribing connects, declares and binds the group's queues and consumes them;
        ``on_assigned`` is called once they are consumed (every record published after it
        reaches the group). ``auto_offset_reset`` has no effect (see the class docstring).

        Raises:
            ConfigError: as :meth:`reactive_services.adapters.Broker.source`, or
                ``processing_guarantee="exactly_once"`` (key ``processing_guarantee``).
        """
        args = source_args(
            topics, group_id, decode, auto_offset_reset, concurrency, processing_guarantee=processing_guarantee
        )
        _at_least_once(args.exactly_once)
        return self._sources.observable(args, stop=stop, on_assigned=on_assigned, on_closed=on_closed)

    def source_batches(
        self,
        topics: str | Sequence[str],
        *,
        group_id: str,
        decode: Decoder = "json",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        stop: asyncio.Event | None = None,
        on_assigned: Callable[[], None] | None = None,
        concurrency: int = 1,
        on_closed: Callable[[], None] | None = None,
        processing_guarantee: ProcessingGuarantee = "at_least_once",
    ) -> Observable[Batch]:
        """:meth:`source` in :class:`~reactive_services.adapters.Batch` es: the deliveries of one
        partition that arrived together (at most ``max_batch``); see
        :meth:`reactive_services.adapters.Broker.source_batches`.

        Raises:
            ConfigError: as :meth:`source`.
        """
        args = source_args(
            topics,
            group_id,
            decode,
            auto_offset_reset,
            concurrency,
            batches=True,
            processing_guarantee=processing_guarantee,
        )
        _at_least_once(args.exactly_once)
        source = self._sources.observable(args, stop=stop, on_assigned=on_assigned, on_closed=on_closed)
        return cast("Observable[Batch]", source)


def _at_least_once(exactly_once: bool) -> None:
    if exactly_once:
        raise ConfigError(
            "processing_guarantee",
            "exactly_once needs Kafka transactions; RabbitMQ sources are at_least_once (use KafkaBroker)",
        )
