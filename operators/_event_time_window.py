"""Sliding (hopping) and tumbling windows over *event* time, with a per-key watermark and explicit late items."""

from __future__ import annotations

import asyncio
import heapq
import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from reactivex import Observable, abc
from reactivex.abc import ObserverBase
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable, SingleAssignmentDisposable

from reactive_services.adapters import Hold, Message, current_message

from ._changelog import ChangelogStore
from ._commit_hold import HeldRecords
from ._scheduling import pick_scheduler

__all__ = ["Window", "WindowRunner", "sliding_event_time_window", "tumbling_event_time_window"]

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


_SET_KEY, _SET_START, _SET_END, _SET_ITEMS, _SET_LATE = (Window.__dict__[name].__set__ for name in Window.__slots__)


def _new_window(key: Hashable, start: float, end: float, items: tuple[T, ...], late: tuple[T, ...]) -> Window[T]:
    """``Window(key, start, end, items, late)`` set through its slots: a frozen dataclass's
    ``__init__`` goes through ``object.__setattr__`` per field (about 3x the cost, once per
    window emitted)."""
    window: Window[T] = object.__new__(Window)
    _SET_KEY(window, key)
    _SET_START(window, start)
    _SET_END(window, end)
    _SET_ITEMS(window, items)
    _SET_LATE(window, late)
    return window


class _KeyState(Generic[T]):
    """Open windows and watermark of one key (of one input partition, with a checkpoint)."""

    __slots__ = (
        "key",
        "order",
        "partition",
        "watermark",
        "open",
        "holds",
        "heap",
        "late",
        "late_holds",
        "replay",
        "emitted_through",
        "resume",
        "last_offset",
        "written",
        "close_at",
        "hot_start",
        "hot_end",
        "hot_items",
        "hot_held",
    )

    def __init__(self, key: Hashable, order: int, partition: Hashable = None) -> None:
        self.key = key  # the Window's key
        self.order = order  # first-seen rank of the key, to order the final flush
        self.partition = partition  # the partition its items come from (watermark="partition", checkpoints)
        self.watermark = -math.inf
        self.open: dict[int, list[T]] = {}  # window index -> items, for the windows that have items
        self.holds: dict[int, HeldRecords] = {}  # window index -> the commits its items hold back
        self.heap: list[int] = []  # the same indices, smallest first (ends grow with the index)
        self.late: list[T] = []
        self.late_holds: HeldRecords | None = None  # the commits the late items hold back (made when needed)
        self.replay: _Replay | None = None  # checkpoint= only
        self.emitted_through = -math.inf  # the end of the last window emitted (restored too)
        self.resume = -1  # restored: offsets below it were accounted for before the restart
        self.last_offset = -1
        #: checkpoint= only: settles when the key's latest checkpoint write is done (each write
        #: waits for the one before it: see _WindowRun.checkpoint_of)
        self.written: asyncio.Future[None] | None = None
        self.close_at = math.inf  # the end of the oldest open window (key watermark): it closes then
        # tumbling windows, no checkpoint, no idle timeout: the window the last item went into,
        # where the next items of the key most likely go (see _WindowRun.on_item)
        self.hot_start = math.inf
        self.hot_end = -math.inf
        self.hot_items: list[T] = []
        self.hot_held: HeldRecords | None = None


class _Replay:
    """checkpoint= only: the input offsets behind a key's open windows and late items."""

    __slots__ = ("offsets", "late_offsets", "refs", "wm_at")

    def __init__(self) -> None:
        self.offsets: dict[int, list[int]] = {}  # window index -> offsets of its items
        self.late_offsets: list[int] = []
        self.refs: Counter[int] = Counter()  # offset -> windows (and late list) holding it
        self.wm_at: dict[int, float] = {}  # offset -> the watermark when it arrived


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
    checkpoint: ChangelogStore | None = None,
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

    ``checkpoint`` (a :class:`ChangelogStore`; ``watermark="key"`` only): fed by a broker source,
    each key of each input partition writes, with every window it emits, where a replay must
    resume: the oldest offset still in an open window (or late), the key's watermark when that
    record arrived, and the end of the last window published. The writes are tracked with the
    window's output, so they are durable before the offsets they cover are committed. After a
    crash or a rebalance, the first records of a partition wait (held) until its checkpoints are
    read; then records below a key's resume offset are skipped (they are in windows already
    published), the key's watermark is restored, and windows published before are not published
    again: every record is counted once in the published windows, although records are
    redelivered (at-least-once input, effectively-once windows). A key must come from one
    partition (as with a message key); its state is kept per partition.

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
    if checkpoint is not None and watermark != "key":
        raise ValueError("checkpoint needs watermark='key' (a partition watermark is not checkpointed yet)")
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
        if span == 1:  # tumbling: end_of(last) == start_of(last + 1) > event_time, one window
            return last, last
        first = min(math.floor((event_time - size_s) / slide_s) + 1, last)
        while end_of(first - 1) > event_time:
            first -= 1
        while end_of(first) <= event_time:  # stops at last at the latest: end_of(last) > event_time
            first += 1
        return first, last

    shape = _Shape(start_of, end_of, indices, tumbling=span == 1)

    def runner(
        observer: abc.ObserverBase[Window[T]], source: Observable[T] | None, scheduler: abc.SchedulerBase | None
    ) -> _WindowRun[T]:
        return _WindowRun(
            observer,
            source,
            pick_scheduler(scheduler_, scheduler) if idle_timeout_s is not None else None,
            scheduler,
            shape,
            timestamp,
            key_of,
            allowed_lateness_s,
            watermark,
            idle_timeout_s,
            checkpoint,
        )

    def operator(source: Observable[T]) -> Observable[Window[T]]:
        def subscribe(
            observer: abc.ObserverBase[Window[T]],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            return runner(observer, source, scheduler).subscription

        return Observable(subscribe)

    operator.runner = runner  # type: ignore[attr-defined]  # see WindowRunner
    return operator


class WindowRunner(Generic[T]):
    """An event-time window operator driven directly, one item at a time, rather than subscribed
    to an Observable: for a pipeline that works per fetch (``Observable[Batch]`` from
    ``source_batches`` or ``@event_pattern(..., batches=True)``), which hands over the items of a
    batch as it goes through them, each with its record's offset.

    Everything :func:`sliding_event_time_window` says holds (watermarks, lateness, the idle
    timeout, checkpoints): an item given with the message being delivered (the batch's carrier,
    :data:`~reactive_services.adapters.current_message`) holds that message's commit until every
    window holding the item was emitted and handled downstream, once per window rather than
    once per item when items share a message.

    Example::

        runner = WindowRunner(tumbling_event_time_window(60.0, timestamp=lambda e: e.at), observer)
        def on_batch(batch):  # inside the batch's delivery
            carrier = current_message.get()
            for value, offset in zip(batch.values, batch.offsets):
                runner.on_record(parse(value), carrier, offset)

    Args:
        operator: what :func:`sliding_event_time_window` or :func:`tumbling_event_time_window`
            returned.
        observer: gets the :class:`Window` s, then ``on_completed`` (after :meth:`on_completed`)
            or ``on_error``.
        scheduler: the clock of ``idle_timeout_s`` (default: the operator's, else the running
            asyncio loop).

    Raises:
        TypeError: ``operator`` is not one of those operators.
    """

    def __init__(
        self,
        operator: Callable[[Observable[T]], Observable[Window[T]]],
        observer: abc.ObserverBase[Window[T]],
        scheduler: abc.SchedulerBase | None = None,
    ) -> None:
        runner = getattr(operator, "runner", None)
        if runner is None:
            raise TypeError(
                f"{operator!r} is not an operator of sliding_event_time_window / tumbling_event_time_window"
            )
        self._run: _WindowRun[T] = runner(observer, None, scheduler)

    def on_record(self, item: T, message: Message | None = None, offset: int = -1) -> None:
        """One item; ``message``: the message being delivered that holds it (None: no commit to
        hold, e.g. in a unit test), ``offset``: its record's offset (checkpoints need it). After
        :meth:`on_completed`, an error or :meth:`dispose`, items are ignored."""
        run = self._run
        if message is not run.message:
            run.holding(message)
        run.on_item(item, offset)

    def feeder(self, message: Message | None) -> Callable[[T, int], None]:
        """``feed(item, offset)``, the same as ``on_record(item, message, offset)`` without
        comparing the message at each call: for the loop over the items of one message (a
        batch's carrier). Valid until :meth:`on_record` or :meth:`feeder` is called with
        another message."""
        run = self._run
        if message is not run.message:
            run.holding(message)
        return run.on_item

    def on_completed(self) -> None:
        """The input ended: every open window is emitted, then ``observer.on_completed()``."""
        self._run.on_completed()

    def on_error(self, error: Exception) -> None:
        """The input failed: ``observer.on_error(error)`` (open windows are not emitted)."""
        self._run.on_error(error)

    def preload(self, partition: tuple[str, int], checkpoints: dict[Hashable, Any]) -> None:
        """The checkpoints of an input partition read already (``ChangelogStore.restore``): used
        instead of reading them again when its first item comes (``checkpoint=`` only)."""
        self._run.restored.setdefault(partition, checkpoints)

    def dispose(self) -> None:
        """Stop: nothing more is emitted nor checkpointed."""
        self._run.subscription.dispose()


@dataclass(frozen=True, slots=True)
class _Shape:
    """The window arithmetic of one operator (bounds from indices, indices from an event time)."""

    start_of: Callable[[int], float]
    end_of: Callable[[int], float]
    indices: Callable[[float], tuple[int, int]]
    tumbling: bool = False  # every event time is in exactly one window


class _WindowRun(Generic[T]):
    """The state of one subscription of :func:`sliding_event_time_window`."""

    def __init__(
        self,
        observer: abc.ObserverBase[Window[T]],
        source: Observable[T] | None,
        timer_scheduler: abc.SchedulerBase | None,
        subscribe_scheduler: abc.SchedulerBase | None,
        shape: _Shape,
        timestamp: Callable[[T], float],
        key_of: Callable[[T], Hashable],
        lateness: float,
        watermark: str,
        idle_timeout_s: float | None,
        checkpoint: ChangelogStore | None,
    ) -> None:
        self.observer = observer
        self.shape = shape
        self.timestamp = timestamp
        self.key_of = key_of
        self.lateness = lateness
        self.by_partition = watermark == "partition"
        self.idle_timeout_s = idle_timeout_s
        self.timer_scheduler = timer_scheduler
        self.checkpoint = checkpoint
        self.states: dict[Hashable, _KeyState[T]] = {}
        self.keys_seen = 0
        # watermark="partition": one watermark per partition, and its open windows of every key
        self.partition_watermarks: dict[Hashable, float] = {}
        self.partition_heaps: dict[Hashable, list[tuple[int, int, Hashable]]] = {}
        # idle_timeout_s: keys by their last item, oldest first (processing time of the scheduler)
        self.last_seen: OrderedDict[Hashable, float] = OrderedDict()
        self.timer = SerialDisposable()
        self.timer_due: float | None = None
        # checkpoint=: partitions restored, being restored (with the items waiting meanwhile)
        self.restored: dict[Hashable, dict[Hashable, Any]] = {}
        #: per partition: (item, its record's offset, the message holding it, its hold)
        self.waiting: dict[Hashable, list[tuple[T, int, Message, Hold]]] = {}
        self.complete_when_restored = False
        #: the message holding the items given now, and its (topic, partition) (:meth:`holding`)
        self.message: Message | None = None
        self.part: Hashable = None
        #: the fast path of on_item: tumbling windows, key watermarks, no checkpoint, no timer
        self.fast = shape.tumbling and not self.by_partition and checkpoint is None and idle_timeout_s is None
        self.lock = threading.RLock()
        self.stopped = False
        upstream = SingleAssignmentDisposable()
        # disposed: nothing more is emitted nor checkpointed (a restore still running stops there)
        self.subscription = CompositeDisposable(upstream, self.timer, Disposable(self.disposed))
        if source is not None:
            upstream.disposable = source.subscribe(
                self.on_next, self.on_error, self.on_completed, scheduler=subscribe_scheduler
            )

    def disposed(self) -> None:
        with self.lock:
            self.stopped = True
            self.waiting.clear()

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, state: _KeyState[T], index: int) -> None:
        items = state.open.pop(index)
        if items is state.hot_items:  # not kept alive as the hot window (a newer one may be hot already)
            state.hot_start, state.hot_end, state.hot_items, state.hot_held = math.inf, -math.inf, [], None
        held = state.holds.pop(index)
        late = tuple(state.late)
        state.late.clear()
        if state.late_holds is not None:
            held.merge(state.late_holds)
        shape = self.shape
        end = shape.end_of(index)
        if self.checkpoint is None or state.partition is None:
            window = _new_window(state.key, shape.start_of(index), end, tuple(items), late)
            held.emit(self.observer, window)
            return
        replay = state.replay
        assert replay is not None
        for offset in (*replay.offsets.pop(index), *replay.late_offsets):
            replay.refs[offset] -= 1
            if replay.refs[offset] <= 0:
                del replay.refs[offset]
                replay.wm_at.pop(offset, None)
        replay.late_offsets.clear()
        write = self.checkpoint_of(state, emitted=end)
        if end <= state.emitted_through:  # published before a restart: its records are accounted for
            held.emit(_Ignore(), None, also=write)
            return
        state.emitted_through = end
        window = _new_window(state.key, shape.start_of(index), end, tuple(items), late)
        held.emit(self.observer, window, also=write)

    def checkpoint_of(self, state: _KeyState[T], *, emitted: float) -> Callable[[], Awaitable[Any]]:
        """The changelog write of ``state`` after a window ending at ``emitted`` went out.

        ``resume``: the oldest offset still held by an open window or the late items (they are
        redelivered after a crash: replay starts there); ``watermark``: the key's watermark when
        that record arrived, so that the replay takes the same decisions; ``emitted_through``: the
        windows ending at or before it were published (a replay does not publish them again).
        """
        assert self.checkpoint is not None and state.partition is not None
        replay = state.replay
        if replay is not None and replay.refs:
            resume = min(replay.refs)
            watermark = replay.wm_at[resume]
        else:  # nothing open: replay starts after the last record, from the watermark now
            resume = state.last_offset + 1
            watermark = max(state.watermark, emitted, state.emitted_through)
        topic: str = state.partition[0]  # type: ignore[index]
        partition: int = state.partition[1]  # type: ignore[index]
        value = {
            "resume": resume,
            "watermark": _json_float(watermark),
            "emitted_through": _json_float(max(emitted, state.emitted_through)),
        }
        store, key = self.checkpoint, state.key
        # The write runs once this output went out (HeldRecords.emit's ``also``), and after the
        # key's previous write, which ran once the previous output went out: so a checkpoint
        # saying "emitted through E" is written only when every window of the key ending at or
        # before E was published, although outputs may settle out of order.
        previous = state.written
        try:
            done: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()
        except RuntimeError:  # no loop: nothing runs the write in order (nor at all)
            done = None
        if done is not None:
            done.add_done_callback(_retrieve)
            state.written = done

        async def write() -> None:
            try:
                if previous is not None:
                    await previous
                await store.put(topic, partition, key, value)
            except BaseException as exc:
                if done is not None and not done.done():
                    failure = exc if isinstance(exc, Exception) else RuntimeError("checkpoint write cancelled")
                    done.set_exception(failure)
                raise
            if done is not None and not done.done():
                done.set_result(None)

        return write

    def emit_late_alone(self, state: _KeyState[T], item: T, first: int, last: int) -> None:
        """A too-late item of a key with no open window: at once, in a window of its own (no items)."""
        held = HeldRecords()
        held.add()
        start, end = self.shape.start_of(first), self.shape.end_of(last)
        window = _new_window(state.key, start, end, (), (item,))
        if self.checkpoint is None or state.partition is None:
            held.emit(self.observer, window)
        else:
            held.emit(self.observer, window, also=self.checkpoint_of(state, emitted=state.emitted_through))

    def forget_if_empty(self, skey: Hashable, state: _KeyState[T]) -> None:
        """watermark="partition": a key with nothing open costs nothing (its lateness is the partition's)."""
        if self.by_partition and not state.open and not state.late:
            del self.states[skey]
            self.last_seen.pop(skey, None)

    # -- items ----------------------------------------------------------------------------------
    def on_next(self, item: T) -> None:
        message = current_message.get()
        if message is not self.message:
            self.holding(message)
        self.on_item(item, -1 if message is None else message.offset)

    def holding(self, message: Message | None) -> None:
        """The next items are held by ``message`` (a batch's carrier, or their own record's; None:
        no commit to hold)."""
        self.message = message
        self.part = None if message is None else (message.topic, message.partition)

    def on_item(self, item: T, offset: int) -> None:
        """One item of :attr:`message` (see :meth:`holding`), ``offset`` the offset of its record.
        Items that share a message hold its commit once per window."""
        message, part = self.message, self.part
        if self.fast:  # no timer thread: no lock (calls of on_next are serialized, Rx grammar)
            if self.stopped:
                return
            try:
                event_time = float(self.timestamp(item))
                state = self.states.get(self.key_of(item))
            except Exception:  # noqa: BLE001 - process() calls them again and reports it
                state = None
            if state is not None and state.hot_start <= event_time < state.hot_end:
                # in the window the key's last item went into, which is open (so this one is on
                # time) and the only one holding it (tumbling)
                state.hot_items.append(item)
                held = state.hot_held
                assert held is not None
                if message is not held._last:  # the records of one batch share a message: held once
                    held.add(message)
                moved = event_time - self.lateness
                if moved > state.watermark:
                    state.watermark = moved
                    if moved >= state.close_at:
                        with self.lock:
                            self.close_key(state, moved)
                return
        with self.lock:
            if self.stopped:
                return
            if self.checkpoint is not None and message is not None and part not in self.restored:
                self.wait_for_restore(item, offset, message, part)
                return
            self.process(item, message, part, offset)

    def wait_for_restore(self, item: T, offset: int, message: Message, part: Hashable) -> None:
        """The first items of a partition wait (held) until its checkpoints are read."""
        queue = self.waiting.get(part)
        if queue is None:
            queue = self.waiting[part] = []
            asyncio.get_running_loop().create_task(self.restore(part))
        queue.append((item, offset, message, message.hold()))

    async def restore(self, part: Hashable) -> None:
        assert self.checkpoint is not None
        try:
            found = await self.checkpoint.restore({part})  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the operator cannot go on without its state
            with self.lock:
                if not self.stopped:
                    self.fail(exc, dispose=True)
            return
        with self.lock:
            if self.stopped:
                return
            self.restored[part] = found.get(part, {})  # type: ignore[call-overload]
            for item, offset, message, hold in self.waiting.pop(part, []):
                token = current_message.set(message)
                try:
                    self.process(item, message, part, offset)
                finally:
                    current_message.reset(token)
                hold.release()
                if self.stopped:
                    return
            if self.complete_when_restored and not self.waiting:
                self.complete()

    def process(self, item: T, message: Message | None, part: Hashable, offset: int) -> None:
        try:
            event_time = float(self.timestamp(item))
            if not math.isfinite(event_time):
                raise ValueError(f"timestamp must be finite, got {event_time!r} for {item!r}")
            k = self.key_of(item)
            first, last = self.shape.indices(event_time)
        except Exception as exc:  # a user callback failed: stop and report
            self.fail(exc, dispose=True)
            return
        checkpointed = self.checkpoint is not None and message is not None
        skey: Hashable = (part, k) if checkpointed else k
        state = self.states.get(skey)
        if state is None:
            self.keys_seen += 1
            state = self.states[skey] = _KeyState(k, self.keys_seen, part)
            if checkpointed:
                self.restore_key(state, part, k)
        if checkpointed:
            if offset < state.resume:  # accounted for in windows published before the restart
                state.last_offset = max(state.last_offset, offset)
                return
            state.last_offset = offset
        if self.idle_timeout_s is not None:
            self.touch(skey)
        end_of = self.shape.end_of
        watermark = self.partition_watermarks.get(part, -math.inf) if self.by_partition else state.watermark
        if end_of(last) <= watermark:  # every window holding it has closed: too late
            if not state.open:  # no window of its key to carry it (partition watermark, idle flush)
                self.emit_late_alone(state, item, first, last)
                self.forget_if_empty(skey, state)
            else:
                state.late.append(item)
                if state.late_holds is None:
                    state.late_holds = HeldRecords()
                state.late_holds.add(message)
                if checkpointed:
                    self.reference(state, offset, watermark).late_offsets.append(offset)
            return
        for index in range(first, last + 1):
            if end_of(index) <= watermark:
                continue  # closed already (partially late item): only the open ones get it
            bucket = state.open.get(index)
            if bucket is None:
                state.open[index] = [item]
                state.holds[index] = held = HeldRecords()
                if checkpointed:
                    self.replay_of(state).offsets[index] = []
                if self.by_partition:
                    heapq.heappush(self.partition_heaps.setdefault(part, []), (index, state.order, skey))
                else:
                    heapq.heappush(state.heap, index)
                    state.close_at = end_of(state.heap[0])
                bucket = state.open[index]
            else:
                bucket.append(item)
                held = state.holds[index]
            held.add(message)
            if self.fast:  # tumbling: this item's only window; the next items likely go there too
                state.hot_start, state.hot_end = self.shape.start_of(index), end_of(index)
                state.hot_items, state.hot_held = bucket, held
            if checkpointed:
                self.reference(state, offset, watermark).offsets[index].append(offset)
        # A partially late item is behind the watermark, so only an on-time one moves it.
        moved = max(watermark, event_time - self.lateness)
        if self.by_partition:
            self.partition_watermarks[part] = moved
            self.close_partition(part, moved)
        else:
            state.watermark = moved
            if moved >= state.close_at:
                self.close_key(state, moved)

    def close_key(self, state: _KeyState[T], watermark: float) -> None:
        """Emit the key's open windows that end at or before ``watermark``, oldest first."""
        heap, end_of = state.heap, self.shape.end_of
        while heap and end_of(heap[0]) <= watermark:  # smallest start first
            self.emit(state, heapq.heappop(heap))
        state.close_at = end_of(heap[0]) if heap else math.inf

    @staticmethod
    def replay_of(state: _KeyState[T]) -> _Replay:
        if state.replay is None:
            state.replay = _Replay()
        return state.replay

    def reference(self, state: _KeyState[T], offset: int, watermark: float) -> _Replay:
        """Count one more window (or the late list) holding the record at ``offset``."""
        replay = self.replay_of(state)
        if offset not in replay.refs:
            replay.wm_at[offset] = watermark
        replay.refs[offset] += 1
        return replay

    def restore_key(self, state: _KeyState[T], part: Hashable, k: Hashable) -> None:
        """A key first seen since the (re)start: its checkpoint, if any, says where replay resumes."""
        saved = self.restored.get(part, {}).get(_json_key(k))
        if not isinstance(saved, dict):
            return
        state.resume = int(saved.get("resume", -1))
        state.watermark = _float_of(saved.get("watermark"))
        state.emitted_through = _float_of(saved.get("emitted_through"))
        state.last_offset = state.resume - 1

    def close_partition(self, part: Hashable, watermark: float) -> None:
        heap = self.partition_heaps.get(part)
        end_of = self.shape.end_of
        while heap and end_of(heap[0][0]) <= watermark:  # by start, then keys in first-seen order
            index, _order, skey = heapq.heappop(heap)
            state = self.states.get(skey)
            if state is None or index not in state.open:
                continue  # flushed meanwhile (idle timeout)
            self.emit(state, index)
            self.forget_if_empty(skey, state)

    # -- idle keys (processing time) ----------------------------------------------------------------
    def touch(self, skey: Hashable) -> None:
        scheduler = self.timer_scheduler
        assert scheduler is not None and self.idle_timeout_s is not None
        now = scheduler.to_seconds(scheduler.now)
        self.last_seen[skey] = now
        self.last_seen.move_to_end(skey)
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
                skey, seen = next(iter(self.last_seen.items()))
                if seen + self.idle_timeout_s > now:
                    self.arm(seen + self.idle_timeout_s)
                    return
                del self.last_seen[skey]
                state = self.states.get(skey)
                if state is not None:
                    self.flush_key(skey, state)

    def flush_key(self, skey: Hashable, state: _KeyState[T]) -> None:
        """Emit every open window of an idle key (start order), as if its watermark had passed them."""
        indices = sorted(state.open)
        for index in indices:
            self.emit(state, index)
        if indices:  # what arrives later for these windows is late, never a second emission
            state.watermark = max(state.watermark, self.shape.end_of(indices[-1]))
        state.heap.clear()
        state.close_at = math.inf
        self.forget_if_empty(skey, state)

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
            if self.waiting:  # first records of a partition still wait for its checkpoints
                self.complete_when_restored = True
                return
            self.complete()

    def complete(self) -> None:
        self.stopped = True
        self.timer.dispose()
        pending: list[tuple[int, int, _KeyState[T]]] = []
        for state in self.states.values():
            # The last window holding the key's largest event time is always still open
            # (only a later event could have closed it), so late items always find a window.
            for index in state.open:
                pending.append((index, state.order, state))
            state.heap.clear()
        pending.sort(key=lambda entry: (entry[0], entry[1]))
        for index, _order, state in pending:
            self.emit(state, index)
        self.observer.on_completed()


class _Ignore(ObserverBase[Any]):
    """Where a suppressed window's (absent) output goes: nowhere."""

    def on_next(self, value: Any) -> None:
        pass

    def on_error(self, error: Exception) -> None:
        pass

    def on_completed(self) -> None:
        pass


def _json_float(value: float) -> float | str:
    """A float for the changelog's JSON (infinities as strings)."""
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _float_of(value: Any) -> float:
    if isinstance(value, str):
        return float(value)
    return float(value) if isinstance(value, int | float) else -math.inf


def _json_key(key: Hashable) -> Hashable:
    """A key as it reads back from the changelog's JSON (tuples become lists, then tuples)."""
    return tuple(_json_key(k) for k in key) if isinstance(key, tuple | list) else key


def tumbling_event_time_window(
    size_s: float,
    *,
    timestamp: Callable[[T], float],
    key: Callable[[T], Hashable] | None = None,
    allowed_lateness_s: float = 0.0,
    watermark: Literal["key", "partition"] = "key",
    idle_timeout_s: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
    checkpoint: ChangelogStore | None = None,
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
        checkpoint: checkpoint the windows' progress to a changelog, see
            :func:`sliding_event_time_window`.

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
        checkpoint=checkpoint,
    )


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed checkpoint write's outcome as seen (its failure is reported by the hold it fails)."""
    if not future.cancelled():
        future.exception()
