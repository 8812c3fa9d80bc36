"""The two ends of a server-streaming gRPC call as Rx sees them (used by :mod:`reactive_services.grpc`).

Server side, :class:`StreamBuffer`: an Observable pushes (Rx has no backpressure), the call's
writer pulls (each ``await context.write(...)`` returns only once HTTP/2 flow control let the
message go). Between the two sits a bounded buffer of at most ``size`` messages; when the
writer falls that far behind (the client stopped reading, so the writes stopped returning),
the overflow policy decides, with the names and meanings of the websocket hub's
(:data:`reactive_services.adapters.websocket.OverflowPolicy`):

- ``"close"``: the call ends with ``RESOURCE_EXHAUSTED`` (error type ``SlowConsumer``) and the
  Observable is disposed: a slow client loses the call, never the server's memory;
- ``"drop_oldest"``: the oldest buffered message is discarded (counted);
- ``"keep_latest"``: everything buffered is discarded, the new message kept (counted).

Client side, :func:`read_stream`: reads one message, hands it to the Observer, and reads the
next only once ``on_next`` returned and the work the Observer ``track()``-ed for it settled
(as a broker source does): a slow Observer slows the reads, the reads stop taking messages off
the HTTP/2 stream, flow control stops the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase

from reactive_services.adapters import Message, current_message

__all__ = ["SLOW_CONSUMER", "SlowConsumer", "StreamBuffer", "read_stream"]

#: The error type (``rs-error-type``) of a call ended by the ``"close"`` overflow policy.
SLOW_CONSUMER = "SlowConsumer"

Policy = Literal["close", "drop_oldest", "keep_latest"]


class SlowConsumer(Exception):
    """The ``"close"`` policy ended a stream: the client read too slowly."""


class StreamBuffer:
    """An Observable's values as an async iterator, through at most ``size`` buffered values.

    The bound applies to the values pushed once ``subscribe`` returned (a hot source, a timer,
    anything asynchronous). What a source emits synchronously while it is being subscribed to
    (``reactivex.of``, ``from_iterable`` over a list: a result already in memory) is buffered
    whole and written as the client reads; a large or generated result is better returned as an
    async iterator, which is pulled.

    Subscribes on :meth:`start`; emissions from another thread are handed to the loop. The
    iterator ends when the Observable completes, raises its error, or raises
    :class:`SlowConsumer` once the ``"close"`` policy ended it (the subscription is disposed
    then, and on :meth:`close`).

    ``stats``: an object whose ``dropped`` and ``max_buffered`` are kept equal to this one's.

    Attributes:
        max_buffered: the most values buffered at once.
        dropped: values discarded by the drop policies.
        overflowed: the ``"close"`` policy ended the stream.
    """

    def __init__(self, source: Observable[Any], size: int, policy: Policy, *, stats: Any = None) -> None:
        self._source = source
        self._size = size
        self._policy = policy
        self._queue: deque[Any] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake: asyncio.Future[None] | None = None
        self._subscription: DisposableBase | None = None
        self._subscribing = False
        self.max_buffered = 0
        self.dropped = 0
        self.overflowed = False
        self._stats = stats

    def start(self) -> None:
        """Subscribe to the source (it may emit at once, synchronously)."""
        self._subscribing = True
        try:
            self._subscription = self._source.subscribe(
                lambda v: self._on_loop(self._next, v),
                lambda e: self._on_loop(self._end, e),
                lambda: self._on_loop(self._end, None),
            )
        finally:
            self._subscribing = False
        if self._done:  # ended while subscribing
            self.close()

    def close(self) -> None:
        """Dispose the subscription (idempotent)."""
        self._done = True
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()

    def _on_loop(self, fn: Callable[[Any], None], value: Any) -> None:
        if threading.get_ident() == self._thread:
            fn(value)
        else:
            self._loop.call_soon_threadsafe(fn, value)

    def _next(self, value: Any) -> None:
        if self._done:
            return
        queue = self._queue
        if len(queue) >= self._size and not self._subscribing:
            if self._policy == "close":
                self.overflowed = True
                self._end(SlowConsumer(f"the client read too slowly: {self._size} messages waited to be sent"))
                self._queue.clear()
                self.close()
                return
            if self._policy == "drop_oldest":
                queue.popleft()
                self.dropped += 1
            else:
                self.dropped += len(queue)
                queue.clear()
            if self._stats is not None:
                self._stats.dropped = self.dropped
        queue.append(value)
        if len(queue) > self.max_buffered:
            self.max_buffered = len(queue)
            if self._stats is not None:
                self._stats.max_buffered = self.max_buffered
        self._signal()

    def _end(self, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        self._signal()

    def _signal(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while not self._queue:
            if self._done:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wake = self._loop.create_future()
            await self._wake
        if self.overflowed:
            self._queue.clear()
            raise self._error or SlowConsumer("the client read too slowly")
        return self._queue.popleft()


async def read_stream(
    read: Callable[[], Awaitable[Any]],
    end: Any,
    decode: Callable[[bytes], Any],
    observer: ObserverBase[Any],
    topic: str,
) -> int:
    """Read messages with ``await read()`` until it returns ``end``; each is decoded and handed
    to ``observer.on_next`` with :data:`~reactive_services.adapters.current_message` set to a
    :class:`Message` (topic ``topic``, partition -1, offset: its index in the stream), and the
    next is read once the work the Observer tracked on it settled. Returns the messages read;
    raises what ``read``, ``decode`` or the tracked work raised (``on_next``'s own exceptions
    too)."""
    index = 0
    while True:
        data = await read()
        if data is end:
            return index
        value = decode(data)
        message: Message[Any] = Message(topic, -1, index, None, value, (), raw=data)
        token = current_message.set(message)
        try:
            observer.on_next(value)
        finally:
            current_message.reset(token)
        await message.settled()
        index += 1
