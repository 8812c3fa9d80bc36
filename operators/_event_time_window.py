"""Sliding (hopping) and tumbling windows over *event* time, with a per-key watermark and explicit late items."""

from __future__ import annotations

import heapq
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable, SingleAssignmentDisposable

from reactive_services.adapters import current_message

from ._commit_hold import HeldRecords
from ._scheduling import pick_scheduler

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

    __slots__ = ("order", "partition", "watermark", "open", "holds", "heap", "late", "late_holds")

    def __init__(self, order: int, partition: Hashable = None) -> None:
        self.order = order  # first-seen rank of the key, to order the final flush
        self.partition = partition  # watermark="partition": the partition its items come from
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
    watermark: Literal["key", "partition"] = "key",
    idle_timeout_s: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
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
        watermark: ``"key"`` (default): each key has its own watermark, moved by its own items
            only (keys whose event times differ widely, such as log files of different years,
            do not disturb each other; a key that stops receiving items keeps its windows open
            until completion or ``idle_timeout_s``). ``"partition"``: one watermark per broker
            partition (the partition of the message being delivered,
            :data:`~reactive_services.adapters.current_message`; one for the whole stream outside
            a delivery), moved by every item of that partition, as Kafka Streams' stream time
            does: the windows of *every* key of the partition close when it passes their end,
            and a key with nothing open is forgotten, so memory stays bounded however many
            distinct keys pass (one record each, or an idle key).
        idle_timeout_s: seconds of processing time (the ``scheduler``'s clock) after which a key
            that received no item has its open windows emitted, as if its watermark had passed
            them (so the last window of a quiet source is published); items that arrive later
            for those windows are late. None (default): no timeout. Must be > 0 and finite.
        scheduler: the clock and timers of ``idle_timeout_s`` (a ``TestScheduler`` in tests).
            Default: the subscribe-time scheduler, else the running asyncio loop, else
            reactivex's ``TimeoutScheduler``.

    A too-late item whose key has no open window (after an idle flush, or with
    ``watermark="partition"``) is emitted at once in a window of its own, with no ``items``
    and the item in ``late``, bounded by the windows it belonged to.

    Returns:
        An operator turning ``Observable[T]`` into ``Observable[Window[T]]``.

    Raises:
        ValueError: at construction (the message names the parameter), when ``size_s <= 0``,
            ``slide_s <= 0``, ``slide_s > size_s``, ``allowed_lateness_s < 0`` or
            ``idle_timeout_s <= 0``, or any of them is not finite, or ``watermark`` is neither
            ``"key"`` nor ``"partition"``.

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
    if watermark not in ("key", "partition"):
        raise ValueError(f"watermark must be 'key' or 'partition', got {watermark!r}")
    if idle_timeout_s is not None and not (math.isfinite(idle_timeout_s) and idle_timeout_s > 0):
        raise ValueError(f"idle_timeout_s must be a finite number > 0 or None, got {idle_timeout_s!r}")
    key_of: Callable[[T], Hashable] = key if key is not None else (lambda _item: None)
    scheduler_ = scheduler

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
            return _WindowRun(
                observer,
                source,
                pick_scheduler(scheduler_, scheduler) if idle_timeout_s is not None else None,
                scheduler,
                _Shape(start_of, end_of, indices),
                timestamp,
                key_of,
                allowed_lateness_s,
                watermark,
                idle_timeout_s,
            ).subscription

        return Observable(subscribe)

    return operator


@dataclass(frozen=True, slots=True)
class _Shape:
    """The window arithmetic of one operator (bounds from indices, indices from an event time)."""

    start_of: Callable[[int], float]
    end_of: Callable[[int], float]
    indices: Callable[[float], tuple[int, int]]


class _WindowRun(Generic[T]):
    """The state of one subscription of :func:`sliding_event_time_window`."""

    def __init__(
        self,
        observer: abc.ObserverBase[Window[T]],
        source: Observable[T],
        timer_scheduler: abc.SchedulerBase | None,
        subscribe_scheduler: abc.SchedulerBase | None,
        shape: _Shape,
        timestamp: Callable[[T], float],
        key_of: Callable[[T], Hashable],
        lateness: float,
        watermark: str,
        idle_timeout_s: float | None,
    ) -> None:
        self.observer = observer
        self.shape = shape
        self.timestamp = timestamp
        self.key_of = key_of
        self.lateness = lateness
        self.by_partition = watermark == "partition"
        self.idle_timeout_s = idle_timeout_s
        self.timer_scheduler = timer_scheduler
        self.states: dict[Hashable, _KeyState[T]] = {}
        self.keys_seen = 0
        # watermark="partition": one watermark per partition, and its open windows of every key
        self.partition_watermarks: dict[Hashable, float] = {}
        self.partition_heaps: dict[Hashable, list[tuple[int, int, Hashable]]] = {}
        # idle_timeout_s: keys by their last item, oldest first (processing time of the scheduler)
        self.last_seen: OrderedDict[Hashable, float] = OrderedDict()
        self.timer = SerialDisposable()
        self.timer_due: float | None = None
        self.lock = threading.RLock()
        self.stopped = False
        upstream = SingleAssignmentDisposable()
        self.subscription = CompositeDisposable(upstream, self.timer)
        upstream.disposable = source.subscribe(
            self.on_next, self.on_error, self.on_completed, scheduler=subscribe_scheduler
        )

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, k: Hashable, state: _KeyState[T], index: int) -> None:
        items = state.open.pop(index)
        held = state.holds.pop(index)
        late = tuple(state.late)
        state.late.clear()
        held.merge(state.late_holds)
        shape = self.shape
        window = Window(key=k, start=shape.start_of(index), end=shape.end_of(index), items=tuple(items), late=late)
        held.emit(self.observer, window)

    def emit_late_alone(self, k: Hashable, item: T, first: int, last: int) -> None:
        """A too-late item of a key with no open window: at once, in a window of its own (no items)."""
        held = HeldRecords()
        held.add()
        start, end = self.shape.start_of(first), self.shape.end_of(last)
        held.emit(self.observer, Window(key=k, start=start, end=end, items=(), late=(item,)))

    def forget_if_empty(self, k: Hashable, state: _KeyState[T]) -> None:
        """watermark="partition": a key with nothing open costs nothing (its lateness is the partition's)."""
        if self.by_partition and not state.open and not state.late:
            del self.states[k]
            self.last_seen.pop(k, None)

    # -- items ----------------------------------------------------------------------------------
    def on_next(self, item: T) -> None:
        with self.lock:
            if self.stopped:
                return
            try:
                event_time = float(self.timestamp(item))
                if not math.isfinite(event_time):
                    raise ValueError(f"timestamp must be finite, got {event_time!r} for {item!r}")
                k = self.key_of(item)
                first, last = self.shape.indices(event_time)
            except Exception as exc:  # a user callback failed: stop and report
                self.fail(exc, dispose=True)
                return
            part: Hashable = None
            if self.by_partition:
                message = current_message.get()
                part = None if message is None else (message.topic, message.partition)
            state = self.states.get(k)
            if state is None:
                self.keys_seen += 1
                state = self.states[k] = _KeyState(self.keys_seen, part)
            if self.idle_timeout_s is not None:
                self.touch(k)
            end_of = self.shape.end_of
            watermark = self.partition_watermarks.get(part, -math.inf) if self.by_partition else state.watermark
            if end_of(last) <= watermark:  # every window holding it has closed: too late
                if not state.open:  # no window of its key to carry it (partition watermark, idle flush)
                    self.emit_late_alone(k, item, first, last)
                    self.forget_if_empty(k, state)
                else:
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
                    if self.by_partition:
                        heapq.heappush(self.partition_heaps.setdefault(part, []), (index, state.order, k))
                    else:
                        heapq.heappush(state.heap, index)
                else:
                    bucket.append(item)
                    held = state.holds[index]
                held.add()
            # A partially late item is behind the watermark, so only an on-time one moves it.
            moved = max(watermark, event_time - self.lateness)
            if self.by_partition:
                self.partition_watermarks[part] = moved
                self.close_partition(part, moved)
            else:
                state.watermark = moved
                heap = state.heap
                while heap and end_of(heap[0]) <= moved:  # smallest start first
                    self.emit(k, state, heapq.heappop(heap))

    def close_partition(self, part: Hashable, watermark: float) -> None:
        heap = self.partition_heaps.get(part)
        end_of = self.shape.end_of
        while heap and end_of(heap[0][0]) <= watermark:  # by start, then keys in first-seen order
            index, _order, k = heapq.heappop(heap)
            state = self.states.get(k)
            if state is None or index not in state.open:
                continue  # flushed meanwhile (idle timeout)
            self.emit(k, state, index)
            self.forget_if_empty(k, state)

    # -- idle keys (processing time) ----------------------------------------------------------------
    def touch(self, k: Hashable) -> None:
        scheduler = self.timer_scheduler
        assert scheduler is not None and self.idle_timeout_s is not None
        now = scheduler.to_seconds(scheduler.now)
        self.last_seen[k] = now
        self.last_seen.move_to_end(k)
        if self.timer_due is None:
            self.arm(now + self.idle_timeout_s)

    def arm(self, due: float) -> None:
        scheduler = self.timer_scheduler
        assert scheduler is not None
        self.timer_due = due
        delay = max(0.0, due - scheduler.to_seconds(scheduler.now))
        self.timer.disposable = scheduler.schedule_relative(delay, self.on_timer)

    def on_timer(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        with self.lock:
            self.timer_due = None
            if self.stopped or self.idle_timeout_s is None or self.timer_scheduler is None:
                return
            now = self.timer_scheduler.to_seconds(self.timer_scheduler.now)
            while self.last_seen:
                k, seen = next(iter(self.last_seen.items()))
                if seen + self.idle_timeout_s > now:
                    self.arm(seen + self.idle_timeout_s)
                    return
                del self.last_seen[k]
                state = self.states.get(k)
                if state is not None:
                    self.flush_key(k, state)

    def flush_key(self, k: Hashable, state: _KeyState[T]) -> None:
        """Emit every open window of an idle key (start order), as if its watermark had passed them."""
        indices = sorted(state.open)
        for index in indices:
            self.emit(k, state, index)
        if indices:  # what arrives later for these windows is late, never a second emission
            state.watermark = max(state.watermark, self.shape.end_of(indices[-1]))
        state.heap.clear()
        self.forget_if_empty(k, state)

    # -- the end ----------------------------------------------------------------------------------
    def fail(self, error: Exception, *, dispose: bool = False) -> None:
        self.stopped = True
        self.timer.dispose()
        if dispose:
            self.subscription.dispose()
        self.observer.on_error(error)

    def on_error(self, error: Exception) -> None:
        with self.lock:
            if not self.stopped:
                self.fail(error)

    def on_completed(self) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            self.timer.dispose()
            pending: list[tuple[int, int, Hashable, _KeyState[T]]] = []
            for k, state in self.states.items():
                # The last window holding the key's largest event time is always still open
                # (only a later event could have closed it), so late items always find a window.
                for index in state.open:
                    pending.append((index, state.order, k, state))
                state.heap.clear()
            pending.sort(key=lambda entry: (entry[0], entry[1]))
            for index, _order, k, state in pending:
                self.emit(k, state, index)
            self.observer.on_completed()


def tumbling_event_time_window(
    size_s: float,
    *,
    timestamp: Callable[[T], float],
    key: Callable[[T], Hashable] | None = None,
    allowed_lateness_s: float = 0.0,
    watermark: Literal["key", "partition"] = "key",
    idle_timeout_s: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
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
        watermark: ``"key"`` or ``"partition"``, see :func:`sliding_event_time_window`.
        idle_timeout_s: emit an idle key's open windows after this many seconds of processing
            time without an item (None: never), see :func:`sliding_event_time_window`.
        scheduler: the clock of ``idle_timeout_s``.

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
        size_s,
        size_s,
        timestamp=timestamp,
        key=key,
        allowed_lateness_s=allowed_lateness_s,
        watermark=watermark,
        idle_timeout_s=idle_timeout_s,
        scheduler=scheduler,
    )
