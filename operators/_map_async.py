"""Await an async function on each item, on the running asyncio loop; results in input order."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable

from ._commit_hold import CommitHold

__all__ = ["map_async"]

T = TypeVar("T")
R = TypeVar("R")


class _Running:
    __slots__ = ("task", "hold")

    def __init__(self, task: asyncio.Future[Any], hold: CommitHold) -> None:
        self.task = task
        self.hold = hold


def map_async(fn: Callable[[T], Awaitable[R]], *, concurrency: int = 1) -> Callable[[Observable[T]], Observable[R]]:
    """Await ``fn(item)`` for each item on the running asyncio loop and emit the results in input order.

    Marble diagram (``concurrency=2``; one character = 1 s; ``fn(a)`` takes 4 s, the others 1 s)::

        source: -a-b-c-----|
        result: -----XC----|     X = A then B, both at 5 s: B was ready at 4 s but waits for A
                                 (keeping its slot); c, arrived at 5 s, starts when X is out

    ``fn`` is called on the loop (items emitted from another thread are handed over with
    ``loop.call_soon_threadsafe``, in order); its awaitable runs as a task. At most
    ``concurrency`` items are in flight (started and not yet emitted): a result that is ready
    but waits for an earlier item keeps its slot, which bounds the results held back. Further
    items wait, in order, in an in-memory FIFO.
    That FIFO is not bounded, because an Observable cannot be slowed down; bound the input
    instead. The broker sources do: with a broker source, each message's offset commit is
    held back (:func:`reactive_services.adapters.track`) until its result has been emitted downstream, and a
    source delivers at most its own ``concurrency`` messages before those settle (one by
    default). So ``concurrency`` here helps only as far as the source lets messages overlap
    (or with sources that do not wait, such as plain observables or a ``batch`` per item).
    Completion waits for every task; the output completes after the last result.

    A coroutine object is never emitted: the result of the awaitable is.

    Example::

        async def enrich(order: dict) -> dict:
            customer = await db.fetch_customer(order["customer_id"])
            return {**order, "customer": customer}

        orders.pipe(map_async(enrich, concurrency=8))

    Args:
        fn: ``item -> Awaitable[R]``, typically an ``async def`` function.
        concurrency: the most items in flight at once (started, result not yet emitted); >= 1.

    Returns:
        An operator from ``Observable[T]`` to ``Observable[R]``. Subscribe to it on a thread
        where an asyncio loop is running.

    Raises:
        ValueError: at construction, when ``concurrency < 1``.

    Errors: an exception raised by ``fn`` or by its awaitable, ``fn`` returning something that
    is not awaitable (``TypeError``), a cancelled awaitable (``asyncio.CancelledError`` wrapped
    in ``RuntimeError``), or subscribing with no running loop (``RuntimeError``) goes to
    ``on_error``; the tasks still running are cancelled and later results are not emitted.
    Disposing the subscription cancels the running tasks.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")

    def operator(source: Observable[T]) -> Observable[R]:
        def subscribe(observer: abc.ObserverBase[R], scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            loop = asyncio.get_running_loop()  # RuntimeError -> on_error (reactivex catches it)
            loop_thread = threading.get_ident()
            running: deque[_Running] = deque()
            waiting: deque[tuple[T, CommitHold]] = deque()
            source_done = False
            stopped = False
            subscription = SingleAssignmentDisposable()

            def on_loop(action: Callable[..., None], *args: Any) -> None:
                if threading.get_ident() == loop_thread:
                    action(*args)
                else:
                    loop.call_soon_threadsafe(action, *args)

            def stop(error: BaseException | None) -> None:
                nonlocal stopped
                stopped = True
                holds = [entry.hold for entry in running] + [hold for _item, hold in waiting]
                for entry in running:
                    entry.task.cancel()
                for hold in holds:
                    if error is None:
                        hold.cancel()
                    else:
                        hold.release(error)
                running.clear()
                waiting.clear()

            def fail(error: BaseException) -> None:
                if stopped:
                    return
                stop(error)
                subscription.dispose()
                observer.on_error(error)  # type: ignore[arg-type]

            def pump() -> None:
                while not stopped and waiting and len(running) < concurrency:
                    item, hold = waiting.popleft()
                    try:
                        awaitable = fn(item)
                        if not inspect.isawaitable(awaitable):
                            raise TypeError(
                                f"map_async: fn must return an awaitable, got {type(awaitable).__name__}"
                                " (use reactivex.operators.map for a plain function)"
                            )
                        task = asyncio.ensure_future(awaitable)
                    except Exception as exc:  # a user callback failed
                        hold.release(exc)
                        fail(exc)
                        return
                    running.append(_Running(task, hold))
                    task.add_done_callback(lambda _task: drain())

            def drain() -> None:
                while not stopped and running and running[0].task.done():
                    entry = running.popleft()
                    if entry.task.cancelled():
                        error: BaseException = RuntimeError("map_async: the awaitable was cancelled")
                        entry.hold.release(error)
                        fail(error)
                        return
                    exc = entry.task.exception()
                    if exc is not None:
                        entry.hold.release(exc)
                        fail(exc)
                        return
                    entry.hold.emit(observer, entry.task.result())
                    entry.hold.release()
                pump()
                finish_if_done()

            def finish_if_done() -> None:
                nonlocal stopped
                if not stopped and source_done and not running and not waiting:
                    stopped = True
                    observer.on_completed()

            def accept(item: T, hold: CommitHold) -> None:
                if stopped:
                    hold.cancel()
                    return
                waiting.append((item, hold))
                pump()

            def completed() -> None:
                nonlocal source_done
                source_done = True
                finish_if_done()

            def on_next(item: T) -> None:
                on_loop(accept, item, CommitHold())

            def on_error(error: Exception) -> None:
                on_loop(fail, error)

            def on_completed() -> None:
                on_loop(completed)

            def dispose() -> None:
                if not stopped:
                    on_loop(stop, None)

            subscription.disposable = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return CompositeDisposable(subscription, Disposable(dispose))

        return Observable(subscribe)

    return operator
