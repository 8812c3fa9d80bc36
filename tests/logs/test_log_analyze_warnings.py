"""``logs analyze`` for a new user: warnings when the results would mislead (most lines late, a
``<Level>`` field without levels, a file of blank lines), settings that reproduce the run, the
shipped sources' years, messages that name the flags to type."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from reactive_services.cli import main
from reactive_services.logs import analyze_file, make_source

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "shop" / "data" / "loghub"
OTHER = Path(__file__).resolve().parents[1] / "data" / "loghub"
HPC_FORMAT = "<LogId> <Node> <Component> <State> <Time> <Flag> <Content>"


def analyze(tmp_path: Path, file: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run ``logs analyze FILE ARGS --quiet --report``: (exit code, the report or {})."""
    report = tmp_path / "report.json"
    code = main(["logs", "analyze", str(file), *args, "--quiet", "--report", str(report)])
    return code, (json.loads(report.read_text()) if report.exists() and report.stat().st_size else {})


# -- most lines late -------------------------------------------------------------------------------


def test_most_lines_late_warns_and_names_the_lateness_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # loghub's HPC lines are not in time order: 288 of the 300 arrive after their window closed
    code, report = analyze(tmp_path, OTHER / "HPC_300.log", "--format", HPC_FORMAT)
    assert code == 0 and (report["lines"], report["late"]) == (300, 288)
    [warning] = [w for w in report["warnings"] if "late" in w]
    assert "288 of 300 lines" in warning and "after their window had closed" in warning
    assert "--lateness SECONDS" in warning
    assert f"warning: {warning}" in capsys.readouterr().err.splitlines()
    # with a lateness that covers the disorder: no warning
    (tmp_path / "b").mkdir()
    code, report = analyze(tmp_path / "b", OTHER / "HPC_300.log", "--format", HPC_FORMAT, "--lateness", "1e8")
    assert code == 0 and report["late"] == 0 and not [w for w in report["warnings"] if "late" in w]


def test_most_lines_late_warns_in_analyze_file_too() -> None:
    with pytest.warns(UserWarning, match=r"288 of 300 lines arrived after their window had closed"):
        report = asyncio.run(analyze_file(OTHER / "HPC_300.log", make_source(HPC_FORMAT)))
    assert any("allowed_lateness_s" in w for w in report["warnings"])


def test_a_few_late_lines_do_not_warn(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("2024-01-02 10:00:01 INFO a\n2024-01-02 10:05:00 INFO b\n2024-01-02 10:00:02 INFO c\n")
    report = asyncio.run(analyze_file(log, make_source("<Date> <Time> <Level> <Content>", window_s=60)))
    assert report["late"] == 1 and report["warnings"] == []
