"""The shop's log analytics: replay loghub files to ``logs``, window them by event time, publish stats and alerts.

Flow::

    replay_logs(broker, files)          logs  (key = source, value = {"source", "line_no", "line"},
                                               timestamp = the line's own time)
    build_pipeline(messages)            parse (LogParser per source, drain3 templates)
                                        -> group by source -> tumbling_event_time_window(window_s)
                                        -> WindowReport(window, stats, alert)
    LogAnalyticsService (an Observer)   totals per source; publishes log.stats and log.alert

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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Mapping, Protocol

import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.abc import ObserverBase, SchedulerBase

from adapters._message import Message
from operators._tumbling_window import Window, tumbling_event_time_window
from reactive_services.errors import ConfigError, ValidationError

from .logs import (
    ERROR_LEVELS,
    SOURCES,
    LogEvent,
    LogParser,
    LogSource,
    alert_for,
    read_lines,
    window_stats,
)

__all__ = [
    "ALERT_TOPIC",
    "LOGS_TOPIC",
    "STATS_TOPIC",
    "Emit",
    "LogAnalyticsService",
    "LogParsers",
    "WindowReport",
    "build_pipeline",
    "replay_logs",
]

log = logging.getLogger(__name__)

#: Topic of the raw log lines.
LOGS_TOPIC = "logs"
#: Topic of one stats record per (source, window).
STATS_TOPIC = "log.stats"
#: Topic of one alert record per window whose error rate crossed its source's threshold.
ALERT_TOPIC = "log.alert"


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
    format); a line whose time cannot be read gets the previous line's time (the broker's
    clock if no earlier line of the file had one). Files are replayed concurrently (one task
    each, in a task group); within a file records are sent one at a time, each acknowledged
    before the next, so their order on the key's partition is the file order. (``emit`` rather
    than ``emit_batch`` because ``emit_batch`` takes no per-record timestamp.)

    Args:
        broker: a started :class:`adapters.Broker`.
        sources: ``{source name: path of its log file}``, e.g. :func:`examples.shop.logs.default_files`.
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
        lines = read_lines(Path(path))
        previous_ms: int | None = None
        for line_no, line in enumerate(lines, start=1):
            at = source.timestamp_of(line)
            timestamp_ms = previous_ms if at is None else round(at * 1000)
            await broker.emit(
                topic,
                {"source": name, "line_no": line_no, "line": line},
                key=name,
                timestamp_ms=timestamp_ms,
            )
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
        window: the window of :class:`~examples.shop.logs.LogEvent` (key = source name).
        stats: its ``log.stats`` value (:func:`examples.shop.logs.window_stats`).
        alert: its ``log.alert`` value, or None when the rule did not fire.
    """

    window: Window[LogEvent]
    stats: dict[str, Any]
    alert: dict[str, Any] | None


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
                name=name, format="<Content>", level_field=None, component_field=None
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
        value = message.value
        if not isinstance(value, Mapping) or not isinstance(value.get("line"), str):
            raise ValidationError(
                f"logs record {message.topic}[{message.partition}]@{message.offset}: "
                f"value must be a dict with a 'line' string, got {type(value).__name__}"
            )
        name = value.get("source", message.key_str)
        if not isinstance(name, str) or not name:
            raise ValidationError(f"logs record @{message.offset}: no source name in the value or the key")
        line_no = value.get("line_no", message.offset + 1)
        if not isinstance(line_no, int):
            raise ValidationError(f"logs record @{message.offset}: line_no must be an int, got {line_no!r}")
        fallback = message.timestamp if message.timestamp_ms else None
        return self.parser(name).parse(value["line"], line_no, fallback_timestamp=fallback)


def build_pipeline(
    messages: Observable[Message],
    *,
    sources: Mapping[str, LogSource] = SOURCES,
    allowed_lateness_s: float = 0.0,
    top_n: int = 5,
) -> Observable[WindowReport]:
    """The log-analytics pipeline: ``logs`` records in, one :class:`WindowReport` per closed window out.

    ``messages`` -> parse (one :class:`LogParser` per source) -> group by source ->
    :func:`operators.tumbling_event_time_window` of the source's ``window_s`` keyed by source,
    on the events' own timestamps -> ``WindowReport(window, window_stats, alert_for)`` with the
    source's alert threshold and minimum lines.

    Windows are emitted when a later line of the same source passes their end, and every open
    window when ``messages`` completes. The result is cold: each subscription gets fresh parsers
    (template trees) and windows.

    Args:
        messages: the records of the ``logs`` topic (``Message.value`` the decoded JSON dict).
        sources: how to read each source (default: the four shipped loghub sources).
        allowed_lateness_s: event-time lateness allowed before a line counts as late, seconds.
        top_n: how many templates each stats record lists.

    Returns:
        ``Observable[WindowReport]``.

    Errors: a record whose value is not a ``{"line": str, ...}`` dict ends the stream with
    :class:`ValidationError` (``on_error``); lines that do not parse do not (they are counted as
    ``unparsed``).
    """

    def create(scheduler: SchedulerBase | None) -> Observable[WindowReport]:
        parsers = LogParsers(sources)

        def windows_of(group: Any) -> Observable[Window[LogEvent]]:
            size = parsers.source(group.key).window_s
            return group.pipe(  # type: ignore[no-any-return]
                tumbling_event_time_window(
                    size,
                    timestamp=lambda event: event.timestamp,
                    key=lambda event: event.source,
                    allowed_lateness_s=allowed_lateness_s,
                )
            )

        def report(window: Window[LogEvent]) -> WindowReport:
            source = parsers.source(str(window.key))
            stats = window_stats(window, top_n=top_n, error_levels=ERROR_LEVELS)
            alert = alert_for(
                stats, window.items, threshold=source.alert_threshold, min_lines=source.alert_min_lines
            )
            return WindowReport(window=window, stats=stats, alert=alert)

        return messages.pipe(
            ops.map(parsers.parse_message),
            ops.group_by(lambda event: event.source),
            ops.flat_map(windows_of),
            ops.map(report),
        )

    return reactivex.defer(create)


# -- the service -----------------------------------------------------------------------------


class Emit(Protocol):
    """How the service publishes: called as ``emit(topic, value, key=source)``; ``Broker.emit`` fits."""

    def __call__(self, topic: str, value: Any, *, key: str | None = None) -> Awaitable[Any]: ...


class _Totals:
    __slots__ = ("lines", "by_level", "unparsed", "windows", "alerts", "late", "templates", "template_text")

    def __init__(self) -> None:
        self.lines = 0
        self.by_level: Counter[str] = Counter()
        self.unparsed = 0
        self.windows = 0
        self.alerts = 0
        self.late = 0
        self.templates: Counter[int] = Counter()
        self.template_text: dict[int, str] = {}


class LogAnalyticsService(ObserverBase[WindowReport]):
    """An Observer of :class:`WindowReport`: keeps per-source totals and publishes stats and alerts.

    For each report it publishes ``report.stats`` to ``stats_topic`` and, when present,
    ``report.alert`` to ``alert_topic``, both with key = the source name. Publishes run as
    asyncio tasks chained one after another (so records leave in window order), on the running
    event loop; a failed publish is logged at once and raised by :meth:`flush`.

    Args:
        emit: the publish coroutine function, called ``emit(topic, value, key=source)``
            (``broker.emit`` or ``ClientProxy.emit``).
        stats_topic: topic of the per-window stats.
        alert_topic: topic of the alerts.
        top_n: how many templates :meth:`report` lists per source.

    Attributes:
        error: the error that ended the stream, or None.
        done: set when the stream completed or failed.
    """

    def __init__(
        self,
        emit: Emit,
        *,
        stats_topic: str = STATS_TOPIC,
        alert_topic: str = ALERT_TOPIC,
        top_n: int = 5,
    ) -> None:
        self._emit = emit
        self.stats_topic = stats_topic
        self.alert_topic = alert_topic
        self.top_n = top_n
        self._totals: dict[str, _Totals] = {}
        self._last: asyncio.Future[None] | None = None
        self._failures: list[BaseException] = []
        self.published = 0
        self.error: BaseException | None = None
        self.done = asyncio.Event()

    # -- wiring --------------------------------------------------------------------------
    def attach(self, messages: Observable[Message], **pipeline_options: Any) -> Observable[WindowReport]:
        """``build_pipeline(messages, **pipeline_options)`` with this service observing it
        (``ops.do(self)``): the body of the ``@event_pattern("logs", pipeline=True)`` handler."""
        return build_pipeline(messages, **pipeline_options).pipe(ops.do(self))

    # -- Observer ------------------------------------------------------------------------
    def on_next(self, value: WindowReport) -> None:
        """Count the window and schedule its publishes.

        Raises:
            RuntimeError: no running asyncio event loop (the publishes need one).
        """
        loop = asyncio.get_running_loop()
        window, stats = value.window, value.stats
        name = str(window.key)
        totals = self._totals.get(name)
        if totals is None:
            totals = self._totals[name] = _Totals()
        events = (*window.items, *window.late)
        totals.lines += len(events)
        totals.late += len(window.late)
        totals.windows += 1
        for event in events:
            totals.by_level[event.level] += 1
            totals.templates[event.template_id] += 1
            totals.template_text[event.template_id] = event.template
            if not event.parsed:
                totals.unparsed += 1
        self._publish(loop, self.stats_topic, stats, name)
        if value.alert is not None:
            totals.alerts += 1
            self._publish(loop, self.alert_topic, value.alert, name)

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
    def report(self) -> dict[str, dict[str, Any]]:
        """Totals per source over every window seen so far.

        Returns:
            ``{source: {"lines": int (on-time + late), "by_level": {level: int}, "unparsed": int,
            "late": int, "windows": int, "alerts": int, "top_templates": [[template, count], ...]
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
                "top_templates": [
                    [totals.template_text[template_id], count]
                    for template_id, count in totals.templates.most_common(self.top_n)
                ],
            }
        return out
