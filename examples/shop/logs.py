"""Pure log-analytics building blocks for the shop: parse loghub log lines, mine templates, window stats.

No broker and no asyncio here: everything is a function of its inputs (plus the per-source state
of a :class:`LogParser`: the drain3 template tree and the last timestamp seen), so it is tested
with strings alone. :mod:`reactive_services.examples.shop.log_analytics` wires it into a reactive pipeline.

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
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import drain3
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig
from reactive_services.operators import Window

__all__ = [
    "DATA_DIR",
    "DEFAULT_ALERT_MIN_LINES",
    "DEFAULT_ALERT_THRESHOLD",
    "DEFAULT_MASKING",
    "ERROR_LEVELS",
    "LINUX_DEFAULT_YEAR",
    "MAX_WINDOWS_PER_LINE",
    "MAX_WINDOW_S",
    "OPENSSH_DEFAULT_YEAR",
    "SOURCES",
    "TIME_FIELDS",
    "TIME_PATTERNS",
    "TIME_PATTERNS_NO_YEAR",
    "YEAR_ROLLOVER_S",
    "TimestampReader",
    "AlertDetector",
    "AlertRules",
    "DEFAULT_YEAR",
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
    "has_year",
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
    text = datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()
    return text.replace("+00:00", "Z")


# -- levels ----------------------------------------------------------------------------------

_ERROR_WORDS: tuple[str, ...] = (
    "error",
    "fail",
    "fatal",
    "invalid",
    "denied",
    "refused",
    "illegal",
    "break-in",
    "abnormal",
    "unknown",
    "cannot",
    "can't",
    "unable",
    "timed out",
    "timeout",
    "reset by peer",
    "not connected",
)
_WARNING_WORDS = re.compile(r"\bwarn")


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
    lowered = content.lower()  # substring tests: several times faster than one alternation regex
    if any(word in lowered for word in _ERROR_WORDS):
        return "error"
    if "warn" in lowered and _WARNING_WORDS.search(lowered):
        return "warning"
    return "info"


def is_error(level: str, error_levels: Iterable[str] = ERROR_LEVELS) -> bool:
    """True when ``level`` is in ``error_levels``, compared case-insensitively."""
    wanted = error_levels if error_levels is ERROR_LEVELS else {name.lower() for name in error_levels}
    return level.lower() in wanted


# -- sources ---------------------------------------------------------------------------------

#: Default drain3 masks, applied in this order before template mining: HDFS block ids (a
#: space-separated list of them is one ``<BLK>``: the list's length is a variable too), IPv4
#: addresses (with an optional :port), hex ids (``0x...``, or 8+ hex digits mixing letters and
#: digits), then standalone integers/decimals.
DEFAULT_MASKING: tuple[tuple[str, str], ...] = (
    (r"blk_-?\d+(?:\s+blk_-?\d+)*", "BLK"),
    (r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\d.])", "IP"),
    (r"\b0x[0-9a-fA-F]+\b", "HEX"),
    (r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b", "HEX"),
    (r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", "NUM"),
)


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """drain3 settings of one source.

    Raises ValueError at construction for a value out of range (the message starts with the field).

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

    def __post_init__(self) -> None:
        """Raises ValueError naming the field: depth < 3, sim_th outside [0, 1], max_children < 1."""
        if self.depth < 3:
            raise ValueError(f"depth must be >= 3 (drain3 uses depth - 2 prefix tokens), got {self.depth}")
        if not 0.0 <= self.sim_th <= 1.0:
            raise ValueError(f"sim_th must be in [0, 1], got {self.sim_th}")
        if self.max_children < 1:
            raise ValueError(f"max_children must be >= 1, got {self.max_children}")


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


@dataclass(frozen=True, slots=True)
class AlertRules:
    """When a source's window raises an alert (``log.alert``); at most one alert of each kind per window.

    The three rules (each evaluated on every window emitted for the source, in emission order):

    * ``error_rate``: ``errors / lines >= error_rate`` and ``lines >= min_lines`` (errors are
      lines whose level is in :data:`ERROR_LEVELS`).
    * ``new_template``: one or more templates that no earlier window of the source contained
      (its items or late items) appear at least ``new_template_min`` times in this window.
      Not raised before the source has had ``warmup`` windows: at the start every template is new.
    * ``template_rate``: a template seen before this window occurs ``count >= rise_min_count``
      times and ``count >= rise_factor * baseline``, where ``baseline`` is its mean count per
      window over the last ``history`` windows of the source that ended at or before this
      window's start (so, with sliding windows, overlapping windows are not part of the
      baseline; a window with no line of the template counts 0). Needs at least ``warmup`` such
      windows. Windows have equal length, so counts compare rates (lines per ``window_s``).

    Attributes:
        error_rate: fraction in [0, 1].
        min_lines: fewest lines (messages) a window needs for an error-rate alert.
        new_template_min: fewest lines of a new template for a new-template alert.
        rise_factor: how many times its baseline a template's count must reach (> 1).
        rise_min_count: fewest lines of the template in the window for a rate alert.
        history: how many earlier windows make the baseline.
        warmup: earlier windows a source needs before new-template and rate alerts.
        sample_size: raw lines quoted as evidence in each alert.
    """

    error_rate: float = DEFAULT_ALERT_THRESHOLD
    min_lines: int = DEFAULT_ALERT_MIN_LINES
    new_template_min: int = 3
    rise_factor: float = 4.0
    rise_min_count: int = 20
    history: int = 6
    warmup: int = 2
    sample_size: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate!r}")
        if not (math.isfinite(self.rise_factor) and self.rise_factor > 1.0):
            raise ValueError(f"rise_factor must be > 1, got {self.rise_factor!r}")
        for name in ("min_lines", "new_template_min", "rise_min_count", "history", "warmup", "sample_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


#: The longest window a source may have, seconds (about 3 years).
MAX_WINDOW_S = 1e8
#: The most windows a line may belong to (``window_s / slide_s`` for sliding windows).
MAX_WINDOWS_PER_LINE = 1000

#: Field names (compared case-insensitively) that :class:`TimestampReader` reads a time from.
TIME_FIELDS: frozenset[str] = frozenset({"date", "day", "month", "time", "year", "timestamp", "datetime"})

#: The ``strptime`` patterns :class:`TimestampReader` tries, in order, with the loghub dataset
#: each comes from. The last group has no year: the source's ``year`` is added.
TIME_PATTERNS: tuple[str, ...] = (
    "%a %b %d %H:%M:%S %Y",  # Sun Dec 04 04:47:44 2005 (Apache)
    "%y%m%d %H%M%S",  # 081109 203615 (HDFS)
    "%Y-%m-%d %H:%M:%S,%f",  # 2015-07-29 17:41:44,747 (Zookeeper, Hadoop)
    "%Y-%m-%d %H:%M:%S.%f",  # 2017-05-16 00:00:00.008 (OpenStack)
    "%Y-%m-%d %H:%M:%S",  # 2016-09-28 04:30:30 (Windows)
    "%Y-%m-%dT%H:%M:%S.%f%z",  # ISO 8601 with a zone: 2015-07-29T18:41:45.120+02:00, ...Z
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f",  # ISO 8601 without a zone (read as UTC)
    "%Y-%m-%dT%H:%M:%S",
    "%y/%m/%d %H:%M:%S",  # 17/06/09 20:10:40 (Spark)
    "%Y-%m-%d-%H.%M.%S.%f",  # 2005-06-03-15.42.50.675872 (BGL)
    "%Y%m%d-%H:%M:%S:%f",  # 20171223-22:15:29:606 (HealthApp)
)
TIME_PATTERNS_NO_YEAR: tuple[str, ...] = (
    "%b %d %H:%M:%S",  # Jun 14 15:16:01 (syslog: Linux, OpenSSH, Mac)
    "%m-%d %H:%M:%S.%f",  # 03-17 16:13:38.811 (Android)
    "%m.%d %H:%M:%S",  # 10.30 16:49:06 (Proxifier)
)
#: Year assumed for times without one when a source gives no ``year`` (2000: a leap year, so
#: ``Feb 29`` reads).
DEFAULT_YEAR = 2000


#: A time more than this far (seconds) before the previous line's, in a log whose times have no
#: year, is taken as the next year (the log crossed New Year: ``Dec 31 23:59`` then ``Jan 1``).
YEAR_ROLLOVER_S = 183 * 86400.0


def _to_epoch(moment: datetime) -> float:
    if moment.tzinfo is not None:
        return moment.timestamp()
    return calendar.timegm(moment.timetuple()) + moment.microsecond / 1e6


def has_year(pattern: str) -> bool:
    """True when a ``strptime`` pattern reads a year (``%Y``, ``%y``, ``%G``) or is epoch time."""
    return pattern in ("epoch", "epoch_ms") or any(d in pattern for d in ("%Y", "%y", "%G"))


class TimestampReader:
    """Reads the event time of a line from the fields of a loghub format, for any format.

    The candidate texts are, in order: all fields named like a time (:data:`TIME_FIELDS`, in
    format order) joined by a space, then each such field alone. With ``time_format`` given,
    only that ``strptime`` pattern is tried; otherwise :data:`TIME_PATTERNS`,
    :data:`TIME_PATTERNS_NO_YEAR`, a 9-11 digit number as Unix epoch seconds and a 12-14 digit
    one as epoch milliseconds. The first (text, pattern) pair that reads a line is kept for the
    later lines (a log has one time format). Times without a zone are read as UTC; with one
    (``%z``: ``Z``, ``+02:00``) they are converted.

    Times without a year get ``year``; when such a time is more than :data:`YEAR_ROLLOVER_S`
    before the previous line's, the log is taken to have crossed New Year and the year
    advances by one from there on (and a time that much *after* the previous line's, once the
    year has advanced, is a late line of the year before).

    Args:
        fields: the format's field names.
        year: the year for patterns without one (default :data:`DEFAULT_YEAR`).
        time_format: an explicit ``strptime`` pattern for the joined time fields.

    Attributes:
        time_fields: the fields read (empty: the format has no time; ``__call__`` returns None).
    """

    def __init__(self, fields: Sequence[str], *, year: int | None = None, time_format: str | None = None) -> None:
        self.time_fields = tuple(name for name in fields if name.lower() in TIME_FIELDS)
        self.year = DEFAULT_YEAR if year is None else year
        self.time_format = time_format
        self._chosen: tuple[int, str] | None = None
        self._years_added = 0
        self._previous: float | None = None

    def _texts(self, values: Mapping[str, str | None]) -> list[str]:
        parts = [(values.get(name) or "").strip() for name in self.time_fields]
        texts = [" ".join(part for part in parts if part)]
        if len(parts) > 1:
            texts.extend(parts)
        return texts

    def _read(self, text: str, pattern: str, year: int) -> float:
        if pattern == "epoch":
            if not (text.isdigit() and 9 <= len(text) <= 11):
                raise ValueError(f"not epoch seconds: {text!r}")
            return float(text)
        if pattern == "epoch_ms":
            if not (text.isdigit() and 12 <= len(text) <= 14):
                raise ValueError(f"not epoch milliseconds: {text!r}")
            return int(text) / 1000.0
        if not has_year(pattern):
            return _to_epoch(datetime.strptime(f"{year} {text}", "%Y " + pattern))
        return _to_epoch(datetime.strptime(text, pattern))

    def _timed(self, text: str, pattern: str) -> float:
        at = self._read(text, pattern, self.year + self._years_added)
        if not has_year(pattern) and self._previous is not None:
            if at < self._previous - YEAR_ROLLOVER_S:  # crossed New Year
                self._years_added += 1
                at = self._read(text, pattern, self.year + self._years_added)
            elif at > self._previous + YEAR_ROLLOVER_S and self._years_added:  # a late line from the year before
                at = self._read(text, pattern, self.year + self._years_added - 1)
        self._previous = at
        return at

    def __call__(self, values: Mapping[str, str | None]) -> float | None:
        """Epoch seconds (UTC) of a line's fields; None when the format has no time field.

        Raises:
            ValueError: no pattern reads the time (or the chosen one does not read this line).
        """
        if not self.time_fields:
            return None
        texts = self._texts(values)
        if self._chosen is not None:
            index, pattern = self._chosen
            return self._timed(texts[index] if index < len(texts) else "", pattern)
        patterns = (
            (self.time_format,) if self.time_format else (*TIME_PATTERNS, *TIME_PATTERNS_NO_YEAR, "epoch", "epoch_ms")
        )
        for index, text in enumerate(texts):
            for pattern in patterns:
                try:
                    at = self._timed(text, pattern)
                except ValueError:
                    continue
                self._chosen = (index, pattern)
                return at
        raise ValueError(f"cannot read a time from {texts[0]!r} (fields {', '.join(self.time_fields)})")

    @property
    def pattern(self) -> str | None:
        """The pattern chosen so far (``"epoch"`` for epoch seconds), or None."""
        return None if self._chosen is None else self._chosen[1]


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
            level is inferred from the content with ``infer_level``.
        infer_level: content -> level, used when ``level_field`` is None.
        component_field: the field holding the emitting component, or None.
        window_s: window length, seconds of event time.
        slide_s: the step between window starts, seconds; None (default) or ``window_s`` for
            tumbling windows, less than ``window_s`` for sliding windows (each line is then in
            ``window_s / slide_s`` windows).
        allowed_lateness_s: how far (seconds of event time) a line may be behind the latest
            line of its source and still be counted in its window; later lines are *late*.
        alerts: the alert rules (:class:`AlertRules`).
        drain: the drain3 settings (:class:`DrainSettings`).
        year: for times without a year (used by the default timestamp reader).
        time_format: ``strptime`` pattern for the default timestamp reader (None: detect).
        log_format: the compiled ``format`` (derived).
    """

    name: str
    format: str
    timestamp: Callable[[Mapping[str, str | None]], float | None] | None = None
    level_field: str | None = "Level"
    infer_level: Callable[[str], str] = infer_level
    component_field: str | None = "Component"
    window_s: float = 3600.0
    slide_s: float | None = None
    allowed_lateness_s: float = 0.0
    alerts: AlertRules = field(default_factory=AlertRules)
    drain: DrainSettings = field(default_factory=DrainSettings)
    year: int | None = None
    time_format: str | None = None
    log_format: LogFormat = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        log_format = LogFormat.from_loghub(self.format)
        for name in (self.level_field, self.component_field):
            if name is not None and name not in log_format.fields:
                raise ValueError(f"{self.name}: field <{name}> is not in format {self.format!r}")
        if "Content" not in log_format.fields:
            raise ValueError(f"{self.name}: format {self.format!r} has no <Content> field")
        if not (math.isfinite(self.window_s) and 0 < self.window_s <= MAX_WINDOW_S):
            raise ValueError(f"{self.name}: window_s must be in (0, {MAX_WINDOW_S:g}] seconds, got {self.window_s!r}")
        if self.slide_s is not None and not (math.isfinite(self.slide_s) and 0 < self.slide_s <= self.window_s):
            raise ValueError(f"{self.name}: slide_s must be in (0, window_s], got {self.slide_s!r}")
        if self.slide_s is not None and self.window_s / self.slide_s > MAX_WINDOWS_PER_LINE:
            raise ValueError(
                f"{self.name}: slide_s {self.slide_s!r} puts each line in "
                f"{self.window_s / self.slide_s:.0f} windows (at most {MAX_WINDOWS_PER_LINE})"
            )
        if self.year is not None and not 1 <= self.year <= 9998:
            raise ValueError(f"{self.name}: year must be in 1..9998, got {self.year!r}")
        if not (math.isfinite(self.allowed_lateness_s) and self.allowed_lateness_s >= 0):
            raise ValueError(f"{self.name}: allowed_lateness_s must be >= 0, got {self.allowed_lateness_s!r}")
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


#: The four shipped sources, with the loghub benchmark formats (Zhu et al., ICSE-SEIP 2019). Drain
#: depth / similarity: those of the logparser benchmark, except OpenSSH's similarity 0.7 (the
#: benchmark's 0.6 merges "Received disconnect ...: Bye Bye [preauth]" with "...: disconnected
#: by user", 5 of 8 tokens alike). Grouping accuracy against the loghub ground truth:
#: ``python bench/log_accuracy.py``.
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
            drain=DrainSettings(depth=5, sim_th=0.7),
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
        self._read_time = source.time_reader()

    def parse(self, line: str, line_no: int, *, fallback_timestamp: float | None = None) -> LogEvent:
        """Parse one line (never raises for any line content).

        Args:
            line: the raw line.
            line_no: its 1-based number in the file.
            fallback_timestamp: epoch seconds to use when the line has no readable time and no
                earlier line of this parser had one (e.g. the Kafka record's timestamp).

        A line that does not match the format, or whose time cannot be read, is an event with
        ``parsed=False``. A line of a format without time fields is parsed and gets the previous
        line's time, else ``fallback_timestamp``.
        """
        source = self.source
        fields = source.log_format.parse(line)
        timestamp: float | None = None
        time_ok = False
        if fields is not None:
            try:
                timestamp = self._read_time(fields)
                time_ok = True
            except (ValueError, TypeError, KeyError):
                timestamp = None
        if timestamp is None:
            if self.last_timestamp is not None:
                at = self.last_timestamp
            else:
                at = fallback_timestamp if fallback_timestamp is not None else 0.0
        else:
            at = timestamp
            self.last_timestamp = timestamp
        if fields is None or not time_ok:
            content = line.strip()
            template_id, template = self.miner.add(content)
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
        return LogEvent(
            source=source.name,
            line_no=line_no,
            timestamp=at,
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
        "window_start_s": float(window.start),
        "window_end_s": float(window.end),
        "lines": lines,
        "by_level": dict(by_level),
        "errors": errors,
        "error_rate": errors / lines if lines else 0.0,
        "unparsed": sum(1 for event in items if not event.parsed),
        "top_templates": _top_templates(items, top_n),
        "late": len(window.late),
    }


def _alert(
    kind: str, stats: Mapping[str, Any], message: str, evidence: dict[str, Any], sample: list[str]
) -> dict[str, Any]:
    return {
        "kind": kind,
        "source": stats["source"],
        "window_start": stats["window_start"],
        "window_end": stats["window_end"],
        "window_start_s": stats["window_start_s"],
        "window_end_s": stats["window_end_s"],
        "message": message,
        "evidence": evidence,
        "sample": sample,
    }


def alert_for(
    stats: Mapping[str, Any],
    events: Sequence[LogEvent],
    *,
    threshold: float = DEFAULT_ALERT_THRESHOLD,
    min_lines: int = DEFAULT_ALERT_MIN_LINES,
    error_levels: Iterable[str] = ERROR_LEVELS,
    sample_size: int = 3,
) -> dict[str, Any] | None:
    """The error-rate ``log.alert`` value for a window, or None when the rule does not fire.

    Rule: ``stats["error_rate"] >= threshold`` and ``stats["lines"] >= min_lines``.

    Args:
        stats: the window's :func:`window_stats`.
        events: the window's on-time events (``window.items``), for the sample.
        threshold: error-rate fraction in [0, 1].
        min_lines: fewest lines for the rule to fire.
        sample_size: how many raw error lines to quote.

    Returns:
        ``{"kind": "error_rate", "source", "window_start", "window_end", "window_start_s",
        "window_end_s", "message": str, "evidence": {"lines", "errors", "error_rate",
        "threshold", "min_lines", "by_level"}, "sample": [up to sample_size raw error lines,
        in order]}`` or None.
    """
    if stats["lines"] < min_lines or stats["error_rate"] < threshold:
        return None
    wanted = frozenset(level.lower() for level in error_levels)
    sample = [event.line or event.content for event in events if event.level.lower() in wanted][:sample_size]
    message = (
        f"{stats['source']}: error rate {stats['error_rate']:.2f} >= {threshold} "
        f"({stats['errors']} of {stats['lines']} lines, {stats['window_start']}..{stats['window_end']})"
    )
    evidence = {
        "lines": stats["lines"],
        "errors": stats["errors"],
        "error_rate": stats["error_rate"],
        "threshold": threshold,
        "min_lines": min_lines,
        "by_level": dict(stats["by_level"]),
    }
    return _alert("error_rate", stats, message, evidence, sample)


class AlertDetector:
    """The :class:`AlertRules` of one source, applied to its windows in emission order (stateful).

    It remembers which templates earlier windows contained and each earlier window's template
    counts (for the rate baseline). One detector per source and per pipeline subscription.

    Example:
        >>> detector = AlertDetector(AlertRules())
        >>> alerts = detector.check(window, window_stats(window))  # doctest: +SKIP
    """

    def __init__(self, rules: AlertRules | None = None, *, error_levels: Iterable[str] = ERROR_LEVELS) -> None:
        self.rules = rules or AlertRules()
        self.error_levels = frozenset(level.lower() for level in error_levels)
        self.windows = 0
        self._seen: set[int] = set()
        self._history: deque[tuple[float, Counter[int]]] = deque()  # (end, counts) of earlier windows

    def check(self, window: Window[LogEvent], stats: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The alerts of ``window`` (0-3, at most one per kind, in the order error_rate,
        new_template, template_rate), then remember the window.

        Args:
            window: the next window of the source (windows must come in emission order).
            stats: its :func:`window_stats`.
        """
        rules = self.rules
        alerts: list[dict[str, Any]] = []
        error = alert_for(
            stats,
            window.items,
            threshold=rules.error_rate,
            min_lines=rules.min_lines,
            error_levels=self.error_levels,
            sample_size=rules.sample_size,
        )
        if error is not None:
            alerts.append(error)
        counts: Counter[int] = Counter(event.template_id for event in window.items)
        text = {event.template_id: event.template for event in sorted(window.items, key=lambda e: e.line_no)}
        if self.windows >= rules.warmup:
            new = self._new_templates(counts, text, window, stats)
            if new is not None:
                alerts.append(new)
        earlier = [c for end, c in self._history if end <= window.start][-rules.history :]
        if len(earlier) >= rules.warmup:
            rise = self._rising_templates(counts, text, earlier, window, stats)
            if rise is not None:
                alerts.append(rise)
        self.windows += 1
        self._seen.update(counts)
        self._seen.update(event.template_id for event in window.late)
        self._history.append((window.end, counts))
        overlapping = sum(1 for end, _ in self._history if end > window.start)
        while len(self._history) > rules.history + overlapping:
            self._history.popleft()
        return alerts

    def _sample(self, window: Window[LogEvent], template_ids: Iterable[int]) -> list[str]:
        wanted = set(template_ids)
        return [e.line or e.content for e in window.items if e.template_id in wanted][: self.rules.sample_size]

    def _new_templates(
        self, counts: Counter[int], text: Mapping[int, str], window: Window[LogEvent], stats: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        rules = self.rules
        new = [(tid, n) for tid, n in counts.most_common() if tid not in self._seen and n >= rules.new_template_min]
        if not new:
            return None
        templates = [{"template_id": tid, "template": text[tid], "count": n} for tid, n in new]
        message = (
            f"{stats['source']}: {len(new)} new template(s) with >= {rules.new_template_min} lines, "
            f"top {templates[0]['template']!r} x{templates[0]['count']}"
        )
        evidence = {"templates": templates, "min_count": rules.new_template_min, "lines": stats["lines"]}
        return _alert("new_template", stats, message, evidence, self._sample(window, (tid for tid, _ in new)))

    def _rising_templates(
        self,
        counts: Counter[int],
        text: Mapping[int, str],
        earlier: list[Counter[int]],
        window: Window[LogEvent],
        stats: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        rules = self.rules
        rising: list[dict[str, Any]] = []
        for tid, n in counts.most_common():
            if tid not in self._seen or n < rules.rise_min_count:
                continue
            baseline = sum(c[tid] for c in earlier) / len(earlier)
            if n >= rules.rise_factor * baseline:
                rising.append(
                    {
                        "template_id": tid,
                        "template": text[tid],
                        "count": n,
                        "baseline": baseline,
                        "factor": None if baseline == 0 else n / baseline,
                    }
                )
        if not rising:
            return None
        top = rising[0]
        message = (
            f"{stats['source']}: template {top['template']!r} x{top['count']} in the window, "
            f"baseline {top['baseline']:.1f} per window"
        )
        evidence = {
            "templates": rising,
            "rise_factor": rules.rise_factor,
            "min_count": rules.rise_min_count,
            "history_windows": len(earlier),
        }
        return _alert(
            "template_rate", stats, message, evidence, self._sample(window, (r["template_id"] for r in rising))
        )
