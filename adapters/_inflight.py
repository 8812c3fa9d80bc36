"""The bounded window of messages in flight of a broker source (``concurrency`` messages at most).

Shared by the in-memory and Kafka sources; every subscription delivers through one,
``concurrency=1`` included. The pure offset bookkeeping is
:class:`reactive_services.adapters._offsets.OffsetTracker`; this module adds the asyncio part: one task per
message with tracked work that awaits :meth:`Message.settled`, the per-key ordering, and a
wake-up event the source waits on when the window is full.
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
    work it tracked settled. The first failure of tracked work is kept in :attr:`error`; the
    failed offset stays in flight for ever, so nothing from it on is committable.

    Args:
        limit: the most messages in flight at once (>= 1).
        on_settled: called (on the loop) after a message's work settled successfully.
    """

    def __init__(self, limit: int, on_settled: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.error: Exception | None = None
        self.max_seen = 0
        self._on_settled = on_settled
        self._count = 0
        self._tasks: dict[asyncio.Task[None], Any] = {}  # settle task -> its partition
        self._keys: dict[tuple[Any, bytes], asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        #: Set when tracked work failed (then :attr:`error` holds the first failure).
        self.failed = asyncio.Event()

    def __len__(self) -> int:
        return self._count

    def full(self) -> bool:
        """True when ``limit`` messages are in flight."""
        return self._count >= self.limit

    def key_busy(self, tp: Hashable, key: bytes | None) -> bool:
        """True when an earlier message with ``key`` in ``tp`` has not settled yet."""
        if key is None:
            return False
        task = self._keys.get((tp, key))
        return task is not None and not task.done()

    def skip(self, tp: Hashable, offset: int) -> None:
        """Count ``offset`` as handled without delivering it (e.g. dead-lettered)."""
        epoch = self._start(tp, offset)
        self.tracker.complete(tp, offset, epoch)

    def _start(self, tp: Hashable, offset: int) -> int:
        try:
            return self.tracker.start(tp, offset)
        except ValueError:  # the position moved back (a seek, a reset): start that partition afresh
            log.warning("%r: offset %d delivered again; tracking the partition afresh", tp, offset)
            self.tracker.revoke(tp)
            return self.tracker.start(tp, offset)

    def begin(self, tp: Hashable, offset: int) -> int:
        """Count ``offset`` of ``tp`` in flight (before its ``on_next``); returns its epoch."""
        self._count += 1
        self.max_seen = max(self.max_seen, self._count)
        return self._start(tp, offset)

    def settle(self, msg: Message, tp: Hashable, epoch: int) -> None:
        """After ``on_next(msg)`` returned: await its tracked work in the background (or
        complete it at once when it tracked nothing)."""
        if not msg._pending:
            self._done(tp, msg.offset, epoch)
            return
        task = asyncio.get_running_loop().create_task(self._settle(msg, tp, epoch))
        self._tasks[task] = tp
        if msg.key is not None:
            self._keys[(tp, msg.key)] = task
        task.add_done_callback(lambda t: self._forget_task(t, tp, msg.key))

    async def _settle(self, msg: Message, tp: Hashable, epoch: int) -> None:
        try:
            await msg.settled()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - ends the stream through self.error
            self._count -= 1
            if self.error is None:
                self.error = exc
                self.failed.set()
            else:
                log.warning("%r@%d failed after an earlier failure: %r", tp, msg.offset, exc)
            self._changed.set()
            return
        self._done(tp, msg.offset, epoch)

    def _done(self, tp: Hashable, offset: int, epoch: int) -> None:
        self._count -= 1
        self.tracker.complete(tp, offset, epoch)
        self._changed.set()
        if self._on_settled is not None:
            self._on_settled()

    def _forget_task(self, task: asyncio.Task[None], tp: Hashable, key: bytes | None) -> None:
        self._tasks.pop(task, None)
        if key is not None and self._keys.get((tp, key)) is task:
            del self._keys[(tp, key)]
        if task.cancelled():
            self._count -= 1
            self._changed.set()

    def abandon(self, tp: Hashable, offset: int) -> None:
        """A message begun but not handled (its ``on_next`` disposed the subscription or
        raised): it leaves the window but stays uncommitted."""
        self._count -= 1
        self._changed.set()

    async def wait_changed(self, timeout: float | None = None) -> None:
        """Wait until a message settled (or failed), or ``timeout`` seconds passed."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def drain(self, partitions: Iterable[Hashable] | None = None, timeout: float | None = None) -> bool:
        """Wait until the tracked work of ``partitions`` (all when None) settled, at most
        ``timeout`` seconds; returns True if it all settled."""
        wanted = None if partitions is None else set(partitions)
        tasks = [t for t, tp in self._tasks.items() if wanted is None or tp in wanted]
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    def forget(self, tp: Hashable) -> None:
        """Stop tracking ``tp`` (revoked): its unfinished messages will not be committed."""
        self.tracker.revoke(tp)

    async def cancel(self) -> None:
        """Cancel every settle task still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
