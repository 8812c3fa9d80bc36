"""File analysis (``reactive-services logs analyze``): the log-analytics service over one file, on the embedded broker.

The file is replayed to ``logs`` on an :class:`reactive_services.adapters.memory.InMemoryBroker`,
a :class:`LogsController` / :class:`LogAnalyticsService` consumes it in a
:class:`reactive_services.Microservice`, and the report is read back from the ``log.stats``,
``log.alert`` and ``logs.late`` topics. :func:`make_source` builds the :class:`LogSource` from
the command's options.

Example::

    report = await analyze_file(Path("Zookeeper_2k.log"),
                                make_source("<Date> <Time> - <Level>  \\\\[<Node>:<Component>@<Id>\\\\] - <Content>"),
                                assignments=Path("out.csv"))
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from reactive_services.adapters import DeadLetterSink
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.errors import ConfigError

from .._runtime import Microservice
from ._evaluation import miner_settings
from ._events import LogEvent
from ._formats import LogFormat, TimestampReader, quoted
from ._levels import ERROR_LEVELS
from ._miner import MinerSettings
from ._parsing import LogSource, read_lines
from ._pipeline import ALERT_TOPIC, LATE_TOPIC, LOGS_TOPIC, MAX_LINE_CHARS, STATS_TOPIC, replay_logs
from ._service import LogAnalyticsService, LogsController
from ._templates import DEFAULT_MASKING, DrainSettings

_NAMED_MASK = re.compile(r"^<([A-Za-z_][A-Za-z0-9_]*)>=(.+)$", re.DOTALL)
# what looks like a named mask but is not one: a bad name, or no regex
_LOOSE_NAMED_MASK = re.compile(r"^<([^<>]*)>=(.*)$", re.DOTALL)
# texts on which a mask must not find a zero-length match (``x*``, ``\b``, ``(?=a)``, ``^``)
_EMPTY_MATCH_SAMPLES = ("", "a", "ab 12 x-y", "tickTime=2000 user root", " ")

#: :func:`analyze_file` warns when more than this share of a source's lines are late (they
#: arrived after every window holding their time had closed, so no window counts them).
MAX_LATE_SHARE = 0.5

#: The values of a level field :func:`level_problem` takes for levels (compared
#: case-insensitively, brackets and ``:`` around them ignored): :data:`ERROR_LEVELS`, the
#: other syslog severities (``warning``, ``notice``, ``info``, ``debug``) and their short forms,
#: log4j / logback / java.util.logging levels (``trace``, ``fine``, ``config``, ...), Windows
#: event levels (``information``, ``verbose``) and Android's one-letter priorities
#: (``V D I W E F A``).
LEVEL_WORDS: frozenset[str] = ERROR_LEVELS | frozenset(
    {
        *("warn", "warning", "notice", "info", "information", "informational", "debug", "trace"),
        *("fine", "finer", "finest", "config", "verbose", "panic", "failure"),
        *("v", "d", "i", "w", "e", "f", "a"),
    }
)
#: :func:`level_problem` warns when more than this share of the parsed lines' level values are
#: not in :data:`LEVEL_WORDS`.
MAX_NON_LEVEL_SHARE = 0.5


def parse_mask(text: str) -> tuple[str, str]:
    """A ``--mask`` value -> ``(regex, mask name)`` for drain3.

    ``REGEX`` masks each match as ``<*>`` (a variable); ``<NAME>=REGEX`` masks it as ``<NAME>``.

    Raises:
        ConfigError("mask", ...): the regex does not compile or matches the empty string
            (it would insert a mask between every two characters), or ``<NAME>=...`` has no
            regex or a name that is not letters, digits and ``_``.
    """
    named = _NAMED_MASK.match(text)
    if named is None and (loose := _LOOSE_NAMED_MASK.match(text)) is not None:
        name, regex = loose.groups()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError("mask", f"{quoted(text)}: mask name <{name}> must be letters, digits or _ (<NAME>=REGEX)")
        raise ConfigError("mask", f"{quoted(text)} names a mask but gives no regex after '=' (<NAME>=REGEX)")
    regex, name = (named.group(2), named.group(1)) if named else (text, "*")
    try:
        compiled = re.compile(regex)
    except (re.error, OverflowError, RecursionError) as exc:
        raise ConfigError("mask", f"{quoted(text)} is not a valid regex: {exc}") from exc
    for sample in _EMPTY_MATCH_SAMPLES:
        if any(m.end() == m.start() for m in compiled.finditer(sample)):
            raise ConfigError("mask", f"{quoted(text)} can match the empty string (e.g. in {sample!r})")
    return regex, name


def make_source(
    fmt: str,
    *,
    known: Mapping[str, LogSource] | None = None,
    name: str | None = None,
    masks: Sequence[str] = (),
    default_masks: bool = True,
    miner: str | None = None,
    depth: int | None = None,
    sim_th: float | None = None,
    max_children: int | None = None,
    level_field: str | None = "",
    component_field: str | None = "",
    time_format: str | None = None,
    year: int | None = None,
    window_s: float | None = None,
    slide_s: float | None = None,
    allowed_lateness_s: float | None = None,
    alerts: dict[str, Any] | None = None,
) -> LogSource:
    """The :class:`LogSource` for ``logs analyze`` options.

    Warns (:class:`UserWarning`) when the format compiles but matches nothing useful (an
    unescaped ``|``: see :meth:`LogFormat.problems`).

    Args:
        fmt: the name of a source in ``known`` (any case), which brings its format, time,
            level rules and miner settings; or a format string in loghub notation (it must
            have a ``<Content>`` field).
        known: named sources ``fmt`` may refer to, ``{name: LogSource}`` (None: none).
        name: the source name (default: the known source's name, else ``"log"``).
        masks: ``--mask`` values (see :func:`parse_mask`), applied before the default masks.
        default_masks: keep the default masks (:data:`DEFAULT_MINER_MASKING` for the default
            miner, :data:`DEFAULT_MASKING` for drain3) and the source's own.
        miner: ``"default"`` (the project's :class:`LogMiner`, general settings), ``"drain3"``,
            or None: the source's miner.
        depth: drain3's tree depth (drain3 only; None: the default).
        sim_th: drain3's similarity threshold (drain3 only; None: the default).
        max_children: drain3's most children per node (drain3 only; None: the default).
        level_field: the field holding the level; ``""`` (default): the source's, or
            ``Level`` when the format has that field; None: infer levels from the content.
        component_field: likewise for the component (``Component``).
        time_format: ``strptime`` pattern of the time fields (None: detected); it replaces a
            known source's own timestamp function, and the source's ``year`` is kept.
        year: year for times without one (None: the known source's ``year``, else 2000).
        window_s: the window length, in seconds of event time (None: the source's).
        slide_s: the distance between window starts, in seconds (None: the source's).
        allowed_lateness_s: the allowed lateness, in seconds of event time (None: the source's).
        alerts: :class:`AlertRules` fields to override.

    Raises:
        ConfigError: the offending option named (``format``, ``mask``, ``miner``, ``depth``,
            ``sim_th`` (also when given for the default miner), ``window``, ``slide``,
            ``lateness``, ``level_field``, ...).
    """
    known = known or {}
    shipped = {key.lower(): source for key, source in known.items()}.get(fmt.strip().lower())
    if shipped is None:
        try:
            fields = LogFormat.from_loghub(fmt).fields
        except (ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError(
                "format", f"{quoted(fmt)} is neither a known source ({', '.join(known)}) nor a loghub format: {exc}"
            ) from exc
        if "Content" not in fields:
            raise ConfigError("format", f"{quoted(fmt)} has no <Content> field (the message to mine templates from)")
        base = LogSource(
            name=name or "log",
            format=fmt,
            level_field="Level" if "Level" in fields else None,
            component_field="Component" if "Component" in fields else None,
        )
    else:
        base = dataclasses.replace(shipped, name=name or shipped.name)
        fields = base.log_format.fields

    parsed_masks = tuple(parse_mask(m) for m in masks)
    if miner not in (None, "default", "drain3"):
        raise ConfigError("miner", f"{miner!r} is not a miner (default, drain3)")
    use_drain = miner == "drain3" or (miner is None and isinstance(base.miner, DrainSettings))
    chosen: MinerSettings | DrainSettings
    if use_drain:
        drain = base.miner if isinstance(base.miner, DrainSettings) else DrainSettings()
        try:
            chosen = DrainSettings(
                depth=drain.depth if depth is None else depth,
                sim_th=drain.sim_th if sim_th is None else sim_th,
                max_children=drain.max_children if max_children is None else max_children,
                masking=parsed_masks + (drain.masking if default_masks else ()),
            )
        except ValueError as exc:  # the message starts with the field: depth, sim_th or max_children
            raise ConfigError(str(exc).split(" ", 1)[0], str(exc)) from exc
    else:
        for option, given in (("depth", depth), ("sim_th", sim_th), ("max_children", max_children)):
            if given is not None:
                raise ConfigError(option, f"{option} applies to the drain3 miner only (select it with miner='drain3')")
        own = base.miner if isinstance(base.miner, MinerSettings) else MinerSettings()
        chosen = dataclasses.replace(
            own, masking=parsed_masks + (own.masking if default_masks else ()), default_masks=default_masks
        )

    changes: dict[str, Any] = {"miner": chosen}
    for key, value in (("level_field", level_field), ("component_field", component_field)):
        if value != "":
            if value is not None and value not in fields:
                raise ConfigError(key, f"<{value}> is not a field of the format ({', '.join(fields)})")
            changes[key] = value
    if time_format is not None:
        try:
            datetime.strptime("", time_format)
        except ValueError as exc:
            if "directive" in str(exc) or "stray %" in str(exc):
                raise ConfigError("time_format", f"{quoted(time_format)}: {exc}") from exc
        changes["time_format"], changes["timestamp"] = time_format, None
    if year is not None:
        changes["year"] = year
        if shipped is not None and base.timestamp is not None and time_format is None:
            changes["timestamp"] = None  # the detected reader takes the year
    if alerts:
        try:
            changes["alerts"] = dataclasses.replace(base.alerts, **alerts)
        except (TypeError, ValueError) as exc:
            raise ConfigError("alerts", str(exc)) from exc
    for key, seconds in (("window_s", window_s), ("slide_s", slide_s), ("allowed_lateness_s", allowed_lateness_s)):
        if seconds is not None:
            changes[key] = seconds
    try:
        made = dataclasses.replace(base, **changes)
    except ConfigError as exc:  # LogSource names its attribute: name the option instead
        option = {"window_s": "window", "slide_s": "slide", "allowed_lateness_s": "lateness"}.get(exc.key, exc.key)
        raise ConfigError(option, exc.message) from exc
    for problem in made.log_format.problems():
        warnings.warn(problem, UserWarning, stacklevel=2)
    return made


def detect_time(source: LogSource, lines: Sequence[str], *, probe: int = 200) -> str | None:
    """How the first ``probe`` matching lines' times read: the ``strptime`` pattern chosen,
    ``"custom"`` for a source with its own timestamp function, ``"none"`` when the format has
    no time field, or None when the format has time fields but no pattern reads them."""
    if source.timestamp is not None:
        return "custom"
    reader = TimestampReader(source.log_format.fields, year=source.year, time_format=source.time_format)
    if not reader.time_fields:
        return "none"
    seen = 0
    for line in lines:
        fields = source.log_format.parse(line)
        if fields is None:
            continue
        try:
            reader(fields)
            return reader.pattern
        except ValueError:
            seen += 1
            if seen >= probe:
                break
    return None


def level_problem(source: LogSource, lines: Sequence[str], *, probe: int = 2000) -> str | None:
    """The warning when the source's level field holds no levels: more than
    :data:`MAX_NON_LEVEL_SHARE` of the values it takes in the first ``probe`` matching lines
    are not :data:`LEVEL_WORDS` (loghub's Linux format calls the host name ``<Level>``), so no
    line is an error and no error alert can fire; it names the setting that infers the levels
    from the content instead (``--level-field none``, ``level_field=None``). None otherwise, or
    when the source has no level field or no line matches."""
    field = source.level_field
    if field is None:
        return None
    values: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        fields = source.log_format.parse(line)
        if fields is not None:
            values.append((fields.get(field) or "").strip())
            if len(values) >= probe:
                break
    others = [value for value in values if value.strip("[]():<> ").lower() not in LEVEL_WORDS]
    if not values or len(others) <= MAX_NON_LEVEL_SHARE * len(values):
        return None
    examples = ", ".join(quoted(value) for value in dict.fromkeys(others).keys() if value)
    examples = examples if len(examples) < 80 else examples[:76] + " ..."
    return (
        f"<{field}> holds no level word in {len(others)} of the {len(values)} matching lines"
        + (f" (e.g. {examples})" if examples else "")
        + ": no line is an error, so no error alert can fire; give --level-field none (level_field=None) to infer "
        "the levels from the content"
    )


def late_problem(source: LogSource, late: int, lines: int) -> str | None:
    """The warning when more than :data:`MAX_LATE_SHARE` of a source's ``lines`` were ``late``
    (the log is out of time order by more than its allowed lateness), naming the setting that
    counts them (``--lateness SECONDS``, ``allowed_lateness_s``); None otherwise."""
    if not lines or late <= MAX_LATE_SHARE * lines:
        return None
    return (
        f"{late} of {lines} lines arrived after their window had closed (the log is out of time order by more "
        f"than the allowed lateness, {source.allowed_lateness_s:g} s): no window counts them; give --lateness "
        "SECONDS (allowed_lateness_s) as large as the disorder to count them"
    )


def default_masks_on(settings: MinerSettings | DrainSettings) -> bool:
    """Whether a miner applies its default masks (``--no-default-masks`` not given): the
    :class:`MinerSettings` flag; for drain3, whose masks are all listed in ``masking`` (the
    defaults last, see :func:`make_source`), whether they end with :data:`DEFAULT_MASKING`."""
    if isinstance(settings, DrainSettings):
        return settings.masking[len(settings.masking) - len(DEFAULT_MASKING) :] == DEFAULT_MASKING
    return settings.default_masks


def write_assignments(path: Path, assignments: Sequence[tuple[int, int]], templates: dict[int, str]) -> None:
    """Write ``line_no,template_id,template`` rows (one per input line, in line order; the
    template is the final text of the line's cluster) as CSV with a header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["line_no", "template_id", "template"])
        for line_no, template_id in sorted(assignments):
            writer.writerow([line_no, template_id, templates[template_id]])


async def analyze_file(
    path: Path,
    source: LogSource,
    *,
    assignments: Path | None = None,
    timeout_s: float = 600.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the log-analytics service over one file on the embedded broker; return the report.

    Args:
        path: the log file (UTF-8; bad bytes replaced).
        source: how to read it (:func:`make_source`).
        assignments: when given, write the per-line template assignments there (CSV).
        timeout_s: seconds allowed for the service to read every line.
        progress: called with ``(lines analysed, lines in the file)`` now and then.

    Returns:
        ``{"file", "source", "format", "time": pattern | "custom" | "none" | None,
        "settings": {"miner": {...miner_settings, "masks": [[regex, name], ...] (the default
        miner: the user's; drain3: every mask applied), "default_masks": bool
        (:func:`default_masks_on`)}, "window_s", "slide_s", "allowed_lateness_s",
        "level_field", "alerts"}, "lines", "parsed", "unparsed", "late", "dead_lettered", "truncated"
        (lines longer than MAX_LINE_CHARS, analysed cut to that length), "blank" (empty or
        whitespace lines, counted as unparsed),
        "by_level": {level: n}, "templates": [{"template_id", "template", "lines"}, ...] (most
        lines first), "windows": [log.stats values in emission order], "alerts": [log.alert
        values], "alerts_by_kind": {kind: n}, "late_lines": [logs.late values], "warnings":
        [sentences: :meth:`LogFormat.problems`, :func:`level_problem`, :func:`late_problem`],
        "elapsed_s"}``.

    Warns:
        UserWarning: the file has no non-blank line; most lines do not match the format, or
            most have an empty ``<Content>`` (:meth:`LogFormat.problems`); the level field holds no levels
            (:func:`level_problem`); after the run, more than :data:`MAX_LATE_SHARE` of
            the lines were late (:func:`late_problem`).

    Raises:
        OSError: the file cannot be read.
        TimeoutError: the service did not read every line within ``timeout_s``.
        Exception: the service's stream failed (re-raised from :meth:`LogAnalyticsService.flush`).
    """
    started = time.monotonic()
    lines = read_lines(path)
    time_pattern = detect_time(source, lines)
    problems = source.log_format.problems(lines)
    blank = sum(1 for line in lines if not line.strip())
    if blank == len(lines):  # not "no time could be read", nor any other problem of the format
        problems.append(f"{path} has no non-blank line: nothing to analyse")
    if (level_warning := level_problem(source, lines)) is not None:
        problems.append(level_warning)
    for problem in problems:
        if "regex alternation" not in problem:  # make_source warned of that one already
            warnings.warn(problem, UserWarning, stacklevel=2)
    broker = InMemoryBroker()
    await broker.start()
    assigned: list[tuple[int, int]] = []
    everything = asyncio.Event()  # every line analysed: no polling delay at the end

    def record(event: LogEvent) -> None:
        assigned.append((event.line_no, event.template_id))
        if len(assigned) >= len(lines):
            everything.set()

    analytics = LogAnalyticsService(broker.emit, on_event=record)
    controller = LogsController(analytics, DeadLetterSink(broker), sources={source.name: source})
    service = Microservice(broker, [controller], name="log-analytics")
    try:
        await service.start()
        await replay_logs(broker, {source.name: path}, formats={source.name: source})
        deadline = time.monotonic() + timeout_s
        while controller.received < len(lines):
            if analytics.done.is_set() or service.errors:  # the stream failed: stop waiting
                await analytics.flush()
                raise service.errors[0] if service.errors else RuntimeError("the log analytics stream ended early")
            if progress:
                progress(controller.received, len(lines))
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the log analytics read {controller.received} of {len(lines)} lines in {timeout_s:.0f} s"
                )
            try:
                await asyncio.wait_for(everything.wait(), timeout=0.05)
            except TimeoutError:
                pass
        if progress:
            progress(controller.received, len(lines))
        await service.stop()  # completes the stream: the last windows are emitted
        await analytics.flush()
        if service.errors:
            raise service.errors[0]
        dead = broker.records(LOGS_TOPIC + ".DLT")

        def values(topic: str) -> list[Any]:
            return [orjson.loads(m.value) for m in broker.records(topic)]

        windows, alerts, late = values(STATS_TOPIC), values(ALERT_TOPIC), values(LATE_TOPIC)
    finally:
        await service.stop()
        await broker.stop()

    totals = analytics.report().get(source.name, {})
    late_warning = late_problem(source, totals.get("late", 0), totals.get("lines", 0))
    if late_warning is not None:
        problems.append(late_warning)
        warnings.warn(late_warning, UserWarning, stacklevel=2)
    templates = analytics.templates(source.name)
    # a line's final group: the id it got on arrival, through the merges made since
    assigned = [(line_no, analytics.resolve(source.name, tid)) for line_no, tid in assigned]
    if assignments is not None:
        write_assignments(assignments, assigned, {tid: text for tid, text, _ in templates})
    mined = source.miner
    return {
        "file": str(path),
        "source": source.name,
        "format": source.format,
        "time": time_pattern,
        "settings": {
            "miner": {
                **miner_settings(mined),
                "masks": [[regex, name] for regex, name in mined.masking],
                "default_masks": default_masks_on(mined),
            },
            "window_s": source.window_s,
            "slide_s": source.slide_s or source.window_s,
            "allowed_lateness_s": source.allowed_lateness_s,
            "level_field": source.level_field,
            "alerts": dataclasses.asdict(source.alerts),
        },
        "lines": totals.get("lines", 0),
        "parsed": totals.get("lines", 0) - totals.get("unparsed", 0),
        "unparsed": totals.get("unparsed", 0),
        "late": totals.get("late", 0),
        "dead_lettered": len(dead),
        "truncated": sum(1 for line in lines if len(line) > MAX_LINE_CHARS),
        "blank": blank,
        "by_level": totals.get("by_level", {}),
        "templates": [{"template_id": tid, "template": text, "lines": n} for tid, text, n in templates],
        "windows": windows,
        "alerts": alerts,
        "alerts_by_kind": totals.get("alerts_by_kind", {}),
        "late_lines": late,
        "warnings": problems,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
