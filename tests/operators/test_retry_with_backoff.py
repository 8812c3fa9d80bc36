"""retry_with_backoff: marble tests in virtual time (TestScheduler; 1 tick = 1 s)."""

from __future__ import annotations

import random
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from reactive_services.errors import BrokerUnavailableError, ValidationError
from reactive_services.operators import backoff_delay, retry_with_backoff

on_next, on_completed, on_error, subscribe = (
    ReactiveTest.on_next,
    ReactiveTest.on_completed,
    ReactiveTest.on_error,
    ReactiveTest.subscribe,
)

DOWN = BrokerUnavailableError("broker down")  # retriable = True
BAD = ValidationError("bad shape")  # retriable = False


def no_jitter(**kwargs: Any) -> Any:
    kwargs.setdefault("jitter", 0.0)
    return retry_with_backoff(**kwargs)


def test_backoff_delay_formula_caps_and_jitters() -> None:
    assert [backoff_delay(n, initial_delay_s=1.0, jitter=0.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(10, initial_delay_s=1.0, max_delay_s=30.0, jitter=0.0) == 30.0
    assert backoff_delay(100_000, initial_delay_s=1.0, max_delay_s=30.0, jitter=0.0) == 30.0  # no overflow
    # equal jitter: cap/2 + uniform(0, cap/2); full jitter: uniform(0, cap]
    assert backoff_delay(3, initial_delay_s=1.0, jitter=0.5, random=lambda: 0.0) == 4.0
    assert backoff_delay(3, initial_delay_s=1.0, jitter=0.5, random=lambda: 0.5) == 3.0
    assert backoff_delay(3, initial_delay_s=1.0, jitter=1.0, random=lambda: 0.75) == 1.0


def test_cold_source_first_connection_fails_connects_on_second_attempt() -> None:
    scheduler = TestScheduler()
    connections = 0

    def connect(observer: Any, _scheduler: Any) -> Any:
        nonlocal connections
        connections += 1
        if connections == 1:
            observer.on_error(DOWN)  # fails synchronously, inside subscribe
        else:
            observer.on_next("connected")
            observer.on_completed()
        return reactivex.disposable.Disposable()

    source = reactivex.create(connect)
    result = scheduler.start(lambda: source.pipe(no_jitter(max_attempts=2, initial_delay_s=5.0, scheduler=scheduler)))
    assert connections == 2
    assert result.messages == [on_next(205, "connected"), on_completed(205)]


def test_marbles_waits_grow_exponentially_and_resubscribe() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(1, "a"), on_error(2, DOWN))
    retried: list[tuple[int, BaseException, float]] = []
    result = scheduler.start(
        lambda: xs.pipe(
            no_jitter(max_attempts=3, initial_delay_s=10.0, on_retry=lambda *a: retried.append(a), scheduler=scheduler)
        )
    )
    # every attempt emits "a" first, so the count resets: the failures are never 2 in a row...
    # ...so this source is retried forever; it is stopped by the TestScheduler's dispose at 1000
    assert [m.time for m in result.messages][:3] == [201, 213, 225]
    assert all(a[0] == 1 and a[2] == 10.0 for a in retried)
    assert xs.subscriptions[:2] == [subscribe(200, 202), subscribe(212, 214)]


def test_gives_up_after_max_attempts_in_a_row_with_growing_delays() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_error(1, DOWN))
    retried: list[tuple[int, float]] = []
    result = scheduler.start(
        lambda: xs.pipe(
            no_jitter(
                max_attempts=4,
                initial_delay_s=10.0,
                max_delay_s=100.0,
                multiplier=2.0,
                on_retry=lambda n, exc, d: retried.append((n, d)),
                scheduler=scheduler,
            )
        )
    )
    # attempt 1 fails at 201, waits 10; attempt 2 at 211..212 waits 20; attempt 3 at 232..233 waits 40
    assert xs.subscriptions == [subscribe(200, 201), subscribe(211, 212), subscribe(232, 233), subscribe(273, 274)]
    assert retried == [(1, 10.0), (2, 20.0), (3, 40.0)]
    assert result.messages == [on_error(274, DOWN)]


def test_counter_resets_after_a_successful_item() -> None:
    # fails twice (attempts 1, 2), then emits an item and fails, then fails once more: without
    # the reset that would be 4 failures in a row (> max_attempts=3); with it, 2 then 2
    scheduler = TestScheduler()
    plan = iter(["fail", "fail", "item-then-fail", "fail", "done"])

    def attempt(_: Any) -> reactivex.Observable[str]:
        step = next(plan)
        if step == "fail":
            return reactivex.throw(DOWN)
        if step == "item-then-fail":
            return reactivex.concat(reactivex.of("x"), reactivex.throw(DOWN))
        return reactivex.of("y")

    retried: list[tuple[int, float]] = []
    result = scheduler.start(
        lambda: reactivex.defer(attempt).pipe(
            no_jitter(
                max_attempts=3,
                initial_delay_s=1.0,
                on_retry=lambda n, exc, d: retried.append((n, d)),
                scheduler=scheduler,
            )
        )
    )
    assert retried == [(1, 1.0), (2, 2.0), (1, 1.0), (2, 2.0)]
    assert result.messages == [on_next(203, "x"), on_next(206, "y"), on_completed(206)]


def test_non_retriable_error_goes_straight_to_on_error() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(1, "a"), on_error(2, BAD))
    result = scheduler.start(lambda: xs.pipe(no_jitter(max_attempts=5, scheduler=scheduler)))
    assert result.messages == [on_next(201, "a"), on_error(202, BAD)]
    assert xs.subscriptions == [subscribe(200, 202)]


def test_plain_exceptions_are_not_retriable_by_default_but_a_predicate_can_say_so() -> None:
    scheduler = TestScheduler()
    boom = OSError("reset")
    xs = scheduler.create_cold_observable(on_error(1, boom))
    plain = scheduler.start(lambda: xs.pipe(no_jitter(scheduler=scheduler)), disposed=500)
    assert plain.messages == [on_error(201, boom)]

    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_error(1, boom))
    custom = scheduler.start(
        lambda: xs.pipe(
            no_jitter(
                max_attempts=2, initial_delay_s=3.0, retriable=lambda e: isinstance(e, OSError), scheduler=scheduler
            )
        )
    )
    assert custom.messages == [on_error(205, boom)]
    assert len(xs.subscriptions) == 2


def test_seeded_random_gives_reproducible_jittered_delays() -> None:
    def delays(seed: int) -> list[float]:
        scheduler = TestScheduler()
        xs = scheduler.create_cold_observable(on_error(1, DOWN))
        seen: list[float] = []
        scheduler.start(
            lambda: xs.pipe(
                retry_with_backoff(
                    max_attempts=4,
                    initial_delay_s=10.0,
                    jitter=1.0,
                    on_retry=lambda n, e, d: seen.append(d),
                    scheduler=scheduler,
                    random=random.Random(seed),
                )
            )
        )
        return seen

    first = delays(7)
    assert first == delays(7)
    assert first != delays(8)
    rng = random.Random(7)
    assert first == pytest.approx(
        [cap - cap * rng.random() for cap in (10.0, 20.0, 30.0)]
    )  # 40 capped at max_delay_s=30


def test_per_item_reprocessing_with_flat_map() -> None:
    # each item is processed by a function that fails the first time for "b"; only "b" is retried
    scheduler = TestScheduler()
    calls: dict[str, int] = {}

    def process(item: str) -> reactivex.Observable[str]:
        calls[item] = calls.get(item, 0) + 1
        if item == "b" and calls[item] == 1:
            return reactivex.throw(DOWN)
        return reactivex.of(item.upper())

    xs = scheduler.create_hot_observable(on_next(210, "a"), on_next(220, "b"), on_next(230, "c"), on_completed(300))
    result = scheduler.start(
        lambda: xs.pipe(
            ops.flat_map(
                lambda item: reactivex.defer(lambda _: process(item)).pipe(
                    no_jitter(max_attempts=3, initial_delay_s=15.0, scheduler=scheduler)
                )
            )
        )
    )
    assert result.messages == [on_next(210, "A"), on_next(230, "C"), on_next(235, "B"), on_completed(300)]
    assert calls == {"a": 1, "b": 2, "c": 1}


@pytest.mark.parametrize("which", ["retriable", "on_retry"])
def test_callback_raises_goes_to_on_error_and_stops_retrying(which: str) -> None:
    scheduler = TestScheduler()
    oops = RuntimeError("callback bug")
    xs = scheduler.create_cold_observable(on_error(1, DOWN))

    def raiser(*_: Any) -> Any:
        raise oops

    result = scheduler.start(lambda: xs.pipe(no_jitter(scheduler=scheduler, **{which: raiser})))
    assert result.messages == [on_error(201, oops)]
    assert len(xs.subscriptions) == 1


def test_dispose_during_the_wait_cancels_the_retry() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_error(1, DOWN))
    result = scheduler.start(
        lambda: xs.pipe(no_jitter(initial_delay_s=100.0, max_delay_s=100.0, scheduler=scheduler)), disposed=250
    )
    assert result.messages == []
    assert xs.subscriptions == [subscribe(200, 201)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_delay_s": -1.0},
        {"max_delay_s": float("inf")},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        retry_with_backoff(**kwargs)


def test_docstring_examples_run() -> None:
    import doctest

    import reactive_services.operators._retry_with_backoff as module

    result = doctest.testmod(module)
    assert result.attempted >= 2 and result.failed == 0
