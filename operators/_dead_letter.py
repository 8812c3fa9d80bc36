"""Process each message with retries; send what still fails to a dead-letter Observer and go on."""

from __future__ import annotations

import asyncio
import inspect
import random as _random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from reactive_services.adapters import DeadLetter, Message

from ._commit_hold import CommitHold
from ._retry_with_backoff import _default_retriable, retry_with_backoff

__all__ = ["dead_letter"]

R = TypeVar("R")


class _CallbackFailed(Exception):
    """A user callback of the retry policy raised: an error of the pipeline, not of the record."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def dead_letter(
    sink: abc.ObserverBase[DeadLetter],
    process: Callable[[Message], Observable[R] | Awaitable[R] | R],
    *,
    max_attempts: int = 3,
    initial_delay_s: float = 0.1,
    max_delay_s: float = 30.0,
    multiplier: float = 2.0,
    jitter: float = 0.5,
    retriable: Callable[[BaseException], bool] | None = None,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
    scheduler: abc.SchedulerBase | None = None,
    random: _random.Random | None = None,
) -> Callable[[Observable[Message]], Observable[R]]:
    """Run ``process`` on each message, retrying with backoff; dead-letter the message when it still fails.

    Marble diagram (``max_attempts=3``, delays 2 s then 4 s, no jitter; ``b`` fails twice then
    succeeds, ``c`` always fails, ``d`` fails with a non-retriable error)::

        source: -a--b------------c--d-----|
        result: -A----------B-----------------D'|   (B 6 s after b: 2 s + 4 s of waits)
        sink:   ------------------------C--D---      C = DeadLetter(c, error, attempts=3)
                                                     D = DeadLetter(d, error, attempts=1)

    (Times are schematic: each message waits until the one before it is finished.)

    Messages are handled one at a time, in order (``concat_map``): the outputs of message
    ``n`` all come before those of message ``n + 1``, and a message being retried holds back
    the ones after it. For each message ``process(message)`` is called; it may return an
    Observable (all its items are emitted), an awaitable (run on the asyncio loop; its
    result is emitted) or a plain value (emitted as is, ``None`` included). When it raises,
    returns an Observable that errors, or an awaitable that raises, the attempt failed:
    it is retried as :func:`retry_with_backoff` does (``process`` is called again each
    time), while the error is retriable and fewer than ``max_attempts`` attempts were made.
    Then ``DeadLetter(message, error, attempts=n)`` goes to ``sink`` and the stream goes on
    with the next message. With :class:`reactive_services.adapters.DeadLetterSink` the record is published to
    ``<topic>.DLT`` with its original key and bytes, and headers naming the original topic,
    partition, offset, the attempts, the exception type and message
    (:func:`reactive_services.adapters.dead_letter_headers`).

    With a broker source, the message's offset is committed only after its last output
    was emitted, or its dead letter published (see :func:`reactive_services.adapters.track`).

    Example::

        from reactive_services.adapters import DeadLetterSink
        dlt = DeadLetterSink(broker)
        broker.source("orders").pipe(
            dead_letter(dlt, lambda m: save_order(m.value), max_attempts=5),  # save_order: async
        ).subscribe(BrokerSink(broker, "orders.saved"))

    Args:
        sink: receives one :class:`DeadLetter` per message given up on.
        process: ``Message -> Observable[R] | Awaitable[R] | R``; an exception it raises is a
            failed attempt (retried or dead-lettered), never a pipeline error.
        max_attempts: attempts per message, the first included; >= 1.
        initial_delay_s: the wait after the first failed attempt, in seconds (the backoff, as in
            :func:`retry_with_backoff`).
        max_delay_s: the cap on the wait, in seconds.
        multiplier: the growth factor of the wait per failed attempt.
        jitter: the fraction of each wait that is randomised, in ``[0, 1]``.
        scheduler: where the waits are measured (a ``TestScheduler`` in tests).
        random: a ``random.Random`` for the jitter draws.
        retriable: ``error -> bool``; default: the error's ``retriable`` attribute, else
            ``False`` (so a plain ``ValueError`` is dead-lettered after one attempt).
        on_retry: ``(attempt, error, delay_s)`` before each wait, as in :func:`retry_with_backoff`.

    Returns:
        An operator from ``Observable[Message]`` to ``Observable[R]``.

    Raises:
        ValueError: at construction, for an out-of-range backoff argument.

    Errors: an exception raised by ``retriable``, ``on_retry`` or ``sink.on_next`` is a
    pipeline error: it goes to ``on_error`` (and the message is not committed). An error
    of the source is passed on.
    """
    is_retriable = retriable if retriable is not None else _default_retriable

    def guarded_retriable(error: BaseException) -> bool:
        if isinstance(error, _CallbackFailed):
            return False
        try:
            return is_retriable(error)
        except Exception as exc:
            raise _CallbackFailed(exc) from exc

    def guarded_on_retry(attempt: int, error: BaseException, delay_s: float) -> None:
        if on_retry is None:
            return
        try:
            on_retry(attempt, error, delay_s)
        except Exception as exc:
            raise _CallbackFailed(exc) from exc

    retry = retry_with_backoff(
        max_attempts=max_attempts,
        initial_delay_s=initial_delay_s,
        max_delay_s=max_delay_s,
        multiplier=multiplier,
        jitter=jitter,
        retriable=guarded_retriable,
        on_retry=guarded_on_retry,
        scheduler=scheduler,
        random=random,
    )

    def handle(message: Message) -> Observable[R]:
        hold = CommitHold(message)
        attempts = 0

        def attempt(_scheduler: abc.SchedulerBase | None) -> Observable[R]:
            nonlocal attempts
            attempts += 1
            result = process(message)
            if isinstance(result, Observable):
                return result
            if inspect.isawaitable(result):
                return reactivex.from_future(asyncio.ensure_future(result))
            return reactivex.just(result)

        def give_up(error: Exception, _source: Observable[R]) -> Observable[R]:
            if isinstance(error, _CallbackFailed):
                return reactivex.throw(error.error)
            hold.emit(sink, DeadLetter(message, error, attempts=attempts))
            return reactivex.empty()

        def in_context(source: Observable[R]) -> Observable[R]:
            def subscribe(
                observer: abc.ObserverBase[R], scheduler_: abc.SchedulerBase | None = None
            ) -> abc.DisposableBase:
                return source.subscribe(
                    lambda value: hold.emit(observer, value),
                    observer.on_error,
                    observer.on_completed,
                    scheduler=scheduler_,
                )

            return Observable(subscribe)

        attempts_source: Observable[R] = reactivex.defer(attempt)
        handled: Observable[R] = attempts_source.pipe(retry, ops.catch(give_up), in_context)
        on_completed: Callable[[], None] = hold.release
        on_error: Callable[[Exception], None] = hold.release
        return handled.pipe(
            ops.do_action(on_completed=on_completed, on_error=on_error),
            ops.finally_action(hold.cancel),
        )

    return ops.concat_map(handle)
