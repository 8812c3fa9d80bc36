"""tumbling_event_time_window: marble tests in virtual time (TestScheduler)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import reactivex
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from operators._tumbling_window import Window, tumbling_event_time_window

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


@pytest.mark.parametrize(
    "size, lateness", [(0.0, 0.0), (-1.0, 0.0), (math.inf, 0.0), (10.0, -1.0), (10.0, math.nan)]
)
def test_invalid_arguments_raise_value_error(size: float, lateness: float) -> None:
    with pytest.raises(ValueError):
        tumbling_event_time_window(size, timestamp=by_time, allowed_lateness_s=lateness)


def test_window_size_property_and_frozen() -> None:
    w = Window(key="k", start=10.0, end=20.0, items=(1,))
    assert w.size == 10.0 and w.late == ()
    with pytest.raises(AttributeError):
        w.start = 0.0  # type: ignore[misc]
