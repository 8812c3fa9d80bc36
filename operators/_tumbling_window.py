"""Tumbling windows over *event* time, with a per-key watermark and explicit late items."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Optional, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import SingleAssignmentDisposable

__all__ = ["Window", "tumbling_event_time_window"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Window(Generic[T]):
    """One closed tumbling window of one key.

    Attributes:
        key: the key the items were grouped by (``None`` when the operator has no ``key``).
        start: inclusive lower bound of the window, event time in seconds (a multiple of the size).
        end: exclusive upper bound, ``start + size`` seconds.
        items: the on-time items whose event time is in ``[start, end)``, in arrival order.
        late: items of the same key that arrived after *their own* window had closed
            (event time before ``start`` of some earlier, already-closed window), in arrival
            order. They are attached to the next window emitted for their key so that no item
            is ever dropped silently; their event times are *outside* ``[start, end)``.
    """

    key: Hashable
    start: float
    end: float
    items: tuple[T, ...]
    late: tuple[T, ...] = field(default=())

    @property
    def size(self) -> float:
        """The window length in seconds (``end - start``)."""
        return self.end - self.start


class _KeyState(Generic[T]):
    """Open windows and watermark of one key."""

    __slots__ = ("order", "watermark", "open", "late")

    def __init__(self, order: int) -> None:
        self.order = order  # first-seen rank of the key, to order the final flush
        self.watermark = -math.inf
        self.open: dict[int, list[T]] = {}
        self.late: list[T] = []


def tumbling_event_time_window(
    size_s: float,
    *,
    timestamp: Callable[[T], float],
    key: Callable[[T], Hashable] | None = None,
    allowed_lateness_s: float = 0.0,
) -> Callable[[Observable[T]], Observable[Window[T]]]:
    """Group items into tumbling windows of their event time, one series of windows per key.

    Window ``k`` of a key covers event times ``[k * size_s, (k + 1) * size_s)`` seconds, where
    ``k = floor(timestamp(item) / size_s)``. The wall clock and the scheduler play no part:
    only the items' own timestamps move windows forward.

    Each key has a *watermark* = (largest event time seen for that key) - ``allowed_lateness_s``.
    A window is emitted as soon as the watermark reaches its end (``watermark >= end``), so
    items may arrive out of order by up to ``allowed_lateness_s`` and still be on time.
    Windows that received no item are never emitted. When the source completes, every window
    still open is emitted, ordered by ``start`` (ties: keys in first-seen order), then
    ``on_completed``.

    An item whose window has already closed (its end is at or before the key's watermark when
    it arrives) is *late*. It is not dropped: it is put in ``late`` of the next window emitted
    for its key (``len(window.late)`` counts them). There always is such a window: the window
    holding the key's largest event time stays open until a later event or completion, so at
    the latest the final flush carries them. Every item is thus emitted exactly once, in
    ``items`` of its own window or in ``late`` of a later one.

    Marble diagram (size 10 s; each item's value is its event time in seconds; no lateness)::

        source: --1--4--12--3---25--|
        output: --------a-------b---(c|)

        a = Window(start=0,  end=10, items=(1, 4))          12 moved the watermark past 10
        b = Window(start=10, end=20, items=(12,), late=(3,)) 3 arrived after [0, 10) closed
        c = Window(start=20, end=30, items=(25,))           flushed by completion

    Example:
        >>> import reactivex
        >>> out = []
        >>> reactivex.of(1.0, 4.0, 12.0, 25.0).pipe(
        ...     tumbling_event_time_window(10.0, timestamp=lambda t: t)
        ... ).subscribe(lambda w: out.append((w.start, w.items)))  # doctest: +ELLIPSIS
        <...>
        >>> out
        [(0.0, (1.0, 4.0)), (10.0, (12.0,)), (20.0, (25.0,))]

    Args:
        size_s: window length in seconds of event time; must be > 0 and finite.
        timestamp: item -> event time in seconds (e.g. since the Unix epoch); must be finite.
        key: item -> hashable key; each key has its own windows and watermark (e.g. one per log
            source). ``None`` puts every item under the key ``None``.
        allowed_lateness_s: how far behind the largest event time seen an item may be and still
            count as on time, in seconds; must be >= 0.

    Returns:
        An operator turning ``Observable[T]`` into ``Observable[Window[T]]``.

    Raises:
        ValueError: at construction, when ``size_s <= 0`` or ``allowed_lateness_s < 0`` (or
            either is not finite).

    Errors: an exception raised by ``timestamp`` or ``key``, or a non-finite timestamp
    (``ValueError``), is sent to ``on_error`` and the subscription to the source is disposed;
    windows still open at that point are not emitted. An error from the source is passed on
    as is (open windows are not emitted either).
    """
    if not math.isfinite(size_s) or size_s <= 0:
        raise ValueError(f"size_s must be a finite number > 0, got {size_s!r}")
    if not math.isfinite(allowed_lateness_s) or allowed_lateness_s < 0:
        raise ValueError(f"allowed_lateness_s must be a finite number >= 0, got {allowed_lateness_s!r}")
    key_of: Callable[[T], Hashable] = key if key is not None else (lambda _item: None)

    def bounds(index: int) -> tuple[float, float]:
        return index * size_s, (index + 1) * size_s

    def operator(source: Observable[T]) -> Observable[Window[T]]:
        def subscribe(
            observer: abc.ObserverBase[Window[T]],
            scheduler: Optional[abc.SchedulerBase] = None,
        ) -> abc.DisposableBase:
            states: dict[Hashable, _KeyState[T]] = {}
            stopped = False

            def make_window(k: Hashable, state: _KeyState[T], index: int, items: list[T]) -> Window[T]:
                start, end = bounds(index)
                late = tuple(state.late)
                state.late.clear()
                return Window(key=k, start=start, end=end, items=tuple(items), late=late)

            def on_next(item: T) -> None:
                nonlocal stopped
                if stopped:
                    return
                try:
                    event_time = float(timestamp(item))
                    if not math.isfinite(event_time):
                        raise ValueError(f"timestamp must be finite, got {event_time!r} for {item!r}")
                    k = key_of(item)
                    state = states.get(k)
                    if state is None:
                        state = states[k] = _KeyState(len(states))
                except Exception as exc:  # a user callback failed: stop and report
                    stopped = True
                    subscription.dispose()
                    observer.on_error(exc)
                    return

                index = math.floor(event_time / size_s)
                if bounds(index)[1] <= state.watermark:
                    state.late.append(item)
                    return
                state.open.setdefault(index, []).append(item)
                state.watermark = max(state.watermark, event_time - allowed_lateness_s)
                ready = sorted(i for i in state.open if bounds(i)[1] <= state.watermark)
                for i in ready:
                    observer.on_next(make_window(k, state, i, state.open.pop(i)))

            def on_error(error: Exception) -> None:
                nonlocal stopped
                if not stopped:
                    stopped = True
                    observer.on_error(error)

            def on_completed() -> None:
                nonlocal stopped
                if stopped:
                    return
                stopped = True
                pending: list[tuple[int, int, Hashable, _KeyState[T]]] = []
                for k, state in states.items():
                    # The window holding the key's largest event time is always still open (only
                    # a later event could have closed it), so late items always find a window.
                    for i in state.open:
                        pending.append((i, state.order, k, state))
                pending.sort(key=lambda entry: (entry[0], entry[1]))
                for i, _order, k, state in pending:
                    observer.on_next(make_window(k, state, i, state.open.pop(i)))
                observer.on_completed()

            subscription = SingleAssignmentDisposable()
            subscription.disposable = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return subscription

        return Observable(subscribe)

    return operator


