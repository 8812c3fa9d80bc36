"""The log-analytics service: :class:`LogAnalyticsService` (the Observer of the pipeline's
:class:`WindowReport` s, publishing ``log.stats``, ``log.alert`` and ``logs.late``) and
:class:`LogsController` (the ``logs`` topic into it, for :class:`reactive_services.Microservice`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, cast

from reactivex import Observable
from reactivex import operators as ops
from reactivex.abc import ObserverBase

from reactive_services.adapters import Batch, DeadLetterSink, Message, track
from reactive_services.operators import Window

from .._runtime import Controller, event_pattern
from ._events import LogEvent, level_of, parsed_of, source_of, template_id_of
from ._formats import iso_utc
from ._pipeline import (
    ALERT_TOPIC,
    LATE_TOPIC,
    LOGS_TOPIC,
    STATS_TOPIC,
    LogParsers,
    WindowReport,
    build_pipeline,
)
from ._records import LateLine, LogAlert, WindowStats

log = logging.getLogger(__name__)


class Emit(Protocol):
    """How the service publishes: called as ``emit(topic, value, key=source)``; ``Broker.emit`` fits."""

    def __call__(self, topic: str, value: Any, /, *, key: str | None = None) -> Awaitable[Any]: ...


class EmitBatch(Protocol):
    """``emit_batch(topic, [(key, value), ...])``, as :meth:`Broker.emit_batch` has it."""

    def __call__(self, topic: str, records: Sequence[tuple[str | bytes | None, Any]], /) -> Awaitable[Any]: ...


def _batch_of(emit: Emit) -> EmitBatch | None:
    """The ``emit_batch`` of the object whose ``emit`` method ``emit`` is, if it has one."""
    owner = getattr(emit, "__self__", None)
    if owner is None or getattr(emit, "__name__", None) != "emit":
        return None
    batch = getattr(owner, "emit_batch", None)
    return cast(EmitBatch, batch) if callable(batch) else None


class _Totals:
    __slots__ = (
        "lines",
        "by_level",
        "unparsed",
        "windows",
        "alerts",
        "alert_kinds",
        "late",
        "templates",
        "template_text",
    )

    def __init__(self) -> None:
        self.lines = 0
        self.by_level: Counter[str] = Counter()
        self.unparsed = 0
        self.windows = 0
        self.alerts = 0
        self.alert_kinds: Counter[str] = Counter()
        self.late = 0
        self.templates: Counter[int] = Counter()
        self.template_text: dict[int, tuple[int, str]] = {}  # id -> (line_no, template at that line)


def late_record(event: LogEvent, window: Window[LogEvent]) -> dict[str, Any]:
    """The ``logs.late`` value of a line that came too late: ``{"source", "line_no", "line",
    "event_time" (ISO-8601 UTC), "event_time_s" (epoch seconds), "reported_with_window_start_s"
    (the window whose emission carried it), "reason"}``."""
    return {
        "source": event.source,
        "line_no": event.line_no,
        "line": event.line,
        "event_time": iso_utc(event.timestamp),
        "event_time_s": float(event.timestamp),
        "reported_with_window_start_s": float(window.start),
        "reason": "every window containing its event time had closed (watermark = latest event time "
        "of the source - allowed lateness) when it arrived",
    }


class LogAnalyticsService(ObserverBase[WindowReport]):
    """An Observer of :class:`WindowReport`: keeps per-source totals and publishes stats, alerts, late lines.

    For each report it publishes ``report.stats`` to ``stats_topic``, each of ``report.alerts``
    to ``alert_topic`` and each line of ``report.window.late`` to ``late_topic``
    (:func:`late_record`), all with key = the source name. Publishes run as asyncio tasks
    chained one after another (so records leave in window order), on the running event loop;
    a failed publish is logged at once and raised by :meth:`flush`. The publishes made while
    one batch of records is handled are sent by one task: one after another, or, when ``emit``
    is the ``emit`` method of an object with ``emit_batch`` (a broker, a ``ClientProxy``), with
    one ``emit_batch`` per topic (in order within each topic).

    Line totals (lines, levels, unparsed, templates) are counted once per record as it is
    parsed (see :meth:`attach`), so they hold with sliding windows too, where a line is in
    several windows.

    Args:
        emit: the publish coroutine function, called ``emit(topic, value, key=source)``
            (``broker.emit`` or ``ClientProxy.emit``).
        stats_topic: topic of the per-window stats.
        alert_topic: topic of the alerts.
        late_topic: topic of the late lines.
        top_n: how many templates :meth:`report` lists per source.
        on_event: also called with every parsed :class:`LogEvent` (e.g. to write template
            assignments).
        recent_size: how many of the latest stats (and alerts) :attr:`recent` (and
            :attr:`recent_alerts`) keep.

    Attributes:
        error: the error that ended the stream, or None.
        done: set when the stream completed or failed.
        recent: the latest ``log.stats`` values, oldest first (all sources).
        recent_alerts: the latest ``log.alert`` values, oldest first.
    """

    def __init__(
        self,
        emit: Emit,
        *,
        stats_topic: str = STATS_TOPIC,
        alert_topic: str = ALERT_TOPIC,
        late_topic: str = LATE_TOPIC,
        top_n: int = 5,
        on_event: Callable[[LogEvent], None] | None = None,
        recent_size: int = 1000,
    ) -> None:
        self._emit = emit
        self._emit_batch = _batch_of(emit)
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self.stats_topic = stats_topic
        self.alert_topic = alert_topic
        self.late_topic = late_topic
        self.top_n = top_n
        self._on_event = on_event
        self._totals: dict[str, _Totals] = {}
        self._last: asyncio.Future[int] | None = None
        #: publishes queued since the loop last ran, sent in order by one task (None: none queued)
        self._queue: list[tuple[str, dict[str, Any], str]] | None = None
        self._failures: list[BaseException] = []
        self.published = 0
        self.parsers: LogParsers | None = None
        self.error: BaseException | None = None
        self.done = asyncio.Event()

    # -- wiring --------------------------------------------------------------------------
    def attach(
        self, messages: Observable[Message] | Observable[Batch], **pipeline_options: Any
    ) -> Observable[WindowReport]:
        """``build_pipeline(messages, on_event=<count>, **pipeline_options)`` with this service
        observing it (``ops.do(self)``): the body of the ``@event_pattern("logs", pipeline=True)``
        handler."""
        return build_pipeline(
            messages, on_events=self._count_events, on_parsers=self._keep_parsers, **pipeline_options
        ).pipe(ops.do(self))

    def _keep_parsers(self, parsers: LogParsers) -> None:
        self.parsers = parsers

    def merges(self, name: str) -> dict[int, int]:
        """``{merged template id: the id it stands for now}`` of source ``name`` (its miner's
        :attr:`~reactive_services.logs.LogMiner.merges`; empty for drain3 or an unknown source)."""
        parser = self.parsers.parsers.get(name) if self.parsers is not None else None
        return {} if parser is None else parser.miner.merges

    def resolve(self, name: str, template_id: int) -> int:
        """The id ``template_id`` of source ``name`` stands for now (through its miner's merges;
        itself when the source or its miner is unknown)."""
        parser = self.parsers.parsers.get(name) if self.parsers is not None else None
        return template_id if parser is None else parser.miner.resolve(template_id)

    def _totals_of(self, name: str) -> _Totals:
        totals = self._totals.get(name)
        if totals is None:
            totals = self._totals[name] = _Totals()
        return totals

    def _count_events(self, events: list[LogEvent]) -> None:
        """Count the parsed events of one batch (one pass per source, C-level counting)."""
        names = set(map(source_of, events))
        for name in names:
            mine = events if len(names) == 1 else [event for event in events if event.source == name]
            totals = self._totals_of(name)
            totals.lines += len(mine)
            totals.by_level.update(map(level_of, mine))
            ids = list(map(template_id_of, mine))
            totals.templates.update(ids)
            texts = totals.template_text
            for tid, event in dict(zip(ids, mine, strict=True)).items():  # each id's last event
                seen = texts.get(tid)
                if seen is None or seen[0] <= event.line_no:  # the latest line: the most general template
                    texts[tid] = (event.line_no, event.template)
            totals.unparsed += len(mine) - sum(map(parsed_of, mine))
        if self._on_event is not None:
            for event in events:
                self._on_event(event)

    # -- Observer ------------------------------------------------------------------------
    def on_next(self, value: WindowReport) -> None:
        """Count the window and schedule its publishes.

        Raises:
            RuntimeError: no running asyncio event loop (the publishes need one).
        """
        if self._queue is None:  # (with publishes queued, the loop runs: they were queued in it)
            asyncio.get_running_loop()  # no loop: RuntimeError before anything is counted
        window, stats = value.window, value.stats
        name = str(window.key)
        totals = self._totals_of(name)
        totals.late += len(window.late)
        totals.windows += 1
        self.recent.append(stats)
        self._publish(self.stats_topic, stats, name)
        for alert in value.alerts:
            totals.alerts += 1
            totals.alert_kinds[alert["kind"]] += 1
            self.recent_alerts.append(alert)
            self._publish(self.alert_topic, alert, name)
        for event in window.late:
            self._publish(self.late_topic, late_record(event, window), name)
        # the window's records stay uncommitted until its publishes are acknowledged (see
        # Message.hold): a publish that fails ends the stream, and they come again
        track(self._last)  # type: ignore[arg-type]

    def on_error(self, error: Exception) -> None:
        log.error("log analytics stream failed: %r", error)
        self.error = error
        self.done.set()

    def on_completed(self) -> None:
        self.done.set()

    # -- publishing ----------------------------------------------------------------------
    def _publish(self, topic: str, value: dict[str, Any], key: str) -> None:
        """Queue one publish: sent, in order, by the task of the publishes queued since the loop
        last ran (made by the first of them; :attr:`_last`).

        Raises:
            RuntimeError: no running asyncio event loop.
        """
        queue = self._queue
        if queue is None:  # the first publish since the loop last ran: one task sends them all
            loop = asyncio.get_running_loop()
            queue = self._queue = []
            previous = self._last

            async def publish() -> int:
                batch, self._queue = self._queue or [], None  # what the synchronous handling queued
                if previous is not None:
                    await asyncio.wait([previous])  # keep order; its failure is recorded by its own callback
                emit_batch = self._emit_batch
                if emit_batch is None or len(batch) == 1:
                    for topic_, value_, key_ in batch:
                        await self._emit(topic_, value_, key=key_)
                else:
                    by_topic: dict[str, list[tuple[str | bytes | None, Any]]] = {}
                    for topic_, value_, key_ in batch:
                        by_topic.setdefault(topic_, []).append((key_, value_))
                    for topic_, records in by_topic.items():
                        await emit_batch(topic_, records)
                return len(batch)

            task = loop.create_task(publish(), name="publish:log-analytics")
            task.add_done_callback(self._settled)
            self._last = task
        queue.append((topic, value, key))

    def _settled(self, task: asyncio.Future[int]) -> None:
        if task.cancelled():
            self._failures.append(asyncio.CancelledError(f"publish task {task!r} was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            log.error("log analytics: publish failed: %r", exc)
            self._failures.append(exc)
        else:
            self.published += task.result()

    async def flush(self) -> None:
        """Wait for every publish scheduled so far.

        Raises:
            Exception: the first publish failure (e.g. :class:`PublishError`); otherwise, the
                error that ended the stream, if any.
        """
        while self._last is not None and not self._last.done():
            await asyncio.wait([self._last])
        if self._last is not None:
            await asyncio.sleep(0)  # let the last done-callback run
        if self._failures:
            raise self._failures[0]
        if self.error is not None:
            raise self.error

    # -- totals --------------------------------------------------------------------------
    def templates(self, name: str) -> list[tuple[int, str, int]]:
        """Every template of source ``name``: ``[(template_id, template, lines), ...]``, most
        lines first (ties: lower id first); ids merged by the miner are counted in the id they
        stand for now (:meth:`resolve`), and the text is the miner's current template (else the
        one carried by the latest line of the group)."""
        totals = self._totals.get(name)
        if totals is None:
            return []
        parser = self.parsers.parsers.get(name) if self.parsers is not None else None
        counts: Counter[int] = Counter()
        text: dict[int, str] = {}
        for tid, n in totals.templates.items():
            live = self.resolve(name, tid)
            counts[live] += n
            current = parser.miner.template(live) if parser is not None else None
            text[live] = current if current is not None else totals.template_text[tid][1]
        rows = [(tid, text[tid], n) for tid, n in counts.items()]
        return sorted(rows, key=lambda row: (-row[2], row[0]))

    def report(self) -> dict[str, dict[str, Any]]:
        """Totals per source over every line and window seen so far.

        Returns:
            ``{source: {"lines": int (every record parsed, on time or late), "by_level": {level:
            int}, "unparsed": int, "late": int, "windows": int, "alerts": int, "alerts_by_kind":
            {kind: int}, "templates": int (distinct), "top_templates": [[template, count], ...]
            (at most ``top_n``, most frequent first)}}``.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, totals in self._totals.items():
            out[name] = {
                "lines": totals.lines,
                "by_level": dict(totals.by_level),
                "unparsed": totals.unparsed,
                "late": totals.late,
                "windows": totals.windows,
                "alerts": totals.alerts,
                "alerts_by_kind": dict(totals.alert_kinds),
                "templates": len(totals.templates),
                "top_templates": [[text, count] for _tid, text, count in self.templates(name)[: self.top_n]],
            }
        return out


class LogsController(Controller):
    """The ``logs`` topic into a :class:`LogAnalyticsService`: a controller for :class:`reactive_services.Microservice`.

    Args:
        analytics: the Observer that publishes window stats, alerts and late lines.
        dead_letter: where records that are not ``{"line": str, ...}`` objects go (e.g. a
            :class:`~reactive_services.adapters.DeadLetterSink`: to ``logs.DLT`` with the reason
            in its headers). None: such a record ends the stream with :class:`ValidationError`.
        **pipeline_options: passed to :func:`build_pipeline` (``sources``: ``{name: LogSource}``,
            ``top_n``).

    Attributes:
        received: log records that reached the pipeline (a record that is not JSON at all is
            dead-lettered by the broker's source before it and is not counted here).
    """

    def __init__(
        self, analytics: LogAnalyticsService, dead_letter: DeadLetterSink | None = None, **pipeline_options: Any
    ) -> None:
        self.analytics = analytics
        self.dead_letter = dead_letter
        self.pipeline_options = pipeline_options
        self.received = 0

    @event_pattern(
        LOGS_TOPIC,
        pipeline=True,
        batches=True,
        emits={STATS_TOPIC: WindowStats, ALERT_TOPIC: LogAlert, LATE_TOPIC: LateLine},
    )
    def logs(self, batches: Observable[Batch]) -> Observable[WindowReport]:
        """Parse, window and mine the log lines; publish window stats, alerts and late lines.

        Works per fetch (``batches=True``): each batch of ``logs`` records is parsed in one
        loop and its commit is held once per window it has lines in."""
        counted = batches.pipe(ops.do_action(self._count))
        return self.analytics.attach(counted, batches=True, dead_letter=self.dead_letter, **self.pipeline_options)

    def _count(self, batch: Batch) -> None:
        self.received += len(batch.values)
