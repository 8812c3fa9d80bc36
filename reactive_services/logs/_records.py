"""The values the log analytics publishes, declared as types: ``log.stats``, ``log.alert``,
``logs.late``.

``TypedDict`` s: at run time the values are plain dicts (building them costs nothing more);
the types describe them to readers, to mypy and to the AsyncAPI document
(:mod:`reactive_services.asyncapi`, through ``emits=`` of
:class:`~reactive_services.logs.LogsController`). A test checks that what the pipeline
publishes validates as these types.
"""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import TypedDict

__all__ = ["LateLine", "LogAlert", "WindowStats"]


class WindowStats(TypedDict):
    """A ``log.stats`` value: one event-time window of one source (see
    :func:`~reactive_services.logs.window_stats`). Times are ISO 8601 UTC strings and epoch
    seconds; counts are lines; ``error_rate`` is errors / lines in [0, 1] (0.0 for no lines);
    ``top_templates`` is ``[[template, count], ...]``, most frequent first; ``late`` counts the
    lines that arrived after their window closed."""

    source: str
    window_start: str
    window_end: str
    window_start_s: float
    window_end_s: float
    lines: int
    by_level: dict[str, int]
    errors: int
    error_rate: float
    unparsed: int
    top_templates: list[tuple[str, int]]
    late: int


class LogAlert(TypedDict):
    """A ``log.alert`` value: a rule that fired on one window (see
    :class:`~reactive_services.logs.AlertRules`): ``kind`` names the rule, ``message`` says it in
    words, ``evidence`` holds the figures it looked at (by kind: lines, errors, error_rate,
    threshold, baseline_errors, the top error templates and the window's new and rising
    templates... or templates and counts), ``sample`` up to a few raw lines."""

    kind: Literal["error_rate", "new_template", "template_rate"]
    source: str
    window_start: str
    window_end: str
    window_start_s: float
    window_end_s: float
    message: str
    evidence: dict[str, Any]
    sample: list[str]


class LateLine(TypedDict):
    """A ``logs.late`` value: a line that arrived after every window containing its event time
    had closed (see :func:`~reactive_services.logs.late_record`)."""

    source: str
    line_no: int
    line: str
    event_time: str
    event_time_s: float
    reported_with_window_start_s: float
    reason: str
