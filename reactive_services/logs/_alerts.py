"""Alerts on a source's windows: :class:`AlertRules` (when), :func:`alert_for` (the error-rate
rule) and :class:`AlertDetector` (all three rules, stateful per source).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reactive_services.operators import Window

from ._events import LogEvent
from ._levels import ERROR_LEVELS

#: ``log.alert`` fires when a window's error rate is at least this (fraction of its lines).
DEFAULT_ALERT_THRESHOLD = 0.3
#: ... and the window has at least this many lines (so 1 error out of 2 lines is no alert).
DEFAULT_ALERT_MIN_LINES = 10


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
