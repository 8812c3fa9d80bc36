"""Marble tests of ``Message`` pipelines in virtual time, with the offsets they commit.

A :class:`MarbleSource` plays a broker source on a :class:`MarbleScheduler` (reactivex's
``TestScheduler``, one tick = one second): the records of a marble string arrive at their
virtual times and are delivered the way ``Broker.source`` delivers them, and the source records
*when each offset is committed*, following the library's rule: a message's offset is committed
once its ``on_next`` returned and the work ``track()``-ed on it settled, and never past a
message still in flight in its partition
(:class:`~reactive_services.adapters.OffsetTracker`).

:func:`run_marbles` runs a whole case: input marbles, a pipeline function
``Observable[Message] -> Observable[T]``, and returns the output and the commits as
recordings that :meth:`MarbleRun.assert_output` / :meth:`MarbleRun.assert_commits` compare
with marbles; :func:`expect_marbles` does both in one call::

    async def store(m: Message) -> int:
        await scheduler.wait(3)              # 3 s of virtual time, e.g. a database write
        return m.value

    scheduler = MarbleScheduler()
    expect_marbles(
        "-a-b-|",
        lambda source: source.pipe(map_async(store)),
        values={"a": 1, "b": 2},
        scheduler=scheduler,
        output="----1--(2,|)",    # b is delivered once a settled (concurrency=1): at 4, out at 7
        commits="----a--b",       # each offset committed once its result was emitted
    )

Marble notation is reactivex's: one character per ``timespan`` seconds (1 by default), ``-``
lets time pass, ``|`` completes, ``#`` fails, ``(a,b)`` emits several values at the position of
its ``(``; an element or group takes as many time steps as it has characters, and spaces are
ignored (they only align diagrams). Frame 0 is the subscription, at virtual time 200 (as
reactivex's ``TestScheduler.start`` and ``marbles_testing``), so expectations written with
``ReactiveTest.on_next(210, ...)`` compare too.

In the commit marbles, each element is the name of an input record, placed at the time that
record's offset became committed (the records committed together form a group, in any
order). :attr:`MarbleRun.committed` has the same as :class:`Commit` values with offsets.

Everything runs on one asyncio loop: asyncio work started by the pipeline (``map_async``
tasks, ``track``-ed futures, ``CommitHold`` releases) runs to a standstill between two
scheduled actions, so it takes no virtual time; work that waits for the wall clock
(``asyncio.sleep(0.1)``) never settles here: wait in virtual time with
:meth:`MarbleScheduler.wait`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.notification import Notification, OnCompleted, OnError, OnNext
from reactivex.observable.marbles import parse
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from reactive_services.adapters import Message, OffsetTracker, deliver

from ._messages import make_message

__all__ = [
    "SUBSCRIBED",
    "Commit",
    "MarbleRun",
    "MarbleScheduler",
    "MarbleSource",
    "expect_marbles",
    "marble_records",
    "run_marbles",
    "run_marbles_async",
]

T = TypeVar("T")

#: The virtual time (seconds) of frame 0: when :func:`run_marbles` subscribes the pipeline.
SUBSCRIBED = 200.0
#: The virtual time (seconds) at which :func:`run_marbles` disposes the pipeline by default.
DISPOSED = 1000.0
#: Event-loop turns at most between two scheduled actions (a pipeline spinning for ever stops there).
_MAX_TURNS = 10_000

Name = str | int | float


class MarbleScheduler(TestScheduler):
    """reactivex's ``TestScheduler`` (virtual seconds) that :func:`run_marbles` can step one action at a time."""

    __test__ = False  # not a pytest test class

    def step(self) -> bool:
        """Run the next scheduled action, moving the clock forward to its time.

        Returns:
            False when nothing is scheduled any more.
        """
        with self._lock:
            if not self._queue:
                return False
            item = self._queue.dequeue()
            if item.duetime > self.now:
                self._clock = self.to_seconds(item.duetime)
        if not item.is_cancelled():
            item.invoke()
        return True

    def wait(self, seconds: float) -> Awaitable[None]:
        """An awaitable (on the running loop) that finishes when ``seconds`` of virtual time have passed.

        Example::

            async def write(m: Message) -> None:
                await scheduler.wait(2.5)     # the write takes 2.5 virtual seconds

        Raises:
            RuntimeError: no asyncio loop is running in this thread.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def fire(_scheduler: abc.SchedulerBase, _state: Any = None) -> None:
            if not future.done():
                future.set_result(None)

        self.schedule_relative(seconds, fire)
        return future


@dataclass(frozen=True, slots=True)
class Commit:
    """A committed offset, as :attr:`MarbleSource.committed` records it.

    Attributes:
        time: the virtual time of the commit (seconds).
        topic: the topic.
        partition: the partition.
        offset: the committed offset: the next offset to read (one past the last handled).
    """

    time: float
    topic: str
    partition: int
    offset: int


def marble_records(
    marbles: str,
    values: Mapping[Any, Any] | None = None,
    *,
    timespan: float = 1.0,
    error: Exception | None = None,
) -> list[Recorded[Any]]:
    """The recordings a marble string stands for, frame 0 at :data:`SUBSCRIBED`.

    Example::

        >>> marble_records("-a-(b,|)", {"a": 1, "b": 2})
        [OnNext(1.0)@201.0, OnNext(2.0)@203.0, OnCompleted()@203.0]

    Args:
        marbles: reactivex marble notation (see the module docstring).
        values: the value each element stands for (default: the element itself; digits
            become ints).
        timespan: seconds per character.
        error: the exception ``#`` stands for (default ``Exception("error")``).

    Returns:
        ``Recorded`` notifications, comparable with a ``MockObserver``'s ``messages``.

    Raises:
        ValueError: the string is not valid marble notation (a comma outside a group).
    """
    # reactivex types Recorded.time as int; a TestScheduler's times are float seconds
    return [Recorded(time, note) for time, note in _parse(marbles, values, timespan, error)]  # type: ignore[arg-type]


def _parse(
    marbles: str, values: Mapping[Any, Any] | None, timespan: float, error: Exception | None
) -> list[tuple[float, Notification[Any]]]:
    return [
        (float(time), note)  # type: ignore[arg-type]  # parse gives float seconds for float arguments
        for time, note in parse(marbles, timespan=timespan, time_shift=SUBSCRIBED, lookup=values, error=error)
    ]


@dataclass
class _Record:
    name: Name
    message: Message
    epoch: int = 0


class MarbleSource(Observable[Message]):
    """A hot source of :class:`~reactive_services.adapters.Message` from a marble string, delivering and
    committing as a broker source does.

    Each element of ``marbles`` is one record, arriving at its virtual time (hot: the times are
    absolute, not counted from the subscription). The record's ``value`` is ``values[name]``
    (default: the name itself); when ``values[name]`` is a ``Message`` (e.g. from
    :func:`make_message`) its topic, partition, key, headers and timestamp are used. Offsets are
    assigned per partition in arrival order from ``first_offset``; ``timestamp_ms`` is the
    arrival time (virtual ms) unless the template sets one.

    Delivery follows ``Broker.source(..., concurrency=K)``: a record is delivered (with
    ``current_message`` set, through :func:`~reactive_services.adapters.deliver`) once it has
    arrived and fewer than ``concurrency`` messages are in flight, in arrival order, and a keyed
    record waits while an earlier one with the same key and partition is in flight. A message
    is in flight from its ``on_next`` until the work tracked on it settled; then its offset
    completes (once the holds an operator took on it, :meth:`Message.hold`, were released too:
    a held message no longer counts against ``concurrency``), and the committed offset of its
    partition moves up to the lowest offset not completed (committed at once: a broker with no
    commit interval).

    Ending: ``|`` completes the stream once every record arrived was delivered and settled
    (after the last commit); ``#`` is a broker failure: ``on_error(error)`` at once, nothing
    more is delivered or committed. A tracked work that fails, or an ``on_next`` that raises,
    ends the stream with that error; that offset and the ones after it in its partition stay
    uncommitted, while messages already in flight that settle later still commit below it.
    Disposing the subscription stops delivery and commits.

    One subscription at a time (a consumer group of one member); a second subscriber gets
    ``on_error(RuntimeError)`` (use ``ops.share()`` to feed several branches).

    Without a running asyncio loop nothing can be tracked: each offset is committed right after
    its ``on_next`` returned.

    Attributes:
        commits: ``Recorded`` ``on_next(name)`` notifications: when each record's offset was committed.
        committed: the same as :class:`Commit` values (one per move of a partition's committed offset).
        delivered: the messages delivered so far, in order.
    """

    def __init__(
        self,
        scheduler: TestScheduler,
        marbles: str,
        values: Mapping[Any, Any] | None = None,
        *,
        topic: str = "t",
        partition: int = 0,
        first_offset: int = 0,
        concurrency: int = 1,
        timespan: float = 1.0,
        error: Exception | None = None,
    ) -> None:
        super().__init__()
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.scheduler = scheduler
        self.concurrency = concurrency
        self.commits: list[Recorded[Any]] = []
        self.committed: list[Commit] = []
        self.delivered: list[Message] = []
        self._first_offset = first_offset
        self._tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
        self._positions: dict[tuple[str, int], int] = {}
        self._names: dict[tuple[str, int, int], Name] = {}
        self._arrived: deque[_Record] = deque()
        self._pending_arrivals = 0
        self._end_seen = False
        self._observer: abc.ObserverBase[Message] | None = None
        self._stopped = False  # no more deliveries nor notifications
        self._frozen = False  # no more commits either
        self._completed_sent = False
        self._in_flight = 0
        self._busy_keys: set[tuple[str, int, bytes]] = set()
        next_offset: dict[tuple[str, int], int] = {}
        for time, note in _parse(marbles, None, timespan, error):
            if isinstance(note, OnNext):
                name: Name = note.value
                template = (values or {}).get(name, name)
                if isinstance(template, Message):  # a copy: tracking on it must not touch the template
                    msg = make_message(
                        template.value,
                        topic=template.topic,
                        partition=template.partition,
                        key=template.key,
                        headers=template.headers,
                        timestamp_ms=template.timestamp_ms,
                        raw=template.raw,
                    )
                else:
                    msg = make_message(template, topic=topic, partition=partition)
                tp = (msg.topic, msg.partition)
                msg.offset = next_offset.get(tp, first_offset)
                next_offset[tp] = msg.offset + 1
                if msg.timestamp_ms == 0:
                    msg.timestamp_ms = round(time * 1000)
                self._names[(msg.topic, msg.partition, msg.offset)] = name
                self._pending_arrivals += 1
                scheduler.schedule_absolute(time, self._arrival(_Record(name, msg)))
            else:
                scheduler.schedule_absolute(time, self._ending(note))

    # ------------------------------------------------------------------ subscription

    def _subscribe_core(
        self, observer: abc.ObserverBase[Message], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if self._observer is not None:
            observer.on_error(RuntimeError("MarbleSource takes one subscriber at a time (use ops.share())"))
            return Disposable()
        self._observer = observer
        self._pump()

        def dispose() -> None:
            # after a completion (reactivex disposes then) the holds released by the operators'
            # final outputs still commit, as a broker source commits them before it stops
            self._stopped = True
            self._frozen = self._frozen or not self._completed_sent
            self._observer = None

        return Disposable(dispose)

    # ------------------------------------------------------------------ scheduled input

    def _arrival(self, record: _Record) -> Callable[[abc.SchedulerBase, Any], None]:
        def arrive(_scheduler: abc.SchedulerBase, _state: Any = None) -> None:
            self._pending_arrivals -= 1
            self._arrived.append(record)
            self._pump()

        return arrive

    def _ending(self, note: Notification[Any]) -> Callable[[abc.SchedulerBase, Any], None]:
        def end(_scheduler: abc.SchedulerBase, _state: Any = None) -> None:
            if isinstance(note, OnError):
                self._frozen = True
                self._fail(note.exception)
            elif isinstance(note, OnCompleted):
                self._end_seen = True
                self._complete_if_done()

        return end

    # ------------------------------------------------------------------ delivery

    def _pump(self) -> None:
        while (
            self._observer is not None
            and not self._stopped
            and self._arrived
            and self._in_flight < self.concurrency
            and not self._key_busy(self._arrived[0].message)
        ):
            self._deliver(self._arrived.popleft())
        self._complete_if_done()

    def _key_busy(self, msg: Message) -> bool:
        return msg.key is not None and (msg.topic, msg.partition, msg.key) in self._busy_keys

    def _deliver(self, record: _Record) -> None:
        msg = record.message
        tp = (msg.topic, msg.partition)
        if tp not in self._positions:
            self._tracker.assign(tp, self._first_offset)
            self._positions[tp] = self._first_offset
        record.epoch = self._tracker.start(tp, msg.offset)
        self._in_flight += 1
        if msg.key is not None:
            self._busy_keys.add((msg.topic, msg.partition, msg.key))
        self.delivered.append(msg)
        assert self._observer is not None
        try:
            deliver(self._observer, msg)
        except Exception as exc:  # the Observer failed: the offset stays uncommitted
            self._release(msg)
            self._fail(exc)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # nothing can have been tracked
            self._settled(record)
            return
        task = loop.create_task(msg.settled())
        task.add_done_callback(lambda t: self._on_settled(record, t))

    def _on_settled(self, record: _Record, task: asyncio.Task[None]) -> None:
        if task.cancelled():  # the hold was cancelled (the pipeline was disposed): not handled
            self._release(record.message)
            return
        error = task.exception()
        if error is not None:
            self._release(record.message)
            self._fail(error)
            return
        msg = record.message
        if msg._holds:  # handled, but an operator keeps it: free its place, commit it later
            self._release(msg)
            released = asyncio.get_running_loop().create_task(msg.released())
            released.add_done_callback(lambda t: self._on_released(record, t))
            self._pump()
            return
        self._settled(record)

    def _on_released(self, record: _Record, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._fail(error)
            return
        self._completed(record)

    def _release(self, msg: Message) -> None:
        self._in_flight -= 1
        if msg.key is not None:
            self._busy_keys.discard((msg.topic, msg.partition, msg.key))

    def _settled(self, record: _Record) -> None:
        self._release(record.message)
        self._completed(record)

    def _completed(self, record: _Record) -> None:
        if self._frozen:
            return
        msg = record.message
        tp = (msg.topic, msg.partition)
        self._tracker.complete(tp, msg.offset, record.epoch)
        self._commit()
        self._pump()

    def _commit(self) -> None:
        now = float(self.scheduler.clock)  # a TestScheduler's clock is in seconds
        for tp in self._tracker.partitions():
            position = self._tracker.committable(tp)
            previous = self._positions[tp]
            if position is None or position <= previous:
                continue
            for offset in range(previous, position):
                name = self._names.get((tp[0], tp[1], offset))
                if name is not None:
                    self.commits.append(Recorded(now, OnNext(name)))  # type: ignore[arg-type]  # reactivex says int; seconds
            self.committed.append(Commit(now, tp[0], tp[1], position))
            self._positions[tp] = position

    def _complete_if_done(self) -> None:
        if (
            self._end_seen
            and self._observer is not None
            and not self._stopped
            and not self._arrived
            and self._pending_arrivals == 0
            and self._in_flight == 0
        ):
            self._stopped = True
            self._completed_sent = True
            self._observer.on_completed()

    def _fail(self, error: BaseException) -> None:
        if self._stopped or self._observer is None:
            return
        self._stopped = True
        exc = error if isinstance(error, Exception) else RuntimeError(repr(error))
        self._observer.on_error(exc)


@dataclass
class MarbleRun:
    """What :func:`run_marbles` observed.

    Attributes:
        output: the pipeline's notifications as ``Recorded`` (time in virtual seconds).
        commits: when each input record's offset was committed: ``Recorded`` ``on_next(name)``.
        committed: the committed offsets as :class:`Commit` values.
        delivered: the messages the source delivered, in order.
        timespan: seconds per marble character.
    """

    output: list[Recorded[Any]]
    commits: list[Recorded[Any]]
    committed: list[Commit]
    delivered: list[Message]
    timespan: float = 1.0
    values: Mapping[Any, Any] = field(default_factory=dict)

    def assert_output(
        self, marbles: str, values: Mapping[Any, Any] | None = None, *, error: Exception | None = None
    ) -> None:
        """Assert that the pipeline emitted exactly what ``marbles`` shows, at those times, in that order.

        Args:
            marbles: the expected output (frame 0 = the subscription).
            values: the value of each element (default: the element; digits are ints).
            error: the exception ``#`` stands for; compared by ``str()`` as reactivex does.

        Raises:
            AssertionError: a difference; the message shows both sides as marbles (when they
                can be drawn) and as lists.
        """
        expected = marble_records(marbles, values, timespan=self.timespan, error=error)
        if self.output != expected:
            names = {_key(v): k for k, v in (values or {}).items()}
            raise AssertionError(
                "output differs\n"
                + _describe("expected", expected, self.timespan, names)
                + _describe("actual", self.output, self.timespan, names)
            )

    def assert_commits(self, marbles: str) -> None:
        """Assert that each input record's offset was committed at the time ``marbles`` shows it.

        Each element of ``marbles`` names an input record (as in the input marbles); records
        committed at the same time form a group, in any order. A record missing from
        ``marbles`` must never have been committed.

        Example::

            run.assert_commits("----a---(b,c)")   # a at 4; b and c together at 8

        Raises:
            AssertionError: a commit came earlier, later or not at all; the message shows both sides.
        """
        expected = marble_records(marbles, timespan=self.timespan)
        if _canonical(self.commits) != _canonical(expected):
            raise AssertionError(
                "commits differ\n"
                + _describe("expected", expected, self.timespan, {})
                + _describe("actual", self.commits, self.timespan, {})
            )


def _canonical(records: list[Recorded[Any]]) -> list[tuple[float, str]]:
    return sorted((float(r.time), str(r.value)) for r in records)


def _key(value: Any) -> Hashable:
    try:
        hash(value)
        return value  # type: ignore[no-any-return]  # hashable: usable as a key
    except TypeError:
        return repr(value)


def _symbol(note: Any, names: Mapping[Hashable, Name]) -> str:
    if isinstance(note, OnCompleted):
        return "|"
    if isinstance(note, OnError):
        return "#"
    if isinstance(note, OnNext):
        name = names.get(_key(note.value), note.value)
        text = str(name)
        if text and not any(c in text for c in "-(),|# "):
            return text
    return "?"


def _draw(records: list[Recorded[Any]], timespan: float, names: Mapping[Hashable, Name]) -> str | None:
    """The records as a marble string, or None when they do not fit one."""
    frames: dict[int, list[str]] = {}
    for record in records:
        frame = (float(record.time) - SUBSCRIBED) / timespan
        if frame < 0 or frame != int(frame):
            return None
        frames.setdefault(int(frame), []).append(_symbol(record.value, names))
    out, position, previous = "", 0, ""
    for frame in sorted(frames):
        token = frames[frame][0] if len(frames[frame]) == 1 else "(" + ",".join(frames[frame]) + ")"
        if frame < position or (frame == position and _plain(previous) and _plain(token)):
            return None  # too close: "ab" would read as one element
        out += "-" * (frame - position) + token
        position, previous = frame + len(token), token
    return out


def _plain(token: str) -> bool:
    return bool(token) and token not in ("|", "#") and not token.startswith("(")


def _describe(label: str, records: list[Recorded[Any]], timespan: float, names: Mapping[Hashable, Name]) -> str:
    drawn = _draw(records, timespan, names)
    return f"  {label}: {drawn if drawn is not None else '(not drawable)'}\n    {records!r}\n"


async def run_marbles_async(
    source: str,
    pipeline: Callable[[Observable[Message]], Observable[T]],
    values: Mapping[Any, Any] | None = None,
    *,
    scheduler: MarbleScheduler | None = None,
    topic: str = "t",
    partition: int = 0,
    first_offset: int = 0,
    concurrency: int = 1,
    timespan: float = 1.0,
    error: Exception | None = None,
    disposed: float = DISPOSED,
) -> MarbleRun:
    """:func:`run_marbles` on the asyncio loop already running (in an ``async def`` test)."""
    scheduler = scheduler if scheduler is not None else MarbleScheduler()
    observer = scheduler.create_observer()
    subscription: list[abc.DisposableBase] = []
    # The subscription is scheduled before the source's records, so a record at frame 0 is seen.
    holder: list[Observable[T]] = []

    def subscribe(sched: abc.SchedulerBase, _state: Any = None) -> None:
        subscription.append(holder[0].subscribe(observer, scheduler=sched))

    def dispose(_sched: abc.SchedulerBase, _state: Any = None) -> None:
        for sub in subscription:
            sub.dispose()

    scheduler.schedule_absolute(SUBSCRIBED, subscribe)
    messages = MarbleSource(
        scheduler,
        source,
        values,
        topic=topic,
        partition=partition,
        first_offset=first_offset,
        concurrency=concurrency,
        timespan=timespan,
        error=error,
    )
    holder.append(pipeline(messages))
    scheduler.schedule_absolute(disposed, dispose)
    while True:
        await _run_loop_until_idle()
        if not scheduler.step():
            break
    return MarbleRun(
        output=observer.messages,
        commits=messages.commits,
        committed=messages.committed,
        delivered=messages.delivered,
        timespan=timespan,
        values=dict(values or {}),
    )


def run_marbles(
    source: str,
    pipeline: Callable[[Observable[Message]], Observable[T]],
    values: Mapping[Any, Any] | None = None,
    *,
    scheduler: MarbleScheduler | None = None,
    topic: str = "t",
    partition: int = 0,
    first_offset: int = 0,
    concurrency: int = 1,
    timespan: float = 1.0,
    error: Exception | None = None,
    disposed: float = DISPOSED,
) -> MarbleRun:
    """Feed the records of ``source`` (marbles) through ``pipeline`` in virtual time; record output and commits.

    The pipeline is built on a :class:`MarbleSource` and subscribed at :data:`SUBSCRIBED`
    (frame 0) with the scheduler as the subscribe-time scheduler (so ``batch``, the windows,
    ``retry_with_backoff`` and reactivex's time operators run in virtual time without a
    ``scheduler=`` argument), and disposed at ``disposed``. The run goes on until nothing is
    scheduled any more. It runs on a fresh asyncio loop, so ``map_async`` and tracked work
    run too (see the module docstring).

    Example::

        run = run_marbles("-a-b-|", lambda s: s.pipe(ops.map(lambda m: m.value)), {"a": 1, "b": 2})
        run.assert_output("-1-2-|")
        run.assert_commits("-a-b")        # nothing tracked: committed once on_next returned

    Args:
        source: the input records as marbles; ``|`` ends the input, ``#`` fails the broker.
        pipeline: ``Observable[Message] -> Observable[T]``, the code under test.
        values: what each element stands for: the record value, or a ``Message`` template
            (topic, partition, key, headers, timestamp); see :class:`MarbleSource`.
        scheduler: the scheduler to run on (create one to refer to it in the pipeline, e.g.
            :meth:`MarbleScheduler.wait`); default: a new one.
        topic: the topic of records not given as a ``Message``.
        partition: their partition.
        first_offset: the offset of the first record of each partition.
        concurrency: the source's ``concurrency`` (messages in flight at most, >= 1).
        timespan: seconds per marble character.
        error: the exception ``#`` stands for (default ``Exception("error")``).
        disposed: the virtual time (seconds) at which the pipeline is disposed.

    Returns:
        A :class:`MarbleRun`.

    Raises:
        RuntimeError: an asyncio loop is already running in this thread (use
            ``await run_marbles_async(...)`` there).
        ValueError: a marble string is malformed, or ``concurrency`` is not an int >= 1.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_marbles: an asyncio loop is running here; use `await run_marbles_async(...)`")
    return asyncio.run(
        run_marbles_async(
            source,
            pipeline,
            values,
            scheduler=scheduler,
            topic=topic,
            partition=partition,
            first_offset=first_offset,
            concurrency=concurrency,
            timespan=timespan,
            error=error,
            disposed=disposed,
        )
    )


def expect_marbles(
    source: str,
    pipeline: Callable[[Observable[Message]], Observable[T]],
    *,
    output: str | None = None,
    commits: str | None = None,
    values: Mapping[Any, Any] | None = None,
    output_values: Mapping[Any, Any] | None = None,
    output_error: Exception | None = None,
    **options: Any,
) -> MarbleRun:
    """:func:`run_marbles`, then assert the ``output`` and the ``commits`` marbles (each when given).

    Example::

        expect_marbles(
            "-a-b-|",
            lambda s: s.pipe(ops.filter(lambda m: m.value > 1), ops.map(lambda m: m.value)),
            values={"a": 1, "b": 2},
            output="---2-|",
            commits="-a-b",            # a filtered-out record is committed too: it was handled
        )

    Args:
        source: the input marbles.
        pipeline: the code under test.
        output: the expected output marbles (see :meth:`MarbleRun.assert_output`).
        commits: the expected commit marbles (see :meth:`MarbleRun.assert_commits`).
        values: what the input elements stand for.
        output_values: what the output elements stand for.
        output_error: what ``#`` in ``output`` stands for.
        options: passed on to :func:`run_marbles` (``scheduler``, ``concurrency``, ...).

    Returns:
        The :class:`MarbleRun`, for more checks.

    Raises:
        AssertionError: the output or the commits differ.
    """
    run = run_marbles(source, pipeline, values, **options)
    if output is not None:
        run.assert_output(output, output_values, error=output_error)
    if commits is not None:
        run.assert_commits(commits)
    return run


async def _run_loop_until_idle() -> None:
    """Let the loop's other callbacks run until none is ready (or :data:`_MAX_TURNS` turns passed)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # asyncio's own loops: the callbacks ready to run...
    timers = getattr(loop, "_scheduled", None)  # ... and the timers (a heap), some due already
    for turn in range(_MAX_TURNS):
        await asyncio.sleep(0)
        if ready is not None and timers is not None:
            if not ready and not (timers and timers[0].when() <= loop.time()):
                return
        elif turn >= 50:  # another loop implementation: a fixed number of turns
            return
