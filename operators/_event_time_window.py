"""Sliding (hopping) and tumbling windows over *event* time, with a per-key watermark and explicit late items."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import SingleAssignmentDisposable

from ._commit_hold import HeldRecords

__all__ = ["Window", "sliding_event_time_window", "tumbling_event_time_window"]

T = TypeVar("T")

# size_s counts as a whole multiple of slide_s when the ratio is this close to an integer, so
# that e.g. size 0.3 s / slide 0.1 s (ratio 2.9999999999999996 in binary floats) is 3 windows.
_MULTIPLE_REL_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class Window(Generic[T]):
    """One closed event-time window of one key (tumbling or sliding).

    Attributes:
        key: the key the items were grouped by (``None`` when the operator has no ``key``).
        start: inclusive lower bound of the window, event time in seconds (``k * slide_s`` for an
            integer ``k``; for tumbling windows the slide is the size).
        end: exclusive upper bound, ``start + size_s`` seconds.
        items: the on-time items whose event time is in ``[start, end)``, in arrival order. With
            sliding windows one item is in the ``items`` of every window containing its event time
            that was still open when it arrived.
        late: items of the same key that arrived after *all* the windows containing their event
            time had closed, in arrival order. They are attached to the next window emitted for
            their key so that no item is ever dropped silently; their event times are *before*
            ``start`` (outside ``[start, end)``).
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

    __slots__ = ("order", "watermark", "open", "holds", "heap", "late", "late_holds")

    def __init__(self, order: int) -> None:
        self.order = order  # first-seen rank of the key, to order the final flush
        self.watermark = -math.inf
        self.open: dict[int, list[T]] = {}  # window index -> items, for the windows that have items
        self.holds: dict[int, HeldRecords] = {}  # window index -> the commits its items hold back
        self.heap: list[int] = []  # the same indices, smallest first (ends grow with the index)
        self.late: list[T] = []
        self.late_holds = HeldRecords()


def sliding_event_time_window(
    size_s: float,
    slide_s: float,
    *,
    timestamp: Callable[[T], float],
    key: Callable[[T], Hashable] | None = None,
    allowed_lateness_s: float = 0.0,
) -> Callable[[Observable[T]], Observable[Window[T]]]:
    """Group items into sliding (hopping) windows of their event time, one series of windows per key.

    Window ``k`` (any integer, negative too) of a key covers event times
    ``[k * slide_s, k * slide_s + size_s)`` seconds: a window of length ``size_s`` starts at every
    multiple of ``slide_s``, and an item belongs to *every* window containing its event time
    (``size_s / slide_s`` of them when that is a whole number). ``slide_s == size_s`` gives
    tumbling windows (:func:`tumbling_event_time_window`). The wall clock and the scheduler play
    no part: only the items' own timestamps move windows forward.

    Each key has a *watermark* = (largest event time seen for that key) - ``allowed_lateness_s``.
    A window is emitted once, as soon as the watermark reaches its end (``watermark >= end``), so
    items may arrive out of order by up to ``allowed_lateness_s`` and still be on time. When one
    item closes several windows of its key they are emitted in ``start`` order; a key's windows
    are always emitted in ``start`` (equivalently ``end``) order. Windows that received no item
    are never emitted. When the source completes, every window still open is emitted, ordered by
    ``start`` (ties: keys in first-seen order), then ``on_completed``.

    Lateness, decided with the key's watermark when the item arrives:

    * every window containing the item is open: the item goes into the ``items`` of all of them;
    * *partially late*: some of those windows have closed (``end <= watermark``) but not all:
      the item goes into the ``items`` of the open ones only, and not into ``late``. A closed
      window is never reopened or emitted twice, even if it had no item;
    * *too late*: every window containing it has closed (the end of the last one is at or
      before the watermark): the item is not dropped but put in ``late`` of the next window
      emitted for its key (``len(window.late)`` counts them). There always is such a window: the
      window starting last among those holding the key's largest event time stays open until a
      later event or completion, so at the latest the final flush carries them.

    Every item is thus emitted in ``items`` of each of its windows that was open on its arrival
    (at least one), or exactly once in ``late`` of a later window of its key.

    Commits: fed by a broker source, an item's offset stays uncommitted until every window that
    holds it (in ``items`` or ``late``) has been emitted and handled downstream (the Observer's
    ``on_next`` returned and the work it :func:`~reactive_services.adapters.track`-ed settled);
    see :meth:`~reactive_services.adapters.Message.hold`. Open windows lost to an error, a dispose
    or a crash are therefore recomputed from the redelivered records on restart (at-least-once:
    windows emitted *after* the committed offset may be emitted again). The holds do not count
    against the source's ``concurrency``.

    Marble diagram (size 10 s, slide 5 s; each item's value is its event time in seconds; no
    lateness)::

        source: --6--8--13--4--22--16--|
        output: --------a------(bc)----(de|)

        a = Window(start=0,  end=10, items=(6, 8))                 13 moved the watermark past 10
        b = Window(start=5,  end=15, items=(6, 8, 13), late=(4,))  4: [-5, 5) and [0, 10) closed
        c = Window(start=10, end=20, items=(13,))                  22 closed [5, 15) and [10, 20)
        d = Window(start=15, end=25, items=(22, 16))               16: [10, 20) closed, partially late
        e = Window(start=20, end=30, items=(22,))                  d and e flushed by completion

    Example:
        >>> import reactivex
        >>> out = []
        >>> reactivex.of(6.0, 8.0, 13.0).pipe(
        ...     sliding_event_time_window(10.0, 5.0, timestamp=lambda t: t)
        ... ).subscribe(lambda w: out.append((w.start, w.end, w.items)))  # doctest: +ELLIPSIS
        <...>
        >>> out
        [(0.0, 10.0, (6.0, 8.0)), (5.0, 15.0, (6.0, 8.0, 13.0)), (10.0, 20.0, (13.0,))]

    Window bounds are computed from the integer index ``k`` (``start = k * slide_s``), so they do
    not drift as time goes on. When ``size_s`` is a whole multiple ``m`` of ``slide_s`` (to within
    float rounding), ``end`` of window ``k`` is computed as ``start`` of window ``k + m``: windows
    then line up exactly and every item is in exactly ``m`` windows. Each item costs
    O(``size_s / slide_s``) work.

    Args:
        size_s: window length in seconds of event time; must be > 0 and finite.
        slide_s: distance in seconds between the starts of consecutive windows; must be > 0,
            finite and ``<= size_s`` (windows overlap when smaller, tile when equal).
        timestamp: item -> event time in seconds (e.g. since the Unix epoch); must be finite.
        key: item -> hashable key; each key has its own windows and watermark (e.g. one per log
            source). ``None`` puts every item under the key ``None``.
        allowed_lateness_s: how far behind the largest event time seen an item may be and still
            count as on time, in seconds; must be >= 0 and finite.

    Returns:
        An operator turning ``Observable[T]`` into ``Observable[Window[T]]``.

    Raises:
        ValueError: at construction (the message names the parameter), when ``size_s <= 0``,
            ``slide_s <= 0``, ``slide_s > size_s`` or ``allowed_lateness_s < 0``, or any of
            them is not finite.

    Errors: an exception raised by ``timestamp`` or ``key``, a non-finite timestamp
    (``ValueError``), or a timestamp too large for its window index (``OverflowError``) is sent
    to ``on_error`` and the subscription to the source is disposed; windows still open at that
    point are not emitted. An error from the source is passed on as is (open windows are not
    emitted either).
    """
    if not math.isfinite(size_s) or size_s <= 0:
        raise ValueError(f"size_s must be a finite number > 0, got {size_s!r}")
    if not math.isfinite(slide_s) or slide_s <= 0:
        raise ValueError(f"slide_s must be a finite number > 0, got {slide_s!r}")
    if slide_s > size_s:
        raise ValueError(f"slide_s must be <= size_s ({size_s!r}), got {slide_s!r}")
    if not math.isfinite(allowed_lateness_s) or allowed_lateness_s < 0:
        raise ValueError(f"allowed_lateness_s must be a finite number >= 0, got {allowed_lateness_s!r}")
    key_of: Callable[[T], Hashable] = key if key is not None else (lambda _item: None)

    ratio = size_s / slide_s
    span = round(ratio)
    if not math.isclose(ratio, span, rel_tol=_MULTIPLE_REL_TOL, abs_tol=0.0):
        span = 0  # not a whole multiple: end = start + size_s

    def start_of(index: int) -> float:
        return index * slide_s

    def end_of(index: int) -> float:
        if span:
            return (index + span) * slide_s  # == start_of(index + span): windows line up exactly
        # max(): never end before the next window starts, whatever the rounding (slide_s <= size_s),
        # so every event time is in at least one window. Non-decreasing in index.
        return max(index * slide_s + size_s, (index + 1) * slide_s)

    def indices(event_time: float) -> tuple[int, int]:
        """First and last index of the windows containing ``event_time`` (``first <= last``)."""
        # The float divisions only give a first guess; the loops make the answer agree with
        # start_of / end_of, which are what the emitted windows carry.
        last = math.floor(event_time / slide_s)
        while start_of(last + 1) <= event_time:
            last += 1
        while start_of(last) > event_time:
            last -= 1
        first = min(math.floor((event_time - size_s) / slide_s) + 1, last)
        while end_of(first - 1) > event_time:
            first -= 1
        while end_of(first) <= event_time:  # stops at last at the latest: end_of(last) > event_time
            first += 1
        return first, last

    def operator(source: Observable[T]) -> Observable[Window[T]]:
        def subscribe(
            observer: abc.ObserverBase[Window[T]],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            states: dict[Hashable, _KeyState[T]] = {}
            stopped = False

            def emit_window(k: Hashable, state: _KeyState[T], index: int) -> None:
                items = state.open.pop(index)
                held = state.holds.pop(index)
                late = tuple(state.late)
                state.late.clear()
                held.merge(state.late_holds)
                window = Window(key=k, start=start_of(index), end=end_of(index), items=tuple(items), late=late)
                held.emit(observer, window)

            def on_next(item: T) -> None:
                nonlocal stopped
                if stopped:
                    return
                try:
                    event_time = float(timestamp(item))
                    if not math.isfinite(event_time):
                        raise ValueError(f"timestamp must be finite, got {event_time!r} for {item!r}")
                    k = key_of(item)
                    first, last = indices(event_time)
                    state = states.get(k)
                    if state is None:
                        state = states[k] = _KeyState(len(states))
                except Exception as exc:  # a user callback failed: stop and report
                    stopped = True
                    subscription.dispose()
                    observer.on_error(exc)
                    return

                watermark = state.watermark
                if end_of(last) <= watermark:  # every window holding it has closed: too late
                    state.late.append(item)
                    state.late_holds.add()
                    return
                for index in range(first, last + 1):
                    if end_of(index) <= watermark:
                        continue  # closed already (partially late item): only the open ones get it
                    bucket = state.open.get(index)
                    if bucket is None:
                        state.open[index] = [item]
                        state.holds[index] = held = HeldRecords()
                        heapq.heappush(state.heap, index)
                    else:
                        bucket.append(item)
                        held = state.holds[index]
                    held.add()
                # A partially late item is behind the watermark, so only an on-time one moves it.
                state.watermark = max(watermark, event_time - allowed_lateness_s)
                heap = state.heap
                while heap and end_of(heap[0]) <= state.watermark:  # smallest start first
                    emit_window(k, state, heapq.heappop(heap))

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
                    # The last window holding the key's largest event time is always still open
                    # (only a later event could have closed it), so late items always find a window.
                    for index in state.open:
                        pending.append((index, state.order, k, state))
                    state.heap.clear()
                pending.sort(key=lambda entry: (entry[0], entry[1]))
                for index, _order, k, state in pending:
                    emit_window(k, state, index)
                observer.on_completed()

            subscription = SingleAssignmentDisposable()
            subscription.disposable = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return subscription

        return Observable(subscribe)

    return operator


def tumbling_event_time_window(
    size_s: float,
    *,
    timestamp: Callable[[T], float],
    key: Callable[[T], Hashable] | None = None,
    allowed_lateness_s: float = 0.0,
) -> Callable[[Observable[T]], Observable[Window[T]]]:
    """Group items into tumbling windows of their event time, one series of windows per key.

    The same as ``sliding_event_time_window(size_s, size_s, ...)``: windows do not overlap, so
    each item belongs to exactly one window. Window ``k`` of a key covers event times
    ``[k * size_s, (k + 1) * size_s)`` seconds, where ``k = floor(timestamp(item) / size_s)``.
    The wall clock and the scheduler play no part: only the items' own timestamps move windows
    forward.

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
    return sliding_event_time_window(
        size_s, size_s, timestamp=timestamp, key=key, allowed_lateness_s=allowed_lateness_s
    )
