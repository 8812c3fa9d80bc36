"""The kit's marble helpers: output and commits of Message pipelines in virtual time (1 tick = 1 s)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from reactive_services.adapters import Message, track
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.operators import batch, map_async
from reactive_services.testing import (
    Commit,
    MarbleScheduler,
    MarbleSource,
    expect_marbles,
    make_message,
    marble_records,
    run_marbles,
    run_marbles_async,
    wait_for,
)


def values_of(source: reactivex.Observable[Message]) -> reactivex.Observable[Any]:
    return source.pipe(ops.map(lambda m: m.value))


def slow(scheduler: MarbleScheduler, seconds: float) -> Any:
    """``map_async`` of a write taking ``seconds`` of virtual time (it holds the commit until its result is out)."""

    async def write(m: Message) -> Any:
        await scheduler.wait(seconds)
        return m.value

    return map_async(write)


def test_marble_records_are_reactivex_recordings_from_frame_200() -> None:
    assert marble_records("-a-(b,|)", {"a": 1, "b": 2}) == [
        ReactiveTest.on_next(201, 1),
        ReactiveTest.on_next(203, 2),
        ReactiveTest.on_completed(203),
    ]
    assert marble_records("--#", error=ValueError("x")) == [ReactiveTest.on_error(202, ValueError("x"))]


def test_a_synchronous_pipeline_commits_each_offset_once_on_next_returned() -> None:
    run = expect_marbles("a-b--c-|", values_of, values={"a": 1, "b": 2, "c": 3}, output="1-2--3-|", commits="a-b--c")
    assert [(m.offset, m.value, m.topic, m.partition) for m in run.delivered] == [
        (0, 1, "t", 0),
        (1, 2, "t", 0),
        (2, 3, "t", 0),
    ]
    assert run.committed == [Commit(200.0, "t", 0, 1), Commit(202.0, "t", 0, 2), Commit(205.0, "t", 0, 3)]
    assert [m.timestamp_ms for m in run.delivered] == [200_000, 202_000, 205_000]  # the arrival times


def test_a_filtered_out_record_is_handled_and_committed() -> None:
    expect_marbles(
        "-a-b-|",
        lambda s: s.pipe(ops.filter(lambda m: m.value > 1), ops.map(lambda m: m.value)),
        values={"a": 1, "b": 2},
        output="---2-|",
        commits="-a-b",
    )


def test_the_commit_waits_for_the_tracked_work_and_the_next_delivery_too() -> None:
    scheduler = MarbleScheduler()
    # concurrency=1: b (arrived at 3) is delivered when a settled at 4, its write ends at 7
    expect_marbles(
        "-a-b-|",
        lambda s: s.pipe(slow(scheduler, 3)),
        values={"a": 1, "b": 2},
        scheduler=scheduler,
        output="----1--(2,|)",
        commits="----a--b",
    )


def test_an_early_commit_is_caught() -> None:
    # The same output, but the delay is not tracked: the offset is committed when a is delivered,
    # before its work is done. The commit expectation of the holding pipeline fails on it.
    def untracked(source: reactivex.Observable[Message]) -> reactivex.Observable[Any]:
        return source.pipe(ops.flat_map(lambda m: reactivex.timer(3.0).pipe(ops.map(lambda _: m.value))))

    run = run_marbles("-a-|", untracked, {"a": 1})
    run.assert_output("----(1,|)")
    with pytest.raises(AssertionError, match=r"commits differ(.|\n)*expected: ----a(.|\n)*actual: -a"):
        run.assert_commits("----a")

    scheduler = MarbleScheduler()
    held = run_marbles("-a-|", lambda s: s.pipe(slow(scheduler, 3)), {"a": 1}, scheduler=scheduler)
    held.assert_output("----(1,|)")
    held.assert_commits("----a")


def test_with_concurrency_the_commit_never_passes_an_unfinished_message() -> None:
    # a takes 5 s, b 1 s: b is done at 4 but a, below it, only at 6 -> both committed at 6
    # (a group takes as many frames as it has characters: c comes later, so that it can be drawn)
    scheduler = MarbleScheduler()
    delays = {1: 5.0, 2: 1.0, 3: 1.0}

    async def write(m: Message) -> int:
        await scheduler.wait(delays[m.value])
        return int(m.value)

    run = run_marbles(
        "-a-b--------c-|",
        lambda s: s.pipe(map_async(write, concurrency=3)),
        {"a": 1, "b": 2, "c": 3},
        scheduler=scheduler,
        concurrency=3,
    )
    run.assert_output("------(1,2)--3|")  # map_async keeps the input order
    run.assert_commits("------(b,a)--c")  # a group is in any order
    assert [c.offset for c in run.committed] == [1, 2, 3]  # a's hold is released just before b's


def test_tracked_work_settling_out_of_order_commits_in_order() -> None:
    # track() directly: a's work resolves at 6, b's at 4; with concurrency 2 b's offset waits for a
    scheduler = MarbleScheduler()
    delays = {"x": 5.0, "y": 1.0}

    def hold(m: Message) -> None:
        track(scheduler.wait(delays[m.value]))  # type: ignore[arg-type]  # a Future is Awaitable

    run = run_marbles(
        "-a-b-|",
        lambda s: values_of(s.pipe(ops.do_action(hold))),
        {"a": "x", "b": "y"},
        scheduler=scheduler,
        concurrency=2,
    )
    run.assert_output("-x-y--|")  # the end waits for the work in flight
    run.assert_commits("------(a,b)")


def test_a_keyed_record_waits_for_the_previous_one_of_its_key() -> None:
    scheduler = MarbleScheduler()
    a = make_message(1, key="k")
    b = make_message(2, key="k")
    c = make_message(3, key="other")
    run = run_marbles(
        "-abc-|",
        lambda s: s.pipe(slow(scheduler, 2)),
        {"abc": a},  # one element of 3 characters: a single record
        scheduler=scheduler,
    )
    run.assert_commits("---abc")
    scheduler = MarbleScheduler()
    run = run_marbles(
        "-(a,b,c)-|",
        lambda s: s.pipe(ops.do_action(lambda m: track(scheduler.wait(2)))),  # type: ignore[arg-type]
        {"a": a, "b": b, "c": c},
        scheduler=scheduler,
        concurrency=3,
    )
    # b waits for a (same key) and c waits behind b (arrival order): b and c delivered at 3, settle at 5
    assert [m.value for m in run.delivered] == [1, 2, 3]
    run.assert_commits("---a-(b,c)")


def test_partitions_commit_independently() -> None:
    scheduler = MarbleScheduler()
    slow_one = {0: 5.0, 1: 1.0}

    def hold(m: Message) -> None:
        track(scheduler.wait(slow_one[m.partition]))  # type: ignore[arg-type]

    run = run_marbles(
        "-a-b---c-|",
        lambda s: s.pipe(ops.do_action(hold)),
        {"a": make_message("a", partition=0), "b": make_message("b", partition=1), "c": make_message("c", partition=1)},
        scheduler=scheduler,
        concurrency=3,
    )
    assert [(m.partition, m.offset) for m in run.delivered] == [(0, 0), (1, 0), (1, 1)]
    run.assert_commits("----b-a-c")
    assert run.committed == [Commit(204.0, "t", 1, 1), Commit(206.0, "t", 0, 1), Commit(208.0, "t", 1, 2)]


def test_failed_tracked_work_ends_the_stream_and_its_offset_is_never_committed() -> None:
    scheduler = MarbleScheduler()
    boom = RuntimeError("write failed")

    async def write(m: Message) -> int:
        await scheduler.wait(2)
        if m.value == 2:
            raise boom
        return int(m.value)

    run = run_marbles("-a-b-c-|", lambda s: s.pipe(map_async(write)), {"a": 1, "b": 2, "c": 3}, scheduler=scheduler)
    run.assert_output("---1-#", error=boom)
    run.assert_commits("---a")
    assert [m.value for m in run.delivered] == [1, 2]  # c was never delivered


def test_a_broker_failure_ends_the_stream_and_stops_commits() -> None:
    scheduler = MarbleScheduler()
    down = ConnectionError("broker down")
    run = run_marbles("-a--#", lambda s: s.pipe(slow(scheduler, 5)), {"a": 1}, scheduler=scheduler, error=down)
    run.assert_output("----#", error=down)
    run.assert_commits("")


def test_an_observer_that_raises_ends_the_stream_uncommitted() -> None:
    def explode(m: Message) -> None:
        if m.value == 2:
            raise ValueError("bad record")

    source_scheduler = TestScheduler()
    source = MarbleSource(source_scheduler, "-a-b-c-|", {"a": 1, "b": 2, "c": 3})
    seen: list[Any] = []
    errors: list[Exception] = []
    source.subscribe(explode, errors.append)  # a raising plain on_next escapes to the source
    source.subscribe(seen.append, errors.append)  # a second subscriber is refused
    source_scheduler.start()
    assert [str(e) for e in errors] == ["MarbleSource takes one subscriber at a time (use ops.share())", "bad record"]
    assert [m.value for m in source.delivered] == [1, 2]
    assert source.commits == [ReactiveTest.on_next(201, "a")]  # without a loop: committed once on_next returned


def test_time_operators_run_on_the_marble_scheduler_without_being_told() -> None:
    expect_marbles(
        "-a-b-c----d---------e-f-|",
        lambda s: s.pipe(ops.map(lambda m: m.value), batch(5.0, 3)),
        output="-----x---------y--------(z,|)",
        output_values={"x": ["a", "b", "c"], "y": ["d"], "z": ["e", "f"]},
        commits="-----(a,b,c)---d--------(e,f)",  # each committed once the batch holding it was handled
    )


def test_a_record_at_frame_zero_is_delivered() -> None:
    expect_marbles("a|", values_of, output="a|", commits="a")


def test_the_failure_message_draws_both_sides() -> None:
    run = run_marbles("-a-b|", values_of)
    with pytest.raises(AssertionError) as failure:
        run.assert_output("-a--b|")
    assert "expected: -a--b|" in str(failure.value) and "actual: -a-b|" in str(failure.value)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        run_marbles("-a|", values_of, concurrency=0)
    with pytest.raises(ValueError):
        run_marbles("-a,b|", values_of)


async def test_inside_a_running_loop_use_the_async_variant() -> None:
    with pytest.raises(RuntimeError, match="run_marbles_async"):
        run_marbles("-a|", values_of)
    scheduler = MarbleScheduler()
    run = await run_marbles_async("-a-|", lambda s: s.pipe(slow(scheduler, 2)), {"a": 7}, scheduler=scheduler)
    run.assert_output("---(7,|)")
    run.assert_commits("---a")


async def test_the_model_commits_as_the_in_memory_broker_does() -> None:
    # The same story on both: 3 messages in flight (concurrency=3), their work settles in the
    # order b, c, a. The broker's committed offset after each step, and the marble commits.
    async with InMemoryBroker(partitions=1) as broker:
        await broker.emit_batch("t", [(None, v) for v in "abc"])
        futures: dict[str, Any] = {}

        def hold(m: Message) -> None:
            futures[m.value] = asyncio.get_running_loop().create_future()
            track(futures[m.value])

        subscription = broker.source("t", group_id="g", concurrency=3).subscribe(hold)
        await wait_for(lambda: len(futures) == 3, timeout=5)
        seen = []
        for name in "bca":
            futures[name].set_result(None)
            await asyncio.sleep(0.05)
            seen.append(await broker.committed("g", "t", 0))
        subscription.dispose()
    assert seen[:2] in ([None, None], [0, 0]) and seen[2] == 3

    scheduler = MarbleScheduler()
    settle_at = {"b": 2.0, "c": 4.0, "a": 6.0}
    run = await run_marbles_async(
        "-(a,b,c)",
        lambda s: s.pipe(ops.do_action(lambda m: track(scheduler.wait(settle_at[m.value])))),  # type: ignore[arg-type]
        scheduler=scheduler,
        concurrency=3,
    )
    assert run.committed == [Commit(207.0, "t", 0, 3)]  # nothing before a settled at 1 + 6; then all three
    run.assert_commits("-------(a,b,c)")
