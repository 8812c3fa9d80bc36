"""Grouping-accuracy evaluation: how well template mining groups log lines, against a ground truth.

The measure is the *grouping accuracy* ("parsing accuracy") of Zhu et al., "Tools and
Benchmarks for Automated Log Parsing", ICSE-SEIP 2019, as computed by ``get_accuracy`` in
logpai/logparser's ``evaluator.py``; written anew here, with no pandas/scipy:

    a line is *correctly parsed* when the set of lines the parser put in its group equals the
    set of lines of its ground-truth event;

    accuracy = (number of correctly parsed lines) / (number of lines).

Equivalently, a predicted group counts (all its lines) when every line in it has the same
ground-truth event *and* that event has no line outside the group. The labels themselves are
never compared, only the partitions they induce: renaming the groups does not change the score.
So merging two true events into one group costs the lines of both, and splitting an event into
two groups costs all the lines of that event.

The ground truth is loghub's ``<Name>_2k.log_structured.csv`` (https://github.com/logpai/loghub):
one row per line of ``<Name>_2k.log``, with ``LineId`` (1-based) and ``EventId`` columns.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from ._miner import MinerSettings
from ._parsing import LogParser, LogSource, read_lines
from ._templates import DrainSettings


def _groups(labels: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    return groups


def _correct_lines(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> int:
    """How many lines are correctly parsed (see the module docstring). Validates the inputs."""
    if len(predicted) != len(truth):
        raise ValueError(f"predicted has {len(predicted)} labels but truth has {len(truth)}")
    if not truth:
        raise ValueError("cannot compute grouping accuracy of zero lines")
    truth_size = {label: len(lines) for label, lines in _groups(truth).items()}
    correct = 0
    for lines in _groups(predicted).values():
        events = {truth[index] for index in lines}
        if len(events) == 1 and truth_size[next(iter(events))] == len(lines):
            correct += len(lines)
    return correct


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Fraction of lines whose predicted group is exactly their ground-truth group.

    Args:
        predicted: one group label per line (e.g. drain3 cluster ids); any hashable values.
        truth: one ground-truth event label per line (e.g. loghub ``EventId`` s), same length.
            Labels of the two sequences are never compared with each other.

    Returns:
        accuracy in [0, 1]: ``sum(len(g) for predicted groups g that equal a ground-truth
        group as sets of line positions) / len(truth)`` (Zhu et al., ICSE-SEIP 2019;
        logpai/logparser ``evaluator.get_accuracy``).

    Raises:
        ValueError: the sequences differ in length, or are empty.

    Example:
        >>> grouping_accuracy([1, 1, 2, 3], ["a", "a", "b", "b"])  # {0,1} right; "b" is split
        0.5
    """
    return _correct_lines(predicted, truth) / len(truth)


def read_ground_truth(csv_path: Path | str) -> list[str]:
    """The ground-truth ``EventId`` of each line of a loghub ``*_structured.csv``, in ``LineId`` order.

    Args:
        csv_path: a CSV with a header row that has at least the columns ``LineId`` (integers
            1..N, each once, in any row order) and ``EventId`` (non-empty), e.g.
            ``LineId,...,Content,EventId,EventTemplate``.

    Returns:
        ``[EventId of line 1, EventId of line 2, ..., EventId of line N]`` (N = number of rows).

    Raises:
        ValueError: (naming the file) a column is missing, a ``LineId`` is not an integer,
            the ``LineId`` s are not exactly 1..N, or an ``EventId`` is empty. (logparser's
            evaluator drops rows without an EventId; no shipped file has one, and here such a
            row is reported rather than silently skipped.)
        OSError: the file cannot be read.
    """
    path = Path(csv_path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [name for name in ("LineId", "EventId") if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (has {reader.fieldnames or []})")
        by_line: dict[int, str] = {}
        for row in reader:
            raw_id, event = row["LineId"], row["EventId"]
            try:
                line_id = int(raw_id)
            except (TypeError, ValueError):
                raise ValueError(f"{path}: LineId {raw_id!r} (row {reader.line_num}) is not an integer") from None
            if not event:
                raise ValueError(f"{path}: LineId {line_id} has an empty EventId")
            if line_id in by_line:
                raise ValueError(f"{path}: LineId {line_id} appears twice")
            by_line[line_id] = event
    if sorted(by_line) != list(range(1, len(by_line) + 1)):
        raise ValueError(f"{path}: LineIds are not exactly 1..{len(by_line)}")
    return [by_line[line_id] for line_id in range(1, len(by_line) + 1)]


def evaluate_source(
    source: LogSource,
    log_path: Path | str,
    truth_path: Path | str,
    *,
    miner: MinerSettings | DrainSettings | None = None,
) -> dict[str, Any]:
    """Mine the templates of one log file with a fresh :class:`LogParser` and score the grouping.

    Every line is fed to the parser in file order (lines that do not match the source's format
    are mined from the whole stripped line, as in the pipeline); a line's predicted group is the
    id it was given on arrival, resolved through the merges made until the end of the file
    (``parser.miner.resolve``; what a consumer of the stream learns from the miner's ``merges``).

    Args:
        source: how to read the log (:class:`LogSource`).
        log_path: the raw log, e.g. ``HDFS_2k.log``.
        truth_path: its loghub ground truth, e.g. ``HDFS_2k.log_structured.csv``.
        miner: miner settings to use instead of the source's own (:class:`MinerSettings` or
            drain3's :class:`DrainSettings`); the source itself is not changed.

    Returns:
        ``{"dataset": str, "lines": int, "accuracy": float in [0, 1], "templates": int (groups
        found, after merges), "events": int (distinct ground-truth EventIds), "mis_grouped": int
        (lines not correctly parsed: ``lines * (1 - accuracy)``), "unparsed": int (lines
        not matching the format), "settings": {"miner": "logminer", "merge_values": int,
        "masks": int} or {"miner": "drain3", "depth": int, "sim_th": float, "max_children": int,
        "masks": int}}``.

    Raises:
        ValueError: the log and the ground truth have different numbers of lines, the log is
            empty, or the ground truth is malformed (see :func:`read_ground_truth`).
        OSError: a file cannot be read.
    """
    if miner is not None:
        source = dataclasses.replace(source, miner=miner)
    lines = read_lines(Path(log_path))
    truth = read_ground_truth(truth_path)
    if len(lines) != len(truth):
        raise ValueError(f"{log_path} has {len(lines)} lines but {truth_path} has {len(truth)} rows")
    parser = LogParser(source)
    predicted: list[int] = []
    unparsed = 0
    for line_no, line in enumerate(lines, start=1):
        event = parser.parse(line, line_no)
        predicted.append(event.template_id)
        unparsed += not event.parsed
    predicted = [parser.miner.resolve(template_id) for template_id in predicted]
    correct = _correct_lines(predicted, truth)
    return {
        "dataset": source.name,
        "lines": len(lines),
        "accuracy": correct / len(lines),
        "templates": len(set(predicted)),
        "events": len(set(truth)),
        "mis_grouped": len(lines) - correct,
        "unparsed": unparsed,
        "settings": miner_settings(source.miner),
    }


def miner_settings(settings: MinerSettings | DrainSettings) -> dict[str, Any]:
    """A short JSON-able description of miner settings: ``{"miner": "logminer", "merge_values",
    "masks"}`` or ``{"miner": "drain3", "depth", "sim_th", "max_children", "masks"}`` (masks:
    how many; for the LogMiner the user's, besides its defaults)."""
    if isinstance(settings, DrainSettings):
        return {
            "miner": "drain3",
            "depth": settings.depth,
            "sim_th": settings.sim_th,
            "max_children": settings.max_children,
            "masks": len(settings.masking),
        }
    return {"miner": "logminer", "merge_values": settings.merge_values, "masks": len(settings.masking)}
