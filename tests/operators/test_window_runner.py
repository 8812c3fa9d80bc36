"""``WindowRunner``: an event-time window operator driven one item at a time (the per-fetch path)."""

from __future__ import annotations

from typing import Any

import pytest
from reactivex import operators as ops

from reactive_services.adapters import Message
from reactive_services.operators import Window, WindowRunner, sliding_event_time_window, tumbling_event_time_window


class Collect:
    def __init__(self) -> None:
        self.windows: list[Window[float]] = []
        self.errors: list[Exception] = []
        self.completed = 0

    def on_next(self, window: Window[float]) -> None:
        self.windows.append(window)

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    def on_completed(self) -> None:
        self.completed += 1


def test_items_fed_one_by_one_give_the_windows_of_the_operator() -> None:
    out = Collect()
    runner = WindowRunner(sliding_event_time_window(10.0, 5.0, timestamp=lambda t: t), out)
    for offset, t in enumerate((6.0, 8.0, 13.0)):
        runner.on_record(t, None, offset)
    assert [(w.start, w.end, w.items) for w in out.windows] == [(0.0, 10.0, (6.0, 8.0))]
    runner.on_completed()
    assert [(w.start, w.end, w.items) for w in out.windows] == [
        (0.0, 10.0, (6.0, 8.0)),
        (5.0, 15.0, (6.0, 8.0, 13.0)),
        (10.0, 20.0, (13.0,)),
    ]
    assert out.completed == 1 and out.errors == []


def test_a_timestamp_that_fails_errors_the_observer() -> None:
    out = Collect()
    runner = WindowRunner(tumbling_event_time_window(10.0, timestamp=lambda t: float("nan")), out)
    runner.on_record(1.0)
    assert len(out.errors) == 1 and "finite" in str(out.errors[0])
    runner.on_record(2.0)  # stopped: nothing more
    assert len(out.errors) == 1 and out.windows == []


def test_only_a_window_operator_can_be_run() -> None:
    with pytest.raises(TypeError, match="sliding_event_time_window"):
        WindowRunner(ops.map(lambda x: x), Collect())  # type: ignore[arg-type]


def test_after_dispose_nothing_is_emitted() -> None:
    out = Collect()
    runner: WindowRunner[Any] = WindowRunner(tumbling_event_time_window(10.0, timestamp=lambda t: t), out)
    runner.on_record(1.0)
    runner.dispose()
    runner.on_record(25.0)
    runner.on_completed()
    assert out.windows == [] and out.completed == 0


async def test_a_feeder_holds_its_message_once_per_window_as_on_record_does() -> None:
    out = Collect()
    runner = WindowRunner(tumbling_event_time_window(10.0, timestamp=lambda t: t), out)
    first = Message(topic="logs", partition=0, offset=2, key=None, value=None)
    feed = runner.feeder(first)
    for offset, t in enumerate((1.0, 2.0, 11.0)):  # two windows: the first closes on 11.0
        feed(t, offset)
    assert [(w.start, w.items) for w in out.windows] == [(0.0, (1.0, 2.0))]
    assert first._holds is not None and len(first._holds) == 2  # one hold per window, not per item
    second = Message(topic="logs", partition=0, offset=4, key=None, value=None)
    runner.on_record(12.0, second, 3)  # another message: held by it, in the open window
    runner.feeder(second)(13.0, 4)
    assert second._holds is not None and len(second._holds) == 1
    runner.on_completed()
    assert [(w.start, w.items) for w in out.windows] == [(0.0, (1.0, 2.0)), (10.0, (11.0, 12.0, 13.0))]
    assert all(hold.done() for hold in (*first._holds, *second._holds))  # released: no one tracks work
