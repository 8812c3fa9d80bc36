"""tumbling_event_time_window and sliding_event_time_window: marble tests in virtual time (TestScheduler).

Expected windows are written out by hand; the property tests at the end compare with an exact
(``fractions.Fraction``) model of the rules, not with the code under test.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from reactive_services.operators import Window, sliding_event_time_window, tumbling_event_time_window
from reactive_services.testing import MarbleScheduler, make_message, run_marbles

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed
on_error = ReactiveTest.on_error
subscribe = ReactiveTest.subscribe


def ev(key: str, t: float) -> tuple[str, float]:
    return (key, t)


def by_time(item: tuple[str, float]) -> float:
    return item[1]


def by_key(item: tuple[str, float]) -> str:
    return item[0]


def run(messages: list[Any], **kwargs: Any) -> tuple[list[Any], Any]:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(*messages)
    kwargs.setdefault("timestamp", by_time)
    size = kwargs.pop("size", 10.0)
    result = scheduler.start(lambda: source.pipe(tumbling_event_time_window(size, **kwargs)))
    return result.messages, source


def test_on_time_windows_marbles() -> None:
    # event time = the value; a window closes when a later event reaches its end
    lookup = {"a": 1.0, "b": 4.0, "c": 12.0, "d": 25.0}
    w1 = Window(key=None, start=0.0, end=10.0, items=(1.0, 4.0))
    w2 = Window(key=None, start=10.0, end=20.0, items=(12.0,))
    w3 = Window(key=None, start=20.0, end=30.0, items=(25.0,))
    with marbles_testing(timespan=1.0) as (start, cold, hot, exp):
        source = hot("  --a--b--c----d--|", lookup)
        expected = exp("--------x----y--(z,|)", {"x": w1, "y": w2, "z": w3})
        results = start(source.pipe(tumbling_event_time_window(10.0, timestamp=lambda t: t)))
    assert results == expected


def test_windows_of_broker_messages_by_their_record_timestamps() -> None:
    # the kit's marble source stamps each record with its arrival (virtual) time: event time = that
    def windows(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        return source.pipe(
            tumbling_event_time_window(5.0, timestamp=lambda m: m.timestamp),
            ops.map(lambda w: (w.start, [m.value for m in w.items])),
        )

    run = run_marbles("-a-b------c-|", windows)
    assert run.output == [
        on_next(210, (200.0, ["a", "b"])),  # c (210 s) closes [200, 205)
        on_next(212, (210.0, ["c"])),  # the completion flushes [210, 215)
        on_completed(212),
    ]
    # each record is committed once the window holding it was emitted and handled
    assert {c.time: c.offset for c in run.committed} == {210.0: 2, 212.0: 3}


def test_a_record_in_two_sliding_windows_is_committed_once_both_were_handled() -> None:
    # size 10, slide 5: b (at 207 s) is in [200, 210) and [205, 215); c (at 212 s) closes only
    # the first (c is in [205, 215) too): b stays uncommitted until the completion flushes it
    def windows(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        return source.pipe(
            sliding_event_time_window(10.0, 5.0, timestamp=lambda m: m.timestamp),
            ops.map(lambda w: (w.start, [m.value for m in w.items])),
        )

    run = run_marbles("-a-----b----c---|", windows)
    assert [n.value.value for n in run.output if n.value.kind == "N"] == [
        (195.0, ["a"]),
        (200.0, ["a", "b"]),
        (205.0, ["b", "c"]),
        (210.0, ["c"]),
    ]
    assert {c.time: c.offset for c in run.committed} == {212.0: 1, 216.0: 3}


def test_a_too_late_record_is_committed_with_the_window_that_carries_it() -> None:
    values = {name: make_message(name, timestamp_ms=ms) for name, ms in [("a", 1000), ("b", 12000), ("c", 2000)]}

    def windows(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        return source.pipe(
            tumbling_event_time_window(10.0, timestamp=lambda m: m.timestamp),
            ops.map(lambda w: (w.start, [m.value for m in w.items], [m.value for m in w.late])),
        )

    run = run_marbles("-a-b-c---|", windows, values)
    assert [n.value.value for n in run.output if n.value.kind == "N"] == [(0.0, ["a"], []), (10.0, ["b"], ["c"])]
    # a at 203 (b closed its window); b and the too-late c with the final window at completion
    assert {c.time: c.offset for c in run.committed} == {203.0: 1, 209.0: 3}


def test_open_windows_lost_to_an_error_or_a_dispose_are_not_committed() -> None:
    def windows(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        return source.pipe(tumbling_event_time_window(60.0, timestamp=lambda m: m.timestamp))

    failed = run_marbles("-a-b-#", windows, error=ValueError("broker down"))
    assert failed.committed == [] and failed.output[-1].value.kind == "E"
    disposed = run_marbles("-a-b---", windows, disposed=206.0)
    assert disposed.committed == [] and disposed.output == []


def test_window_emitted_only_when_watermark_reaches_end() -> None:
    # lateness 5 s: the event at 12 s gives watermark 7 < 10, so [0, 10) stays open; the
    # event at 8 s is then still on time; 15 s gives watermark 10 >= 10: the window closes.
    messages, _ = run(
        [
            on_next(210, ev("k", 1.0)),
            on_next(220, ev("k", 12.0)),
            on_next(230, ev("k", 8.0)),
            on_next(240, ev("k", 15.0)),
            on_completed(300),
        ],
        allowed_lateness_s=5.0,
    )
    assert messages == [
        on_next(240, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0), ev("k", 8.0)))),
        on_next(300, Window(key=None, start=10.0, end=20.0, items=(ev("k", 12.0), ev("k", 15.0)))),
        on_completed(300),
    ]


def test_event_time_not_wall_clock() -> None:
    # far apart in virtual (wall) time, same event-time window: nothing is emitted until completion
    messages, _ = run([on_next(210, ev("k", 1.0)), on_next(900, ev("k", 9.0)), on_completed(950)])
    assert messages == [
        on_next(950, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0), ev("k", 9.0)))),
        on_completed(950),
    ]


def test_completion_flushes_last_partial_window() -> None:
    messages, source = run([on_next(210, ev("k", 3.0)), on_completed(250)])
    assert messages == [
        on_next(250, Window(key=None, start=0.0, end=10.0, items=(ev("k", 3.0),))),
        on_completed(250),
    ]
    assert source.subscriptions == [subscribe(200, 250)]


def test_no_empty_windows() -> None:
    messages, _ = run([on_next(210, ev("k", 1.0)), on_next(220, ev("k", 35.0)), on_completed(230)])
    assert [(m.value.value.start, m.value.value.end) for m in messages[:-1]] == [(0.0, 10.0), (30.0, 40.0)]


def test_empty_source_completes_without_windows() -> None:
    messages, _ = run([on_completed(230)])
    assert messages == [on_completed(230)]


def test_late_item_attached_to_next_window_of_its_key() -> None:
    messages, _ = run(
        [
            on_next(210, ev("k", 1.0)),
            on_next(220, ev("k", 12.0)),  # closes [0, 10)
            on_next(230, ev("k", 2.0)),  # late: [0, 10) already closed
            on_next(240, ev("k", 13.0)),
            on_completed(250),
        ]
    )
    assert messages == [
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0),))),
        on_next(
            250,
            Window(
                key=None,
                start=10.0,
                end=20.0,
                items=(ev("k", 12.0), ev("k", 13.0)),
                late=(ev("k", 2.0),),
            ),
        ),
        on_completed(250),
    ]


def test_late_item_into_a_closed_empty_window_is_late_too() -> None:
    # [10, 20) never had an item but it closed when 25 arrived: 15 is late
    messages, _ = run(
        [on_next(210, ev("k", 1.0)), on_next(220, ev("k", 25.0)), on_next(230, ev("k", 15.0)), on_completed(240)]
    )
    windows = [m.value.value for m in messages[:-1]]
    assert windows[-1] == Window(key=None, start=20.0, end=30.0, items=(ev("k", 25.0),), late=(ev("k", 15.0),))


def test_late_item_after_every_window_closed_rides_on_the_final_flush() -> None:
    messages, _ = run(
        [
            on_next(210, ev("k", 1.0)),
            on_next(220, ev("k", 12.0)),
            on_next(230, ev("k", 20.0)),  # closes [10, 20)
            on_next(240, ev("k", 5.0)),  # late
            on_completed(250),
        ]
    )
    assert messages == [
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0),))),
        on_next(230, Window(key=None, start=10.0, end=20.0, items=(ev("k", 12.0),))),
        on_next(250, Window(key=None, start=20.0, end=30.0, items=(ev("k", 20.0),), late=(ev("k", 5.0),))),
        on_completed(250),
    ]


def test_late_items_are_counted_once_and_nothing_is_dropped() -> None:
    times = [1.0, 10.0, 3.0, 25.0, 30.0, 4.0, 31.0, 29.0, 45.0, 0.5]
    messages, _ = run([on_next(210 + i, ev("a", t)) for i, t in enumerate(times)] + [on_completed(300)])
    windows = [m.value.value for m in messages if m.value.kind == "N"]
    emitted = [i for w in windows for i in (*w.items, *w.late)]
    assert sorted(emitted) == sorted(ev("a", t) for t in times)
    assert sum(len(w.late) for w in windows) == 4  # 3.0, 4.0, 29.0, 0.5
    for w in windows:  # on-time items really are inside their window, late ones before it
        assert all(w.start <= t < w.end for _, t in w.items)
        assert all(t < w.start for _, t in w.late)


def test_allowed_lateness_keeps_window_open_then_late_goes_to_next() -> None:
    messages, _ = run(
        [
            on_next(210, ev("k", 1.0)),
            on_next(220, ev("k", 12.0)),  # watermark 12 - 2 = 10: [0, 10) closes; [10, 20) open
            on_next(230, ev("k", 7.0)),  # late
            on_completed(240),
        ],
        allowed_lateness_s=2.0,
    )
    assert messages == [
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0),))),
        on_next(240, Window(key=None, start=10.0, end=20.0, items=(ev("k", 12.0),), late=(ev("k", 7.0),))),
        on_completed(240),
    ]


def test_final_flush_orders_by_start_then_first_seen_key() -> None:
    messages, _ = run(
        [
            on_next(210, ev("a", 1.0)),
            on_next(220, ev("a", 10.0)),  # a[0, 10) closes
            on_next(230, ev("b", 5.0)),
            on_completed(260),
        ],
        key=by_key,
    )
    assert [(m.value.value.key, m.value.value.start) for m in messages[:-1]] == [("a", 0.0), ("b", 0.0), ("a", 10.0)]
    assert [m.time for m in messages] == [220, 260, 260, 260]


def test_per_key_independence() -> None:
    messages, _ = run(
        [
            on_next(210, ev("a", 1.0)),
            on_next(220, ev("b", 100.0)),  # does not close a's window
            on_next(230, ev("a", 5.0)),  # still on time for "a"
            on_next(240, ev("b", 2.0)),  # late for "b" only
            on_next(250, ev("a", 11.0)),  # closes a[0, 10)
            on_completed(300),
        ],
        key=by_key,
    )
    assert messages == [
        on_next(250, Window(key="a", start=0.0, end=10.0, items=(ev("a", 1.0), ev("a", 5.0)))),
        on_next(300, Window(key="a", start=10.0, end=20.0, items=(ev("a", 11.0),))),
        on_next(300, Window(key="b", start=100.0, end=110.0, items=(ev("b", 100.0),), late=(ev("b", 2.0),))),
        on_completed(300),
    ]


def test_timestamp_callback_raises_goes_to_on_error_and_disposes_source() -> None:
    boom = RuntimeError("bad timestamp")

    def timestamp(item: tuple[str, float]) -> float:
        if item[1] < 0:
            raise boom
        return item[1]

    messages, source = run(
        [on_next(210, ev("k", 1.0)), on_next(220, ev("k", -1.0)), on_next(230, ev("k", 50.0)), on_completed(240)],
        timestamp=timestamp,
    )
    assert messages == [on_error(220, boom)]
    assert source.subscriptions == [subscribe(200, 220)]


def test_key_callback_raises_goes_to_on_error() -> None:
    boom = KeyError("no key")

    def key(item: tuple[str, float]) -> str:
        raise boom

    messages, _ = run([on_next(210, ev("k", 1.0)), on_completed(240)], key=key)
    assert messages == [on_error(210, boom)]


def test_non_finite_timestamp_goes_to_on_error() -> None:
    messages, _ = run([on_next(210, ev("k", math.nan)), on_completed(240)])
    assert len(messages) == 1 and messages[0].time == 210
    assert isinstance(messages[0].value.exception, ValueError)


def test_callback_raising_in_synchronous_source_does_not_escape() -> None:
    errors: list[Exception] = []
    seen: list[Any] = []

    def timestamp(item: float) -> float:
        if item == 2:
            raise ValueError("two")
        return item

    reactivex.of(1.0, 2.0, 3.0).pipe(tumbling_event_time_window(10.0, timestamp=timestamp)).subscribe(
        seen.append, errors.append
    )
    assert seen == [] and [str(e) for e in errors] == ["two"]


def test_source_error_is_passed_on_without_flushing() -> None:
    boom = Exception("source failed")
    messages, _ = run([on_next(210, ev("k", 1.0)), on_error(220, boom)])
    assert messages == [on_error(220, boom)]


@pytest.mark.parametrize("size, lateness", [(0.0, 0.0), (-1.0, 0.0), (math.inf, 0.0), (10.0, -1.0), (10.0, math.nan)])
def test_invalid_arguments_raise_value_error(size: float, lateness: float) -> None:
    with pytest.raises(ValueError):
        tumbling_event_time_window(size, timestamp=by_time, allowed_lateness_s=lateness)


def test_window_size_property_and_frozen() -> None:
    w = Window(key="k", start=10.0, end=20.0, items=(1,))
    assert w.size == 10.0 and w.late == ()
    with pytest.raises(AttributeError):
        w.start = 0.0  # type: ignore[misc]


# -- sliding windows ---------------------------------------------------------------------------


def run_sliding(messages: list[Any], size: float = 10.0, slide: float = 5.0, **kwargs: Any) -> tuple[list[Any], Any]:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(*messages)
    kwargs.setdefault("timestamp", by_time)
    result = scheduler.start(lambda: source.pipe(sliding_event_time_window(size, slide, **kwargs)))
    return result.messages, source


def test_sliding_docstring_marbles() -> None:
    # size 10, slide 5: window k covers [5k, 5k + 10); event time = the value; no lateness
    lookup = {"a": 6.0, "b": 8.0, "c": 13.0, "d": 4.0, "e": 22.0, "f": 16.0}
    x = Window(key=None, start=0.0, end=10.0, items=(6.0, 8.0))  # 13: watermark 13 >= 10
    y = Window(key=None, start=5.0, end=15.0, items=(6.0, 8.0, 13.0), late=(4.0,))  # 22 closes [5, 15)
    z = Window(key=None, start=10.0, end=20.0, items=(13.0,))  # ... and [10, 20), in start order
    u = Window(key=None, start=15.0, end=25.0, items=(22.0, 16.0))  # 16 missed the closed [10, 20)
    v = Window(key=None, start=20.0, end=30.0, items=(22.0,))
    with marbles_testing(timespan=1.0) as (start, cold, hot, exp):
        source = hot("  --a--b--c--d--e--f--|", lookup)
        expected = exp("--------x-----(y,z)-(u,v,|)", {"x": x, "y": y, "z": z, "u": u, "v": v})
        results = start(source.pipe(sliding_event_time_window(10.0, 5.0, timestamp=lambda t: t)))
    assert results == expected


def test_sliding_item_is_in_every_window_containing_it_cold_source() -> None:
    # size 30, slide 10: 25 is in [0, 30), [10, 40), [20, 50) (size / slide = 3 windows);
    # 41 moves the watermark to 41: [0, 30) and [10, 40) close together, emitted in start order
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(on_next(10, ev("k", 25.0)), on_next(20, ev("k", 41.0)), on_completed(100))
    result = scheduler.start(lambda: source.pipe(sliding_event_time_window(30.0, 10.0, timestamp=by_time)))
    assert result.messages == [
        on_next(220, Window(key=None, start=0.0, end=30.0, items=(ev("k", 25.0),))),
        on_next(220, Window(key=None, start=10.0, end=40.0, items=(ev("k", 25.0),))),
        on_next(300, Window(key=None, start=20.0, end=50.0, items=(ev("k", 25.0), ev("k", 41.0)))),
        on_next(300, Window(key=None, start=30.0, end=60.0, items=(ev("k", 41.0),))),
        on_next(300, Window(key=None, start=40.0, end=70.0, items=(ev("k", 41.0),))),
        on_completed(300),
    ]
    assert source.subscriptions == [subscribe(200, 300)]


def test_sliding_out_of_order_within_allowed_lateness_lands_in_its_windows() -> None:
    # size 10, slide 5, lateness 4
    messages, _ = run_sliding(
        [
            on_next(210, ev("k", 3.0)),  # [-5, 5), [0, 10); watermark -1
            on_next(220, ev("k", 12.0)),  # [5, 15), [10, 20); watermark 8: [-5, 5) closes
            on_next(230, ev("k", 7.0)),  # [0, 10) and [5, 15) both still open: on time
            on_next(240, ev("k", 14.0)),  # watermark 10: [0, 10) closes
            on_completed(300),
        ],
        allowed_lateness_s=4.0,
    )
    assert messages == [
        on_next(220, Window(key=None, start=-5.0, end=5.0, items=(ev("k", 3.0),))),
        on_next(240, Window(key=None, start=0.0, end=10.0, items=(ev("k", 3.0), ev("k", 7.0)))),
        on_next(300, Window(key=None, start=5.0, end=15.0, items=(ev("k", 12.0), ev("k", 7.0), ev("k", 14.0)))),
        on_next(300, Window(key=None, start=10.0, end=20.0, items=(ev("k", 12.0), ev("k", 14.0)))),
        on_completed(300),
    ]


def test_sliding_too_late_items_ride_the_next_window_counted_never_lost() -> None:
    # size 10, slide 5, no lateness
    messages, _ = run_sliding(
        [
            on_next(210, ev("k", 1.0)),  # [-5, 5), [0, 10)
            on_next(220, ev("k", 16.0)),  # [10, 20), [15, 25); watermark 16 closes [-5, 5), [0, 10)
            on_next(230, ev("k", 4.0)),  # its windows end at 5 and 10 <= 16: too late
            on_next(240, ev("k", 9.0)),  # [0, 10) and the empty [5, 15) closed: too late
            on_next(250, ev("k", 26.0)),  # [20, 30), [25, 35); watermark 26 closes [10, 20), [15, 25)
            on_next(260, ev("k", 2.0)),  # too late
            on_completed(300),
        ]
    )
    assert messages == [
        on_next(220, Window(key=None, start=-5.0, end=5.0, items=(ev("k", 1.0),))),
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0),))),
        on_next(250, Window(key=None, start=10.0, end=20.0, items=(ev("k", 16.0),), late=(ev("k", 4.0), ev("k", 9.0)))),
        on_next(250, Window(key=None, start=15.0, end=25.0, items=(ev("k", 16.0),))),
        on_next(300, Window(key=None, start=20.0, end=30.0, items=(ev("k", 26.0),), late=(ev("k", 2.0),))),
        on_next(300, Window(key=None, start=25.0, end=35.0, items=(ev("k", 26.0),))),
        on_completed(300),
    ]
    windows = [m.value.value for m in messages if m.value.kind == "N"]
    assert sum(len(w.late) for w in windows) == 3


def test_sliding_partially_late_item_goes_only_to_open_windows() -> None:
    # size 30, slide 10, no lateness: window k covers [10k, 10k + 30)
    messages, _ = run_sliding(
        [
            on_next(210, ev("k", 105.0)),  # [80, 110), [90, 120), [100, 130)
            on_next(220, ev("k", 121.0)),  # [100, 130), [110, 140), [120, 150); closes [80, 110), [90, 120)
            on_next(230, ev("k", 112.0)),  # [90, 120) closed; [100, 130), [110, 140) open: only those
            on_next(240, ev("k", 95.0)),  # [70, 100), [80, 110), [90, 120) all closed: too late
            on_completed(300),
        ],
        size=30.0,
        slide=10.0,
    )
    assert messages == [
        on_next(220, Window(key=None, start=80.0, end=110.0, items=(ev("k", 105.0),))),
        on_next(220, Window(key=None, start=90.0, end=120.0, items=(ev("k", 105.0),))),
        on_next(
            300,
            Window(
                key=None,
                start=100.0,
                end=130.0,
                items=(ev("k", 105.0), ev("k", 121.0), ev("k", 112.0)),
                late=(ev("k", 95.0),),
            ),
        ),
        on_next(300, Window(key=None, start=110.0, end=140.0, items=(ev("k", 121.0), ev("k", 112.0)))),
        on_next(300, Window(key=None, start=120.0, end=150.0, items=(ev("k", 121.0),))),
        on_completed(300),
    ]


def test_sliding_keys_have_independent_watermarks() -> None:
    # size 10, slide 5
    messages, _ = run_sliding(
        [
            on_next(210, ev("a", 1.0)),  # a: [-5, 5), [0, 10)
            on_next(220, ev("b", 50.0)),  # b: [45, 55), [50, 60); closes nothing of a
            on_next(230, ev("a", 8.0)),  # a: [0, 10), [5, 15); a's watermark 8 closes a[-5, 5)
            on_next(240, ev("b", 3.0)),  # late for b only (b's watermark 50)
            on_next(250, ev("a", 12.0)),  # a: [5, 15), [10, 20); closes a[0, 10)
            on_completed(300),
        ],
        key=by_key,
    )
    assert messages == [
        on_next(230, Window(key="a", start=-5.0, end=5.0, items=(ev("a", 1.0),))),
        on_next(250, Window(key="a", start=0.0, end=10.0, items=(ev("a", 1.0), ev("a", 8.0)))),
        on_next(300, Window(key="a", start=5.0, end=15.0, items=(ev("a", 8.0), ev("a", 12.0)))),
        on_next(300, Window(key="a", start=10.0, end=20.0, items=(ev("a", 12.0),))),
        on_next(300, Window(key="b", start=45.0, end=55.0, items=(ev("b", 50.0),), late=(ev("b", 3.0),))),
        on_next(300, Window(key="b", start=50.0, end=60.0, items=(ev("b", 50.0),))),
        on_completed(300),
    ]


def test_sliding_final_flush_orders_by_start_then_first_seen_key() -> None:
    messages, _ = run_sliding(
        [
            on_next(210, ev("b", 7.0)),  # b first seen: b[0, 10), b[5, 15)
            on_next(220, ev("a", 3.0)),  # a[-5, 5), a[0, 10)
            on_next(230, ev("a", 9.0)),  # a[0, 10), a[5, 15); closes a[-5, 5)
            on_completed(260),
        ],
        key=by_key,
    )
    assert messages == [
        on_next(230, Window(key="a", start=-5.0, end=5.0, items=(ev("a", 3.0),))),
        on_next(260, Window(key="b", start=0.0, end=10.0, items=(ev("b", 7.0),))),
        on_next(260, Window(key="a", start=0.0, end=10.0, items=(ev("a", 3.0), ev("a", 9.0)))),
        on_next(260, Window(key="b", start=5.0, end=15.0, items=(ev("b", 7.0),))),
        on_next(260, Window(key="a", start=5.0, end=15.0, items=(ev("a", 9.0),))),
        on_completed(260),
    ]


def test_sliding_no_empty_windows() -> None:
    # the empty windows [5, 15) ... [30, 40) between 1 and 42 are never emitted
    messages, _ = run_sliding([on_next(210, ev("k", 1.0)), on_next(220, ev("k", 42.0)), on_completed(230)])
    assert messages == [
        on_next(220, Window(key=None, start=-5.0, end=5.0, items=(ev("k", 1.0),))),
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0),))),
        on_next(230, Window(key=None, start=35.0, end=45.0, items=(ev("k", 42.0),))),
        on_next(230, Window(key=None, start=40.0, end=50.0, items=(ev("k", 42.0),))),
        on_completed(230),
    ]


def test_sliding_size_not_a_multiple_of_slide() -> None:
    # size 10, slide 4: window k covers [4k, 4k + 10); 9 is in 3 windows, 13 in 3
    messages, _ = run_sliding(
        [on_next(210, ev("k", 9.0)), on_next(220, ev("k", 13.0)), on_completed(230)], size=10.0, slide=4.0
    )
    assert messages == [
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 9.0),))),
        on_next(230, Window(key=None, start=4.0, end=14.0, items=(ev("k", 9.0), ev("k", 13.0)))),
        on_next(230, Window(key=None, start=8.0, end=18.0, items=(ev("k", 9.0), ev("k", 13.0)))),
        on_next(230, Window(key=None, start=12.0, end=22.0, items=(ev("k", 13.0),))),
        on_completed(230),
    ]


def test_sliding_with_float_slide_windows_line_up_without_drift() -> None:
    # slide 0.1 s, size 0.3 s (3 slides, though 0.3 / 0.1 != 3 in binary floats): every item is
    # in exactly 3 windows, each window's end is exactly the start of the window 3 slides later
    rng = random.Random(7)
    times = sorted(round(rng.uniform(0.0, 1000.0), 3) for _ in range(300))
    messages, _ = run_sliding(
        [on_next(201 + i, ev("k", t)) for i, t in enumerate(times)] + [on_completed(1000)], size=0.3, slide=0.1
    )
    windows = [m.value.value for m in messages if m.value.kind == "N"]
    for w in windows:
        k = round(w.start / 0.1)
        assert w.start == k * 0.1 and w.end == (k + 3) * 0.1
        assert all(w.start <= t < w.end for _, t in w.items)
    for t in times:
        assert sum(ev("k", t) in w.items for w in windows) == 3


def test_sliding_one_window_per_slide_equals_tumbling() -> None:
    # slide == size is allowed and tiles: 3 and 7 in [0, 10), 12 in [10, 20)
    messages, _ = run_sliding(
        [on_next(210, ev("k", 3.0)), on_next(220, ev("k", 7.0)), on_next(230, ev("k", 12.0)), on_completed(240)],
        size=10.0,
        slide=10.0,
    )
    assert messages == [
        on_next(230, Window(key=None, start=0.0, end=10.0, items=(ev("k", 3.0), ev("k", 7.0)))),
        on_next(240, Window(key=None, start=10.0, end=20.0, items=(ev("k", 12.0),))),
        on_completed(240),
    ]


@pytest.mark.parametrize(
    "size, slide, lateness, parameter",
    [
        (0.0, 0.0, 0.0, "size_s"),
        (-10.0, 5.0, 0.0, "size_s"),
        (math.inf, 5.0, 0.0, "size_s"),
        (math.nan, 5.0, 0.0, "size_s"),
        (10.0, 0.0, 0.0, "slide_s"),
        (10.0, -5.0, 0.0, "slide_s"),
        (10.0, math.inf, 0.0, "slide_s"),
        (10.0, math.nan, 0.0, "slide_s"),
        (10.0, 10.5, 0.0, "slide_s"),  # slide > size: gaps between windows
        (10.0, 5.0, -1.0, "allowed_lateness_s"),
        (10.0, 5.0, math.inf, "allowed_lateness_s"),
    ],
)
def test_sliding_invalid_arguments_raise_value_error_naming_the_parameter(
    size: float, slide: float, lateness: float, parameter: str
) -> None:
    with pytest.raises(ValueError, match=parameter):
        sliding_event_time_window(size, slide, timestamp=by_time, allowed_lateness_s=lateness)


def test_sliding_timestamp_callback_raises_goes_to_on_error_and_disposes_source() -> None:
    boom = RuntimeError("bad timestamp")

    def timestamp(item: tuple[str, float]) -> float:
        if item[1] < 0:
            raise boom
        return item[1]

    messages, source = run_sliding(
        [
            on_next(210, ev("k", 1.0)),
            on_next(220, ev("k", 12.0)),  # closes [-5, 5) and [0, 10)
            on_next(230, ev("k", -1.0)),  # the callback raises: [5, 15), [10, 20) are not emitted
            on_next(240, ev("k", 50.0)),
            on_completed(250),
        ],
        timestamp=timestamp,
    )
    assert messages == [
        on_next(220, Window(key=None, start=-5.0, end=5.0, items=(ev("k", 1.0),))),
        on_next(220, Window(key=None, start=0.0, end=10.0, items=(ev("k", 1.0),))),
        on_error(230, boom),
    ]
    assert source.subscriptions == [subscribe(200, 230)]


def test_sliding_key_callback_raises_goes_to_on_error() -> None:
    boom = KeyError("no key")

    def key(item: tuple[str, float]) -> str:
        raise boom

    messages, source = run_sliding([on_next(210, ev("k", 1.0)), on_completed(240)], key=key)
    assert messages == [on_error(210, boom)]
    assert source.subscriptions == [subscribe(200, 210)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_sliding_non_finite_timestamp_goes_to_on_error(bad: float) -> None:
    messages, _ = run_sliding([on_next(210, ev("k", bad)), on_completed(240)])
    assert len(messages) == 1 and messages[0].time == 210
    assert isinstance(messages[0].value.exception, ValueError)


def test_sliding_timestamp_too_large_for_a_window_index_goes_to_on_error() -> None:
    # 1e10 / 1e-300 overflows to inf: no window index
    messages, _ = run_sliding([on_next(210, ev("k", 1e10)), on_completed(240)], size=1.0, slide=1e-300)
    assert len(messages) == 1 and messages[0].time == 210
    assert isinstance(messages[0].value.exception, OverflowError)


def test_sliding_source_error_is_passed_on_without_flushing() -> None:
    boom = Exception("source failed")
    messages, _ = run_sliding([on_next(210, ev("k", 1.0)), on_error(220, boom)])
    assert messages == [on_error(220, boom)]


# -- property: every item in exactly its open windows, or late exactly once --------------------

Item = tuple[str, float, int]  # (key, event time, sequence number: items are unique)

PROPERTY_CONFIGS = [
    # (size_s, slide_s or None for tumbling_event_time_window, allowed_lateness_s)
    (10.0, None, 0.0),
    (10.0, None, 2.5),
    (7.5, None, 7.75),
    (10.0, 10.0, 0.0),
    (10.0, 5.0, 0.0),
    (10.0, 5.0, 2.5),
    (10.0, 2.5, 7.75),
    (9.0, 3.0, 1.0),
    (10.0, 4.0, 0.0),  # size not a multiple of slide
    (7.0, 2.0, 3.25),
    (1.5, 0.5, 0.25),
    (0.75, 0.25, 0.0),
]


def random_stream(rng: random.Random, n: int) -> list[Item]:
    """Mostly increasing event times per key, multiples of 0.25 s (exact in binary), some far behind."""
    base = {"a": rng.uniform(-20.0, 0.0), "b": rng.uniform(0.0, 20.0), "c": rng.uniform(-5.0, 5.0)}
    stream: list[Item] = []
    for seq in range(n):
        k = rng.choice("abc")
        base[k] += rng.uniform(0.0, 3.0)
        jitter = -rng.uniform(0.0, 25.0) if rng.random() < 0.3 else rng.uniform(-1.0, 1.0)
        stream.append((k, round((base[k] + jitter) * 4) / 4, seq))
    return stream


def item_time(item: Item) -> float:
    return item[1]


def item_key(item: Item) -> str:
    return item[0]


@pytest.mark.parametrize("size, slide, lateness", PROPERTY_CONFIGS)
def test_property_each_item_in_exactly_its_open_windows_or_late_once(
    size: float, slide: float | None, lateness: float
) -> None:
    late_total = partial_total = 0
    for seed in range(8):
        rng = random.Random(seed)
        stream = random_stream(rng, 150)
        arrival = {item: 201 + i for i, item in enumerate(stream)}
        completion = 201 + len(stream) + 10

        # The model, in exact arithmetic: window k covers [k * slide, k * slide + size); a
        # window is open while its end > (max event time seen for the key) - lateness.
        S, Z, L = Fraction(slide if slide is not None else size), Fraction(size), Fraction(lateness)
        max_seen: dict[str, Fraction] = {}
        history: dict[str, list[tuple[int, Fraction]]] = {}  # key -> [(arrival, watermark after it)]
        expected_in: dict[Item, set[Fraction]] = {}
        expected_late: set[Item] = set()
        for item in stream:
            k_, t = item[0], Fraction(item[1])
            watermark = max_seen[k_] - L if k_ in max_seen else None
            lo, hi = math.floor((t - Z) / S) - 2, math.floor(t / S) + 2  # a superset of the indices
            containing = [k * S for k in range(lo, hi + 1) if k * S <= t < k * S + Z]
            assert containing
            open_starts = {s for s in containing if watermark is None or s + Z > watermark}
            if open_starts:
                expected_in[item] = open_starts
                partial_total += len(open_starts) < len(containing)
            else:
                expected_late.add(item)
            max_seen[k_] = max(max_seen.get(k_, t), t)
            history.setdefault(k_, []).append((arrival[item], max_seen[k_] - L))

        scheduler = TestScheduler()
        source = scheduler.create_hot_observable(
            *[on_next(arrival[item], item) for item in stream], on_completed(completion)
        )
        operator: Callable[[Any], Any] = (
            tumbling_event_time_window(size, timestamp=item_time, key=item_key, allowed_lateness_s=lateness)
            if slide is None
            else sliding_event_time_window(size, slide, timestamp=item_time, key=item_key, allowed_lateness_s=lateness)
        )
        messages = scheduler.start(lambda: source.pipe(operator)).messages  # noqa: B023  # called at once, in this iteration
        assert messages[-1] == on_completed(completion)
        emitted: list[tuple[int, Window[Item]]] = [(int(m.time), m.value.value) for m in messages[:-1]]

        seen_in: dict[Item, set[Fraction]] = {}
        late_count: dict[Item, int] = {}
        windows_of_key: dict[str, list[tuple[int, Window[Item]]]] = {}
        for time, w in emitted:
            assert w.items, "an empty window was emitted"
            assert Fraction(w.end) - Fraction(w.start) == Z
            assert isinstance(w.key, str)
            windows_of_key.setdefault(w.key, []).append((time, w))
            for item in w.items:
                assert item[0] == w.key and w.start <= item[1] < w.end
                assert Fraction(w.start) not in seen_in.get(item, set()), "item twice in one window"
                seen_in.setdefault(item, set()).add(Fraction(w.start))
            for item in w.late:
                assert item[0] == w.key and item[1] < w.start
                late_count[item] = late_count.get(item, 0) + 1
        for item in stream:
            assert seen_in.get(item, set()) == expected_in.get(item, set()), item
            assert late_count.get(item, 0) == (1 if item in expected_late else 0), item
        for k_, ws in windows_of_key.items():
            starts = [w.start for _, w in ws]
            assert starts == sorted(starts) and len(set(starts)) == len(starts)  # once each, in start order
            for time, w in ws:  # emitted when the first item brought the watermark to its end
                closing = [at for at, watermark in history[k_] if watermark >= Fraction(w.end)]
                assert time == (closing[0] if closing else completion)
        for item in expected_late:  # a late item rides the next window emitted for its key
            after = [w for time, w in windows_of_key[item[0]] if time > arrival[item]]
            assert item in after[0].late
        late_total += len(expected_late)
    assert late_total > 0  # the streams do exercise late items
    if slide is not None and slide < size:
        assert partial_total > 0  # ... and partially late ones


# -- watermark="partition" and idle_timeout_s ----------------------------------------------------------


def _tumbling_on_partition(size: float, **options: Any) -> Any:
    def windows(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        return source.pipe(
            tumbling_event_time_window(
                size, timestamp=lambda m: m.timestamp, key=lambda m: m.key, watermark="partition", **options
            ),
            ops.map(lambda w: (w.key, w.start, [m.value for m in w.items], [m.value for m in w.late])),
        )

    return windows


def test_a_partition_watermark_closes_the_windows_of_every_key_of_the_partition() -> None:
    # a (key A, 1 s) and b (key B, 3 s); c (key B, 25 s) moves the partition past [0, 10): A's
    # window closes although A got nothing more (with watermark="key" it would wait for completion)
    values = {
        "a": make_message("a", key=b"A", timestamp_ms=1000),
        "b": make_message("b", key=b"B", timestamp_ms=3000),
        "c": make_message("c", key=b"B", timestamp_ms=25000),
    }
    run = run_marbles("-a-b-c--|", _tumbling_on_partition(10.0), values)
    assert [n.value.value for n in run.output if n.value.kind == "N"] == [
        (b"A", 0.0, ["a"], []),
        (b"B", 0.0, ["b"], []),
        (b"B", 20.0, ["c"], []),
    ]
    assert [n.time for n in run.output if n.value.kind == "N"] == [205.0, 205.0, 208.0]
    assert {c.time: c.offset for c in run.committed} == {205.0: 2, 208.0: 3}


def test_partitions_have_watermarks_of_their_own() -> None:
    values = {
        "a": make_message("a", key=b"A", partition=0, timestamp_ms=1000),
        "b": make_message("b", key=b"B", partition=1, timestamp_ms=25000),
    }
    run = run_marbles("-a-b--|", _tumbling_on_partition(10.0), values)
    # b (partition 1) does not close partition 0's window: both are flushed by the completion
    assert [n.time for n in run.output if n.value.kind == "N"] == [206.0, 206.0]


def test_a_too_late_item_of_a_key_with_nothing_open_is_emitted_at_once_alone() -> None:
    values = {
        "a": make_message("a", key=b"A", timestamp_ms=1000),
        "b": make_message("b", key=b"B", timestamp_ms=30000),
        "c": make_message("c", key=b"A", timestamp_ms=2000),  # A's [0, 10) closed by b
    }
    run = run_marbles("-a-b-c--|", _tumbling_on_partition(10.0), values)
    got = [(n.time, n.value.value) for n in run.output if n.value.kind == "N"]
    assert got[:2] == [(203.0, (b"A", 0.0, ["a"], [])), (205.0, (b"A", 0.0, [], ["c"]))]
    # a committed with its window; c's own window is handled at 205, but b (offset 1, still open)
    # keeps the partition's commit below it until the completion flushes b
    assert {c.time: c.offset for c in run.committed} == {203.0: 1, 208.0: 3}


def test_with_a_partition_watermark_distinct_keys_do_not_accumulate() -> None:
    # 20,000 keys with one record each, event time moving 1 s per record past 60 s windows:
    # every window but the last minute's is emitted before completion, and each emitted key is forgotten
    n = 20_000
    source = reactivex.from_iterable(range(n)).pipe(ops.map(lambda i: (f"user-{i}", float(i))))
    emitted_before_end: list[int] = []
    windows: list[Window[Any]] = []
    op = tumbling_event_time_window(60.0, timestamp=lambda r: r[1], key=lambda r: r[0], watermark="partition")
    source.pipe(op).subscribe(windows.append, on_completed=lambda: emitted_before_end.append(len(windows)))
    assert len(windows) == n  # one window per key
    assert emitted_before_end == [n]
    flushed_at_end = [w for w in windows if w.start == (n - 1) // 60 * 60]
    assert len(flushed_at_end) == n - (n - 1) // 60 * 60  # only the keys of the last open window


def test_an_idle_key_has_its_windows_emitted_after_the_timeout() -> None:
    scheduler = MarbleScheduler()

    def windows(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
        return source.pipe(
            tumbling_event_time_window(
                60.0, timestamp=lambda m: m.timestamp, key=lambda m: m.key, idle_timeout_s=10.0, scheduler=scheduler
            ),
            ops.map(lambda w: (w.key, [m.value for m in w.items], [m.value for m in w.late])),
        )

    values = {
        "a": make_message("a", key=b"A", timestamp_ms=1000),
        "b": make_message("b", key=b"A", timestamp_ms=2000),
        "c": make_message("c", key=b"A", timestamp_ms=3000),  # after the idle flush: late, alone
    }
    run = run_marbles("-a-b-------------------c-|", windows, values, scheduler=scheduler)
    got = [(n.time, n.value.value) for n in run.output if n.value.kind == "N"]
    # b at 203; nothing for 10 s: [0, 60) of A emitted at 213 (not at completion, 225)
    assert got == [(213.0, (b"A", ["a", "b"], [])), (223.0, (b"A", [], ["c"]))]
    assert {c.time: c.offset for c in run.committed} == {213.0: 2, 223.0: 3}


def test_bad_watermark_or_idle_timeout() -> None:
    with pytest.raises(ValueError, match="watermark"):
        tumbling_event_time_window(1.0, timestamp=float, watermark="stream")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="idle_timeout_s"):
        tumbling_event_time_window(1.0, timestamp=float, idle_timeout_s=0)
