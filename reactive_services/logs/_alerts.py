"""Alerts on a source's windows: :class:`AlertRules` (when), :func:`alert_for` (the error-rate
rule) and :class:`AlertDetector` (all three rules, stateful per source).

The defaults are tuned for application logs read in the default 10-minute windows (see
:class:`~reactive_services.logs.LogSource`): each rule compares a window with the source's own
recent past (a *baseline*: the mean per window over up to ``history`` earlier windows that do
not overlap it) and has absolute floors, so that a handful of lines is never an alert. This is
our own design, in the spirit of threshold-plus-baseline alerting; the numbers were chosen on a
synthetic hour of application log with a 15-minute error burst and on the shipped loghub
samples (docs/shop/log-analytics.md, "Alerts", gives the counts and how they were judged).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reactive_services.operators import Window

from ._events import EMPTY_TEMPLATE_ID, LogEvent
from ._levels import ERROR_LEVELS
from ._windows import WindowCounts, count_window

#: The least share of a window's length after its source's first line for the window to be a
#: baseline window (:class:`AlertRules`).
MIN_BASELINE_COVERAGE = 0.5

#: ``log.alert`` fires when a window's error rate is at least this (fraction of its lines) ...
DEFAULT_ALERT_THRESHOLD = 0.1
#: ... and the window has at least this many lines (so 1 error out of 2 lines is no alert).
DEFAULT_ALERT_MIN_LINES = 10


@dataclass(frozen=True, slots=True)
class AlertRules:
    """When a source's window raises an alert (``log.alert``); at most one alert of each kind per window.

    The *baseline* of a window is taken over the last ``history`` earlier windows of the source
    that ended at or before its start (so overlapping sliding windows are not part of it; only
    windows that had lines are emitted, so a quiet gap does not lower it) and of which at least
    :data:`MIN_BASELINE_COVERAGE` of the length comes after the source's first line: a window
    that began long before it holds a fraction of a window's lines, which would lower the
    baseline (with sliding windows, about half of the first ``size / slide`` windows; with
    tumbling ones, the first when the first line came in its second half). The three rules, each
    evaluated on every window emitted for the source, in emission order:

    * ``error_rate``: ``lines >= min_lines``, ``errors >= min_errors``, ``errors / lines >=
      error_rate`` and, once the source has ``warmup`` baseline windows, ``errors >=
      error_factor * baseline`` where ``baseline`` is the mean errors per baseline window
      (errors are lines whose level is in :data:`ERROR_LEVELS`). So a source that always logs
      errors at the same pace does not alert every window, and a burst alerts in the window
      where it starts.
    * ``new_template``: one or more templates that no earlier window of the source contained
      (its items or late items) appear at least ``new_template_min`` times in this window, and
      each is not a near-copy of a known template: a known template with as many tokens that
      agrees on at least ``new_template_similarity`` of the positions (a ``<...>`` token agrees
      with any) makes it a variant (e.g. a host name the masks did not catch), not new. Not
      raised before the source has had ``warmup`` windows: at the start every template is new.
    * ``template_rate``: a template seen before this window occurs ``count >= rise_min_count``
      times and ``count >= rise_factor * baseline``, where ``baseline`` is its mean count per
      baseline window (a window with no line of the template counts 0). Needs ``warmup``
      baseline windows. Windows have equal length, so counts compare rates.

    One incident, one alert: a window with an error alert has no other alert (its new and
    rising templates are listed in the error alert's evidence), and an *episode* -- windows
    that touch (each starts at or before the previous one's end) and all fire the same rule --
    is alerted in its first window only, unless it grows: again when the errors reach
    ``error_factor`` times those of the window that alerted (``rise_factor`` times its count for
    a template), in a window that does not overlap it (sliding windows moving over a burst fill
    up with it: that is not growth). A window of an error episode that does not alert again
    raises no other alert either: its new and rising templates are the incident's.

    Attributes:
        error_rate: fraction in [0, 1]: the least error rate of an error alert.
        min_lines: fewest lines (messages) a window needs for an error alert.
        min_errors: fewest error lines a window needs for an error alert.
        error_factor: how many times the baseline errors per window a window's errors must
            reach (>= 1; 1 turns the baseline off).
        new_template_min: fewest lines of a new template for a new-template alert.
        new_template_similarity: fraction in (0, 1]: how alike (share of equal token positions)
            a template must be to a known one to count as a variant of it; 1 compares exactly.
        rise_factor: how many times its baseline a template's count must reach (> 1).
        rise_min_count: fewest lines of the template in the window for a rate alert.
        history: how many earlier windows make the baseline.
        warmup: earlier windows a source needs before new-template and rate alerts, and before
            the error rule compares with the baseline.
        sample_size: raw lines quoted as evidence in each alert.
    """

    error_rate: float = DEFAULT_ALERT_THRESHOLD
    min_lines: int = DEFAULT_ALERT_MIN_LINES
    min_errors: int = 5
    error_factor: float = 3.0
    new_template_min: int = 3
    new_template_similarity: float = 0.6
    rise_factor: float = 4.0
    rise_min_count: int = 20
    history: int = 6
    warmup: int = 2
    sample_size: int = 3

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate!r}")
        if not (math.isfinite(self.error_factor) and self.error_factor >= 1.0):
            raise ValueError(f"error_factor must be >= 1, got {self.error_factor!r}")
        if not 0.0 < self.new_template_similarity <= 1.0:
            raise ValueError(f"new_template_similarity must be in (0, 1], got {self.new_template_similarity!r}")
        if not (math.isfinite(self.rise_factor) and self.rise_factor > 1.0):
            raise ValueError(f"rise_factor must be > 1, got {self.rise_factor!r}")
        for name in (
            "min_lines",
            "min_errors",
            "new_template_min",
            "rise_min_count",
            "history",
            "warmup",
            "sample_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


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


def _over_floors(stats: Mapping[str, Any], threshold: float, min_lines: int, min_errors: int) -> bool:
    """The error-rate rule's absolute floors hold for ``stats`` (lines, errors, error rate)."""
    return bool(stats["lines"] >= min_lines and stats["errors"] >= min_errors and stats["error_rate"] >= threshold)


def _error_rule_fires(
    stats: Mapping[str, Any], threshold: float, min_lines: int, min_errors: int, baseline: float | None, factor: float
) -> bool:
    """:func:`alert_for`'s rule: the floors hold and, with a baseline, the errors reach ``factor`` times it."""
    return _over_floors(stats, threshold, min_lines, min_errors) and (
        baseline is None or stats["errors"] >= factor * baseline
    )


def _template_rows(rows: list[tuple[int, int]], text: Mapping[int, str]) -> list[dict[str, Any]]:
    return [{"template_id": tid, "template": text[tid], "count": n} for tid, n in rows]


def alert_for(
    stats: Mapping[str, Any],
    events: Sequence[LogEvent],
    *,
    threshold: float = DEFAULT_ALERT_THRESHOLD,
    min_lines: int = DEFAULT_ALERT_MIN_LINES,
    min_errors: int = 1,
    baseline: float | None = None,
    factor: float = 1.0,
    error_levels: Iterable[str] = ERROR_LEVELS,
    sample_size: int = 3,
) -> dict[str, Any] | None:
    """The error-rate ``log.alert`` value for a window, or None when the rule does not fire.

    Rule: ``stats["lines"] >= min_lines``, ``stats["errors"] >= min_errors``,
    ``stats["error_rate"] >= threshold`` and, when ``baseline`` is given, ``stats["errors"] >=
    factor * baseline``.

    Args:
        stats: the window's :func:`window_stats`.
        events: the window's on-time events (``window.items``), for the sample.
        threshold: error-rate fraction in [0, 1].
        min_lines: fewest lines for the rule to fire.
        min_errors: fewest error lines for the rule to fire.
        baseline: the source's mean errors per earlier window (None: no comparison).
        factor: how many times ``baseline`` the errors must reach.
        sample_size: how many raw error lines to quote.

    Returns:
        ``{"kind": "error_rate", "source", "window_start", "window_end", "window_start_s",
        "window_end_s", "message": str, "evidence": {"lines", "errors", "error_rate",
        "threshold", "min_lines", "min_errors", "baseline_errors" (None without a baseline),
        "error_factor", "by_level"}, "sample": [up to sample_size raw error lines: those of the most frequent error
        template first, each template's in order]}``
        or None.
    """
    if not _error_rule_fires(stats, threshold, min_lines, min_errors, baseline, factor):
        return None
    errors = stats["errors"]
    wanted = frozenset(level.lower() for level in error_levels)
    failing = [event for event in events if event.level.lower() in wanted]
    by_template = Counter(event.template_id for event in failing)
    # the lines of the most frequent error template first (the one the alert lists first), in order
    failing.sort(key=lambda event: -by_template[event.template_id])
    sample = [event.line or event.content for event in failing[:sample_size]]
    against = "" if baseline is None else f", baseline {baseline:.1f} errors per window"
    message = (
        f"{stats['source']}: error rate {stats['error_rate']:.2f} >= {threshold} "
        f"({errors} of {stats['lines']} lines{against}, {stats['window_start']}..{stats['window_end']})"
    )
    evidence = {
        "lines": stats["lines"],
        "errors": errors,
        "error_rate": stats["error_rate"],
        "threshold": threshold,
        "min_lines": min_lines,
        "min_errors": min_errors,
        "baseline_errors": baseline,
        "error_factor": factor,
        "by_level": dict(stats["by_level"]),
    }
    return _alert("error_rate", stats, message, evidence, sample)


def _is_variable(token: str) -> bool:
    return len(token) > 2 and token.startswith("<") and token.endswith(">")


def _agree(x: str, y: str) -> bool:
    if x == y:
        return True
    # a variable against a token with a digit: most likely a value the masks did not catch
    return (_is_variable(x) and any(c.isdigit() for c in y)) or (_is_variable(y) and any(c.isdigit() for c in x))


def template_similarity(a: str, b: str) -> float:
    """The share of token positions (split on whitespace) where templates ``a`` and ``b`` agree:
    equal tokens, or a variable (``<*>``, ``<IP>``, ...) against a token with a digit in it (a
    value the masks did not catch, e.g. a host name ``24-54-76-216.bflony.adelphia.net``).
    0.0 when they have different numbers of tokens. Our own design, after drain3's token-wise
    similarity (He et al., "Drain", ICWS 2017), which counts equal tokens only."""
    return _token_similarity(a.split(), b.split())


def _token_similarity(ta: Sequence[str], tb: Sequence[str]) -> float:
    """:func:`template_similarity` of templates already split into tokens."""
    if len(ta) != len(tb):
        return 0.0
    if not ta:
        return 1.0
    return sum(1 for x, y in zip(ta, tb, strict=True) if _agree(x, y)) / len(ta)


class AlertDetector:
    """The :class:`AlertRules` of one source, applied to its windows in emission order (stateful).

    It remembers which templates earlier windows contained (and their texts), each earlier
    window's error and template counts (for the baselines) and the episodes going on. One detector per source and per
    pipeline subscription.

    Example:
        >>> detector = AlertDetector(AlertRules())
        >>> alerts = detector.check(window, window_stats(window))  # doctest: +SKIP
    """

    def __init__(self, rules: AlertRules | None = None, *, error_levels: Iterable[str] = ERROR_LEVELS) -> None:
        self.rules = rules or AlertRules()
        self.error_levels = frozenset(level.lower() for level in error_levels)
        self.windows = 0
        self._seen: dict[int, str] = {}  # template id -> its text when last seen
        self._tokens: dict[str, list[str]] = {}  # a known template text -> its tokens
        # (end, errors, lines per template id) of earlier windows
        self._history: deque[tuple[float, int, dict[int, int]]] = deque()
        self._ordered = True  # the history's ends never went down (so the latest ends last)
        self._since = math.inf  # the earliest event time seen (the source's first line)
        # the episodes going on in the latest window: (its end, the errors of the error alert
        # that opened the error episode or None, that alert's window end, {template id: (its
        # count, the window end) in the alert that opened its rate episode})
        self._episodes: tuple[float, int | None, float, dict[int, tuple[int, float]]] = (-math.inf, None, -math.inf, {})

    def remap(self, merged: Mapping[int, int]) -> None:
        """Count what was remembered under merged template ids under the ids they merged into.

        ``merged``: ``{merged id: live id}`` (:attr:`LogMiner.merges`). A template known under
        an id that a later line's template absorbed is known under the new id: it is not a new
        template, and its earlier counts make the new id's baseline.
        """
        if not any(tid in merged for tid in self._seen):
            return
        seen: dict[int, str] = {}
        for tid, text in self._seen.items():
            seen[merged.get(tid, tid)] = text
        self._seen = seen
        history: deque[tuple[float, int, dict[int, int]]] = deque()
        for end, errors, counts in self._history:
            again: dict[int, int] = {}
            for tid, n in counts.items():
                live = merged.get(tid, tid)
                again[live] = again.get(live, 0) + n
            history.append((end, errors, again))
        self._history = history
        last_end, episode_errors, alerted_end, rising = self._episodes
        self._episodes = (last_end, episode_errors, alerted_end, {merged.get(tid, tid): n for tid, n in rising.items()})

    def check(
        self,
        window: Window[LogEvent],
        stats: Mapping[str, Any],
        *,
        counts: WindowCounts | None = None,
    ) -> list[dict[str, Any]]:
        """The alerts of ``window`` (an error_rate alert alone, or 0-2 of new_template,
        template_rate in that order), then remember the window.

        Args:
            window: the next window of the source (windows must come in emission order).
            stats: its :func:`window_stats`.
            counts: :func:`count_window` of ``window.items`` if computed already.
        """
        rules = self.rules
        if counts is None:
            counts = count_window(window.items)
        start = window.start
        history = self._history
        # the baseline: the last `history` windows that ended at or before this one's start
        if self._ordered and (not history or history[-1][0] <= start):  # all of them (tumbling windows)
            earlier = list(itertools.islice(history, max(0, len(history) - rules.history), None))
            overlapping = 0
        else:
            earlier = []
            overlapping = 0
            for entry in history:
                if entry[0] <= start:
                    earlier.append(entry)
                else:
                    overlapping += 1
            if len(earlier) > rules.history:
                del earlier[: -rules.history]
        warm = len(earlier) >= rules.warmup
        last_end, episode_errors, alerted_end, episode_rising = self._episodes
        if last_end < start:  # the previous window does not touch this one: no episode goes on
            episode_errors, alerted_end, episode_rising = None, -math.inf, {}
        # the error rule; the alert itself is made only if it is sent (not within an episode)
        baseline = None
        error_fires = False
        if _over_floors(stats, rules.error_rate, rules.min_lines, rules.min_errors):
            baseline = sum(entry[1] for entry in earlier) / len(earlier) if warm else None
            error_fires = _error_rule_fires(
                stats, rules.error_rate, rules.min_lines, rules.min_errors, baseline, rules.error_factor
            )
        in_incident = False  # the error episode goes on: alerted already, with this window's findings
        if error_fires:
            if episode_errors is not None and (
                stats["errors"] < rules.error_factor * episode_errors or start < alerted_end
            ):
                in_incident = True  # not grown error_factor times, or overlapping the window that alerted
            else:
                episode_errors, alerted_end = stats["errors"], window.end
        else:
            episode_errors, alerted_end = None, -math.inf
        # each template's text from its latest line in the window (the most general)
        per_template, text = counts.templates, counts.texts
        most = max(per_template.values(), default=0)  # no template as frequent: no rule looks further
        new: list[tuple[int, int]] = []
        if not in_incident and self.windows >= rules.warmup and most >= rules.new_template_min:
            new = self._new_templates(per_template, text)
        rising: list[dict[str, Any]] = []
        still: dict[int, tuple[int, float]] = {}
        if warm and most >= rules.rise_min_count:
            for row in self._rising_templates(per_template, text, [entry[2] for entry in earlier]):
                opened = episode_rising.get(row["template_id"])
                if opened is not None and (row["count"] < rules.rise_factor * opened[0] or start < opened[1]):
                    still[row["template_id"]] = opened  # its episode goes on: alerted already
                else:
                    still[row["template_id"]] = (row["count"], window.end)
                    rising.append(row)
        alerts: list[dict[str, Any]] = []
        error = None
        if error_fires and not in_incident:
            error = alert_for(
                stats,
                window.items,
                threshold=rules.error_rate,
                min_lines=rules.min_lines,
                min_errors=rules.min_errors,
                baseline=baseline,
                factor=rules.error_factor,
                error_levels=self.error_levels,
                sample_size=rules.sample_size,
            )
        if error is not None:
            # one incident, one alert: the window's other findings go into the error alert's evidence
            error_counts = Counter(e.template_id for e in window.items if e.level.lower() in self.error_levels)
            evidence = error["evidence"]
            evidence["templates"] = [
                {"template_id": tid, "template": text[tid], "count": n} for tid, n in error_counts.most_common(3)
            ]
            evidence["new_templates"] = _template_rows(new, text)
            evidence["rising_templates"] = rising
            alerts.append(error)
        elif not in_incident:
            if new:
                alerts.append(self._new_alert(new, text, window, stats))
            if rising:
                alerts.append(self._rate_alert(rising, len(earlier), window, stats))
        self._episodes = (window.end, episode_errors, alerted_end, still)
        self.windows += 1
        self._seen.update(text)
        if window.late:
            self._seen.update((event.template_id, event.template) for event in window.late)
        if counts.first_time < self._since:
            self._since = counts.first_time
        if window.end - self._since >= MIN_BASELINE_COVERAGE * (window.end - start):
            if history and window.end < history[-1][0]:
                self._ordered = False  # e.g. a late line's window of its own: scan the history from now on
            history.append((window.end, stats["errors"], per_template))  # enough of the source's time
            overlapping += 1  # it ends after its own start
        if len(history) > rules.history:
            while len(history) > rules.history + overlapping:
                history.popleft()
        return alerts

    def _sample(self, window: Window[LogEvent], template_ids: Iterable[int]) -> list[str]:
        """Up to ``sample_size`` lines of the templates, those of the first template first (the
        one the alert's message names), each template's in window order."""
        rank = {tid: i for i, tid in enumerate(dict.fromkeys(template_ids))}
        lines = sorted((e for e in window.items if e.template_id in rank), key=lambda e: rank[e.template_id])
        return [e.line or e.content for e in lines[: self.rules.sample_size]]

    def _variant_of(self, template: str) -> str | None:
        """A known template that ``template`` is a near-copy of, or None."""
        threshold = self.rules.new_template_similarity
        tokens = template.split()
        split = self._tokens
        if len(split) > 2 * len(self._seen) + 64:  # texts of templates since generalized: start afresh
            split.clear()
        for known in self._seen.values():
            known_tokens = split.get(known)
            if known_tokens is None:  # each known text split once (texts are few: the templates)
                known_tokens = split[known] = known.split()
            if len(known_tokens) == len(tokens) and _token_similarity(tokens, known_tokens) >= threshold:
                return known
        return None

    def _new_templates(self, counts: Mapping[int, int], text: Mapping[int, str]) -> list[tuple[int, int]]:
        """The window's new templates, ``[(template id, lines)]``, most lines first."""
        floor = self.rules.new_template_min
        seen = self._seen
        unseen = []
        for tid, n in counts.items():
            if n >= floor and tid not in seen:
                unseen.append((tid, n))
        if not unseen:
            return unseen
        unseen.sort(key=lambda pair: -pair[1])  # stable: as most_common() orders them
        return [
            (tid, n)
            for tid, n in unseen
            if tid != EMPTY_TEMPLATE_ID  # blank lines are not a new kind of event
            and text[tid].strip()
            and self._variant_of(text[tid]) is None
        ]

    def _new_alert(
        self, new: list[tuple[int, int]], text: Mapping[int, str], window: Window[LogEvent], stats: Mapping[str, Any]
    ) -> dict[str, Any]:
        rules = self.rules
        templates = _template_rows(new, text)
        message = (
            f"{stats['source']}: {len(new)} new template(s) with >= {rules.new_template_min} lines, "
            f"top {templates[0]['template']!r} x{templates[0]['count']}"
        )
        evidence = {
            "templates": templates,
            "min_count": rules.new_template_min,
            "similarity": rules.new_template_similarity,
            "lines": stats["lines"],
        }
        return _alert("new_template", stats, message, evidence, self._sample(window, (tid for tid, _ in new)))

    def _rising_templates(
        self, counts: Mapping[int, int], text: Mapping[int, str], earlier: list[dict[int, int]]
    ) -> list[dict[str, Any]]:
        """The known templates of the window at or over the rate rule, most lines first."""
        rules = self.rules
        rising: list[dict[str, Any]] = []
        floor, seen = rules.rise_min_count, self._seen
        candidates = [(tid, n) for tid, n in counts.items() if n >= floor and tid in seen]
        candidates.sort(key=lambda pair: -pair[1])  # stable: as most_common() orders them
        for tid, n in candidates:
            baseline = sum(c.get(tid, 0) for c in earlier) / len(earlier)
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
        return rising

    def _rate_alert(
        self, rising: list[dict[str, Any]], history_windows: int, window: Window[LogEvent], stats: Mapping[str, Any]
    ) -> dict[str, Any]:
        rules = self.rules
        top = rising[0]
        message = (
            f"{stats['source']}: template {top['template']!r} x{top['count']} in the window, "
            f"baseline {top['baseline']:.1f} per window"
        )
        evidence = {
            "templates": rising,
            "rise_factor": rules.rise_factor,
            "min_count": rules.rise_min_count,
            "history_windows": history_windows,
        }
        return _alert(
            "template_rate", stats, message, evidence, self._sample(window, (r["template_id"] for r in rising))
        )
