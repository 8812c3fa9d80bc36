"""An in-memory broker with Kafka's model: topics, partitions, offsets, consumer groups, commits.

It is the embedded default of the demo and a test double users can import for their own
tests (as FastStream ships ``TestKafkaBroker``). It implements :class:`reactive_services.adapters.Broker`,
the same Protocol as :class:`reactive_services.adapters.kafka.KafkaBroker`, and passes the same contract tests.

What it models: records appended to partitions chosen from the key (same key, same
partition, so per-key order holds); per-group committed offsets; group members sharing
the partitions of their topics (range-style, reassigned whenever a member joins or leaves);
commit only after the Observer handled a record; a maximum record size; retention by size
and age; transactions of exactly-once sources (``read_committed`` reading). What it does not
model: replication, wall-clock timeouts of members.
Everything runs on the one asyncio event loop that called :meth:`InMemoryBroker.start`.

This module is the facade (lifecycle, wiring); the parts are the cluster state and topic
administration (:mod:`._admin`), publishing (:mod:`._producer`), the consume loop
(:mod:`._source`) and the pure mapping (:mod:`._codec`).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from reactivex import Observable

from reactive_services.errors import ConfigError

from .._codec import resolve_decoder
from .._message import Batch, HeadersIn, Message, RecordMetadata
from .._protocol import Decoder, TopicPartition
from .._sink import BrokerSink
from .._source import ProcessingGuarantee, source_args
from ..tracing import publish_span, tracing_enabled, with_trace
from ._admin import MemoryCluster
from ._codec import Retention
from ._producer import MemoryProducer
from ._reader import MemoryLogReader
from ._source import MemorySources

__all__ = ["InMemoryBroker"]


class InMemoryBroker:
    """A broker held in this process's memory.

    Args:
        partitions: partitions of a topic created implicitly (by a publish or a subscribe).
        max_record_bytes: the largest value accepted, in bytes (Kafka's default
            ``message.max.bytes`` is about 1 MiB); a larger record raises :class:`PublishError`.
        max_batch: records a source hands to its Observer between two yields to the loop.
        retention_bytes: the most bytes (keys, values, headers) each partition keeps; the oldest
            records are deleted first, as Kafka's ``retention.bytes`` (None, the default: no limit).
        retention_s: records older than this many seconds (by their timestamp) are deleted, as
            Kafka's ``retention.ms`` (None, the default: kept for ever).

    Retention deletes records whether or not every consumer group has read them, as Kafka does;
    a group whose next record was deleted goes on from the oldest record kept, and is told: a
    warning names the group, the partition and the offsets, and :attr:`lost_to_retention` counts
    them.

    Raises:
        ConfigError: a setting is out of range (names the setting).
    """

    kind = "memory"

    def __init__(
        self,
        *,
        partitions: int = 3,
        max_record_bytes: int = 1_048_576,
        max_batch: int = 500,
        retention_bytes: int | None = None,
        retention_s: float | None = None,
    ) -> None:
        if partitions < 1:
            raise ConfigError("partitions", f"must be >= 1, got {partitions}")
        if max_record_bytes < 1:
            raise ConfigError("max_record_bytes", f"must be >= 1, got {max_record_bytes}")
        if max_batch < 1:
            raise ConfigError("max_batch", f"must be >= 1, got {max_batch}")
        if retention_bytes is not None and (isinstance(retention_bytes, bool) or retention_bytes < 1):
            raise ConfigError("retention_bytes", f"must be >= 1 bytes or None, got {retention_bytes!r}")
        if retention_s is not None and not (math.isfinite(retention_s) and retention_s > 0):
            raise ConfigError("retention_s", f"must be > 0 seconds or None, got {retention_s!r}")
        self.default_partitions = partitions
        self.max_record_bytes = max_record_bytes
        self.max_batch = max_batch
        self._started = False
        self._cluster = MemoryCluster(partitions, Retention(retention_bytes, retention_s))
        self._producer = MemoryProducer(self._cluster, max_record_bytes, lambda: self._started, self)
        self._sources = MemorySources(self._cluster, max_batch, self)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._started

    async def start(self) -> None:
        """Mark the broker as running (there is nothing to connect to)."""
        self._started = True
        self._sources.open()

    async def stop(self, timeout: float = 10.0) -> None:
        """End every running source gracefully, then flush the sinks.

        As with Kafka, each source finishes the messages in hand, commits and calls
        ``on_completed``; one still busy after ``timeout`` seconds is cancelled.

        Raises:
            PublishError: a record published through a sink failed (the first failure).
        """
        await self._sources.stop(timeout)
        try:
            await self._producer.flush_sinks()
        finally:
            self._started = False

    async def __aenter__(self) -> InMemoryBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def lost_to_retention(self) -> dict[str, int]:
        """``{group: records deleted by retention before the group read them}`` (groups that lost none are absent)."""
        return dict(self._cluster.lost_to_retention)

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: oldest offset still kept}`` of ``topic`` (0 until retention deletes)."""
        return {p: part.start for p, part in enumerate(self._cluster.topics.get(topic, []))}

    async def read_log(self, positions: Mapping[TopicPartition, int], *, decode: Decoder = "json") -> MemoryLogReader:
        """A :class:`~reactive_services.adapters.LogReader` of the partitions in ``positions``, each
        from its offset: no consumer group, no commit (see :meth:`Broker.read_log
        <reactive_services.adapters.Broker.read_log>`).

        Raises:
            ConfigError: ``decode`` is not a decoder.
        """
        return MemoryLogReader(self._cluster, positions, resolve_decoder(decode))

    # -- topics ----------------------------------------------------------------------------
    async def create_topics(
        self, topics: Sequence[str], *, partitions: int | None = None, config: Mapping[str, str] | None = None
    ) -> None:
        """Create the topics that do not exist yet, with ``partitions`` partitions each (None: the
        broker's ``partitions``, as for a topic created by a publish or a subscribe).

        ``config``: ``{"cleanup.policy": "compact"}`` exempts the topics from retention (a
        changelog keeps every record; no compaction is modelled); other settings are ignored.
        """
        count = self.default_partitions if partitions is None else partitions
        self._cluster.create_topics(topics, count, compacted=(config or {}).get("cleanup.policy") == "compact")

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic`` (empty if it does not exist)."""
        return self._cluster.end_offsets(topic)

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset of ``group_id`` on ``topic``/``partition``, or None."""
        return self._cluster.committed(group_id, topic, partition)

    def records(self, topic: str) -> list[Message]:
        """Every record of ``topic`` as Messages (value: the raw bytes), partition by partition.

        A test helper: e.g. ``[m.value for m in broker.records("orders.DLT")]``. It shows the log as
        it is stored, like a ``read_uncommitted`` reader: records of open and aborted transactions
        (of exactly-once sources) included; read with a source to see what a ``read_committed``
        consumer sees.
        """
        return self._cluster.records(topic)

    def assignment(self, group_id: str) -> list[list[tuple[str, int]]]:
        """The partitions each current member of ``group_id`` owns (a test helper)."""
        return self._cluster.assignment(group_id)

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
        """Append one record; see :meth:`reactive_services.adapters.Broker.emit`.

        Raises:
            PublishError: the broker is not started, or the value is over ``max_record_bytes``.
            TypeError: ``value`` is not JSON-serialisable.
        """
        if tracing_enabled():
            with publish_span("memory", topic, key=key) as trace_headers:
                headers = with_trace(headers, trace_headers)
                return await self._producer.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)
        return await self._producer.emit(topic, value, key=key, headers=headers, timestamp_ms=timestamp_ms)

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Append many ``(key, value)`` records in order; see :meth:`reactive_services.adapters.Broker.emit_batch`."""
        if tracing_enabled():
            with publish_span("memory", topic, count=len(records)) as trace_headers:
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
        """A cold Observable of ``topics`` read in consumer group ``group_id``.

        See :meth:`reactive_services.adapters.Broker.source` for the contract (commit after handling,
        dead-lettering of undecodable records, ``stop`` completes, dispose closes,
        ``on_assigned`` once the first assignment is positioned, ``concurrency``).

        With ``concurrency`` K > 1 the source stops delivering while K messages are in
        flight, a keyed message waits for the previous in-flight one of its key and
        partition, and each partition's committed offset is its lowest offset still in
        flight (updated whenever a message settles). When ``stop`` is set it waits for the
        messages in flight before committing and completing; after a failure it waits for
        the others at most 5 seconds.

        Every subscription, ``concurrency=1`` included, delivers through the same in-flight
        window as the Kafka source; with K = 1 each message's work settles before the next
        is delivered.

        Raises:
            ConfigError: no topic or an empty name, an empty group id, a bad ``decode``, an
                unknown ``auto_offset_reset``, or ``concurrency`` not an int >= 1.
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
        es: per partition, the records available at once (at most ``max_batch``), as
        :meth:`KafkaBroker.source_batches <reactive_services.adapters.kafka.KafkaBroker.source_batches>`
        gives one batch per partition and fetch; see :meth:`reactive_services.adapters.Broker.source_batches`.

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
