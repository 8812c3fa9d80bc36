"""Resubscribe after an error, waiting an exponential backoff with jitter."""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import SerialDisposable, SingleAssignmentDisposable

from ._scheduling import pick_scheduler

__all__ = ["backoff_delay", "retry_with_backoff"]

T = TypeVar("T")


def _default_retriable(error: BaseException) -> bool:
    return bool(getattr(error, "retriable", False))


def backoff_delay(
    attempt: int,
    *,
    initial_delay_s: float = 0.1,
    max_delay_s: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.5,
    random: Callable[[], float] = _random.random,
) -> float:
    """The wait, in seconds, before retrying after failed attempt number ``attempt`` (1-based).

    Capped exponential backoff, then jitter (after Marc Brooker, "Exponential Backoff And
    Jitter", AWS Architecture Blog, 2015)::

        cap_n   = min(max_delay_s, initial_delay_s * multiplier ** (n - 1))
        delay_n = cap_n - jitter * cap_n * U        U uniform in [0, 1), from ``random()``

    ``jitter=0`` gives the plain capped exponential; ``jitter=0.5`` is the blog's "equal
    jitter" (``cap/2 + uniform(0, cap/2)``); ``jitter=1`` its "full jitter" (``uniform(0, cap)``).

    Example:
        >>> backoff_delay(3, initial_delay_s=1.0, jitter=0.0)
        4.0
        >>> backoff_delay(3, initial_delay_s=1.0, jitter=1.0, random=lambda: 0.25)
        3.0

    Args:
        attempt: the number of the attempt that just failed, >= 1.
        initial_delay_s: the wait after the first failure, in seconds (see :func:`retry_with_backoff`).
        max_delay_s: the cap on the (pre-jitter) wait, in seconds.
        multiplier: the growth factor of the wait per failure.
        jitter: the fraction of the wait that is randomised, in ``[0, 1]``.
        random: returns a float in ``[0, 1)`` (e.g. ``random.Random(42).random``).

    Returns:
        The delay in seconds, in ``(cap_n * (1 - jitter), cap_n]``.
    """
    try:
        cap = min(max_delay_s, initial_delay_s * multiplier ** (attempt - 1))
    except OverflowError:  # a very long run of failures: the cap applies
        cap = max_delay_s
    return cap - jitter * cap * random()


def retry_with_backoff(
    *,
    max_attempts: int = 5,
    initial_delay_s: float = 0.1,
    max_delay_s: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.5,
    retriable: Callable[[BaseException], bool] | None = None,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    random: _random.Random | None = None,
) -> Callable[[Observable[T]], Observable[T]]:
    """Resubscribe to the source after a retriable error, waiting a capped exponential backoff with jitter.

    Marble diagram (``initial_delay_s=2``, ``multiplier=2``, ``jitter=0``; ``#`` a retriable error;
    each retry resubscribes to the cold source ``s``)::

        s (1st subscription):  -a-#
        s (2nd, after 2 s):          -b-#
        s (3rd, after 4 s):                  -c-|
        result:                -a-------b--------c-|

    The wait before resubscribing after failed attempt ``n`` of a run of failures is
    :func:`backoff_delay` ``(n)``: ``min(max_delay_s, initial_delay_s * multiplier**(n-1))``,
    less ``jitter`` times that times a uniform draw in ``[0, 1)`` (Marc Brooker, "Exponential
    Backoff And Jitter", AWS Architecture Blog, 2015: ``jitter=0.5`` is "equal jitter",
    ``jitter=1`` "full jitter").

    At most ``max_attempts`` subscriptions fail *in a row*: every item the source emits
    (``on_next``) resets the count, so a long-lived source that fails now and then (a
    consumer whose connection drops once a day) is retried afresh each time, and the delay
    starts again from ``initial_delay_s``. An error that is not retriable goes to
    ``on_error`` at once; so does the last error when ``max_attempts`` is reached. The
    error is passed on as it is (not wrapped).

    Use it around a cold source to reconnect, or per item to reprocess::

        messages = broker.source("orders").pipe(retry_with_backoff(max_attempts=10))

        results = items.pipe(ops.concat_map(lambda item: reactivex.defer(
            lambda _: process(item)).pipe(retry_with_backoff(max_attempts=3))))

    (``reactivex.defer`` makes each retry call ``process`` again; an Observable that only
    replays a stored result would fail the same way each time.)

    Example:
        >>> import random, reactivex
        >>> from reactivex.testing import TestScheduler
        >>> from reactive_services.errors import BrokerUnavailableError
        >>> calls = []
        >>> def connect(observer, _):
        ...     calls.append(1)
        ...     if len(calls) == 1:
        ...         observer.on_error(BrokerUnavailableError("down"))
        ...     else:
        ...         observer.on_next("connected"); observer.on_completed()
        >>> ts, out = TestScheduler(), []
        >>> _ = reactivex.create(connect).pipe(retry_with_backoff(
        ...     max_attempts=2, initial_delay_s=5.0, jitter=0.0, scheduler=ts)
        ... ).subscribe(lambda x: out.append((ts.clock, x)))
        >>> ts.advance_to(60.0); out
        [(5.0, 'connected')]

    Args:
        max_attempts: subscriptions allowed to fail in a row, the first included (1: no
            retry); >= 1.
        initial_delay_s: the wait after the first failure, in seconds; >= 0.
        max_delay_s: the cap on the (pre-jitter) wait, in seconds; >= 0 (it wins over
            ``initial_delay_s`` when smaller).
        multiplier: the growth factor of the wait per failure; >= 1.
        jitter: the fraction of each wait that is randomised, in ``[0, 1]``.
        retriable: ``error -> bool``; whether an error may be retried. Default: the error's
            ``retriable`` attribute (every :mod:`reactive_services.errors` class has one),
            ``False`` when it has none.
        on_retry: called as ``on_retry(attempt, error, delay_s)`` before each wait, where
            ``attempt`` is the number (1-based, within the current run of failures) of the
            attempt that just failed; e.g. to log or count retries.
        scheduler: where the waits are measured (a ``TestScheduler`` in tests). Default: the
            subscribe-time scheduler, else the running asyncio loop (thread-safe), else
            reactivex's ``TimeoutScheduler``.
        random: a ``random.Random`` for the jitter draws (seed it for reproducible delays).
            Default: the :mod:`random` module.

    Returns:
        An operator from ``Observable[T]`` to ``Observable[T]``.

    Raises:
        ValueError: at construction, for an out-of-range argument.

    Errors: an exception raised by ``retriable`` or ``on_retry`` is sent to ``on_error``
    (and no retry happens).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
    if not (math.isfinite(initial_delay_s) and initial_delay_s >= 0):
        raise ValueError(f"initial_delay_s must be a finite number >= 0, got {initial_delay_s!r}")
    if not (math.isfinite(max_delay_s) and max_delay_s >= 0):
        raise ValueError(f"max_delay_s must be a finite number >= 0, got {max_delay_s!r}")
    if not (math.isfinite(multiplier) and multiplier >= 1):
        raise ValueError(f"multiplier must be a finite number >= 1, got {multiplier!r}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
    is_retriable = retriable if retriable is not None else _default_retriable
    draw = random.random if random is not None else _random.random

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(observer: abc.ObserverBase[T], scheduler_: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            timer_scheduler = pick_scheduler(scheduler, scheduler_)
            serial = SerialDisposable()
            failures = 0  # failed attempts in a row

            def on_next(value: T) -> None:
                nonlocal failures
                failures = 0
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                nonlocal failures
                failures += 1
                try:
                    if failures >= max_attempts or not is_retriable(error):
                        observer.on_error(error)
                        return
                    delay = backoff_delay(
                        failures,
                        initial_delay_s=initial_delay_s,
                        max_delay_s=max_delay_s,
                        multiplier=multiplier,
                        jitter=jitter,
                        random=draw,
                    )
                    if on_retry is not None:
                        on_retry(failures, error, delay)
                except Exception as exc:  # a user callback failed: report it, stop retrying
                    observer.on_error(exc)
                    return
                serial.disposable = timer_scheduler.schedule_relative(delay, attempt)

            def attempt(_scheduler: abc.SchedulerBase | None = None, _state: Any = None) -> None:
                # A fresh holder per attempt: a source that errors synchronously inside
                # subscribe() replaces it with the retry timer before it is assigned, and a
                # SingleAssignmentDisposable assigned after being disposed disposes at once.
                holder = SingleAssignmentDisposable()
                serial.disposable = holder
                holder.disposable = source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler_)

            attempt()
            return serial

        return Observable(subscribe)

    return operator
