"""Hold back a broker message's offset commit while an operator still works on it (shared, private)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from reactivex.abc import ObserverBase

from reactive_services.adapters import Hold, Message, current_message, track

__all__ = ["CommitHold", "HeldRecords"]


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

    __slots__ = ("message", "_hold")

    def __init__(self, message: Message | None = None) -> None:
        self.message = message if message is not None else current_message.get()
        self._hold = Hold(None, None)
        if self.message is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        future: asyncio.Future[None] = loop.create_future()
        self.message.track(future)  # tracked, not held: the message stays in flight meanwhile
        self._hold = Hold(future, loop)

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
        if error is None:
            self._hold.release()
        else:
            self._hold.fail(error)

    def cancel(self) -> None:
        """The work was disposed of before finishing: cancel the hold (the source is stopping)."""
        self._hold.cancel()


class HeldRecords:
    """The commits an operator holds back for the records it keeps for a later output.

    An operator that keeps records (a batch, a window, keyed state) calls :meth:`add` in its
    ``on_next`` for each record it keeps: when a broker source is delivering a message
    (:data:`~reactive_services.adapters.current_message` is set), a
    :meth:`~reactive_services.adapters.Message.hold` is taken on it, so the offset is not
    committed while the record is only in the operator's memory. When the output that contains
    the records is sent, :meth:`emit` delivers it downstream as a message of its own (a *carrier*,
    a copy of the last record's message with no work of its own), so that an Observer further
    down can :func:`~reactive_services.adapters.track` its work (an insert, a publish) and
    :meth:`~reactive_services.adapters.Message.hold` it again (a batch of batches); once that work
    settled and those holds were released, the records' holds are released, and their offsets
    can be committed. If that work fails, the holds fail: the source ends with the error and the
    records stay uncommitted. Records never emitted (the stream failed, the subscription was
    disposed, the process crashed) are never released, hence redelivered on restart.

    Outside a broker delivery, or without a running asyncio loop (a ``TestScheduler`` on its
    own), it does nothing but call ``on_next``.
    """

    __slots__ = ("_holds", "_last")

    def __init__(self) -> None:
        self._holds: list[Hold] = []
        self._last: Message | None = None

    def add(self, message: Message | None = None) -> None:
        """Hold the commit of ``message`` (default: the message being delivered now, if any)."""
        if message is None:
            message = current_message.get()
        if message is None or message is self._last:  # held already (records of one batch share it)
            return
        held = message.hold()
        if held.active:
            self._holds.append(held)
            self._last = message

    def merge(self, other: HeldRecords) -> None:
        """Take over ``other``'s holds (e.g. late records attached to the next window)."""
        self._holds.extend(other._holds)
        if other._last is not None:
            self._last = other._last
        other._holds, other._last = [], None

    def emit(
        self, observer: ObserverBase[Any], value: Any, *, also: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        """``observer.on_next(value)``, then release the holds once the work it started settled.

        ``also``: more work for the same output (e.g. a checkpoint write saying the output went
        out), started only once the work ``on_next`` started settled and the holds taken on
        the output were released (the output is published), and awaited before the records'
        holds are released. So a crash between the two leaves the output published and the
        checkpoint not written (the output is made again on replay), never the checkpoint
        written and the output lost.

        The holds move to this call: the instance is empty afterwards, ready for the next output.
        """
        holds, last = self._holds, self._last
        self._holds, self._last = [], None
        if not holds or last is None:
            observer.on_next(value)
            if also is not None:
                track(also())
            return
        carrier = Message(  # a copy with no work of its own (dataclasses.replace is 6x slower)
            last.topic,
            last.partition,
            last.offset,
            last.key,
            last.value,
            last.headers,
            last.timestamp_ms,
            last.raw,
            [],
            [],
        )
        var = current_message.var  # the context variable itself: no wrapper call per output
        token = var.set(carrier)
        try:
            observer.on_next(value)
        except BaseException as exc:
            for held in holds:
                held.fail(exc)
            raise
        finally:
            var.reset(token)
        if also is None and not carrier._pending and not carrier._holds:
            for held in holds:
                held.release()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # work was tracked on a loop in another thread: wait there
            loop = None
        if loop is None:
            for held in holds:  # nothing here can await it; the tracked work runs on regardless
                held.release()
            return
        _ReleaseAfter(carrier, holds, also).step()


class _ReleaseAfter:
    """Releases the records' holds of one output once its work settled, through callbacks on
    the work's futures (a task per output costs about 5 us): the carrier's tracked work, then
    the holds taken on it, each in order (more may be added meanwhile), then ``also``, started
    only then. The first failure fails the records' holds instead; a cancelled future leaves
    them held (the source is stopping: they are redelivered)."""

    __slots__ = ("carrier", "holds", "also", "waiting")

    def __init__(self, carrier: Message, holds: list[Hold], also: Callable[[], Awaitable[Any]] | None) -> None:
        self.carrier = carrier
        self.holds = holds
        self.also = also
        self.waiting: list[asyncio.Future[Any]] = []

    def step(self, _done: asyncio.Future[Any] | None = None) -> None:
        waiting, carrier = self.waiting, self.carrier
        while True:
            if not waiting:
                more = carrier._pending or carrier._holds  # work first, then the holds taken on it
                if more:
                    waiting.extend(cast("list[asyncio.Future[Any]]", more))
                    more.clear()  # in place, as Message.settled does (a derived message shares the list)
                    waiting.reverse()  # popped from the end: in order
                elif self.also is not None:  # the output is published: now its own extra work
                    waiting.append(asyncio.ensure_future(self.also()))
                    self.also = None
                else:
                    for held in self.holds:
                        held.release()
                    return
            future = waiting[-1]
            if not future.done():
                future.add_done_callback(self.step)
                return
            waiting.pop()
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                for held in self.holds:
                    held.fail(error)
                return
