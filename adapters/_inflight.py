"""The bounded window of messages in flight of a broker source (``concurrency`` messages at most).

Shared by the in-memory and Kafka sources; every subscription delivers through one,
``concurrency=1`` included. The pure offset bookkeeping is
:class:`reactive_services.adapters._offsets.OffsetTracker`; this module adds the asyncio part: one task per
message with tracked work that awaits :meth:`Message.settled`, the per-key ordering, and a
wake-up event the source waits on when the window is full. A message handled synchronously,
with no tracked work and no hold, never enters the window: its offset completes at once
(:meth:`InFlight.advance`, O(1), no task and no future), which is what most records cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from ._message import Message
from ._offsets import OffsetTracker

__all__ = ["InFlight"]

log = logging.getLogger("reactive_services.adapters.inflight")


class InFlight:
    """At most ``limit`` messages in flight; their offsets tracked per partition.

    A message is in flight from :meth:`begin` (called just before its ``on_next``) until the
    work it tracked (:meth:`Message.track`) settled: that is what ``limit`` and the per-key
    order count. Its offset completes (may be committed) once, in addition, every
    :meth:`Message.hold` taken on it was released: a held message no longer counts against
    ``limit`` nor blocks its key, but the commit of its partition stays below it. The first
    failure of tracked work or of a hold is kept in :attr:`error`; the failed offset never
    completes, so nothing from it on is committable.

    Args:
        limit: the most messages in flight at once (>= 1).
        on_settled: called (on the loop) after a message's offset completed.
    """

    def __init__(self, limit: int, on_settled: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.error: Exception | None = None
        self.max_seen = 0
        self._on_settled = on_settled
        #: messages in flight now (read-only outside this class; ``len(window)`` too)
        self.count = 0
        #: the partition of the message whose handler the source is awaiting now, if any
        #: (:func:`~reactive_services.adapters._source.await_payload`, the Kafka source's
        #: ``_deliver_payloads``): :meth:`drain` waits for it too
        self.inline: Any = None
        self._tasks: dict[_TrackedWait, Any] = {}  # the tracked work of a message in flight -> its partition
        self._held: dict[_HeldWait, Any] = {}  # the holds of a handled message -> its partition
        self._keys: dict[tuple[Any, bytes], _TrackedWait] = {}
        self._waiters: list[asyncio.Future[None]] = []  # wait_changed: any settle, completion or failure
        self._room_waiters: list[asyncio.Future[None]] = []  # wait_room: a place or a key freed, or a failure
        self._changed = _Signal(self._waiters)
        self._room = _Signal(self._room_waiters)
        #: Set when tracked work failed (then :attr:`error` holds the first failure).
        self.failed = asyncio.Event()

    def __len__(self) -> int:
        return self.count

    @property
    def held(self) -> int:
        """Messages handled whose offsets still wait for holds to be released."""
        return len(self._held)

    def full(self) -> bool:
        """True when ``limit`` messages are in flight."""
        return self.count >= self.limit

    def key_busy(self, tp: Hashable, key: bytes | None) -> bool:
        """True when an earlier message with ``key`` in ``tp`` has not settled yet."""
        if key is None or not self._keys:
            return False
        wait = self._keys.get((tp, key))
        return wait is not None and not wait.done

    def skip(self, tp: Hashable, offset: int) -> None:
        """Count ``offset`` as handled without delivering it (e.g. dead-lettered)."""
        epoch = self._start(tp, offset)
        self.tracker.complete(tp, offset, epoch)

    def _start(self, tp: Hashable, offset: int, last: int | None = None) -> int:
        try:
            return self.tracker.start(tp, offset, last)
        except ValueError:  # the position moved back (a seek, a reset): start that partition afresh
            log.warning("%r: offset %d delivered again; tracking the partition afresh", tp, offset)
            self.tracker.revoke(tp)
            return self.tracker.start(tp, offset, last)

    def begin(self, tp: Hashable, offset: int, last: int | None = None) -> int:
        """Count ``offset`` of ``tp`` in flight; returns its epoch.

        ``last``: the message is a batch of the offsets ``offset .. last`` (all committable
        together once it completes; see :meth:`OffsetTracker.start`).
        """
        self.count += 1
        if self.count > self.max_seen:
            self.max_seen = self.count
        return self._start(tp, offset, last)

    def advance(self, tp: Hashable, offset: int) -> None:
        """``offset`` of ``tp`` was handled synchronously, with no tracked work and no hold:
        it completes at once, without entering the window (O(1): the commit position moves)."""
        if self.count >= self.max_seen:
            self.max_seen = self.count + 1
        try:
            self.tracker.advance(tp, offset)
        except ValueError:  # the position moved back (a seek, a reset): start that partition afresh
            log.warning("%r: offset %d delivered again; tracking the partition afresh", tp, offset)
            self.tracker.revoke(tp)
            self.tracker.advance(tp, offset)
        if self._on_settled is not None:
            self._on_settled()

    def settle(
        self, msg: Message, tp: Hashable, epoch: int, offset: int | None = None, key: bytes | None = None
    ) -> None:
        """After ``on_next(msg)`` returned (``msg`` begun with :meth:`begin`): await its tracked
        work, then its holds, in the background (or complete it at once when it has neither).

        ``offset`` is the offset begun (default ``msg.offset``); ``key`` what its order is kept
        by (default ``msg.key``).
        """
        if offset is None:
            offset = msg.offset
        if key is None:
            key = msg.key
        if msg._pending:
            wait = _TrackedWait(self, msg, tp, epoch, offset, key)
            self._tasks[wait] = tp
            if key is not None:
                self._keys[(tp, key)] = wait
            wait.step()
            return
        self._delivered(msg, tp, epoch, offset)

    def _delivered(self, msg: Message, tp: Hashable, epoch: int, offset: int) -> None:
        """Its tracked work settled: free its place; complete it now, or once its holds are released."""
        self._free()
        if msg._holds:
            self._await_holds(msg, tp, epoch, offset)
        else:
            self._complete(tp, offset, epoch)

    def _await_holds(self, msg: Message, tp: Hashable, epoch: int, offset: int) -> None:
        """Complete ``offset`` once every hold on ``msg`` was released (see :class:`_HeldWait`)."""
        wait = _HeldWait(self, msg, tp, epoch, offset)
        self._held[wait] = tp
        wait.step()

    def _fail(self, exc: Exception, tp: Hashable, offset: int) -> None:
        if self.error is None:
            self.error = exc
            self.failed.set()
        else:
            log.warning("%r@%d failed after an earlier failure: %r", tp, offset, exc)
        self._changed.set()
        self._room.set()

    def _free(self) -> None:
        """The message's delivery is over: it no longer counts against ``limit``."""
        self.count -= 1
        self._changed.set()
        self._room.set()

    def _complete(self, tp: Hashable, offset: int, epoch: int) -> None:
        self.tracker.complete(tp, offset, epoch)
        self._changed.set()
        if self._on_settled is not None:
            self._on_settled()

    def _forget(self, wait: _TrackedWait) -> None:
        self._tasks.pop(wait, None)
        if wait.key is not None and self._keys.get((wait.tp, wait.key)) is wait:
            del self._keys[(wait.tp, wait.key)]

    def abandon(self, tp: Hashable, offset: int) -> None:
        """A message begun but not handled (its ``on_next`` disposed the subscription or
        raised): it leaves the window but stays uncommitted."""
        self.count -= 1
        self._changed.set()
        self._room.set()

    def keep_uncommitted(self, tp: Hashable, offset: int) -> None:
        """``offset`` of ``tp``, not begun (an awaited handler that was cancelled), stays
        uncommitted: nothing of ``tp`` from ``offset`` on is committed in this assignment."""
        self._start(tp, offset)

    def epoch_at(self, tp: Hashable, offset: int) -> int:
        """The epoch of ``tp``, tracked from ``offset`` first if it is not tracked yet (for a
        message delivered and not advanced to: the commit of ``tp`` stays at ``offset``)."""
        epoch = self.tracker.epoch(tp)
        return self.tracker.assign(tp, offset) if epoch is None else epoch

    def inline_done(self) -> None:
        """The handler the source awaited (:attr:`inline`) returned: wake :meth:`drain`."""
        self.inline = None
        self._changed.set()

    async def wait_changed(self, timeout: float | None = None) -> None:
        """Wait until a message settled, a held offset completed, or something failed, or
        ``timeout`` seconds passed (a future and a timer: no task per wait)."""
        await self._wait(self._waiters, timeout)

    async def wait_room(self, timeout: float | None = None) -> None:
        """Wait until a message in flight settled (a place in the window, and its key, are free
        again) or something failed, or ``timeout`` seconds passed: what a source blocked on a full
        window waits for. Held offsets completing do not wake it (they free no place), so a
        source blocked behind a long queue of holds is not woken once per hold."""
        await self._wait(self._room_waiters, timeout)

    async def _wait(self, waiters: list[asyncio.Future[None]], timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters.append(waiter)
        timer = None if timeout is None else loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    async def drain(
        self, partitions: Iterable[Hashable] | None = None, timeout: float | None = None, *, holds: bool = False
    ) -> bool:
        """Wait until the tracked work of ``partitions`` (all when None) settled, at most
        ``timeout`` seconds; returns True if it all settled.

        With ``holds=True`` also wait until the holds on their handled messages were released
        (call it after the operators holding them were told the stream ended).
        """
        wanted = None if partitions is None else set(partitions)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            inline = self.inline
            busy = (inline is not None and (wanted is None or inline in wanted)) or any(
                wanted is None or tp in wanted for tp in self._tasks.values()
            )
            held = holds and any(wanted is None or tp in wanted for tp in self._held.values())
            if not busy and not held:
                return True
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            # woken by each settle, completion or failure (a settled message may leave holds to wait for)
            await self.wait_changed(timeout=left if left is not None else 1.0)

    def forget(self, tp: Hashable) -> None:
        """Stop tracking ``tp`` (revoked): its unfinished messages will not be committed."""
        self.tracker.revoke(tp)

    async def cancel(self) -> None:
        """Cancel every settle task still running and wait for them to end; stop waiting for holds
        (the messages still held stay uncommitted)."""
        work: list[Any] = []
        for tracked in list(self._tasks):
            tracked.cancelled = True
            self._forget(tracked)
            self.count -= 1
            for future in tracked.pending[tracked.index :]:
                if isinstance(future, asyncio.Future):
                    future.cancel()
                    work.append(future)
        for wait in list(self._held):
            wait.cancelled = True
        self._held.clear()
        self._changed.set()
        self._room.set()
        if work:
            await asyncio.gather(*work, return_exceptions=True)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Signal:
    """``set()`` wakes every waiter in ``waiters`` now (an Event without its waiter tasks)."""

    __slots__ = ("_waiters",)

    def __init__(self, waiters: list[asyncio.Future[None]]) -> None:
        self._waiters = waiters

    def set(self) -> None:
        waiters = self._waiters
        if waiters:
            woken = waiters[:]
            waiters.clear()  # in place: the window keeps the same list
            for waiter in woken:
                _wake(waiter)


class _TrackedWait:
    """Frees a message's place in the window once the work tracked on it finished, in the order it
    was tracked, with callbacks (no task of its own); then its holds are awaited
    (:class:`_HeldWait`). Failed work fails it (the stream ends); cancelled work, or
    :meth:`InFlight.cancel`, frees its place without completing it (it stays uncommitted). Work
    tracked on the message while waiting is waited for too."""

    __slots__ = ("cancelled", "done", "epoch", "index", "key", "msg", "offset", "pending", "tp", "window")

    def __init__(
        self, window: InFlight, msg: Message, tp: Hashable, epoch: int, offset: int, key: bytes | None
    ) -> None:
        self.window = window
        self.msg = msg
        self.pending: list[Any] = msg._pending or []
        self.tp = tp
        self.epoch = epoch
        self.offset = offset
        self.key = key
        self.index = 0
        self.done = False
        self.cancelled = False

    def step(self, _: object = None) -> None:
        if self.cancelled or self.done:
            return
        pending, window = self.pending, self.window
        while self.index < len(pending):
            work = pending[self.index]
            if not work.done():
                work.add_done_callback(self.step)
                return
            self.index += 1
            if work.cancelled():
                self._end()
                window._free()
                return
            error = work.exception()
            if error is not None:
                self._end()
                window._free()
                window._fail(error if isinstance(error, Exception) else RuntimeError(repr(error)), self.tp, self.offset)
                return
        self._end()
        window._delivered(self.msg, self.tp, self.epoch, self.offset)

    def _end(self) -> None:
        self.done = True
        self.window._forget(self)


class _HeldWait:
    """Completes a handled message's offset once every hold on it was released, in the order they
    were taken, with callbacks (no task, no future of its own); the first failed hold fails it,
    a cancelled one (or :meth:`InFlight.cancel`) leaves it uncommitted. A hold taken on the
    message while waiting is waited for too."""

    __slots__ = ("cancelled", "epoch", "holds", "index", "offset", "tp", "window")

    def __init__(self, window: InFlight, msg: Message, tp: Hashable, epoch: int, offset: int) -> None:
        self.window = window
        self.holds = msg._holds or []
        self.tp = tp
        self.epoch = epoch
        self.offset = offset
        self.index = 0
        self.cancelled = False

    def step(self, _: object = None) -> None:
        if self.cancelled:
            return
        holds, window = self.holds, self.window
        while self.index < len(holds):
            held = holds[self.index]
            if not held.done():
                held.add_done_callback(self.step)
                return
            self.index += 1
            if held.cancelled():
                window._held.pop(self, None)
                window._changed.set()
                return
            error = held.exception()
            if error is not None:
                window._held.pop(self, None)
                window._fail(error if isinstance(error, Exception) else RuntimeError(repr(error)), self.tp, self.offset)
                return
        window._held.pop(self, None)
        window._complete(self.tp, self.offset, self.epoch)
