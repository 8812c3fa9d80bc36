"""The shop's log analytics: replay loghub files to ``logs``, window them by event time, publish stats and alerts.

Flow::

    replay_logs(broker, files)          logs  (key = source, value = {"source", "line_no", "line"},
                                               timestamp = the line's own time)
    build_pipeline(messages)            parse (LogParser per source, drain3 templates)
                                        -> group by source -> sliding_event_time_window(window_s, slide_s)
                                        -> WindowReport(window, stats, alerts)
    LogAnalyticsService (an Observer)   totals per source; publishes log.stats, log.alert and
                                        logs.late (the lines that came too late for their windows)

Wiring into the runtime is one line in a controller::

    class LogController:
        def __init__(self, service: LogAnalyticsService) -> None:
            self.service = service

        @event_pattern("logs", pipeline=True)
        def logs(self, messages: Observable[Message]) -> Observable[WindowReport]:
            return self.service.attach(messages)

with ``service = LogAnalyticsService(broker.emit)``; after the Microservice has stopped, ``await
service.flush()`` raises the first publish failure, if any.

Delivery note: a ``logs`` record's offset is committed once it has been parsed and put in an open
window, before its window is published. A crash loses the counts of the windows still open
(at-least-once for records, at-most-once for the stats of open windows); a replay re-creates them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import reactivex
from reactive_services.adapters._message import Message
from reactive_services.operators import Window, sliding_event_time_window
from reactivex import Observable
from reactivex import operators as ops
from reactivex.abc import ObserverBase, SchedulerBase

from reactive_services.errors import ConfigError, ValidationError

from .logs import (
    ERROR_LEVELS,
    SOURCES,
    AlertDetector,
    LogEvent,
    LogParser,
    LogSource,
    iso_utc,
    read_lines,
    window_stats,
)

__all__ = [
    "ALERT_TOPIC",
    "LATE_TOPIC",
    "LOGS_TOPIC",
    "MAX_LINE_CHARS",
    "STATS_TOPIC",
    "Emit",
    "LogAnalyticsService",
    "LogParsers",
    "WindowReport",
    "build_pipeline",
    "check_log_record",
    "replay_logs",
]

log = logging.getLogger(__name__)

#: Topic of the raw log lines.
LOGS_TOPIC = "logs"
#: Longest line :func:`replay_logs` publishes as is, characters (longer ones are cut).
MAX_LINE_CHARS = 64 * 1024
#: Topic of one stats record per (source, window).
STATS_TOPIC = "log.stats"
#: Topic of the alerts: at most one per kind (error_rate, new_template, template_rate) and window.
ALERT_TOPIC = "log.alert"
#: Topic of the log lines that arrived after every window containing them had closed.
LATE_TOPIC = "logs.late"


# -- replay ----------------------------------------------------------------------------------


async def replay_logs(
    broker: Any,
    sources: Mapping[str, Path],
    *,
    topic: str = LOGS_TOPIC,
    formats: Mapping[str, LogSource] = SOURCES,
) -> dict[str, int]:
    """Publish every line of each file to ``topic``, in file order.

    Each record has key = the source name, value ``{"source": name, "line_no": n (1-based),
    "line": text}`` and ``timestamp_ms`` = the line's own log time (read with the source's
    format); a line whose time cannot be read gets the previous line's time (lines before the
    first readable time get that one; the broker's clock when no line has one). A line longer
    than :data:`MAX_LINE_CHARS` is cut to that length and its value gets ``"truncated_from":
    original length`` (a record must stay under the broker's size limit). Files are replayed concurrently (one task
    each, in a task group); within a file records are sent one at a time, each acknowledged
    before the next, so their order on the key's partition is the file order. (``emit`` rather
    than ``emit_batch`` because ``emit_batch`` takes no per-record timestamp.)

    Args:
        broker: a started :class:`reactive_services.adapters.Broker`.
        sources: ``{source name: path of its log file}``, e.g. :func:`reactive_services.examples.shop.logs.default_files`.
        topic: the topic to publish to.
        formats: the :class:`LogSource` of each name.

    Returns:
        ``{source name: number of lines published}``.

    Raises:
        ConfigError: a source name has no entry in ``formats``.
        OSError: a file cannot be read.
        PublishError: the broker did not acknowledge a record (the other replays are cancelled).
    """
    for name in sources:
        if name not in formats:
            raise ConfigError("sources", f"no log format for source {name!r} (known: {sorted(formats)})")
    counts: dict[str, int] = {}

    async def replay_one(name: str, path: Path) -> None:
        source = formats[name]
        reader = source.time_reader()
        lines = read_lines(Path(path))
        times = [source.timestamp_of(line, reader) for line in lines]
        # lines before the first readable time take that time: giving them the clock's time
        # instead would move the source's watermark years ahead and make every later line late
        previous_ms = next((round(at * 1000) for at in times if at is not None), None)
        for line_no, (line, at) in enumerate(zip(lines, times), start=1):
            timestamp_ms = previous_ms if at is None else round(at * 1000)
            value: dict[str, Any] = {"source": name, "line_no": line_no, "line": line}
            if len(line) > MAX_LINE_CHARS:
                value["line"], value["truncated_from"] = line[:MAX_LINE_CHARS], len(line)
            await broker.emit(topic, value, key=name, timestamp_ms=timestamp_ms)
            previous_ms = timestamp_ms
        counts[name] = len(lines)

    async with asyncio.TaskGroup() as group:
        for name, path in sources.items():
            group.create_task(replay_one(name, path), name=f"replay:{name}")
    return {name: counts[name] for name in sources}


# -- the pipeline ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What the pipeline emits for each closed window of a source.

    Attributes:
        window: the window of :class:`~reactive_services.examples.shop.logs.LogEvent` (key = source name); its
            ``late`` holds the source's lines that arrived too late for their own windows.
        stats: its ``log.stats`` value (:func:`reactive_services.examples.shop.logs.window_stats`).
        alerts: its ``log.alert`` values (0-3, at most one per kind; see
            :class:`reactive_services.examples.shop.logs.AlertRules`).
    """

    window: Window[LogEvent]
    stats: dict[str, Any]
    alerts: tuple[dict[str, Any], ...] = ()


class LogParsers:
    """One :class:`LogParser` per source name, created on first use.

    A name missing from ``sources`` gets a format-less source: its lines are counted as
    unparsed (``parsed=False``, level ``"unknown"``), with the record's timestamp.
    """

    def __init__(self, sources: Mapping[str, LogSource] = SOURCES) -> None:
        self.sources = sources
        self.parsers: dict[str, LogParser] = {}

    def source(self, name: str) -> LogSource:
        """The :class:`LogSource` used for ``name``."""
        return self.parser(name).source

    def parser(self, name: str) -> LogParser:
        parser = self.parsers.get(name)
        if parser is None:
            source = self.sources.get(name) or LogSource(
                name=name, format="<Content>", level_field=None, component_field=None, timestamp=_no_format
            )
            parser = self.parsers[name] = LogParser(source)
        return parser

    def parse_message(self, message: Message) -> LogEvent:
        """A ``logs`` record -> :class:`LogEvent`.

        The value is ``{"source": str, "line_no": int, "line": str}``; ``source`` defaults to
        the record key and ``line_no`` to ``offset + 1``.

        Raises:
            ValidationError: the value is not such a dict (no ``line`` string, no source).
        """
        value = check_log_record(message.value)
        name = value.get("source") or message.key_str
        if not isinstance(name, str) or not name:
            raise ValidationError(f"logs record @{message.offset}: no source name in the value or the key")
        line_no = value.get("line_no", message.offset + 1)
        fallback = message.timestamp if message.timestamp_ms else None
        return self.parser(name).parse(value["line"], line_no, fallback_timestamp=fallback)


def _event_time(event: LogEvent) -> float:
    return event.timestamp


def _event_source(event: LogEvent) -> str:
    return event.source


def _no_format(fields: Mapping[str, str | None]) -> float:
    raise ValueError("no log format is known for this source")


def check_log_record(value: Any) -> Mapping[str, Any]:
    """Check the shape of a ``logs`` record value; returns it unchanged.

    Shape: ``{"line": str, "source": str (optional: the key), "line_no": int >= 1 (optional)}``.
    Usable as ``decode_json(dead_letter, parse=check_log_record)``.

    Raises:
        ValidationError: not a dict, ``line`` missing or not a string, ``source`` not a
            non-empty string, ``line_no`` not a positive int.
    """
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(f"logs record: value must be a JSON object, got {type(value).__name__}")
    if not isinstance(value.get("line"), str):
        raise ValidationError(f"logs record: 'line' must be a string, got {value.get('line')!r:.80}")
    if "source" in value and (not isinstance(value["source"], str) or not value["source"]):
        raise ValidationError(f"logs record: 'source' must be a non-empty string, got {value['source']!r:.80}")
    line_no = value.get("line_no", 1)
    if not isinstance(line_no, int) or isinstance(line_no, bool) or line_no < 1:
        raise ValidationError(f"logs record: 'line_no' must be an int >= 1, got {line_no!r:.80}")
    return value


def build_pipeline(
    messages: Observable[Message],
    *,
    sources: Mapping[str, LogSource] = SOURCES,
    top_n: int = 5,
    on_event: Callable[[LogEvent], None] | None = None,
) -> Observable[WindowReport]:
    """The log-analytics pipeline: ``logs`` records in, one :class:`WindowReport` per closed window out.

    ``messages`` -> parse (one :class:`LogParser` per source: format, time, level, drain3
    template) -> group by source -> :func:`reactive_services.operators.sliding_event_time_window` with the
    source's ``window_s``, ``slide_s`` (tumbling when None) and ``allowed_lateness_s``, on the
    events' own timestamps -> ``WindowReport(window, window_stats, alerts)``, the alerts from an
    :class:`~reactive_services.examples.shop.logs.AlertDetector` per source with the source's ``alerts`` rules.

    Each source has its own watermark (its largest event time minus ``allowed_lateness_s``); a
    window is emitted when that passes its end, and every open window when ``messages``
    completes (so the last windows of a finite input are not lost). A line that arrives after
    all its windows have closed is put in ``late`` of the next window of its source. The result
    is cold: each subscription gets fresh parsers (template trees), windows and alert state.

    Args:
        messages: the records of the ``logs`` topic (``Message.value`` the decoded JSON dict).
        sources: how to read each source (default: the four shipped loghub sources).
        top_n: how many templates each stats record lists.
        on_event: called with every parsed :class:`LogEvent`, once per record, in arrival order
            (before windowing; e.g. to count lines or record template assignments).

    Returns:
        ``Observable[WindowReport]``.

    Errors: a record whose value is not a ``{"line": str, ...}`` dict ends the stream with
    :class:`ValidationError` (``on_error``) — put ``decode_json(dead_letter,
    parse=check_log_record)`` in front to dead-letter such records instead; lines that do not
    parse do not (they are counted as ``unparsed``).
    """

    def create(scheduler: SchedulerBase | None) -> Observable[WindowReport]:
        parsers = LogParsers(sources)
        detectors: dict[str, AlertDetector] = {}

        def windows_of(group: Any) -> Observable[Window[LogEvent]]:
            source = parsers.source(group.key)
            windows: Observable[Window[LogEvent]] = group.pipe(
                sliding_event_time_window(
                    source.window_s,
                    source.slide_s or source.window_s,
                    timestamp=_event_time,
                    key=_event_source,
                    allowed_lateness_s=source.allowed_lateness_s,
                )
            )
            return windows

        def report(window: Window[LogEvent]) -> WindowReport:
            name = str(window.key)
            detector = detectors.get(name)
            if detector is None:
                detector = detectors[name] = AlertDetector(parsers.source(name).alerts, error_levels=ERROR_LEVELS)
            stats = window_stats(window, top_n=top_n, error_levels=ERROR_LEVELS)
            return WindowReport(window=window, stats=stats, alerts=tuple(detector.check(window, stats)))

        events: Observable[LogEvent] = messages.pipe(ops.map(parsers.parse_message))
        if on_event is not None:
            events = events.pipe(ops.do_action(on_event))
        reports: Observable[WindowReport] = events.pipe(
            ops.group_by(_event_source),
            ops.flat_map(windows_of),
            ops.map(report),
        )
        return reports

    return reactivex.defer(create)


# -- the service -----------------------------------------------------------------------------


class Emit(Protocol):
    """How the service publishes: called as ``emit(topic, value, key=source)``; ``Broker.emit`` fits."""

    def __call__(self, topic: str, value: Any, /, *, key: str | None = None) -> Awaitable[Any]: ...


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
    a failed publish is logged at once and raised by :meth:`flush`.

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
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=recent_size)
        self.stats_topic = stats_topic
        self.alert_topic = alert_topic
        self.late_topic = late_topic
        self.top_n = top_n
        self._on_event = on_event
        self._totals: dict[str, _Totals] = {}
        self._last: asyncio.Future[None] | None = None
        self._failures: list[BaseException] = []
        self.published = 0
        self.error: BaseException | None = None
        self.done = asyncio.Event()

    # -- wiring --------------------------------------------------------------------------
    def attach(self, messages: Observable[Message], **pipeline_options: Any) -> Observable[WindowReport]:
        """``build_pipeline(messages, on_event=<count>, **pipeline_options)`` with this service
        observing it (``ops.do(self)``): the body of the ``@event_pattern("logs", pipeline=True)``
        handler."""
        return build_pipeline(messages, on_event=self._count_event, **pipeline_options).pipe(ops.do(self))

    def _totals_of(self, name: str) -> _Totals:
        totals = self._totals.get(name)
        if totals is None:
            totals = self._totals[name] = _Totals()
        return totals

    def _count_event(self, event: LogEvent) -> None:
        totals = self._totals_of(event.source)
        totals.lines += 1
        totals.by_level[event.level] += 1
        totals.templates[event.template_id] += 1
        seen = totals.template_text.get(event.template_id)
        if seen is None or seen[0] <= event.line_no:  # the latest line carries the most general template
            totals.template_text[event.template_id] = (event.line_no, event.template)
        if not event.parsed:
            totals.unparsed += 1
        if self._on_event is not None:
            self._on_event(event)

    # -- Observer ------------------------------------------------------------------------
    def on_next(self, value: WindowReport) -> None:
        """Count the window and schedule its publishes.

        Raises:
            RuntimeError: no running asyncio event loop (the publishes need one).
        """
        loop = asyncio.get_running_loop()
        window, stats = value.window, value.stats
        name = str(window.key)
        totals = self._totals_of(name)
        totals.late += len(window.late)
        totals.windows += 1
        self.recent.append(stats)
        self._publish(loop, self.stats_topic, stats, name)
        for alert in value.alerts:
            totals.alerts += 1
            totals.alert_kinds[alert["kind"]] += 1
            self.recent_alerts.append(alert)
            self._publish(loop, self.alert_topic, alert, name)
        for event in window.late:
            self._publish(loop, self.late_topic, late_record(event, window), name)

    def on_error(self, error: Exception) -> None:
        log.error("log analytics stream failed: %r", error)
        self.error = error
        self.done.set()

    def on_completed(self) -> None:
        self.done.set()

    # -- publishing ----------------------------------------------------------------------
    def _publish(self, loop: asyncio.AbstractEventLoop, topic: str, value: dict[str, Any], key: str) -> None:
        previous = self._last

        async def publish() -> None:
            if previous is not None:
                await asyncio.wait([previous])  # keep order; its failure is recorded by its own callback
            await self._emit(topic, value, key=key)

        task = loop.create_task(publish(), name=f"publish:{topic}:{key}")
        task.add_done_callback(self._settled)
        self._last = task

    def _settled(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            self._failures.append(asyncio.CancelledError(f"publish task {task!r} was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            log.error("log analytics: publish failed: %r", exc)
            self._failures.append(exc)
        else:
            self.published += 1

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
        lines first (ties: lower id first); the template text is the one carried by the
        latest line of the cluster (drain3 only generalises a template, so that is its final
        form)."""
        totals = self._totals.get(name)
        if totals is None:
            return []
        rows = [(tid, totals.template_text[tid][1], n) for tid, n in totals.templates.items()]
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
