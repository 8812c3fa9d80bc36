"""Window statistics: :func:`window_stats`, the ``log.stats`` value of one window of :class:`LogEvent` s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from reactive_services.operators import Window

from ._events import LogEvent
from ._formats import iso_utc
from ._levels import ERROR_LEVELS


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
    wanted = error_levels if error_levels is ERROR_LEVELS else frozenset(level.lower() for level in error_levels)
    items = window.items
    by_level: Counter[str] = Counter()
    unparsed = 0
    for event in items:
        by_level[event.level] += 1
        if not event.parsed:
            unparsed += 1
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
        "unparsed": unparsed,
        "top_templates": _top_templates(items, top_n),
        "late": len(window.late),
    }
