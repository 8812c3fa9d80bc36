"""Buffer items into lists by count or by time since the first item of the batch."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable, SingleAssignmentDisposable

from ._commit_hold import HeldRecords
from ._scheduling import pick_scheduler

__all__ = ["batch"]

T = TypeVar("T")


def batch(
    timespan_s: float, count: int, *, scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[T]], Observable[list[T]]]:
    """Buffer items into lists of at most ``count``, each sent no later than ``timespan_s`` after its first item.

    Marble diagram (``timespan_s=5``, ``count=3``; one character = 1 s)::

        source: -a-b-c----d---------e-f-|
        result: -----x---------y--------(z|)

        x = [a, b, c]   count reached at c
        y = [d]         5 s after d, the first item of its batch
        z = [e, f]      the partial batch flushed by completion

    A batch is sent when it holds ``count`` items, or ``timespan_s`` seconds after the
    *first* item of the batch arrived, whichever comes first. The timer starts with that
    first item (it is not a free-running interval), so an idle source sends nothing: an
    empty list is never emitted. When the source completes, the last partial batch (if
    any) is sent, then ``on_completed``. When the source errors, the error is passed on and
    the partial batch is dropped.

    Commits: fed by a broker source, each item's offset stays uncommitted while the item waits
    in a batch (a :meth:`~reactive_services.adapters.Message.hold`, which does not count against
    the source's ``concurrency``), and until the batch that contains it has been handled
    downstream: the Observer's ``on_next`` returned and the work it
    :func:`~reactive_services.adapters.track`-ed on the batch settled. A batch lost to an error,
    a dispose or a crash is therefore redelivered on restart (at-least-once); a batch whose
    tracked work fails ends the stream with that error, its items uncommitted.

    Marble diagram of the commits (``timespan_s=5``, ``count=3``, records a..f at offsets 0..5)::

        source:  -a-b-c----d---------e-f-|
        commits: -----(a,b,c)----d--------(e,f)

    Unlike reactivex's ``buffer_with_time_or_count``, whose timer runs from subscription
    on and emits empty lists while idle, this bounds each item's wait to ``timespan_s``
    and sends no empty work downstream.

    Example::

        rows.pipe(batch(0.5, 500)).subscribe(lambda rows: track(insert_many(rows)))  # <= 500 rows or 0.5 s each

    Args:
        timespan_s: the longest wait of a batch's first item, in seconds; > 0.
        count: the most items per batch; >= 1.
        scheduler: where the timespan is measured (a ``TestScheduler`` in tests). Default:
            the subscribe-time scheduler, else the running asyncio loop (thread-safe), else
            reactivex's ``TimeoutScheduler``.

    Returns:
        An operator from ``Observable[T]`` to ``Observable[list[T]]``; each list holds
        1 to ``count`` items in arrival order.

    Raises:
        ValueError: at construction, when ``timespan_s <= 0`` (or not finite) or ``count < 1``.

    This operator takes no user callback. Items and timer firings are serialised with a
    lock, so a timer on another thread never interleaves with ``on_next``.
    """
    if not (math.isfinite(timespan_s) and timespan_s > 0):
        raise ValueError(f"timespan_s must be a finite number > 0, got {timespan_s!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")

    def operator(source: Observable[T]) -> Observable[list[T]]:
        def subscribe(
            observer: abc.ObserverBase[list[T]], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            timer_scheduler = pick_scheduler(scheduler, scheduler_)
            lock = threading.RLock()
            buffer: list[T] = []
            held = HeldRecords()  # the commits of the records in ``buffer``
            generation = 0  # which batch a timer belongs to
            stopped = False
            timer = SerialDisposable()

            def flush() -> None:
                nonlocal buffer, generation
                items, buffer = buffer, []
                generation += 1
                timer.disposable = None
                held.emit(observer, items)

            def on_timer(_scheduler: Any, my_generation: Any) -> None:
                with lock:
                    if not stopped and my_generation == generation and buffer:
                        flush()

            def on_next(item: T) -> None:
                with lock:
                    if stopped:
                        return
                    buffer.append(item)
                    held.add()
                    if len(buffer) >= count:
                        flush()
                    elif len(buffer) == 1:
                        timer.disposable = timer_scheduler.schedule_relative(timespan_s, on_timer, generation)

            def on_error(error: Exception) -> None:
                nonlocal stopped
                with lock:
                    if stopped:
                        return
                    stopped = True
                    buffer.clear()
                    timer.dispose()
                    observer.on_error(error)

            def on_completed() -> None:
                nonlocal stopped
                with lock:
                    if stopped:
                        return
                    if buffer:
                        flush()
                    stopped = True
                    timer.dispose()
                    observer.on_completed()

            subscription = SingleAssignmentDisposable()
            subscription.disposable = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            return CompositeDisposable(subscription, timer)

        return Observable(subscribe)

    return operator
