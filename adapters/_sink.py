"""Broker sinks: Observers that publish what they receive, tracked on the message being delivered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from reactivex.abc import ObserverBase

from ._dead_letter import DeadLetter, publish_dead_letter
from ._message import track
from ._protocol import Emitter

__all__ = ["BrokerSink", "DeadLetterSink", "Sinks"]

log = logging.getLogger("reactive_services.sink")


class _PublishingSink(ObserverBase[Any]):
    """What both sinks share: the publishes in flight, their counters, ``flush``.

    Attributes:
        sent: records acknowledged so far.
        errors: publish failures (and upstream errors) so far, oldest first.
        completed: True once ``on_completed`` was called.
    """

    def __init__(self, broker: Emitter, what: str) -> None:
        self._broker = broker
        self._what = what
        self._pending: set[asyncio.Future[Any]] = set()
        self.sent = 0
        self.errors: list[BaseException] = []
        self.completed = False

    def _add(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self.sent += 1
        else:
            self.errors.append(exc)
            log.error("%s failed: %s", self._what, exc)

    def on_error(self, error: Exception) -> None:
        log.error("stream into %s failed: %s", self._what, error)
        self.errors.append(error)

    def on_completed(self) -> None:
        self.completed = True

    async def flush(self) -> None:
        """Wait for every publish in flight.

        Raises:
            Exception: the first publish failure (or upstream error) seen so far.
        """
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self.errors:
            raise self.errors[0]


class BrokerSink(_PublishingSink):
    """An Observer that publishes each ``on_next`` value to one topic through ``broker.emit``.

    Publishing is asynchronous: ``on_next`` schedules the publish and returns. When called while
    a broker source is delivering a message, the publish is
    :func:`~reactive_services.adapters.track`-ed, so that message's offset is committed only after
    the broker acknowledged it. (The Kafka broker's sinks hold the commit instead and keep the
    source delivering: ``reactive_services.adapters.kafka``'s ``KafkaSink``.) A failed publish is
    logged at once, ends the source's stream like failed work, and is raised by :meth:`flush` (and
    by the broker's ``stop``), so producer errors are never silent.

    Args:
        broker: anything with an ``async emit(topic, value, key=...)``.
        topic: the destination topic.
        key: computes each record's key from its value (None: no key).

    Attributes:
        sent: records acknowledged so far.
        errors: publish failures so far, oldest first.
    """

    def __init__(self, broker: Emitter, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> None:
        super().__init__(broker, f"publish to {topic}")
        self.topic = topic
        self._key = key

    def on_next(self, value: Any) -> None:
        key = self._key(value) if self._key else None
        work: Awaitable[Any] = self._broker.emit(self.topic, value, key=key)
        self._add(track(work))


class DeadLetterSink(_PublishingSink):
    """An Observer that publishes each :class:`~reactive_services.adapters.DeadLetter` to its dead-letter topic.

    Each value goes through :func:`~reactive_services.adapters.publish_dead_letter`: the record keeps the
    original key and raw value bytes, its headers carry the reason (see
    :func:`reactive_services.adapters.dead_letter_headers`), and the publish is tracked, so the failed
    record's offset is committed only once its dead letter is acknowledged.

    Attributes:
        sent: dead letters acknowledged.
        errors: publish failures (also raised by :meth:`flush`).
    """

    def __init__(self, broker: Emitter) -> None:
        super().__init__(broker, "dead-letter publish")

    def on_next(self, value: DeadLetter) -> None:
        self.publish(value)

    def publish(self, letter: DeadLetter) -> asyncio.Future[Any]:
        """:meth:`on_next` that returns the publish (its result: the dead letter's ``RecordMetadata``)."""
        future = publish_dead_letter(self._broker, letter)
        self._add(future)
        return future


class Sinks:
    """The sinks a broker handed out, so that its ``stop`` can flush them (both brokers use it).

    Args:
        broker: what the sinks publish through.
        factory: makes a broker's own kind of sink, ``(topic, key) -> BrokerSink`` (None: a ``BrokerSink``).
    """

    def __init__(
        self,
        broker: Emitter,
        factory: Callable[[str, Callable[[Any], str | bytes | None] | None], BrokerSink] | None = None,
    ) -> None:
        self._broker = broker
        self._factory = factory
        self._sinks: list[BrokerSink] = []

    def new(self, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> BrokerSink:
        """A new :class:`BrokerSink` to ``topic`` (made by ``factory(topic, key)`` when given), remembered
        for :meth:`flush`."""
        sink = self._factory(topic, key) if self._factory else BrokerSink(self._broker, topic, key=key)
        self._sinks.append(sink)
        return sink

    async def flush(self) -> None:
        """Flush every sink, then forget them.

        Raises:
            Exception: the first sink failure (after every sink was flushed).
        """
        sinks, self._sinks = self._sinks, []
        first: BaseException | None = None
        for sink in sinks:
            try:
                await sink.flush()
            except Exception as exc:  # noqa: BLE001 - re-raised once all are flushed
                first = first or exc
        if first is not None:
            raise first
