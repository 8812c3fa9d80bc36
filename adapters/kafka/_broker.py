"""The Kafka facade: :class:`KafkaBroker`, the :class:`reactive_services.adapters.Broker` Protocol on aiokafka.

It holds the settings and wires the parts, one file per job: topics and offsets
(:mod:`._admin`), publishing (:mod:`._producer`), the consume loop (:mod:`._source`) and the
pure mapping (:mod:`._codec`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from reactivex import Observable

from .._codec import resolve_decoder
from .._message import Batch, HeadersIn, Message, RecordMetadata
from .._protocol import Decoder, TopicPartition
from .._sink import BrokerSink
from .._source import ProcessingGuarantee, source_args
from ..tracing import publish_span, tracing_enabled, with_trace
from ._admin import KafkaAdmin
from ._codec import KafkaSettings
from ._producer import KafkaProducer
from ._reader import KafkaLogReader
from ._source import KafkaSources, SourceStats

__all__ = ["KafkaBroker", "SourceStats"]


class KafkaBroker:
    """The :class:`reactive_services.adapters.Broker` Protocol on Apache Kafka, through aiokafka.

    One idempotent producer (``acks="all"``) is shared by ``emit``, ``emit_batch``,
    sinks and dead-lettering; each subscription to :meth:`source` runs its own consumer
    in the consumer group it names.

    Args:
        bootstrap_servers: ``"host:port[,host:port]"``.
        client_id: the Kafka client id of the producer and consumers.
        connect_timeout_s: seconds to wait for the cluster when connecting (``start``,
            a source's first connection).
        request_timeout_s: seconds to wait for an acknowledgement or a metadata answer.
        max_batch: at most this many records per ``getmany()`` fetch of a source.
        commit_interval_s: a source commits handled offsets after a fetched batch once
            this many seconds have passed since its last commit (0 = after every batch),
            and always when it stops, is disposed or fails.
        poll_timeout_s: how long one fetch waits for records; bounds how fast a source
            notices its ``stop`` event, in seconds.
        revoke_timeout_s: how long a source whose partitions a
            rebalance takes away waits for their messages in flight before it commits what
            is contiguous-complete and abandons the rest, in seconds. Keep it well below
            ``max_poll_interval_ms`` (the rebalance timeout).
        consumer_options: extra keyword arguments for each source's ``AIOKafkaConsumer``
            (e.g. ``{"max_poll_interval_ms": 60_000, "session_timeout_ms": 10_000}``); they
            override ``client_id`` and ``request_timeout_ms``.

    Raises:
        ConfigError: a malformed ``bootstrap_servers``, a non-positive timeout/size, or a
            ``consumer_options`` key the source sets itself (``group_id``,
            ``enable_auto_commit``, ``auto_offset_reset``, ``bootstrap_servers``, ...).
    """

    kind: str = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "reactive-services",
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
        max_batch: int = 500,
        commit_interval_s: float = 1.0,
        poll_timeout_s: float = 0.2,
        revoke_timeout_s: float = 5.0,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        settings = KafkaSettings(
            bootstrap_servers,
            client_id=client_id,
            connect_timeout_s=connect_timeout_s,
            request_timeout_s=request_timeout_s,
            max_batch=max_batch,
            commit_interval_s=commit_interval_s,
            poll_timeout_s=poll_timeout_s,
            revoke_timeout_s=revoke_timeout_s,
            consumer_options=consumer_options or {},
        )
        #: The checked settings (read-only).
        self.settings = settings
        self._admin = KafkaAdmin(settings)
        self._producer = KafkaProducer(settings, self)
        self._sources = KafkaSources(settings, self)

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<KafkaBroker {self.bootstrap_servers} {state}, {len(self._sources)} source(s)>"

    # ------------------------------------------------------------------ settings

    @property
    def bootstrap_servers(self) -> str:
        """``"host:port[,host:port]"``."""
        return self.settings.bootstrap_servers

    @property
    def client_id(self) -> str:
        """The Kafka client id of the producer and consumers."""
        return self.settings.client_id

    @property
    def connect_timeout_s(self) -> float:
        """Seconds to wait for the cluster when connecting."""
        return self.settings.connect_timeout_s

    @property
    def request_timeout_s(self) -> float:
        """Seconds to wait for an acknowledgement or a metadata answer."""
        return self.settings.request_timeout_s

    @property
    def max_batch(self) -> int:
        """At most this many records per fetch of a source."""
        return self.settings.max_batch

    @property
    def commit_interval_s(self) -> float:
        """Seconds between two commits of a source after fetched batches (0: after every batch)."""
        return self.settings.commit_interval_s

    @property
    def poll_timeout_s(self) -> float:
        """Seconds one fetch waits for records."""
        return self.settings.poll_timeout_s

    @property
    def revoke_timeout_s(self) -> float:
        """Seconds a source waits, at revocation, for the revoked partitions' messages in flight."""
        return self.settings.revoke_timeout_s

    @property
    def consumer_options(self) -> dict[str, Any]:
        """Extra ``AIOKafkaConsumer`` arguments of each source (a copy)."""
        return dict(self.settings.consumer_options)

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._producer.started

    @property
    def running_sources(self) -> int:
        """How many source subscriptions still have a consumer task."""
        return len(self._sources)

    async def start(self) -> None:
        """Start the producer and check that the cluster answers (idempotent).

        Raises:
            BrokerUnavailableError: no answer within ``connect_timeout_s`` seconds; nothing
                is left running.
        """
        await self._producer.start()

    async def stop(self) -> None:
        """Stop every running source (commit, close, ``on_completed``), flush the sinks,
        then stop the producer and the admin client.

        A source still busy after ``request_timeout_s`` seconds is cancelled (its handled
        offsets are committed, its consumer closed).

        Raises:
            PublishError: a sink's publish failed (after everything was closed).
        """
        await self._sources.stop(self.settings.request_timeout_s)
        try:
            await self._producer.flush_sinks()
        finally:
            await self._producer.stop()
            await self._admin.close()

    async def __aenter__(self) -> KafkaBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ admin

    async def create_topics(
        self, topics: Sequence[str], *, partitions: int = 3, config: Mapping[str, str] | None = None
    ) -> None:
        """Create the topics that do not exist yet, with ``partitions`` partitions and
        replication factor 1 (existing topics are left as they are); returns once every
        partition has a leader. ``config``: topic settings, e.g. ``{"cleanup.policy": "compact"}``.

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            BrokerError: the cluster refused to create a topic (the reason is in the message).
        """
        await self._admin.create_topics(topics, partitions=partitions, config=config)

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset (the next offset the group will read) of ``group_id`` on
        ``topic``/``partition``, or None when the group has committed nothing there.

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
        """
        return await self._admin.committed(group_id, topic, partition)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (``{}`` for an unknown topic).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
        """
        return await self._admin.end_offsets(topic)

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: oldest offset still kept}`` of ``topic`` (``{}`` for an unknown topic).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
        """
        return await self._admin.beginning_offsets(topic)

    async def read_log(self, positions: Mapping[TopicPartition, int], *, decode: Decoder = "json") -> KafkaLogReader:
        """A started :class:`~reactive_services.adapters.LogReader` of the partitions in
        ``positions``, each from its offset: a consumer without a group (``assign`` + ``seek``),
        nothing committed; ``consumer_options`` apply (see :meth:`Broker.read_log
        <reactive_services.adapters.Broker.read_log>`).

        Raises:
            BrokerUnavailableError: the cluster did not answer in time.
            ConfigError: ``decode`` is not a decoder.
        """
        reader = KafkaLogReader(self.settings, positions, resolve_decoder(decode))
        await reader.start()
        return reader

    # ------------------------------------------------------------------ producing

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record and wait for its acknowledgement (acks=all).

        ``value`` is JSON-encoded with orjson unless it is ``bytes`` (``None`` is a
        tombstone). The broker is started first if it was not.

        Raises:
            PublishError: refused, or not acknowledged within ``request_timeout_s`` seconds.
            BrokerUnavailableError: the broker was not started and cannot be reached.
            TypeError: ``value`` is not JSON-serialisable, or a bad key/header type.
        """
        if tracing_enabled():
            with publish_span("kafka", topic, key=key) as trace_headers:
                headers = with_trace(headers, trace_headers)
                return await self._producer.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)
        return await self._producer.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records, in order, and wait until all are acknowledged.

        Raises:
            PublishError: any record was refused or not acknowledged within
                ``request_timeout_s`` seconds after the last one was handed to the producer.
            TypeError: a value is not JSON-serialisable (nothing of the batch is sent).
        """
        if tracing_enabled():
            with publish_span("kafka", topic, count=len(records)) as trace_headers:
                return await self._producer.emit_batch(topic, records, headers=trace_headers)
        return await self._producer.emit_batch(topic, records)

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """An Observer that publishes each ``on_next`` value to ``topic``: a :class:`BrokerSink`.

        Each publish holds the commit of the source message being delivered, if any, so that
        message is committed only after the publish was acknowledged, while the source goes on
        delivering (past ``max_unacknowledged`` publishes waiting, a record is tracked instead:
        backpressure); failures end that source's stream, are logged and raised by
        ``sink.flush()`` and :meth:`stop`. Under an exactly-once source the records go into its
        transaction.

        Args:
            topic: the topic to publish to.
            key: computes the record key from a value (None: no key).
        """
        return self._producer.sink(topic, key=key)

    # ------------------------------------------------------------------ consuming

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
        """A cold Observable of the records of ``topics``, read in consumer group ``group_id``.

        Each subscription (made on a running event loop) starts an asyncio task with its
        own ``AIOKafkaConsumer`` (``enable_auto_commit=False``) that fetches up to
        ``max_batch`` records at a time and, for each record in order:

        1. decodes the value (``decode``: ``"json"``, ``None`` for raw bytes, or a callable);
           a record that does not decode is published raw to ``<topic>.DLT`` with
           :func:`dead_letter_headers` (:func:`~reactive_services.adapters.publish_dead_letter`),
           counts as handled once the dead letter is acknowledged, and the stream goes on;
        2. calls ``on_next(message)`` and awaits the work the observer registered with
           ``message.track``;
        3. counts the message as handled; handled offsets (last handled + 1 per
           partition) are committed after fetched batches (see ``commit_interval_s``) and
           when the stream ends.

        Endings: ``stop`` set (or ``broker.stop()``) -> finish the current message,
        commit, close the consumer, ``on_completed``. ``on_next`` raising or tracked work
        failing -> that message is not committed, the consumer is closed, ``on_error(exc)``.
        Disposing -> the fetch or pending work is cancelled, handled offsets committed,
        the consumer closed, no terminal call (a message whose ``on_next`` disposed the
        subscription is not counted as handled). Failing to connect within
        ``connect_timeout_s`` -> ``on_error(BrokerUnavailableError)``.

        ``on_assigned``: called once, from the fetch loop, after the first fetch that
        finds partitions assigned, once ``consumer.position(tp)`` has resolved the
        position of every assigned partition (so with ``auto_offset_reset="latest"`` a
        record published after the call is never skipped).

        ``concurrency`` K > 1 (see :meth:`reactive_services.adapters.Broker.source`): up to K messages in
        flight; ``on_next`` is called one at a time, in fetched order, without awaiting the
        previous message's tracked work, except that a keyed message waits for the
        previous in-flight message of the same key and partition (the whole delivery waits
        meanwhile: head-of-line). Commits (every ``commit_interval_s`` and at the end) are
        each partition's lowest offset still in flight. While the window is full the
        source pauses its assigned partitions (``consumer.pause``) and keeps calling
        ``getmany(timeout_ms=0)`` at least every ``poll_timeout_s``, so fetching stops, the
        buffer stays at most one fetch (``max_batch`` records) and ``max_poll_interval_ms``
        is not exceeded however long a message is held; it resumes them when the buffer is
        empty. On revocation it waits up to ``revoke_timeout_s`` for the revoked
        partitions' messages in flight, commits what is contiguous-complete, and abandons
        the rest (redelivered to the new owner). ``stop`` waits for the messages in flight;
        after a failure the others get ``revoke_timeout_s`` seconds. With K = 1 the
        behaviour is the one described above (each message awaited before the next).
        Counters: :meth:`source_stats`.

        Raises:
            ConfigError: no topics, an empty ``group_id``, a bad ``decode``,
                ``auto_offset_reset`` or ``concurrency`` (raised here, not at subscription).
        """
        args = source_args(
            topics, group_id, decode, auto_offset_reset, concurrency, processing_guarantee=processing_guarantee
        )
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
        """A cold Observable of the records of ``topics`` in :class:`~reactive_services.adapters.Batch`
        es: one batch per partition and fetch.

        The same consumer as :meth:`source` (arguments, endings, rebalances, dead letters), but
        ``on_next`` gets the decoded records of one partition from one ``getmany`` at once (at
        most ``max_batch`` records, in offset order; a record that does not decode is
        dead-lettered and left out of its batch). A batch is handled as one message: its offsets
        are committed once ``on_next`` returned and the work tracked during it
        (:func:`~reactive_services.adapters.track`, :func:`~reactive_services.adapters.hold`, or
        a message's own ``track`` / ``hold``, which hold back the whole batch) settled, and not
        before. ``concurrency`` counts batches; the next batch of a partition waits for the
        previous one (per-partition order).

        For handlers that work per fetch (one database transaction per batch, one
        ``emit_batch``): the per-record cost is the decoding; ``batch.values`` makes no
        :class:`Message` (iterating the batch makes one per record, once).

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
        source = self._sources.observable(args, stop=stop, on_assigned=on_assigned, on_closed=on_closed)
        return cast("Observable[Batch]", source)

    def source_stats(self, group_id: str | None = None) -> list[SourceStats]:
        """The live counters of the running source subscriptions (of ``group_id``, if given)."""
        return self._sources.stats(group_id)
