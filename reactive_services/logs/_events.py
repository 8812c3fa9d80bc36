"""The parsed form of one log line, :class:`LogEvent`, and the template of blank lines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

#: The template of a line whose message is empty or only whitespace (a blank line, unparsed;
#: or a parsed line with an empty ``<Content>``). Such lines are kept out of template mining
#: (no miner makes a template of them, nor merges them into another) and never raise a
#: new-template alert.
EMPTY_TEMPLATE = "<empty>"
#: The template id of :data:`EMPTY_TEMPLATE`, the same in every source: miners number their
#: templates from 1.
EMPTY_TEMPLATE_ID = 0


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One log line, parsed.

    Attributes:
        source: the source name.
        line_no: 1-based line number in its file.
        timestamp: event time, epoch seconds (UTC). For a line that did not parse: the latest
            time of the source's lines so far, else the given fallback, else 0.0.
        level: as written in the line, or inferred (see :func:`infer_level`), or ``"unknown"``
            when the line did not parse.
        component: the emitting component, or None.
        content: the message part of the line (the whole stripped line if it did not parse).
        template_id: the id of the line's template group when it arrived (per source); a later
            merge may make it an alias: the parser's ``miner.resolve(template_id)`` gives the
            group it stands for now (drain3 never merges).
        template: the template mined so far for that cluster, e.g. ``"Invalid user <*> from <IP>"``;
            :data:`EMPTY_TEMPLATE` (id :data:`EMPTY_TEMPLATE_ID`) when ``content`` is empty or
            only whitespace (not mined).
        parsed: False when the line did not match its format or its time could not be read.
        line: the raw line.
    """

    source: str
    line_no: int
    timestamp: float
    level: str
    component: str | None
    content: str
    template_id: int
    template: str
    parsed: bool
    line: str = ""


#: C-level getters of LogEvent fields, for the per-line and per-window loops (``map``,
#: ``Counter``): a Python function per call costs twice as much.
source_of: Callable[[LogEvent], str] = attrgetter("source")
time_of: Callable[[LogEvent], float] = attrgetter("timestamp")
level_of: Callable[[LogEvent], str] = attrgetter("level")
template_id_of: Callable[[LogEvent], int] = attrgetter("template_id")
template_of: Callable[[LogEvent], str] = attrgetter("template")
parsed_of: Callable[[LogEvent], bool] = attrgetter("parsed")


def _slot_setters() -> tuple[Callable[[LogEvent, Any], None], ...]:
    """The ``__set__`` of each field's slot descriptor, in field order."""
    return tuple(LogEvent.__dict__[name].__set__ for name in LogEvent.__slots__)


(_SET_SOURCE, _SET_LINE_NO, _SET_TIMESTAMP, _SET_LEVEL, _SET_COMPONENT, _SET_CONTENT, _SET_TEMPLATE_ID, _SET_TEMPLATE,
 _SET_PARSED, _SET_LINE) = _slot_setters()  # fmt: skip
_new = object.__new__


def new_event(
    source: str,
    line_no: int,
    timestamp: float,
    level: str,
    component: str | None,
    content: str,
    template_id: int,
    template: str,
    parsed: bool,
    line: str,
) -> LogEvent:
    """``LogEvent(...)`` (the same fields, positional), built in half the time: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``; this sets the
    slots directly. For the parser's hot path; the fields are not checked (neither are they
    by the dataclass)."""
    event: LogEvent = _new(LogEvent)
    _SET_SOURCE(event, source)
    _SET_LINE_NO(event, line_no)
    _SET_TIMESTAMP(event, timestamp)
    _SET_LEVEL(event, level)
    _SET_COMPONENT(event, component)
    _SET_CONTENT(event, content)
    _SET_TEMPLATE_ID(event, template_id)
    _SET_TEMPLATE(event, template)
    _SET_PARSED(event, parsed)
    _SET_LINE(event, line)
    return event
