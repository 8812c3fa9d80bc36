"""Reading log lines: :class:`LogSource` (how to read one kind of log), :class:`LogParser` (lines
-> :class:`LogEvent` s, with templates) and :func:`read_lines`.

A line that does not match its source's format, or whose time cannot be read, becomes a
:class:`LogEvent` with ``parsed=False``: it is counted, never dropped. A line whose message is
empty or only whitespace (a blank line) is not mined: its template is :data:`EMPTY_TEMPLATE`. Levels are kept as
written in the line; a source whose lines carry none gets them from its ``infer_level``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ._alerts import AlertRules
from ._events import EMPTY_TEMPLATE, EMPTY_TEMPLATE_ID, LogEvent, new_event
from ._formats import LogFormat, TimestampReader, quoted
from ._levels import UNKNOWN_LEVEL, infer_level
from ._miner import MinerSettings
from ._templates import DrainSettings, make_miner

#: The longest window a source may have, seconds (about 3 years).
MAX_WINDOW_S = 1e8
#: The most contents whose inferred level a parser remembers (emptied when full).
_LEVEL_CACHE_SIZE = 20_000
#: The most windows a line may belong to (``window_s / slide_s`` for sliding windows).
MAX_WINDOWS_PER_LINE = 1000


class _DefaultField(str):
    """A field name :class:`LogSource` uses only when its format has that field (the default of
    ``level_field`` / ``component_field``); equal to the plain name, told apart by identity."""

    __slots__ = ()


#: The default ``level_field``: ``Level`` when the format has it, else None (levels inferred).
DEFAULT_LEVEL_FIELD: str = _DefaultField("Level")
#: The default ``component_field``: ``Component`` when the format has it, else None.
DEFAULT_COMPONENT_FIELD: str = _DefaultField("Component")


@dataclass(frozen=True)
class LogSource:
    """How to read one kind of log.

    Attributes:
        name: the source name (the Kafka key of its records), e.g. ``"Apache"``.
        format: the line format in loghub notation (see :class:`LogFormat`).
        timestamp: the format's fields -> epoch seconds (UTC); raises ValueError on a bad time.
            None (the default): a :class:`TimestampReader` over the format's time fields
            (``year`` and ``time_format`` configure it); a format without time fields gives
            its lines the record's time.
        level_field: the field holding the level, or None when the format has none and the
            level is inferred from the content with ``infer_level``. Not given: ``Level`` when
            the format has that field, else None; a name given explicitly must be a field of
            the format.
        infer_level: content -> level, used when ``level_field`` is None.
        component_field: the field holding the emitting component, or None. Not given:
            ``Component`` when the format has that field, else None.
        window_s: window length, seconds of event time (default 600: ten minutes, so that a
            burst of a few minutes is not diluted in an hour; see :class:`AlertRules`).
        slide_s: the step between window starts, seconds; None (default) or ``window_s`` for
            tumbling windows, less than ``window_s`` for sliding windows (each line is then in
            ``window_s / slide_s`` windows).
        allowed_lateness_s: how far (seconds of event time) a line may be behind the latest
            line of its source and still be counted in its window; later lines are *late*.
        alerts: the alert rules (:class:`AlertRules`).
        miner: the template miner's settings: :class:`MinerSettings` (the default: the
            project's :class:`LogMiner`, general settings for every format) or
            :class:`DrainSettings` (drain3).
        year: for times without a year (used by the default timestamp reader).
        time_format: ``strptime`` pattern for the default timestamp reader (None: detect).
        log_format: the compiled ``format`` (derived).

    Raises:
        ConfigError: (a ``ValueError``) a bad setting, its ``key`` the attribute's name:
            ``format`` (not a loghub format, or no ``<Content>`` field), ``level_field`` /
            ``component_field`` (given explicitly, and not a field of the format),
            ``window_s``, ``slide_s``, ``year`` or ``allowed_lateness_s`` (out of range).
    """

    name: str
    format: str
    timestamp: Callable[[Mapping[str, str | None]], float | None] | None = None
    level_field: str | None = DEFAULT_LEVEL_FIELD
    infer_level: Callable[[str], str] = infer_level
    component_field: str | None = DEFAULT_COMPONENT_FIELD
    window_s: float = 600.0
    slide_s: float | None = None
    allowed_lateness_s: float = 0.0
    alerts: AlertRules = field(default_factory=AlertRules)
    miner: MinerSettings | DrainSettings = field(default_factory=MinerSettings)
    year: int | None = None
    time_format: str | None = None
    log_format: LogFormat = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            log_format = LogFormat.from_loghub(self.format)
        except (ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError("format", f"source {self.name!r}: {exc}") from exc
        for key in ("level_field", "component_field"):
            name = getattr(self, key)
            if name is None or name in log_format.fields:
                continue
            if isinstance(name, _DefaultField):  # the default: used only when the format has it
                object.__setattr__(self, key, None)
                continue
            raise ConfigError(
                key,
                f"source {self.name!r}: <{name}> is not a field of the format {quoted(self.format)} "
                f"(fields: {', '.join(log_format.fields)}; None for no {key.removesuffix('_field')} field)",
            )
        if "Content" not in log_format.fields:
            raise ConfigError(
                "format", f"source {self.name!r}: the format {quoted(self.format)} has no <Content> field"
            )
        if not (math.isfinite(self.window_s) and 0 < self.window_s <= MAX_WINDOW_S):
            raise ConfigError(
                "window_s",
                f"source {self.name!r}: must be in (0, {MAX_WINDOW_S:g}] seconds, got {self.window_s!r}",
            )
        if self.slide_s is not None and not (math.isfinite(self.slide_s) and 0 < self.slide_s <= self.window_s):
            raise ConfigError(
                "slide_s",
                f"source {self.name!r}: must be in (0, window_s {self.window_s:g}] seconds, got {self.slide_s!r}",
            )
        if self.slide_s is not None and self.window_s / self.slide_s > MAX_WINDOWS_PER_LINE:
            raise ConfigError(
                "slide_s",
                f"source {self.name!r}: {self.slide_s!r} puts each line in "
                f"{self.window_s / self.slide_s:.0f} windows (at most {MAX_WINDOWS_PER_LINE})",
            )
        if self.year is not None and not 1 <= self.year <= 9998:
            raise ConfigError("year", f"source {self.name!r}: must be in 1..9998, got {self.year!r}")
        if not (math.isfinite(self.allowed_lateness_s) and self.allowed_lateness_s >= 0):
            raise ConfigError(
                "allowed_lateness_s", f"source {self.name!r}: must be >= 0 seconds, got {self.allowed_lateness_s!r}"
            )
        object.__setattr__(self, "log_format", log_format)

    @property
    def level_inferred(self) -> bool:
        """True when levels are inferred from the content (the format has no level field)."""
        return self.level_field is None

    def time_reader(self) -> Callable[[Mapping[str, str | None]], float | None]:
        """``timestamp``, or a new :class:`TimestampReader` for this format (it keeps state)."""
        if self.timestamp is not None:
            return self.timestamp
        return TimestampReader(self.log_format.fields, year=self.year, time_format=self.time_format)

    def timestamp_of(
        self, line: str, reader: Callable[[Mapping[str, str | None]], float | None] | None = None
    ) -> float | None:
        """The epoch-seconds time of ``line``, or None when it does not parse or has no time.

        ``reader``: the reader to use (from :meth:`time_reader`; a new one when None).
        """
        fields = self.log_format.parse(line)
        if fields is None:
            return None
        try:
            return (reader or self.time_reader())(fields)
        except (ValueError, TypeError, KeyError):
            return None


def read_lines(path: Path) -> list[str]:
    """The lines of a log file, split on ``\\n`` only (a trailing ``\\r`` is removed); a final
    empty line after the last newline is not a line. Bytes that are not UTF-8 are replaced; a
    UTF-8 byte order mark at the start is dropped. A ``\r`` elsewhere stays in its line (text
    mode would make it a line break: the line numbers would no longer be the file's)."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")  # a leading BOM is not part of line 1
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


class LogParser:
    """Turns the lines of one source into :class:`LogEvent` s (stateful: template miner, last time).

    An event's ``template_id`` is the id of the line's group when it arrived; with
    :class:`LogMiner` a later line may merge that group into another: ``self.miner.resolve(id)``
    gives the id it stands for now, ``self.miner.merges`` all such aliases.

    Example:
        >>> parser = LogParser(LogSource("HDFS", "<Date> <Time> <Pid> <Level> <Component>: <Content>"))
        >>> event = parser.parse("081109 203615 148 INFO dfs.DataNode: Receiving block blk_-1608 src: /10.0.0.1:5", 1)
        >>> (event.level, event.component, event.timestamp, event.template)
        ('INFO', 'dfs.DataNode', 1226262975.0, 'Receiving block <*> src: <*>')
    """

    def __init__(self, source: LogSource) -> None:
        self.source = source
        self.miner = make_miner(source.miner)
        self.last_timestamp: float | None = None
        #: the latest time read so far (lines arrive out of order: not always the last one's)
        self.latest_timestamp: float | None = None
        self._read_time = source.time_reader()
        self._fields = source.log_format.parse
        self._name = source.name
        self._level_field = source.level_field
        self._component_field = source.component_field
        # the levels the default infer_level gave each content (a pure function: cached)
        self._levels: dict[str, str] | None = {} if source.infer_level is infer_level else None

    def _infer(self, content: str) -> str:
        levels = self._levels
        if levels is None:
            return self.source.infer_level(content)
        level = levels.get(content)
        if level is None:
            level = infer_level(content)
            if len(levels) >= _LEVEL_CACHE_SIZE:
                levels.clear()
            levels[content] = level
        return level

    def parse(self, line: str, line_no: int, *, fallback_timestamp: float | None = None) -> LogEvent:
        """Parse one line (never raises for any line content).

        Args:
            line: the raw line.
            line_no: its 1-based number in the file.
            fallback_timestamp: epoch seconds to use when the line has no readable time and no
                earlier line of this parser had one (e.g. the Kafka record's timestamp).

        A line that does not match the format, or whose time cannot be read, is an event with
        ``parsed=False``. Such a line, and a line of a format without time fields, gets the
        latest time of the source's lines so far, else ``fallback_timestamp``. A line whose
        content is empty or only whitespace (a blank line, unparsed unless the format is just
        ``<Content>``) is counted like any other, with the template :data:`EMPTY_TEMPLATE` and
        id :data:`EMPTY_TEMPLATE_ID`; the miner does not see it.
        """
        fields = self._fields(line)
        timestamp: float | None = None
        time_ok = False
        if fields is not None:
            try:
                timestamp = self._read_time(fields)
                time_ok = True
            except (ValueError, TypeError, KeyError):
                timestamp = None
        if timestamp is None:
            # the source's latest time: a line without one right after a line from the past
            # (out of order, maybe too late for its window) is not put in the past with it
            latest = self.latest_timestamp
            if latest is not None:
                at = latest
            else:
                at = fallback_timestamp if fallback_timestamp is not None else 0.0
        else:
            at = timestamp
            self.last_timestamp = timestamp
            latest = self.latest_timestamp
            if latest is None or timestamp > latest:
                self.latest_timestamp = timestamp
        if fields is None or not time_ok:
            content = line.strip()
            template_id, template = self._mine(content)
            return new_event(self._name, line_no, at, UNKNOWN_LEVEL, None, content, template_id, template, False, line)
        content = fields.get("Content") or ""
        level_field = self._level_field
        if level_field is None:
            level = self._infer(content)
        else:
            level = (fields.get(level_field) or "").strip() or UNKNOWN_LEVEL
        component = fields.get(self._component_field) if self._component_field else None
        template_id, template = self._mine(content)
        return new_event(self._name, line_no, at, level, component, content, template_id, template, True, line)

    def _mine(self, content: str) -> tuple[int, str]:
        """``(template_id, template)`` of ``content``; an empty one is not mined."""
        if not content or content.isspace():
            return EMPTY_TEMPLATE_ID, EMPTY_TEMPLATE
        return self.miner.add(content)
