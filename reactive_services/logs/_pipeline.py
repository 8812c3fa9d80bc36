"""The log-analytics pipeline: replay log files to ``logs``, window them by event time, stats and alerts per window.

Flow::

    replay_logs(broker, files, formats=sources)
                                        logs  (key = source, value = {"source", "line_no", "line"},
                                               timestamp = the line's own time)
    build_pipeline(messages, sources=sources)
                                        parse (LogParser per source, templates)
                                        -> group by source -> sliding_event_time_window(window_s, slide_s)
                                        -> WindowReport(window, stats, alerts)
    LogAnalyticsService (an Observer)   totals per source; publishes log.stats, log.alert and
                                        logs.late (the lines that came too late for their windows)

Wiring into the runtime: :class:`LogsController` (``@event_pattern("logs", pipeline=True)``)
with ``service = LogAnalyticsService(broker.emit)``::

    Microservice(broker, [LogsController(service, DeadLetterSink(broker), sources=sources)])

After the Microservice has stopped, ``await service.flush()`` raises the first publish failure,
if any.

Delivery note: a ``logs`` record's offset is committed only once every window holding it has been
published and acknowledged (the windows hold the commits, :meth:`Message.hold`). A crash loses
nothing: the records of the windows still open are redelivered and their windows recomputed.
With a ``checkpoint`` (:class:`~reactive_services.operators.ChangelogStore`) the windows also
record where a replay resumes, so that every line is counted once in the published stats;
without one, a window published before the crash may be published again with part of its lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NotRequired, cast

import orjson
import pydantic
import reactivex
from reactivex import Observable
from reactivex import operators as ops
from reactivex.abc import ObserverBase, SchedulerBase
from reactivex.disposable import CompositeDisposable, Disposable
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from reactive_services.adapters import Batch, DeadLetter, Emitter, Hold, Message, current_message, track
from reactive_services.errors import ConfigError, ValidationError
from reactive_services.operators import ChangelogStore, Window, WindowRunner, sliding_event_time_window

from .._payloads import PayloadModel
from ._alerts import AlertDetector
from ._events import LogEvent, source_of, template_id_of, time_of
from ._levels import ERROR_LEVELS
from ._miner import LogMiner
from ._parsing import LogParser, LogSource, read_lines
from ._windows import count_window, window_stats

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


class LogRecord(TypedDict):
    """The value of a ``logs`` record: one line of a log file (what :func:`replay_logs` publishes).

    ``{"line": str, "source"?: str, "line_no"?: int, "truncated_from"?: int}``:

    - ``line``: the line's text, without its line break (required);
    - ``source``: the name of the log it comes from, non-empty (default: the record's key);
    - ``line_no``: its number in its file, an integer >= 1 (default: the record's offset + 1);
    - ``truncated_from``: the line's length in characters before :func:`replay_logs` cut it to
      :data:`MAX_LINE_CHARS`, an integer >= 0 (only on a cut line).

    Other keys are allowed and ignored. The types are strict: ``line_no`` must be a JSON
    integer, not a string, a float or a boolean. Validated by :data:`LOG_RECORD`.
    """

    line: pydantic.StrictStr
    source: NotRequired[Annotated[str, pydantic.Field(min_length=1, strict=True)]]
    line_no: NotRequired[Annotated[int, pydantic.Field(ge=1, strict=True)]]
    truncated_from: NotRequired[Annotated[int, pydantic.Field(ge=0, strict=True)]]


#: The validator of ``logs`` values (:class:`LogRecord`); its errors name the fields:
#: ``invalid logs record: line_no: Input should be a valid integer (got 'two')``.
LOG_RECORD = PayloadModel(LogRecord, "logs record")


# -- replay ----------------------------------------------------------------------------------


async def replay_logs(
    broker: Emitter,
    sources: Mapping[str, Path],
    *,
    topic: str = LOGS_TOPIC,
    formats: Mapping[str, LogSource],
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
        sources: ``{source name: path of its log file}``, e.g. ``{"Apache": Path("Apache_2k.log")}``.
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
        for line_no, (line, at) in enumerate(zip(lines, times, strict=True), start=1):
            timestamp_ms = previous_ms if at is None else round(at * 1000)
            value: LogRecord = {"source": name, "line_no": line_no, "line": line}
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
        window: the window of :class:`LogEvent` (key = source name); its
            ``late`` holds the source's lines that arrived too late for their own windows.
        stats: its ``log.stats`` value (:func:`window_stats`).
        alerts: its ``log.alert`` values (0-3, at most one per kind; see
            :class:`AlertRules`).
    """

    window: Window[LogEvent]
    stats: dict[str, Any]
    alerts: tuple[dict[str, Any], ...] = ()


_SET_WINDOW, _SET_STATS, _SET_ALERTS = (WindowReport.__dict__[name].__set__ for name in WindowReport.__slots__)


def _new_report(window: Window[LogEvent], stats: dict[str, Any], alerts: tuple[dict[str, Any], ...]) -> WindowReport:
    """``WindowReport(window, stats, alerts)`` set through its slots (see :func:`new_event`)."""
    report: WindowReport = object.__new__(WindowReport)
    _SET_WINDOW(report, window)
    _SET_STATS(report, stats)
    _SET_ALERTS(report, alerts)
    return report


class LogParsers:
    """One :class:`LogParser` per source name, created on first use.

    A name missing from ``sources`` gets a format-less source: its lines are counted as
    unparsed (``parsed=False``, level ``"unknown"``), with the record's timestamp.
    """

    def __init__(self, sources: Mapping[str, LogSource]) -> None:
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

        The value is a :class:`LogRecord` (checked by :func:`check_log_record`): ``source``
        defaults to the record key and ``line_no`` to ``offset + 1``.

        Raises:
            ValidationError: the value is not a :class:`LogRecord` (the message names the
                fields), or it has no source and the record no key.
        """
        value = check_log_record(message.value)
        name = value.get("source") or message.key_str
        if not name:
            raise ValidationError(f"logs record @{message.offset}: no source name in the value or the key")
        line_no = value.get("line_no", message.offset + 1)
        fallback = message.timestamp if message.timestamp_ms else None
        return self.parser(name).parse(value["line"], line_no, fallback_timestamp=fallback)

    def parse_batch(
        self, batch: Batch, dead_letter: ObserverBase[DeadLetter] | None, into: Callable[[LogEvent, int], None]
    ) -> ValidationError | None:
        """Parse the records of one ``logs`` batch in offset order, each passed on at once as
        ``into(event, offset)`` (so a window emitted on a line sees the miner as it was then,
        as with one record at a time).

        A value that is not a :class:`LogRecord` goes to ``dead_letter`` (with the reason) and is
        left out; with no ``dead_letter`` the batch stops there and the error is returned.
        """
        parsers = self.parsers
        offsets = batch.offsets
        for i, value in enumerate(batch.values):
            offset = offsets[i]
            if type(value) is dict:
                line, name, line_no = value.get("line"), value.get("source"), value.get("line_no")
            else:
                line = name = line_no = None
            # the common shape checked inline: {"line": str, "source": str (not empty), and
            # "line_no": int >= 1 or nothing}; anything else goes through the full validation
            if not (
                type(line) is str
                and type(name) is str
                and name
                and (line_no is None or (type(line_no) is int and line_no >= 1))
                and len(value) == (2 if line_no is None else 3)
            ):
                try:
                    check_log_record(value)
                except ValidationError as exc:
                    if dead_letter is None:
                        return exc
                    dead_letter.on_next(DeadLetter(batch[i], exc))
                    continue
                line, line_no = value["line"], value.get("line_no")
                name = value.get("source") or batch[i].key_str
                if not name:
                    nameless = ValidationError(f"logs record @{offset}: no source name in the value or the key")
                    if dead_letter is None:
                        return nameless
                    dead_letter.on_next(DeadLetter(batch[i], nameless))
                    continue
            parser = parsers.get(name) or self.parser(name)
            fallback = None
            if parser.last_timestamp is None:  # the record's time serves until a line has one
                message = batch[i]
                fallback = message.timestamp if message.timestamp_ms else None
            into(parser.parse(line, offset + 1 if line_no is None else line_no, fallback_timestamp=fallback), offset)
        return None


def _no_format(fields: Mapping[str, str | None]) -> float:
    raise ValueError("no log format is known for this source")


def check_log_record(value: Any) -> Mapping[str, Any]:
    """Check that ``value`` is a ``logs`` record value (:class:`LogRecord`); returns it unchanged.

    Usable as ``decode_json(dead_letter, parse=check_log_record)``. Costs one validation by
    :data:`LOG_RECORD` (pydantic-core, about a microsecond for a valid record).

    Raises:
        ValidationError: it is not a :class:`LogRecord`; the message names each failing field,
            e.g. ``invalid logs record: line: Input should be a valid string (got 5)`` (``(root)``
            when it is not a JSON object), and its ``fields`` are their paths.
    """
    try:
        LOG_RECORD.validate(value)
    except pydantic.ValidationError as exc:
        raise LOG_RECORD.error(exc) from None
    record: Mapping[str, Any] = value  # a dict (or another mapping) of that shape
    return record


def build_pipeline(
    messages: Observable[Message] | Observable[Batch],
    *,
    sources: Mapping[str, LogSource],
    top_n: int = 5,
    on_event: Callable[[LogEvent], None] | None = None,
    on_events: Callable[[list[LogEvent]], None] | None = None,
    idle_timeout_s: float | None = None,
    scheduler: SchedulerBase | None = None,
    checkpoint: ChangelogStore | None = None,
    on_parsers: Callable[[LogParsers], None] | None = None,
    batches: bool = False,
    dead_letter: ObserverBase[DeadLetter] | None = None,
) -> Observable[WindowReport]:
    """The log-analytics pipeline: ``logs`` records in, one :class:`WindowReport` per closed window out.

    ``messages`` -> parse (one :class:`LogParser` per source: format, time, level, the source's
    miner's template) -> group by source -> :func:`reactive_services.operators.sliding_event_time_window` with the
    source's ``window_s``, ``slide_s`` (tumbling when None) and ``allowed_lateness_s``, on the
    events' own timestamps -> ``WindowReport(window, window_stats, alerts)``, the alerts from an
    :class:`AlertDetector` per source with the source's ``alerts`` rules.

    Each source has its own watermark (its largest event time minus ``allowed_lateness_s``); a
    window is emitted when that passes its end, and every open window when ``messages``
    completes (so the last windows of a finite input are not lost). A line that arrives after
    all its windows have closed is put in ``late`` of the next window of its source. The result
    is cold: each subscription gets fresh parsers (template trees), windows and alert state.

    Args:
        messages: the records of the ``logs`` topic (``Message.value`` the decoded JSON dict);
            with ``batches``, its batches (``Batch.values`` the decoded JSON dicts).
        sources: how to read each source, ``{name: LogSource}`` (a name not in it: every line unparsed).
        top_n: how many templates each stats record lists.
        on_event: called with every parsed :class:`LogEvent`, once per record, in arrival order
            (before windowing; e.g. to count lines or record template assignments).
        on_events: called with the parsed events of each batch as one list (with ``batches``;
            else of each record, a list of one), in arrival order, once the batch went
            through the windows (cheaper than ``on_event`` for counting:
            ``Counter(map(attrgetter("level"), events))``).
        idle_timeout_s: seconds of processing time after which a source that sent no line has
            its open windows published (the last window of a quiet source; later lines for
            them count as late). None (default): open windows wait for newer lines or the end
            of the input.
        scheduler: the clock of ``idle_timeout_s`` (default: the running asyncio loop).
        checkpoint: where the windows checkpoint their progress (a
            :class:`~reactive_services.operators.ChangelogStore` on the input's broker): after a
            crash or a rebalance every line is counted once in the published windows, although
            lines are redelivered (see :func:`~reactive_services.operators.sliding_event_time_window`).
            None: at-least-once (a window published before a crash may be published again,
            possibly with only part of its lines, when lines of several sources share a partition).

        batches: ``messages`` is an ``Observable[Batch]`` (``Broker.source_batches``,
            ``@event_pattern(..., pipeline=True, batches=True)``): each batch is parsed in one
            loop and windowed per source, its commit held once per window it has lines in
            rather than once per line; the output is the same. The fast path of the log
            analytics service.
        dead_letter: ``batches`` only: where records whose value is not a :class:`LogRecord`
            go (a :class:`~reactive_services.adapters.DeadLetterSink`, the reason in the
            headers); None: such a record ends the stream with :class:`ValidationError`.
        on_parsers: called with the :class:`LogParsers` of each subscription when it starts
            (e.g. to resolve template ids through the miners' merges, ``parser.miner.resolve``).

    Miner state: with ``batches`` and a ``checkpoint``, each source's :class:`LogMiner` state
    (:meth:`LogMiner.state`, without its lookup of lines seen) joins the windows' checkpoints in
    the same changelog (key ``["miner", source]`` of the source's input partition): written
    with a window of the source whenever the templates changed since the last write (a new
    group or a merge; 48 writes, 700 KB, for the 8,000 shipped lines), tracked with the
    window's output so that it is durable before the offsets of its lines are committed, and
    read back before the first batch of the partition is parsed after a restart or a
    rebalance. So a template keeps its id across crashes. Not written: drain3's state, a state
    over 512 KiB of JSON (a WARNING says so), or without ``batches``; then the
    templates are mined afresh after a restart, with new ids. A saved state whose settings
    differ from the source's now is not used (a WARNING).

    Returns:
        ``Observable[WindowReport]``.

    Errors: a record whose value is not a ``{"line": str, ...}`` dict ends the stream with
    :class:`ValidationError` (``on_error``) — put ``decode_json(dead_letter,
    parse=check_log_record)`` in front to dead-letter such records instead; lines that do not
    parse do not (they are counted as ``unparsed``).
    """

    def create(_defer_scheduler: SchedulerBase | None) -> Observable[WindowReport]:
        parsers = LogParsers(sources)
        if on_parsers is not None:
            on_parsers(parsers)
        detectors: dict[str, AlertDetector] = {}
        # per source: (its miner, its merge_count, its merges) when last read; the detector
        # was remapped with them
        merges_seen: dict[str, tuple[object, int, dict[int, int]]] = {}

        def window_operator(name: str) -> Callable[[Observable[LogEvent]], Observable[Window[LogEvent]]]:
            source = parsers.source(name)
            return sliding_event_time_window(
                source.window_s,
                source.slide_s or source.window_s,
                timestamp=time_of,
                key=source_of,
                allowed_lateness_s=source.allowed_lateness_s,
                idle_timeout_s=idle_timeout_s,
                scheduler=scheduler,
                checkpoint=checkpoint,
            )

        def windows_of(group: Any) -> Observable[Window[LogEvent]]:
            windows: Observable[Window[LogEvent]] = group.pipe(window_operator(group.key))
            return windows

        def report(window: Window[LogEvent]) -> WindowReport:
            name = str(window.key)
            detector = detectors.get(name)
            if detector is None:
                detector = detectors[name] = AlertDetector(parsers.source(name).alerts, error_levels=ERROR_LEVELS)
            miner = parsers.parser(name).miner
            seen = merges_seen.get(name)
            if seen is None or seen[0] is not miner or seen[1] != miner.merge_count:
                merged = miner.merges  # changed since the last window: remap the detector
                merges_seen[name] = (miner, miner.merge_count, merged)
                if merged:
                    detector.remap(merged)
            else:
                merged = seen[2]
            if merged:  # templates merged since some lines arrived: count them under their group now
                window = _resolved(window, merged, miner.template)
            counts = count_window(window.items)
            stats = window_stats(window, top_n=top_n, error_levels=ERROR_LEVELS, counts=counts)
            return _new_report(window, stats, tuple(detector.check(window, stats, counts=counts)))

        if batches:
            batched = cast(Observable[Batch], messages)
            return _BatchWindows(
                batched, parsers, window_operator, report, on_event, on_events, dead_letter, checkpoint
            ).observable
        records = cast(Observable[Message], messages)
        events: Observable[LogEvent] = records.pipe(ops.map(parsers.parse_message))
        if on_event is not None:
            events = events.pipe(ops.do_action(on_event))
        if on_events is not None:
            each = on_events

            def one(event: LogEvent) -> None:
                each([event])

            events = events.pipe(ops.do_action(one))
        reports: Observable[WindowReport] = events.pipe(
            ops.group_by(source_of),
            ops.flat_map(windows_of),
            ops.map(report),
        )
        return reports

    return reactivex.defer(create)


class _Calls(ObserverBase[Any]):
    """An Observer that calls its three functions every time (several runs complete into it)."""

    def __init__(
        self, on_next: Callable[[Any], None], on_error: Callable[[Exception], None], on_completed: Callable[[], None]
    ) -> None:
        self._next, self._error, self._completed = on_next, on_error, on_completed

    def on_next(self, value: Any) -> None:
        self._next(value)

    def on_error(self, error: Exception) -> None:
        self._error(error)

    def on_completed(self) -> None:
        self._completed()


class _Ended(Exception):
    """The stream ended while a batch was being handled: stop parsing it."""


class _BatchWindows:
    """``build_pipeline(batches=True)``: batches in, one window runner per source, reports out."""

    def __init__(
        self,
        batches: Observable[Batch],
        parsers: LogParsers,
        window_operator: Callable[[str], Callable[[Observable[LogEvent]], Observable[Window[LogEvent]]]],
        report: Callable[[Window[LogEvent]], WindowReport],
        on_event: Callable[[LogEvent], None] | None,
        on_events: Callable[[list[LogEvent]], None] | None,
        dead_letter: ObserverBase[DeadLetter] | None,
        checkpoint: ChangelogStore | None,
    ) -> None:
        self.batches = batches
        self.parsers = parsers
        self.window_operator = window_operator
        self.report = report
        self.on_event = on_event
        self.on_events = on_events
        self.dead_letter = dead_letter
        self.checkpoint = checkpoint
        self.observable: Observable[WindowReport] = Observable(self.subscribe)

    def subscribe(self, observer: ObserverBase[WindowReport], scheduler: SchedulerBase | None = None) -> Any:
        run = _BatchRun(self, observer, scheduler)
        run.subscription.add(self.batches.subscribe(run.on_next, run.fail, run.on_completed, scheduler=scheduler))
        return run.subscription


#: The changelog key of a source's miner state: ``["miner", source name]`` (window keys are names).
MINER_KEY = "miner"
#: Largest miner state (JSON, bytes) written to the changelog: under Kafka's default message
#: size limit (1 MiB) with room to spare; a larger one is not written (a WARNING says so).
MAX_MINER_STATE_BYTES = 512 * 1024


class _BatchRun:
    """One subscription of :class:`_BatchWindows`.

    With a checkpoint, the first batch of each input partition waits (held) until the
    partition's changelog was read: the miners of its sources continue from their saved state
    (:meth:`LogMiner.state`), and the window runners get the windows' checkpoints from the same
    read. A source's miner state is written again with a window of that source whenever the
    miner changed since (a new template or a merge), tracked with the window's output, so it
    is durable before the offsets of its lines are committed.
    """

    def __init__(
        self, spec: _BatchWindows, observer: ObserverBase[WindowReport], scheduler: SchedulerBase | None
    ) -> None:
        self.spec = spec
        self.observer = observer
        self.scheduler = scheduler
        self.runs: dict[str, WindowRunner[LogEvent]] = {}
        self.ended = False
        self.input_done = False
        self.completed = 0
        self.subscription = CompositeDisposable(Disposable(self.disposed))
        self.windows = _Calls(self.on_window, self.fail, self.run_completed)
        # checkpoint only: what each input partition's changelog held, the batches waiting for it
        self.restored: dict[tuple[str, int], dict[Hashable, Any]] = {}
        self.waiting: dict[Hashable, list[tuple[Batch, Message, Hold]]] = {}
        self.written: dict[str, int] = {}  # source -> the miner version in the changelog
        self.oversized: set[str] = set()  # sources whose miner state is too large to checkpoint (warned)

    # -- the end ------------------------------------------------------------------------------
    def disposed(self) -> None:
        """Unsubscribed: nothing more is handled (a restore still running stops there)."""
        self.ended = True
        self.waiting.clear()

    def fail(self, error: Exception) -> None:
        if not self.ended:
            self.ended = True
            self.waiting.clear()
            self.subscription.dispose()
            self.observer.on_error(error)

    def run_completed(self) -> None:
        self.completed += 1
        if self.input_done and self.completed == len(self.runs) and not self.ended:
            self.ended = True
            self.observer.on_completed()

    def on_completed(self) -> None:
        if self.ended:
            return
        self.input_done = True
        if not self.waiting:
            self.finish()

    def finish(self) -> None:
        if not self.runs:
            self.ended = True
            self.observer.on_completed()
            return
        for run in list(self.runs.values()):
            run.on_completed()

    # -- windows --------------------------------------------------------------------------------
    def on_window(self, window: Window[LogEvent]) -> None:
        try:
            out = self.spec.report(window)
            if self.spec.checkpoint is not None:
                self.save_miner(str(window.key))
        except Exception as exc:  # noqa: BLE001 - a failing report ends the stream
            self.fail(exc)
            return
        self.observer.on_next(out)

    def save_miner(self, name: str) -> None:
        """Write source ``name``'s miner state with this window if it changed since last written."""
        checkpoint, carrier = self.spec.checkpoint, current_message.get()
        miner = self.spec.parsers.parser(name).miner
        if checkpoint is None or carrier is None or not isinstance(miner, LogMiner):
            return
        if self.written.get(name) == miner.version:
            return
        self.written[name] = miner.version
        state = miner.state(shapes=False)
        size = len(orjson.dumps(state))
        if size > MAX_MINER_STATE_BYTES:
            if name not in self.oversized:
                self.oversized.add(name)
                log.warning(
                    "log analytics: the miner state of source %r is %d bytes, over %d: not checkpointed "
                    "(after a restart its templates are mined afresh, with new ids)",
                    name,
                    size,
                    MAX_MINER_STATE_BYTES,
                )
            return
        track(checkpoint.put(carrier.topic, carrier.partition, (MINER_KEY, name), state))

    def run_of(self, name: str) -> WindowRunner[LogEvent]:
        run = self.runs.get(name)
        if run is None:
            run = self.runs[name] = WindowRunner(self.spec.window_operator(name), self.windows, self.scheduler)
            for part, found in self.restored.items():  # partitions read already: no second read
                run.preload(part, found)
            self.subscription.add(Disposable(run.dispose))
        return run

    # -- batches --------------------------------------------------------------------------------
    def on_next(self, batch: Batch) -> None:
        if self.ended:
            return
        carrier = current_message.get()
        if self.spec.checkpoint is not None and carrier is not None:
            part = (batch.topic, batch.partition)
            if part not in self.restored:
                queue = self.waiting.get(part)
                if queue is None:
                    queue = self.waiting[part] = []
                    asyncio.get_running_loop().create_task(self.restore(part))
                queue.append((batch, carrier, carrier.hold()))
                return
        self.handle(batch, carrier)

    def handle(self, batch: Batch, carrier: Message | None) -> None:
        on_event, on_events = self.spec.on_event, self.spec.on_events
        events: list[LogEvent] = []
        keep = events.append if on_events is not None else None
        feeders: dict[str, Callable[[LogEvent, int], None]] = {}  # per source: its window runner's, for this carrier

        def into(event: LogEvent, offset: int) -> None:
            if on_event is not None:
                on_event(event)
            if keep is not None:
                keep(event)
            feed = feeders.get(event.source)
            if feed is None:
                feed = feeders[event.source] = self.run_of(event.source).feeder(carrier)
            feed(event, offset)
            if self.ended:
                raise _Ended

        try:
            error = self.spec.parsers.parse_batch(batch, self.spec.dead_letter, into)
            if on_events is not None and events:
                on_events(events)
        except _Ended:
            return
        except Exception as exc:  # noqa: BLE001 - a dead-letter sink or parser failure ends it
            self.fail(exc)
            return
        if error is not None:
            self.fail(error)

    async def restore(self, part: Hashable) -> None:
        """Read ``part``'s changelog: the miners continue from their states, the window runners
        get the windows' checkpoints; then the batches that waited for it are handled."""
        checkpoint = self.spec.checkpoint
        assert checkpoint is not None
        try:
            tp = cast(tuple[str, int], part)
            found = (await checkpoint.restore({tp})).get(tp, {})
        except Exception as exc:  # noqa: BLE001 - the pipeline cannot go on without its state
            self.fail(exc)
            return
        if self.ended:
            return
        for key, value in found.items():
            if isinstance(key, tuple) and len(key) == 2 and key[0] == MINER_KEY and isinstance(value, dict):
                self.restore_miner(str(key[1]), value)
        self.restored[tp] = found
        for run in self.runs.values():
            run.preload(tp, found)
        for batch, carrier, hold in self.waiting.pop(part, []):
            token = current_message.set(carrier)
            try:
                self.handle(batch, carrier)
            finally:
                current_message.reset(token)
            hold.release()
            if self.ended:
                return
        if self.input_done and not self.waiting:
            self.finish()

    def restore_miner(self, name: str, state: dict[str, Any]) -> None:
        parser = self.spec.parsers.parser(name)
        if not isinstance(parser.miner, LogMiner):
            return
        if state.get("settings") != parser.miner.settings.to_dict():
            log.warning(
                "log analytics: the saved miner state of source %r has other settings than its source now; "
                "its templates are mined afresh",
                name,
            )
            return
        try:
            parser.miner = LogMiner.restore(state)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("log analytics: the saved miner state of source %r is unreadable (%s); mined afresh", name, exc)
            return
        self.written[name] = parser.miner.version


def _resolved(
    window: Window[LogEvent], merged: Mapping[int, int], template: Callable[[int], str | None]
) -> Window[LogEvent]:
    """``window`` with the events of merged template ids given the id and text of the group they
    are in now (``merged``: ``{merged id: live id}``, the miner's ``merges``); the others as they are."""

    def now(event: LogEvent) -> LogEvent:
        live = merged.get(event.template_id)
        if live is None:
            return event
        return dataclasses.replace(event, template_id=live, template=template(live) or event.template)

    ids = map(template_id_of, itertools.chain(window.items, window.late))
    if merged.keys().isdisjoint(ids):
        return window
    return dataclasses.replace(window, items=tuple(map(now, window.items)), late=tuple(map(now, window.late)))
