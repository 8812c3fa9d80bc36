"""Operators for service pipelines, on top of reactivex's own (``reactivex.operators``).

One operator per private module, re-exported here.
"""

from ._batch import batch
from ._changelog import ChangelogStore
from ._dead_letter import dead_letter
from ._decode_json import DeadLetter, decode_json
from ._event_time_window import Window, WindowRunner, sliding_event_time_window, tumbling_event_time_window
from ._map_async import map_async
from ._retry_with_backoff import backoff_delay, retry_with_backoff
from ._to_loop import to_loop

__all__ = [
    "ChangelogStore",
    "DeadLetter",
    "Window",
    "WindowRunner",
    "backoff_delay",
    "batch",
    "dead_letter",
    "decode_json",
    "map_async",
    "retry_with_backoff",
    "sliding_event_time_window",
    "to_loop",
    "tumbling_event_time_window",
]
