"""Window statistics: :func:`window_stats`, the ``log.stats`` value of one window of :class:`LogEvent` s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from reactive_services.operators import Window

from ._events import LogEvent, level_of, parsed_of, template_id_of, template_of
from ._formats import iso_utc
from ._levels import ERROR_LEVELS

_COUNT = itemgetter(1)


def template_counts(events: Sequence[LogEvent]) -> tuple[Counter[int], dict[int, str]]:
    """``(lines per template id, each id's template text)`` over ``events``: the text of an
    id's last event in ``events`` order (later lines carry the more general template). Counts
    keep first-seen order, so ``most_common`` breaks ties by it."""
    ids = list(map(template_id_of, events))
    return Counter(ids), dict(zip(ids, map(template_of, events), strict=True))


def _top_templates(counts: Counter[int], latest: dict[int, str], top_n: int) -> list[list[Any]]:
    # as Counter.most_common(top_n), first-seen order among equal counts (sorted is stable)
    top = sorted(counts.items(), key=_COUNT, reverse=True)[:top_n]
    return [[latest[template_id], count] for template_id, count in top]


def window_stats(
    window: Window[LogEvent],
    *,
    error_levels: Iterable[str] = ERROR_LEVELS,
    top_n: int = 5,
    counts: tuple[Counter[int], dict[int, str]] | None = None,
) -> dict[str, Any]:
    """The ``log.stats`` value of one window.

    ``counts``: :func:`template_counts` of ``window.items`` if computed already (the alert
    check needs them too), else computed here.

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
    by_level = Counter(map(level_of, items))
    unparsed = len(items) - sum(map(parsed_of, items))
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
        "top_templates": _top_templates(*(counts or template_counts(items)), top_n),
        "late": len(window.late),
    }
