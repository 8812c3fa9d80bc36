"""dead_letter: marble tests in virtual time (TestScheduler; 1 tick = 1 s), plus one run on the in-memory broker."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler

from reactive_services.adapters import DeadLetterSink, Message, headers_to_dict
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import BrokerUnavailableError, ValidationError
from reactive_services.operators import DeadLetter, dead_letter

on_next, on_completed, on_error = ReactiveTest.on_next, ReactiveTest.on_completed, ReactiveTest.on_error

DOWN = BrokerUnavailableError("db down")  # retriable
BAD = ValidationError("qty: must be > 0")  # not retriable


def msg(offset: int, value: Any) -> Message:
    return Message("orders", 2, offset, b"k%d" % offset, value, (("trace", b"t1"),), 0, b"raw-%d" % offset)


class Flaky:
    """process(): for each value, the list of outcomes of its successive attempts."""

    def __init__(self, plans: dict[str, list[Any]]) -> None:
        self.plans = {k: iter(v) for k, v in plans.items()}
        self.calls: list[str] = []

    def __call__(self, message: Message) -> Any:
        self.calls.append(message.value)
        outcome = next(self.plans[message.value])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run(messages: list[Any], process: Any, **kwargs: Any) -> tuple[list[Any], list[Any]]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    sink = scheduler.create_observer()
    kwargs.setdefault("jitter", 0.0)
    kwargs.setdefault("initial_delay_s", 10.0)
    result = scheduler.start(lambda: xs.pipe(dead_letter(sink, process, scheduler=scheduler, **kwargs)))
    return result.messages, sink.messages


def test_success_first_time() -> None:
    process = Flaky({"a": ["A"], "b": ["B"]})
    out, dead = run([on_next(210, msg(0, "a")), on_next(220, msg(1, "b")), on_completed(230)], process)
    assert out == [on_next(210, "A"), on_next(220, "B"), on_completed(230)]
    assert dead == []


def test_success_after_retries_output_time_is_the_sum_of_the_delays() -> None:
    process = Flaky({"a": [DOWN, DOWN, "A"]})
    out, dead = run([on_next(210, msg(0, "a")), on_completed(300)], process, max_attempts=3)
    assert out == [on_next(240, "A"), on_completed(300)]  # 210 + 10 + 20
    assert process.calls == ["a", "a", "a"]
    assert dead == []


def test_exhausted_goes_to_the_sink_with_the_attempt_count_and_the_stream_goes_on() -> None:
    process = Flaky({"a": [DOWN, DOWN, DOWN], "b": ["B"]})
    out, dead = run([on_next(210, msg(0, "a")), on_next(215, msg(1, "b")), on_completed(300)], process, max_attempts=3)
    assert [(r.time, r.value.value) for r in dead] == [(240, DeadLetter(msg(0, "a"), DOWN, attempts=3))]
    assert out == [on_next(240, "B"), on_completed(300)]  # b waited for a to be finished
    letter = dead[0].value.value
    assert letter.topic == "orders.DLT"
    headers = headers_to_dict(letter.headers)
    assert headers["trace"] == "t1"  # original headers kept
    assert headers["dlt.original.topic"] == "orders"
    assert headers["dlt.original.partition"] == "2"
    assert headers["dlt.original.offset"] == "0"
    assert headers["dlt.attempts"] == "3"
    assert headers["dlt.exception.type"] == "BrokerUnavailableError"
    assert headers["dlt.reason"] == "db down"


def test_non_retriable_goes_to_the_sink_after_one_attempt() -> None:
    process = Flaky({"a": [BAD], "b": [ValueError("plain errors are not retriable")], "c": ["C"]})
    out, dead = run(
        [on_next(210, msg(0, "a")), on_next(220, msg(1, "b")), on_next(230, msg(2, "c")), on_completed(300)],
        process,
        max_attempts=5,
    )
    assert [(r.time, r.value.value.message.value, r.value.value.attempts) for r in dead] == [
        (210, "a", 1),
        (220, "b", 1),
    ]
    assert out == [on_next(230, "C"), on_completed(300)]
    assert process.calls == ["a", "b", "c"]


def test_order_of_outputs_is_kept_and_observable_results_are_flattened() -> None:
    # a is retried (10 s); b, c arrive meanwhile; each process returns an Observable of 2 items
    attempts = itertools.count()

    def process(message: Message) -> reactivex.Observable[str]:
        if message.value == "a" and next(attempts) == 0:
            return reactivex.throw(DOWN)
        return reactivex.of(message.value + "1", message.value + "2")

    out, dead = run(
        [on_next(210, msg(0, "a")), on_next(211, msg(1, "b")), on_next(212, msg(2, "c")), on_completed(213)],
        process,
    )
    assert out == [
        on_next(220, "a1"),
        on_next(220, "a2"),
        on_next(220, "b1"),
        on_next(220, "b2"),
        on_next(220, "c1"),
        on_next(220, "c2"),
        on_completed(220),
    ]
    assert dead == []


def test_on_retry_sees_the_attempts() -> None:
    seen: list[tuple[int, str, float]] = []
    process = Flaky({"a": [DOWN, DOWN, DOWN]})
    run(
        [on_next(210, msg(0, "a"))],
        process,
        max_attempts=3,
        on_retry=lambda n, exc, delay: seen.append((n, str(exc), delay)),
    )
    assert seen == [(1, "db down", 10.0), (2, "db down", 20.0)]


def raiser(*_: Any) -> Any:
    raise RuntimeError("callback bug")


@pytest.mark.parametrize("which", ["retriable", "on_retry"])
def test_policy_callback_raises_goes_to_on_error_not_to_the_sink(which: str) -> None:
    process = Flaky({"a": [DOWN, "A"], "b": ["B"]})
    out, dead = run([on_next(210, msg(0, "a")), on_next(220, msg(1, "b"))], process, **{which: raiser})
    assert len(out) == 1 and out[0].time == 210 and out[0].value.kind == "E"
    assert str(out[0].value.exception) == "callback bug"
    assert dead == []


def test_sink_raises_goes_to_on_error() -> None:
    class BrokenSink:
        def on_next(self, value: Any) -> None:
            raise RuntimeError("sink bug")

        def on_error(self, error: Exception) -> None: ...

        def on_completed(self) -> None: ...

    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, msg(0, "a")), on_next(220, msg(1, "b")))
    process = Flaky({"a": [BAD], "b": ["B"]})
    result = scheduler.start(lambda: xs.pipe(dead_letter(BrokenSink(), process, scheduler=scheduler)))  # type: ignore[arg-type]
    assert len(result.messages) == 1 and result.messages[0].time == 210
    assert str(result.messages[0].value.exception) == "sink bug"


async def test_on_the_memory_broker_dead_letters_are_published_and_offsets_committed_after() -> None:
    # an async process: "bad" is never accepted, "flaky" fails once; retries wait 10 ms
    async with InMemoryBroker(partitions=1) as broker:
        for value in ("ok", "bad", "flaky", "last"):
            await broker.emit("orders", {"v": value}, key=value)
        tries: dict[str, int] = {}
        committed_at_retry: list[int | None] = []

        async def process(message: Message) -> str:
            value = message.value["v"]
            tries[value] = tries.get(value, 0) + 1
            await asyncio.sleep(0)
            if value == "flaky" and tries[value] == 2:
                committed_at_retry.append(await broker.committed("dl-test", "orders", 0))
            if value == "bad" or (value == "flaky" and tries[value] == 1):
                raise DOWN
            return value.upper()

        done = asyncio.Event()
        results: list[str] = []
        dlt = DeadLetterSink(broker)

        def on_result(value: str) -> None:
            results.append(value)
            if value == "LAST":
                done.set()

        subscription = (
            broker.source("orders", group_id="dl-test")
            .pipe(dead_letter(dlt, process, max_attempts=2, initial_delay_s=0.01, jitter=0.0))
            .subscribe(on_result)
        )
        await asyncio.wait_for(done.wait(), 5)
        for _ in range(20):  # the commit of "last" follows its emission by a loop turn or two
            if await broker.committed("dl-test", "orders", 0) == 4:
                break
            await asyncio.sleep(0.01)
        subscription.dispose()
        await dlt.flush()

        assert results == ["OK", "FLAKY", "LAST"]
        # while "flaky" (offset 2) was being retried, its offset was not committed yet
        assert committed_at_retry == [2]
        assert tries == {"ok": 1, "bad": 2, "flaky": 2, "last": 1}
        [letter] = broker.records("orders.DLT")
        assert letter.key == b"bad"
        headers = headers_to_dict(letter.headers)
        assert headers["dlt.attempts"] == "2"
        assert headers["dlt.original.offset"] == "1"
        assert headers["dlt.exception.type"] == "BrokerUnavailableError"
        assert await broker.committed("dl-test", "orders", 0) == 4
