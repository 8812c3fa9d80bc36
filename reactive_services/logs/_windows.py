"""Window statistics: :func:`window_stats`, the ``log.stats`` value of one window of :class:`LogEvent` s."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from reactive_services.operators import Window

from ._events import LogEvent
from ._formats import iso_utc
from ._levels import ERROR_LEVELS

_COUNT = itemgetter(1)


@dataclass(slots=True)
class WindowCounts:
    """What the per-window stats and alert rules count, over a window's on-time items, from
    one pass (:func:`count_window`).

    Attributes:
        templates: lines per template id, in first-seen order (``top_templates`` breaks ties
            by it, as ``Counter.most_common`` does).
        texts: each id's template text, from its last line in item order (later lines carry the
            more general template).
        levels: lines per level, in first-seen order.
        parsed: how many lines parsed.
        first_time: the earliest event time, epoch seconds (``inf`` when there is no item).
    """

    templates: dict[int, int]
    texts: dict[int, str]
    levels: dict[str, int]
    parsed: int
    first_time: float


def count_window(events: Iterable[LogEvent]) -> WindowCounts:
    """:class:`WindowCounts` of ``events``, in one Python loop: cheaper than a C-level pass per
    count (``Counter(map(...))``) for the few lines of a typical window, and no slower per line
    for a large one (measured in bench/log_throughput.py's service pass)."""
    templates: dict[int, int] = {}
    texts: dict[int, str] = {}
    levels: dict[str, int] = {}
    parsed = 0
    first = math.inf
    count_of, level_count = templates.get, levels.get
    for event in events:
        tid = event.template_id
        templates[tid] = count_of(tid, 0) + 1
        texts[tid] = event.template
        level = event.level
        levels[level] = level_count(level, 0) + 1
        if event.parsed:
            parsed += 1
        if event.timestamp < first:
            first = event.timestamp
    return WindowCounts(templates, texts, levels, parsed, first)


def _top_templates(counts: Mapping[int, int], latest: Mapping[int, str], top_n: int) -> list[list[Any]]:
    # as Counter.most_common(top_n), first-seen order among equal counts (sorted is stable)
    top = sorted(counts.items(), key=_COUNT, reverse=True)[:top_n]
    return [[latest[template_id], count] for template_id, count in top]


def window_stats(
    window: Window[LogEvent],
    *,
    error_levels: Iterable[str] = ERROR_LEVELS,
    top_n: int = 5,
    counts: WindowCounts | None = None,
) -> dict[str, Any]:
    """The ``log.stats`` value of one window.

    ``counts``: :func:`count_window` of ``window.items`` if computed already (the alert check
    needs them too), else computed here.

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
    wanted = error_levels if error_levels is ERROR_LEVELS else frozenset(level.lower() for level in error_levels)
    items = window.items
    if counts is None:
        counts = count_window(items)
    by_level = counts.levels
    errors = 0
    for level, count in by_level.items():
        if level.lower() in wanted:
            errors += count
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
        "unparsed": lines - counts.parsed,
        "top_templates": _top_templates(counts.templates, counts.texts, top_n),
        "late": len(window.late),
    }
