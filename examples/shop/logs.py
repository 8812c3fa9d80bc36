"""Pure log-analytics building blocks for the shop: parse loghub log lines, mine templates, window stats.

No broker and no asyncio here: everything is a function of its inputs (plus the per-source state
of a :class:`LogParser`: the drain3 template tree and the last timestamp seen), so it is tested
with strings alone. :mod:`examples.shop.log_analytics` wires it into a reactive pipeline.

Data: ``examples/shop/data/loghub/`` holds the 2k-line samples of Apache, HDFS, Linux and OpenSSH
from loghub (https://github.com/logpai/loghub; see the LICENSE and README.md there).

Conventions used throughout:

* timestamps are seconds since the Unix epoch (``float``). Log lines carry no time zone; they
  are read as UTC.
* levels are kept as they are written in the line (Apache ``notice``/``error``, HDFS
  ``INFO``/``WARN``). Sources whose lines carry no level (Linux syslog, OpenSSH) get one from
  :func:`infer_level`, and their :attr:`LogSource.level_inferred` is True.
* a line that does not match its source's format, or whose time cannot be read, becomes a
  :class:`LogEvent` with ``parsed=False``: it is counted, never dropped.
"""

from __future__ import annotations

import calendar
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import drain3
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

from operators._tumbling_window import Window

__all__ = [
    "DATA_DIR",
    "DEFAULT_ALERT_MIN_LINES",
    "DEFAULT_ALERT_THRESHOLD",
    "DEFAULT_MASKING",
    "ERROR_LEVELS",
    "LINUX_DEFAULT_YEAR",
    "OPENSSH_DEFAULT_YEAR",
    "SOURCES",
    "DrainSettings",
    "LogEvent",
    "LogFormat",
    "LogParser",
    "LogSource",
    "TemplateMiner",
    "UNKNOWN_LEVEL",
    "alert_for",
    "apache_timestamp",
    "default_files",
    "hdfs_timestamp",
    "infer_level",
    "iso_utc",
    "is_error",
    "read_lines",
    "syslog_timestamp",
    "window_stats",
]

#: Folder of the shipped loghub samples (``<Name>_2k.log`` and their ``_structured.csv``).
DATA_DIR = Path(__file__).resolve().parent / "data" / "loghub"

#: Levels counted as errors by :func:`is_error` (compared case-insensitively): the syslog
#: severities err/crit/alert/emerg and their long forms, plus ``fatal`` and ``severe``.
#: Warnings (``WARN``, ``warning``) are deliberately *not* errors: HDFS logs a steady 4% of
#: WARN lines during normal operation, and counting them would make the alert fire on noise.
ERROR_LEVELS: frozenset[str] = frozenset(
    {"error", "err", "fatal", "critical", "crit", "alert", "emerg", "emergency", "severe"}
)

#: ``log.alert`` fires when a window's error rate is at least this (fraction of its lines).
DEFAULT_ALERT_THRESHOLD = 0.3
#: ... and the window has at least this many lines (so 1 error out of 2 lines is no alert).
DEFAULT_ALERT_MIN_LINES = 10

#: loghub's Linux sample (``/var/log/messages``, lines like ``Jun 14 15:16:01``) has no year.
#: Assumed 2005: the loghub README does not state it; the sample comes from the same
#: log-sharing collection period as the Apache sample, which is dated 2005.
LINUX_DEFAULT_YEAR = 2005
#: loghub's OpenSSH sample (``Dec 10 06:55:46``) has no year and the loghub README gives none
#: ("collected from an OpenSSH server in our lab over a period of 28+ days"). Assumed 2015.
OPENSSH_DEFAULT_YEAR = 2015

_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}

# -- drain3 is chatty at INFO ("Starting Drain3 template miner"); keep that out of our logs ------


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _quiet_drain3() -> None:
    for name in ("drain3.template_miner", "drain3.template_miner_config"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BelowWarning) for f in logger.filters):
            logger.addFilter(_BelowWarning())


_quiet_drain3()


# -- formats ---------------------------------------------------------------------------------

_FIELD = re.compile(r"<([^<>]+)>")


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A line format in the notation of the loghub / logpai tools, compiled to a regex.

    ``<Name>`` is a field; everything between fields is a *regular expression* (that is how the
    loghub benchmark formats write ``\\[<Time>\\]`` or an optional ``(\\[<PID>\\])?``), with each
    run of spaces turned into ``\\s+``. Each field becomes a lazy named group ``(?P<Name>.*?)``,
    except the last field, which takes the rest of the line ``(?P<Name>.*)``; the whole pattern
    is anchored at both ends. This is the construction of logpai/logparser's
    ``generate_logformat_regex`` (Zhu et al., "Tools and Benchmarks for Automated Log
    Parsing", ICSE-SEIP 2019), written anew here.

    Attributes:
        fmt: the format string as given, e.g. ``"<Date> <Time> <Pid> <Level> <Component>: <Content>"``.
        fields: the field names in order, e.g. ``("Date", "Time", "Pid", "Level", "Component", "Content")``.
        regex: the compiled pattern.
    """

    fmt: str
    fields: tuple[str, ...]
    regex: re.Pattern[str]

    @classmethod
    def from_loghub(cls, fmt: str) -> LogFormat:
        """Compile a loghub format string.

        Raises:
            ValueError: no field, a field name that is not a Python identifier, a repeated
                field name, or text between fields that is not a valid regex.
        """
        parts = _FIELD.split(fmt)  # literal, field, literal, field, ..., literal
        names = tuple(parts[1::2])
        if not names:
            raise ValueError(f"log format {fmt!r} has no <Field>")
        for name in names:
            if not name.isidentifier():
                raise ValueError(f"log format field <{name}> is not an identifier")
        if len(set(names)) != len(names):
            raise ValueError(f"log format {fmt!r} repeats a field name")
        pattern = []
        for index, part in enumerate(parts):
            if index % 2 == 0:
                pattern.append(re.sub(" +", r"\\s+", part))
            elif index == len(parts) - 2:  # the last field
                pattern.append(f"(?P<{part}>.*)")
            else:
                pattern.append(f"(?P<{part}>.*?)")
        try:
            regex = re.compile("^" + "".join(pattern) + "$")
        except re.error as exc:
            raise ValueError(f"log format {fmt!r} is not a valid pattern: {exc}") from exc
        return cls(fmt=fmt, fields=names, regex=regex)

    def parse(self, line: str) -> dict[str, str | None] | None:
        """The fields of ``line`` (stripped of surrounding whitespace first, as logparser does),
        or None when it does not match. A field inside an optional group that is absent is None.
        """
        match = self.regex.match(line.strip())
        return None if match is None else match.groupdict()


# -- timestamps ------------------------------------------------------------------------------


def _epoch(year: int, month: int, day: int, hms: str) -> float:
    hours, minutes, seconds = (int(part) for part in hms.split(":"))
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 61):
        raise ValueError(f"bad time of day {hms!r}")
    datetime(year, month, day)  # validates the date (raises ValueError)
    return float(calendar.timegm((year, month, day, hours, minutes, seconds, 0, 0, 0)))


def _month(name: str | None) -> int:
    if name not in _MONTHS:
        raise ValueError(f"unknown month {name!r}")
    return _MONTHS[name]


def apache_timestamp(fields: Mapping[str, str | None]) -> float:
    """``Time`` like ``Sun Dec 04 04:47:44 2005`` -> epoch seconds (UTC). Raises ValueError."""
    _weekday, month, day, hms, year = (fields["Time"] or "").split()
    return _epoch(int(year), _month(month), int(day), hms)


def hdfs_timestamp(fields: Mapping[str, str | None]) -> float:
    """``Date`` ``081109`` (yymmdd, 20yy) and ``Time`` ``203615`` (HHMMSS) -> epoch seconds (UTC).

    Raises:
        ValueError: not 6 digits each, or not a valid date/time.
    """
    date, time = fields["Date"] or "", fields["Time"] or ""
    if not (len(date) == 6 and date.isdigit() and len(time) == 6 and time.isdigit()):
        raise ValueError(f"bad HDFS date/time {date!r} {time!r}")
    return _epoch(2000 + int(date[:2]), int(date[2:4]), int(date[4:]), f"{time[:2]}:{time[2:4]}:{time[4:]}")


def syslog_timestamp(
    month_field: str, day_field: str, time_field: str, *, year: int
) -> Callable[[Mapping[str, str | None]], float]:
    """A timestamp reader for syslog-style times without a year (``Jun 14 15:16:01``).

    Args:
        month_field, day_field, time_field: the field names holding ``Jun``, ``14``, ``15:16:01``.
        year: the year to assume (syslog lines do not carry one). No roll-over at New Year is
            attempted: a file spanning Dec -> Jan would go backwards in time.

    Returns:
        fields -> epoch seconds (UTC); it raises ValueError on a bad month/day/time.
    """

    def timestamp(fields: Mapping[str, str | None]) -> float:
        return _epoch(year, _month(fields[month_field]), int(fields[day_field] or ""), fields[time_field] or "")

    return timestamp


def iso_utc(epoch_s: float) -> str:
    """Epoch seconds -> ISO-8601 in UTC with a ``Z`` suffix, e.g. ``2005-12-04T04:00:00Z``."""
    text = datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat()
    return text.replace("+00:00", "Z")


# -- levels ----------------------------------------------------------------------------------

_ERROR_WORDS = re.compile(
    r"error|fail|fatal|invalid|denied|refused|illegal|break-in|abnormal|unknown|"
    r"cannot|can't|unable|timed out|timeout|reset by peer|not connected",
    re.IGNORECASE,
)
_WARNING_WORDS = re.compile(r"\bwarn", re.IGNORECASE)


def infer_level(content: str) -> str:
    """Level of a line whose format has none (Linux syslog, OpenSSH), from keywords in its content.

    Rule (case-insensitive substring search, first match wins):

    1. ``"error"`` if the content contains any of: error, fail (failed, failure, ...), fatal,
       invalid, denied, refused, illegal, break-in, abnormal, unknown, cannot, can't, unable,
       timed out, timeout, reset by peer, not connected;
    2. ``"warning"`` if it contains a word starting with ``warn``;
    3. ``"info"`` otherwise.

    So ``Failed password for root from 1.2.3.4 port 22 ssh2`` -> ``error``,
    ``check pass; user unknown`` -> ``error``, ``session opened for user news`` -> ``info``.
    Keyword rules are crude: they are the documented baseline, and the events carry
    ``level_inferred`` (via their source) so consumers can tell.
    """
    if _ERROR_WORDS.search(content):
        return "error"
    if _WARNING_WORDS.search(content):
        return "warning"
    return "info"


def is_error(level: str, error_levels: Iterable[str] = ERROR_LEVELS) -> bool:
    """True when ``level`` is in ``error_levels``, compared case-insensitively."""
    wanted = error_levels if error_levels is ERROR_LEVELS else {name.lower() for name in error_levels}
    return level.lower() in wanted


# -- sources ---------------------------------------------------------------------------------

#: Default drain3 masks, applied in this order before template mining: HDFS block ids, IPv4
#: addresses (with an optional :port), hex ids (``0x...``, or 8+ hex digits mixing letters and
#: digits), then standalone integers/decimals.
DEFAULT_MASKING: tuple[tuple[str, str], ...] = (
    (r"blk_-?\d+", "BLK"),
    (r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\d.])", "IP"),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b", "HEX"),
    (r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", "NUM"),
)


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """drain3 settings of one source.

    Attributes:
        depth: depth of the Drain parse tree (>= 3; drain3 uses ``depth - 2`` prefix tokens).
        sim_th: similarity threshold in [0, 1] above which a line joins an existing cluster.
        max_children: maximum children of an inner tree node.
        masking: ``(regex, mask name)`` pairs applied in order; a match becomes ``<NAME>``.
    """

    depth: int = 4
    sim_th: float = 0.4
    max_children: int = 100
    masking: tuple[tuple[str, str], ...] = DEFAULT_MASKING


class TemplateMiner:
    """drain3 template mining for one source: in memory, no persistence, quiet logging.

    Example:
        >>> miner = TemplateMiner(DrainSettings())
        >>> miner.add("connection from 10.0.0.1 port 22")[1]
        'connection from <IP> port <NUM>'
    """

    def __init__(self, settings: DrainSettings | None = None) -> None:
        settings = settings or DrainSettings()
        config = TemplateMinerConfig()
        config.drain_depth = settings.depth
        config.drain_sim_th = settings.sim_th
        config.drain_max_children = settings.max_children
        config.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in settings.masking]
        config.profiling_enabled = False
        self.settings = settings
        self._miner = drain3.TemplateMiner(persistence_handler=None, config=config)

    def add(self, content: str) -> tuple[int, str]:
        """Add one message; returns ``(cluster_id, template)``, the template as it stands now
        (later messages of the same cluster may generalise it further)."""
        result = self._miner.add_log_message(content)
        return int(result["cluster_id"]), str(result["template_mined"])

    def template(self, cluster_id: int) -> str | None:
        """The current template of a cluster, or None for an unknown id."""
        cluster = self._miner.drain.id_to_cluster.get(cluster_id)
        return None if cluster is None else str(cluster.get_template())

    @property
    def cluster_count(self) -> int:
        """How many templates (clusters) have been mined."""
        return len(self._miner.drain.clusters)


def _no_timestamp(fields: Mapping[str, str | None]) -> float:
    raise ValueError("this source has no timestamp field")


@dataclass(frozen=True)
class LogSource:
    """How to read one kind of log.

    Attributes:
        name: the source name (the Kafka key of its records), e.g. ``"Apache"``.
        format: the line format in loghub notation (see :class:`LogFormat`).
        timestamp: the format's fields -> epoch seconds (UTC); raises ValueError on a bad time.
        level_field: the field holding the level, or None when the format has none and the
            level is inferred from the content with ``infer_level``.
        infer_level: content -> level, used when ``level_field`` is None.
        component_field: the field holding the emitting component, or None.
        window_s: tumbling window size for the stats, in seconds of event time.
        alert_threshold: error-rate fraction from which a window raises ``log.alert``.
        alert_min_lines: fewest lines a window needs for an alert.
        drain: the drain3 settings (:class:`DrainSettings`).
        log_format: the compiled ``format`` (derived).
    """

    name: str
    format: str
    timestamp: Callable[[Mapping[str, str | None]], float] = _no_timestamp
    level_field: str | None = "Level"
    infer_level: Callable[[str], str] = infer_level
    component_field: str | None = "Component"
    window_s: float = 3600.0
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    alert_min_lines: int = DEFAULT_ALERT_MIN_LINES
    drain: DrainSettings = field(default_factory=DrainSettings)
    log_format: LogFormat = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        log_format = LogFormat.from_loghub(self.format)
        for name in (self.level_field, self.component_field):
            if name is not None and name not in log_format.fields:
                raise ValueError(f"{self.name}: field <{name}> is not in format {self.format!r}")
        if "Content" not in log_format.fields:
            raise ValueError(f"{self.name}: format {self.format!r} has no <Content> field")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"{self.name}: window_s must be > 0, got {self.window_s!r}")
        object.__setattr__(self, "log_format", log_format)

    @property
    def level_inferred(self) -> bool:
        """True when levels are inferred from the content (the format has no level field)."""
        return self.level_field is None

    def timestamp_of(self, line: str) -> float | None:
        """The epoch-seconds time of ``line``, or None when it does not parse."""
        fields = self.log_format.parse(line)
        if fields is None:
            return None
        try:
            return self.timestamp(fields)
        except (ValueError, TypeError, KeyError):
            return None


#: The four shipped sources, with the loghub benchmark formats and the Drain depth / similarity
#: settings of the logparser benchmark (Zhu et al., ICSE-SEIP 2019) for each.
SOURCES: Mapping[str, LogSource] = {
    source.name: source
    for source in (
        LogSource(
            name="Apache",
            format=r"\[<Time>\] \[<Level>\] <Content>",
            timestamp=apache_timestamp,
            component_field=None,
            drain=DrainSettings(depth=4, sim_th=0.5),
        ),
        LogSource(
            name="HDFS",
            format="<Date> <Time> <Pid> <Level> <Component>: <Content>",
            timestamp=hdfs_timestamp,
            drain=DrainSettings(depth=4, sim_th=0.5),
        ),
        # loghub calls the host name ("combo") <Level>: it is not a level, so levels are inferred.
        LogSource(
            name="Linux",
            format=r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
            timestamp=syslog_timestamp("Month", "Date", "Time", year=LINUX_DEFAULT_YEAR),
            level_field=None,
            drain=DrainSettings(depth=6, sim_th=0.39),
        ),
        # loghub's <Component> here is the host name ("LabSZ"); the component is always sshd.
        LogSource(
            name="OpenSSH",
            format=r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
            timestamp=syslog_timestamp("Date", "Day", "Time", year=OPENSSH_DEFAULT_YEAR),
            level_field=None,
            component_field=None,
            drain=DrainSettings(depth=5, sim_th=0.6),
        ),
    )
}


def default_files(data_dir: Path = DATA_DIR) -> dict[str, Path]:
    """``{source name: path of its <name>_2k.log}`` for the shipped sources."""
    return {name: data_dir / f"{name}_2k.log" for name in SOURCES}


def read_lines(path: Path) -> list[str]:
    """The lines of a log file, split on ``\\n`` only (a trailing ``\\r`` is removed); a final
    empty line after the last newline is not a line. Bytes that are not UTF-8 are replaced."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# -- events ----------------------------------------------------------------------------------

#: Level given to a line that could not be parsed.
UNKNOWN_LEVEL = "unknown"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One log line, parsed.

    Attributes:
        source: the source name.
        line_no: 1-based line number in its file.
        timestamp: event time, epoch seconds (UTC). For a line that did not parse: the time of
            the previous line of the source, else the given fallback, else 0.0.
        level: as written in the line, or inferred (see :func:`infer_level`), or ``"unknown"``
            when the line did not parse.
        component: the emitting component, or None.
        content: the message part of the line (the whole stripped line if it did not parse).
        template_id: drain3 cluster id (per source).
        template: the template mined so far for that cluster, e.g. ``"Invalid user <*> from <IP>"``.
        parsed: False when the line did not match its format or its time could not be read.
        line: the raw line.
    """

    source: str
    line_no: int
    timestamp: float
    level: str
    component: str | None
    content: str
    template_id: int
    template: str
    parsed: bool
    line: str = ""


class LogParser:
    """Turns the lines of one source into :class:`LogEvent` s (stateful: template miner, last time).

    Example:
        >>> parser = LogParser(SOURCES["HDFS"])
        >>> event = parser.parse("081109 203615 148 INFO dfs.DataNode: Receiving block blk_-1608 src: /10.0.0.1:5", 1)
        >>> (event.level, event.component, event.timestamp, event.template)
        ('INFO', 'dfs.DataNode', 1226262975.0, 'Receiving block <BLK> src: /<IP>')
    """

    def __init__(self, source: LogSource) -> None:
        self.source = source
        self.miner = TemplateMiner(source.drain)
        self.last_timestamp: float | None = None

    def parse(self, line: str, line_no: int, *, fallback_timestamp: float | None = None) -> LogEvent:
        """Parse one line (never raises for any line content).

        Args:
            line: the raw line.
            line_no: its 1-based number in the file.
            fallback_timestamp: epoch seconds to use when the line has no readable time and no
                earlier line of this parser had one (e.g. the Kafka record's timestamp).
        """
        source = self.source
        fields = source.log_format.parse(line)
        timestamp: float | None = None
        if fields is not None:
            try:
                timestamp = source.timestamp(fields)
            except (ValueError, TypeError, KeyError):
                timestamp = None
        if fields is None or timestamp is None:
            content = line.strip()
            template_id, template = self.miner.add(content)
            if self.last_timestamp is not None:
                at = self.last_timestamp
            else:
                at = fallback_timestamp if fallback_timestamp is not None else 0.0
            return LogEvent(
                source=source.name,
                line_no=line_no,
                timestamp=at,
                level=UNKNOWN_LEVEL,
                component=None,
                content=content,
                template_id=template_id,
                template=template,
                parsed=False,
                line=line,
            )
        content = fields.get("Content") or ""
        if source.level_field is None:
            level = source.infer_level(content)
        else:
            level = (fields.get(source.level_field) or "").strip() or UNKNOWN_LEVEL
        component = fields.get(source.component_field) if source.component_field else None
        template_id, template = self.miner.add(content)
        self.last_timestamp = timestamp
        return LogEvent(
            source=source.name,
            line_no=line_no,
            timestamp=timestamp,
            level=level,
            component=component,
            content=content,
            template_id=template_id,
            template=template,
            parsed=True,
            line=line,
        )


# -- window stats and the alert rule ---------------------------------------------------------


def _top_templates(events: Iterable[LogEvent], top_n: int) -> list[list[Any]]:
    counts: Counter[int] = Counter()
    latest: dict[int, str] = {}
    for event in events:
        counts[event.template_id] += 1
        latest[event.template_id] = event.template  # later events carry the more general template
    # Counter.most_common keeps first-seen order among equal counts
    return [[latest[template_id], count] for template_id, count in counts.most_common(top_n)]


def window_stats(
    window: Window[LogEvent], *, error_levels: Iterable[str] = ERROR_LEVELS, top_n: int = 5
) -> dict[str, Any]:
    """The ``log.stats`` value of one window.

    Counts are over the window's on-time items; late items (``window.late``, lines whose own
    window had already closed) are only counted in ``late``. So over all windows of a source,
    ``sum(lines) + sum(late)`` is the number of lines read.

    Returns:
        ``{"source": str, "window_start": ISO-8601 UTC str, "window_end": str,
        "window_start_s": float, "window_end_s": float (epoch seconds), "lines": int,
        "by_level": {level: count}, "errors": int, "error_rate": float in [0, 1] (errors /
        lines, 0.0 for no lines), "unparsed": int, "top_templates": [[template, count], ...]
        (at most ``top_n``, most frequent first), "late": int}``.
    """
    wanted = frozenset(level.lower() for level in error_levels)
    items = window.items
    by_level = Counter(event.level for event in items)
    errors = sum(count for level, count in by_level.items() if level.lower() in wanted)
    lines = len(items)
    return {
        "source": str(window.key),
        "window_start": iso_utc(window.start),
        "window_end": iso_utc(window.end),
        "window_start_s": window.start,
        "window_end_s": window.end,
        "lines": lines,
        "by_level": dict(by_level),
        "errors": errors,
        "error_rate": errors / lines if lines else 0.0,
        "unparsed": sum(1 for event in items if not event.parsed),
        "top_templates": _top_templates(items, top_n),
        "late": len(window.late),
    }


def alert_for(
    stats: Mapping[str, Any],
    events: Sequence[LogEvent],
    *,
    threshold: float = DEFAULT_ALERT_THRESHOLD,
    min_lines: int = DEFAULT_ALERT_MIN_LINES,
    error_levels: Iterable[str] = ERROR_LEVELS,
) -> dict[str, Any] | None:
    """The ``log.alert`` value for a window, or None when the rule does not fire.

    Rule: ``stats["error_rate"] >= threshold`` and ``stats["lines"] >= min_lines``; at most one
    alert per window.

    Args:
        stats: the window's :func:`window_stats`.
        events: the window's on-time events (``window.items``), for the sample.
        threshold: error-rate fraction in [0, 1].
        min_lines: fewest lines for the rule to fire.

    Returns:
        ``{"source", "window_start", "window_end", "window_start_s", "window_end_s",
        "error_rate", "threshold", "lines", "errors", "sample": [up to 3 raw error lines, in
        order]}`` or None.
    """
    if stats["lines"] < min_lines or stats["error_rate"] < threshold:
        return None
    wanted = frozenset(level.lower() for level in error_levels)
    sample = [event.line or event.content for event in events if event.level.lower() in wanted][:3]
    return {
        "source": stats["source"],
        "window_start": stats["window_start"],
        "window_end": stats["window_end"],
        "window_start_s": stats["window_start_s"],
        "window_end_s": stats["window_end_s"],
        "error_rate": stats["error_rate"],
        "threshold": threshold,
        "lines": stats["lines"],
        "errors": stats["errors"],
        "sample": sample,
    }
