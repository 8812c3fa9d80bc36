"""Grouping accuracy of the shop's drain3 template mining on the loghub 2k samples, next to Drain's.

    python bench/log_accuracy.py [--data-dir DIR] [--json OUT]

For each shipped source (Apache, HDFS, Linux, OpenSSH) parses ``DIR/<Name>_2k.log`` with a
fresh :class:`reactive_services.logs.LogParser` and scores its template groups against
``DIR/<Name>_2k.log_structured.csv`` (see :mod:`reactive_services.logs` for the measure). Prints
one row per dataset: lines, ground-truth events, templates found, our grouping accuracy, Drain's
published figure (logpai/logparser, ``logparser/Drain/README.md``), the difference, and the
settings used (depth, sim_th, number of masks). With ``--json OUT`` the same figures are also
written to OUT as ``{"data_dir": str, "datasets": [{...}, ...]}``.

``DIR`` defaults to examples/shop/data/loghub. Uses ``rich`` for the table when it is installed.
Exit code 0 (the figures are printed, not judged), or 2 with one error line on stderr when an
input file is missing or unreadable.
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
    DRAIN_PUBLISHED,
    SOURCES,
)
from reactive_services.logs import evaluate_source  # noqa: E402

COLUMNS = (
    "dataset",
    "lines",
    "GT events",
    "templates",
    "accuracy",
    "mis-grouped",
    "Drain (published)",
    "difference",
    "settings",
)
_LEFT = (0, len(COLUMNS) - 1)  # left-aligned columns: dataset and settings


def files(data_dir: Path) -> dict[str, tuple[Path, Path]]:
    """``{source name: (log path, ground-truth path)}`` under ``data_dir``."""
    return {name: (data_dir / f"{name}_2k.log", data_dir / f"{name}_2k.log_structured.csv") for name in SOURCES}


def measure(data_dir: Path) -> list[dict[str, Any]]:
    """One :func:`evaluate_source` result per source, plus ``drain_published`` (float or None)
    and ``difference`` (accuracy - drain_published, or None)."""
    results = []
    for name, (log_path, truth_path) in files(data_dir).items():
        result = evaluate_source(SOURCES[name], log_path, truth_path)
        published = DRAIN_PUBLISHED.get(name)
        result["drain_published"] = published
        result["difference"] = None if published is None else round(result["accuracy"] - published, 6)
        results.append(result)
    return results


def cells(result: dict[str, Any]) -> list[str]:
    """The table cells of one result, in :data:`COLUMNS` order."""
    settings = result["settings"]
    published, difference = result["drain_published"], result["difference"]
    return [
        result["dataset"],
        str(result["lines"]),
        str(result["events"]),
        str(result["templates"]),
        f"{result['accuracy']:.4f}",
        str(result["mis_grouped"]),
        "-" if published is None else f"{published:.4f}",
        "-" if difference is None else f"{difference:+.4f}",
        f"depth={settings['depth']} sim_th={settings['sim_th']} masks={settings['masks']}",
    ]


def print_table(results: list[dict[str, Any]]) -> None:
    rows = [cells(result) for result in results]
    title = "Grouping accuracy on loghub 2k (Zhu et al., ICSE-SEIP 2019)"
    from rich.console import Console  # rich is a dependency of the package
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i in _LEFT else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into rich's default 80 columns
        console = Console(width=max(console.width, 132))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="folder with <Name>_2k.log and <Name>_2k.log_structured.csv (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to OUT as JSON")
    args = parser.parse_args(argv)

    missing = [str(path) for pair in files(args.data_dir).values() for path in pair if not path.is_file()]
    if missing:
        print(f"error: missing file(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        results = measure(args.data_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(results)
    if args.json is not None:
        payload = {"data_dir": str(args.data_dir), "datasets": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
