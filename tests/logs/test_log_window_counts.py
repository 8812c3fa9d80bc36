"""count_window: the one pass behind the per-window stats and alert rules gives what a count per
field gives (Counter over each attribute, first-seen order, each template id's last text)."""

from __future__ import annotations

import math
import random
from collections import Counter

from reactive_services.logs import LogEvent
from reactive_services.logs._windows import count_window


def _events(seed: int, n: int) -> list[LogEvent]:
    rng = random.Random(seed)
    return [
        LogEvent(
            source="s",
            line_no=i + 1,
            timestamp=rng.uniform(0, 600),
            level=rng.choice(["INFO", "WARN", "ERROR", "unknown"]),
            component=None,
            content="c",
            template_id=(tid := rng.randrange(6)),
            template=f"t{tid} v{rng.randrange(3)}",  # an id's text changes as its template generalizes
            parsed=rng.random() < 0.8,
            line="l",
        )
        for i in range(n)
    ]


def test_count_window_matches_a_count_per_field() -> None:
    for seed in range(50):
        events = _events(seed, seed % 25)
        counts = count_window(events)
        ids = [e.template_id for e in events]
        assert list(counts.templates.items()) == list(Counter(ids).items())  # same order too
        assert counts.texts == {e.template_id: e.template for e in events}  # the last line's text
        assert list(counts.levels.items()) == list(Counter(e.level for e in events).items())
        assert counts.parsed == sum(e.parsed for e in events)
        assert counts.first_time == min((e.timestamp for e in events), default=math.inf)
