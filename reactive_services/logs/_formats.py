"""Line formats and event times: :class:`LogFormat` (loghub notation -> regex), the timestamp
readers of known formats, and :class:`TimestampReader`, which detects the time of any format.

Times are seconds since the Unix epoch (``float``); a time without a zone is read as UTC.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}

# -- formats ---------------------------------------------------------------------------------

_FIELD = re.compile(r"<([^<>]+)>")


def quoted(text: str) -> str:
    """``text`` in single quotes as the user typed it, for messages: unlike ``repr`` a
    backslash is not doubled (``'<Date> \\| <Content>'`` shows one). Text with a control
    character (a newline would split a one-line message) is shown with ``repr``."""
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        return repr(text)
    return f"'{text}'"


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

    :meth:`parse` first tries a faster pattern when the format starts with fields separated by
    spaces only (``<Date> <Time> <Level> ...``, most formats): each of those leading fields is a
    possessive run of non-spaces ``(?P<Name>\\S*+)`` and each separator a possessive ``\\s++``.
    Where that pattern matches, it gives the regex's match: the lazy ``(?P<Name>.*?)\\s+`` can
    only stop where whitespace follows, so its first choice that is not a dead end is the run of
    non-spaces, and ``\\s+``'s first is the whole run of spaces; the fast pattern takes exactly
    these choices at those leading points (before any other choice point of the pattern), so
    the regex's depth-first search reaches the same match first. Where it does not match, the
    regex is tried. (Our own construction; the backtracking order is that of Python's ``re``.)

    Attributes:
        fmt: the format string as given, e.g. ``"<Date> <Time> <Pid> <Level> <Component>: <Content>"``.
        fields: the field names in order, e.g. ``("Date", "Time", "Pid", "Level", "Component", "Content")``.
        regex: the compiled pattern.
        fast: the faster pattern tried first, or None (the format does not start with a field
            followed by spaces).
    """

    fmt: str
    fields: tuple[str, ...]
    regex: re.Pattern[str]
    fast: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

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
            raise ValueError(f"log format {quoted(fmt)} has no <Field>")
        for name in names:
            if not name.isidentifier():
                raise ValueError(f"log format field <{name}> is not an identifier")
        if len(set(names)) != len(names):
            raise ValueError(f"log format {quoted(fmt)} repeats a field name")
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
            raise ValueError(f"log format {quoted(fmt)} is not a valid pattern: {exc}") from exc
        # the fast pattern (see the class docstring): the leading fields followed by spaces only
        # (field i is parts[2i + 1], the text after it parts[2i + 2]; the last field is not one)
        lead = 0
        if parts[0] == "":
            while lead < len(names) - 1 and parts[2 * lead + 2] != "" and parts[2 * lead + 2].strip(" ") == "":
                lead += 1
        quick = None
        if lead:
            leading = "".join(f"(?P<{name}>\\S*+)\\s++" for name in names[:lead])
            quick = re.compile("^" + leading + "".join(pattern[2 * lead + 1 :]) + "$")
        return cls(fmt=fmt, fields=names, regex=regex, fast=quick)

    def parse(self, line: str) -> dict[str, str | None] | None:
        """The fields of ``line`` (stripped of surrounding whitespace first, as logparser does),
        or None when it does not match. A field inside an optional group that is absent is None.
        A line that matches only with its trailing whitespace (``[time] [error] `` for
        ``[<Time>] [<Level>] <Content>``: the message is empty) gives its last field empty.
        """
        text = line.strip()
        fast = self.fast
        match = None if fast is None else fast.match(text)
        if match is None:
            match = self.regex.match(text)
            if match is None and line[-1:].isspace():  # an empty last field: its separator was stripped
                text = line.lstrip()
                match = (None if fast is None else fast.match(text)) or self.regex.match(text)
        return None if match is None else match.groupdict()

    def problems(self, lines: Sequence[str] = (), *, probe: int = 2000) -> list[str]:
        """What looks wrong with this format, as sentences (empty: nothing).

        A format can compile and still match nothing useful. Checked:

        * the format itself: a ``|`` between fields that is not escaped (``\\|``), in a
          character class or in a group is regex alternation for the whole line, so
          ``<Date> | <Level> | <Content>`` matches nearly any line with one field filled and
          the others empty;
        * with ``lines`` (the first ``probe`` non-blank ones): fewer than half of them match;
          or more than half of those that match have an empty ``<Content>``.

        :func:`~reactive_services.logs.make_source` warns (:class:`UserWarning`) with the first
        kind, :func:`~reactive_services.logs.analyze_file` with the second and lists both in its
        report (``warnings``); ``logs analyze`` prints them on stderr.
        """
        found: list[str] = []
        bars = _top_level_bars(self.fmt)
        if bars:
            found.append(
                f"format {quoted(self.fmt)}: {bars} '|' between fields is regex alternation (it splits the whole "
                "pattern, so lines match with most fields empty); write '\\|' for a literal bar"
            )
        sample = [line for line in lines[: probe * 2] if line.strip()][:probe]
        if sample:
            parsed = [fields for fields in map(self.parse, sample) if fields is not None]
            if len(parsed) < _MIN_PARSED_SHARE * len(sample):
                found.append(
                    f"format {quoted(self.fmt)}: only {len(parsed)} of the first {len(sample)} lines match it "
                    "(the others are counted as unparsed)"
                )
            empty = sum(1 for fields in parsed if not (fields.get("Content") or "").strip())
            if parsed and "Content" in self.fields and empty > _MAX_EMPTY_CONTENT_SHARE * len(parsed):
                found.append(
                    f"format {quoted(self.fmt)}: <Content> is empty in {empty} of the {len(parsed)} matching lines "
                    "(the other fields take the message: check the text between fields)"
                )
        return found


#: :meth:`LogFormat.problems`: fewer matching lines than this share of the lines looked at is a warning ...
_MIN_PARSED_SHARE = 0.5
#: ... and more matching lines with an empty <Content> than this share is one too.
_MAX_EMPTY_CONTENT_SHARE = 0.5


def _top_level_bars(fmt: str) -> int:
    """How many ``|`` in the text between a format's fields are regex alternation at the top
    level (not escaped, not in a character class, not inside a group)."""
    text = _FIELD.sub("", fmt)
    bars = depth = 0
    escaped = in_class = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "|" and depth == 0:
            bars += 1
    return bars


# -- timestamps ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # a log repeats its seconds: most lines hit the cache
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
    return _apache_epoch(fields["Time"] or "")


@functools.lru_cache(maxsize=4096)  # a log repeats its seconds
def _apache_epoch(text: str) -> float:
    _weekday, month, day, hms, year = text.split()
    return _epoch(int(year), _month(month), int(day), hms)


def hdfs_timestamp(fields: Mapping[str, str | None]) -> float:
    """``Date`` ``081109`` (yymmdd, 20yy) and ``Time`` ``203615`` (HHMMSS) -> epoch seconds (UTC).

    Raises:
        ValueError: not 6 digits each, or not a valid date/time.
    """
    return _hdfs_epoch(fields["Date"] or "", fields["Time"] or "")


@functools.lru_cache(maxsize=4096)  # a log repeats its seconds
def _hdfs_epoch(date: str, time: str) -> float:
    if not (len(date) == 6 and date.isdigit() and len(time) == 6 and time.isdigit()):
        raise ValueError(f"bad HDFS date/time {date!r} {time!r}")
    return _epoch(2000 + int(date[:2]), int(date[2:4]), int(date[4:]), f"{time[:2]}:{time[2:4]}:{time[4:]}")


def syslog_timestamp(
    month_field: str, day_field: str, time_field: str, *, year: int
) -> Callable[[Mapping[str, str | None]], float]:
    """A timestamp reader for syslog-style times without a year (``Jun 14 15:16:01``).

    Args:
        month_field: the name of the field holding the month (``Jun``).
        day_field: the name of the field holding the day of the month (``14``).
        time_field: the name of the field holding the time (``15:16:01``).
        year: the year to assume (syslog lines do not carry one). No roll-over at New Year is
            attempted: a file spanning Dec -> Jan would go backwards in time.

    Returns:
        fields -> epoch seconds (UTC); it raises ValueError on a bad month/day/time.
    """

    def timestamp(fields: Mapping[str, str | None]) -> float:
        return _syslog_epoch(fields[month_field], fields[day_field], fields[time_field], year)

    return timestamp


@functools.lru_cache(maxsize=4096)  # a log repeats its seconds
def _syslog_epoch(month: str | None, day: str | None, hms: str | None, year: int) -> float:
    return _epoch(year, _month(month), int(day or ""), hms or "")


@functools.lru_cache(maxsize=1024)  # window bounds: each end is the next window's start
def iso_utc(epoch_s: float) -> str:
    """Epoch seconds -> ISO-8601 in UTC with a ``Z`` suffix, e.g. ``2005-12-04T04:00:00Z``."""
    text = datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()
    return text.replace("+00:00", "Z")


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


@functools.lru_cache(maxsize=4096)  # a log repeats its seconds: most lines hit the cache
def _read_time(text: str, pattern: str, year: int) -> float:
    """Epoch seconds of ``text`` read with ``pattern`` (``year`` for patterns without one).

    Raises:
        ValueError: ``text`` does not read with ``pattern``.
    """
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

    def _timed(self, text: str, pattern: str) -> float:
        at = _read_time(text, pattern, self.year + self._years_added)
        if not has_year(pattern) and self._previous is not None:
            if at < self._previous - YEAR_ROLLOVER_S:  # crossed New Year
                self._years_added += 1
                at = _read_time(text, pattern, self.year + self._years_added)
            elif at > self._previous + YEAR_ROLLOVER_S and self._years_added:  # a late line from the year before
                at = _read_time(text, pattern, self.year + self._years_added - 1)
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
