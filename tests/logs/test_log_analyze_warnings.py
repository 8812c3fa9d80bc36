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


# -- a <Level> field without levels ----------------------------------------------------------------

LINUX_FORMAT = r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>"


def test_a_level_field_holding_no_level_words_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # loghub calls the Linux host name ("combo") <Level>: no line has an error level
    code, report = analyze(tmp_path, SHIPPED / "Linux_2k.log", "--format", LINUX_FORMAT)
    assert code == 0 and report["by_level"] == {"combo": 2000} and report["alerts_by_kind"].get("error_rate") is None
    [warning] = [w for w in report["warnings"] if "<Level>" in w]
    assert "2000 of the 2000" in warning and "'combo'" in warning and "--level-field none" in warning
    assert f"warning: {warning}" in capsys.readouterr().err.splitlines()
    # as suggested: the levels are inferred, errors alert, no warning
    (tmp_path / "b").mkdir()
    code, report = analyze(tmp_path / "b", SHIPPED / "Linux_2k.log", "--format", LINUX_FORMAT, "--level-field", "none")
    assert code == 0 and report["warnings"] == [] and report["by_level"].get("error", 0) > 0


def test_a_level_field_problem_warns_in_analyze_file(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"<Level> holds no level word in 2000 of the 2000 matching lines"):
        report = asyncio.run(analyze_file(SHIPPED / "Linux_2k.log", make_source(LINUX_FORMAT)))
    assert any("level_field=None" in w for w in report["warnings"])


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("Android", "<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>"),  # D, I, W, E, V
        ("BGL", "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>"),
        ("OpenStack", "<Logrecord> <Date> <Time> <Pid> <Level> <Component> \\[<ADDR>\\] <Content>"),
        ("Windows", "<Date> <Time>, <Level>                  <Component>    <Content>"),
        ("Zookeeper", r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>"),
    ],
)
def test_real_levels_do_not_warn(name: str, fmt: str) -> None:
    from reactive_services.logs import read_lines
    from reactive_services.logs._analyze import level_problem

    source, lines = make_source(fmt), read_lines(OTHER / f"{name}_300.log")
    assert source.log_format.problems(lines) == []  # the lines match: their levels were looked at
    assert level_problem(source, lines) is None


def test_a_level_field_given_by_name_is_checked_too(tmp_path: Path) -> None:
    from reactive_services.logs._analyze import level_problem

    log = tmp_path / "a.log"
    log.write_text("".join(f"2024-01-02 10:00:{i:02d} web-{i % 3} INFO request {i}\n" for i in range(10)))
    fmt = "<Date> <Time> <Host> <Severity> <Content>"
    assert level_problem(make_source(fmt, level_field="Severity"), log.read_text().splitlines()) is None
    problem = level_problem(make_source(fmt, level_field="Host"), log.read_text().splitlines())
    assert problem is not None and problem.startswith("<Host> holds no level word in 10 of the 10 matching lines")


# -- settings that reproduce the run ----------------------------------------------------------------


@pytest.mark.parametrize("miner", ["default", "drain3"])
def test_the_settings_say_whether_the_default_masks_were_on(tmp_path: Path, miner: str) -> None:
    from reactive_services.logs import DEFAULT_MASKING

    log = tmp_path / "a.log"
    log.write_text("".join(f"2024-01-02 10:00:{i:02d} INFO request {i} from 10.0.0.{i}\n" for i in range(20)))
    args = ("--format", "<Date> <Time> <Level> <Content>", "--miner", miner, "--mask", r"<REQ>=(?<=request )\d+")
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    _, on = analyze(tmp_path / "on", log, *args)
    _, off = analyze(tmp_path / "off", log, *args, "--no-default-masks")
    assert (on["settings"]["miner"]["default_masks"], off["settings"]["miner"]["default_masks"]) == (True, False)
    user = [[r"(?<=request )\d+", "REQ"]]
    assert off["settings"]["miner"]["masks"] == user
    # the default miner lists the user's masks; drain3 every mask it applied, its defaults after the user's
    defaults = [] if miner == "default" else [list(pair) for pair in DEFAULT_MASKING]
    assert on["settings"]["miner"]["masks"] == user + defaults


# -- a shipped source keeps its year ------------------------------------------------------------------


@pytest.mark.parametrize("name,year", [("OpenSSH", 2015), ("Linux", 2005)])
def test_a_time_format_keeps_the_shipped_sources_year(tmp_path: Path, name: str, year: int) -> None:
    from reactive_services.examples.shop.log_sources import SOURCES

    assert make_source(name, known=SOURCES, time_format="%b %d %H:%M:%S").year == year
    code, report = analyze(tmp_path, SHIPPED / f"{name}_2k.log", "--format", name, "--time-format", "%b %d %H:%M:%S")
    assert code == 0 and report["time"] == "%b %d %H:%M:%S" and report["unparsed"] == 0
    assert report["windows"][0]["window_start"].startswith(f"{year}-")
    # the same windows as the shipped reader's
    (tmp_path / "shipped").mkdir()
    _, shipped = analyze(tmp_path / "shipped", SHIPPED / f"{name}_2k.log", "--format", name)
    assert [w["window_start"] for w in report["windows"]] == [w["window_start"] for w in shipped["windows"]]
    # --year still wins
    (tmp_path / "y").mkdir()
    _, other = analyze(
        tmp_path / "y",
        SHIPPED / f"{name}_2k.log",
        "--format",
        name,
        "--time-format",
        "%b %d %H:%M:%S",
        "--year",
        "2020",
    )
    assert other["windows"][0]["window_start"].startswith("2020-")


# -- the samples' README ------------------------------------------------------------------------------


def test_the_loghub_readme_names_only_files_that_exist() -> None:
    import re

    readme = SHIPPED / "README.md"
    root = Path(__file__).resolve().parents[2]
    named = re.findall(r"`([\w./-]+\.(?:py|log|csv|md))`", readme.read_text(encoding="utf-8"))
    assert any(name.startswith("examples/") for name in named)
    for name in named:
        if "<Name>" in name:
            continue
        path = root / name if "/" in name else SHIPPED / name
        assert path.is_file(), name
    assert "log_sources.py" in readme.read_text(encoding="utf-8")


# -- messages -------------------------------------------------------------------------------------------


def test_a_drain3_option_without_drain3_names_the_flag_to_select_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reactive_services.errors import ConfigError

    with pytest.raises(ConfigError, match=r"select it with miner='drain3'"):
        make_source("<Date> <Content>", sim_th=0.5)
    code, _ = analyze(tmp_path, SHIPPED / "HDFS_2k.log", "--format", "HDFS", "--sim-th", "0.5")
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and line == (
        "error: bad configuration: --sim-th: --sim-th applies to the drain3 miner only (select it with --miner drain3)"
    )


@pytest.mark.parametrize("option,example", [("--assignments", "out.csv"), ("--report", "out.json")])
def test_an_output_naming_a_folder_suggests_a_file_of_its_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, example: str
) -> None:
    assert (
        main(["logs", "analyze", str(SHIPPED / "HDFS_2k.log"), "--format", "HDFS", "--quiet", option, str(tmp_path)])
        == 2
    )
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"give a file name (e.g. {tmp_path / example})"), line


def test_an_unreadable_time_prints_none_on_the_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"someday-{i} request {i}\n" for i in range(5)))
    code, report = analyze(tmp_path, log, "--format", "<Date> <Content>")
    out, err = capsys.readouterr()
    assert code == 0 and report["time"] is None
    [row] = [line for line in out.splitlines() if " time " in line]
    assert "none" in row and "None" not in row, row
    assert "no time could be read" in err


@pytest.mark.parametrize("text", ["\n\n  \n\t\n", ""])
def test_a_file_without_a_non_blank_line_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    log = tmp_path / "blank.log"
    log.write_text(text)
    code, report = analyze(tmp_path, log, "--format", "<Date> <Time> <Level> <Content>")
    err = capsys.readouterr().err
    assert code == 0 and report["warnings"] == [f"{log} has no non-blank line: nothing to analyse"]
    assert err.strip().splitlines() == [f"warning: {log} has no non-blank line: nothing to analyse"]
