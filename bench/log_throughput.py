"""Log-analytics throughput: the miner alone and the analysis pipeline beside drain3 alone, over the same file.

    python bench/log_throughput.py [--data-dir DIR | --file PATH --format FMT] [--repeat N]
                                   [--rounds 3] [--service] [--profile [N]] [--json OUT]

For each dataset (default: the four shipped loghub samples ``DIR/<Name>_2k.log``; or one
``--file`` read with ``--format``, a shipped source name or a loghub format string as for
``reactive-services logs analyze``) three things are timed in this process, in interleaved
rounds (round 1: a, b, c of every dataset; round 2: ...), and the median of the rounds is reported:

  (a) drain3 alone: a fresh ``drain3.TemplateMiner`` (built by
      :class:`reactive_services.logs.TemplateMiner` from the source's :class:`DrainSettings` when
      it uses drain3, else from the defaults ``DrainSettings()``) fed the ``Content`` of every
      line with ``add_log_message``. The contents are extracted before the clock starts, so
      this is template mining and nothing else;
  (m) the miner alone: a fresh :class:`reactive_services.logs.LogMiner` (the default miner; the
      source's :class:`MinerSettings`, else the defaults) fed the same contents with ``add``:
      the "miner" row beside drain3's (``miner/drain3`` > 1: faster than drain3);
  (b) pipeline: :func:`reactive_services.logs.build_pipeline` over
      ``reactivex.from_iterable(messages)``, subscribed to completion: format parsing, time
      reading, levels, drain3, event-time windows, window stats and alerts. The ``Message``
      objects (value ``{"source", "line_no", "line"}``, timestamp = the line's time, as
      ``replay_logs`` publishes them) are built before the clock starts;
  (c) with ``--service``, the whole service: a :class:`reactive_services.Microservice` with
      :class:`LogsController` / :class:`LogAnalyticsService` (as ``reactive-services logs
      analyze`` and the shop run it: batches from the embedded in-memory broker, parsing,
      windows, stats, alerts, the publishing of ``log.stats`` / ``log.alert`` / ``logs.late``
      acknowledged, commits) consuming the file's records from a ``logs`` topic they were
      replayed to before the clock starts (each pass a fresh consumer group: fresh state), timed
      from ``start()`` to ``stop()`` and the last publish acknowledged;
  (f) with ``--service``: :func:`reactive_services.logs.analyze_file`, end to end: reading the
      file, format checks, the replay to a new broker (one acknowledged ``emit`` per line), the
      service, the report read back ("analyze_file" column).

One *pass* is one measurement over the whole file, from a fresh state (a new miner, a new
pipeline subscription, a new broker): repeating the file inside one pass would give its
copies the same event times again (they would all be *late* lines for the windows) and turn
drain3's work on them into pure cluster matches. A measurement runs ``--repeat N`` passes;
by default N is chosen per dataset and measurement from a warm-up pass so that it takes about
``--target-s`` (1 s). Rates are lines / s over all passes of a measurement. Within a round
drain3 alone is timed again right after each of the others (drain3, miner, drain3, pipeline,
drain3, ...), and each kind's ratio to drain3 (miner / drain3, pipeline / drain3, service /
drain3, ...; > 1: faster than drain3 alone) is taken against the mean of the drain3 rates
just before and just after it: on a machine whose speed drifts, a ratio of two measurements
seconds apart drifts much less than the rates. Each figure in the table is the median of the
rounds (of the rates; of these paired ratios).

Before timing, each dataset is checked: the source's miner alone must group the contents
exactly as the pipeline's parser does (same configuration, same contents; ids resolved through
the merges), and a pipeline pass must account
for every line in its windows (``lines + late``, tumbling windows). ``--lines N`` keeps only
the first N lines of each file (quick runs). ``--profile`` also runs the pipeline once under
cProfile and prints where the time outside drain3 goes, plus a stage breakdown timed without
the profiler. ``--json OUT`` writes the figures.

The machine may have few cores and other processes running: read the medians of several rounds
and the per-round ratio range, not a single round. Prints only; nothing is asserted. Exit code
0, or 2 with one error line on stderr for a missing file, a bad format, or a failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import drain3
import reactivex

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactive_services import Microservice  # noqa: E402
from reactive_services.adapters import DeadLetterSink, Message  # noqa: E402
from reactive_services.adapters.memory import InMemoryBroker  # noqa: E402
from reactive_services.errors import ConfigError  # noqa: E402
from reactive_services.examples.shop.log_sources import DATA_DIR, SOURCES  # noqa: E402
from reactive_services.logs import (  # noqa: E402
    LOGS_TOPIC,
    DrainSettings,
    LogAnalyticsService,
    LogMiner,
    LogParser,
    LogParsers,
    LogsController,
    LogSource,
    MinerSettings,
    TemplateMiner,
    analyze_file,
    build_pipeline,
    make_miner,
    make_source,
    read_lines,
    replay_logs,
)

#: Most passes one measurement may run when calibrating (a tiny file would otherwise ask for many).
MAX_PASSES = 10_000


class CheckError(Exception):
    """A dataset failed a consistency check (the comparison would not be fair or not complete)."""


# -- datasets --------------------------------------------------------------------------------


@dataclass
class Dataset:
    """One file, read with one source, and everything the timed passes need, built beforehand."""

    name: str
    path: Path
    source: LogSource
    lines: list[str]
    messages: list[Message] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)  # what the pipeline's parser mines, in id order
    assigned: list[int] = field(default_factory=list)  # each line's final template id in the parser
    service_path: Path | None = None  # the file analyze_file reads (a truncated copy with --lines)


def build_messages(source: LogSource, lines: Sequence[str]) -> list[Message]:
    """The ``logs`` records of ``lines`` as :func:`replay_logs` publishes them: key and value
    ``source`` = the source name, ``timestamp_ms`` = the line's own time (else the previous one's)."""
    reader = source.time_reader()
    key = source.name.encode()
    messages = []
    previous_ms = 0
    for offset, line in enumerate(lines):
        at = source.timestamp_of(line, reader)
        timestamp_ms = previous_ms if at is None else round(at * 1000)
        messages.append(
            Message(
                topic=LOGS_TOPIC,
                partition=0,
                offset=offset,
                key=key,
                value={"source": source.name, "line_no": offset + 1, "line": line},
                timestamp_ms=timestamp_ms,
            )
        )
        previous_ms = timestamp_ms
    return messages


def prepare(name: str, path: Path, source: LogSource, max_lines: int | None, scratch: Path) -> Dataset:
    """Read the file and build the messages and contents (untimed). The contents are the
    ``LogEvent.content`` a :class:`LogParser` of the source gives each line, i.e. exactly the
    text the pipeline hands to drain3 (the whole stripped line for a line that does not parse)."""
    lines = read_lines(path)
    if max_lines is not None:
        lines = lines[:max_lines]
    if not lines:
        raise CheckError(f"{name}: {path} has no lines")
    parser = LogParser(source)
    events = [parser.parse(line, line_no) for line_no, line in enumerate(lines, start=1)]
    contents = [event.content for event in events]
    miner = parser.miner
    assigned = [miner.resolve(event.template_id) for event in events]
    templates = [str(miner.template(template_id)) for template_id in sorted(set(assigned))]
    service_path = path
    if max_lines is not None:
        service_path = scratch / path.name
        service_path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return Dataset(
        name=name,
        path=path,
        source=source,
        lines=lines,
        messages=build_messages(source, lines),
        contents=contents,
        templates=templates,
        assigned=assigned,
        service_path=service_path,
    )


# -- the three measurements (one pass each) --------------------------------------------------


def drain3_miner(settings: DrainSettings) -> drain3.TemplateMiner:
    """A fresh ``drain3.TemplateMiner`` configured exactly as the shop configures the source's."""
    miner = getattr(TemplateMiner(settings), "_miner", None)
    if not isinstance(miner, drain3.TemplateMiner):
        raise CheckError(
            "reactive_services.logs.TemplateMiner no longer keeps its drain3.TemplateMiner in "
            "._miner: update drain3_miner() in bench/log_throughput.py"
        )
    return miner


def drain3_pass(dataset: Dataset) -> drain3.TemplateMiner:
    """(a) drain3 alone: a fresh miner, every content, nothing else."""
    settings = dataset.source.miner
    miner = drain3_miner(settings if isinstance(settings, DrainSettings) else DrainSettings())
    add = miner.add_log_message
    for content in dataset.contents:
        add(content)
    return miner


def miner_pass(dataset: Dataset) -> LogMiner:
    """(m) the project's miner alone: a fresh LogMiner, every content, nothing else."""
    settings = dataset.source.miner
    miner = LogMiner(settings if isinstance(settings, MinerSettings) else MinerSettings())
    add = miner.add
    for content in dataset.contents:
        add(content)
    return miner


def pipeline_pass(dataset: Dataset) -> list[Any]:
    """(b) the analysis pipeline over the messages, subscribed to completion; its WindowReports."""
    reports: list[Any] = []
    outcome: list[BaseException | None] = []
    build_pipeline(reactivex.from_iterable(dataset.messages), sources={dataset.source.name: dataset.source}).subscribe(
        reports.append, outcome.append, lambda: outcome.append(None)
    )
    if outcome != [None]:
        raise CheckError(
            f"{dataset.name}: the pipeline ended with {outcome[0]!r}"
            if outcome
            else f"{dataset.name}: the pipeline did not complete synchronously"
        )
    return reports


async def analyze_pass(dataset: Dataset) -> dict[str, Any]:
    """(f) analyze_file: replay, service and report, end to end; its report."""
    assert dataset.service_path is not None
    return await analyze_file(dataset.service_path, dataset.source)


async def filled_broker(dataset: Dataset) -> InMemoryBroker:
    """A started embedded broker whose ``logs`` topic holds the file's records (replay_logs)."""
    assert dataset.service_path is not None
    broker = InMemoryBroker()
    await broker.start()
    await replay_logs(
        broker, {dataset.source.name: dataset.service_path}, formats={dataset.source.name: dataset.source}
    )
    return broker


async def service_pass(dataset: Dataset, broker: InMemoryBroker, group_id: str) -> dict[str, Any]:
    """(c) the service consuming the replayed records with a fresh consumer group, from start()
    to stop() and its last publish acknowledged; its report."""
    expected, seen = len(dataset.lines), 0
    everything = asyncio.Event()

    def count(_event: Any) -> None:
        nonlocal seen
        seen += 1
        if seen == expected:
            everything.set()

    analytics = LogAnalyticsService(broker.emit, on_event=count)
    controller = LogsController(analytics, DeadLetterSink(broker), sources={dataset.source.name: dataset.source})
    service = Microservice(broker, [controller], name="log-analytics", group_id=group_id)
    await service.start()
    try:
        await asyncio.wait_for(everything.wait(), timeout=600)
    finally:
        await service.stop()  # completes the stream: the last windows are published
    await analytics.flush()
    return analytics.report().get(dataset.source.name, {})


def check(dataset: Dataset, service: bool) -> None:
    """One pass of each kind, untimed (also the warm-up): raise :class:`CheckError` when the
    comparison would be unfair (the source's miner alone groups the contents otherwise than the
    pipeline's parser) or the pipeline loses lines."""
    alone = make_miner(dataset.source.miner)
    ids = [alone.add(content)[0] for content in dataset.contents]
    if [alone.resolve(i) for i in ids] != dataset.assigned:
        raise CheckError(
            f"{dataset.name}: the miner alone grouped the lines otherwise than the pipeline's parser: "
            "the configurations differ"
        )
    drain3_pass(dataset)
    miner_pass(dataset)
    reports = pipeline_pass(dataset)
    source = dataset.source
    if not reports:
        raise CheckError(f"{dataset.name}: the pipeline emitted no window")
    if source.slide_s in (None, source.window_s):  # tumbling: each line counted once, on time or late
        counted = sum(report.stats["lines"] + report.stats["late"] for report in reports)
        if counted != len(dataset.lines):
            raise CheckError(f"{dataset.name}: the pipeline's windows hold {counted} lines of {len(dataset.lines)}")
    if service:

        async def both() -> tuple[dict[str, Any], dict[str, Any]]:
            broker = await filled_broker(dataset)
            try:
                return await service_pass(dataset, broker, "bench-check"), await analyze_pass(dataset)
            finally:
                await broker.stop()

        consumed, analyzed = asyncio.run(both())
        for what, report in (("the service", consumed), ("analyze_file", analyzed)):
            if report.get("lines") != len(dataset.lines):
                raise CheckError(f"{dataset.name}: {what} analysed {report.get('lines')} lines of {len(dataset.lines)}")


def timed(run: Callable[[], Any], passes: int) -> float:
    """Seconds for ``passes`` runs of ``run`` (garbage collected before, enabled during)."""
    gc.collect()
    started = time.perf_counter()
    for _ in range(passes):
        run()
    return time.perf_counter() - started


def timed_service(dataset: Dataset, passes: int) -> float:
    async def main() -> float:
        broker = await filled_broker(dataset)  # the replay is not timed
        try:
            gc.collect()
            started = time.perf_counter()
            for n in range(passes):
                await service_pass(dataset, broker, f"bench-{n}")
            return time.perf_counter() - started
        finally:
            await broker.stop()

    return asyncio.run(main())


def timed_analyze(dataset: Dataset, passes: int) -> float:
    async def main() -> float:
        gc.collect()
        started = time.perf_counter()
        for _ in range(passes):
            await analyze_pass(dataset)
        return time.perf_counter() - started

    return asyncio.run(main())


def calibrate(seconds: float, target_s: float) -> int:
    return max(1, min(MAX_PASSES, round(target_s / max(seconds, 1e-9))))


# -- the benchmark ---------------------------------------------------------------------------


KINDS = ("drain3", "miner", "pipeline", "service", "analyze_file")


def measure(
    datasets: list[Dataset],
    *,
    rounds: int,
    repeat: int | None,
    target_s: float,
    service: bool,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Interleaved rounds over every dataset; one result dict per dataset (see :func:`main`)."""
    kinds = KINDS if service else KINDS[:3]
    runners: dict[str, Callable[[Dataset, int], float]] = {
        "drain3": lambda d, n: timed(lambda: drain3_pass(d), n),
        "miner": lambda d, n: timed(lambda: miner_pass(d), n),
        "pipeline": lambda d, n: timed(lambda: pipeline_pass(d), n),
        "service": timed_service,
        "analyze_file": timed_analyze,
    }
    passes: dict[str, dict[str, int]] = {}
    for dataset in datasets:
        if repeat is not None:
            passes[dataset.name] = {kind: repeat for kind in kinds}
        else:  # one timed warm-up pass of each kind sizes the measurement
            passes[dataset.name] = {kind: calibrate(runners[kind](dataset, 1), target_s) for kind in kinds}
    # per dataset and round: each kind's rate, drain3's (the mean of its measurements in the
    # round) and each other kind's ratio to the drain3 measurements just before and after it
    per_round: dict[str, list[dict[str, float]]] = {dataset.name: [] for dataset in datasets}
    paired: dict[str, list[dict[str, float]]] = {dataset.name: [] for dataset in datasets}
    for round_ in range(1, rounds + 1):
        for dataset in datasets:
            n, lines = passes[dataset.name], len(dataset.lines)

            def rate(kind: str, dataset: Dataset = dataset, n: dict[str, int] = n, lines: int = lines) -> float:
                return lines * n[kind] / runners[kind](dataset, n[kind])

            drain3_rates = [rate("drain3")]
            rates: dict[str, float] = {}
            ratios: dict[str, float] = {}
            for kind in kinds[1:]:
                rates[kind] = rate(kind)
                drain3_rates.append(rate("drain3"))
                ratios[kind] = rates[kind] / ((drain3_rates[-2] + drain3_rates[-1]) / 2)
            rates["drain3"] = statistics.fmean(drain3_rates)
            per_round[dataset.name].append(rates)
            paired[dataset.name].append(ratios)
            text = "  ".join(f"{kind} {rates[kind]:>9,.0f} lines/s" for kind in kinds)
            progress(
                f"round {round_}  {dataset.name:<12} {text}  miner/drain3 {ratios['miner']:.3f}  "
                f"pipeline/drain3 {ratios['pipeline']:.3f}"
            )
    results = []
    for dataset in datasets:
        rounds_of, ratios_of = per_round[dataset.name], paired[dataset.name]
        median = {kind: statistics.median(rates[kind] for rates in rounds_of) for kind in kinds}

        def ratio(kind: str, ratios_of: list[dict[str, float]] = ratios_of) -> float:
            return statistics.median(ratios[kind] for ratios in ratios_of)

        result: dict[str, Any] = {
            "dataset": dataset.name,
            "file": str(dataset.path),
            "source": dataset.source.name,
            "lines": len(dataset.lines),
            "templates": len(dataset.templates),
            "passes": passes[dataset.name],
            "drain3_lines_per_s": median["drain3"],
            "miner_lines_per_s": median["miner"],
            "miner_ratio": ratio("miner"),
            "miner_round_ratios": [ratios["miner"] for ratios in ratios_of],
            "pipeline_lines_per_s": median["pipeline"],
            "ratio": ratio("pipeline"),
            "round_ratios": [ratios["pipeline"] for ratios in ratios_of],
            "rounds": [{f"{kind}_lines_per_s": rates[kind] for kind in kinds} for rates in rounds_of],
        }
        if service:
            result["service_lines_per_s"] = median["service"]
            result["service_ratio"] = ratio("service")
            result["service_round_ratios"] = [ratios["service"] for ratios in ratios_of]
            result["analyze_file_lines_per_s"] = median["analyze_file"]
            result["analyze_file_ratio"] = ratio("analyze_file")
            result["analyze_file_round_ratios"] = [ratios["analyze_file"] for ratios in ratios_of]
        results.append(result)
    return results


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["ratio"] for r in results]
    low, high = min(results, key=lambda r: r["ratio"]), max(results, key=lambda r: r["ratio"])
    out: dict[str, Any] = {
        "datasets": len(results),
        "ratio_geomean": geomean(ratios),
        "ratio_min": low["ratio"],
        "ratio_min_dataset": low["dataset"],
        "ratio_max": high["ratio"],
        "ratio_max_dataset": high["dataset"],
        "miner_ratio_geomean": geomean([r["miner_ratio"] for r in results]),
        "miner_ratio_min": min(r["miner_ratio"] for r in results),
    }
    if all("service_ratio" in r for r in results):
        out["service_ratio_geomean"] = geomean([r["service_ratio"] for r in results])
        out["service_ratio_min"] = min(r["service_ratio"] for r in results)
        out["analyze_file_ratio_geomean"] = geomean([r["analyze_file_ratio"] for r in results])
    return out


def summary_line(s: dict[str, Any]) -> str:
    text = (
        f"summary: the miner alone runs at {s['miner_ratio_geomean']:.2f}x the speed of drain3 alone "
        f"(geometric mean; slowest dataset {s['miner_ratio_min']:.2f}x); "
        f"the pipeline runs at {s['ratio_geomean']:.2f}x the speed of drain3 alone "
        f"(geometric mean over {s['datasets']} dataset(s); {s['ratio_min']:.2f} {s['ratio_min_dataset']} .. "
        f"{s['ratio_max']:.2f} {s['ratio_max_dataset']}), medians of rounds"
    )
    if "service_ratio_geomean" in s:
        text += (
            f"; the whole service at {s['service_ratio_geomean']:.2f}x (slowest dataset {s['service_ratio_min']:.2f}x)"
            f"; analyze_file end to end at {s['analyze_file_ratio_geomean']:.2f}x"
        )
    return text


# -- output ----------------------------------------------------------------------------------


def columns(service: bool) -> list[str]:
    cols = [
        "dataset",
        "lines",
        "passes",
        "drain3 alone lines/s",
        "miner alone lines/s",
        "miner/drain3",
        "rounds (miner/drain3)",
        "pipeline lines/s",
        "pipeline/drain3",
        "rounds (pipeline/drain3)",
    ]
    if service:
        cols += [
            "service lines/s",
            "service/drain3",
            "rounds (service/drain3)",
            "analyze_file lines/s",
            "analyze_file/drain3",
        ]
    return cols


def cells(result: dict[str, Any], service: bool) -> list[str]:
    ratios = result["round_ratios"]
    row = [
        result["dataset"],
        f"{result['lines']:,}",
        "/".join(str(result["passes"][kind]) for kind in KINDS if kind in result["passes"]),
        f"{result['drain3_lines_per_s']:,.0f}",
        f"{result['miner_lines_per_s']:,.0f}",
        f"{result['miner_ratio']:.3f}",
        f"{min(result['miner_round_ratios']):.3f}..{max(result['miner_round_ratios']):.3f}",
        f"{result['pipeline_lines_per_s']:,.0f}",
        f"{result['ratio']:.3f}",
        f"{min(ratios):.3f}..{max(ratios):.3f}",
    ]
    if service:
        service_ratios = result["service_round_ratios"]
        row += [
            f"{result['service_lines_per_s']:,.0f}",
            f"{result['service_ratio']:.3f}",
            f"{min(service_ratios):.3f}..{max(service_ratios):.3f}",
            f"{result['analyze_file_lines_per_s']:,.0f}",
            f"{result['analyze_file_ratio']:.3f}",
        ]
    return row


def print_table(results: list[dict[str, Any]], service: bool, title: str) -> None:
    cols = columns(service)
    rows = [cells(result, service) for result in results]
    from rich.console import Console  # rich is a dependency of the package
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(cols):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into rich's default 80 columns
        console = Console(width=max(console.width, 330))
    console.print(table)


# -- profile ---------------------------------------------------------------------------------

_DRAIN3_DIR = os.sep + "drain3" + os.sep
_MINER_FILE = os.sep + "logs" + os.sep + "_miner.py"


def _area(filename: str) -> str:
    """A coarse owner of a profiled function, from its file."""
    path = filename.replace(os.sep, "/")
    for marker, name in (
        ("/reactivex/", "reactivex (operators, subjects, observers)"),
        ("/operators/_event_time_window.py", "operators/_event_time_window.py"),
        ("/examples/shop/", "examples/shop/" + path.rsplit("/", 1)[-1]),
        ("/adapters/", "adapters/" + path.rsplit("/", 1)[-1]),
    ):
        if marker in path:
            return name
    if filename == "~":
        return "builtins (C functions)"
    return "stdlib/other (" + path.rsplit("/", 1)[-1] + ")"


def profile_pipeline(datasets: list[Dataset], top: int) -> dict[str, Any]:
    """One pipeline pass per dataset under cProfile. Self time is split into drain3's (functions
    in the drain3 package, and anything only drain3 calls, transitively) and the rest; the rest
    is attributed to callers edge by edge (e.g. ``re.Pattern.sub`` called by drain3's masker is
    drain3's, ``re.Pattern.search`` called by ``infer_level`` is not). The project's miner,
    ``logs/_miner.py``, counts as "drain3" here: the template mining's share, whichever miner
    the sources use."""
    profiler = cProfile.Profile()
    profiler.enable()
    for dataset in datasets:
        pipeline_pass(dataset)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    # template mining's own time: drain3's package, or the project's miner (the default)
    inside = {func for func in stats if _DRAIN3_DIR in func[0] or func[0].endswith(_MINER_FILE)}
    changed = True
    while changed:  # functions called only from inside drain3 are drain3's too
        changed = False
        for func, (_cc, _nc, _tt, _ct, callers) in stats.items():
            if func not in inside and callers and all(caller in inside for caller in callers):
                inside.add(func)
                changed = True
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in stats.values())
    outside: dict[tuple[str, int, str], tuple[int, float]] = {}
    for func, (_cc, nc, tt, _ct, callers) in stats.items():
        if func in inside:
            continue
        if callers and any(caller in inside for caller in callers):
            edges = [(caller, edge) for caller, edge in callers.items() if caller not in inside]
            own_tt = sum(edge[2] for _caller, edge in edges)
            own_nc = sum(edge[1] for _caller, edge in edges)
        else:
            own_tt, own_nc = tt, nc
        if own_tt > 0:
            outside[func] = (own_nc, own_tt)
    outside_total = sum(tt for _nc, tt in outside.values())
    by_area: dict[str, float] = {}
    for func, (_nc, tt) in outside.items():
        area = _area(func[0])
        by_area[area] = by_area.get(area, 0.0) + tt

    def label(func: tuple[str, int, str]) -> str:
        filename, line, name = func
        if filename == "~":
            return name
        path = filename.replace(os.sep, "/")
        for prefix in (str(ROOT).replace(os.sep, "/") + "/", "site-packages/"):
            if prefix in path:
                path = path.split(prefix, 1)[1]
                break
        else:
            path = path.rsplit("/", 1)[-1]
        return f"{path}:{line}({name})"

    lines = sum(len(dataset.lines) for dataset in datasets)
    return {
        "lines": lines,
        "total_s": total,
        "drain3_s": total - outside_total,
        "outside_s": outside_total,
        "by_area": sorted(by_area.items(), key=lambda item: -item[1]),
        "top": [
            (label(func), nc, tt) for func, (nc, tt) in sorted(outside.items(), key=lambda item: -item[1][1])[:top]
        ],
    }


def stage_breakdown(datasets: list[Dataset], rounds: int) -> list[tuple[str, float]]:
    """Microseconds per line of growing prefixes of the pipeline, timed without the profiler
    (best of ``rounds`` interleaved rounds, one pass per dataset each): drain3 alone; + LogParser.parse (format,
    time, level, LogEvent); + the record check of LogParsers.parse_message; the full pipeline
    (+ rx plumbing, group_by, windows, stats, alerts)."""

    def parse_only() -> None:
        for dataset in datasets:
            parser = LogParser(dataset.source)
            parse = parser.parse
            for offset, line in enumerate(dataset.lines, start=1):
                parse(line, offset)

    def parse_messages() -> None:
        for dataset in datasets:
            parse = LogParsers({dataset.source.name: dataset.source}).parse_message
            for message in dataset.messages:
                parse(message)

    stages = (
        ("drain3 alone (masking + tree)", lambda: [drain3_pass(d) for d in datasets]),
        ("LogParser.parse loop (+ format regex, time, level, LogEvent, wrapper)", parse_only),
        ("LogParsers.parse_message loop (+ record check, source lookup)", parse_messages),
        (
            "build_pipeline (+ rx map/group_by/flat_map, windows, stats, alerts)",
            lambda: [pipeline_pass(d) for d in datasets],
        ),
    )
    lines = sum(len(dataset.lines) for dataset in datasets)
    best = [math.inf] * len(stages)
    for _ in range(rounds):  # interleaved, like the main measurement
        for i, (_name, run) in enumerate(stages):
            best[i] = min(best[i], timed(run, 1))
    return [(name, seconds / lines * 1e6) for (name, _run), seconds in zip(stages, best, strict=True)]


def print_profile(prof: dict[str, Any], stages: list[tuple[str, float]]) -> None:
    print()
    print(f"stage breakdown, us per line (no profiler, best of rounds, {prof['lines']:,} lines):")
    previous = None
    for name, us in stages:
        step = "" if previous is None else f"  (+{us - previous:.1f})"
        print(f"  {us:7.1f}{step:>10}  {name}")
        previous = us
    total = prof["total_s"]
    print()
    print(
        f"cProfile of one pipeline pass per dataset ({prof['lines']:,} lines, {total:.3f} s self time under the "
        f"profiler, which inflates Python calls): drain3 {prof['drain3_s'] / total:.0%}, "
        f"outside drain3 {prof['outside_s'] / total:.0%}"
    )
    print("  outside drain3, by area (share of all self time):")
    rest = 0.0
    for area, tt in prof["by_area"]:
        if tt / total >= 0.005:
            print(f"    {tt / total:6.1%}  {area}")
        else:
            rest += tt
    if rest:
        print(f"    {rest / total:6.1%}  (areas under 0.5% each)")
    print("  outside drain3, top functions by self time:")
    for name, calls, tt in prof["top"]:
        print(f"    {tt / total:6.1%}  {calls:>8,} calls  {name}")


# -- main ------------------------------------------------------------------------------------


def load(args: argparse.Namespace, scratch: Path) -> list[Dataset]:
    if args.file is not None:
        if not args.file.is_file():
            raise FileNotFoundError(f"missing file: {args.file}")
        source = make_source(args.format, known=SOURCES)
        return [prepare(args.file.name, args.file, source, args.lines, scratch)]
    paths = {name: args.data_dir / f"{name}_2k.log" for name in SOURCES}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"missing file(s): {', '.join(missing)}")
    return [prepare(name, path, SOURCES[name], args.lines, scratch) for name, path in paths.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="folder with the shipped <Name>_2k.log samples (default: %(default)s)",
    )
    parser.add_argument("--file", type=Path, metavar="PATH", help="measure this file instead (needs --format)")
    parser.add_argument(
        "--format",
        metavar="FMT",
        help="with --file: a shipped source name (Apache, HDFS, Linux, OpenSSH) or a loghub "
        "format string with a <Content> field",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="passes over the file per measurement (default: enough for about --target-s)",
    )
    parser.add_argument(
        "--target-s",
        type=float,
        default=1.0,
        help="seconds one measurement should take when --repeat is not given (default 1.0)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; their median is reported (default 3)"
    )
    parser.add_argument("--lines", type=int, metavar="N", help="use only the first N lines of each file")
    parser.add_argument(
        "--service",
        action="store_true",
        help="also time the whole service on the embedded broker, and analyze_file end to end",
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        metavar="TOP",
        help="also profile the pipeline and print the TOP functions outside drain3 (default 25)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to OUT as JSON")
    args = parser.parse_args(argv)
    if (args.file is None) != (args.format is None):
        parser.error("--file and --format go together")
    for name in ("repeat", "rounds", "lines"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1")
    if args.target_s <= 0:
        parser.error("--target-s must be > 0")

    with tempfile.TemporaryDirectory(prefix="bench-logs-") as scratch:
        try:
            datasets = load(args, Path(scratch))
            for dataset in datasets:
                check(dataset, args.service)
            results = measure(
                datasets, rounds=args.rounds, repeat=args.repeat, target_s=args.target_s, service=args.service
            )
            prof = stages = None
            if args.profile is not None:
                prof = profile_pipeline(datasets, args.profile)
                stages = stage_breakdown(datasets, max(args.rounds, 5))
        except (OSError, ValueError, ConfigError, CheckError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    versions = {name: metadata.version(name) for name in ("drain3", "reactivex")}
    title = (
        f"Log analytics throughput, median of {args.rounds} round(s) (Python {platform.python_version()}, "
        f"drain3 {versions['drain3']}, reactivex {versions['reactivex']}, {os.cpu_count()} CPUs)"
    )
    print()
    print_table(results, args.service, title)
    overall = summary(results)
    print(summary_line(overall))
    if prof is not None and stages is not None:
        print_profile(prof, stages)
    if args.json is not None:
        payload: dict[str, Any] = {
            "python": platform.python_version(),
            **versions,
            "cpus": os.cpu_count(),
            "rounds": args.rounds,
            "target_s": args.target_s,
            "repeat": args.repeat,
            "datasets": results,
            "summary": overall,
        }
        if prof is not None and stages is not None:
            payload["profile"] = {
                **prof,
                "by_area": [list(item) for item in prof["by_area"]],
                "top": [list(item) for item in prof["top"]],
                "stages_us_per_line": [list(item) for item in stages],
            }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
