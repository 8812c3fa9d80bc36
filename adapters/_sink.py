"""A broker sink: an Observer that publishes each value it receives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from reactivex.abc import ObserverBase

from ._message import track

__all__ = ["BrokerSink", "DeadLetterSink"]

log = logging.getLogger("reactive_services.sink")


class BrokerSink(ObserverBase[Any]):
    """An Observer that publishes each ``on_next`` value to one topic through ``broker.emit``.

    Publishing is asynchronous: ``on_next`` schedules the publish on the running event
    loop and returns. When called while a broker source is delivering a message, the
    publish is :func:`~reactive_services.adapters.track`-ed, so that message's offset is committed only after
    the broker acknowledged the publish. A failed publish is logged at once and raised by
    :meth:`flush` (and by the broker's ``stop``), so producer errors are never silent.

    Args:
        broker: anything with an ``async emit(topic, value, key=...)``.
        topic: the destination topic.
        key: computes each record's key from its value (None: no key).

    Attributes:
        sent: records acknowledged so far.
        errors: publish failures so far, oldest first.
    """

    def __init__(self, broker: Any, topic: str, *, key: Callable[[Any], str | bytes | None] | None = None) -> None:
        self._broker = broker
        self.topic = topic
        self._key = key
        self._pending: set[asyncio.Future[Any]] = set()
        self.sent = 0
        self.errors: list[BaseException] = []
        self.completed = False

    def on_next(self, value: Any) -> None:
        key = self._key(value) if self._key else None
        future = track(self._broker.emit(self.topic, value, key=key))
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
            log.error("publish to %s failed: %s", self.topic, exc)

    def on_error(self, error: Exception) -> None:
        log.error("stream into sink %s failed: %s", self.topic, error)
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


class DeadLetterSink(ObserverBase[Any]):
    """An Observer that publishes each :class:`~reactive_services.operators.DeadLetter` to its dead-letter topic.

    The record keeps the original key and raw value bytes; its headers carry the reason
    (see :func:`reactive_services.adapters.dead_letter_headers`). Each publish is :func:`~reactive_services.adapters.track`-ed,
    so the failed record's offset is committed only once its dead letter is acknowledged.

    Attributes:
        sent: dead letters acknowledged.
        errors: publish failures (also raised by :meth:`flush`).
    """

    def __init__(self, broker: Any) -> None:
        self._broker = broker
        self._pending: set[asyncio.Future[Any]] = set()
        self.sent = 0
        self.errors: list[BaseException] = []

    def on_next(self, value: Any) -> None:
        future = track(self._broker.emit(value.topic, value.message.raw, key=value.message.key, headers=value.headers))
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
            log.error("dead-letter publish failed: %s", exc)

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    def on_completed(self) -> None:
        pass

    async def flush(self) -> None:
        """Wait for every dead letter in flight; raises the first publish failure."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self.errors:
            raise self.errors[0]
