"""Grouping accuracy of the log template miner on loghub 2k datasets, next to Drain's and Brain's published figures.

    python bench/log_accuracy.py [--data-dir DIR] [--samples-dir DIR] [--loghub-dir DIR]
                                 [--miner default|drain3] [--json OUT]

Every dataset is mined with the *general* settings: the source's format string (the loghub /
logpai benchmark's ``log_format``) and nothing else: no depth, similarity or masks per dataset.
For each dataset it parses the log with a fresh :class:`reactive_services.logs.LogParser`, resolves
each line's template id through the miner's merges at the end, and scores the groups against the
loghub ground truth (``<log>_structured.csv``; the measure: :mod:`reactive_services.logs`).

Datasets: by default what the repository ships: the shop's four 2k samples (``--data-dir``,
examples/shop/data/loghub: Apache, HDFS, Linux, OpenSSH) and the 300-line samples of the other
twelve (``--samples-dir``, tests/data/loghub: the first 300 lines of their 2k files). With
``--loghub-dir DIR`` (a loghub checkout, ``DIR/<Name>/<Name>_2k.log``) all 16 datasets at 2k lines.

Printed per dataset: lines, ground-truth events, templates found, our accuracy, lines
mis-grouped, Drain's and Brain's published accuracy on the 2k file, our difference to Drain, the
settings; then the averages. Published figures (both on loghub 2k, grouping accuracy, the
"Accuracy" column):

* Drain (He et al., ICWS 2017): logpai/logparser ``logparser/Drain/README.md``, "Benchmark";
* Brain (Yu et al., "Brain: Log Parsing With Bidirectional Parallel Tree", IEEE TSC 2023):
  logpai/logparser ``logparser/Brain/README.md``, "Benchmark" (the figures of its authors'
  benchmark script, in logparser at the commit read for this file).

A 300-line sample is compared with the figures of its 2k file (none is published for 300 lines).
With ``--json OUT`` the figures are also written to OUT as ``{"datasets": [{...}, ...],
"average": float}``. Exit code 0 (the figures are printed, not judged), or 2 with one error line
on stderr when an input file is missing or unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reactive_services.examples.shop.log_sources import (  # noqa: E402
    DATA_DIR,
    SOURCES,
)
from reactive_services.logs import (  # noqa: E402
    DrainSettings,
    LogFormat,
    LogSource,
    MinerSettings,
    evaluate_source,
)

SAMPLES_DIR = ROOT / "tests" / "data" / "loghub"

#: The loghub benchmark's format string per dataset (logpai/logparser ``benchmark`` settings,
#: ``log_format``), in the benchmark's order.
LOGHUB_FORMATS: dict[str, str] = {
    "HDFS": "<Date> <Time> <Pid> <Level> <Component>: <Content>",
    "Hadoop": r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
    "Spark": "<Date> <Time> <Level> <Component>: <Content>",
    "Zookeeper": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
    "BGL": "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
    "HPC": "<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
    "Thunderbird": (
        r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Component>(\[<PID>\])?: <Content>"
    ),
    "Windows": "<Date> <Time>, <Level>                  <Component>    <Content>",
    "Linux": r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
    "Android": "<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
    "HealthApp": r"<Time>\|<Component>\|<Pid>\|<Content>",
    "Apache": r"\[<Time>\] \[<Level>\] <Content>",
    "Proxifier": r"\[<Time>\] <Program> - <Content>",
    "OpenSSH": r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
    "OpenStack": r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
    "Mac": r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
}

#: Drain's published grouping accuracy on loghub 2k (logpai/logparser ``logparser/Drain/README.md``).
DRAIN_PUBLISHED: dict[str, float] = {
    "HDFS": 0.9975,
    "Hadoop": 0.9475,
    "Spark": 0.92,
    "Zookeeper": 0.9665,
    "BGL": 0.9625,
    "HPC": 0.887,
    "Thunderbird": 0.955,
    "Windows": 0.997,
    "Linux": 0.69,
    "Android": 0.911,
    "HealthApp": 0.78,
    "Apache": 1.0,
    "Proxifier": 0.5265,
    "OpenSSH": 0.7875,
    "OpenStack": 0.7325,
    "Mac": 0.7865,
}

#: Brain's published grouping accuracy on loghub 2k (logpai/logparser ``logparser/Brain/README.md``).
BRAIN_PUBLISHED: dict[str, float] = {
    "HDFS": 0.9975,
    "Hadoop": 0.949,
    "Spark": 0.9975,
    "Zookeeper": 0.9875,
    "BGL": 0.986,
    "HPC": 0.945,
    "Thunderbird": 0.971,
    "Windows": 0.997,
    "Linux": 0.996,
    "Android": 0.9605,
    "HealthApp": 1.0,
    "Apache": 1.0,
    "Proxifier": 1.0,
    "OpenSSH": 1.0,
    "OpenStack": 1.0,
    "Mac": 0.942,
}

COLUMNS = (
    "dataset",
    "lines",
    "GT events",
    "templates",
    "accuracy",
    "wrong",
    "Drain",
    "Brain",
    "vs Drain",
    "settings",
)
_LEFT = (0, len(COLUMNS) - 1)  # left-aligned columns: dataset and settings


def source_for(name: str) -> LogSource:
    """The shop's source for a shipped dataset; else a source with the benchmark's format string
    and nothing else (level and component fields when the format has them, times ignored)."""
    if name in SOURCES:
        return SOURCES[name]
    fields = LogFormat.from_loghub(LOGHUB_FORMATS[name]).fields
    return LogSource(
        name=name,
        format=LOGHUB_FORMATS[name],
        timestamp=lambda _fields: 0.0,  # grouping does not depend on times
        level_field="Level" if "Level" in fields else None,
        component_field="Component" if "Component" in fields else None,
    )


def files(
    data_dir: Path, samples_dir: Path = SAMPLES_DIR, loghub_dir: Path | None = None
) -> dict[str, tuple[Path, Path]]:
    """``{dataset: (log path, ground-truth path)}``: with ``loghub_dir`` all 16 at 2k lines;
    else the shipped 2k samples under ``data_dir`` and the 300-line ones under ``samples_dir``."""
    if loghub_dir is not None:
        pairs = {name: loghub_dir / name / f"{name}_2k.log" for name in LOGHUB_FORMATS}
    else:
        pairs = {
            name: (data_dir / f"{name}_2k.log" if name in SOURCES else samples_dir / f"{name}_300.log")
            for name in LOGHUB_FORMATS
        }
    return {name: (log, log.with_name(log.name + "_structured.csv")) for name, log in pairs.items()}


def measure(
    data_dir: Path, samples_dir: Path = SAMPLES_DIR, loghub_dir: Path | None = None, miner: str = "default"
) -> list[dict[str, Any]]:
    """One :func:`evaluate_source` result per dataset, plus ``drain_published``,
    ``brain_published`` (floats or None) and ``difference`` (accuracy - drain_published, or None)."""
    settings = DrainSettings() if miner == "drain3" else MinerSettings()
    results = []
    for name, (log_path, truth_path) in files(data_dir, samples_dir, loghub_dir).items():
        result = evaluate_source(source_for(name), log_path, truth_path, miner=settings)
        published = DRAIN_PUBLISHED.get(name)
        result["drain_published"] = published
        result["brain_published"] = BRAIN_PUBLISHED.get(name)
        result["difference"] = None if published is None else round(result["accuracy"] - published, 6)
        results.append(result)
    return results


def cells(result: dict[str, Any]) -> list[str]:
    """The table cells of one result, in :data:`COLUMNS` order."""
    settings = result["settings"]
    drain, brain, difference = result["drain_published"], result["brain_published"], result["difference"]
    shown = " ".join(str(value) if key == "miner" else f"{key}={value}" for key, value in settings.items())
    return [
        result["dataset"],
        str(result["lines"]),
        str(result["events"]),
        str(result["templates"]),
        f"{result['accuracy']:.4f}",
        str(result["mis_grouped"]),
        "-" if drain is None else f"{drain:.4f}",
        "-" if brain is None else f"{brain:.4f}",
        "-" if difference is None else f"{difference:+.4f}",
        shown,
    ]


def average_row(results: list[dict[str, Any]]) -> list[str]:
    """The averages (accuracy, Drain's, Brain's) over the datasets printed."""

    def mean(values: list[float]) -> str:
        return f"{sum(values) / len(values):.4f}" if values else "-"

    drains = [r["drain_published"] for r in results if r["drain_published"] is not None]
    brains = [r["brain_published"] for r in results if r["brain_published"] is not None]
    ours = [r["accuracy"] for r in results]
    return ["average", "", "", "", mean(ours), "", mean(drains), mean(brains), "", ""]


def print_table(results: list[dict[str, Any]]) -> None:
    rows = [cells(result) for result in results]
    title = "Grouping accuracy on loghub (Zhu et al., ICSE-SEIP 2019), general settings"
    from rich.console import Console  # rich is a dependency of the package
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i in _LEFT else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    table.add_section()
    table.add_row(*average_row(results))
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into rich's default 80 columns
        console = Console(width=max(console.width, 150))
    console.print(table)
    short = [r["dataset"] for r in results if r["lines"] < 2000]
    if short:
        console.print(
            f"note: {', '.join(short)}: the first {min(r['lines'] for r in results)} lines only (the samples in "
            "tests/data), beside Drain's and Brain's figures for 2,000 lines, and in the average: an indication, "
            "not the benchmark; --loghub-dir DIR runs every dataset at 2,000 lines.",
            highlight=False,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="folder with the shipped <Name>_2k.log and their _structured.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--samples-dir",
        type=Path,
        default=SAMPLES_DIR,
        help="folder with the other datasets' <Name>_300.log samples (default: %(default)s)",
    )
    parser.add_argument(
        "--loghub-dir", type=Path, help="a loghub checkout (<Name>/<Name>_2k.log): all 16 datasets at 2k lines"
    )
    parser.add_argument(
        "--miner", choices=("default", "drain3"), default="default", help="template miner (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to OUT as JSON")
    args = parser.parse_args(argv)

    paths = files(args.data_dir, args.samples_dir, args.loghub_dir)
    missing = [str(path) for pair in paths.values() for path in pair if not path.is_file()]
    if missing:
        print(f"error: missing file(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        results = measure(args.data_dir, args.samples_dir, args.loghub_dir, args.miner)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(results)
    if args.json is not None:
        average = sum(r["accuracy"] for r in results) / len(results)
        payload = {"data_dir": str(args.data_dir), "datasets": results, "average": average}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
