"""map_async and to_loop: on a real asyncio loop (pytest-asyncio); completion order driven by Events, not sleeps."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import reactivex
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest

from reactive_services.adapters import Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.operators import map_async, to_loop
from reactive_services.testing import MarbleScheduler, run_marbles


class Recorder:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.error: BaseException | None = None
        self.completed = False
        self.done = asyncio.Event()

    def on_next(self, value: Any) -> None:
        self.items.append(value)

    def on_error(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

    def on_completed(self) -> None:
        self.completed = True
        self.done.set()


async def test_results_in_input_order_with_concurrency_and_limit_respected() -> None:
    gates = {name: asyncio.Event() for name in "abcd"}
    running: set[str] = set()
    peak = 0

    async def fn(name: str) -> str:
        nonlocal peak
        running.add(name)
        peak = max(peak, len(running))
        await gates[name].wait()
        running.discard(name)
        return name.upper()

    rec = Recorder()
    reactivex.of("a", "b", "c", "d").pipe(map_async(fn, concurrency=2)).subscribe(rec)
    await asyncio.sleep(0)
    assert running == {"a", "b"}  # c, d wait for a free slot
    gates["b"].set()
    await asyncio.sleep(0.01)
    assert rec.items == []  # b is done but a is not: nothing out of order
    assert running == {"a"}  # ...and b's result keeps its slot until it is emitted
    gates["a"].set()
    await asyncio.sleep(0.01)
    assert rec.items == ["A", "B"]
    assert running == {"c", "d"}
    for name in "cd":
        gates[name].set()
    await asyncio.wait_for(rec.done.wait(), 1)
    assert rec.items == ["A", "B", "C", "D"] and rec.completed
    assert peak == 2


async def test_never_emits_a_coroutine_and_completion_waits_for_the_tasks() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    rec = Recorder()
    reactivex.of(1, 2, 3).pipe(map_async(double)).subscribe(rec)
    assert not rec.completed  # the source completed synchronously, the tasks have not run
    await asyncio.wait_for(rec.done.wait(), 1)
    assert rec.items == [2, 4, 6] and rec.completed


@pytest.mark.parametrize("where", ["fn raises", "awaitable raises", "not awaitable"])
async def test_callback_raises_goes_to_on_error_and_cancels_the_rest(where: str) -> None:
    boom = ValueError("bad item")
    started: list[int] = []
    cancelled: list[int] = []

    def fn(x: int) -> Any:
        if x == 2 and where == "fn raises":
            raise boom
        if x == 2 and where == "not awaitable":
            return 42

        async def work() -> int:
            started.append(x)
            try:
                if x == 2:
                    raise boom
                if x == 3:
                    await asyncio.Event().wait()  # never finishes by itself
                return x
            except asyncio.CancelledError:
                cancelled.append(x)
                raise

        return work()

    rec = Recorder()
    reactivex.of(1, 2, 3).pipe(map_async(fn, concurrency=3)).subscribe(rec)
    await asyncio.wait_for(rec.done.wait(), 1)
    await asyncio.sleep(0)
    if where == "not awaitable":
        assert isinstance(rec.error, TypeError)
    else:
        assert rec.error is boom
    assert rec.items == [1] or rec.items == []
    assert not rec.completed
    if where == "awaitable raises":
        assert cancelled == [3]


async def test_dispose_cancels_running_tasks() -> None:
    cancelled = asyncio.Event()

    async def forever(_: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rec = Recorder()
    subscription = reactivex.of(1).pipe(map_async(forever)).subscribe(rec)
    await asyncio.sleep(0)
    subscription.dispose()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert rec.items == [] and rec.error is None


def test_subscribing_without_a_running_loop_errors() -> None:
    async def fn(x: int) -> int:
        return x

    errors: list[BaseException] = []
    reactivex.of(1).pipe(map_async(fn)).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def test_bad_concurrency() -> None:
    async def fn(x: int) -> int:
        return x

    with pytest.raises(ValueError):
        map_async(fn, concurrency=0)


async def test_items_from_a_worker_thread_are_handled_on_the_loop_in_order() -> None:
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    async def fn(x: int) -> int:
        threads.add(threading.get_ident())
        return x

    subject: Subject[int] = Subject()
    rec = Recorder()
    subject.pipe(map_async(fn, concurrency=4)).subscribe(rec)
    worker = threading.Thread(target=lambda: ([subject.on_next(i) for i in range(200)], subject.on_completed()))
    worker.start()
    await asyncio.wait_for(rec.done.wait(), 2)
    worker.join()
    assert rec.items == list(range(200)) and rec.completed
    assert threads == {loop_thread}


async def test_broker_offset_committed_only_after_the_result_was_emitted() -> None:
    async with InMemoryBroker(partitions=1) as broker:
        await broker.emit("readings", {"n": 1})
        gate = asyncio.Event()
        started = asyncio.Event()

        async def slow(message: Any) -> int:
            started.set()
            await gate.wait()
            return int(message.value["n"])

        rec = Recorder()
        subscription = broker.source("readings", group_id="map-async-test").pipe(map_async(slow)).subscribe(rec)
        await asyncio.wait_for(started.wait(), 2)
        await asyncio.sleep(0.05)  # give a wrongly-early commit time to happen
        assert await broker.committed("map-async-test", "readings", 0) is None
        gate.set()
        for _ in range(100):
            if await broker.committed("map-async-test", "readings", 0) == 1:
                break
            await asyncio.sleep(0.01)
        subscription.dispose()
        assert rec.items == [1]
        assert await broker.committed("map-async-test", "readings", 0) == 1


def test_docstring_marbles_in_virtual_time_with_commits() -> None:
    # concurrency=2; fn(a) takes 4 s, the others 1 s (the source lets 3 messages overlap)
    scheduler = MarbleScheduler()
    took = {"a": 4.0, "b": 1.0, "c": 1.0}

    async def fn(m: Message) -> str:
        await scheduler.wait(took[m.value])
        return str(m.value).upper()

    run = run_marbles(
        "-a-b-c-----|", lambda s: s.pipe(map_async(fn, concurrency=2)), scheduler=scheduler, concurrency=3
    )
    on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed
    # B was ready at 4 but waits for A (keeping its slot); c, arrived at 5, starts when they are out
    assert run.output == [on_next(205, "A"), on_next(205, "B"), on_next(206, "C"), on_completed(211)]
    assert run.commits == [on_next(205, "a"), on_next(205, "b"), on_next(206, "c")]  # each with its result


def test_each_offset_is_committed_when_its_result_was_emitted_not_before() -> None:
    # the source's default concurrency=1: b is delivered only once a's result is out
    scheduler = MarbleScheduler()

    async def slow(m: Message) -> int:
        await scheduler.wait(3)
        return int(m.value)

    run = run_marbles("-a-b-|", lambda s: s.pipe(map_async(slow)), {"a": 1, "b": 2}, scheduler=scheduler)
    run.assert_output("----1--(2,|)")
    run.assert_commits("----a--b")


async def test_to_loop_items_from_a_thread_arrive_while_the_loop_is_idle() -> None:
    # The loop does nothing but await an Event: only call_soon_threadsafe wakes it. With a
    # non-thread-safe hand-over (reactivex's plain AsyncIOScheduler) the items would sit in
    # the loop's queue until the 1 s timeout woke it.
    loop_thread = threading.get_ident()
    subject: Subject[tuple[int, float]] = Subject()
    arrived = asyncio.Event()
    latencies: list[float] = []
    order: list[int] = []
    on_loop: list[bool] = []

    def on_next(item: tuple[int, float]) -> None:
        order.append(item[0])
        latencies.append(time.monotonic() - item[1])
        on_loop.append(threading.get_ident() == loop_thread)
        arrived.set()

    subject.pipe(to_loop()).subscribe(on_next)
    for i in range(5):
        arrived.clear()
        emitter = threading.Timer(0.02, lambda i=i: subject.on_next((i, time.monotonic())))
        emitter.start()
        t0 = time.monotonic()
        await asyncio.wait_for(arrived.wait(), 1.0)
        assert time.monotonic() - t0 < 0.5
        emitter.join()
    assert order == [0, 1, 2, 3, 4]
    assert all(on_loop)
    assert max(latencies) < 0.2, latencies

    # a burst from one thread keeps its order
    burst: list[int] = []
    done = asyncio.Event()
    other: Subject[int] = Subject()
    other.pipe(to_loop()).subscribe(burst.append, on_completed=done.set)
    worker = threading.Thread(target=lambda: ([other.on_next(i) for i in range(1000)], other.on_completed()))
    worker.start()
    await asyncio.wait_for(done.wait(), 1.0)
    worker.join()
    assert burst == list(range(1000))


def test_to_loop_without_a_running_loop_errors() -> None:
    errors: list[BaseException] = []
    reactivex.of(1).pipe(to_loop()).subscribe(on_error=errors.append)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
