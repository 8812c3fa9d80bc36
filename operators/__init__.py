"""Operators for service pipelines, on top of reactivex's own (``reactivex.operators``).

One operator per private module, re-exported here.
"""

from ._decode_json import DeadLetter, decode_json

__all__ = ["DeadLetter", "decode_json"]

from ._tumbling_window import Window, tumbling_event_time_window

__all__ += ["Window", "tumbling_event_time_window"]
