"""The surface every broker adapter implements, described once.

:class:`reactive_services.adapters.memory.InMemoryBroker` and :class:`reactive_services.adapters.kafka.KafkaBroker` both
satisfy :class:`Broker`; services and tests are written against this Protocol only, and
one contract test-suite runs against both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from reactivex import Observable
from reactivex.abc import ObserverBase

from ._message import Batch, HeadersIn, Message, RecordMetadata

#: How a source's offsets and the records its handling publishes are committed:
#: ``"at_least_once"`` (offsets after handling) or ``"exactly_once"`` (Kafka transactions).
ProcessingGuarantee = Literal["at_least_once", "exactly_once"]

__all__ = ["Broker", "Decoder", "Emitter", "LogReader", "ProcessingGuarantee", "TopicPartition"]

#: ``(topic, partition)``.
TopicPartition = tuple[str, int]

#: How a source turns value bytes into ``Message.value``: ``"json"`` (orjson; a record that
#: is not JSON goes to ``<topic>.DLT`` with the reason in its headers and the stream goes
#: on), ``None`` (raw bytes), or a callable ``bytes -> Any`` that raises on bad input
#: (treated like ``"json"``'s failures).
Decoder = Literal["json"] | None | Callable[[bytes | None], Any]


class Emitter(Protocol):
    """The part of a :class:`Broker` that sinks and dead-lettering need: ``emit``."""

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record; see :meth:`Broker.emit`."""


class LogReader(Protocol):
    """A reader of a broker's log from given positions, outside any consumer group (see
    :meth:`Broker.read_log`): it joins no group and commits nothing, so any number of readers
    (e.g. one per websocket client catching up) read the same records independently.
    """

    @property
    def positions(self) -> dict[TopicPartition, int]:
        """``{(topic, partition): next offset to read}`` of every partition read; after each
        :meth:`read` it is past every record returned (Kafka: and past transaction markers)."""

    async def read(self, max_records: int, timeout_s: float = 0.5) -> list[Message]:
        """The next records, at most ``max_records`` (>= 1), in offset order per partition.

        Waits at most ``timeout_s`` seconds for a record when none is available and then
        returns ``[]``. Only what is asked for is held in memory (Kafka: plus the client's
        bounded fetch buffer). A record whose value does not decode is skipped (logged), and the
        position moves past it.

        Raises:
            BrokerError: a position is outside the log (below its start: deleted by retention;
                or past its end), or the broker failed; the message names the partition.
        """

    async def close(self) -> None:
        """Release the reader (idempotent)."""


@runtime_checkable
class Broker(Protocol):
    """A message broker: topics with partitions and offsets, consumer groups, commits.

    Optional: a broker whose sources hand decoded values to a
    :class:`~reactive_services.adapters._source.PayloadObserver` (both of ours do) runs a
    service's payload handlers without a :class:`Message` per record, and awaits its ``async
    def`` ones in the source itself (``concurrency=1``, at-least-once). Any other broker's
    sources call ``on_next``: each call of such a handler then runs as a task of its own,
    tracked on its message.
    """

    @property
    def kind(self) -> str:
        """``"memory"``, ``"kafka"`` or ``"rabbitmq"``."""

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""

    async def start(self) -> None:
        """Connect (Kafka: start the producer and check the cluster answers).

        Raises:
            BrokerUnavailableError: the broker cannot be reached within the connect timeout.
        """

    async def stop(self) -> None:
        """Flush and stop the producer; stop every source still running and await its close."""

    async def create_topics(
        self, topics: Sequence[str], *, partitions: int = 3, config: Mapping[str, str] | None = None
    ) -> None:
        """Create the topics that do not exist yet (existing ones are left as they are).

        ``config``: topic settings as Kafka names them, e.g. ``{"cleanup.policy": "compact"}`` for
        a changelog (the in-memory broker exempts a compacted topic from retention).
        """

    async def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        headers: HeadersIn | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordMetadata:
        """Publish one record and wait for the broker's acknowledgement (acks=all).

        ``value`` is JSON-encoded with orjson unless it is ``bytes``. Records with the same
        key go to the same partition, so their order is kept.

        Raises:
            PublishError: the broker refused the record or did not acknowledge it in time.
            TypeError: ``value`` is not JSON-serialisable.
        """

    async def emit_batch(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]]) -> list[RecordMetadata]:
        """Publish many ``(key, value)`` records and wait until all are acknowledged."""

    def sink(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> ObserverBase[Any]:
        """An Observer that publishes each ``on_next`` value to ``topic``.

        Publishing is asynchronous; a failure is never silent: it is raised by
        :meth:`stop` / ``sink.flush()`` and logged.
        """

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
        """A cold Observable of the records of ``topics`` read in consumer group ``group_id``.

        Subscribing joins the group and starts fetching; disposing the subscription
        leaves the group and closes the consumer. Setting ``stop`` ends the stream
        cleanly: fetching stops, handled offsets are committed, ``on_completed`` is called.
        The offset of a message is committed only after the Observer handled it
        (``on_next`` returned and the work registered with ``Message.track`` finished).
        A failure of the broker connection ends the stream with ``on_error``.

        ``on_assigned`` (optional) is called once per subscription, the first time the
        source has partitions assigned *and* its position in each of them resolved (for
        ``auto_offset_reset="latest"`` in a new group: the end of each partition). Every
        record published to those partitions after it was called will be delivered; the
        request-reply client waits for it before publishing its first request. If it
        raises, the stream ends with ``on_error``.

        ``on_closed`` (optional) is called once per subscription when it is over: after its
        last commit (at a graceful stop: after ``on_completed`` and after the operators
        released what they held) and after it left the group, however it ended. A service
        waits for it before closing what its handlers write to.

        ``concurrency`` (messages, >= 1): how many messages may be in flight at once (a
        message is in flight from its ``on_next`` until its tracked work settled). With 1
        the source awaits each message before delivering the next. With K > 1 ``on_next``
        is still called one at a time on the event loop thread, in offset order per
        partition, but the next message is delivered while earlier ones' work runs; a
        keyed message waits until the previous in-flight message with the same key (and
        partition) settled, so per-key order holds. The committed offset of a partition
        is the lowest offset still in flight (see :class:`reactive_services.adapters.OffsetTracker`),
        so it never passes an unfinished message. At most K messages are in flight: when
        K are, the source stops fetching (Kafka: pauses its partitions) until one settles.
        A failed message ends the stream with ``on_error``; neither it nor anything after
        it in its partition is committed.

        Raises:
            ConfigError: ``concurrency`` is not an int >= 1.
        """

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
        """:meth:`source` in batches: ``on_next`` gets a :class:`Batch`, the decoded records of
        one partition that arrived together (Kafka: one ``getmany``; at most ``max_batch``), in
        offset order. ``batch.values`` are the decoded values (no :class:`Message` is made
        unless the handler indexes or iterates the batch).

        Same arguments and endings as :meth:`source`. A record that does not decode is
        dead-lettered and left out of its batch (the batch waits for its dead letter's
        acknowledgement). A batch is handled as one message: its offsets are committed once
        ``on_next`` returned and the work tracked during it
        (:func:`~reactive_services.adapters.track`, :func:`~reactive_services.adapters.hold`, or
        a message's own ``track`` / ``hold``, which hold back the whole batch) settled; if
        ``on_next`` raises, none of it is. With ``concurrency`` K, up to K batches are in flight;
        a partition's next batch waits for its previous one (per-partition order, hence per-key
        order).

        Raises:
            ConfigError: as :meth:`source`.
        """

    async def committed(self, group_id: str, topic: str, partition: int) -> int | None:
        """The committed offset (next offset to read) of ``group_id`` on a partition, or None."""

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: next offset to be written}`` of ``topic``."""

    async def beginning_offsets(self, topic: str) -> dict[int, int]:
        """``{partition: oldest offset still kept}`` of ``topic`` (the log start: 0 until retention
        deletes records); ``{}`` for an unknown topic."""

    async def read_log(self, positions: Mapping[TopicPartition, int], *, decode: Decoder = "json") -> LogReader:
        """A started :class:`LogReader` of the partitions in ``positions``, each from its given
        offset (the next offset to read): no consumer group, no commit, records decoded as
        :meth:`source` decodes them. Close it when done.

        For replaying a log from a known position (e.g. a websocket client resuming from its
        cursor); a broker without a log (RabbitMQ: a consumed message is deleted from its queue)
        refuses.

        Raises:
            BrokerError: the broker keeps no log, or cannot be reached.
            ConfigError: ``decode`` is not a decoder.
        """
