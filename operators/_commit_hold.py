"""Hold back a broker message's offset commit while an operator still works on it (shared, private)."""

from __future__ import annotations

import asyncio
from typing import Any

from reactivex.abc import ObserverBase

from reactive_services.adapters import Message, current_message

__all__ = ["CommitHold"]


class CommitHold:
    """Ties asynchronous work on one item to the broker message being delivered, if any.

    Created inside ``on_next``: when a broker source is delivering a message
    (:data:`reactive_services.adapters.current_message` is set) and an asyncio loop runs in this thread, a
    future is :meth:`~reactive_services.adapters.Message.track`-ed on that message, so its offset is not
    committed until :meth:`release` is called (at-least-once). :meth:`emit` sends a value
    downstream with ``current_message`` set again, so a sink further down (``BrokerSink``,
    ``DeadLetterSink``) tracks its publish on the same message even though the value comes
    out later, from a timer or a task. Outside of a delivery, or with no running loop (unit
    tests on a ``TestScheduler``), both are plain calls.
    """

    __slots__ = ("message", "_future", "_loop")

    def __init__(self, message: Message | None = None) -> None:
        self.message = message if message is not None else current_message.get()
        self._future: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.message is None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._future = self._loop.create_future()
        self.message.track(self._future)

    def emit(self, observer: ObserverBase[Any], value: Any) -> None:
        """``observer.on_next(value)`` with ``current_message`` set to this hold's message."""
        if self.message is None:
            observer.on_next(value)
            return
        token = current_message.set(self.message)
        try:
            observer.on_next(value)
        finally:
            current_message.reset(token)

    def release(self, error: BaseException | None = None) -> None:
        """Let the commit go on (``error=None``), or fail it: the source stops without committing.

        Safe to call from any thread and more than once (later calls do nothing).
        """
        future, loop = self._future, self._loop
        if future is None or loop is None:
            return

        def settle() -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def cancel(self) -> None:
        """The work was disposed of before finishing: cancel the hold (the source is stopping)."""
        future, loop = self._future, self._loop
        if future is None or loop is None:
            return
        try:
            loop.call_soon_threadsafe(future.cancel)
        except RuntimeError:
            pass
