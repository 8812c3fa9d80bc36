"""NotificationHub: a reactivex Observer that fans notifications out to websocket clients."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind
from reactivex import Observer

from ..tracing import trace_carrier, tracer, tracing_enabled
from ._codec import encode_event
from ._resume import frame_after
from ._server import OVERFLOW, WebSocketServer

if TYPE_CHECKING:
    from ._resume import NotificationLog

__all__ = ["Notification", "NotificationHub"]

logger = logging.getLogger("reactive_services.adapters.websocket")


@dataclass(frozen=True, slots=True)
class Notification:
    """One event for the clients subscribed to ``channel``.

    Attributes:
        channel: the channel name (e.g. ``"orders"``).
        event: any JSON-serialisable value (orjson: dicts, lists, dataclasses, datetimes...).
        position: ``(topic, partition, offset)`` of the record it was made from, or None. A hub
            with a :class:`~reactive_services.adapters.websocket.NotificationLog` moves its
            cursor past it. Not compared (two notifications of the same channel and event are
            equal wherever they come from).
    """

    channel: str
    event: Any
    position: tuple[str, int, int] | None = field(default=None, compare=False)


class NotificationHub(Observer[Notification | tuple[str, Any]]):
    """An Observer that sends each notification to every client subscribed to its channel.

    ``on_next(Notification(channel, event))`` (or a ``(channel, event)`` tuple) encodes the
    frame ``{"type": "event", "channel": channel, "event": event}`` once (orjson) and hands
    the same bytes to each subscribed client: written at once when the client is keeping up
    (nothing queued, write buffer below its high-water mark), else queued on its bounded
    outgoing queue. It never blocks or awaits. A client whose queue (``server.queue_size``
    messages) is full gets the server's ``overflow`` policy: closed with
    ``server.overflow_close_code`` (1013) and reason ``"slow consumer"`` (``"close"``), or its
    oldest frame / all its queued frames discarded (``"drop_oldest"`` / ``"keep_latest"``).

    ``on_completed()`` and ``on_error(exc)`` flush every client's queue (at most
    ``flush_timeout`` seconds), then close every client with 1001 (going away); await
    :meth:`wait_closed` to know when that is done. Notifications after that are ignored.

    Call ``on_next`` on the event loop thread of the server; a call from another thread is
    handed to the loop (``call_soon_threadsafe``), which keeps order per calling thread.

    With a ``log`` (:class:`~reactive_services.adapters.websocket.NotificationLog`), every event
    frame carries ``"cursor"``: the position of the fan-out after this event (the positions of
    the notifications, ``Notification.position``); a client subscribing with ``"since": cursor``
    catches up from the log, then goes live (see the protocol in
    :mod:`reactive_services.adapters.websocket`). Only the server's default hub
    (``server.hub``) serves ``since``.

    Args:
        server: the server whose clients receive the notifications (the hub reads its current
            connections at each ``on_next``, so clients that connect later are included).
        flush_timeout: seconds ``on_completed`` / ``on_error`` wait for queues to empty.
        log: where the notifications come from, to put cursors in frames and serve ``since``.

    Attributes:
        published: ``{channel: notifications received}``, counted even with no subscriber.
        delivered: event frames written to client transports, over all channels and clients.
        dropped: event frames discarded from client queues by the ``drop_oldest`` /
            ``keep_latest`` policies.
        slow_clients_closed: clients this hub closed because their queue was full (``close``).
        behind: notifications dropped because their ``position`` was before the log's head
            (with a ``log``): records handed to the hub again, e.g. by a consumer group that
            resumed from its committed offsets after the gateway restarted (not counted in
            ``published``).
    """

    def __init__(
        self, server: WebSocketServer, *, flush_timeout: float = 10.0, log: NotificationLog | None = None
    ) -> None:
        super().__init__()
        self.server = server
        self.log = log
        self.flush_timeout = flush_timeout
        self.published: Counter[str] = Counter()
        self.delivered = 0
        self.dropped = 0
        self.slow_clients_closed = 0
        self.behind = 0
        self._closing: asyncio.Future[None] | None = None

    def _on_next_core(self, value: Notification | tuple[str, Any]) -> None:
        """Fan one notification out.

        Raises:
            TypeError: ``value`` is neither a Notification nor a ``(channel, event)`` pair,
                the channel is not a string, or the event is not JSON-serialisable.
        """
        position = None
        if isinstance(value, Notification):
            channel, event, position = value.channel, value.event, value.position
        elif isinstance(value, tuple) and len(value) == 2:
            channel, event = value
        else:
            raise TypeError(
                f"NotificationHub.on_next expects a Notification or a (channel, event) tuple,"
                f" not {type(value).__name__}"
            )
        if not isinstance(channel, str):
            raise TypeError(f"channel must be a str, not {type(channel).__name__}")
        if tracing_enabled():
            self._traced(channel, event, position)
            return
        # with a log, the frame needs the cursor: it is encoded on the loop, in _publish
        self._hand_over(channel, encode_event(channel, event) if self.log is None else None, event, position)

    def _traced(self, channel: str, event: Any, position: tuple[str, int, int] | None) -> None:
        """The notification inside a ``send <channel>`` PRODUCER span, its frame carrying the span's
        trace context (``"trace": {"traceparent": ...}``)."""
        attributes: dict[str, str | int] = {
            "messaging.system": "websocket",
            "messaging.destination.name": channel,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "reactive_services.websocket.subscribers": len(self.server._by_channel.get(channel, ())),
        }
        with tracer().start_as_current_span(f"send {channel}", kind=SpanKind.PRODUCER, attributes=attributes):
            if self.log is None:
                self._hand_over(channel, encode_event(channel, event, trace_carrier()), event, position)
            else:
                self._hand_over(channel, None, event, position, trace_carrier())

    def _hand_over(
        self,
        channel: str,
        frame: bytes | None,
        event: Any,
        position: tuple[str, int, int] | None,
        trace: dict[str, str] | None = None,
    ) -> None:
        loop_thread = self.server._loop_thread
        if loop_thread is not None and threading.get_ident() != loop_thread:
            assert self.server._loop is not None
            if frame is None:
                _check_json(event)  # TypeError raised here, in on_next, not on the loop
            self.server._loop.call_soon_threadsafe(self._publish, channel, frame, event, position, trace)
        else:
            self._publish(channel, frame, event, position, trace)

    def _publish(
        self,
        channel: str,
        frame: bytes | None,
        event: Any,
        position: tuple[str, int, int] | None,
        trace: dict[str, str] | None,
    ) -> None:
        log = self.log
        if log is not None and position is not None and log.behind(*position):
            # fanned out already, or older than the log's head when it opened: a client that
            # resumed got it from the log, a live one had it (or connected after it): again
            # would be a duplicate
            self.behind += 1
            return
        self.published[channel] += 1
        if log is not None:
            if position is not None:
                log.advance(*position)
            frame = encode_event(channel, event, trace, log.cursor())
            if position is not None:
                log.keep(position, channel, frame)
        shared: bytes = frame if frame is not None else encode_event(channel, event, trace)
        subscribers = self.server._by_channel.get(channel)
        if not subscribers:
            return
        overflowed = 0
        # _enqueue never changes the subscriber sets synchronously (an overflowing client is
        # unindexed later, when its handler ends), so iterating the live set is safe. The hub
        # is the tally of its frames: _enqueue / the sender add to delivered and dropped.
        for conn in subscribers:
            if conn._catching_up:  # its catch-up reader will read this record from the log
                continue
            own = shared
            if conn._after is not None and log is not None:
                after = frame_after(log, conn, conn._after, channel, event, position, shared)
                if after is None:  # the catch-up delivered it already
                    continue
                own = after
            if conn._enqueue(own, self) == OVERFLOW:
                overflowed += 1
        self.slow_clients_closed += overflowed

    def _on_completed_core(self) -> None:
        self._close_all("going away")

    def _on_error_core(self, error: Exception) -> None:
        logger.error("notification stream failed; closing websocket clients", exc_info=error)
        self._close_all("going away: upstream error")

    def _close_all(self, reason: str) -> None:
        loop = self.server._loop
        if loop is None:  # never started: nobody to close
            return
        if self.server._loop_thread != threading.get_ident():
            loop.call_soon_threadsafe(self._close_all, reason)
            return
        self._closing = loop.create_future()
        self.server._spawn(self._flush_and_close(reason, self._closing))

    async def _flush_and_close(self, reason: str, done: asyncio.Future[None]) -> None:
        try:
            try:
                async with asyncio.timeout(self.flush_timeout):
                    await self.wait_idle()
            except TimeoutError:
                logger.warning("clients not flushed after %ss; closing them anyway", self.flush_timeout)
            clients = self.server.clients
            await asyncio.gather(*(conn.close(1001, reason) for conn in clients))
        finally:
            if not done.done():
                done.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until every open client's outgoing queue is empty and nothing is being sent.

        Clients that close meanwhile count as idle. A client that stops reading without
        filling its queue keeps this waiting: bound it with ``asyncio.timeout``.
        """
        while True:
            busy = [conn._idle for conn in self.server.clients if not conn._idle.is_set()]
            if not busy:
                return
            await asyncio.gather(*(idle.wait() for idle in busy))

    async def wait_closed(self) -> None:
        """After ``on_completed`` / ``on_error``: wait until every client has been closed.

        Returns at once if the hub has not been completed (nothing to wait for).
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)


def _check_json(event: Any) -> None:
    """Raise TypeError now (in ``on_next``) for an event orjson cannot encode."""
    encode_event("", event)
