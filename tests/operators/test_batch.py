"""batch: marble tests in virtual time (TestScheduler; 1 tick = 1 s)."""

from __future__ import annotations

from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from reactive_services.adapters import Message, track
from reactive_services.operators import batch
from reactive_services.testing import MarbleScheduler, expect_marbles, run_marbles

on_next, on_completed, on_error, subscribe = (
    ReactiveTest.on_next,
    ReactiveTest.on_completed,
    ReactiveTest.on_error,
    ReactiveTest.subscribe,
)


def run(messages: list[Any], timespan_s: float = 5.0, count: int = 3) -> list[Any]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*messages)
    return scheduler.start(lambda: xs.pipe(batch(timespan_s, count, scheduler=scheduler))).messages


def test_docstring_marbles() -> None:
    with marbles_testing(timespan=1.0) as (start, cold, hot, exp):
        source = hot("  -a-b-c----d---------e-f-|")
        expected = exp("-----x---------y--------(z,|)", {"x": ["a", "b", "c"], "y": ["d"], "z": ["e", "f"]})
        results = start(source.pipe(batch(5.0, 3)))
    assert results == expected


def test_docstring_commit_marbles() -> None:
    # each offset is committed once the batch holding it was handled, not when it arrived
    expect_marbles(
        "-a-b-c----d---------e-f-|",
        lambda s: s.pipe(batch(5.0, 3), ops.map(lambda ms: [m.value for m in ms])),
        output="-----x---------y--------(z,|)",
        output_values={"x": ["a", "b", "c"], "y": ["d"], "z": ["e", "f"]},
        commits="-----(a,b,c)---d--------(e,f)",
    )


def test_the_commits_wait_for_the_work_tracked_on_the_batch() -> None:
    scheduler = MarbleScheduler()

    def insert(rows: list[Message]) -> None:
        track(scheduler.wait(3))  # one insert per batch, 3 s

    expect_marbles(
        "-a-b-c----d---|",
        lambda s: s.pipe(batch(5.0, 3), ops.do_action(insert), ops.map(len)),
        scheduler=scheduler,
        output="-----3--------(1,|)",
        commits="--------(a,b,c)--d",  # inserts end at 8 and at 17 (completion at 14, + 3 s)
    )


def test_the_source_is_not_held_up_by_the_records_a_batch_keeps() -> None:
    # concurrency=1: a held record no longer counts as in flight, so the batch fills by count
    run = run_marbles(
        "-a-b-c-d-e-f-|",
        lambda s: s.pipe(batch(30.0, 3), ops.map(lambda ms: "".join(m.value for m in ms))),
        concurrency=1,
    )
    run.assert_output("-----x-----y-|", {"x": "abc", "y": "def"})
    assert {c.time: c.offset for c in run.committed} == {205.0: 3, 211.0: 6}  # the last move at each time


def test_a_partial_batch_lost_to_an_error_is_not_committed() -> None:
    # records 0-1 wait in a batch; the broker fails: nothing of them is committed (redelivered)
    run = run_marbles("-a-b-#", lambda s: s.pipe(batch(30.0, 10)), error=ValueError("broker down"))
    run.assert_output("-----#", error=ValueError("broker down"))
    run.assert_commits("")


def test_a_partial_batch_lost_to_a_dispose_is_not_committed() -> None:
    run = run_marbles("-a-b-c", lambda s: s.pipe(batch(30.0, 10)), disposed=210.0)
    run.assert_output("")
    run.assert_commits("")


def test_failed_work_behind_a_batch_leaves_the_held_records_uncommitted() -> None:
    # reproduction 2: records 0-5 wait in a batch, record 6's tracked work fails: the source ends
    # with the error and the committed offset stays at 0 (was 6: 0-5 were never handled)
    def work(m: Message) -> None:
        if m.value == "g":
            track(_fail(RuntimeError("insert failed")))

    run = run_marbles(
        "-(a,b,c,d,e,f,g)---",
        lambda s: s.pipe(ops.do_action(work), batch(30.0, 100)),
    )
    run.assert_output("-#", error=RuntimeError("insert failed"))
    run.assert_commits("")
    assert run.committed == []


def test_a_batch_whose_work_fails_ends_the_stream_with_its_records_uncommitted() -> None:
    def insert(rows: list[Message]) -> None:
        track(_fail(OSError("disk full")))

    run = run_marbles("-a-b-c-d-|", lambda s: s.pipe(batch(30.0, 2), ops.do_action(insert)))
    run.assert_commits("")
    assert isinstance(run.output[-1].value.exception, OSError)


async def _fail(exc: Exception) -> None:
    raise exc


def test_count_triggered() -> None:
    assert run(
        [on_next(210, 1), on_next(211, 2), on_next(212, 3), on_next(213, 4), on_next(214, 5), on_next(215, 6)],
        timespan_s=100.0,
    ) == [on_next(212, [1, 2, 3]), on_next(215, [4, 5, 6])]


def test_time_triggered_counts_from_the_first_item_of_the_batch() -> None:
    # first item at 230 (not at subscription, 200): the batch goes out at 235, not 205 or 210
    assert run([on_next(230, "a"), on_next(233, "b"), on_next(240, "c"), on_next(241, "d")]) == [
        on_next(235, ["a", "b"]),
        on_next(245, ["c", "d"]),
    ]


def test_a_count_flush_cancels_the_timer_of_that_batch() -> None:
    # [a, b, c] goes out on count at 212; d at 216 starts a new batch whose timer ends at 221,
    # the old timer (210 + 5 = 215) must not cut it short
    assert run([on_next(210, "a"), on_next(211, "b"), on_next(212, "c"), on_next(216, "d")]) == [
        on_next(212, ["a", "b", "c"]),
        on_next(221, ["d"]),
    ]


def test_idle_source_emits_nothing_never_an_empty_list() -> None:
    assert run([on_next(210, "a")], timespan_s=5.0) == [on_next(215, ["a"])]  # then 785 idle ticks
    assert run([on_completed(900)]) == [on_completed(900)]


def test_completion_flushes_the_last_partial_batch_then_completes() -> None:
    # the public bug report: a time buffer whose source completes emits its last partial buffer
    assert run([on_next(210, "a"), on_next(211, "b"), on_completed(212)]) == [
        on_next(212, ["a", "b"]),
        on_completed(212),
    ]


def test_error_drops_the_partial_batch_and_errors() -> None:
    boom = RuntimeError("source failed")
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(on_next(210, "a"), on_error(212, boom), on_next(213, "late"))
    result = scheduler.start(lambda: xs.pipe(batch(5.0, 3, scheduler=scheduler)))
    assert result.messages == [on_error(212, boom)]  # no ["a"], not at 212 and not at 215
    assert xs.subscriptions == [subscribe(200, 212)]


def test_no_user_callback_but_a_raising_downstream_observer_does_not_corrupt_state() -> None:
    # batch takes no callback; an observer raising in on_next propagates to the emitter
    # (the reactivex contract) and the next batch still starts empty
    scheduler = TestScheduler()
    seen: list[list[str]] = []

    def on_batch(items: list[str]) -> None:
        seen.append(items)
        if len(seen) == 1:
            raise ValueError("observer bug")

    subject: reactivex.subject.Subject[str] = reactivex.subject.Subject()
    subject.pipe(batch(5.0, 2, scheduler=scheduler)).subscribe(on_batch)
    subject.on_next("a")
    with pytest.raises(ValueError):
        subject.on_next("b")
    subject.on_next("c")
    subject.on_next("d")
    assert seen == [["a", "b"], ["c", "d"]]


@pytest.mark.parametrize("args", [(0.0, 3), (-1.0, 3), (float("nan"), 3), (1.0, 0)])
def test_bad_arguments_raise_value_error(args: tuple[float, int]) -> None:
    with pytest.raises(ValueError):
        batch(*args)
