"""Hand items emitted on any thread over to an asyncio event loop, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOThreadSafeScheduler

__all__ = ["to_loop"]

T = TypeVar("T")


def to_loop(loop: asyncio.AbstractEventLoop | None = None) -> Callable[[Observable[T]], Observable[T]]:
    """Deliver every notification on the asyncio event loop's thread, in the order emitted.

    Marble diagram (``|T|``: the worker thread, ``|L|``: the loop thread)::

        source |T|: -a--b-c--|
        result |L|: -a--b-c--|     same order, each delivered by loop.call_soon_threadsafe

    This is ``observe_on(AsyncIOThreadSafeScheduler(loop))``. The thread-safe scheduler hands
    each notification over with ``loop.call_soon_threadsafe``, which also *wakes* the loop, so
    an item arrives within about a millisecond even while the loop is idle. reactivex's plain
    ``AsyncIOScheduler`` uses ``loop.call_soon``, which is not thread-safe: from another thread
    it queues the callback without waking the loop, and the item arrives only when the loop
    next wakes for some other reason. Use ``to_loop`` where a thread (a blocking client, a
    file watcher, a ``ThreadPoolScheduler``) feeds an asyncio pipeline.

    Example::

        # inside async code: a thread pushes lines, the loop handles them
        lines = Subject()
        lines.pipe(to_loop(), map_async(store_line)).subscribe(...)
        threading.Thread(target=lambda: [lines.on_next(l) for l in open(path)]).start()

    Args:
        loop: the target loop. Default: the loop running in the thread that subscribes.

    Returns:
        An operator from ``Observable[T]`` to ``Observable[T]``.

    Errors: nothing is raised at construction. Subscribing with ``loop=None`` where no loop is
    running sends ``RuntimeError`` to ``on_error``. Emitting after the loop has closed raises
    asyncio's ``RuntimeError`` in the emitting thread (nothing could run the item any more).
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            target = loop if loop is not None else asyncio.get_running_loop()
            return source.pipe(ops.observe_on(AsyncIOThreadSafeScheduler(target))).subscribe(
                observer, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator
